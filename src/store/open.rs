//! Opening the store: the data dir, the database and the journal, the
//! schema version, and the replay of the journal past the last checkpoint
//! (invariant 5 of `store/mod.rs`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableTable};

use super::error::StoreError;
use super::tables::{META, Tables};
use super::{crash, journal, redo};

/// What the files of a data dir mean, written in it at every open: a
/// release refuses a data dir of a newer schema rather than misread it.
/// Raised whenever the meaning of the stored files changes:
/// 1. the database: tables and postcard values;
/// 2. the journal: `herald.journal` holds acknowledged commits past the last
///    checkpoint, so a release that does not replay it must not open the dir.
pub const SCHEMA_VERSION: u32 = 2;

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
            Some(v) if v == u64::from(SCHEMA_VERSION) => {}
            found => {
                meta.insert("schema_version", u64::from(SCHEMA_VERSION))
                    .map_err(|e| fail(e.into()))?;
                if let Some(v) = found {
                    tracing::info!(
                        from = v,
                        to = SCHEMA_VERSION,
                        "the data dir is upgraded; releases before this one refuse to open it"
                    );
                }
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

/// The journal's largest size: at one sync per event about a thousand
/// events between checkpoints, and a bounded replay at start.
pub(super) const JOURNAL_BYTES: u64 = 8 << 20;

/// The journal's size for a store of at most `max_size`: an eighth of it,
/// from 32 KiB to [`JOURNAL_BYTES`] (1 MiB for 8 MiB, 8 MiB from 64 MiB on).
/// It counts in `max_size`; a smaller journal only checkpoints more often.
pub(super) fn journal_bytes(max_size: u64) -> u64 {
    (max_size / 8).clamp(32 << 10, JOURNAL_BYTES) & !4095
}
/// Longest time between checkpoints while writes come. A checkpoint writes
/// every database page changed since the last one, so at a slow pace a long
/// interval saves most; at a fast one the full journal comes first. Neither
/// memory (redb's write buffer is bounded by `storage.cache_size`) nor the
/// replay at start (bounded by the journal's size) grows with it.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_secs(300);

/// The store's settings.
#[derive(Clone)]
pub(super) struct Options {
    pub(super) cache_size: u64,
    pub(super) max_size: u64,
    pub(super) journal_bytes: u64,
    pub(super) checkpoint_every: Duration,
    /// Every table, by name (to journal a change) and by id (to replay it).
    pub(super) tables: Arc<Tables>,
}

/// What the database and the journal are written to: files in
/// `storage.dir`, or for the power-cut test, layers that keep only what was
/// synced.
#[derive(Clone)]
pub(super) enum Media {
    Files {
        db: PathBuf,
        journal: PathBuf,
    },
    /// Makes the (database, journal) backends, at each open.
    #[cfg(test)]
    Given(Arc<MakeBackends>),
}

#[cfg(test)]
pub(super) type MakeBackends = dyn Fn() -> (Box<dyn redb::StorageBackend>, Box<dyn redb::StorageBackend>) + Send + Sync;

impl Media {
    pub(super) fn db_path(&self) -> PathBuf {
        match self {
            Media::Files { db, .. } => db.clone(),
            #[cfg(test)]
            Media::Given(_) => PathBuf::from("/nonexistent/herald.redb"),
        }
    }

    fn open(&self, cache_size: u64, tables: &Tables) -> Result<(Database, Box<dyn redb::StorageBackend>), OpenError> {
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
                if !db.exists() {
                    create_first(db, tables)?;
                }
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
pub(super) struct Boxed(Box<dyn redb::StorageBackend>);

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
pub(super) fn open_and_replay(media: &Media, opts: &Options) -> Result<(Database, journal::Journal), OpenError> {
    let path = media.db_path();
    let fail = |e: StoreError| OpenError::Db(path.clone(), e.to_string());
    let (db, medium) = media.open(opts.cache_size, &opts.tables)?;
    init_schema(&db, &path, &opts.tables)?;
    let free = match media {
        Media::Files { db, .. } => db.parent().map_or(u64::MAX, free_space),
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
    let mut applied = 0;
    for record in &records {
        // A record is applied whole or not at all. One that passed its
        // checksum but does not parse, or names a table nobody declares,
        // is not a commit of this database (stale bytes that happened to
        // check): the commits end before it, as at any record that does
        // not check.
        let changes = match redo::changes(record).collect::<Result<Vec<_>, _>>() {
            Ok(all) if all.iter().all(|c| opts.tables.knows(c.table)) => all,
            _ => {
                tracing::warn!(
                    record = applied + 1,
                    "a journal record checks but is not a commit of this database; the replay ends before it"
                );
                break;
            }
        };
        for change in &changes {
            opts.tables.replay(&txn, change).map_err(fail)?;
        }
        applied += 1;
    }
    if applied > 0 {
        tracing::info!(
            commits = applied,
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
    // Its records are all in the database now: a journal larger than this
    // store's (an older release's, or a lowered max_size) gives back the rest.
    journal
        .shrink_to(opts.journal_bytes)
        .map_err(|e| fail(StoreError::from(e)))?;
    Ok((db, journal))
}

/// The `META` key of the journal generation the last checkpoint started.
pub(super) const JOURNAL_GENERATION: &str = "journal.generation";

/// A generation nobody can predict, so that no stored bytes (an event's
/// data among them) can pass for a record of the current one.
pub(super) fn new_generation() -> u64 {
    let mut b = [0u8; 8];
    rand::fill(&mut b);
    u64::from_le_bytes(b)
}

/// Creates `dir` (and what is missing above it) readable by herald only;
/// each new directory's name is made durable in its parent, so that a power
/// cut cannot take the data dir away with the files herald wrote into it.
pub(super) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    for d in missing.iter().rev() {
        match std::fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Creates the database of a first start beside its place, complete with
/// its schema, and only then moves it there: a first start cut short at any
/// instant (redb writes its header before its magic number) leaves no
/// database that is not one, and the next start begins again.
fn create_first(path: &Path, tables: &Tables) -> Result<(), OpenError> {
    let fail = |e: String| OpenError::Db(path.to_path_buf(), e);
    let mut fresh = path.as_os_str().to_owned();
    fresh.push(".new");
    let fresh = PathBuf::from(fresh);
    match std::fs::remove_file(&fresh) {
        Ok(()) => tracing::warn!("the first start was cut short before; starting it again"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(format!("cannot remove {}: {e}", fresh.display()))),
    }
    {
        let db = Database::create(&fresh).map_err(|e| fail(e.to_string()))?;
        crash::point("first-start", || {
            // As a kill in the middle of redb's own start would leave it.
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .open(&fresh)
                .and_then(|f| std::os::unix::fs::FileExt::write_all_at(&f, &[0; 512], 0));
        });
        // Its commit is durable: the file is whole before it gets its name.
        init_schema(&db, &fresh, tables)?;
    }
    std::fs::rename(&fresh, path).map_err(|e| fail(format!("cannot rename {}: {e}", fresh.display())))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(dir).map_err(|e| fail(e.to_string()))
}

/// Makes the names in `dir` durable: what was created, renamed or removed
/// in it survives a power cut (a file's own `fsync` does not cover its name).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(test)]
    tests::SYNCED.with(|s| s.borrow_mut().push(dir.to_path_buf()));
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `text` to `path` readable by herald only, durably and whole: a
/// power cut leaves the old file or the new one, never a part or no name.
pub fn write_durably(path: &Path, text: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(text)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// A file's length and the bytes it takes on the disk (its allocated
/// blocks: less than its length where it has holes, as redb's file has
/// past the pages it wrote); zeros when it does not exist.
pub(super) fn file_size(path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map_or((0, 0), |m| (m.len(), m.blocks() * 512))
}

/// The space free for herald on the disk that holds `dir`.
pub(super) fn free_space(dir: &Path) -> u64 {
    match rustix::fs::statvfs(dir) {
        Ok(s) => s.f_bavail.saturating_mul(s.f_frsize),
        // Unknown: do not refuse work on a guess.
        Err(_) => u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    thread_local! {
        /// The directories this thread synced, in order.
        pub(in crate::store) static SYNCED: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
    }

    /// The directories `f` synced.
    fn synced_by(f: impl FnOnce()) -> Vec<PathBuf> {
        SYNCED.with(|s| s.borrow_mut().clear());
        f();
        SYNCED.with(|s| s.take())
    }

    #[test]
    fn every_name_herald_creates_is_made_durable_in_its_directory() {
        // Finding 4: a file's fsync does not keep its name; a power cut
        // after it could leave the admin token's hash stored and the file gone.
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("admin.token");
        assert_eq!(synced_by(|| write_durably(&token, b"t\n").unwrap()), [dir.path()]);
        // A new data dir: each directory made is made durable in its parent.
        let data = dir.path().join("var/lib/herald");
        assert_eq!(
            synced_by(|| create_private_dir(&data).unwrap()),
            [
                dir.path().to_path_buf(),
                dir.path().join("var"),
                dir.path().join("var/lib")
            ]
        );
        // The store's files, once created, before any write is acknowledged.
        let synced = synced_by(|| drop(crate::test_store(&data)));
        assert!(synced.iter().filter(|d| **d == data).count() >= 2, "{synced:?}");
        // Nothing new, nothing synced for it.
        assert_eq!(synced_by(|| create_private_dir(&data).unwrap()), Vec::<PathBuf>::new());
    }

    #[test]
    fn a_durable_write_replaces_the_file_whole_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        write_durably(&path, b"first\n").unwrap();
        write_durably(&path, b"second\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "readable by herald only");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["admin.token"], "no temporary file is left");
    }

    #[test]
    fn a_new_data_dir_is_made_with_its_parents_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("var/lib/herald");
        create_private_dir(&data).unwrap();
        create_private_dir(&data).unwrap();
        for d in [dir.path().join("var"), dir.path().join("var/lib"), data] {
            let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
    }
}
