//! The journal: a small preallocated file that takes each group commit's
//! redo log, so that an acknowledged write costs one `fdatasync` of a page
//! or two instead of a durable redb commit, which rewrites every B-tree page
//! on the paths it touched (tens of KiB on flash for one small event).
//!
//! What is written when, what is synced before an answer and what replay
//! assumes are the store's invariants, stated once in `store/mod.rs`. This
//! file keeps its part of them: records of the stored generation are read
//! from the start until the first that does not check (an older
//! generation's, one torn by a power cut, or preallocated zeros), so what
//! is read is always a prefix of the commits made; after a sync the next
//! record starts on a fresh page; and the file is written in place and
//! never grows, so `fdatasync` has no metadata to write.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use redb::StorageBackend;

/// Where the next record starts after a sync: the page size of flash and
/// of the file systems herald runs on.
const PAGE: u64 = 4096;
const HEADER: u64 = 8;
/// The length word of a record that only says "go on at the next page".
const PAD: u32 = u32::MAX;

pub(super) struct Journal {
    medium: Box<dyn StorageBackend>,
    capacity: u64,
    generation: u64,
    /// Where the next record goes.
    end: u64,
    /// Whether records were written since the last sync.
    unsynced: bool,
    /// When the first record of this generation was written.
    since: Option<Instant>,
}

impl Journal {
    /// Opens the journal on `medium`, preallocating it to `capacity` with
    /// zeros where it is shorter, but to no more than a quarter of the
    /// `free` disk space. Short of room it keeps what it has: a batch that
    /// does not fit is then made durable by a checkpoint instead.
    pub(super) fn open(medium: Box<dyn StorageBackend>, capacity: u64, free: u64) -> io::Result<Journal> {
        let mut len = medium.len()?;
        let capacity = capacity.min(len + free / 4);
        if len < capacity {
            let zeros = vec![0u8; 64 << 10];
            while len < capacity {
                let n = (capacity - len).min(zeros.len() as u64);
                match medium.write(len, &zeros[..n as usize]) {
                    Ok(()) => len += n,
                    Err(e) if e.kind() == io::ErrorKind::StorageFull => break,
                    Err(e) => return Err(e),
                }
            }
            medium.sync_data()?;
        }
        Ok(Journal {
            medium,
            capacity: len - len % PAGE,
            generation: 0,
            end: 0,
            unsynced: false,
            since: None,
        })
    }

    /// Gives back what lies past `capacity`: only right after a restart,
    /// when no record of the current generation is written yet.
    pub(super) fn shrink_to(&mut self, capacity: u64) -> io::Result<()> {
        debug_assert_eq!(self.end, 0, "shrunk with records of this generation");
        let capacity = capacity - capacity % PAGE;
        if self.capacity > capacity {
            self.medium.set_len(capacity)?;
            self.capacity = capacity;
        }
        Ok(())
    }

    /// The bytes the journal takes (written in full: no holes).
    pub(super) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The payloads of the records of `generation`, in the order written.
    pub(super) fn records(&self, generation: u64) -> io::Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut at = 0;
        loop {
            at = record_start(at);
            if at + HEADER > self.capacity {
                return Ok(out);
            }
            let mut header = [0u8; HEADER as usize];
            self.medium.read(at, &mut header)?;
            let len = u32::from_le_bytes(header[..4].try_into().unwrap());
            let crc = u32::from_le_bytes(header[4..].try_into().unwrap());
            if len == PAD {
                if crc != checksum(generation, len, &[]) {
                    return Ok(out);
                }
                at = (at + HEADER).next_multiple_of(PAGE);
                continue;
            }
            let end = at + HEADER + u64::from(len);
            if len == 0 || end > self.capacity {
                return Ok(out);
            }
            let mut payload = vec![0u8; len as usize];
            self.medium.read(at + HEADER, &mut payload)?;
            if crc != checksum(generation, len, &payload) {
                return Ok(out);
            }
            out.push(payload);
            at = end;
        }
    }

    /// Starts a new generation at the beginning of the file: called once a
    /// checkpoint that stored `generation` is durable.
    pub(super) fn restart(&mut self, generation: u64) {
        self.generation = generation;
        self.end = 0;
        self.unsynced = false;
        self.since = None;
    }

    /// Whether a record of `len` payload bytes fits (with the pad that may follow).
    pub(super) fn fits(&self, len: usize) -> bool {
        record_start(self.end) + HEADER + len as u64 + HEADER <= self.capacity
    }

    /// When the oldest record not yet checkpointed was written.
    pub(super) fn since(&self) -> Option<Instant> {
        self.since
    }

    /// Writes one record (not yet synced). On an error, what was written
    /// may be anything: the caller treats the journal as broken.
    pub(super) fn append(&mut self, payload: &[u8]) -> io::Result<()> {
        self.end = record_start(self.end);
        let len = u32::try_from(payload.len()).map_err(|_| io::Error::other("a journal record over 4 GiB"))?;
        let mut record = Vec::with_capacity(payload.len() + HEADER as usize);
        record.extend_from_slice(&len.to_le_bytes());
        record.extend_from_slice(&checksum(self.generation, len, payload).to_le_bytes());
        record.extend_from_slice(payload);
        self.write(&record)?;
        self.since.get_or_insert_with(Instant::now);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        super::crash::point("journal-append", || {
            // Dies halfway through the record: a torn append.
            let _ = self.medium.write(self.end, &bytes[..bytes.len() / 2]);
        });
        self.medium.write(self.end, bytes)?;
        self.end += bytes.len() as u64;
        self.unsynced = true;
        Ok(())
    }

    /// Makes every record written so far durable; the next one starts on a
    /// fresh page. Whether there was anything to sync.
    pub(super) fn sync(&mut self) -> io::Result<bool> {
        if !self.unsynced {
            return Ok(false);
        }
        if !self.end.is_multiple_of(PAGE) && PAGE - self.end % PAGE >= HEADER {
            let mut pad = Vec::with_capacity(HEADER as usize);
            pad.extend_from_slice(&PAD.to_le_bytes());
            pad.extend_from_slice(&checksum(self.generation, PAD, &[]).to_le_bytes());
            self.medium.write(self.end, &pad)?;
        }
        self.medium.sync_data()?;
        super::crash::point("journal-synced", || {});
        self.end = self.end.next_multiple_of(PAGE);
        self.unsynced = false;
        Ok(true)
    }
}

/// Where a record written at `at` starts: a header never straddles a page,
/// so the rest of a page too short for one is skipped (writer and reader alike).
fn record_start(at: u64) -> u64 {
    if PAGE - at % PAGE < HEADER {
        at.next_multiple_of(PAGE)
    } else {
        at
    }
}

fn checksum(generation: u64, len: u32, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The journal's file, written in place with `pwrite` and synced with
/// `fdatasync`.
#[derive(Debug)]
pub(super) struct JournalFile(File);

impl JournalFile {
    pub(super) fn open(path: &Path) -> io::Result<JournalFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let existed = path.exists();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        if !existed && let Some(dir) = path.parent() {
            // The new name must survive a power cut as well as the file.
            super::open::sync_dir(dir)?;
        }
        Ok(JournalFile(file))
    }
}

impl StorageBackend for JournalFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.0.read_exact_at(out, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
}
