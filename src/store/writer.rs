//! The writer thread: the one place that opens write transactions. It
//! batches concurrent writes into one commit (group commit), journals it
//! before redb commits it without an fsync, checkpoints (invariants 2 to 4
//! and 7 of `store/mod.rs`), keeps the file
//! within `storage.max_size` and the disk's free space, and recovers by
//! itself from I/O errors (reopening the database and replaying the journal).
//!
//! Room: redb grows its file by doubling it (below 4 GiB), so a write that
//! makes it grow when it is past half of `max_size` would overshoot by up
//! to the whole file. The writer predicts the growth a batch may cause and
//! refuses the writes that add data (`Grows::Yes`, `Grows::By`) when it
//! would pass the limit and they do not fit in the file's free pages;
//! updates and removals (`Grows::No`) always run, so deliveries and the
//! retention sweep go on and make room.
//!
//! Recovery: after an I/O error (a full disk, a flash fault) redb refuses
//! every further write until the database is reopened. The writer keeps the
//! old handle for reads, refuses new work, and reopens the file once the
//! disk has room again (checked every couple of seconds), without a restart.
//! Each state change is logged once; repeats are only counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::{Notify, mpsc};

use super::crash;
use super::error::{Limit, StoreError};
use super::health::Health;
use super::health::Slot;
use super::journal::Journal;
use super::open::{JOURNAL_GENERATION, Media, Options, file_len, free_space, new_generation, open_and_replay};
use super::tables::META;
use super::txn::{Grows, Txn};
use crate::metrics::Metrics;

pub(super) type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
pub(super) type Apply = Box<dyn FnOnce(Result<&mut Txn, StoreError>) -> (bool, Completion) + Send>;

pub(super) struct Op {
    pub(super) grows: Grows,
    /// Whether its answer waits until it is on stable storage. Progress
    /// that is redone safely after a crash (a delivery's position) need not:
    /// a batch of only such writes is journaled without a sync, and the
    /// next sync (within [`LAZY_FOR`]) makes it durable too.
    pub(super) durable: bool,
    pub(super) apply: Apply,
}

/// Most writes that one commit carries; bounds the latency of the first.
const MAX_BATCH: usize = 512;
/// How long the writer waits for more writes when the last commit was shared.
const LINGER: Duration = Duration::from_micros(250);
/// Free space the disk must keep before new work is taken, and have again
/// before a database broken by a full disk is reopened.
const DISK_ROOM: u64 = 256 << 10;
/// How often a broken database is tried again.
const RECOVER_EVERY: Duration = Duration::from_secs(2);
/// Longest time progress written without a sync waits for one: what a
/// power cut can make herald redo (redeliver) is bounded by it.
const LAZY_FOR: Duration = Duration::from_secs(1);
/// How stale the measure of the pages in use may be once growth is barred.
const MEASURE_EVERY: Duration = Duration::from_millis(250);

pub(super) struct Setup {
    pub db: Slot,
    pub dir: PathBuf,
    pub path: PathBuf,
    pub media: Media,
    pub opts: Options,
    /// Takes each commit's changes before redb does; see `journal.rs`.
    pub journal: Journal,
    pub metrics: Arc<Metrics>,
    pub jobs_changed: Arc<Notify>,
    pub health: Arc<AtomicU8>,
    pub file_bytes: Arc<AtomicU64>,
}

pub(super) struct Writer {
    s: Setup,
    /// Set while the database refuses writes after an I/O error.
    broken: Option<Broken>,
    /// Bytes in use in the file when last measured, when, and the
    /// estimates of what was added since.
    measured: Option<(Instant, u64, u64)>,
    /// The last error logged, how often it came since, and when it was logged.
    repeats: Option<(String, u64, Instant)>,
    /// Since when the journal holds records that are not synced, if any.
    lazy_since: Option<Instant>,
    /// Set for the last commit: it is a checkpoint.
    closing: bool,
}

struct Broken {
    disk_full: bool,
    since: Instant,
    next_try: Instant,
}

impl Writer {
    pub(super) fn new(s: Setup) -> Writer {
        Writer {
            s,
            broken: None,
            measured: None,
            repeats: None,
            lazy_since: None,
            closing: false,
        }
    }

    /// When the writer must act without a write coming.
    fn next_due(&self) -> Option<Instant> {
        if let Some(b) = &self.broken {
            return Some(b.next_try);
        }
        let sync = self.lazy_since.map(|t| t + LAZY_FOR);
        let checkpoint = self.s.journal.since().map(|t| t + self.s.opts.checkpoint_every);
        sync.into_iter().chain(checkpoint).min()
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        // A timer for waiting on the queue with a deadline: the journal's
        // unsynced tail, the checkpoint and a broken store's recovery are
        // due even when no write comes.
        let timer = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("the writer's timer");
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut last_batch = 0;
        loop {
            let first = match self.next_due() {
                None => match rx.blocking_recv() {
                    Some(op) => op,
                    None => break,
                },
                Some(due) => {
                    let wait = due.saturating_duration_since(Instant::now());
                    match timer.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                        Ok(Some(op)) => op,
                        Ok(None) => break,
                        Err(_) => {
                            // Nothing came: an empty batch syncs, checkpoints or recovers.
                            self.commit(&mut batch);
                            continue;
                        }
                    }
                }
            };
            batch.push(first);
            // Under concurrent load (the last commit carried several writes),
            // wait a moment for the writers that are on their way: one fsync
            // then serves them all. A lone write is committed at once.
            let linger = if last_batch > 1 { LINGER } else { Duration::ZERO };
            let deadline = Instant::now() + linger;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) if Instant::now() < deadline => std::thread::yield_now(),
                    Err(_) => break,
                }
            }
            last_batch = batch.len();
            self.commit(&mut batch);
        }
        // Closing: a last checkpoint, so that the next start has nothing to replay.
        self.closing = true;
        self.commit(&mut batch);
    }

    fn set_health(&self, health: Health) {
        let old = self.s.health.swap(health as u8, Ordering::Relaxed);
        self.s
            .metrics
            .storage_full
            .set(i64::from(matches!(health, Health::MaxSize | Health::DiskFull)));
        if old == health as u8 {
            return;
        }
        match health {
            Health::Ok => tracing::info!("storage has room again; new work is taken"),
            Health::MaxSize => tracing::error!(
                max = self.s.opts.max_size,
                "storage.max_size reached: new work is refused (507) until retention frees space"
            ),
            Health::DiskFull => tracing::error!(
                dir = %self.s.dir.display(),
                "the disk is full: new work is refused (507) until space is freed; herald goes on by itself"
            ),
            Health::Recovering => tracing::error!("a storage error: writes are refused while the database is reopened"),
        }
    }

    /// Logs an error once, and how often it came again since.
    fn log_error(&mut self, what: &str, e: &StoreError) {
        let text = format!("{what}: {e}");
        let now = Instant::now();
        if let Some((last, count, at)) = &mut self.repeats
            && *last == text
            && now.duration_since(*at) < Duration::from_secs(60)
        {
            *count += 1;
            return;
        }
        if let Some((last, count, _)) = self.repeats.take()
            && count > 0
        {
            tracing::error!("the previous storage error came {count} more times: {last}");
        }
        tracing::error!("{text}");
        self.repeats = Some((text, 0, now));
    }

    fn commit(&mut self, batch: &mut Vec<Op>) {
        let started = Instant::now();
        if self.broken.is_some() && !self.recover() {
            let disk_full = self.broken.as_ref().is_some_and(|b| b.disk_full);
            for op in batch.drain(..) {
                let e = match op.grows {
                    Grows::No if disk_full => StoreError::Unavailable("the disk is full".into()),
                    _ if disk_full => StoreError::Full(Limit::Disk),
                    _ => StoreError::Unavailable("the database is being reopened".into()),
                };
                (op.apply)(Err(e)).1(Ok(()));
            }
            return;
        }
        let Some(db) = self.s.db.read().unwrap().clone() else {
            return self.fail_batch(batch, StoreError::Unavailable("the database is being reopened".into()));
        };
        // Before the batch's transaction: measuring takes one of its own.
        let mut room = self.room(&db);
        let mut txn = match db.begin_write() {
            Ok(t) => Txn::new(t, self.s.opts.tables.clone()),
            Err(e) => {
                let e = StoreError::from(e);
                self.broke(&e);
                self.log_error("cannot begin a write transaction", &e);
                return self.fail_batch(batch, e);
            }
        };
        // Whether a write of the batch waits until it is on stable storage.
        let durable = batch.iter().any(|op| op.durable);
        let n = batch.len();
        let mut done: Vec<Completion> = Vec::with_capacity(n);
        let mut refused: Vec<Completion> = Vec::new();
        let mut all_ok = true;
        let (mut added, mut refused_any) = (0u64, None);
        for op in batch.drain(..) {
            let need = op.grows.estimate();
            if need > 0 {
                if let Err(limit) = room.take(need) {
                    // Never run: nothing of it is written, the caller learns why.
                    refused.push((op.apply)(Err(StoreError::Full(limit))).1);
                    refused_any = Some(limit);
                    continue;
                }
                added += need;
            }
            let (ok, completion) = (op.apply)(Ok(&mut txn));
            all_ok &= ok;
            done.push(completion);
        }
        let wake = txn.wake_jobs;
        // One failed operation may have written half of its change: abort the
        // whole batch rather than commit that. Such failures are storage
        // faults (I/O, a corrupt record), rare enough that failing the
        // neighbours too (they answer 500 and are retried) is the right trade.
        let result = if all_ok {
            self.finish(txn, durable)
        } else {
            let _ = txn.inner.abort();
            Err(StoreError::Aborted)
        };
        drop(db);
        match &result {
            Ok(()) => {
                if n > 0 {
                    self.s.metrics.commits.inc();
                    self.s.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
                    self.s.metrics.commit_batch.observe(done.len() as f64);
                }
                if wake {
                    self.s.jobs_changed.notify_one();
                }
                if let Some((_, _, since)) = &mut self.measured {
                    *since += added;
                }
                if let Some(limit) = refused_any {
                    self.set_health(match limit {
                        Limit::MaxSize => Health::MaxSize,
                        Limit::Disk => Health::DiskFull,
                    });
                } else if added > 0 && room.comfortable() {
                    // Not at the first write that fits again: near the
                    // limit a small write may fit while larger ones do not.
                    self.set_health(Health::Ok);
                }
            }
            Err(e) => {
                self.broke(e);
                self.log_error(&format!("a batch of {n} writes was not committed"), e);
            }
        }
        for c in done {
            c(result.clone());
        }
        for c in refused {
            c(Ok(()));
        }
        let len = file_len(&self.s.path);
        self.s.file_bytes.store(len, Ordering::Relaxed);
        self.s.metrics.store_bytes.set(len as i64);
    }

    /// Makes a batch's changes last: journaled (and synced if a write of
    /// it waits for that), then committed to redb without an fsync; or, when
    /// the journal is full or a checkpoint is due, committed durably as the
    /// checkpoint that starts the journal again.
    fn finish(&mut self, txn: Txn, durable: bool) -> Result<(), StoreError> {
        let log = txn.log.take();
        let log = super::redo::compact(&log).unwrap_or(log);
        let due = self.closing
            || self
                .s
                .journal
                .since()
                .is_some_and(|t| t.elapsed() >= self.s.opts.checkpoint_every);
        if due || !self.s.journal.fits(log.len()) {
            return self.checkpoint(txn.inner);
        }
        if log.is_empty() {
            // Nothing changed: nothing to commit. A durable write that
            // found its work done may have read what a lazy one wrote.
            let _ = txn.inner.abort();
            if durable || self.lazy_since.is_some_and(|t| t.elapsed() >= LAZY_FOR) {
                self.sync_journal()?;
            }
            return Ok(());
        }
        let mut inner = txn.inner;
        inner
            .set_durability(redb::Durability::None)
            .map_err(|e| StoreError::Unavailable(format!("cannot commit without an fsync: {e}")))?;
        if let Err(e) = self.s.journal.append(&log) {
            let _ = inner.abort();
            return Err(self.journal_failed(e));
        }
        if durable {
            if let Err(e) = self.sync_journal() {
                let _ = inner.abort();
                return Err(e);
            }
        } else {
            self.lazy_since.get_or_insert_with(Instant::now);
        }
        // The batch is in the journal now: if redb does not take it, for
        // whatever reason, the database must not go on without it, or a
        // restart would replay it on top of later batches that never saw
        // it. The store reopens, which replays it at once (invariant 5 of
        // `store/mod.rs`); its callers hear of an error for a write that is
        // kept, which a retry with the same key makes right.
        if let Err(e) = commit_applied(inner, &log) {
            self.must_reopen(&e);
            return Err(e);
        }
        crash::point("apply", || {});
        Ok(())
    }

    fn sync_journal(&mut self) -> Result<(), StoreError> {
        match self.s.journal.sync() {
            Ok(synced) => {
                if synced {
                    self.s.metrics.journal_syncs.inc();
                }
                self.lazy_since = None;
                Ok(())
            }
            Err(e) => Err(self.journal_failed(e)),
        }
    }

    /// A journal that failed to write or sync may hold anything past its
    /// last good record: the store reopens, which replays up to it and
    /// starts a new generation.
    fn journal_failed(&mut self, e: std::io::Error) -> StoreError {
        let e = StoreError::from(e);
        let e = match e {
            StoreError::Full(_) => e,
            other => StoreError::Unavailable(format!("the journal cannot be written: {other}")),
        };
        self.broke(&e);
        e
    }

    /// Commits durably (with the batch in `txn`, if any) under a new journal
    /// generation: everything before is now in the database file itself.
    fn checkpoint(&mut self, txn: redb::WriteTransaction) -> Result<(), StoreError> {
        let next = new_generation();
        txn.open_table(META)?.insert(JOURNAL_GENERATION, next)?;
        crash::point("checkpoint", || {});
        txn.commit()?;
        crash::point("checkpoint-done", || {});
        self.s.journal.restart(next);
        self.lazy_since = None;
        self.s.metrics.checkpoints.inc();
        Ok(())
    }

    fn fail_batch(&mut self, batch: &mut Vec<Op>, e: StoreError) {
        for op in batch.drain(..) {
            (op.apply)(Err(e.clone())).1(Ok(()));
        }
    }

    /// After a failed begin or commit: an I/O error leaves redb refusing
    /// every write until the database is reopened.
    fn broke(&mut self, e: &StoreError) {
        let (io, disk_full) = match e {
            StoreError::Full(Limit::Disk) => (true, true),
            StoreError::Unavailable(_) => (true, free_space(&self.s.dir) < DISK_ROOM),
            StoreError::Db(e) => (matches!(**e, redb::Error::Io(_)), free_space(&self.s.dir) < DISK_ROOM),
            _ => (false, false),
        };
        if !io || self.broken.is_some() {
            return;
        }
        let now = Instant::now();
        self.broken = Some(Broken {
            disk_full,
            since: now,
            next_try: now,
        });
        self.measured = None;
        self.set_health(if disk_full {
            Health::DiskFull
        } else {
            Health::Recovering
        });
    }

    /// Marks the database broken whatever the error: the journal holds a
    /// batch that redb did not take, and only a reopen replays it.
    fn must_reopen(&mut self, e: &StoreError) {
        self.broke(e);
        if self.broken.is_none() {
            tracing::warn!(error = %e, "a journaled batch was not committed; reopening the database to apply it");
            let now = Instant::now();
            self.broken = Some(Broken {
                disk_full: false,
                since: now,
                next_try: now,
            });
            self.measured = None;
            self.set_health(Health::Recovering);
        }
    }

    /// Reopens a broken database once the disk has room; whether it is open.
    fn recover(&mut self) -> bool {
        let Some(b) = &mut self.broken else { return true };
        let now = Instant::now();
        if now < b.next_try {
            return false;
        }
        b.next_try = now + RECOVER_EVERY;
        if free_space(&self.s.dir) < DISK_ROOM {
            b.disk_full = true;
            self.set_health(Health::DiskFull);
            return false;
        }
        // The old handle goes first: the file admits one open database.
        // Readers hold it for a moment only.
        let old = self.s.db.write().unwrap().take();
        if let Some(mut old) = old {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_shared) if Instant::now() < deadline => {
                        old = still_shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(still_shared) => {
                        *self.s.db.write().unwrap() = Some(still_shared);
                        return false;
                    }
                }
            }
        }
        match open_and_replay(&self.s.media, &self.s.opts) {
            Ok((db, journal)) => {
                *self.s.db.write().unwrap() = Some(Arc::new(db));
                self.s.journal = journal;
                self.lazy_since = None;
                let down = self.broken.take().map(|b| b.since.elapsed()).unwrap_or_default();
                tracing::info!(after = ?down, "the database is open again after the storage error");
                self.repeats = None;
                self.set_health(Health::Ok);
                true
            }
            Err(e) => {
                let e = StoreError::Unavailable(format!("cannot reopen the database: {e}"));
                self.log_error("storage recovery", &e);
                false
            }
        }
    }

    /// What this batch may add to the file.
    fn room(&mut self, db: &Database) -> Room {
        let len = self.s.file_bytes.load(Ordering::Relaxed).max(file_len(&self.s.path));
        let inside = if 2 * len > self.s.opts.max_size {
            // Doubling would pass the limit: what is left inside the file,
            // less a reserve for the updates that always run.
            let stale = self.measured.is_none_or(|(at, _, _)| at.elapsed() > MEASURE_EVERY);
            if stale && let Ok(used) = used_bytes(db) {
                self.measured = Some((Instant::now(), used, 0));
            }
            let (_, used, since) = self.measured.unwrap_or((Instant::now(), len, 0));
            let reserve = (len / 16).max(16 << 10);
            len.saturating_sub(used + since + reserve)
        } else {
            0
        };
        Room {
            len,
            max_size: self.s.opts.max_size,
            disk_free: free_space(&self.s.dir),
            inside,
            added: 0,
        }
    }
}

/// What a batch may still add, and why not more.
struct Room {
    len: u64,
    max_size: u64,
    disk_free: u64,
    /// Free bytes inside the file (0 when not measured).
    inside: u64,
    /// What the batch's accepted writes add.
    added: u64,
}

impl Room {
    /// Whether there is room enough to say "not full": the file may double,
    /// or a tenth of the limit is free inside it, and the disk has room.
    fn comfortable(&self) -> bool {
        let may_double = 2 * self.len <= self.max_size && self.len + DISK_ROOM <= self.disk_free;
        self.disk_free >= 2 * DISK_ROOM && (may_double || self.inside >= self.max_size / 10)
    }

    /// Takes `need` bytes for one more write, or says which limit it would pass.
    fn take(&mut self, need: u64) -> Result<(), Limit> {
        if self.disk_free < DISK_ROOM {
            return Err(Limit::Disk);
        }
        let total = self.added + need;
        // What redb does when the file is full: below 4 GiB it doubles it,
        // or makes room for twice the allocation; above, it adds 4 GiB.
        let grown = if self.len < (4 << 30) {
            (2 * self.len).max(self.len + 2 * total.next_power_of_two())
        } else {
            self.len + (4 << 30)
        };
        let may_grow = grown <= self.max_size && grown - self.len + DISK_ROOM <= self.disk_free;
        if !may_grow && total > self.inside {
            return Err(if grown > self.max_size {
                Limit::MaxSize
            } else {
                Limit::Disk
            });
        }
        self.added = total;
        Ok(())
    }
}

/// The bytes of the file's pages in use (a walk of the trees: measured at
/// most every [`MEASURE_EVERY`], and only once growth is barred).
fn used_bytes(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_write()?;
    let stats = txn.stats()?;
    txn.abort()?;
    Ok(stats.allocated_pages() * stats.page_size() as u64)
}

/// Free bytes on the disk that holds `dir` (for an unprivileged process).
/// Commits a journaled batch to redb (without an fsync).
fn commit_applied(txn: redb::WriteTransaction, _log: &[u8]) -> Result<(), StoreError> {
    #[cfg(test)]
    if _log.windows(tests::FAIL_MARK.len()).any(|w| w == tests::FAIL_MARK) {
        let _ = txn.abort();
        return Err(StoreError::Corrupt("commit", "a failure made by a test".into()));
    }
    txn.commit().map_err(StoreError::from)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A batch that writes this key fails to commit after it was journaled.
    pub(crate) const FAIL_MARK: &[u8] = b"fail-this-commit";

    fn room(len: u64, max_size: u64, disk_free: u64, inside: u64) -> Room {
        Room {
            len,
            max_size,
            disk_free,
            inside,
            added: 0,
        }
    }

    #[test]
    fn growth_is_allowed_only_when_the_doubled_file_stays_within_the_limit() {
        let mib = 1 << 20;
        // 300 KiB doubles to 600 KiB: within 1 MiB.
        assert_eq!(room(300 << 10, mib, u64::MAX, 0).take(4096), Ok(()));
        // 600 KiB would double past 1 MiB: only what fits inside is taken.
        let mut r = room(600 << 10, mib, u64::MAX, 10_000);
        assert_eq!(r.take(6_000), Ok(()));
        assert_eq!(r.take(6_000), Err(Limit::MaxSize));
        // One write larger than half the file grows it by twice its size.
        assert_eq!(room(100 << 10, mib, u64::MAX, 0).take(400 << 10), Err(Limit::MaxSize));
        // The disk: growth needs room on it too, and nothing is taken without some.
        assert_eq!(room(300 << 10, 1 << 30, 200 << 10, 0).take(4096), Err(Limit::Disk));
        assert_eq!(
            room(300 << 10, 1 << 30, 100 << 10, 1 << 20).take(4096),
            Err(Limit::Disk)
        );
    }
}
