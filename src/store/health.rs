//! What the writer shares with the readers: the database handle it may
//! replace, and the store's health.

use std::sync::{Arc, RwLock};

use redb::Database;

/// The database handle the readers and the writer share.
pub(super) type Slot = Arc<RwLock<Option<Arc<Database>>>>;

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
    pub(super) fn from_u8(v: u8) -> Health {
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
