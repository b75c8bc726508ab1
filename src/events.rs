//! Events: what local programs hand to herald. This module owns the
//! `EVENTS` and `IDEMPOTENCY` tables: validation, durable publishing with
//! idempotency keys, paging by sequence number, and the retention sweep.

use std::time::Duration;

use jiff::Timestamp;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::clock;
use crate::jobs::{self, Job, JobKey};
use crate::store::{self, EVENTS, IDEMPOTENCY, StoreError, Txn};

pub const MAX_BATCH: usize = 1000;
pub const MAX_NAME: usize = 128;
pub const MAX_IDEMPOTENCY_KEY: usize = 255;
/// Rows deleted per sweep transaction, so a sweep never holds the writer long.
const SWEEP_BUDGET: usize = 5000;
const SWEEP_JOB: &str = "events.sweep";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    pub id: String,
    pub event: String,
    /// The `data` JSON exactly as published.
    pub data: String,
    pub created_at: i64,
    /// Who published it: integrations read only their own events.
    pub account: String,
    pub idempotency_key: Option<String>,
}

/// A validated event, ready to store.
#[derive(Debug)]
pub struct NewEvent {
    pub event: String,
    pub data: String,
    pub idempotency_key: Option<String>,
}

/// A field that failed validation: its path in the request and why.
#[derive(Debug, PartialEq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

pub fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

#[derive(Deserialize)]
struct Item<'a> {
    event: Option<serde_json::Value>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    idempotency_key: Option<serde_json::Value>,
}

/// Parses and checks a publish body that is already known to be JSON: one
/// event object or an array of up to [`MAX_BATCH`]. Returns the events and
/// whether the body was an array.
pub fn parse(body: &str, max_data: u64) -> Result<(Vec<NewEvent>, bool), FieldError> {
    let trimmed = body.trim_start();
    if trimmed.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(body).map_err(|_| FieldError {
            field: "events".into(),
            message: "must be an array of event objects".into(),
        })?;
        if items.is_empty() || items.len() > MAX_BATCH {
            return Err(FieldError {
                field: "events".into(),
                message: format!("a batch holds 1 to {MAX_BATCH} events; this one has {}", items.len()),
            });
        }
        let events = items
            .iter()
            .enumerate()
            .map(|(i, raw)| parse_item(raw, &format!("[{i}]."), max_data))
            .collect::<Result<_, _>>()?;
        Ok((events, true))
    } else {
        let raw: &RawValue = serde_json::from_str(body).map_err(|_| FieldError {
            field: "event".into(),
            message: "the body must be a JSON object".into(),
        })?;
        Ok((vec![parse_item(raw, "", max_data)?], false))
    }
}

fn parse_item(raw: &RawValue, prefix: &str, max_data: u64) -> Result<NewEvent, FieldError> {
    let field = |name: &str| format!("{prefix}{name}");
    let item: Item<'_> = serde_json::from_str(raw.get()).map_err(|_| FieldError {
        field: if prefix.is_empty() {
            "event".to_string()
        } else {
            prefix.trim_end_matches('.').to_string()
        },
        message: "must be a JSON object like {\"event\": \"door.opened\", \"data\": {...}}".into(),
    })?;
    let event = match item.event {
        Some(serde_json::Value::String(s)) if valid_name(&s) => s,
        Some(serde_json::Value::String(s)) => {
            return Err(FieldError {
                field: field("event"),
                message: format!(
                    "{:?} is not an event name: use 1 to {MAX_NAME} characters of A-Z a-z 0-9 . _ : -",
                    truncate(&s, 40)
                ),
            });
        }
        Some(_) => {
            return Err(FieldError {
                field: field("event"),
                message: "must be a string".into(),
            });
        }
        None => {
            return Err(FieldError {
                field: field("event"),
                message: "is missing; name the event, like \"door.opened\"".into(),
            });
        }
    };
    let data = item.data.map_or("null", RawValue::get);
    if data.len() as u64 > max_data {
        return Err(FieldError {
            field: field("data"),
            message: format!(
                "is {} bytes; at most {max_data} are accepted (storage.max_event_size)",
                data.len()
            ),
        });
    }
    let idempotency_key = match item.idempotency_key {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) if (1..=MAX_IDEMPOTENCY_KEY).contains(&s.len()) => Some(s),
        Some(serde_json::Value::String(_)) => {
            return Err(FieldError {
                field: field("idempotency_key"),
                message: format!("must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"),
            });
        }
        Some(_) => {
            return Err(FieldError {
                field: field("idempotency_key"),
                message: "must be a string".into(),
            });
        }
    };
    Ok(NewEvent {
        event,
        data: data.to_string(),
        idempotency_key,
    })
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// One published event as the API answers it, and whether it is new.
#[derive(Debug, Clone)]
pub struct Published {
    pub seq: u64,
    pub event: StoredEvent,
    pub created: bool,
}

fn idempotency_row(account: &str, key: &str) -> String {
    format!("{account}\0{key}")
}

/// Stores `events` (skipping those whose idempotency key was seen), all
/// stamped `now`. Runs inside one group commit.
pub fn publish(
    txn: &mut Txn,
    account: &str,
    now: Timestamp,
    events: Vec<NewEvent>,
) -> Result<Vec<Published>, StoreError> {
    let created_at = clock::to_ms(now);
    let mut out = Vec::with_capacity(events.len());
    for e in events {
        if let Some(key) = &e.idempotency_key {
            let first = txn
                .open(IDEMPOTENCY)?
                .get(idempotency_row(account, key).as_str())?
                .map(|v| v.value());
            if let Some(seq) = first
                && let Some(event) = store::get::<u64, StoredEvent>(&txn.open(EVENTS)?, "event", seq)?
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
        txn.open(EVENTS)?.insert(seq, store::encode(&stored).as_slice())?;
        if let Some(key) = &stored.idempotency_key {
            txn.open(IDEMPOTENCY)?
                .insert(idempotency_row(account, key).as_str(), seq)?;
        }
        out.push(Published {
            seq,
            event: stored,
            created: true,
        });
    }
    Ok(out)
}

pub struct Filter<'a> {
    pub after: u64,
    pub limit: usize,
    pub event: Option<&'a str>,
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
        if f.event.is_some_and(|n| n != e.event) || f.account.is_some_and(|a| a != e.account) {
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

pub fn count(r: &ReadTransaction) -> Result<u64, StoreError> {
    store::count(r, EVENTS)
}

/// How often the retention sweep runs: often enough that a short retention
/// (tests use seconds) is honoured, at most every ten minutes.
pub fn sweep_interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

pub fn schedule_sweep(txn: &mut Txn, now: Timestamp, retention: Duration) -> Result<(), StoreError> {
    if jobs::named(txn, SWEEP_JOB)?.is_none() {
        jobs::schedule_named(txn, SWEEP_JOB, clock::add(now, sweep_interval(retention)), Job::Sweep)?;
    }
    Ok(())
}

/// Rows one sweep transaction looks at, so that a long buffer of events
/// still needed never holds the writer for long.
const SWEEP_SCAN: usize = 20_000;
/// Where the next sweep pass continues (0: from the oldest event).
const SWEEP_CURSOR: &str = "events.sweep_from";

/// Deletes up to [`SWEEP_BUDGET`] events created before `cutoff` that
/// `needed` does not claim (a webhook still has to deliver them), with their
/// idempotency keys. Looks at [`SWEEP_SCAN`] rows at most and goes on where
/// it stopped next time. Returns whether more remain.
pub fn sweep(
    txn: &mut Txn,
    cutoff: Timestamp,
    needed: &dyn Fn(&Txn, u64) -> Result<bool, StoreError>,
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
            if scanned == SWEEP_SCAN || out.len() == SWEEP_BUDGET {
                resume = seq;
                break;
            }
            let e: StoredEvent = store::decode("event", v.value())?;
            if e.created_at >= cutoff {
                break;
            }
            if !needed(txn, seq)? {
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

/// The sweep job: events, then old executions and sent mails; reschedules itself.
pub fn run_sweep(txn: &mut Txn, key: JobKey, now: Timestamp, retention: Duration) -> Result<(), StoreError> {
    let cutoff = clock::sub(now, retention);
    let webhooks = crate::webhooks::ids(txn)?;
    let needed = |txn: &Txn, seq: u64| crate::webhooks::needs(txn, &webhooks, seq);
    let more = sweep(txn, cutoff, &needed)?
        | crate::executions::sweep(txn, cutoff, SWEEP_BUDGET)?
        | crate::mail::sweep(txn, cutoff, SWEEP_BUDGET)?;
    let next = if more {
        now
    } else {
        clock::add(now, sweep_interval(retention))
    };
    jobs::reschedule(txn, key, next)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("door.opened"));
        assert!(valid_name("a:b-c_d.E9"));
        assert!(!valid_name(""));
        assert!(!valid_name("with space"));
        assert!(!valid_name(&"x".repeat(129)));
        assert!(valid_name(&"x".repeat(128)));
    }

    #[test]
    fn parse_single_and_batch() {
        let (events, batch) = parse(r#"{"event":"a","data":{"x":1.50}}"#, 1024).unwrap();
        assert!(!batch);
        assert_eq!(events[0].data, r#"{"x":1.50}"#);
        let (events, batch) = parse(r#"[{"event":"a"},{"event":"b","idempotency_key":"k"}]"#, 1024).unwrap();
        assert!(batch);
        assert_eq!(events[0].data, "null");
        assert_eq!(events[1].idempotency_key.as_deref(), Some("k"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse(r#"[{"event":"a"},{"event":"bad name"}]"#, 1024).unwrap_err();
        assert_eq!(e.field, "[1].event");
        let e = parse(r#"{"data":1}"#, 1024).unwrap_err();
        assert_eq!(e.field, "event");
        let e = parse(r#"{"event":"a","data":"0123456789"}"#, 8).unwrap_err();
        assert_eq!(e.field, "data");
        let e = parse(r#"{"event":"a","idempotency_key":5}"#, 8).unwrap_err();
        assert_eq!(e.field, "idempotency_key");
        let e = parse("[]", 8).unwrap_err();
        assert_eq!(e.field, "events");
        let e = parse("[1]", 8).unwrap_err();
        assert_eq!(e.field, "[0]");
    }
}
