//! Actions as stored: the `ACTIONS` and `ACTION_KEYS` tables, creating one
//! (with its idempotency key and first call), reading, listing, the sweep,
//! and a changed `attempts` applied to the open ones.

use jiff::Timestamp;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use super::record::{self, Action};
use super::rules;
use super::rules::{Progress, State};
use crate::clock;
use crate::jobs::{self};
use crate::store::{self, StoreError, Txn};

/// The names of an action's jobs in the queue (stored: keep them).
pub fn call_job(id: &str) -> String {
    format!("action:{id}")
}

pub fn timeout_job(id: &str) -> String {
    format!("action-timeout:{id}")
}

store::tables! {
    /// action id (time-ordered) -> `actions::Action`.
    ACTIONS: redb::TableDefinition<&str, &[u8]> = ("actions", 19);
    /// "account\0idempotency key" -> id of the action first created with it.
    ACTION_KEYS: redb::TableDefinition<&str, &str> = ("action_keys", 20);
}

/// The job that calls the external system of one action (its first call
/// or a retry). The callback token rides here, since the action keeps only
/// its hash.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallJob {
    pub id: String,
    pub token: String,
    pub host: String,
}

/// The job that ends the wait of an accepted action for its callback.
#[derive(Debug, Serialize, Deserialize)]
pub struct TimeoutJob {
    pub id: String,
}

/// What a client asked for in `POST /v1/actions`, checked.
#[derive(Debug, Clone)]
pub struct NewAction {
    pub interface: String,
    /// JSON text.
    pub payload: String,
    pub owner: Option<String>,
    pub idempotency_key: Option<String>,
    /// The creating account.
    pub account: String,
    /// The interface's `attempts` now.
    pub attempts_max: u32,
    /// host:port of the interface's URL (the call job's target).
    pub host: String,
}

/// What `create` did.
#[derive(Debug)]
pub enum Created {
    /// A new action, and the callback token for its outbound call (given
    /// out there once; the store keeps only its hash).
    New(Action, String),
    /// The action this account first created with the same idempotency key.
    Repeat(Action),
}

fn idempotency(account: &str, key: &str) -> String {
    format!("{account}\0{key}")
}

/// Stores a new action, unless its idempotency key was used before by the
/// same account.
pub fn create(txn: &mut Txn, new: NewAction, now: Timestamp) -> Result<Created, StoreError> {
    if let Some(key) = &new.idempotency_key {
        let first = txn
            .open(ACTION_KEYS)?
            .get(idempotency(&new.account, key).as_str())?
            .map(|v| v.value().to_string());
        if let Some(action) = first.map(|id| load(txn, &id)).transpose()?.flatten() {
            return Ok(Created::Repeat(action));
        }
    }
    let now_ms = clock::to_ms(now);
    let ulid = clock::ordered_ulid(now_ms);
    let (token, callback_sha256) = record::new_callback_token();
    let action = Action {
        id: format!("act_{ulid}"),
        interface: new.interface,
        payload: new.payload,
        owner: new.owner,
        created_by: new.account,
        idempotency_key: new.idempotency_key,
        callback_sha256,
        progress: Progress::new(new.attempts_max),
        created_at: now_ms,
        updated_at: now_ms,
        resolved_by: None,
        note: None,
        assignee: None,
    };
    if let Some(key) = &action.idempotency_key {
        txn.open(ACTION_KEYS)?
            .insert(idempotency(&action.created_by, key).as_str(), action.id.as_str())?;
    }
    save(txn, &action)?;
    let job = CallJob {
        id: action.id.clone(),
        token: token.clone(),
        host: new.host,
    };
    jobs::schedule_named(txn, &call_job(&action.id), now, &job)?;
    Ok(Created::New(action, token))
}

pub fn load(txn: &Txn, id: &str) -> Result<Option<Action>, StoreError> {
    store::get::<&str, Action>(&txn.open(ACTIONS)?, "action", id)
}

pub fn save(txn: &Txn, action: &Action) -> Result<(), StoreError> {
    txn.open(ACTIONS)?
        .insert(action.id.as_str(), store::encode(action).as_slice())?;
    Ok(())
}

pub fn get(r: &ReadTransaction, id: &str) -> Result<Option<Action>, StoreError> {
    store::get::<&str, Action>(&r.open_table(ACTIONS)?, "action", id)
}

/// Which actions a list shows: each given field must match.
#[derive(Debug, Default)]
pub struct Filter<'a> {
    pub state: Option<rules::State>,
    pub interface: Option<&'a str>,
    /// The creating account (an integration sees only its own).
    pub created_by: Option<&'a str>,
    /// A queue's work: `timeout_queue`, or where a person assigned it.
    pub queue: Option<&'a str>,
    pub assignee: Option<&'a str>,
}

/// A page of actions, newest first, that match `f`.
pub fn list(
    r: &ReadTransaction,
    f: &Filter<'_>,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<Action>, Option<String>), StoreError> {
    store::page_newest(r, ACTIONS, "action", after, limit, |a: &Action| {
        f.state.is_none_or(|s| a.progress.state == s)
            && f.interface.is_none_or(|i| a.interface == i)
            && f.created_by.is_none_or(|c| a.created_by == c)
            && f.queue.is_none_or(|q| a.progress.queue.as_deref() == Some(q))
            && f.assignee.is_none_or(|p| a.assignee.as_deref() == Some(p))
    })
}

/// Deletes actions that ended before `cutoff`, with their idempotency keys;
/// open and waiting ones stay whatever their age, and so do those `listed`
/// on the worklist (to do, or closed and not acknowledged). True while
/// more remain.
pub fn sweep(
    txn: &mut Txn,
    cutoff: Timestamp,
    budget: usize,
    listed: impl Fn(&Action) -> bool,
) -> Result<bool, StoreError> {
    let cutoff = clock::to_ms(cutoff);
    let mut old = Vec::new();
    let mut more = false;
    for row in txn.open(ACTIONS)?.iter()? {
        let (k, v) = row?;
        let a: Action = store::decode("action", v.value())?;
        let ended = !a.progress.state.open() && a.progress.state != State::Waiting;
        if ended && a.updated_at < cutoff && !listed(&a) {
            if old.len() == budget {
                more = true;
                break;
            }
            old.push((
                k.value().to_string(),
                a.idempotency_key.map(|key| idempotency(&a.created_by, &key)),
            ));
        }
    }
    let (mut actions, mut keys) = (txn.open(ACTIONS)?, txn.open(ACTION_KEYS)?);
    for (id, key) in old {
        actions.remove(id.as_str())?;
        if let Some(key) = key {
            keys.remove(key.as_str())?;
        }
    }
    Ok(more)
}

/// Actions a person should look at (retrying, closed and not acknowledged,
/// to do), newest first, at most `limit`, and how many there are in all.
pub fn attention(r: &ReadTransaction, limit: usize) -> Result<(Vec<Action>, u64), StoreError> {
    let mut found = Vec::new();
    let mut total = 0;
    for row in r.open_table(ACTIONS)?.iter()?.rev() {
        let a: Action = store::decode("action", row?.1.value())?;
        if crate::worklist::action_open(&a) {
            total += 1;
            if found.len() < limit {
                found.push(a);
            }
        }
    }
    Ok((found, total))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::Grows;

    fn new(account: &str, interface: &str, key: Option<&str>) -> NewAction {
        NewAction {
            interface: interface.into(),
            payload: "{\"order\":7}".into(),
            owner: None,
            idempotency_key: key.map(String::from),
            account: account.into(),
            attempts_max: 5,
            host: "127.0.0.1:9".into(),
        }
    }

    #[test]
    fn a_repeated_key_gives_the_first_action_and_lists_filter_by_state_and_interface() {
        let dir = tempfile::tempdir().unwrap();
        let (store, guard) = crate::test_store(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let create_at =
            |n: NewAction, at: Timestamp| rt.block_on(store.write(Grows::Yes, move |txn| create(txn, n, at)));

        let Created::New(first, token) = create_at(new("erp", "crm", Some("k1")), t0).unwrap() else {
            panic!("the first create makes a new action")
        };
        assert!(first.token_matches(&token));
        let Created::Repeat(again) = create_at(new("erp", "crm", Some("k1")), t0).unwrap() else {
            panic!("the same key from the same account repeats")
        };
        assert_eq!(again.id, first.id);
        // Another account's key is its own.
        let Created::New(other, _) = create_at(new("shop", "crm", Some("k1")), t0).unwrap() else {
            panic!("another account's key is not a repeat")
        };
        let t1 = clock::add(t0, Duration::from_millis(5));
        let Created::New(billing, _) = create_at(new("erp", "billing", None), t1).unwrap() else {
            panic!("no key: always new")
        };

        let all_of = Filter::default();
        let (all, next) = store.read(|r| list(r, &all_of, None, 10)).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].id, billing.id, "newest first");
        assert!(next.is_none());
        let crm_only = Filter {
            interface: Some("crm"),
            ..Filter::default()
        };
        let (crm, _) = store.read(|r| list(r, &crm_only, None, 10)).unwrap();
        let mut ids: Vec<_> = crm.iter().map(|a| a.id.clone()).collect();
        ids.sort();
        let mut want = vec![first.id.clone(), other.id.clone()];
        want.sort();
        assert_eq!(ids, want);
        let (page, next) = store.read(|r| list(r, &all_of, None, 1)).unwrap();
        assert_eq!(page.len(), 1);
        let (rest, _) = store.read(|r| list(r, &all_of, next.as_deref(), 10)).unwrap();
        assert_eq!(rest.len(), 2);
        let waiting_only = Filter {
            state: Some(rules::State::Waiting),
            ..Filter::default()
        };
        let (waiting, _) = store.read(|r| list(r, &waiting_only, None, 10)).unwrap();
        assert!(waiting.is_empty());
        assert_eq!(store.read(|r| get(r, &first.id)).unwrap(), Some(first));
        drop(store);
        guard.close(Duration::from_secs(5));
    }
}
