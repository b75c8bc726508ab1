//! The delivery job of one webhook: posts the head of its queue and the
//! events behind it in order, then commits what happened (attempts, the
//! next retry, or the deactivation) with the job's next step.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::record::{Attempt, DEACTIVATED_EVENT, State, Webhook, buffer_job_name, get, job_name, load, log, save};
use super::record::{BufferEnd, Deliver};
use super::record::{WH_ATTEMPTS, WH_QUEUE};
use super::rules::{Next, after_failure};
use crate::app::App;
use crate::clock;
use crate::config::Webhooks as Settings;
use crate::events::{self, NewEvent, Publisher, StoredEvent};
use crate::executions::{self, Category, Level};
use crate::jobs;
use crate::jobs::{JobKey, JobKind};
use crate::mail;
use crate::outbound::client::{Outcome, Session, Target};
use crate::outbound::{Failure, Signer, judge};
use crate::redact;
use crate::store::{self, Grows, StoreError, Txn};

// The id and name are stored and pinned (src/golden.rs): never change them.
impl JobKind for Deliver {
    const ID: u32 = 3;
    const NAME: &'static str = "deliver";

    fn target(&self) -> String {
        self.host.clone()
    }

    async fn run(self, app: &App, _key: JobKey) -> Result<jobs::Ran, StoreError> {
        run(app, self.webhook).await
    }
}

/// Attempts kept per webhook for `GET /v1/webhooks/{id}/attempts`.
const ATTEMPTS_KEPT: u64 = 1000;
/// Events one job run delivers before it commits their progress: enough to
/// amortise the commit and the dispatch, few enough that a crash repeats
/// little (deliveries are at least once; receivers dedupe on webhook-id).
const BATCH: usize = 500;
/// Events one run delivers at most (in batches) before it makes way for
/// the other jobs.
const RUN_MAX: usize = 8 * BATCH;
/// The part of a receiver's answer that is kept.
const RESPONSE_KEPT: usize = 1024;

/// Context the delivery job needs from the settings in force.
struct Ctx {
    settings: Settings,
    tz: jiff::tz::TimeZone,
    public_url: String,
    alerts: crate::config::Alerts,
    publisher: Publisher,
    /// All the settings, for the subscribers of the deactivation notice.
    config: std::sync::Arc<crate::config::Config>,
}

/// The delivery job of one webhook: posts the head of its queue and the
/// events behind it, a batch at a time, and commits what happened and what
/// comes next after each batch. The commit of a batch runs while the next
/// one is posted: a replay of a long buffer goes at the receiver's pace,
/// not in steps of post, then wait for the store.
pub async fn run(app: &App, id: String) -> Result<jobs::Ran, StoreError> {
    let name = job_name(&id);
    let (wh, mut heads) = queue_head(app, &id, 0)?;
    let settings = app.settings();
    let ctx = Arc::new(Ctx {
        settings: settings.webhooks.clone(),
        tz: settings.general.timezone.clone(),
        public_url: settings.server.public_url.clone(),
        alerts: settings.alerts.clone(),
        publisher: app.state::<Publisher>().clone(),
        config: settings.clone(),
    });
    let Some(wh) = wh.filter(|w| w.state == State::Active) else {
        app.store
            .write(Grows::No, move |txn| jobs::cancel_named(txn, &name))
            .await?;
        return Ok(jobs::Ran::Ok);
    };

    let poster = Poster::new(app, &wh, ctx.settings.timeout);
    let mut session = poster.session();
    let (mut started, mut handled) = (false, 0);
    let (mut successes, mut failures) = (0, 0);
    // The commit of the batch before, while this one is posted.
    let mut recording = None;
    loop {
        let mut delivered: Vec<(u64, Attempt)> = Vec::new();
        let mut missing: Vec<u64> = Vec::new();
        let mut failed: Option<(u64, Attempt, Failure)> = None;
        let (full, last) = (heads.len() == BATCH, heads.last().map(|(seq, _)| *seq));
        let mut batch = heads.into_iter().peekable();
        // The next POST, built while the one before it was in flight.
        let mut ahead: Option<(u64, Prepared)> = None;
        loop {
            let (seq, prepared) = match ahead.take() {
                Some(next) => next,
                None => match batch.next() {
                    None => break,
                    Some((seq, None)) => {
                        missing.push(seq);
                        started = true;
                        continue;
                    }
                    Some((seq, Some(event))) => (seq, poster.prepare(&event, !started)),
                },
            };
            started = true;
            // Only a present event is built ahead: an expired one is taken
            // off the queue only once the events before it are delivered.
            let build_next = || {
                let (seq, event) = batch.next_if(|(_, event)| event.is_some())?;
                Some((seq, poster.prepare(event.as_ref()?, false)))
            };
            let ((attempt, verdict), next) = poster.post(session.as_mut(), prepared, build_next).await;
            ahead = next;
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
        successes += delivered.len() as u64;
        failures += u64::from(failed.is_some());
        handled += delivered.len() + missing.len();
        // The next batch, unless this run ends here. The webhook as it is
        // now: changed or stopped, the next run takes it.
        let mut next = Vec::new();
        if let Some(last) = last.filter(|_| failed.is_none() && full && handled < RUN_MAX) {
            let (now_wh, after) = queue_head(app, &wh.id, last + 1)?;
            if now_wh.is_some_and(|w| w.state == State::Active && w.url == wh.url && w.secret == wh.secret) {
                next = after;
            }
        }
        // The last commit of the run says what comes next (the job again,
        // or not): before it, the run still holds the queue's head.
        let ends = next.is_empty();
        if ends {
            // The connection goes back to the pool before the commit that
            // may start the next run (a new event, the other webhooks on
            // the same receiver) is queued, not once it is done: that run
            // would find the pool empty and connect again.
            session = None;
        }
        // Redone safely after a crash (deliveries are at least once, receivers
        // dedupe on webhook-id): no fsync of its own.
        let (id, ctx) = (id.clone(), ctx.clone());
        let record = app
            .store
            .queue_progress(Grows::No, move |txn| {
                record(txn, &id, delivered, missing, failed, now, jitter, ends, &ctx)
            })
            .await?;
        if let Some(before) = recording.replace(record) {
            before.await?;
        }
        if ends {
            break;
        }
        heads = next;
    }
    if let Some(record) = recording {
        record.await?;
    }
    app.metrics.deliveries(&wh.id, successes, failures);
    Ok(if failures > 0 { jobs::Ran::Failed } else { jobs::Ran::Ok })
}

/// The webhook, and up to a batch of its queue from `from` on, with the events.
#[allow(clippy::type_complexity)]
fn queue_head(
    app: &App,
    id: &str,
    from: u64,
) -> Result<(Option<Webhook>, Vec<(u64, Option<StoredEvent>)>), StoreError> {
    app.store.read(|r| {
        let Some(wh) = get(r, id)? else {
            return Ok((None, Vec::new()));
        };
        let queue = r.open_table(WH_QUEUE)?;
        let mut seqs = Vec::new();
        for row in queue.range((id, from)..=(id, u64::MAX))?.take(BATCH) {
            seqs.push(row?.0.value().1);
        }
        Ok((Some(wh), events::get_many(r, &seqs)?))
    })
}

/// The delivery body, `{"id","event","app","created_at","data"}`, with
/// `data` copied as stored (no re-parse: it was checked at publish).
fn delivery_body(wh: &Webhook, event: &StoredEvent) -> Vec<u8> {
    let data = event.data();
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
    target: Result<Target, String>,
    signer: Signer,
    timeout: Duration,
}

/// One event's POST, built before it is sent: the run builds the next one
/// while the one before is in flight.
struct Prepared {
    now: Timestamp,
    attempt: Attempt,
    request: Result<hyper::Request<Full<Bytes>>, String>,
}

impl<'a> Poster<'a> {
    fn new(app: &'a App, wh: &'a Webhook, timeout: Duration) -> Poster<'a> {
        let shown = redact::url(&wh.url);
        let target = wh
            .url
            .parse::<hyper::Uri>()
            .map_err(|e| e.to_string())
            // The reason may quote the URL: never with its credentials.
            .and_then(|url| Target::of(&url).map_err(|e| e.replace(&url.to_string(), &shown)))
            .map_err(|e| format!("the URL {shown:?} cannot be used: {e}"));
        Poster {
            app,
            wh,
            target,
            signer: Signer::new(&wh.secret),
            timeout,
        }
    }

    /// The run's connection to the receiver; none when the URL is unusable.
    fn session(&self) -> Option<Session<'a>> {
        self.target.as_ref().ok().map(|t| self.app.http.session(t))
    }

    /// The POST of one event, signed, and its attempt record so far.
    fn prepare(&self, event: &StoredEvent, first_in_run: bool) -> Prepared {
        use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
        let now = self.app.clock.now();
        let timestamp = clock::wall_of(now).as_second();
        let attempt = Attempt {
            event_id: event.id.clone(),
            attempt: if first_in_run { self.wh.head_attempts + 1 } else { 1 },
            at: clock::to_ms(now),
            status_code: None,
            error: None,
            duration_ms: 0,
            next_retry_at: None,
            response: String::new(),
        };
        let request = self.target.as_ref().map_err(Clone::clone).and_then(|target| {
            let body = delivery_body(self.wh, event);
            let signature = self.signer.sign(&event.id, timestamp, &body);
            let value = |v: String| HeaderValue::try_from(v).map_err(|e| format!("cannot build the request: {e}"));
            let mut req = hyper::Request::new(Full::new(Bytes::from(body)));
            *req.method_mut() = hyper::Method::POST;
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
            target.address(&mut req);
            Ok(req)
        });
        Prepared { now, attempt, request }
    }

    /// Sends a prepared POST; the attempt record and the verdict, and what
    /// `meanwhile` made while the POST was in flight.
    async fn post<T>(
        &self,
        session: Option<&mut Session<'a>>,
        prepared: Prepared,
        meanwhile: impl FnOnce() -> T,
    ) -> ((Attempt, Result<(), Failure>), T) {
        let Prepared {
            now,
            mut attempt,
            request,
        } = prepared;
        let (request, session) = match (request, session) {
            (Ok(request), Some(session)) => (request, session),
            (request, _) => {
                // No session is there only when the URL is unusable, and
                // then neither is any request.
                let message = request.err().unwrap_or_else(|| "the URL cannot be used".into());
                attempt.error = Some(message.clone());
                let f = Failure {
                    category: Category::Technical,
                    message,
                    status: None,
                    retry_after: None,
                    gone: false,
                };
                return ((attempt, Err(f)), meanwhile());
            }
        };
        let (outcome, made) = session.exchange(request, self.timeout, RESPONSE_KEPT, meanwhile).await;
        let verdict = match outcome {
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
        ((attempt, verdict), made)
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
    ends_run: bool,
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
    add_attempts(txn, &mut wh, delivered.iter().map(|(_, a)| a))?;
    if !delivered.is_empty() {
        let lines = delivered.iter().map(|(seq, a)| {
            format!(
                "{} delivered {} (#{seq}): {} in {}",
                wh.id,
                a.event_id,
                a.status_code.unwrap_or(200),
                executions::took(Duration::from_millis(a.duration_ms))
            )
        });
        executions::log_successes(txn, now, &ctx.tz, &wh.app, "webhook", lines)?;
    }
    match failed {
        // The run goes on with the next batch: it is the job still.
        None if !ends_run => {}
        None => {
            if wh.state == State::Active && wh.queued > 0 {
                jobs::schedule_named(txn, &name, now, &wh.job())?;
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
                Next::RetryAt(at) => format!("next try at {}", clock::fmt(*at)),
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
                    redact::url(&wh.url),
                    redact::excerpt(attempt.response.as_bytes())
                        .0
                        .chars()
                        .take(200)
                        .collect::<String>()
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
                    jobs::schedule_named(txn, &name, at, &wh.job())?;
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
        &BufferEnd { webhook: wh.id.clone() },
    )?;
    let since = wh.failing_since.map(clock::rfc3339).unwrap_or_default();
    let until = clock::fmt(until);
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
        redact::url(&wh.url),
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
        "webhook": wh.id, "app": wh.app, "url": redact::url(&wh.url), "event": wh.event,
        "reason": reason, "disabled_at": clock::rfc3339(clock::to_ms(now)),
    });
    let internal = NewEvent {
        event: DEACTIVATED_EVENT.into(),
        data: data.to_string(),
        idempotency_key: None,
    };
    save(txn, wh)?;
    let published = ctx.publisher.publish(txn, "herald", now, vec![internal], &ctx.config)?;
    // A webhook does not buffer the notice of its own deactivation.
    let mut queue = txn.open(WH_QUEUE)?;
    for p in &published {
        queue.remove((wh.id.as_str(), p.seq))?;
    }
    drop(queue);
    save(txn, wh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::{NewWebhook, attempts, create};

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
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
        assert_eq!(parsed["created_at"], "2026-11-23T12:00:00.000Z");
        assert!(body.ends_with(r#","data":{"b": 1.50, "a": [true]}}"#), "{body}");
    }

    #[tokio::test]
    async fn the_attempt_log_keeps_the_newest_entries_of_each_webhook() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _guard) = crate::test_store(dir.path()).unwrap();
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
}
