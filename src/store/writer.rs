//! The writer thread: the one place that opens write transactions. It
//! batches concurrent writes into one commit (group commit), journals it
//! before redb commits it without an fsync, checkpoints (invariants 2 to 4
//! and 7 of `store/mod.rs`), keeps the store within `storage.max_size` and
//! the disk's free space, and recovers by itself from I/O errors (reopening
//! the database and replaying the journal).
//!
//! Room is judged by what the disk really holds. redb grows its file by
//! doubling its length, but the new half is a hole that takes no disk space
//! until pages are written into it: the length says nothing of the room
//! used, and a judge by length refuses work with half the disk free. What
//! counts is the file's allocated blocks, plus what the pages in use (some
//! only in redb's write buffer yet) will take once written. `max_size`
//! bounds the blocks of the database and of the (preallocated) journal
//! together, and the disk must keep [`DISK_ROOM`] free. A write that adds
//! data (`Grows::Yes`, `Grows::By`) is refused with `Full` when it would
//! pass either; updates and removals (`Grows::No`) always run, so
//! deliveries and the retention sweep go on and make room.
//!
//! The pages in use are bounded cheaply (by the file's length, and by its
//! blocks plus the write buffer); only when that bound is near a limit are
//! they counted (a walk of the trees, as rarely as the walk's own cost
//! allows). A refusal starts a *full episode*: new work is refused until
//! there is comfortable room again (checked every second, so freeing space
//! brings herald back within seconds without a restart), so the store does
//! not flap between full and not, and people are told once per episode.
//!
//! Recovery: after an I/O error (a full disk, a flash fault) redb refuses
//! every further write until the database is reopened. The writer keeps the
//! old handle for reads, refuses new work, and reopens the file once the
//! disk has room again (checked every couple of seconds), without a restart.
//! Each state change is logged once; repeats are only counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::Notify;

use super::crash;
use super::error::{Limit, StoreError};
use super::health::{Health, HealthCell, Slot};
use super::journal::Journal;
use super::open::{JOURNAL_GENERATION, Media, Options, file_size, free_space, new_generation, open_and_replay};
use super::queue::Queue;
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
/// How many writes one journal sync should serve when that many come
/// together: the journal's page then costs the flash at most 512 bytes an
/// event (4 KiB / 8).
const GATHER: usize = 8;
/// How long the writer waits at most for them. It bounds what a
/// concurrent writer's answer is delayed; a lone write never waits.
const LINGER: Duration = Duration::from_millis(2);
/// Free space the disk must keep: new work that would leave less is
/// refused, so that updates, deliveries and checkpoints always find room;
/// a database broken by a full disk is reopened once this much is free.
const DISK_ROOM: u64 = 256 << 10;
/// Room a full store must have again, on the disk and under `max_size`,
/// before it takes new work: it then takes more than one write.
const DISK_AGAIN: u64 = 1 << 20;
const MAX_SIZE_AGAIN: u64 = 64 << 10;
/// How often a full store looks whether it has room again.
const RECHECK_EVERY: Duration = Duration::from_secs(1);
/// What herald's other files in `storage.dir` (the admin token) may take.
const OTHER_FILES: u64 = 16 << 10;
/// How often a broken database is tried again.
const RECOVER_EVERY: Duration = Duration::from_secs(2);
/// Longest time progress written without a sync waits for one: what a
/// power cut can make herald redo (redeliver) is bounded by it.
const LAZY_FOR: Duration = Duration::from_secs(1);
/// How long a count of the pages in use may take, as a share of the time
/// since the last one: the walk holds up every write while it runs.
const MEASURE_SHARE: u32 = 20;

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
    pub health: HealthCell,
    pub on_disk: Arc<AtomicU64>,
    pub room_left: Arc<AtomicU64>,
}

pub(super) struct Writer {
    s: Setup,
    /// Set while the database refuses writes after an I/O error.
    broken: Option<Broken>,
    /// Set while new work is refused for lack of room.
    full: Option<Full>,
    /// The last count of the pages in use.
    measured: Option<Measure>,
    /// The last error logged, how often it came since, and when it was logged.
    repeats: Option<(String, u64, Instant)>,
    /// Since when the journal holds records that are not synced, if any.
    lazy_since: Option<Instant>,
    /// Set for the last commit: it is a checkpoint.
    closing: bool,
    /// Set when the pages redb holds in its write buffer would take much of
    /// the disk's free space once written: the next commit is a checkpoint,
    /// which writes them, so that the disk shows what the store takes.
    flush_due: bool,
    /// Set when a commit removed data during a full episode: redb uses
    /// the pages it freed (and counts them free) only after a durable
    /// commit, so the next recheck that finds no room checkpoints first.
    freed: bool,
    /// When a checkpoint last ran to release pages before a refusal.
    released_at: Option<Instant>,
}

struct Broken {
    disk_full: bool,
    since: Instant,
    next_try: Instant,
}

/// A full episode: from a refusal until there is comfortable room again.
struct Full {
    limit: Limit,
    since: Instant,
    next_check: Instant,
    /// The largest write refused: there must be room for it again.
    biggest: u64,
}

/// The bytes of the database's pages in use, as last counted.
struct Measure {
    at: Instant,
    used: u64,
    /// What the writes taken since are estimated to add.
    since: u64,
    /// How long the count took.
    took: Duration,
}

impl Writer {
    pub(super) fn new(s: Setup) -> Writer {
        Writer {
            s,
            broken: None,
            full: None,
            measured: None,
            repeats: None,
            lazy_since: None,
            closing: false,
            flush_due: false,
            freed: false,
            released_at: None,
        }
    }

    /// When the writer must act without a write coming.
    fn next_due(&self) -> Option<Instant> {
        if let Some(b) = &self.broken {
            return Some(b.next_try);
        }
        let recheck = self.full.as_ref().map(|f| f.next_check);
        let sync = self.lazy_since.map(|t| t + LAZY_FOR);
        let checkpoint = self.s.journal.since().map(|t| t + self.s.opts.checkpoint_every);
        sync.into_iter().chain(checkpoint).chain(recheck).min()
    }

    pub(super) fn run(mut self, queue: Arc<Queue>) {
        // A panic must not leave writers waiting for a commit that never comes.
        struct Abandon(Arc<Queue>);
        impl Drop for Abandon {
            fn drop(&mut self) {
                self.0.abandon();
            }
        }
        let _abandon = Abandon(queue.clone());
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // How many writes come together under the current load: the
        // largest recent batch, forgotten a write per commit.
        let mut together = 1usize;
        loop {
            // The journal's unsynced tail, the checkpoint and a broken
            // store's recovery are due even when no write comes.
            if !queue.take(&mut batch, 1, self.next_due(), MAX_BATCH) {
                break;
            }
            if batch.is_empty() {
                // Nothing came: an empty batch syncs, checkpoints or recovers.
                self.commit(&mut batch);
                continue;
            }
            // Under concurrent load, wait a moment for the writers that are
            // on their way: one fsync then serves them all, and the flash
            // takes one journal page for them all. A lone write, or writes
            // that need no sync, are committed at once.
            let want = together.min(GATHER);
            if batch.len() < want && batch.iter().any(|op| op.durable) {
                let (more, until) = (want - batch.len(), Instant::now() + LINGER);
                queue.take(&mut batch, more, Some(until), MAX_BATCH);
            }
            together = batch.len().max(together - 1).max(1);
            self.commit(&mut batch);
        }
        // Closing: a last checkpoint, so that the next start has nothing to replay.
        self.closing = true;
        self.commit(&mut batch);
    }

    fn set_health(&self, health: Health) {
        self.s.metrics.storage_full.set(i64::from(health.is_full()));
        for h in [Health::MaxSize, Health::DiskFull, Health::Recovering] {
            let labels = vec![("reason", h.as_str().to_string())];
            self.s
                .metrics
                .store_refusing
                .get_or_create(&labels)
                .set(i64::from(h == health));
        }
        if !self
            .s
            .health
            .send_if_modified(|h| std::mem::replace(h, health) != health)
        {
            return;
        }
        match health {
            Health::Ok => tracing::info!("storage has room again; new work is taken"),
            Health::MaxSize => tracing::error!(
                max = self.s.opts.max_size,
                on_disk = self.s.on_disk.load(Ordering::Relaxed),
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
        // Before the batch's transaction: counting the pages takes one of its own.
        let need = batch.iter().map(|op| op.grows.estimate()).sum();
        let mut room = self.room(&db, need);
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
        let mut refused_by: Option<(Limit, u64)> = None;
        for op in batch.drain(..) {
            let need = op.grows.estimate();
            if need > 0
                && let Err(limit) = room.take(need)
            {
                // Never run: nothing of it is written, the caller learns why.
                refused.push((op.apply)(Err(StoreError::Full(limit))).1);
                let biggest = refused_by.map_or(0, |(_, b)| b).max(need);
                refused_by = Some((limit, biggest));
                continue;
            }
            let (ok, completion) = (op.apply)(Ok(&mut txn));
            all_ok &= ok;
            done.push(completion);
        }
        if all_ok && let Err(e) = txn.finish_batch() {
            self.log_error("cannot finish a batch's gathered work", &e);
            all_ok = false;
        }
        let wake = txn.wake_jobs;
        let after = txn.after_commit();
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
                after.run();
                if let Some(m) = &mut self.measured {
                    m.since += room.added;
                }
                if let Some((limit, biggest)) = refused_by {
                    self.refused(limit, biggest);
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
    }

    /// Makes a batch's changes last: journaled (and synced if a write of
    /// it waits for that), then committed to redb without an fsync; or, when
    /// the journal is full or a checkpoint is due, committed durably as the
    /// checkpoint that starts the journal again.
    fn finish(&mut self, txn: Txn, durable: bool) -> Result<(), StoreError> {
        let log = txn.log.take();
        let log = super::redo::compact(&log).unwrap_or(log);
        if self.full.is_some() && super::redo::changes(&log).any(|c| c.is_ok_and(|c| c.value.is_none())) {
            self.freed = true;
        }
        let due = std::mem::take(&mut self.flush_due)
            || self.closing
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
        self.freed = false;
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
        if disk_full {
            // Also a full episode: once reopened, the store takes work
            // when there is comfortable room, not at the first free page.
            self.refused(Limit::Disk, 0);
        } else {
            self.set_health(Health::Recovering);
        }
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
                // A full episode goes on until there is room again.
                self.set_health(match self.full.as_ref().map(|f| f.limit) {
                    None => Health::Ok,
                    Some(Limit::MaxSize) => Health::MaxSize,
                    Some(Limit::Disk) => Health::DiskFull,
                });
                true
            }
            Err(e) => {
                let e = StoreError::Unavailable(format!("cannot reopen the database: {e}"));
                self.log_error("storage recovery", &e);
                false
            }
        }
    }

    /// A refusal: starts a full episode, or makes the running one wait
    /// for room for this write too.
    fn refused(&mut self, limit: Limit, need: u64) {
        let now = Instant::now();
        let full = self.full.get_or_insert(Full {
            limit,
            since: now,
            next_check: now + RECHECK_EVERY,
            biggest: 0,
        });
        full.biggest = full.biggest.max(need);
        full.limit = limit;
        self.set_health(match limit {
            Limit::MaxSize => Health::MaxSize,
            Limit::Disk => Health::DiskFull,
        });
    }

    /// What this batch, which may add `need` bytes, may add; ends a full
    /// episode when there is comfortable room again.
    fn room(&mut self, db: &Database, need: u64) -> Room {
        let now = Instant::now();
        if let Some(full) = &self.full
            && now < full.next_check
        {
            return Room::none(full.limit);
        }
        let sizes = self.sizes();
        // While full, what must fit is comfortable room, not only the batch.
        let wanted = match &self.full {
            Some(full) => Wanted {
                disk: DISK_AGAIN.max(full.biggest),
                max_size: MAX_SIZE_AGAIN.max(sizes.budget / 32).max(full.biggest),
            },
            None => Wanted {
                disk: need,
                max_size: need,
            },
        };
        // The pages in use: at most the file's length, and at most its
        // blocks plus what redb's write buffer holds (up to its cache).
        let bound = sizes.len.min(sizes.blocks + self.s.opts.cache_size);
        let mut room = sizes.room(bound);
        if !room.fits(wanted) && (need > 0 || self.full.is_some()) {
            // Near a limit: the pages in use, as counted, plus the estimates
            // of what was added since (they err high, and removals are not
            // in them): counted again unless the last count is too recent
            // for its cost.
            let estimate = self.measured.as_ref().map(|m| {
                let recent = m.at.elapsed() < m.took * MEASURE_SHARE;
                (m.used + m.since, recent)
            });
            let used = match estimate {
                Some((used, recent)) if recent || sizes.room(used).fits(wanted) => Some(used),
                _ => self.measure(db),
            };
            if let Some(used) = used {
                room = sizes.room(used);
                // Before a refusal starts an episode: the pages that
                // non-durable commits released (replaced records, removed
                // jobs) count as in use until a durable commit. A checkpoint
                // now frees them, so that the refusal is not undone by the
                // next checkpoint a second later (one a second at most; not
                // when the disk is short, as it writes pages).
                if self.full.is_none()
                    && room.short_of(wanted) == Some(Limit::MaxSize)
                    && self.released_at.is_none_or(|t| t.elapsed() >= RECHECK_EVERY)
                {
                    self.released_at = Some(Instant::now());
                    let released = db
                        .begin_write()
                        .map_err(StoreError::from)
                        .and_then(|t| self.checkpoint(t));
                    if released.is_ok()
                        && let Some(used) = self.measure(db)
                    {
                        room = self.sizes().room(used);
                    }
                }
                // Pages in redb's write buffer that will take much of what
                // is free: a checkpoint writes them, so that the disk shows
                // what the store takes before anyone fills it.
                self.flush_due = room.new_blocks > sizes.disk_free.saturating_sub(DISK_ROOM) / 2;
            }
        }
        let on_disk = sizes.on_disk(self.measured.as_ref());
        self.s.on_disk.store(on_disk, Ordering::Relaxed);
        self.s.room_left.store(room.max_size.min(room.disk), Ordering::Relaxed);
        self.s.metrics.store_bytes.set(on_disk as i64);
        if let Some(full) = &mut self.full {
            if let Some(limit) = room.short_of(wanted) {
                full.limit = limit;
                full.next_check = now + RECHECK_EVERY;
                // What was removed is counted free after a checkpoint: this
                // commit is one, and the next recheck sees the room.
                self.flush_due |= self.freed;
                return Room::none(limit);
            }
            let after = full.since.elapsed();
            self.full = None;
            tracing::debug!(after = ?after, "room again after the full episode");
            if self.broken.is_none() {
                self.set_health(Health::Ok);
            }
        }
        room
    }

    /// Counts the database's pages in use; `None` if it cannot.
    fn measure(&mut self, db: &Database) -> Option<u64> {
        let started = Instant::now();
        let used = used_bytes(db).ok()?;
        self.measured = Some(Measure {
            at: Instant::now(),
            used,
            since: 0,
            took: started.elapsed(),
        });
        Some(used)
    }

    fn sizes(&self) -> Sizes {
        let (len, blocks) = file_size(&self.s.path);
        let journal = self.s.journal.capacity();
        Sizes {
            len,
            blocks,
            journal,
            budget: self.s.opts.max_size.saturating_sub(journal + OTHER_FILES),
            disk_free: free_space(&self.s.dir),
        }
    }
}

/// What the store's files take, and what is left for the database.
struct Sizes {
    /// The database file's length and allocated bytes.
    len: u64,
    blocks: u64,
    /// The journal's bytes (preallocated: length and blocks agree).
    journal: u64,
    /// What the database may take on the disk: `max_size` less the rest.
    budget: u64,
    disk_free: u64,
}

impl Sizes {
    /// The room left when `used` bytes of pages are in use. Pages free
    /// below the blocks written are used again before new ones, so the
    /// database takes new blocks only past them. Under `max_size` a reserve
    /// is kept for the updates that always run (and copy-on-write pages);
    /// on the disk, [`DISK_ROOM`] is that reserve.
    fn room(&self, used: u64) -> Room {
        let reserve = (self.budget / 64).max(64 << 10);
        let new_blocks = used.saturating_sub(self.blocks);
        Room {
            max_size: self.blocks.max(self.budget).saturating_sub(used + reserve),
            disk: self.disk_free.saturating_sub(DISK_ROOM + new_blocks),
            new_blocks,
            added: 0,
            refuse: None,
        }
    }

    /// What the store takes on the disk: the database (with what its pages
    /// in use will take once written, when they were counted) and the journal.
    fn on_disk(&self, measured: Option<&Measure>) -> u64 {
        let db = measured.map_or(self.blocks, |m| self.blocks.max(m.used + m.since));
        db + self.journal
    }
}

/// What must fit: a batch, or while full, comfortable room.
#[derive(Clone, Copy)]
struct Wanted {
    disk: u64,
    max_size: u64,
}

/// What a batch may still add, and why not more.
struct Room {
    /// Bytes that may still be added within `storage.max_size`,
    max_size: u64,
    /// and leaving the disk [`DISK_ROOM`].
    disk: u64,
    /// What the pages in use not yet written will take on the disk.
    new_blocks: u64,
    /// What the batch's accepted writes add.
    added: u64,
    /// Set while full: every write that adds is refused for this.
    refuse: Option<Limit>,
}

impl Room {
    fn none(limit: Limit) -> Room {
        Room {
            max_size: 0,
            disk: 0,
            new_blocks: 0,
            added: 0,
            refuse: Some(limit),
        }
    }

    fn fits(&self, w: Wanted) -> bool {
        self.short_of(w).is_none()
    }

    /// The limit that `w` would pass, if any (the disk first: it is the
    /// harder one).
    fn short_of(&self, w: Wanted) -> Option<Limit> {
        if self.disk < w.disk {
            Some(Limit::Disk)
        } else if self.max_size < w.max_size {
            Some(Limit::MaxSize)
        } else {
            None
        }
    }

    /// Takes `need` bytes for one more write, or says which limit it would pass.
    fn take(&mut self, need: u64) -> Result<(), Limit> {
        if let Some(limit) = self.refuse {
            return Err(limit);
        }
        let total = self.added + need;
        if let Some(limit) = self.short_of(Wanted {
            disk: total,
            max_size: total,
        }) {
            return Err(limit);
        }
        self.added = total;
        Ok(())
    }
}

/// The bytes of the database's pages in use (allocated by redb, whether
/// written to the file yet or still in its write buffer). A walk of the
/// trees: done only near a limit, and as rarely as [`MEASURE_SHARE`] says.
fn used_bytes(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_write()?;
    let stats = txn.stats()?;
    txn.abort()?;
    Ok(stats.allocated_pages() * stats.page_size() as u64)
}

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

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;

    fn sizes(len: u64, blocks: u64, budget: u64, disk_free: u64) -> Sizes {
        Sizes {
            len,
            blocks,
            journal: 0,
            budget,
            disk_free,
        }
    }

    #[test]
    fn a_sparse_file_is_judged_by_its_blocks_not_its_length() {
        // redb doubled a 8.5 MiB file to 17 MiB; 6.3 MiB are written and
        // 6 MiB in use; 10 MiB are free on the disk. Judged by length
        // (a doubling to 34 MiB) nothing would fit.
        let s = sizes(17 * MIB, 6300 * KIB, 1 << 30, 10 * MIB);
        let mut room = s.room(6 * MIB);
        assert_eq!(room.take(4 * MIB), Ok(()));
        assert_eq!(room.take(5 * MIB), Ok(()));
        // The disk keeps DISK_ROOM: 9.75 MiB may be added, no more.
        assert_eq!(room.take(MIB), Err(Limit::Disk));
        // Pages in use not yet written (in redb's write buffer) take blocks too.
        let mut room = s.room(6300 * KIB + 4 * MIB);
        assert_eq!(room.take(5 * MIB + 512 * KIB), Ok(()));
        assert_eq!(room.take(512 * KIB), Err(Limit::Disk));
    }

    #[test]
    fn max_size_bounds_the_blocks_and_free_pages_below_them_are_used_again() {
        // 8 MiB less the journal: the database may take it nearly all.
        let budget = 7 * MIB;
        let mut room = sizes(4 * MIB, 4 * MIB, budget, u64::MAX).room(4 * MIB);
        assert_eq!(room.take(2 * MIB + 512 * KIB), Ok(()), "far past half of max_size");
        assert_eq!(room.take(512 * KIB), Err(Limit::MaxSize));
        // Written up to the budget, but retention freed 3 MiB of pages:
        // they are used again without new blocks.
        let mut room = sizes(8 * MIB, budget, budget, u64::MAX).room(4 * MIB);
        assert_eq!(room.take(2 * MIB), Ok(()));
        // A lowered max_size: the file keeps its blocks, and the pages
        // free in them still take work, but it grows no further.
        let mut room = sizes(16 * MIB, 12 * MIB, budget, u64::MAX).room(6 * MIB);
        assert_eq!(room.take(5 * MIB), Ok(()));
        assert_eq!(room.take(MIB), Err(Limit::MaxSize));
    }

    #[test]
    fn a_full_store_refuses_every_write_that_adds_until_it_is_looked_at_again() {
        let mut room = Room::none(Limit::MaxSize);
        assert_eq!(room.take(1), Err(Limit::MaxSize));
        // What must fit to end the episode: comfortable room, not one write.
        let room = sizes(MIB, 800 * KIB, 880 * KIB, u64::MAX).room(760 * KIB);
        let comfortable = Wanted {
            disk: DISK_AGAIN,
            max_size: MAX_SIZE_AGAIN,
        };
        let one = Wanted {
            disk: 50 * KIB,
            max_size: 50 * KIB,
        };
        assert!(room.fits(one));
        assert!(!room.fits(comfortable), "120 KiB left less the 64 KiB reserve");
        let room = sizes(MIB, MIB, 880 * KIB, 900 * KIB).room(600 * KIB);
        assert_eq!(room.short_of(comfortable), Some(Limit::Disk));
    }
}
