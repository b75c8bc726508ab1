//! The durable store: one redb file, tables declared by the modules that
//! own them (with stable ids, `tables.rs`), postcard values, a schema
//! version, and one writer thread that batches concurrent writes into one
//! commit (group commit), made durable by the journal.
//!
//! Why one writer: redb's `begin_write` blocks while another write
//! transaction runs, and every durable commit is an fsync. Funnelling all
//! writes through a thread that drains its queue into a single transaction
//! turns N concurrent requests into one sync, and a caller's future
//! resolves only after the commit that holds its write is on stable
//! storage, so a 2xx means "on disk". The store is the one owner of
//! durability: features only say which writes must wait for it (`write`)
//! and which are progress that is redone safely (`write_progress`).
//!
//! The contract for a write closure: do every check that can refuse the
//! request *before* writing, and return a refusal as a value (`Ok(Err(..))`).
//! An `Err(StoreError)` means the storage itself failed; the writer then
//! aborts the whole batch and every caller in it gets the error, so nothing
//! is ever half-committed.
//!
//! # The journal's invariants
//!
//! Stated once, here; `journal.rs`, `redo.rs`, `writer.rs` and `open.rs`
//! each keep their part and point here.
//!
//! 1. **What is written.** Every change a batch makes goes through
//!    [`Table`], which records it (table id, key bytes, value bytes or a
//!    removal) in the batch's redo log before making it. The log is
//!    physical: replaying it needs no feature code and yields exactly the
//!    state the batch committed. Within a batch only the last change of a
//!    key is kept (`redo::compact`).
//! 2. **When.** The writer appends a batch's log to the journal *before*
//!    redb commits the batch, and redb commits it without an fsync
//!    (`Durability::None`). A record is `len | crc32(generation, len,
//!    payload) | payload`, only ever added at the end.
//! 3. **What is synced before an answer.** A batch holding a durable write
//!    (`Store::write`) is answered only after its record's `fdatasync`. A
//!    batch of progress only (`write_progress`) is answered at once; the
//!    next sync, at the latest one second later, takes it along. After a
//!    sync the next record starts on a fresh page, so a page that was
//!    synced is never written again in its generation and a torn write
//!    cannot damage an acknowledged record.
//! 4. **What a checkpoint makes durable.** Every 5 minutes, when the
//!    journal is full, and at a clean close, a batch is committed durably
//!    with a new random generation stored in `meta`: everything before it
//!    is then in the database file itself, and the journal starts again
//!    under the new generation (its old records no longer check).
//! 5. **What replay assumes.** redb's non-durable commits may be lost by a
//!    crash, but redb opens at its last durable commit (a checkpoint) or at
//!    a later non-durable one, never at a torn state. The journal's records
//!    of the stored generation are the batches after that checkpoint, in
//!    order; applying a change is idempotent (an insert or a removal of a
//!    whole value), so replaying records whose batch redb did keep gives
//!    the same state. Replay reads records from the start until the first
//!    that does not check and applies them, then commits durably under a
//!    new generation, before any new write.
//! 6. **What ids mean.** A record names tables by their ids, so a table's
//!    id is never changed or reused (`tables.rs`, pinned by `src/golden.rs`).
//! 7. **After a storage error** the writer refuses work and reopens the
//!    database, which replays the journal as at a start (`writer.rs`).

mod crash;
mod error;
mod health;
mod journal;
mod open;
#[cfg(test)]
mod power;
mod queue;
mod redo;
mod tables;
mod txn;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, oneshot};

pub use self::error::{Limit, StoreError, decode, encode};
pub use self::health::Health;
use self::health::{HealthCell, Slot};
use self::open::{CHECKPOINT_EVERY, Media, Options, create_private_dir, journal_bytes, open_and_replay};
pub use self::open::{OpenError, SCHEMA_VERSION, check_dir, sync_dir, write_durably};
pub use self::redo::Table;
pub(crate) use self::tables::tables;
pub use self::tables::{META, META_BLOBS, TableSpec, Tables};
pub use self::txn::{Grows, Txn};
use self::writer::{Apply, Completion, Op};
use crate::metrics::Metrics;

/// A cheap handle; clones share one database and one writer.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    /// The open database; replaced by the writer when it reopens the file
    /// after an I/O error, and `None` for the moment that takes.
    db: Slot,
    path: PathBuf,
    ops: Arc<queue::Queue>,
    /// Set by the writer thread, read by `/readyz` and the status summary.
    health: HealthCell,
    /// The bytes the store's files take on the disk (see `writer.rs`).
    on_disk: Arc<AtomicU64>,
    /// What new work may still add, as last judged (see `writer.rs`).
    room_left: Arc<AtomicU64>,
}

/// Owns the writer thread; `close` waits until it has committed what it holds.
pub struct WriterGuard {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WriterGuard {
    /// Waits for the writer to finish, once every `Store` clone is gone.
    pub fn close(mut self, within: Duration) {
        let Some(thread) = self.thread.take() else { return };
        let deadline = Instant::now() + within;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            tracing::warn!("store writer still busy at exit; the database will be checked at next start");
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last `Store` is gone: the writer ends once it has done what is queued.
        self.ops.close();
    }
}

impl Store {
    pub fn open(
        dir: &Path,
        cache_size: u64,
        max_size: u64,
        tables: Tables,
        metrics: Arc<Metrics>,
        jobs_changed: Arc<Notify>,
    ) -> Result<(Store, WriterGuard), OpenError> {
        create_private_dir(dir).map_err(|e| OpenError::Dir(dir.to_path_buf(), e))?;
        let media = Media::Files {
            db: dir.join("herald.redb"),
            journal: dir.join("herald.journal"),
        };
        let opts = Options {
            cache_size,
            max_size,
            journal_bytes: journal_bytes(max_size),
            checkpoint_every: crash::checkpoint_every(CHECKPOINT_EVERY),
            tables: Arc::new(tables),
        };
        let opened = Store::open_on(dir, media, opts, metrics, jobs_changed)?;
        // The database and the journal may have just been created: their
        // names must be durable before any write is acknowledged.
        sync_dir(dir).map_err(|e| OpenError::Dir(dir.to_path_buf(), e))?;
        Ok(opened)
    }

    fn open_on(
        dir: &Path,
        media: Media,
        opts: Options,
        metrics: Arc<Metrics>,
        jobs_changed: Arc<Notify>,
    ) -> Result<(Store, WriterGuard), OpenError> {
        let (db, journal) = open_and_replay(&media, &opts)?;
        let path = media.db_path();
        let db: Slot = Arc::new(RwLock::new(Some(Arc::new(db))));
        let queue = Arc::new(queue::Queue::new());
        let health = Arc::new(tokio::sync::watch::Sender::new(Health::Ok));
        let on_disk = Arc::new(AtomicU64::new(open::file_size(&path).1 + journal.capacity()));
        let room_left = Arc::new(AtomicU64::new(u64::MAX));
        let writer = writer::Writer::new(writer::Setup {
            db: db.clone(),
            dir: dir.to_path_buf(),
            path: path.clone(),
            media,
            opts,
            journal,
            metrics,
            jobs_changed,
            health: health.clone(),
            on_disk: on_disk.clone(),
            room_left: room_left.clone(),
        });
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn({
                let queue = queue.clone();
                move || writer.run(queue)
            })
            .expect("spawning the writer thread");
        let store = Store {
            shared: Arc::new(Shared {
                db,
                path,
                ops: queue,
                health,
                on_disk,
                room_left,
            }),
        };
        Ok((store, WriterGuard { thread: Some(thread) }))
    }

    /// Runs `f` in the next group commit; resolves after that commit is durable.
    pub async fn write<R, F>(&self, grows: Grows, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Txn) -> Result<R, StoreError> + Send + 'static,
    {
        self.queue(grows, true, f).await?.await
    }

    /// A write of progress that is redone safely after a crash (a
    /// delivery's position and attempts): answered once committed, made
    /// durable by the journal's next sync, at the latest within a second,
    /// or by the checkpoint when the store closes.
    pub async fn write_progress<R, F>(&self, grows: Grows, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Txn) -> Result<R, StoreError> + Send + 'static,
    {
        self.queue(grows, false, f).await?.await
    }

    /// Queues a write of progress like [`Store::write_progress`] and
    /// returns once it is queued, with what resolves once it is committed:
    /// the caller goes on meanwhile (a delivery run posts its next events
    /// while the last ones are recorded). Writes are applied in the order
    /// they were queued.
    pub async fn queue_progress<R, F>(
        &self,
        grows: Grows,
        f: F,
    ) -> Result<impl Future<Output = Result<R, StoreError>> + use<R, F>, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Txn) -> Result<R, StoreError> + Send + 'static,
    {
        self.queue(grows, false, f).await
    }

    async fn queue<R, F>(
        &self,
        grows: Grows,
        durable: bool,
        f: F,
    ) -> Result<impl Future<Output = Result<R, StoreError>> + use<R, F>, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Txn) -> Result<R, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let apply: Apply = Box::new(move |txn| {
            let result = txn.and_then(f);
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |commit| {
                let _ = tx.send(result.and_then(|r| commit.map(|()| r)));
            });
            (ok, completion)
        });
        self.shared
            .ops
            .push(Op { grows, durable, apply })
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(async move { rx.await.map_err(|_| StoreError::Closed)? })
    }

    /// A consistent snapshot for reads; never blocks the writer.
    pub fn read<R>(&self, f: impl FnOnce(&ReadTransaction) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let db = self.shared.db.read().unwrap().clone();
        let db = db.ok_or_else(|| StoreError::Unavailable("the database is being reopened".into()))?;
        let txn = db.begin_read()?;
        f(&txn)
    }

    pub fn health(&self) -> Health {
        *self.shared.health.borrow()
    }

    /// Each change of the health, from the current one on.
    pub fn health_changes(&self) -> tokio::sync::watch::Receiver<Health> {
        self.shared.health.subscribe()
    }

    /// Whether new work is refused for lack of space.
    pub fn is_full(&self) -> bool {
        self.health().is_full()
    }

    /// The bytes the store's files take on the disk (the database and the
    /// journal, as `du` counts them): what `storage.max_size` bounds.
    pub fn on_disk(&self) -> u64 {
        self.shared.on_disk.load(Ordering::Relaxed)
    }

    /// What new work may still add before it is refused, under
    /// `storage.max_size` and on the disk, as the last write judged it.
    pub fn room_left(&self) -> u64 {
        self.shared.room_left.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

/// Reads `key` from a table of postcard values, in a read or write transaction.
pub fn get<K, T>(
    table: &impl ReadableTable<K, &'static [u8]>,
    what: &'static str,
    key: K::SelfType<'_>,
) -> Result<Option<T>, StoreError>
where
    K: redb::Key + 'static,
    T: DeserializeOwned,
{
    match table.get(key)? {
        Some(v) => decode(what, v.value()).map(Some),
        None => Ok(None),
    }
}

/// One page, newest first, of a table keyed by time-ordered ids: the
/// records `keep` accepts whose id is before `after`, at most `limit`, and
/// the cursor of the next page.
pub fn page_newest<T: DeserializeOwned>(
    r: &ReadTransaction,
    def: TableDefinition<&str, &[u8]>,
    what: &'static str,
    after: Option<&str>,
    limit: usize,
    keep: impl Fn(&T) -> bool,
) -> Result<(Vec<T>, Option<String>), StoreError> {
    let table = r.open_table(def)?;
    let rows = match after {
        Some(after) => table.range(..after)?,
        None => table.range::<&str>(..)?,
    };
    let mut out = Vec::new();
    let mut last_key = None;
    for row in rows.rev() {
        let (k, v) = row?;
        let record: T = decode(what, v.value())?;
        if !keep(&record) {
            continue;
        }
        if out.len() == limit {
            return Ok((out, last_key));
        }
        last_key = Some(k.value().to_string());
        out.push(record);
    }
    Ok((out, None))
}

/// Counts the rows of a table (cheap: redb keeps the length).
pub fn count<K: redb::Key + 'static, V: redb::Value + 'static>(
    r: &ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<u64, StoreError> {
    Ok(r.open_table(def)?.len()?)
}

/// A store in `dir` with small limits and `tables`, for unit tests.
#[cfg(test)]
pub(crate) fn open_with_tables(dir: &Path, tables: Tables) -> Result<(Store, WriterGuard), OpenError> {
    Store::open(
        dir,
        1 << 20,
        1 << 30,
        tables,
        Arc::new(Metrics::new()),
        Arc::new(Notify::new()),
    )
}

/// Tables of the store's own tests, beside its own.
#[cfg(test)]
pub(crate) mod test_tables {
    use redb::TableDefinition;

    /// The id of [`COUNTS`], for tests that write redo logs by hand.
    pub const COUNTS_ID: u8 = 200;

    super::tables! {
        /// name -> a counter.
        COUNTS: TableDefinition<&str, u64> = ("test_counts", 200);
        /// number -> bytes.
        ROWS: TableDefinition<u64, &[u8]> = ("test_rows", 201);
        /// id -> postcard bytes.
        RECORDS: TableDefinition<&str, &[u8]> = ("test_records", 202);
    }

    pub fn all() -> super::Tables {
        super::Tables::new(TABLES).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::test_tables::{COUNTS, RECORDS};
    use super::*;

    #[test]
    fn a_newer_schema_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let (store, guard) = open_with_tables(dir.path(), test_tables::all()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(store.write(Grows::No, |txn| {
            txn.open(META)?.insert("schema_version", 99)?;
            Ok(())
        }))
        .unwrap();
        drop(store);
        guard.close(Duration::from_secs(5));
        let err = open_with_tables(dir.path(), test_tables::all()).err().expect("refused");
        let text = err.to_string();
        assert!(text.contains("schema 99") && text.contains("newer herald"), "{text}");
    }

    #[test]
    fn progress_is_seen_at_once_and_kept_by_a_clean_close() {
        let dir = tempfile::tempdir().unwrap();
        let (store, guard) = open_with_tables(dir.path(), test_tables::all()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(store.write_progress(Grows::No, |txn| {
            txn.open(COUNTS)?.insert("erp", 41)?;
            Ok(())
        }))
        .unwrap();
        let seen = |store: &Store| store.read(|r| Ok(r.open_table(COUNTS)?.get("erp")?.map(|v| v.value())));
        assert_eq!(seen(&store).unwrap(), Some(41), "readable before it is durable");
        drop(store);
        guard.close(Duration::from_secs(5));
        let (store, _guard) = open_with_tables(dir.path(), test_tables::all()).unwrap();
        assert_eq!(seen(&store).unwrap(), Some(41), "made durable when the writer closed");
    }

    #[test]
    fn pages_go_newest_first_and_filters_do_not_break_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _guard) = open_with_tables(dir.path(), test_tables::all()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(store.write(Grows::No, |txn| {
            let mut t = txn.open(RECORDS)?;
            for i in 0..7u32 {
                t.insert(format!("id_{i}").as_str(), encode(&i).as_slice())?;
            }
            Ok(())
        }))
        .unwrap();
        let page = |after: Option<&str>| {
            store
                .read(|r| page_newest(r, RECORDS, "n", after, 2, |n: &u32| !n.is_multiple_of(3)))
                .unwrap()
        };
        let (first, next) = page(None);
        assert_eq!(first, [5, 4]);
        assert_eq!(next.as_deref(), Some("id_4"));
        let (second, next) = page(next.as_deref());
        assert_eq!(
            (second, next),
            (vec![2, 1], None),
            "id_0 is filtered out: no further page"
        );
    }

    #[test]
    fn a_journaled_batch_that_redb_does_not_take_is_applied_by_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _guard) = open_with_tables(dir.path(), test_tables::all()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let key = std::str::from_utf8(writer::tests::FAIL_MARK).unwrap();
        let failed = rt.block_on(store.write(Grows::No, move |txn| {
            txn.open(COUNTS)?.insert(key, 7)?;
            Ok(())
        }));
        assert!(failed.is_err(), "the caller hears of the failed commit");
        // The journal holds the batch, so the store reopens and replays it:
        // what readers see now is what a restart would replay, and later
        // batches are made on top of it, not under it.
        let seen = |store: &Store| store.read(|r| Ok(r.open_table(COUNTS)?.get(key)?.map(|v| v.value())));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !matches!(seen(&store), Ok(Some(7))) {
            assert!(Instant::now() < deadline, "never applied: {:?}", seen(&store));
            std::thread::sleep(Duration::from_millis(20));
        }
        let later = rt.block_on(store.write(Grows::No, move |txn| {
            let mut t = txn.open(COUNTS)?;
            let found = t.get(key)?.map(|v| v.value());
            t.insert("later", found.unwrap_or(0) + 1)?;
            Ok(())
        }));
        later.unwrap();
        let later = store.read(|r| Ok(r.open_table(COUNTS)?.get("later")?.map(|v| v.value())));
        assert_eq!(later.unwrap(), Some(8), "the later batch saw the journaled one");
    }

    #[test]
    fn a_record_that_checks_but_does_not_parse_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (store, guard) = open_with_tables(dir.path(), test_tables::all()).unwrap();
        rt.block_on(store.write(Grows::No, |txn| {
            txn.open(COUNTS)?.insert("k", 1)?;
            Ok(())
        }))
        .unwrap();
        drop(store);
        guard.close(Duration::from_secs(5));
        // The generation the clean close started, as the database keeps it.
        let generation = {
            let db = redb::Database::open(dir.path().join("herald.redb")).unwrap();
            let r = db.begin_read().unwrap();
            let meta = r.open_table(META).unwrap();
            meta.get(open::JOURNAL_GENERATION).unwrap().unwrap().value()
        };
        // Under it: one commit, then bytes that pass the checksum but are
        // no redo log (as stale data of a reused file might), then another.
        let medium = journal::JournalFile::open(&dir.path().join("herald.journal")).unwrap();
        let mut j = journal::Journal::open(Box::new(medium), open::JOURNAL_BYTES, u64::MAX).unwrap();
        j.restart(generation);
        let commit = |value: u64| {
            let mut log = Vec::new();
            redo::record(&mut log, test_tables::COUNTS_ID, b"k", Some(&value.to_le_bytes()));
            log
        };
        j.append(&commit(2)).unwrap();
        j.append(b"\x07 not a redo log").unwrap();
        j.append(&commit(3)).unwrap();
        j.sync().unwrap();
        drop(j);
        let (store, _guard) = open_with_tables(dir.path(), test_tables::all()).expect("the store opens");
        let k = store.read(|r| Ok(r.open_table(COUNTS)?.get("k")?.map(|v| v.value())));
        assert_eq!(
            k.unwrap(),
            Some(2),
            "the commit before the bad record, and nothing after it"
        );
    }

    #[test]
    fn a_failed_write_aborts_its_batch_and_nothing_is_half_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _guard) = open_with_tables(dir.path(), test_tables::all()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let result: Result<(), StoreError> = rt.block_on(store.write(Grows::Yes, |txn| {
            txn.open(META)?.insert("half", 1)?;
            Err(StoreError::Corrupt("test", "boom".into()))
        }));
        assert!(matches!(result, Err(StoreError::Corrupt(..))));
        let half = store
            .read(|r| Ok(r.open_table(META)?.get("half")?.map(|v| v.value())))
            .unwrap();
        assert_eq!(half, None);
    }
}
