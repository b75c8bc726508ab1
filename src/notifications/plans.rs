//! Notifications and their plans: the `NOTIFICATIONS`, `NOTIF_BY_EVENT`,
//! `NOTIF_IDLE` and `CHANGE_CURSORS` tables, planning a ping when an event
//! is published, and the change feed a system reads.

use jiff::Timestamp;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use super::rules::{self, Input, Pinging, Settings};
use crate::clock;
use crate::config::Config;
use crate::events::{self, Published};
use crate::jobs;
use crate::store::{self, StoreError, Txn};

/// The kind of the interface each system's pings are logged under.
pub const INTERFACE_KIND: &str = "notification";

store::tables! {
    /// "system\0event" -> `notifications::Notification`.
    NOTIFICATIONS: redb::TableDefinition<&str, &[u8]> = ("notifications", 15);
    /// (event name, system) -> 0: which notifications an event plans, in one range.
    NOTIF_BY_EVENT: redb::TableDefinition<(&str, &str), u8> = ("notif_by_event", 16);
    /// event name -> how many of its notifications the next event would plan
    /// (active, not suspended, nothing planned): most events find 0 and stop.
    NOTIF_IDLE: redb::TableDefinition<&str, u32> = ("notif_idle", 17);
    /// system -> the seq its change feed has read up to.
    CHANGE_CURSORS: redb::TableDefinition<&str, u64> = ("change_cursors", 18);
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    pub system: String,
    pub event: String,
    pub url: String,
    pub created_at: i64,
    pub ping: Pinging,
    /// The last failed ping: when, and what happened.
    pub last_error: Option<(i64, String)>,
    /// Events retention dropped before the feed read them.
    pub missed: u64,
}

impl Notification {
    fn job(&self) -> Ping {
        Ping {
            system: self.system.clone(),
            event: self.event.clone(),
            host: crate::net::authority(&self.url),
        }
    }
}

fn key(system: &str, event: &str) -> String {
    format!("{system}\0{event}")
}

pub(super) fn job_name(system: &str, event: &str) -> String {
    format!("notif:{system}\0{event}")
}

fn settings(config: &Config) -> Settings {
    Settings {
        delay: config.notifications.delay,
        max_unacked: config.notifications.max_unacked,
    }
}

pub(super) fn load(txn: &Txn, system: &str, event: &str) -> Result<Option<Notification>, StoreError> {
    store::get::<&str, Notification>(&txn.open(NOTIFICATIONS)?, "notification", key(system, event).as_str())
}

fn save(txn: &Txn, n: &Notification) -> Result<(), StoreError> {
    txn.open(NOTIFICATIONS)?
        .insert(key(&n.system, &n.event).as_str(), store::encode(n).as_slice())?;
    Ok(())
}

/// Whether the next event of its name would plan this notification's ping.
fn idle(p: &Pinging) -> bool {
    !p.inactive && !p.suspended && p.next_send_at.is_none()
}

/// Keeps `NOTIF_IDLE` in step when a notification becomes idle or stops being so.
fn count_idle(txn: &Txn, event: &str, before: bool, after: bool) -> Result<(), StoreError> {
    if before == after {
        return Ok(());
    }
    let mut table = txn.open(NOTIF_IDLE)?;
    let n = table.get(event)?.map_or(0, |v| v.value());
    let n = if after { n + 1 } else { n.saturating_sub(1) };
    table.insert(event, n)?;
    Ok(())
}

/// Runs one input through the rules, then saves the notification and moves
/// or cancels its ping job to match.
pub(super) fn apply(
    txn: &mut Txn,
    n: &mut Notification,
    input: Input,
    now: Timestamp,
    config: &Config,
) -> Result<(), StoreError> {
    let (ping, job) = rules::apply(n.ping.clone(), input, now, settings(config));
    count_idle(txn, &n.event, idle(&n.ping), idle(&ping))?;
    n.ping = ping;
    match job {
        rules::Job::Keep => {}
        rules::Job::PlanAt(at) => {
            jobs::schedule_named(txn, &job_name(&n.system, &n.event), at, &n.job())?;
        }
        rules::Job::Cancel => jobs::cancel_named(txn, &job_name(&n.system, &n.event))?,
    }
    save(txn, n)
}

pub fn get(r: &ReadTransaction, system: &str, event: &str) -> Result<Option<Notification>, StoreError> {
    store::get::<&str, Notification>(
        &r.open_table(NOTIFICATIONS)?,
        "notification",
        key(system, event).as_str(),
    )
}

/// Every notification, or those of one system, ordered by system and event.
pub fn list(r: &ReadTransaction, system: Option<&str>) -> Result<Vec<Notification>, StoreError> {
    let table = r.open_table(NOTIFICATIONS)?;
    let mut out = Vec::new();
    let rows = match system {
        Some(s) => table.range(format!("{s}\0").as_str()..format!("{s}\u{1}").as_str())?,
        None => table.range::<&str>(..)?,
    };
    for row in rows {
        out.push(store::decode("notification", row?.1.value())?);
    }
    Ok(out)
}

/// What a PUT or an imported record did.
#[derive(Debug)]
pub enum Put {
    Created(Notification),
    Updated(Notification),
    Deleted,
    /// A delete of what does not exist: nothing to do, and no error.
    Absent,
}

/// Creates, changes (`inactive` 0 or 1) or deletes (2) one notification.
pub fn put(
    txn: &mut Txn,
    now: Timestamp,
    config: &Config,
    system: &str,
    event: &str,
    url: &str,
    inactive: u8,
) -> Result<Put, StoreError> {
    let existing = load(txn, system, event)?;
    match (existing, inactive) {
        (None, 2) => Ok(Put::Absent),
        (Some(n), 2) => {
            count_idle(txn, event, idle(&n.ping), false)?;
            txn.open(NOTIFICATIONS)?.remove(key(system, event).as_str())?;
            txn.open(NOTIF_BY_EVENT)?.remove((event, system))?;
            jobs::cancel_named(txn, &job_name(system, event))?;
            Ok(Put::Deleted)
        }
        (None, _) => {
            // A system's feed starts at the events published from now on.
            if txn.open(CHANGE_CURSORS)?.get(system)?.is_none() {
                let last = events::last_seq(txn)?;
                txn.open(CHANGE_CURSORS)?.insert(system, last)?;
            }
            let n = Notification {
                system: system.to_string(),
                event: event.to_string(),
                url: url.to_string(),
                created_at: clock::to_ms(now),
                ping: Pinging {
                    inactive: inactive == 1,
                    ..Pinging::default()
                },
                last_error: None,
                missed: 0,
            };
            txn.open(NOTIF_BY_EVENT)?.insert((event, system), 0u8)?;
            count_idle(txn, event, false, idle(&n.ping))?;
            save(txn, &n)?;
            Ok(Put::Created(n))
        }
        (Some(mut n), _) => {
            if n.url != url {
                n.url = url.to_string();
                // A planned ping goes to the new URL (and its host's limit).
                if let Some(at) = n.ping.next_send_at {
                    jobs::schedule_named(txn, &job_name(system, event), clock::from_ms(at), &n.job())?;
                }
            }
            apply(txn, &mut n, Input::SetInactive(inactive == 1), now, config)?;
            Ok(Put::Updated(n))
        }
    }
}

/// `POST .../reactivate`: active, `unacked` 0, not suspended.
pub fn reactivate(
    txn: &mut Txn,
    now: Timestamp,
    config: &Config,
    system: &str,
    event: &str,
) -> Result<Option<Notification>, StoreError> {
    let Some(mut n) = load(txn, system, event)? else {
        return Ok(None);
    };
    apply(txn, &mut n, Input::Reactivate, now, config)?;
    Ok(Some(n))
}

/// The events' [`Subscriber`](crate::events::Subscriber): each new event
/// plans the pings of the notifications of its name (one write per
/// notification whose ping is planned, none for those that join one; one
/// lookup when none of them is idle).
pub fn plan(txn: &mut Txn, published: &[Published], config: &Config) -> Result<(), StoreError> {
    // Most events: no notification of their name waits for one. Looked up
    // with the table opened once: a commit carries many events.
    let waiting: Vec<&Published> = {
        let idle = txn.open(NOTIF_IDLE)?;
        let mut out = Vec::new();
        for p in published.iter().filter(|p| p.created) {
            if idle.get(p.event.event.as_str())?.is_some_and(|v| v.value() > 0) {
                out.push(p);
            }
        }
        out
    };
    for p in waiting {
        let systems: Vec<String> = {
            let index = txn.open(NOTIF_BY_EVENT)?;
            let name = p.event.event.as_str();
            let mut out = Vec::new();
            for row in index.range((name, "")..=(name, "\u{10ffff}"))? {
                out.push(row?.0.value().1.to_string());
            }
            out
        };
        let now = clock::from_ms(p.event.created_at);
        for system in systems {
            let Some(mut n) = load(txn, &system, &p.event.event)? else {
                continue;
            };
            let before = n.ping.clone();
            let (after, _) = rules::apply(before.clone(), Input::Event, now, settings(config));
            if after != before {
                apply(txn, &mut n, Input::Event, now, config)?;
            }
        }
    }
    Ok(())
}

/// What a change query answers: the events, and the cursor of the next page.
pub type Changes = (Vec<(u64, events::StoredEvent)>, Option<u64>);

/// The changes of `system` after its cursor (or `after`): events whose
/// names any of its notifications has, in `seq` order. `None` when the
/// system has no notification.
pub fn changes(
    r: &ReadTransaction,
    system: &str,
    after: Option<u64>,
    limit: usize,
) -> Result<Option<Changes>, StoreError> {
    let names: Vec<String> = list(r, Some(system))?.into_iter().map(|n| n.event).collect();
    if names.is_empty() {
        return Ok(None);
    }
    let cursor = r.open_table(CHANGE_CURSORS)?.get(system)?.map_or(0, |v| v.value());
    let filter = events::Filter {
        after: after.unwrap_or(cursor),
        limit,
        event: None,
        names: Some(&names),
        account: None,
    };
    events::list(r, &filter).map(Some)
}

/// After a change query: the cursor moves to the last event returned (also
/// backwards, when `after=` re-read), and every notification of the system
/// has `unacked` 0 and is no longer suspended.
pub fn queried(
    txn: &mut Txn,
    now: Timestamp,
    config: &Config,
    system: &str,
    last: Option<u64>,
) -> Result<(), StoreError> {
    if let Some(last) = last {
        txn.open(CHANGE_CURSORS)?.insert(system, last)?;
    }
    let all: Vec<Notification> = {
        let table = txn.open(NOTIFICATIONS)?;
        let mut out = Vec::new();
        for row in table.range(format!("{system}\0").as_str()..format!("{system}\u{1}").as_str())? {
            out.push(store::decode("notification", row?.1.value())?);
        }
        out
    };
    for mut n in all {
        apply(txn, &mut n, Input::Queried, now, config)?;
    }
    Ok(())
}

/// What the change feeds have read: for each event name, the systems that
/// have a notification of it and how far their feed has read.
pub struct Feeds(std::collections::HashMap<String, Vec<(String, u64)>>);

impl Feeds {
    pub fn of(txn: &Txn) -> Result<Feeds, StoreError> {
        let cursors = txn.open(CHANGE_CURSORS)?;
        let index = txn.open(NOTIF_BY_EVENT)?;
        let mut map: std::collections::HashMap<String, Vec<(String, u64)>> = Default::default();
        for row in index.iter()? {
            let (k, _) = row?;
            let (event, system) = k.value();
            let cursor = cursors.get(system)?.map_or(0, |v| v.value());
            map.entry(event.to_string())
                .or_default()
                .push((system.to_string(), cursor));
        }
        Ok(Feeds(map))
    }

    /// The systems whose feed has yet to read event `seq` of this name.
    pub fn unread(&self, seq: u64, name: &str) -> Vec<String> {
        let feeds = self.0.get(name).map(Vec::as_slice).unwrap_or_default();
        feeds
            .iter()
            .filter(|(_, read)| seq > *read)
            .map(|(s, _)| s.clone())
            .collect()
    }
}

/// Counts events retention dropped before these feeds read them (one
/// (system, event name) per event), and logs each system's loss as cascade.
pub fn missed(
    txn: &mut Txn,
    now: Timestamp,
    tz: &jiff::tz::TimeZone,
    dropped: Vec<(String, String)>,
) -> Result<(), StoreError> {
    let mut counts: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for k in dropped {
        *counts.entry(k).or_default() += 1;
    }
    for ((system, event), n) in counts {
        if let Some(mut note) = load(txn, &system, &event)? {
            note.missed += n;
            save(txn, &note)?;
        }
        let line = crate::executions::LogLine {
            at: clock::to_ms(now),
            level: crate::executions::Level::Warn,
            category: Some(crate::executions::Category::Cascade),
            message: format!(
                "{n} {event} events dropped unread after notifications.keep_unread; \
                 query /v1/changes?system={system} sooner"
            ),
            detail: None,
        };
        crate::executions::log_daily(txn, now, tz, &system, INTERFACE_KIND, line)?;
    }
    Ok(())
}

/// The job that pings the URL of one change notification.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ping {
    pub system: String,
    pub event: String,
    pub host: String,
}
