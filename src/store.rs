//! The durable store: one redb file, every table declared here, postcard
//! values, a schema version, and one writer thread that batches concurrent
//! writes into one durable commit (group commit).
//!
//! Why one writer: redb's `begin_write` blocks while another write
//! transaction runs, and every commit is an fsync. Funnelling all writes
//! through a thread that drains its queue into a single transaction turns N
//! concurrent requests into one fsync, and a caller's future resolves only
//! after the commit that holds its write returned, so a 2xx means "on disk".
//!
//! The contract for a write closure: do every check that can refuse the
//! request *before* writing, and return a refusal as a value (`Ok(Err(..))`).
//! An `Err(StoreError)` means the storage itself failed; the writer then
//! aborts the whole batch and every caller in it gets the error, so nothing
//! is ever half-committed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::metrics::Metrics;

/// Bumped when a table's layout changes; a database written by a newer
/// herald is refused rather than misread.
pub const SCHEMA_VERSION: u32 = 1;

// ---- every table, declared once --------------------------------------------

/// Counters and settings: `schema_version`, `events.next_seq`, `jobs.next_id`, ...
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Secrets and small blobs kept by the daemon itself (`bootstrap.admin_sha256`).
pub const META_BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("meta_blobs");
/// seq -> `events::StoredEvent`.
pub const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// "account\0key" -> seq of the first event published with that key.
pub const IDEMPOTENCY: TableDefinition<&str, u64> = TableDefinition::new("idempotency");
/// (due ms, job id) -> `jobs::Job`: the durable timer queue, in due order.
pub const JOBS: TableDefinition<(i64, u64), &[u8]> = TableDefinition::new("jobs");
/// job name -> its key in `JOBS`, for jobs that exist at most once (the midnight roll).
pub const JOB_NAMES: TableDefinition<&str, (i64, u64)> = TableDefinition::new("job_names");
/// name -> `executions::Interface`.
pub const INTERFACES: TableDefinition<&str, &[u8]> = TableDefinition::new("interfaces");
/// execution id (time-ordered) -> `executions::Execution`.
pub const EXECUTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("executions");
/// "interface\0YYYY-MM-DD" -> id of that day's daily execution.
pub const DAILY: TableDefinition<&str, &str> = TableDefinition::new("daily");
/// (execution id, line number) -> `executions::LogLine`.
pub const LOGS: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("logs");
/// mail id (time-ordered) -> `mail::Mail`: the outbox.
pub const MAILS: TableDefinition<&str, &[u8]> = TableDefinition::new("mails");
/// gathering key (kind, account, address) -> id of the mail still taking entries.
pub const MAIL_OPEN: TableDefinition<&str, &str> = TableDefinition::new("mail_open");
/// webhook id -> `webhooks::Webhook`.
pub const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhooks");
/// (webhook id, event seq) -> 0: the events a webhook has yet to deliver, in order.
pub const WH_QUEUE: TableDefinition<(&str, u64), u8> = TableDefinition::new("wh_queue");
/// (webhook id, attempt number) -> `webhooks::Attempt`: the last attempts of each webhook.
pub const WH_ATTEMPTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("wh_attempts");

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the database reached storage.max_size; nothing was stored")]
    Full,
    #[error("database error: {0}")]
    Db(Arc<redb::Error>),
    #[error("a stored {0} record cannot be read: {1}")]
    Corrupt(&'static str, String),
    #[error("the store is closed")]
    Closed,
    #[error("another write in the same commit failed, so the commit was abandoned")]
    Aborted,
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        let e: redb::Error = e.into();
        if let redb::Error::Io(io) = &e
            && io.kind() == std::io::ErrorKind::StorageFull
        {
            return StoreError::Full;
        }
        StoreError::Db(Arc::new(e))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the data directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("{0} is in use by another herald process; stop it or give this one another storage.dir")]
    InUse(PathBuf),
    #[error(
        "{path} was written by a newer herald (schema {found}, this one knows up to {SCHEMA_VERSION}); \
         run the newer herald or restore a backup"
    )]
    Newer { path: PathBuf, found: u64 },
    #[error("cannot open {0}: {1}")]
    Db(PathBuf, String),
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("postcard encodes every herald record")
}

pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(what, e.to_string()))
}

/// A write transaction as the writer thread hands it to one operation.
pub struct Txn {
    inner: WriteTransaction,
    wake_jobs: bool,
}

impl Txn {
    pub fn open<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<Table<'_, K, V>, StoreError> {
        Ok(self.inner.open_table(def)?)
    }

    /// Tells the dispatcher, once this commit is durable, that the job queue changed.
    pub fn wake_jobs(&mut self) {
        self.wake_jobs = true;
    }

    /// Takes the next value of a counter in `META`, starting at 1.
    pub fn next_id(&self, counter: &str) -> Result<u64, StoreError> {
        let mut meta = self.open(META)?;
        let next = meta.get(counter)?.map_or(1, |v| v.value());
        meta.insert(counter, next + 1)?;
        Ok(next)
    }
}

/// Whether a write adds data (refused when the store is full) or only
/// updates and removes (always allowed, so deliveries and sweeps go on).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Grows {
    Yes,
    No,
}

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Apply = Box<dyn FnOnce(Result<&mut Txn, StoreError>) -> (bool, Completion) + Send>;

struct Op {
    grows: Grows,
    apply: Apply,
}

/// A cheap handle; clones share one database and one writer.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    db: Arc<Database>,
    path: PathBuf,
    ops: mpsc::Sender<Op>,
    /// Set by the writer thread, read by `/readyz` and the status summary.
    full: Arc<AtomicBool>,
    file_bytes: Arc<AtomicU64>,
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

/// Most writes that one commit carries; bounds the latency of the first.
const MAX_BATCH: usize = 512;
/// How long the writer waits for more writes when the last commit was shared.
const LINGER: Duration = Duration::from_micros(250);

impl Store {
    pub fn open(
        dir: &Path,
        cache_size: u64,
        max_size: u64,
        metrics: Arc<Metrics>,
        jobs_changed: Arc<Notify>,
    ) -> Result<(Store, WriterGuard), OpenError> {
        create_private_dir(dir).map_err(|e| OpenError::Dir(dir.to_path_buf(), e))?;
        let path = dir.join("herald.redb");
        let db = Database::builder()
            .set_cache_size(cache_size as usize)
            .set_repair_callback(|session| {
                tracing::warn!(
                    progress = session.progress(),
                    "repairing the database after an unclean stop"
                );
            })
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => OpenError::InUse(path.clone()),
                other => OpenError::Db(path.clone(), other.to_string()),
            })?;
        init_schema(&db, &path)?;

        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel(4096);
        let full = Arc::new(AtomicBool::new(false));
        let file_bytes = Arc::new(AtomicU64::new(file_len(&path)));
        let writer = Writer {
            db: db.clone(),
            path: path.clone(),
            max_size,
            metrics,
            jobs_changed,
            full: full.clone(),
            file_bytes: file_bytes.clone(),
            last_stats: None,
        };
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .expect("spawning the writer thread");
        let store = Store {
            shared: Arc::new(Shared {
                db,
                path,
                ops: tx,
                full,
                file_bytes,
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
            .send(Op { grows, apply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// A consistent snapshot for reads; never blocks the writer.
    pub fn read<R>(&self, f: impl FnOnce(&ReadTransaction) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let txn = self.shared.db.begin_read()?;
        f(&txn)
    }

    pub fn is_full(&self) -> bool {
        self.shared.full.load(Ordering::Relaxed)
    }

    pub fn file_bytes(&self) -> u64 {
        self.shared.file_bytes.load(Ordering::Relaxed)
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

fn init_schema(db: &Database, path: &Path) -> Result<(), OpenError> {
    let fail = |e: StoreError| OpenError::Db(path.to_path_buf(), e.to_string());
    let txn = db.begin_write().map_err(|e| fail(e.into()))?;
    {
        let mut meta = txn.open_table(META).map_err(|e| fail(e.into()))?;
        let found = meta
            .get("schema_version")
            .map_err(|e| fail(e.into()))?
            .map(|v| v.value());
        match found {
            Some(v) if v > u64::from(SCHEMA_VERSION) => {
                return Err(OpenError::Newer {
                    path: path.to_path_buf(),
                    found: v,
                });
            }
            Some(_) => {}
            None => {
                meta.insert("schema_version", u64::from(SCHEMA_VERSION))
                    .map_err(|e| fail(e.into()))?;
            }
        }
    }
    // Create every table up front, so readers never meet a missing one.
    let created: Result<(), redb::Error> = (|| {
        txn.open_table(META_BLOBS)?;
        txn.open_table(EVENTS)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(JOBS)?;
        txn.open_table(JOB_NAMES)?;
        txn.open_table(INTERFACES)?;
        txn.open_table(EXECUTIONS)?;
        txn.open_table(DAILY)?;
        txn.open_table(LOGS)?;
        txn.open_table(MAILS)?;
        txn.open_table(MAIL_OPEN)?;
        txn.open_table(WEBHOOKS)?;
        txn.open_table(WH_QUEUE)?;
        txn.open_table(WH_ATTEMPTS)?;
        Ok(())
    })();
    created.map_err(|e| fail(e.into()))?;
    txn.commit().map_err(|e| fail(e.into()))?;
    Ok(())
}

/// Checks that the data directory exists or can be made, and takes files:
/// at start, so that a wrong `storage.dir` is a configuration error.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    create_private_dir(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(".herald-write-check");
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        // A full disk is not a fault of the configuration: the store copes.
        Err(e) if e.kind() == std::io::ErrorKind::StorageFull => Ok(()),
        Err(e) => Err(format!("cannot write in {}: {e}", dir.display())),
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The writer thread's state; nothing else opens a write transaction.
struct Writer {
    db: Arc<Database>,
    path: PathBuf,
    max_size: u64,
    metrics: Arc<Metrics>,
    jobs_changed: Arc<Notify>,
    full: Arc<AtomicBool>,
    file_bytes: Arc<AtomicU64>,
    /// When the file has reached `max_size`: the bytes redb really uses
    /// (freed pages are reused), when that was measured, and the commits since.
    last_stats: Option<(Instant, u64, u32)>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Op>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        let mut last_batch = 0;
        while let Some(first) = rx.blocking_recv() {
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
    }

    fn commit(&mut self, batch: &mut Vec<Op>) {
        let started = Instant::now();
        let full = self.check_full();
        let mut txn = match self.db.begin_write() {
            Ok(t) => Txn {
                inner: t,
                wake_jobs: false,
            },
            Err(e) => {
                let e = StoreError::from(e);
                tracing::error!(error = %e, "cannot begin a write transaction");
                for op in batch.drain(..) {
                    (op.apply)(Err(e.clone())).1(Ok(()));
                }
                return;
            }
        };
        let n = batch.len();
        let mut done: Vec<Completion> = Vec::with_capacity(n);
        let mut refused: Vec<Completion> = Vec::new();
        let mut all_ok = true;
        for op in batch.drain(..) {
            if full && op.grows == Grows::Yes {
                // Never run: nothing of it is written, the caller learns why.
                refused.push((op.apply)(Err(StoreError::Full)).1);
                continue;
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
            txn.inner.commit().map_err(StoreError::from)
        } else {
            let _ = txn.inner.abort();
            Err(StoreError::Aborted)
        };
        match &result {
            Ok(()) => {
                self.metrics.commits.inc();
                self.metrics.commit_seconds.observe(started.elapsed().as_secs_f64());
                self.metrics.commit_batch.observe(done.len() as f64);
                if wake {
                    self.jobs_changed.notify_one();
                }
            }
            Err(e) => tracing::error!(error = %e, writes = n, "the batch was not committed"),
        }
        for c in done {
            c(result.clone());
        }
        for c in refused {
            c(Ok(()));
        }
        let len = file_len(&self.path);
        self.file_bytes.store(len, Ordering::Relaxed);
        self.metrics.store_bytes.set(len as i64);
    }

    /// Whether writes that add data must be refused. The file never shrinks,
    /// so once it reached `max_size` we ask redb how much it really uses (at
    /// most every second or 16 commits: the measure walks the trees).
    fn check_full(&mut self) -> bool {
        let len = self.file_bytes.load(Ordering::Relaxed);
        let full = if len < self.max_size {
            self.last_stats = None;
            false
        } else {
            let stale = self
                .last_stats
                .is_none_or(|(at, _, commits)| at.elapsed() > Duration::from_secs(1) || commits >= 16);
            if stale && let Ok(used) = self.used_bytes() {
                self.last_stats = Some((Instant::now(), used, 0));
            }
            if let Some((_, _, commits)) = &mut self.last_stats {
                *commits += 1;
            }
            // Keep a tenth free for the updates that deliveries and sweeps make.
            self.last_stats
                .is_none_or(|(_, used, _)| used >= self.max_size / 10 * 9)
        };
        if full != self.full.swap(full, Ordering::Relaxed) {
            if full {
                tracing::error!(
                    bytes = len,
                    max = self.max_size,
                    "storage full: new events are refused until retention frees space"
                );
            } else {
                tracing::info!("storage has room again");
            }
        }
        full
    }

    fn used_bytes(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_write()?;
        let stats = txn.stats()?;
        txn.abort()?;
        Ok(stats.stored_bytes() + stats.metadata_bytes())
    }
}

/// A store in `dir` with small limits, for the unit tests of every module.
#[cfg(test)]
pub(crate) fn open_for_test(dir: &Path) -> Result<(Store, WriterGuard), OpenError> {
    Store::open(dir, 1 << 20, 1 << 30, Arc::new(Metrics::new()), Arc::new(Notify::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_schema_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let (store, guard) = open_for_test(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(store.write(Grows::No, |txn| {
            txn.open(META)?.insert("schema_version", 99)?;
            Ok(())
        }))
        .unwrap();
        drop(store);
        guard.close(Duration::from_secs(5));
        let err = open_for_test(dir.path()).err().expect("refused");
        let text = err.to_string();
        assert!(text.contains("schema 99") && text.contains("newer herald"), "{text}");
    }

    #[test]
    fn pages_go_newest_first_and_filters_do_not_break_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _guard) = open_for_test(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(store.write(Grows::No, |txn| {
            let mut t = txn.open(EXECUTIONS)?;
            for i in 0..7u32 {
                t.insert(format!("id_{i}").as_str(), encode(&i).as_slice())?;
            }
            Ok(())
        }))
        .unwrap();
        let page = |after: Option<&str>| {
            store
                .read(|r| page_newest(r, EXECUTIONS, "n", after, 2, |n: &u32| !n.is_multiple_of(3)))
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
    fn a_failed_write_aborts_its_batch_and_nothing_is_half_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _guard) = open_for_test(dir.path()).unwrap();
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
