//! Webhooks: each matching event as a signed JSON POST, in order per
//! webhook, through outages of either side.
//!
//! Publishing an event puts a row `(webhook, seq)` into `WH_QUEUE` for every
//! webhook it matches, in the same commit. Each webhook with work has one
//! delivery job (`wh:<id>`): it posts the head of its queue and the events
//! behind it in order, and commits the outcome with the next step. A failure
//! holds back that webhook's later events only; other webhooks have their own
//! jobs, and the dispatcher bounds how many run at once per receiver host.
//!
//! After `webhooks.disable_after` of failures without a success (or a `410
//! Gone`), the webhook is deactivated: its creator is notified with a
//! single-purpose reactivation link, an internal event is published, and
//! its events stay queued (the buffer) for `webhooks.buffer_for`.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http_body_util::Full;
use jiff::Timestamp;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::App;
use crate::clock;
use crate::config::Webhooks as Settings;
use crate::events::{self, NewEvent, Published, StoredEvent};
use crate::executions::{self, Category, Level, LogLine};
use crate::http::client::Outcome;
use crate::jobs::{self, Job};
use crate::mail;
use crate::store::{self, EVENTS, Grows, StoreError, Txn, WEBHOOKS, WH_ATTEMPTS, WH_QUEUE};

/// The internal event published when a webhook is deactivated.
pub const DEACTIVATED_EVENT: &str = "herald.webhook.deactivated";
/// Attempts kept per webhook for `GET /v1/webhooks/{id}/attempts`.
const ATTEMPTS_KEPT: u64 = 1000;
/// Events one job run delivers before it commits their progress: enough to
/// amortise the commit and the dispatch, few enough that a crash repeats
/// little (deliveries are at least once; receivers dedupe on webhook-id).
const BATCH: usize = 500;
/// The part of a receiver's answer that is kept.
const RESPONSE_KEPT: usize = 1024;
pub const MAX_URL: usize = 2048;
pub const MAX_APP: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum State {
    Active,
    Disabled,
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

    fn job(&self) -> Job {
        Job::Deliver {
            webhook: self.id.clone(),
            host: self.target(),
        }
    }
}

/// host:port of a URL: the unit of "one receiver" for concurrency limits.
pub fn authority(url: &str) -> String {
    match url.parse::<hyper::Uri>() {
        Ok(u) => {
            let port = u
                .port_u16()
                .unwrap_or(if u.scheme_str() == Some("https") { 443 } else { 80 });
            format!("{}:{port}", u.host().unwrap_or(""))
        }
        Err(_) => url.to_string(),
    }
}

fn job_name(id: &str) -> String {
    format!("wh:{id}")
}

fn buffer_job_name(id: &str) -> String {
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

// ---- the rules ----------------------------------------------------------------

/// Why an attempt failed, judged from what came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub category: Category,
    pub message: String,
    pub status: Option<u16>,
    /// `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
    /// 410 Gone: the receiver says this webhook is over.
    pub gone: bool,
}

/// Any 2xx is success; everything else fails the attempt, with the category
/// that says whom to call.
pub fn judge(status: u16, retry_after: Option<&str>, now: Timestamp) -> Result<(), Failure> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let category = match status {
        401 | 403 | 404 | 410 => Category::Configuration,
        400 | 422 => Category::Mapping,
        _ => Category::External,
    };
    let retry_after = if matches!(status, 429 | 503) {
        retry_after.and_then(|v| parse_retry_after(v, now))
    } else {
        None
    };
    Err(Failure {
        category,
        message: format!("answered {status}"),
        status: Some(status),
        retry_after,
        gone: status == 410,
    })
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(v: &str, now: Timestamp) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v.trim()).ok()?.timestamp();
    Duration::try_from(at.duration_since(now)).ok()
}

#[derive(Debug, PartialEq)]
pub enum Next {
    RetryAt(Timestamp),
    Disable,
}

/// After a failed attempt: when to try again, or deactivate. `attempts` is
/// the number made on this event so far; `jitter` is in [-1, 1] (±20 %).
pub fn after_failure(
    failing_since: Timestamp,
    attempts: u32,
    now: Timestamp,
    f: &Failure,
    s: &Settings,
    jitter: f64,
) -> Next {
    if f.gone
        || now.duration_since(failing_since) >= jiff::SignedDuration::try_from(s.disable_after).unwrap_or_default()
    {
        return Next::Disable;
    }
    let step = (attempts as usize).min(s.retry_schedule.len() - 1);
    let base = s.retry_schedule[step];
    let mut wait = base.mul_f64(1.0 + 0.2 * jitter.clamp(-1.0, 1.0));
    if let Some(asked) = f.retry_after {
        let longest = s.retry_schedule.iter().max().copied().unwrap_or(base);
        wait = wait.max(asked.min(longest));
    }
    Next::RetryAt(clock::add(now, wait))
}

pub fn matches(subscribed: &str, event: &str) -> bool {
    subscribed == "*" || subscribed == event
}

/// Signs deliveries per Standard Webhooks: the key is decoded and the
/// HMAC keyed once per delivery run, not once per event.
pub struct Signer(hmac::Hmac<Sha256>);

impl Signer {
    pub fn new(secret: &str) -> Signer {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
            .unwrap_or_default();
        Signer(hmac::Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length"))
    }

    /// `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }
}

pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// Checks a secret given at creation: `whsec_` and 24 to 64 bytes in base64.
pub fn valid_secret(s: &str) -> bool {
    s.strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|k| (24..=64).contains(&k.len()))
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
    fn new(n: NewWebhook, now: Timestamp) -> Webhook {
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

fn save(txn: &Txn, wh: &Webhook) -> Result<(), StoreError> {
    txn.open(WEBHOOKS)?
        .insert(wh.id.as_str(), store::encode(wh).as_slice())?;
    Ok(())
}

fn load(txn: &Txn, id: &str) -> Result<Option<Webhook>, StoreError> {
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
/// commit), and makes sure each active one has its delivery job.
pub fn fan_out(txn: &mut Txn, published: &[Published]) -> Result<(), StoreError> {
    fan_out_except(txn, published, None)
}

/// [`fan_out`], skipping one webhook (the one a deactivation notice is about).
fn fan_out_except(txn: &mut Txn, published: &[Published], except: Option<&str>) -> Result<(), StoreError> {
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
    for mut wh in hooks.into_iter().filter(|w| Some(w.id.as_str()) != except) {
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
            jobs::schedule_named(txn, &job_name(&wh.id), due, wh.job())?;
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
fn log(
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
        Some(wh.url.clone()),
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
        jobs::schedule_named(txn, &job_name(id), now, wh.job())?;
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

/// Context the delivery job needs from the settings in force.
struct Ctx {
    settings: Settings,
    tz: jiff::tz::TimeZone,
    public_url: String,
    alerts: crate::config::Alerts,
}

/// Deactivates: keeps the queue as the buffer, notifies the creator with a
/// reactivation link, publishes the internal event, schedules the buffer's end.
fn deactivate(txn: &mut Txn, wh: &mut Webhook, reason: String, now: Timestamp, ctx: &Ctx) -> Result<(), StoreError> {
    let mut token_bytes = [0u8; 32];
    rand::fill(&mut token_bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token_bytes);
    let until = clock::add(now, ctx.settings.buffer_for);
    wh.state = State::Disabled;
    wh.disabled_at = Some(clock::to_ms(now));
    wh.disabled_reason = Some(reason.clone());
    wh.next_retry_at = None;
    wh.token_sha256 = Some(Sha256::digest(token.as_bytes()).into());
    wh.buffer_until = Some(clock::to_ms(until));
    jobs::cancel_named(txn, &job_name(&wh.id))?;
    jobs::schedule_named(
        txn,
        &buffer_job_name(&wh.id),
        until,
        Job::WebhookBufferEnd { webhook: wh.id.clone() },
    )?;
    let since = wh.failing_since.map(clock::rfc3339).unwrap_or_default();
    log(
        txn,
        now,
        &ctx.tz,
        wh,
        Level::Error,
        Some(Category::External),
        format!("webhook {} deactivated: {reason}", wh.id),
        Some(format!("failing since {since}; events are buffered until {until}")),
    )?;
    let link = format!("{}/v1/webhooks/{}/activate?token={token}", ctx.public_url, wh.id);
    let title = format!("Webhook {} of {} deactivated", wh.id, wh.app);
    let detail = format!(
        "url: {}\nevent: {}\nreason: {reason}\nlast error: {}\nfailing since: {since}\n\
         Its events are kept until {until}. To reactivate it (with or without replaying them), open:\n{link}",
        wh.url,
        wh.event,
        wh.last_error.as_deref().unwrap_or("-"),
    );
    match &wh.notify {
        Some(to) => {
            mail::notify(txn, now, &ctx.alerts, mail::Recipient::Email(to), &title, &detail)?;
        }
        None => {
            mail::notify(txn, now, &ctx.alerts, mail::Recipient::System, &title, &detail)?;
        }
    }
    let data = serde_json::json!({
        "webhook": wh.id, "app": wh.app, "url": wh.url, "event": wh.event,
        "reason": reason, "disabled_at": clock::rfc3339(clock::to_ms(now)),
    });
    let internal = NewEvent {
        event: DEACTIVATED_EVENT.into(),
        data: data.to_string(),
        idempotency_key: None,
    };
    let published = events::publish(txn, "herald", now, vec![internal])?;
    save(txn, wh)?;
    fan_out_except(txn, &published, Some(&wh.id))?;
    Ok(())
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

// ---- delivery ---------------------------------------------------------------------

/// The delivery job of one webhook: posts the head of its queue and the
/// events behind it, then commits what happened and what comes next.
pub async fn run_deliver(app: &App, id: String) -> Result<(), StoreError> {
    let name = job_name(&id);
    let (wh, heads) = app.store.read(|r| {
        let Some(wh) = get(r, &id)? else {
            return Ok((None, Vec::new()));
        };
        let queue = r.open_table(WH_QUEUE)?;
        let events = r.open_table(EVENTS)?;
        let mut heads = Vec::new();
        for row in queue.range((id.as_str(), 0)..=(id.as_str(), u64::MAX))? {
            let seq = row?.0.value().1;
            heads.push((seq, store::get::<u64, StoredEvent>(&events, "event", seq)?));
            if heads.len() == BATCH {
                break;
            }
        }
        Ok((Some(wh), heads))
    })?;
    let settings = app.settings();
    let ctx = Ctx {
        settings: settings.webhooks.clone(),
        tz: settings.general.timezone.clone(),
        public_url: settings.server.public_url.clone(),
        alerts: settings.alerts.clone(),
    };
    let Some(wh) = wh.filter(|w| w.state == State::Active) else {
        return app
            .store
            .write(Grows::No, move |txn| jobs::cancel_named(txn, &name))
            .await;
    };

    let poster = Poster::new(app, &wh, ctx.settings.timeout);
    let mut delivered: Vec<(u64, Attempt)> = Vec::new();
    let mut missing: Vec<u64> = Vec::new();
    let mut failed: Option<(u64, Attempt, Failure)> = None;
    for (seq, event) in heads {
        let Some(event) = event else {
            missing.push(seq);
            continue;
        };
        let (attempt, verdict) = poster.post(&event, delivered.is_empty() && missing.is_empty()).await;
        match verdict {
            Ok(()) => delivered.push((seq, attempt)),
            Err(f) => {
                failed = Some((seq, attempt, f));
                break;
            }
        }
    }
    let now = app.clock.now();
    let jitter = rand::random::<f64>() * 2.0 - 1.0;
    app.store
        .write(Grows::No, move |txn| {
            record(txn, &id, delivered, missing, failed, now, jitter, &ctx)
        })
        .await
}

/// The delivery body, `{"id","event","app","created_at","data"}`, with
/// `data` copied as stored (no re-parse: it was checked at publish).
fn delivery_body(wh: &Webhook, event: &StoredEvent) -> Vec<u8> {
    let data = if event.data.is_empty() {
        "null"
    } else {
        event.data.as_str()
    };
    let created_at = clock::rfc3339(event.created_at);
    let mut out = Vec::with_capacity(data.len() + event.id.len() + event.event.len() + wh.app.len() + 96);
    for (name, value) in [
        ("{\"id\":", event.id.as_str()),
        (",\"event\":", &event.event),
        (",\"app\":", &wh.app),
        (",\"created_at\":", &created_at),
    ] {
        out.extend_from_slice(name.as_bytes());
        serde_json::to_writer(&mut out, value).expect("a string serializes");
    }
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.push(b'}');
    out
}

/// What the POSTs of one delivery run share.
struct Poster<'a> {
    app: &'a App,
    wh: &'a Webhook,
    url: Result<hyper::Uri, String>,
    signer: Signer,
    timeout: Duration,
}

impl<'a> Poster<'a> {
    fn new(app: &'a App, wh: &'a Webhook, timeout: Duration) -> Poster<'a> {
        Poster {
            app,
            wh,
            url: wh
                .url
                .parse()
                .map_err(|e| format!("the URL {:?} cannot be used: {e}", wh.url)),
            signer: Signer::new(&wh.secret),
            timeout,
        }
    }

    /// One POST of one event; the attempt record and the verdict.
    async fn post(&self, event: &StoredEvent, first_in_run: bool) -> (Attempt, Result<(), Failure>) {
        use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
        let now = self.app.clock.now();
        let timestamp = now.as_second();
        let mut attempt = Attempt {
            event_id: event.id.clone(),
            attempt: if first_in_run { self.wh.head_attempts + 1 } else { 1 },
            at: clock::to_ms(now),
            status_code: None,
            error: None,
            duration_ms: 0,
            next_retry_at: None,
            response: String::new(),
        };
        let body = delivery_body(self.wh, event);
        let signature = self.signer.sign(&event.id, timestamp, &body);
        let built = self.url.clone().and_then(|url| {
            let value = |v: String| HeaderValue::try_from(v).map_err(|e| format!("cannot build the request: {e}"));
            let mut req = hyper::Request::new(Full::new(Bytes::from(body)));
            *req.method_mut() = hyper::Method::POST;
            *req.uri_mut() = url;
            let h = req.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(
                USER_AGENT,
                HeaderValue::from_static(concat!("herald/", env!("CARGO_PKG_VERSION"))),
            );
            h.insert(HeaderName::from_static("webhook-id"), value(event.id.clone())?);
            h.insert(
                HeaderName::from_static("webhook-timestamp"),
                HeaderValue::from(timestamp),
            );
            h.insert(HeaderName::from_static("webhook-signature"), value(signature)?);
            Ok(req)
        });
        let request = match built {
            Ok(r) => r,
            Err(message) => {
                attempt.error = Some(message.clone());
                let f = Failure {
                    category: Category::Technical,
                    message,
                    status: None,
                    retry_after: None,
                    gone: false,
                };
                return (attempt, Err(f));
            }
        };
        let verdict = match self.app.http.send(request, self.timeout, RESPONSE_KEPT).await {
            Outcome::Response {
                status,
                headers,
                body,
                elapsed,
            } => {
                attempt.status_code = Some(status.as_u16());
                attempt.duration_ms = elapsed.as_millis() as u64;
                attempt.response = String::from_utf8_lossy(&body).into_owned();
                let retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok());
                judge(status.as_u16(), retry_after, now)
            }
            Outcome::Failed {
                error,
                timed_out,
                elapsed,
            } => {
                attempt.duration_ms = elapsed.as_millis() as u64;
                let message = if timed_out { format!("timeout: {error}") } else { error };
                attempt.error = Some(message.clone());
                // An untrusted or mismatched certificate is set-up (ca_file, URL),
                // not an outage; rustls' error reaches us as text inside io errors.
                let category = if message.to_ascii_lowercase().contains("certificate") {
                    Category::Configuration
                } else {
                    Category::External
                };
                Err(Failure {
                    category,
                    message,
                    status: None,
                    retry_after: None,
                    gone: false,
                })
            }
        };
        (attempt, verdict)
    }
}

#[allow(clippy::too_many_arguments)]
fn record(
    txn: &mut Txn,
    id: &str,
    delivered: Vec<(u64, Attempt)>,
    missing: Vec<u64>,
    failed: Option<(u64, Attempt, Failure)>,
    now: Timestamp,
    jitter: f64,
    ctx: &Ctx,
) -> Result<(), StoreError> {
    let name = job_name(id);
    let Some(mut wh) = load(txn, id)? else {
        return jobs::cancel_named(txn, &name);
    };
    // What was handled is the head of the queue, so it goes in one range.
    if let Some(last) = delivered.iter().map(|(s, _)| *s).chain(missing.iter().copied()).max() {
        let mut removed = 0;
        txn.open(WH_QUEUE)?.retain_in((id, 0)..=(id, last), |_, _| {
            removed += 1;
            false
        })?;
        wh.queued = wh.queued.saturating_sub(removed);
    }
    for seq in &missing {
        log(
            txn,
            now,
            &ctx.tz,
            &wh,
            Level::Warn,
            Some(Category::Cascade),
            format!("event #{seq} expired before webhook {id} could deliver it"),
            None,
        )?;
    }
    if !delivered.is_empty() {
        wh.failing_since = None;
        wh.head_attempts = 0;
        wh.last_error = None;
        wh.next_retry_at = None;
    }
    let successes = delivered.len() as u64;
    add_attempts(txn, &mut wh, delivered.iter().map(|(_, a)| a))?;
    if successes > 0 {
        executions::count_success(txn, now, &ctx.tz, &wh.app, "webhook", successes)?;
    }
    match failed {
        None => {
            if wh.state == State::Active && wh.queued > 0 {
                jobs::schedule_named(txn, &name, now, wh.job())?;
            } else {
                jobs::cancel_named(txn, &name)?;
            }
        }
        Some((seq, mut attempt, f)) => {
            wh.head_attempts = attempt.attempt;
            let since = *wh.failing_since.get_or_insert(clock::to_ms(now));
            let error = match f.status {
                Some(s) => format!("{} (HTTP {s})", f.message),
                None => f.message.clone(),
            };
            wh.last_error = Some(error.clone());
            let next = after_failure(clock::from_ms(since), attempt.attempt, now, &f, &ctx.settings, jitter);
            let what = match &next {
                Next::RetryAt(at) => format!("next try at {at}"),
                Next::Disable => "deactivating".into(),
            };
            log(
                txn,
                now,
                &ctx.tz,
                &wh,
                Level::Error,
                Some(f.category),
                format!(
                    "webhook {id}: event {} attempt {}: {error}; {what}",
                    attempt.event_id, attempt.attempt
                ),
                Some(format!(
                    "url: {}; response: {}",
                    wh.url,
                    attempt.response.chars().take(200).collect::<String>()
                )),
            )?;
            if attempt.attempt == 1 && wh.queued > 1 {
                log(
                    txn,
                    now,
                    &ctx.tz,
                    &wh,
                    Level::Warn,
                    Some(Category::Cascade),
                    format!(
                        "webhook {id}: {} later events held back behind event #{seq}",
                        wh.queued - 1
                    ),
                    None,
                )?;
            }
            match next {
                Next::RetryAt(at) => {
                    wh.next_retry_at = Some(clock::to_ms(at));
                    attempt.next_retry_at = Some(clock::to_ms(at));
                    add_attempts(txn, &mut wh, [&attempt])?;
                    jobs::schedule_named(txn, &name, at, wh.job())?;
                }
                Next::Disable => {
                    add_attempts(txn, &mut wh, [&attempt])?;
                    let reason = if f.gone {
                        format!("the receiver answered 410 Gone: {error}")
                    } else {
                        format!(
                            "no success for {}: {error}",
                            humantime::format_duration(ctx.settings.disable_after)
                        )
                    };
                    deactivate(txn, &mut wh, reason, now, ctx)?;
                }
            }
        }
    }
    save(txn, &wh)
}

/// Appends to the attempt log and keeps its newest `ATTEMPTS_KEPT` entries.
fn add_attempts<'a>(
    txn: &Txn,
    wh: &mut Webhook,
    attempts: impl IntoIterator<Item = &'a Attempt>,
) -> Result<(), StoreError> {
    let id = wh.id.as_str();
    let mut t = txn.open(WH_ATTEMPTS)?;
    for attempt in attempts {
        t.insert((id, wh.attempts_seq), store::encode(attempt).as_slice())?;
        wh.attempts_seq += 1;
    }
    if wh.attempts_seq > ATTEMPTS_KEPT {
        t.retain_in((id, 0)..(id, wh.attempts_seq - ATTEMPTS_KEPT), |_, _| false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let s = |n| Duration::from_secs(n);
        Settings {
            timeout: s(15),
            retry_schedule: vec![s(0), s(5), s(300), s(1800), s(7200), s(18000), s(36000), s(36000)],
            disable_after: s(86400),
            buffer_for: s(5 * 86400),
            ca_file: None,
            max_per_host: 16,
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn failure(status: u16) -> Failure {
        judge(status, None, t("2026-11-22T10:00:00Z")).unwrap_err()
    }

    #[test]
    fn statuses_and_categories() {
        let now = t("2026-11-22T10:00:00Z");
        assert!(judge(200, None, now).is_ok() && judge(204, None, now).is_ok());
        assert_eq!(failure(500).category, Category::External);
        assert_eq!(failure(404).category, Category::Configuration);
        assert_eq!(failure(401).category, Category::Configuration);
        assert_eq!(failure(422).category, Category::Mapping);
        assert!(failure(410).gone);
        assert_eq!(
            judge(429, Some("120"), now).unwrap_err().retry_after,
            Some(Duration::from_secs(120))
        );
        let date = judge(503, Some("Sun, 22 Nov 2026 10:01:00 GMT"), now).unwrap_err();
        assert_eq!(date.retry_after, Some(Duration::from_secs(60)));
        assert_eq!(judge(500, Some("120"), now).unwrap_err().retry_after, None);
    }

    #[test]
    fn retries_follow_the_schedule_with_jitter() {
        let s = settings();
        let start = t("2026-11-22T10:00:00Z");
        // After the first attempt failed: the second step, 5 s, ±20 %.
        assert_eq!(
            after_failure(start, 1, start, &failure(500), &s, 0.0),
            Next::RetryAt(t("2026-11-22T10:00:05Z"))
        );
        assert_eq!(
            after_failure(start, 1, start, &failure(500), &s, 1.0),
            Next::RetryAt(t("2026-11-22T10:00:06Z"))
        );
        assert_eq!(
            after_failure(start, 1, start, &failure(500), &s, -1.0),
            Next::RetryAt(t("2026-11-22T10:00:04Z"))
        );
        assert_eq!(
            after_failure(start, 2, start, &failure(500), &s, 0.0),
            Next::RetryAt(t("2026-11-22T10:05:00Z"))
        );
        // Past the end of the schedule, the last step repeats.
        assert_eq!(
            after_failure(start, 20, start, &failure(500), &s, 0.0),
            Next::RetryAt(t("2026-11-22T20:00:00Z"))
        );
        // Retry-After is honoured, up to the longest step.
        let mut busy = failure(429);
        busy.retry_after = Some(Duration::from_secs(600));
        assert_eq!(
            after_failure(start, 1, start, &busy, &s, 0.0),
            Next::RetryAt(t("2026-11-22T10:10:00Z"))
        );
        busy.retry_after = Some(Duration::from_secs(999_999));
        assert_eq!(
            after_failure(start, 1, start, &busy, &s, 0.0),
            Next::RetryAt(t("2026-11-22T20:00:00Z"))
        );
        // 24 h without success, or 410: deactivate.
        assert_eq!(
            after_failure(start, 7, t("2026-11-23T10:00:00Z"), &failure(500), &s, 0.0),
            Next::Disable
        );
        assert_eq!(after_failure(start, 1, start, &failure(410), &s, 0.0), Next::Disable);
    }

    #[test]
    fn the_body_carries_data_verbatim_and_escapes_the_rest() {
        let event = StoredEvent {
            id: "evt_1".into(),
            event: "door \"north\"".into(),
            data: r#"{"b": 1.50, "a": [true]}"#.into(),
            created_at: 1_795_435_200_000,
            account: "erp".into(),
            idempotency_key: None,
        };
        let wh = Webhook::new(
            NewWebhook {
                app: "erp\\main".into(),
                event: "*".into(),
                url: "http://127.0.0.1:1/".into(),
                secret: None,
                created_by: "ops".into(),
                notify: None,
            },
            t("2026-11-23T10:00:00Z"),
        );
        let body = String::from_utf8(delivery_body(&wh, &event)).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["event"], "door \"north\"");
        assert_eq!(parsed["app"], "erp\\main");
        assert_eq!(parsed["created_at"], "2026-11-23T12:00:00Z");
        assert!(body.ends_with(r#","data":{"b": 1.50, "a": [true]}}"#), "{body}");
    }

    #[tokio::test]
    async fn the_attempt_log_keeps_the_newest_entries_of_each_webhook() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _guard) = store::open_for_test(dir.path()).unwrap();
        let attempt = |i: u64| Attempt {
            event_id: format!("evt_{i}"),
            attempt: 1,
            at: 0,
            status_code: Some(200),
            error: None,
            duration_ms: 1,
            next_retry_at: None,
            response: String::new(),
        };
        let now = t("2026-11-23T10:00:00Z");
        let (a, b) = store
            .write(Grows::Yes, move |txn| {
                let new = |url: &str| NewWebhook {
                    app: "erp".into(),
                    event: "*".into(),
                    url: url.into(),
                    secret: None,
                    created_by: "ops".into(),
                    notify: None,
                };
                let mut a = create(txn, now, new("http://127.0.0.1:1/a"))?;
                let mut b = create(txn, now, new("http://127.0.0.1:1/b"))?;
                // Batches as deliveries record them, and single failures.
                for batch in 0..3 {
                    let list: Vec<Attempt> = (batch * 500..batch * 500 + 500).map(attempt).collect();
                    add_attempts(txn, &mut a, &list)?;
                }
                add_attempts(txn, &mut a, [&attempt(1500)])?;
                add_attempts(txn, &mut b, [&attempt(7)])?;
                save(txn, &a)?;
                save(txn, &b)?;
                Ok((a.id, b.id))
            })
            .await
            .unwrap();
        let (kept, more) = store.read(|r| attempts(r, &a, None, 5000)).unwrap();
        assert_eq!((kept.len() as u64, more), (ATTEMPTS_KEPT, None));
        assert_eq!(kept[0].event_id, "evt_1500", "newest first");
        assert_eq!(kept.last().unwrap().event_id, format!("evt_{}", 1501 - ATTEMPTS_KEPT));
        let (other, _) = store.read(|r| attempts(r, &b, None, 10)).unwrap();
        assert_eq!(other.len(), 1, "another webhook's log is left alone");
    }

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            Signer::new(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(valid_secret(&new_secret()));
        assert!(!valid_secret("whsec_short") && !valid_secret("nope"));
    }
}
