//! The redo log of one group commit: every insert and removal a batch
//! makes, as bytes, so that the journal can carry the batch to stable
//! storage in one small write and a restart can apply it again.
//!
//! Features write through [`Table`], which records each change before it
//! makes it; reads pass straight to redb. The log is physical (table, key,
//! value), so replaying it needs no feature code and gives exactly the state
//! the batch committed, whatever the closures computed. Invariants 1, 5 and
//! 6 of the store (`store/mod.rs`) are this file's.

use std::borrow::Borrow;
use std::cell::RefCell;
use std::ops::RangeBounds;

use redb::{
    AccessGuard, Key, Range, ReadableTable, ReadableTableMetadata, StorageError, TableDefinition, TableStats, Value,
    WriteTransaction,
};

use super::error::StoreError;

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
pub(super) fn record(log: &mut Vec<u8>, table: u8, key: &[u8], value: Option<&[u8]>) {
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

/// The log without the changes that a later change of the same key in it
/// overwrites: a batch of publishes rewrites a webhook's record once per
/// event, and only the last one needs to reach the journal. The order of
/// the changes of one key is kept, and keys are independent.
pub(super) fn compact(log: &[u8]) -> Option<Vec<u8>> {
    // (table, key, start, length) of each change, in order.
    let mut spans = Vec::new();
    let mut at = 0;
    for change in changes(log) {
        let c = change.ok()?;
        let len = 2 + 4 + c.key.len() + c.value.map_or(0, |v| 4 + v.len());
        spans.push((c.table, c.key, at, len));
        at += len;
    }
    let mut last = std::collections::HashMap::with_capacity(spans.len());
    for (i, (table, key, _, _)) in spans.iter().enumerate() {
        last.insert((*table, *key), i);
    }
    if last.len() == spans.len() {
        return None;
    }
    let mut out = Vec::with_capacity(log.len());
    for (i, (table, key, at, len)) in spans.iter().enumerate() {
        if last[&(*table, *key)] == i {
            out.extend_from_slice(&log[*at..*at + *len]);
        }
    }
    Some(out)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(log: &[u8]) -> Vec<(u8, Vec<u8>, Option<Vec<u8>>)> {
        changes(log)
            .map(|c| {
                let c = c.unwrap();
                (c.table, c.key.to_vec(), c.value.map(<[u8]>::to_vec))
            })
            .collect()
    }

    #[test]
    fn compaction_keeps_the_last_change_of_each_key_and_nothing_else_changes() {
        let mut log = Vec::new();
        record(&mut log, 1, b"wh", Some(b"queued 1"));
        record(&mut log, 2, b"q1", Some(b""));
        record(&mut log, 1, b"wh", Some(b"queued 2"));
        record(&mut log, 2, b"wh", Some(b"another table"));
        record(&mut log, 2, b"q1", None);
        record(&mut log, 1, b"wh", Some(b"queued 3"));
        let compacted = compact(&log).expect("there is something to drop");
        assert_eq!(
            decoded(&compacted),
            vec![
                (2, b"wh".to_vec(), Some(b"another table".to_vec())),
                (2, b"q1".to_vec(), None),
                (1, b"wh".to_vec(), Some(b"queued 3".to_vec())),
            ]
        );
        // A log of distinct keys is left as it is.
        let mut distinct = Vec::new();
        record(&mut distinct, 1, b"a", Some(b"1"));
        record(&mut distinct, 1, b"b", None);
        assert!(compact(&distinct).is_none());
    }
}
