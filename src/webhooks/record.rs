//! Webhooks and their queues: the `WEBHOOKS`, `WH_QUEUE` and `WH_ATTEMPTS`
//! tables, fanning published events out to the queues, creating, activating
//! and deleting webhooks, and the end of a deactivated one's buffer.

use jiff::Timestamp;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};
use serde_repr::{Deserialize_repr, Serialize_repr};
use sha2::{Digest, Sha256};

use super::rules::matches;
use crate::app::App;
use crate::clock;
use crate::config::Config;
use crate::events::{self, Published};
use crate::executions::{self, Category, Level, LogLine};
use crate::jobs::{self, JobKey, JobKind};
use crate::outbound::new_secret;
use crate::store::{self, Grows, StoreError, Txn};

store::tables! {
    /// webhook id -> `webhooks::Webhook`.
    WEBHOOKS: redb::TableDefinition<&str, &[u8]> = ("webhooks", 12);
    /// (webhook id, event seq) -> 0: the events a webhook has yet to deliver, in order.
    WH_QUEUE: redb::TableDefinition<(&str, u64), u8> = ("wh_queue", 13);
    /// (webhook id, attempt number) -> `webhooks::Attempt`: the last attempts of each webhook.
    WH_ATTEMPTS: redb::TableDefinition<(&str, u64), &[u8]> = ("wh_attempts", 14);
}

/// The internal event published when a webhook is deactivated.
pub const DEACTIVATED_EVENT: &str = "herald.webhook.deactivated";
pub const MAX_URL: usize = 2048;
pub const MAX_APP: usize = 64;

/// Stored as its tag (below 128): never change or reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum State {
    Active = 0,
    Disabled = 1,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    pub app: String,
    pub event: String,
    pub url: String,
    /// `whsec_` + base64; kept to sign, shown only in the create answer.
    pub secret: String,
    pub created_at: i64,
    pub created_by: String,
    /// The creator's address, for the deactivation notice.
    pub notify: Option<String>,
    pub state: State,
    pub disabled_at: Option<i64>,
    pub disabled_reason: Option<String>,
    /// The first failure since the last success.
    pub failing_since: Option<i64>,
    /// Attempts made on the event at the head of the queue.
    pub head_attempts: u32,
    pub last_error: Option<String>,
    pub next_retry_at: Option<i64>,
    /// Rows in `WH_QUEUE`: pending while active, the buffer while disabled.
    pub queued: u64,
    /// Attempts recorded so far; numbers the rows of `WH_ATTEMPTS`.
    pub attempts_seq: u64,
    /// SHA-256 of the reactivation token, while one is valid.
    pub token_sha256: Option<[u8; 32]>,
    /// While disabled: until when events are buffered (and the token works).
    pub buffer_until: Option<i64>,
    /// Events not kept because the buffer window was over.
    pub not_kept: u64,
}

impl Webhook {
    pub fn target(&self) -> String {
        authority(&self.url)
    }

    pub(super) fn job(&self) -> Deliver {
        Deliver {
            webhook: self.id.clone(),
            host: self.target(),
        }
    }
}

/// host:port of a URL: the unit of "one receiver" for concurrency limits.
pub fn authority(url: &str) -> String {
    crate::net::authority(url)
}

pub(super) fn job_name(id: &str) -> String {
    format!("wh:{id}")
}

pub(super) fn buffer_job_name(id: &str) -> String {
    format!("wh-buffer:{id}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub event_id: String,
    pub attempt: u32,
    pub at: i64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
    pub next_retry_at: Option<i64>,
    pub response: String,
}

/// The job that delivers the queued events of one webhook, in order.
#[derive(Debug, Serialize, Deserialize)]
pub struct Deliver {
    pub webhook: String,
    pub host: String,
}

/// The job that ends the buffer window of a deactivated webhook.
#[derive(Debug, Serialize, Deserialize)]
pub struct BufferEnd {
    pub webhook: String,
}

impl JobKind for BufferEnd {
    const ID: u32 = 4;
    const NAME: &'static str = "webhook_buffer_end";

    async fn run(self, app: &App, _key: JobKey) -> Result<jobs::Ran, StoreError> {
        let now = app.clock.now();
        let tz = app.settings().general.timezone.clone();
        app.store
            .write(Grows::No, move |txn| end_buffer(txn, &self.webhook, now, &tz))
            .await?;
        Ok(jobs::Ran::Ok)
    }
}

// ---- the resource --------------------------------------------------------------

pub struct NewWebhook {
    pub app: String,
    pub event: String,
    pub url: String,
    pub secret: Option<String>,
    pub created_by: String,
    pub notify: Option<String>,
}

pub fn create(txn: &mut Txn, now: Timestamp, n: NewWebhook) -> Result<Webhook, StoreError> {
    let wh = Webhook::new(n, now);
    save(txn, &wh)?;
    Ok(wh)
}

impl Webhook {
    /// A new, active webhook with a fresh id (and secret, unless given).
    pub(super) fn new(n: NewWebhook, now: Timestamp) -> Webhook {
        let ulid = ulid::Ulid::from_parts(clock::to_ms(now).max(0) as u64, rand::random());
        Webhook {
            id: format!("wh_{ulid}"),
            app: n.app,
            event: n.event,
            url: n.url,
            secret: n.secret.unwrap_or_else(new_secret),
            created_at: clock::to_ms(now),
            created_by: n.created_by,
            notify: n.notify,
            state: State::Active,
            disabled_at: None,
            disabled_reason: None,
            failing_since: None,
            head_attempts: 0,
            last_error: None,
            next_retry_at: None,
            queued: 0,
            attempts_seq: 0,
            token_sha256: None,
            buffer_until: None,
            not_kept: 0,
        }
    }
}

pub(super) fn save(txn: &Txn, wh: &Webhook) -> Result<(), StoreError> {
    txn.open(WEBHOOKS)?
        .insert(wh.id.as_str(), store::encode(wh).as_slice())?;
    Ok(())
}

pub(super) fn load(txn: &Txn, id: &str) -> Result<Option<Webhook>, StoreError> {
    store::get::<&str, Webhook>(&txn.open(WEBHOOKS)?, "webhook", id)
}

pub fn get(r: &ReadTransaction, id: &str) -> Result<Option<Webhook>, StoreError> {
    store::get::<&str, Webhook>(&r.open_table(WEBHOOKS)?, "webhook", id)
}

pub fn list(r: &ReadTransaction) -> Result<Vec<Webhook>, StoreError> {
    let table = r.open_table(WEBHOOKS)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        out.push(store::decode("webhook", row?.1.value())?);
    }
    Ok(out)
}

/// Each webhook's backlog: (id, events it has yet to deliver, when the
/// oldest of them was published).
pub fn backlog(r: &ReadTransaction) -> Result<Vec<(String, u64, Option<i64>)>, StoreError> {
    let queue = r.open_table(WH_QUEUE)?;
    let mut out = Vec::new();
    for wh in list(r)? {
        let head = queue.range((wh.id.as_str(), 0)..=(wh.id.as_str(), u64::MAX))?.next();
        let oldest = match head {
            Some(row) => events::get_many(r, &[row?.0.value().1])?.pop().and_then(|(_, e)| e),
            None => None,
        };
        out.push((wh.id, wh.queued, oldest.map(|e| e.created_at)));
    }
    Ok(out)
}

/// Attempts of one webhook, newest first, and the cursor of the next page.
pub fn attempts(
    r: &ReadTransaction,
    id: &str,
    after: Option<u64>,
    limit: usize,
) -> Result<(Vec<Attempt>, Option<u64>), StoreError> {
    let table = r.open_table(WH_ATTEMPTS)?;
    let end = after.unwrap_or(u64::MAX);
    let mut out = Vec::new();
    for row in table.range((id, 0)..(id, end))?.rev() {
        let (k, v) = row?;
        if out.len() == limit {
            return Ok((out, Some(k.value().1 + 1)));
        }
        out.push(store::decode("attempt", v.value())?);
    }
    Ok((out, None))
}

/// Queues each new event for every webhook it matches (in the publishing
/// commit), and makes sure each active one has its delivery job. The
/// events' [`Subscriber`](crate::events::Subscriber) for webhooks.
pub fn fan_out(txn: &mut Txn, published: &[Published], _: &Config) -> Result<(), StoreError> {
    let fresh: Vec<&Published> = published.iter().filter(|p| p.created).collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let hooks: Vec<Webhook> = {
        let table = txn.open(WEBHOOKS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(store::decode("webhook", row?.1.value())?);
        }
        out
    };
    for mut wh in hooks {
        let mut added = 0;
        for p in fresh.iter().filter(|p| matches(&wh.event, &p.event.event)) {
            let keep = match wh.state {
                State::Active => true,
                State::Disabled => wh.buffer_until.is_some_and(|until| p.event.created_at < until),
            };
            if keep {
                txn.open(WH_QUEUE)?.insert((wh.id.as_str(), p.seq), 0u8)?;
                added += 1;
            } else {
                wh.not_kept += 1;
            }
        }
        if added == 0 && wh.state == State::Active {
            continue;
        }
        wh.queued += added;
        if wh.state == State::Active && jobs::named(txn, &job_name(&wh.id))?.is_none() {
            let due = clock::from_ms(fresh[0].event.created_at);
            jobs::schedule_named(txn, &job_name(&wh.id), due, &wh.job())?;
        }
        save(txn, &wh)?;
    }
    Ok(())
}

/// The ids of every webhook.
pub fn ids(txn: &Txn) -> Result<Vec<String>, StoreError> {
    let table = txn.open(WEBHOOKS)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        out.push(row?.0.value().to_string());
    }
    Ok(out)
}

/// Whether one of `webhooks` still has to deliver event `seq` (retention keeps it).
pub fn needs(txn: &Txn, webhooks: &[String], seq: u64) -> Result<bool, StoreError> {
    let queue = txn.open(WH_QUEUE)?;
    for id in webhooks {
        if queue.get((id.as_str(), seq))?.is_some() {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Removes every queued event of a webhook; returns how many.
fn drop_queue(txn: &mut Txn, wh: &mut Webhook) -> Result<u64, StoreError> {
    let seqs: Vec<u64> = {
        let queue = txn.open(WH_QUEUE)?;
        let mut out = Vec::new();
        for row in queue.range((wh.id.as_str(), 0)..=(wh.id.as_str(), u64::MAX))? {
            out.push(row?.0.value().1);
        }
        out
    };
    let mut queue = txn.open(WH_QUEUE)?;
    for seq in &seqs {
        queue.remove((wh.id.as_str(), *seq))?;
    }
    wh.queued = 0;
    Ok(seqs.len() as u64)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn log(
    txn: &mut Txn,
    now: Timestamp,
    tz: &jiff::tz::TimeZone,
    wh: &Webhook,
    level: Level,
    category: Option<Category>,
    message: String,
    detail: Option<String>,
) -> Result<(), StoreError> {
    let line = LogLine {
        at: clock::to_ms(now),
        level,
        category,
        message,
        detail,
    };
    executions::log_daily(txn, now, tz, &wh.app, "webhook", line)?;
    Ok(())
}

pub fn delete(txn: &mut Txn, id: &str, now: Timestamp, tz: &jiff::tz::TimeZone) -> Result<bool, StoreError> {
    let Some(mut wh) = load(txn, id)? else { return Ok(false) };
    let dropped = drop_queue(txn, &mut wh)?;
    let attempts: Vec<u64> = {
        let t = txn.open(WH_ATTEMPTS)?;
        let mut out = Vec::new();
        for row in t.range((id, 0)..=(id, u64::MAX))? {
            out.push(row?.0.value().1);
        }
        out
    };
    let mut t = txn.open(WH_ATTEMPTS)?;
    for n in attempts {
        t.remove((id, n))?;
    }
    drop(t);
    jobs::cancel_named(txn, &job_name(id))?;
    jobs::cancel_named(txn, &buffer_job_name(id))?;
    txn.open(WEBHOOKS)?.remove(id)?;
    let (level, category) = if dropped > 0 {
        (Level::Warn, Some(Category::Cascade))
    } else {
        (Level::Info, None)
    };
    log(
        txn,
        now,
        tz,
        &wh,
        level,
        category,
        format!("webhook {id} deleted; {dropped} pending deliveries dropped"),
        Some(crate::redact::url(&wh.url)),
    )?;
    Ok(true)
}

/// Why activation did not happen.
#[derive(Debug, PartialEq)]
pub enum ActivateError {
    NotFound,
    /// The token is wrong, used, or expired with the buffer.
    BadToken,
}

/// Activates a webhook. With `replay`, its buffer is delivered in order
/// before live events; without, the buffer is discarded (and logged).
/// `token`: when the call comes from the reactivation link.
pub fn activate(
    txn: &mut Txn,
    id: &str,
    replay: bool,
    token: Option<&str>,
    now: Timestamp,
    tz: &jiff::tz::TimeZone,
) -> Result<Result<Webhook, ActivateError>, StoreError> {
    let Some(mut wh) = load(txn, id)? else {
        return Ok(Err(ActivateError::NotFound));
    };
    if let Some(token) = token
        && !token_valid(&wh, token, now)
    {
        return Ok(Err(ActivateError::BadToken));
    }
    if wh.state == State::Active {
        return Ok(Ok(wh));
    }
    let buffered = wh.queued;
    if !replay {
        let dropped = drop_queue(txn, &mut wh)?;
        if dropped > 0 {
            log(
                txn,
                now,
                tz,
                &wh,
                Level::Warn,
                Some(Category::Cascade),
                format!("webhook {id} reactivated without replay: {dropped} buffered events discarded"),
                None,
            )?;
        }
    }
    wh.state = State::Active;
    wh.disabled_at = None;
    wh.disabled_reason = None;
    wh.failing_since = None;
    wh.head_attempts = 0;
    wh.next_retry_at = None;
    wh.token_sha256 = None;
    wh.buffer_until = None;
    jobs::cancel_named(txn, &buffer_job_name(id))?;
    if wh.queued > 0 {
        jobs::schedule_named(txn, &job_name(id), now, &wh.job())?;
    }
    save(txn, &wh)?;
    let how = if replay {
        format!("replaying {buffered} buffered events")
    } else {
        "without replay".to_string()
    };
    log(
        txn,
        now,
        tz,
        &wh,
        Level::Info,
        None,
        format!("webhook {id} reactivated, {how}"),
        None,
    )?;
    Ok(Ok(wh))
}

pub fn token_valid(wh: &Webhook, token: &str, now: Timestamp) -> bool {
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let matches = wh
        .token_sha256
        .is_some_and(|h| bool::from(subtle::ConstantTimeEq::ct_eq(&h[..], &hash[..])));
    matches && wh.buffer_until.is_some_and(|until| clock::to_ms(now) < until)
}

/// The job at the end of the buffer window: the buffer goes, the link expires.
pub fn end_buffer(txn: &mut Txn, id: &str, now: Timestamp, tz: &jiff::tz::TimeZone) -> Result<(), StoreError> {
    jobs::cancel_named(txn, &buffer_job_name(id))?;
    let Some(mut wh) = load(txn, id)? else { return Ok(()) };
    if wh.state != State::Disabled {
        return Ok(());
    }
    let dropped = drop_queue(txn, &mut wh)?;
    wh.token_sha256 = None;
    save(txn, &wh)?;
    log(
        txn,
        now,
        tz,
        &wh,
        Level::Warn,
        Some(Category::Cascade),
        format!(
            "webhook {id}: buffer window over, {dropped} buffered events dropped; later events are not kept until it is reactivated"
        ),
        None,
    )?;
    Ok(())
}
