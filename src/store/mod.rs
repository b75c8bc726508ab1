//! The durable store: one redb file, every table declared here, postcard
//! values, a schema version, and one writer thread that batches concurrent
//! writes into one commit (group commit), made durable by the journal
//! (`journal.rs`: one small `fdatasync` instead of a durable redb commit).
//!
//! Why one writer: redb's `begin_write` blocks while another write
//! transaction runs, and every durable commit is an fsync. Funnelling all
//! writes through a thread that drains its queue into a single transaction
//! turns N concurrent requests into one fsync, and a caller's future
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

mod crash;
mod journal;
#[cfg(test)]
mod power;
mod redo;
mod tables;
mod writer;

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    WriteTransaction,
};

pub use self::redo::Table;
pub(crate) use self::tables::tables;
pub use self::tables::{TableSpec, Tables};

use self::writer::{Apply, Completion, Op};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::metrics::Metrics;

/// Bumped when a table's layout changes; a database written by a newer
/// herald is refused rather than misread.
pub const SCHEMA_VERSION: u32 = 1;

// ---- the store's own tables ------------------------------------------------

tables! {
    /// Counters and settings: `schema_version`, `events.next_seq`, `jobs.next_id`, ...
    META: TableDefinition<&str, u64> = ("meta", 0);
    /// Secrets and small blobs kept by the daemon itself (`bootstrap.admin_sha256`).
    META_BLOBS: TableDefinition<&str, &[u8]> = ("meta_blobs", 1);
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Full(Limit),
    /// After an I/O error the database is reopened; until then writes (and,
    /// while it reopens, reads) are refused. Nothing was written.
    #[error("nothing was stored: the store is recovering from a storage error ({0}); retry in a few seconds")]
    Unavailable(String),
    #[error("database error: {0}")]
    Db(Arc<redb::Error>),
    #[error("a stored {0} record cannot be read: {1}")]
    Corrupt(&'static str, String),
    #[error("the store is closed")]
    Closed,
    #[error("another write in the same commit failed, so the commit was abandoned")]
    Aborted,
}

/// What made the store refuse new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The database file would grow past `storage.max_size`.
    MaxSize,
    /// The disk that holds `storage.dir` is full.
    Disk,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Said to the caller that was refused: what happened, what to do.
        f.write_str(match self {
            Limit::MaxSize => {
                "the database reached storage.max_size and nothing was stored; \
                 free space (retention does over time) or raise storage.max_size"
            }
            Limit::Disk => {
                "the disk that holds storage.dir is full and nothing was stored; free space on it \
                 (herald takes work again by itself within seconds)"
            }
        })
    }
}

impl<E: Into<redb::Error>> From<E> for StoreError {
    fn from(e: E) -> Self {
        let e: redb::Error = e.into();
        match &e {
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => StoreError::Full(Limit::Disk),
            redb::Error::PreviousIo => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Db(Arc::new(e)),
        }
    }
}

impl StoreError {
    /// Whether this says the store's state (full, recovering) rather than a
    /// fault of its own: the writer logs such states once, callers need not.
    pub fn is_state(&self) -> bool {
        matches!(
            self,
            StoreError::Full(_) | StoreError::Unavailable(_) | StoreError::Closed
        )
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
    tables: Arc<Tables>,
    wake_jobs: bool,
    /// Every change the batch made, for the journal.
    log: RefCell<Vec<u8>>,
}

impl Txn {
    fn new(inner: WriteTransaction, tables: Arc<Tables>) -> Txn {
        Txn {
            inner,
            tables,
            wake_jobs: false,
            log: RefCell::new(Vec::new()),
        }
    }

    /// Opens a table to read and change; its changes go to the journal.
    pub fn open<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        def: TableDefinition<K, V>,
    ) -> Result<Table<'_, K, V>, StoreError> {
        let id = self
            .tables
            .id(def.name())
            .unwrap_or_else(|| panic!("the table {:?} is in no feature's TABLES", def.name()));
        Ok(Table::new(self.inner.open_table(def)?, id, &self.log))
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
    /// A few KiB at most.
    Yes,
    /// About this many bytes (a publish of a large body).
    By(u64),
    No,
}

impl Grows {
    /// The bytes the database may take for it, B-tree copies included.
    fn estimate(self) -> u64 {
        match self {
            Grows::Yes => 2 << 10,
            Grows::By(n) => n + n / 2 + 512,
            Grows::No => 0,
        }
    }
}

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
    ops: mpsc::Sender<Op>,
    /// Set by the writer thread, read by `/readyz` and the status summary.
    health: Arc<AtomicU8>,
    file_bytes: Arc<AtomicU64>,
}

/// The database handle the readers and the writer share.
type Slot = Arc<RwLock<Option<Arc<Database>>>>;

/// What the store can do right now, as `/v1/status` and `/readyz` tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// New work is refused: the file reached `storage.max_size`.
    MaxSize,
    /// New work is refused: the disk is full.
    DiskFull,
    /// An I/O error: the database is being reopened.
    Recovering,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        [Health::Ok, Health::MaxSize, Health::DiskFull, Health::Recovering]
            .get(usize::from(v))
            .copied()
            .unwrap_or(Health::Ok)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::MaxSize => "max_size",
            Health::DiskFull => "disk_full",
            Health::Recovering => "recovering",
        }
    }
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
            journal_bytes: JOURNAL_BYTES,
            checkpoint_every: crash::checkpoint_every(CHECKPOINT_EVERY),
            tables: Arc::new(tables),
        };
        Store::open_on(dir, media, opts, metrics, jobs_changed)
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
        let (tx, rx) = mpsc::channel(4096);
        let health = Arc::new(AtomicU8::new(Health::Ok as u8));
        let file_bytes = Arc::new(AtomicU64::new(file_len(&path)));
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
            file_bytes: file_bytes.clone(),
        });
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .expect("spawning the writer thread");
        let store = Store {
            shared: Arc::new(Shared {
                db,
                path,
                ops: tx,
                health,
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
        self.submit(grows, true, f).await
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
        self.submit(grows, false, f).await
    }

    async fn submit<R, F>(&self, grows: Grows, durable: bool, f: F) -> Result<R, StoreError>
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
            .send(Op { grows, durable, apply })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// A consistent snapshot for reads; never blocks the writer.
    pub fn read<R>(&self, f: impl FnOnce(&ReadTransaction) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let db = self.shared.db.read().unwrap().clone();
        let db = db.ok_or_else(|| StoreError::Unavailable("the database is being reopened".into()))?;
        let txn = db.begin_read()?;
        f(&txn)
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.shared.health.load(Ordering::Relaxed))
    }

    /// Whether new work is refused for lack of space.
    pub fn is_full(&self) -> bool {
        matches!(self.health(), Health::MaxSize | Health::DiskFull)
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

fn init_schema(db: &Database, path: &Path, tables: &Tables) -> Result<(), OpenError> {
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
    tables.create_all(&txn).map_err(|e| fail(e.into()))?;
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

/// The journal's size: at one sync per event about a thousand events
/// between checkpoints, and a bounded replay at start.
const JOURNAL_BYTES: u64 = 8 << 20;
/// Longest time between checkpoints while writes come. A checkpoint writes
/// every database page changed since the last one, so at a slow pace a long
/// interval saves most; at a fast one the full journal comes first. Neither
/// memory (redb's write buffer is bounded by `storage.cache_size`) nor the
/// replay at start (bounded by the journal's size) grows with it.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(300);

/// The store's settings.
#[derive(Clone)]
struct Options {
    cache_size: u64,
    max_size: u64,
    journal_bytes: u64,
    checkpoint_every: Duration,
    /// Every table, by name (to journal a change) and by id (to replay it).
    tables: Arc<Tables>,
}

/// What the database and the journal are written to: files in
/// `storage.dir`, or for the power-cut test, layers that keep only what was
/// synced.
#[derive(Clone)]
enum Media {
    Files {
        db: PathBuf,
        journal: PathBuf,
    },
    /// Makes the (database, journal) backends, at each open.
    #[cfg(test)]
    Given(Arc<MakeBackends>),
}

#[cfg(test)]
type MakeBackends = dyn Fn() -> (Box<dyn redb::StorageBackend>, Box<dyn redb::StorageBackend>) + Send + Sync;

impl Media {
    fn db_path(&self) -> PathBuf {
        match self {
            Media::Files { db, .. } => db.clone(),
            #[cfg(test)]
            Media::Given(_) => PathBuf::from("/nonexistent/herald.redb"),
        }
    }

    fn open(&self, cache_size: u64) -> Result<(Database, Box<dyn redb::StorageBackend>), OpenError> {
        let mut builder = Database::builder();
        builder
            .set_cache_size(cache_size as usize)
            .set_repair_callback(|session| {
                tracing::warn!(
                    progress = session.progress(),
                    "repairing the database (after an unclean stop or a storage error)"
                );
            });
        let path = self.db_path();
        let fail = |e: redb::DatabaseError| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => OpenError::InUse(path.clone()),
            other => OpenError::Db(path.clone(), other.to_string()),
        };
        match self {
            Media::Files { db, journal } => {
                let db = builder.create(db).map_err(fail)?;
                let journal =
                    journal::JournalFile::open(journal).map_err(|e| OpenError::Db(journal.clone(), e.to_string()))?;
                Ok((db, Box::new(journal)))
            }
            #[cfg(test)]
            Media::Given(make) => {
                let (db, journal) = make();
                Ok((builder.create_with_backend(Boxed(db)).map_err(fail)?, journal))
            }
        }
    }
}

/// A boxed backend, as redb takes one by value.
#[cfg(test)]
#[derive(Debug)]
struct Boxed(Box<dyn redb::StorageBackend>);

#[cfg(test)]
impl redb::StorageBackend for Boxed {
    fn len(&self) -> std::io::Result<u64> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.0.write(offset, data)
    }
}

/// Opens the database and the journal, applies what the journal holds past
/// the last checkpoint, and makes that durable under a new generation:
/// after a crash or a power cut, the store starts from exactly the last
/// commit the journal kept.
fn open_and_replay(media: &Media, opts: &Options) -> Result<(Database, journal::Journal), OpenError> {
    let path = media.db_path();
    let fail = |e: StoreError| OpenError::Db(path.clone(), e.to_string());
    let (db, medium) = media.open(opts.cache_size)?;
    init_schema(&db, &path, &opts.tables)?;
    let free = match media {
        Media::Files { db, .. } => db.parent().map_or(u64::MAX, writer::free_space),
        #[cfg(test)]
        Media::Given(_) => u64::MAX,
    };
    let mut journal =
        journal::Journal::open(medium, opts.journal_bytes, free).map_err(|e| fail(StoreError::from(e)))?;
    let txn = db.begin_write().map_err(|e| fail(e.into()))?;
    let generation = txn
        .open_table(META)
        .and_then(|t| Ok(t.get(JOURNAL_GENERATION)?.map(|v| v.value())))
        .map_err(|e| fail(e.into()))?;
    let records = match generation {
        Some(g) => journal.records(g).map_err(|e| fail(StoreError::from(e)))?,
        None => Vec::new(),
    };
    for record in &records {
        for change in redo::changes(record) {
            opts.tables.replay(&txn, &change.map_err(fail)?).map_err(fail)?;
        }
    }
    if !records.is_empty() {
        tracing::info!(
            commits = records.len(),
            "applied the journal's commits made after the last checkpoint"
        );
    }
    crash::point("replay", || {});
    let next = new_generation();
    let stored: Result<(), redb::Error> = (|| {
        txn.open_table(META)?.insert(JOURNAL_GENERATION, next)?;
        Ok(())
    })();
    stored.map_err(|e| fail(e.into()))?;
    txn.commit().map_err(|e| fail(e.into()))?;
    journal.restart(next);
    Ok((db, journal))
}

/// The `META` key of the journal generation the last checkpoint started.
const JOURNAL_GENERATION: &str = "journal.generation";

/// A generation nobody can predict, so that no stored bytes (an event's
/// data among them) can pass for a record of the current one.
fn new_generation() -> u64 {
    let mut b = [0u8; 8];
    rand::fill(&mut b);
    u64::from_le_bytes(b)
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
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
