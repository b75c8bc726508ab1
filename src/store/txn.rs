//! The write transaction as the writer hands it to one operation, and what
//! an operation says of the room it needs.

use std::any::{Any, TypeId};
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
    /// The counters the batch took from, with their next values: written
    /// to `META` once, before the commit ([`Txn::finish_batch`]), not at
    /// every id (a batch of 16 events took 16 updates of one row).
    counters: RefCell<Vec<(&'static str, u64)>>,
    /// What operations of the batch gathered for work done once for all
    /// of them ([`Txn::gather`]).
    gathered: Vec<Gathered>,
    /// What operations of the batch gathered for work done once the
    /// commit succeeded ([`Txn::on_commit`]).
    committed: RefCell<Vec<Gathered<()>>>,
}

struct Gathered<Ctx = Txn> {
    ty: TypeId,
    value: Box<dyn Any>,
    finish: Finish<Ctx>,
}

type Finish<Ctx> = Box<dyn FnOnce(&mut Ctx, Box<dyn Any>) -> Result<(), StoreError>>;

/// Work a committed batch leaves to do ([`Txn::on_commit`]).
pub(super) struct AfterCommit(Vec<Gathered<()>>);

impl AfterCommit {
    /// Does it: the writer calls this once the batch is committed.
    pub(super) fn run(self) {
        for g in self.0 {
            let _ = (g.finish)(&mut (), g.value);
        }
    }
}

impl Txn {
    pub(super) fn new(inner: WriteTransaction, tables: Arc<Tables>) -> Txn {
        Txn {
            inner,
            tables,
            wake_jobs: false,
            log: RefCell::new(Vec::new()),
            counters: RefCell::new(Vec::new()),
            gathered: Vec::new(),
            committed: RefCell::new(Vec::new()),
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
    pub fn next_id(&self, counter: &'static str) -> Result<u64, StoreError> {
        let next = self.peek_id(counter)?;
        let mut counters = self.counters.borrow_mut();
        match counters.iter_mut().find(|(c, _)| *c == counter) {
            Some((_, n)) => *n = next + 1,
            None => counters.push((counter, next + 1)),
        }
        Ok(next)
    }

    /// The value `next_id` would take next, without taking it.
    pub fn peek_id(&self, counter: &'static str) -> Result<u64, StoreError> {
        if let Some((_, n)) = self.counters.borrow().iter().find(|(c, _)| *c == counter) {
            return Ok(*n);
        }
        Ok(self.open(META)?.get(counter)?.map_or(1, |v| v.value()))
    }

    /// What the operations of this batch gather of type `T`, for work done
    /// once for all of them: `finish` takes it after the batch's last
    /// operation ran, before the commit, in the same transaction. Work
    /// that costs the same for one item as for many (opening tables,
    /// reading every webhook) is then paid once a commit, not once an
    /// operation. Operations of one batch are concurrent, so doing their
    /// gathered parts after the others' is one of the orders they could
    /// have run in.
    pub fn gather<T: Default + 'static>(&mut self, finish: fn(&mut Txn, T) -> Result<(), StoreError>) -> &mut T {
        gathered(&mut self.gathered, move |txn, value: T| finish(txn, value))
    }

    /// What the operations of this batch gather of type `T` for work done
    /// once the batch is committed (journaled, synced if a write of it
    /// waits for that, and in redb): `finish` takes it then, on the
    /// writer's thread, and must not block. Nothing is done if the batch
    /// fails. For telling the world what the store now holds.
    /// `add` adds to it; a table may be open meanwhile.
    pub fn on_commit<T: Default + 'static>(&self, finish: fn(T), add: impl FnOnce(&mut T)) {
        let mut committed = self.committed.borrow_mut();
        add(gathered(&mut committed, move |_, value: T| {
            finish(value);
            Ok(())
        }))
    }

    /// The work [`Txn::on_commit`] gathered, for the writer to run after the commit.
    pub(super) fn after_commit(&mut self) -> AfterCommit {
        AfterCommit(std::mem::take(self.committed.get_mut()))
    }

    /// Does the gathered work, then writes the counters: the writer calls
    /// it once all of a batch's operations ran, before it commits.
    pub(super) fn finish_batch(&mut self) -> Result<(), StoreError> {
        // Gathered work may itself gather more: done until none is left.
        while !self.gathered.is_empty() {
            for g in std::mem::take(&mut self.gathered) {
                (g.finish)(self, g.value)?;
            }
        }
        self.write_counters()
    }

    /// Writes the counters taken from to `META`: the writer does it once
    /// all of a batch's operations ran, before it commits.
    fn write_counters(&self) -> Result<(), StoreError> {
        let counters = std::mem::take(&mut *self.counters.borrow_mut());
        if counters.is_empty() {
            return Ok(());
        }
        let mut meta = self.open(META)?;
        for (counter, next) in counters {
            meta.insert(counter, next)?;
        }
        Ok(())
    }
}

/// The value of type `T` in `list`, added with `finish` if not there yet.
fn gathered<Ctx: 'static, T: Default + 'static>(
    list: &mut Vec<Gathered<Ctx>>,
    finish: impl FnOnce(&mut Ctx, T) -> Result<(), StoreError> + 'static,
) -> &mut T {
    let ty = TypeId::of::<T>();
    let i = match list.iter().position(|g| g.ty == ty) {
        Some(i) => i,
        None => {
            list.push(Gathered {
                ty,
                value: Box::new(T::default()),
                finish: Box::new(move |ctx, value| finish(ctx, *value.downcast::<T>().expect("gathered by its type"))),
            });
            list.len() - 1
        }
    };
    list[i].value.downcast_mut().expect("gathered by its type")
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
