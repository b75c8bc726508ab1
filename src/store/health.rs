//! What the writer shares with the readers: the database handle it may
//! replace, and the store's health.

use std::sync::{Arc, RwLock};

use redb::Database;
use tokio::sync::watch;

/// The database handle the readers and the writer share.
pub(super) type Slot = Arc<RwLock<Option<Arc<Database>>>>;

/// The store's health: set by the writer, read by `/readyz` and the
/// status, watched by whoever tells people about it.
pub(super) type HealthCell = Arc<watch::Sender<Health>>;

/// What the store can do right now, as `/v1/status` and `/readyz` tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// New work is refused: the store's files reached `storage.max_size`.
    MaxSize,
    /// New work is refused: the disk is full.
    DiskFull,
    /// An I/O error: the database is being reopened.
    Recovering,
}

impl Health {
    /// Whether new work is refused for lack of space.
    pub fn is_full(self) -> bool {
        matches!(self, Health::MaxSize | Health::DiskFull)
    }

    /// What a person is told of a full or nearly full store, and what to
    /// do: the status page and the system notification say the same.
    pub fn advice(self, on_disk: u64, room_left: u64, max_size: u64) -> String {
        let (size, max, left) = (
            bytesize::ByteSize(on_disk).display().iec_short(),
            bytesize::ByteSize(max_size).display().iec_short(),
            bytesize::ByteSize(room_left).display().iec_short(),
        );
        match self {
            Health::DiskFull => format!(
                "The disk that holds storage.dir is full: new events are refused (507), since less than a few \
                 hundred KiB are free on it (herald's files take {size}). Free space on that disk; herald takes \
                 work again by itself within seconds. Reads and deliveries go on."
            ),
            Health::MaxSize => format!(
                "The store is full: its files take {size} of storage.max_size {max}, and new events are refused \
                 (507). Retention frees room over time; or raise storage.max_size and restart herald. Reads and \
                 deliveries go on."
            ),
            _ => format!(
                "The store is nearly full: {left} are left for new work (its files take {size} of \
                 storage.max_size {max}; herald keeps 256 KiB of the disk free). New events will be refused \
                 (507) when it is full; retention frees room over time, or raise storage.max_size or free disk space."
            ),
        }
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
