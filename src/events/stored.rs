//! Storing, reading and deleting events: the `EVENTS` and `IDEMPOTENCY`
//! tables, publishing with idempotency keys, paging, and the sweep.

use std::sync::{Arc, OnceLock};

use super::parse::NewEvent;
use crate::clock;
use crate::config::Config;
pub use crate::publish::{Published, StoredEvent, Subscriber};
use crate::store::{self, StoreError, Txn};
use jiff::Timestamp;
use redb::{ReadTransaction, ReadableTable};

store::tables! {
    /// seq -> `events::StoredEvent`.
    EVENTS: redb::TableDefinition<u64, &[u8]> = ("events", 2);
    /// "account\0key" -> seq of the first event published with that key.
    IDEMPOTENCY: redb::TableDefinition<&str, u64> = ("idempotency", 3);
}

/// Writes `{"id","seq","event","data","created_at"}` to `out`, with `data`
/// byte for byte as it was accepted: it is never parsed again, so large
/// numbers keep every digit and strings every escape, whatever a reader's
/// JSON library could represent.
pub fn write_json(out: &mut Vec<u8>, seq: u64, e: &StoredEvent) {
    let text = |out: &mut Vec<u8>, v: &str| serde_json::to_writer(out, v).expect("a string serializes");
    out.extend_from_slice(b"{\"id\":");
    text(out, &e.id);
    out.extend_from_slice(format!(",\"seq\":{seq},\"event\":").as_bytes());
    text(out, &e.event);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(e.data().as_bytes());
    out.extend_from_slice(b",\"created_at\":");
    text(out, &clock::rfc3339(e.created_at));
    out.push(b'}');
}

fn idempotency_row(account: &str, key: &str) -> String {
    format!("{account}\0{key}")
}

/// The one way to publish: stores the events, then tells every subscriber,
/// all in the caller's transaction. This feature's state: the subscribers
/// are those the feature descriptors name.
#[derive(Clone)]
pub struct Publisher {
    subscribers: Arc<[Subscriber]>,
}

impl Publisher {
    pub fn new(subscribers: Vec<Subscriber>) -> Publisher {
        Publisher {
            subscribers: subscribers.into(),
        }
    }

    /// Stores `events` (skipping those whose idempotency key was seen), all
    /// stamped `now`, and hands them to the subscribers with the settings
    /// in force.
    pub fn publish(
        &self,
        txn: &mut Txn,
        account: &str,
        now: Timestamp,
        events: Vec<NewEvent>,
        settings: &Config,
    ) -> Result<Vec<Published>, StoreError> {
        let published = store_new(txn, [(account, now, events)])?;
        self.tell(txn, &published, settings)?;
        Ok(published)
    }

    /// Publishes like [`Publisher::publish`], together with the other
    /// publishes of the commit: their events are stored and told to the
    /// subscribers once for all of them (`Txn::gather`), which is what a
    /// commit of concurrent requests mostly does. The ticket holds this
    /// request's events once the commit is made.
    pub fn publish_gathered(
        &self,
        txn: &mut Txn,
        account: String,
        now: Timestamp,
        events: Vec<NewEvent>,
        settings: Arc<Config>,
    ) -> Ticket {
        let ticket = Ticket::default();
        let gathered = txn.gather::<Gathered>(publish_gathered);
        gathered.by.get_or_insert_with(|| (self.clone(), settings));
        gathered.requests.push((account, now, events, ticket.clone()));
        ticket
    }

    fn tell(&self, txn: &mut Txn, published: &[Published], settings: &Config) -> Result<(), StoreError> {
        for tell in self.subscribers.iter() {
            tell(txn, published, settings)?;
        }
        Ok(())
    }
}

/// Where a gathered publish finds its events once its commit is made.
pub type Ticket = Arc<OnceLock<Vec<Published>>>;

/// The publishes gathered in one commit, in the order they came.
#[derive(Default)]
struct Gathered {
    by: Option<(Publisher, Arc<Config>)>,
    requests: Vec<(String, Timestamp, Vec<NewEvent>, Ticket)>,
}

fn publish_gathered(txn: &mut Txn, mut g: Gathered) -> Result<(), StoreError> {
    let Some((publisher, settings)) = g.by else {
        return Ok(());
    };
    let counts: Vec<usize> = g.requests.iter().map(|(_, _, events, _)| events.len()).collect();
    let published = store_new(
        txn,
        g.requests
            .iter_mut()
            .map(|(account, now, events, _)| (account.as_str(), *now, std::mem::take(events))),
    )?;
    publisher.tell(txn, &published, &settings)?;
    let mut published = published.into_iter();
    for ((_, _, _, ticket), n) in g.requests.into_iter().zip(counts) {
        let _ = ticket.set(published.by_ref().take(n).collect());
    }
    Ok(())
}

/// Stores the events of each request (who, when, what), in order, and
/// returns one `Published` for each event given.
fn store_new<'a>(
    txn: &Txn,
    requests: impl IntoIterator<Item = (&'a str, Timestamp, Vec<NewEvent>)>,
) -> Result<Vec<Published>, StoreError> {
    // Opened once for every request: a commit carries many.
    let mut table = txn.open(EVENTS)?;
    let mut keys = None;
    let mut out = Vec::new();
    for (account, now, events) in requests {
        let created_at = clock::to_ms(now);
        out.reserve(events.len());
        for e in events {
            if let Some(key) = &e.idempotency_key {
                let keys = match &mut keys {
                    Some(k) => k,
                    None => keys.insert(txn.open(IDEMPOTENCY)?),
                };
                let first = keys.get(idempotency_row(account, key).as_str())?.map(|v| v.value());
                if let Some(seq) = first
                    && let Some(event) = store::get::<u64, StoredEvent>(&table, "event", seq)?
                {
                    out.push(Published {
                        seq,
                        event,
                        created: false,
                    });
                    continue;
                }
            }
            let seq = txn.next_id("events.next_seq")?;
            let ulid = ulid::Ulid::from_parts(created_at.max(0) as u64, rand::random());
            let stored = StoredEvent {
                id: format!("evt_{ulid}"),
                event: e.event,
                data: e.data,
                created_at,
                account: account.to_string(),
                idempotency_key: e.idempotency_key,
            };
            table.insert(seq, store::encode(&stored).as_slice())?;
            if let Some(key) = &stored.idempotency_key {
                let keys = match &mut keys {
                    Some(k) => k,
                    None => keys.insert(txn.open(IDEMPOTENCY)?),
                };
                keys.insert(idempotency_row(account, key).as_str(), seq)?;
            }
            out.push(Published {
                seq,
                event: stored,
                created: true,
            });
        }
    }
    Ok(out)
}

pub struct Filter<'a> {
    pub after: u64,
    pub limit: usize,
    pub event: Option<&'a str>,
    /// Only events with one of these names (a change feed).
    pub names: Option<&'a [String]>,
    /// Set for integration accounts: only the events they published.
    pub account: Option<&'a str>,
}

/// Scanned rows at most per page when filters skip many, so one request
/// cannot walk the whole table; the cursor lets the caller continue.
const MAX_SCAN: usize = 100_000;

/// Events with their sequence numbers, and the cursor of the next page.
pub type Page = (Vec<(u64, StoredEvent)>, Option<u64>);

/// Events after `filter.after` in sequence order, and the next cursor.
pub fn list(r: &ReadTransaction, f: &Filter<'_>) -> Result<Page, StoreError> {
    let table = r.open_table(EVENTS)?;
    let mut out = Vec::new();
    let mut last = f.after;
    for (scanned, row) in table.range(f.after.saturating_add(1)..)?.enumerate() {
        let (k, v) = row?;
        let seq = k.value();
        if scanned >= MAX_SCAN {
            return Ok((out, Some(last)));
        }
        let e: StoredEvent = store::decode("event", v.value())?;
        if f.event.is_some_and(|n| n != e.event)
            || f.account.is_some_and(|a| a != e.account)
            || f.names.is_some_and(|names| !names.contains(&e.event))
        {
            last = seq;
            continue;
        }
        if out.len() == f.limit {
            return Ok((out, Some(last)));
        }
        last = seq;
        out.push((seq, e));
    }
    Ok((out, None))
}

/// The sequence number of the last event published so far (0: none yet).
pub fn last_seq(txn: &Txn) -> Result<u64, StoreError> {
    Ok(txn.peek_id("events.next_seq")? - 1)
}

/// The events with these sequence numbers, in the same order; `None` for
/// one that retention deleted.
pub fn get_many(r: &ReadTransaction, seqs: &[u64]) -> Result<Vec<(u64, Option<StoredEvent>)>, StoreError> {
    let table = r.open_table(EVENTS)?;
    seqs.iter()
        .map(|&seq| Ok((seq, store::get::<u64, StoredEvent>(&table, "event", seq)?)))
        .collect()
}

pub fn count(r: &ReadTransaction) -> Result<u64, StoreError> {
    store::count(r, EVENTS)
}

/// Rows one sweep transaction looks at, so that a long buffer of events
/// still needed never holds the writer for long.
const SWEEP_SCAN: usize = 20_000;
/// Where the next sweep pass continues (0: from the oldest event).
const SWEEP_CURSOR: &str = "events.sweep_from";

/// Deletes up to `budget` events created before `cutoff` that `needed`
/// does not claim (a webhook still has to deliver them), with their
/// idempotency keys. Looks at [`SWEEP_SCAN`] rows at most and goes on where
/// it stopped next time. Returns whether more remain.
pub fn sweep(
    txn: &mut Txn,
    cutoff: Timestamp,
    budget: usize,
    needed: &dyn Fn(&Txn, u64, &StoredEvent) -> Result<bool, StoreError>,
) -> Result<bool, StoreError> {
    let cutoff = clock::to_ms(cutoff);
    let from = txn.open(store::META)?.get(SWEEP_CURSOR)?.map_or(0, |v| v.value());
    let (old, resume) = {
        let events = txn.open(EVENTS)?;
        let mut out = Vec::new();
        // Where to go on from; 0 once the pass reached the events to keep.
        let mut resume = 0;
        for (scanned, row) in events.range(from..)?.enumerate() {
            let (k, v) = row?;
            let seq = k.value();
            if scanned == SWEEP_SCAN || out.len() == budget {
                resume = seq;
                break;
            }
            let e: StoredEvent = store::decode("event", v.value())?;
            if e.created_at >= cutoff {
                break;
            }
            if !needed(txn, seq, &e)? {
                out.push((seq, e.idempotency_key.map(|key| idempotency_row(&e.account, &key))));
            }
        }
        (out, resume)
    };
    txn.open(store::META)?.insert(SWEEP_CURSOR, resume)?;
    let mut events = txn.open(EVENTS)?;
    for (seq, _) in &old {
        events.remove(*seq)?;
    }
    drop(events);
    let mut keys = txn.open(IDEMPOTENCY)?;
    for key in old.iter().filter_map(|(_, k)| k.as_deref()) {
        keys.remove(key)?;
    }
    if !old.is_empty() {
        tracing::debug!(deleted = old.len(), "retention sweep");
    }
    Ok(resume != 0)
}
