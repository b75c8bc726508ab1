//! What can go wrong in the store, as callers decide on it, and the
//! encoding of stored values (postcard).

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

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
    /// The store's files would take more than `storage.max_size`.
    MaxSize,
    /// The disk that holds `storage.dir` is full.
    Disk,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Said to the caller that was refused: what happened, what to do.
        f.write_str(match self {
            Limit::MaxSize => {
                "the store reached storage.max_size and nothing was stored; retention frees room \
                 over time (herald takes work again by itself once it has), or raise storage.max_size"
            }
            Limit::Disk => {
                "the disk that holds storage.dir is full (herald keeps 256 KiB of it free) and nothing \
                 was stored; free space on it (herald takes work again by itself within seconds)"
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

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).expect("postcard encodes every herald record")
}

/// Most trailing fields a record has gained since it was first stored.
const GROWN_FIELDS: usize = 4;

/// Reads a stored record.
///
/// Records grow only at their end, by fields whose zero bytes (`None`, 0,
/// `false`, empty) mean what a record without them meant. A record written
/// before such a field existed ends early: it is read as if it ended in
/// zero bytes. An older release reads a newer record's known fields and
/// ignores the rest (postcard reads no further than it needs).
pub fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    match postcard::from_bytes(bytes) {
        Err(postcard::Error::DeserializeUnexpectedEnd) => {
            for zeros in 1..=GROWN_FIELDS {
                let mut padded = bytes.to_vec();
                padded.resize(bytes.len() + zeros, 0);
                match postcard::from_bytes(&padded) {
                    Err(postcard::Error::DeserializeUnexpectedEnd) => continue,
                    other => return other.map_err(|e| StoreError::Corrupt(what, e.to_string())),
                }
            }
            Err(StoreError::Corrupt(
                what,
                postcard::Error::DeserializeUnexpectedEnd.to_string(),
            ))
        }
        other => other.map_err(|e| StoreError::Corrupt(what, e.to_string())),
    }
}
