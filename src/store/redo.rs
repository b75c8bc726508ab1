//! The redo log of one group commit: every insert and removal a batch
//! makes, as bytes, so that the journal can carry the batch to stable
//! storage in one small write and a restart can apply it again.
//!
//! Features write through [`Table`], which records each change before it
//! makes it; reads pass straight to redb. The log is physical (table, key,
//! value), so replaying it needs no feature code and gives exactly the state
//! the batch committed, whatever the closures computed.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::ops::RangeBounds;

use redb::{
    AccessGuard, Key, Range, ReadableTable, ReadableTableMetadata, StorageError, TableDefinition, TableStats, Value,
    WriteTransaction,
};

use super::StoreError;

const INSERT: u8 = 1;
const REMOVE: u8 = 2;

/// A table opened in a write transaction of the writer; changes are logged.
pub struct Table<'t, K: Key + 'static, V: Value + 'static> {
    inner: redb::Table<'t, K, V>,
    id: u8,
    log: &'t RefCell<Vec<u8>>,
}

impl<'t, K: Key + 'static, V: Value + 'static> Table<'t, K, V> {
    pub(super) fn new(inner: redb::Table<'t, K, V>, id: u8, log: &'t RefCell<Vec<u8>>) -> Self {
        Table { inner, id, log }
    }

    pub fn insert<'k, 'v>(
        &mut self,
        key: impl Borrow<K::SelfType<'k>>,
        value: impl Borrow<V::SelfType<'v>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        record(
            &mut self.log.borrow_mut(),
            self.id,
            K::as_bytes(key.borrow()).as_ref(),
            Some(V::as_bytes(value.borrow()).as_ref()),
        );
        self.inner.insert(key, value)
    }

    pub fn remove<'a>(
        &mut self,
        key: impl Borrow<K::SelfType<'a>>,
    ) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        record(
            &mut self.log.borrow_mut(),
            self.id,
            K::as_bytes(key.borrow()).as_ref(),
            None,
        );
        self.inner.remove(key)
    }

    /// Removes the rows in `range` for which `keep` says false.
    pub fn retain_in<'a, KR>(
        &mut self,
        range: impl RangeBounds<KR> + 'a,
        mut keep: impl for<'f> FnMut(K::SelfType<'f>, V::SelfType<'f>) -> bool,
    ) -> Result<(), StorageError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        let (id, log) = (self.id, self.log);
        self.inner.retain_in(range, |k, v| {
            let key = K::as_bytes(&k).as_ref().to_vec();
            let kept = keep(k, v);
            if !kept {
                record(&mut log.borrow_mut(), id, &key, None);
            }
            kept
        })
    }
}

impl<K: Key + 'static, V: Value + 'static> ReadableTableMetadata for Table<'_, K, V> {
    fn stats(&self) -> Result<TableStats, StorageError> {
        self.inner.stats()
    }

    fn len(&self) -> Result<u64, StorageError> {
        self.inner.len()
    }
}

impl<K: Key + 'static, V: Value + 'static> ReadableTable<K, V> for Table<'_, K, V> {
    fn get<'a>(&self, key: impl Borrow<K::SelfType<'a>>) -> Result<Option<AccessGuard<'_, V>>, StorageError> {
        self.inner.get(key)
    }

    fn range<'a, KR>(&self, range: impl RangeBounds<KR> + 'a) -> Result<Range<'_, K, V>, StorageError>
    where
        KR: Borrow<K::SelfType<'a>> + 'a,
    {
        self.inner.range(range)
    }

    #[allow(clippy::type_complexity)]
    fn first(&self) -> Result<Option<(AccessGuard<'_, K>, AccessGuard<'_, V>)>, StorageError> {
        self.inner.first()
    }

    #[allow(clippy::type_complexity)]
    fn last(&self) -> Result<Option<(AccessGuard<'_, K>, AccessGuard<'_, V>)>, StorageError> {
        self.inner.last()
    }
}

/// One change: kind, table, key length and key, then value length and value.
fn record(log: &mut Vec<u8>, table: u8, key: &[u8], value: Option<&[u8]>) {
    log.push(if value.is_some() { INSERT } else { REMOVE });
    log.push(table);
    log.extend_from_slice(&(key.len() as u32).to_le_bytes());
    log.extend_from_slice(key);
    if let Some(value) = value {
        log.extend_from_slice(&(value.len() as u32).to_le_bytes());
        log.extend_from_slice(value);
    }
}

/// One change read back from a log.
pub(super) struct Change<'a> {
    pub table: u8,
    pub key: &'a [u8],
    /// `None` for a removal.
    pub value: Option<&'a [u8]>,
}

/// The changes of a log, in the order they were made; an error names what
/// does not parse (a record that passed its checksum, so a bug, not a tear).
pub(super) fn changes(mut log: &[u8]) -> impl Iterator<Item = Result<Change<'_>, StoreError>> {
    let bad = || StoreError::Corrupt("journal record", "a change does not parse".into());
    std::iter::from_fn(move || {
        if log.is_empty() {
            return None;
        }
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, rest) = (log.get(..n)?, log.get(n..)?);
            log = rest;
            Some(head)
        };
        let mut parse = || -> Option<Change<'_>> {
            let kind_table = take(2)?;
            let (kind, table) = (kind_table[0], kind_table[1]);
            let klen = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
            let key = take(klen)?;
            let value = match kind {
                INSERT => {
                    let vlen = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
                    Some(take(vlen)?)
                }
                REMOVE => None,
                _ => return None,
            };
            Some(Change { table, key, value })
        };
        match parse() {
            Some(c) => Some(Ok(c)),
            None => {
                log = &[];
                Some(Err(bad()))
            }
        }
    })
}

/// Makes one logged change again, in the table it was made in.
pub(super) fn apply<K: Key + 'static, V: Value + 'static>(
    txn: &WriteTransaction,
    def: TableDefinition<K, V>,
    change: &Change<'_>,
) -> Result<(), StoreError> {
    let mut table = txn.open_table(def)?;
    let key = K::from_bytes(change.key);
    match change.value {
        Some(v) => {
            table.insert(key, V::from_bytes(v))?;
        }
        None => {
            table.remove(key)?;
        }
    }
    Ok(())
}
