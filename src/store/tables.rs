//! Tables: each declared once, by the module that owns it, with a stable id.
//!
//! The id is what the journal's redo log names a table by (see the store's
//! module doc), so it is stored: an id is never changed and never reused,
//! whatever the order of declarations. A new table takes a new id. The
//! store takes every module's [`TableSpec`]s at open and refuses two with
//! one id or one name.
//!
//! ```ignore
//! store::tables! {
//!     /// seq -> `StoredEvent`.
//!     EVENTS: TableDefinition<u64, &[u8]> = ("events", 2);
//! }
//! ```
//! declares `pub const EVENTS` and adds it to the module's `pub const TABLES`.

use redb::{Key, TableDefinition, Value, WriteTransaction};

use super::error::StoreError;
use super::redo::{self, Change};

/// One table as the store knows it: its id in the journal, its name in
/// redb, and the typed functions that create it and replay a change in it.
pub struct TableSpec {
    pub id: u8,
    pub name: &'static str,
    replay: fn(&WriteTransaction, &'static str, &Change<'_>) -> Result<(), StoreError>,
    create: fn(&WriteTransaction, &'static str) -> Result<(), redb::TableError>,
}

impl TableSpec {
    /// The spec of `def`, whose name is `name`, under the id `id`.
    pub const fn new<K: Key + 'static, V: Value + 'static>(
        id: u8,
        name: &'static str,
        _def: &TableDefinition<'static, K, V>,
    ) -> TableSpec {
        TableSpec {
            id,
            name,
            replay: replay::<K, V>,
            create: create::<K, V>,
        }
    }
}

fn replay<K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    name: &'static str,
    change: &Change<'_>,
) -> Result<(), StoreError> {
    redo::apply(txn, TableDefinition::<K, V>::new(name), change)
}

fn create<K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    name: &'static str,
) -> Result<(), redb::TableError> {
    txn.open_table(TableDefinition::<K, V>::new(name)).map(drop)
}

/// Declares a module's tables: each `pub const`, and `pub const TABLES`
/// with their specs for the module's feature descriptor.
macro_rules! tables {
    ($($(#[$doc:meta])* $name:ident: $types:ty = ($text:literal, $id:literal);)*) => {
        $($(#[$doc])* pub const $name: $types = redb::TableDefinition::new($text);)*

        /// This module's tables, with their stable ids.
        pub const TABLES: &[$crate::store::TableSpec] = &[$($crate::store::TableSpec::new($id, $text, &$name)),*];
    };
}
pub(crate) use tables;

// The store's own tables.

tables! {
    /// Counters and settings: `schema_version`, `events.next_seq`, `jobs.next_id`, ...
    META: TableDefinition<&str, u64> = ("meta", 0);
    /// Secrets and small blobs kept by the daemon itself (`bootstrap.admin_sha256`).
    META_BLOBS: TableDefinition<&str, &[u8]> = ("meta_blobs", 1);
}

/// Every table of a herald, checked: ids and names are unique. A short
/// list, looked up by a scan (what a map would cost in code is more than
/// it would save in time).
pub struct Tables(Vec<&'static TableSpec>);

impl Tables {
    /// The tables of the store itself and of `more`; an error names a
    /// duplicate id or name.
    pub fn new(more: impl IntoIterator<Item = &'static TableSpec>) -> Result<Tables, String> {
        let mut all: Vec<&'static TableSpec> = Vec::new();
        for spec in TABLES.iter().chain(more) {
            if let Some(other) = all.iter().find(|t| t.id == spec.id) {
                return Err(format!(
                    "tables {:?} and {:?} both have the id {}: give the newer one a new id, never reuse one",
                    other.name, spec.name, spec.id
                ));
            }
            if all.iter().any(|t| t.name == spec.name) {
                return Err(format!("the table {:?} is declared twice", spec.name));
            }
            all.push(spec);
        }
        all.sort_by_key(|t| t.id);
        Ok(Tables(all))
    }

    /// The id of the table called `name`.
    pub(super) fn id(&self, name: &str) -> Option<u8> {
        self.0.iter().find(|s| s.name == name).map(|s| s.id)
    }

    /// Whether a table has the id `id`.
    pub(super) fn knows(&self, id: u8) -> bool {
        self.0.iter().any(|s| s.id == id)
    }

    /// Makes one change of a replayed redo log in its table.
    pub(super) fn replay(&self, txn: &WriteTransaction, change: &Change<'_>) -> Result<(), StoreError> {
        let spec =
            self.0.iter().find(|s| s.id == change.table).ok_or_else(|| {
                StoreError::Corrupt("journal record", format!("unknown table number {}", change.table))
            })?;
        (spec.replay)(txn, spec.name, change)
    }

    /// Creates every table, so readers never meet a missing one.
    pub(super) fn create_all(&self, txn: &WriteTransaction) -> Result<(), redb::TableError> {
        for spec in &self.0 {
            (spec.create)(txn, spec.name)?;
        }
        Ok(())
    }

    /// (id, name) of every table, by id: what the golden test pins.
    pub fn ids(&self) -> Vec<(u8, &'static str)> {
        self.0.iter().map(|s| (s.id, s.name)).collect()
    }
}
