//! The write transaction as the writer hands it to one operation, and what
//! an operation says of the room it needs.

use std::cell::RefCell;
use std::sync::Arc;

use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};

use super::error::StoreError;
use super::redo::Table;
use super::tables::{META, Tables};

/// A write transaction as the writer thread hands it to one operation.
pub struct Txn {
    pub(super) inner: WriteTransaction,
    pub(super) tables: Arc<Tables>,
    pub(super) wake_jobs: bool,
    /// Every change the batch made, for the journal.
    pub(super) log: RefCell<Vec<u8>>,
}

impl Txn {
    pub(super) fn new(inner: WriteTransaction, tables: Arc<Tables>) -> Txn {
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
    pub(super) fn estimate(self) -> u64 {
        match self {
            Grows::Yes => 2 << 10,
            Grows::By(n) => n + n / 2 + 512,
            Grows::No => 0,
        }
    }
}
