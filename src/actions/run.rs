//! The shell around the rules: the outbound call (by its job, or at once
//! for a manual retry), the timeout job, and the one commit that applies an
//! input to an action with everything it implies: its jobs, the owner's
//! mail, and the line (or counted success) in the interface's daily
//! execution.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::call;
use super::record::Action;
use super::rules::{self, Called, Closed, Effect, Input, Settings};
use super::stored::{ACTIONS, get, load, save};
use super::stored::{CallJob, TimeoutJob, call_job, timeout_job};
use crate::app::App;
use crate::clock;
use crate::config::{Alerts, Config, Interface, InterfaceKind};
use crate::executions::{self, Category, Level, LogLine};
use crate::jobs::{self, JobKey, JobKind, Ran};
use crate::mail::{self, Recipient};
use crate::outbound::Signer;
use crate::outbound::client::Outcome;
use crate::redact;
use crate::store;
use crate::store::{Grows, StoreError, Txn};
use redb::ReadableTable;

// The ids and names are stored and pinned (src/golden.rs): never change them.
impl JobKind for CallJob {
    const ID: u32 = 6;
    const NAME: &'static str = "action_call";

    fn target(&self) -> String {
        self.host.clone()
    }

    async fn run(self, app: &App, key: JobKey) -> Result<jobs::Ran, StoreError> {
        run_call(app, key, self.id, self.token).await
    }
}
impl JobKind for TimeoutJob {
    const ID: u32 = 7;
    const NAME: &'static str = "action_timeout";

    async fn run(self, app: &App, key: JobKey) -> Result<jobs::Ran, StoreError> {
        run_timeout(app, key, self.id).await
    }
}

/// The kind of the interfaces whose daily executions hold the actions' lines.
pub const INTERFACE_KIND: &str = "action";
/// The part of an answer that is kept for the log.
const RESPONSE_KEPT: usize = 512;
/// A due call job waits this long when a manual retry of its action is
/// being made at that moment (that retry plans the next call anyway).
const BUSY_WAIT: Duration = Duration::from_secs(1);

/// The actions whose call is being made right now in this process, so that
/// a manual retry and the retry job never call at the same time.
#[derive(Default)]
pub struct Calls(Mutex<HashSet<String>>);

/// Holds one action's call slot until dropped.
pub struct Calling<'a> {
    calls: &'a Calls,
    id: String,
}

impl Calls {
    /// The slot of `id`, unless a call of it is being made.
    pub fn claim(&self, id: &str) -> Option<Calling<'_>> {
        self.0.lock().unwrap().insert(id.to_string()).then(|| Calling {
            calls: self,
            id: id.to_string(),
        })
    }
}

impl Drop for Calling<'_> {
    fn drop(&mut self) {
        self.calls.0.lock().unwrap().remove(&self.id);
    }
}

/// The action interface `name` as configured now.
pub fn interface<'a>(config: &'a Config, name: &str) -> Option<&'a Interface> {
    config
        .interfaces
        .iter()
        .find(|i| i.name == name && i.kind == InterfaceKind::Action)
}

/// The rules' settings of an interface; the defaults for one that left the
/// configuration, so its actions still end.
fn settings_of(i: Option<&Interface>) -> Settings {
    match i {
        Some(i) => Settings {
            retry_wait: i.retry_wait,
            action_timeout: i.action_timeout,
            timeout_queue: i.timeout_queue.clone(),
        },
        None => Settings {
            retry_wait: Duration::from_secs(300),
            action_timeout: Duration::from_secs(7200),
            timeout_queue: "timeout".into(),
        },
    }
}

/// What a commit needs besides the transaction.
pub struct Ctx {
    rules: Settings,
    tz: TimeZone,
    alerts: Alerts,
    public_url: String,
    /// The e-mail of the action's creator, for an ended action without owner.
    creator_email: Option<String>,
    /// The outbound call's target, for the call job's concurrency limit.
    host: String,
}

impl Ctx {
    pub fn new(app: &App, settings: &Config, action: &Action) -> Ctx {
        let iface = interface(settings, &action.interface);
        let creator_email = app
            .auth
            .accounts()
            .iter()
            .find(|a| a.name == action.created_by)
            .and_then(|a| a.email.clone());
        Ctx {
            rules: settings_of(iface),
            tz: settings.general.timezone.clone(),
            alerts: settings.alerts.clone(),
            public_url: settings.server.public_url.clone(),
            creator_email,
            host: iface.map_or_else(|| "herald".into(), |i| crate::net::authority(&i.url)),
        }
    }
}

/// How a call went, for the log line beside the rules' input.
pub struct CallReport {
    pub called: Called,
    pub category: Category,
    /// Status and the start of the answer, or what failed.
    pub detail: String,
}

/// The call job: one call of an open action, then its commit.
pub async fn run_call(app: &App, key: JobKey, id: String, token: String) -> Result<Ran, StoreError> {
    let action = app.store.read(|r| get(r, &id))?;
    let Some(action) = action.filter(|a| a.progress.state.open()) else {
        app.store.write(Grows::No, move |txn| jobs::finish(txn, key)).await?;
        return Ok(Ran::Ok);
    };
    let Some(_slot) = app.state::<Calls>().claim(&id) else {
        let due = clock::add(app.clock.now(), BUSY_WAIT);
        app.store
            .write(Grows::No, move |txn| jobs::reschedule(txn, key, due).map(|_| ()))
            .await?;
        return Ok(Ran::Ok);
    };
    let (_, report) = attempt(app, action, token).await?;
    Ok(match report.called {
        Called::Accepted => Ran::Ok,
        Called::Failed { .. } | Called::Refused { .. } => Ran::Failed,
    })
}

/// Makes one call of `action` and commits its outcome; the caller holds the
/// action's call slot. Returns the action after it, and how the call went.
pub async fn attempt(app: &App, action: Action, token: String) -> Result<(Option<Action>, CallReport), StoreError> {
    let settings = app.settings();
    let report = match interface(&settings, &action.interface) {
        Some(i) => make_call(app, &action, &token, i, &settings.server.public_url).await,
        None => CallReport {
            called: Called::Failed {
                message: format!(
                    "interface {:?} is no longer an action interface in the configuration; \
                     add it back (SIGHUP) and the next attempt goes out",
                    action.interface
                ),
                retry_after: None,
            },
            category: Category::Configuration,
            detail: String::new(),
        },
    };
    let ctx = Ctx::new(app, &settings, &action);
    let now = app.clock.now();
    let (called, category, detail) = (report.called.clone(), report.category, report.detail.clone());
    let id = action.id.clone();
    let after = app
        .store
        .write(Grows::No, move |txn| {
            let line = Some((category, detail));
            commit(txn, &id, Input::Called(called), now, &ctx, Some(&token), line).map(|d| d.map(|(a, _)| a))
        })
        .await?;
    Ok((after, report))
}

/// `POST url` with the action's body, signed when the interface has a secret.
async fn make_call(app: &App, action: &Action, token: &str, i: &Interface, public_url: &str) -> CallReport {
    let now = app.clock.now();
    let body = call::body(action, token, public_url);
    let built = (|| -> Result<hyper::Request<Full<Bytes>>, String> {
        let uri: hyper::Uri = i
            .url
            .parse()
            .map_err(|e| format!("the URL {:?} cannot be used: {e}", redact::url(&i.url)))?;
        let mut headers = vec![
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (
                USER_AGENT,
                HeaderValue::from_static(concat!("herald/", env!("CARGO_PKG_VERSION"))),
            ),
        ];
        if let Some(secret) = &i.secret {
            let ts = clock::wall_of(now).as_second();
            let signature = Signer::new(secret).sign(&action.id, ts, &body);
            let value = |v: String| HeaderValue::try_from(v).map_err(|e| format!("cannot build the request: {e}"));
            headers.push((HeaderName::from_static("webhook-id"), value(action.id.clone())?));
            headers.push((HeaderName::from_static("webhook-timestamp"), HeaderValue::from(ts)));
            headers.push((HeaderName::from_static("webhook-signature"), value(signature)?));
        }
        let mut req = hyper::Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = hyper::Method::POST;
        *req.uri_mut() = uri;
        req.headers_mut().extend(headers.into_iter().map(|(k, v)| (Some(k), v)));
        Ok(req)
    })();
    let req = match built {
        Ok(r) => r,
        Err(message) => {
            return CallReport {
                called: Called::Failed {
                    message,
                    retry_after: None,
                },
                category: Category::Configuration,
                detail: String::new(),
            };
        }
    };
    match app.http.send(req, i.timeout, RESPONSE_KEPT).await {
        Outcome::Response {
            status,
            headers,
            body,
            elapsed,
        } => {
            let retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok());
            let (called, category) = call::answered(status.as_u16(), retry_after, now);
            let (answer, _) = redact::excerpt(&body);
            CallReport {
                called,
                category,
                detail: format!(
                    "url: {}; answered {} in {}; answer: {}",
                    redact::url(&i.url),
                    status.as_u16(),
                    executions::took(elapsed),
                    answer.trim()
                ),
            }
        }
        Outcome::Failed { error, timed_out, .. } => {
            // An untrusted certificate is set-up (ca_file, URL), not an outage.
            let category = if error.to_ascii_lowercase().contains("certificate") {
                Category::Configuration
            } else {
                Category::External
            };
            CallReport {
                called: call::unanswered(&error, timed_out),
                category,
                detail: format!("url: {}", redact::url(&i.url)),
            }
        }
    }
}

/// The timeout job: the wait for the callback is over.
pub async fn run_timeout(app: &App, key: JobKey, id: String) -> Result<Ran, StoreError> {
    let action = app.store.read(|r| get(r, &id))?;
    let settings = app.settings();
    let ctx = action.as_ref().map(|a| Ctx::new(app, &settings, a));
    let now = app.clock.now();
    app.store
        .write(Grows::No, move |txn| {
            if let Some(ctx) = ctx {
                commit(txn, &id, Input::TimedOut, now, &ctx, None, None)?;
            }
            jobs::finish(txn, key)
        })
        .await?;
    Ok(Ran::Ok)
}

/// Applies `input` to the action `id` in `txn`: saves it, plans or cancels
/// its jobs, mails the owner when it ended unsuccessfully, and writes its
/// log line. `token` is needed to plan a retry; `call` is the category and
/// detail of a call's outcome. `None` when there is no such action.
pub fn commit(
    txn: &mut Txn,
    id: &str,
    input: Input,
    now: Timestamp,
    ctx: &Ctx,
    token: Option<&str>,
    call: Option<(Category, String)>,
) -> Result<Option<(Action, Effect)>, StoreError> {
    let Some(mut action) = load(txn, id)? else {
        jobs::cancel_named(txn, &call_job(id))?;
        jobs::cancel_named(txn, &timeout_job(id))?;
        return Ok(None);
    };
    let before = action.progress.clone();
    let (progress, effect) = rules::apply(before.clone(), input.clone(), now, &ctx.rules);
    if matches!(effect, Effect::Repeat) || (effect == Effect::Nothing && progress == before) {
        return Ok(Some((action, effect)));
    }
    action.progress = progress;
    if effect != Effect::Conflict {
        action.updated_at = clock::to_ms(now);
        save(txn, &action)?;
    }
    match &effect {
        Effect::RetryAt(at) => {
            let job = CallJob {
                id: id.to_string(),
                token: token.unwrap_or_default().to_string(),
                host: ctx.host.clone(),
            };
            // Without the token no retry can go out; a retry is planned only
            // from a call, which always has it.
            if token.is_some() {
                jobs::schedule_named(txn, &call_job(id), *at, &job)?;
            }
        }
        Effect::TimeoutAt(at) => {
            jobs::cancel_named(txn, &call_job(id))?;
            jobs::schedule_named(txn, &timeout_job(id), *at, &TimeoutJob { id: id.to_string() })?;
        }
        Effect::Ended | Effect::EndedMailOwner => {
            jobs::cancel_named(txn, &call_job(id))?;
            jobs::cancel_named(txn, &timeout_job(id))?;
        }
        Effect::Nothing | Effect::Repeat | Effect::Conflict => {}
    }
    if effect == Effect::EndedMailOwner {
        mail_owner(txn, now, &action, ctx)?;
    }
    log(txn, now, &action, &input, &effect, call, ctx)?;
    Ok(Some((action, effect)))
}

fn mail_owner(txn: &mut Txn, now: Timestamp, action: &Action, ctx: &Ctx) -> Result<(), StoreError> {
    let p = &action.progress;
    let to = match (&action.owner, &ctx.creator_email) {
        (Some(owner), _) => Recipient::Email(owner),
        (None, Some(creator)) => Recipient::Email(creator),
        (None, None) => Recipient::System,
    };
    let title = format!(
        "action {} on {} closed unsuccessfully ({})",
        action.id,
        action.interface,
        action.attempts_text()
    );
    let why = match p.closed {
        Some(Closed::Refused) => "the external system refused the call; trying again would not help",
        Some(Closed::AttemptsLowered) => "the interface's attempts were lowered to what was already made",
        _ => "every attempt failed",
    };
    let mut detail = format!(
        "interface: {}\nattempts: {}\nwhy: {why}\n",
        action.interface,
        action.attempts_text()
    );
    if let Some((at, message)) = &p.last_error {
        detail.push_str(&format!("last error: {} at {}\n", message, clock::rfc3339(*at)));
    }
    detail.push_str(&format!(
        "created by: {}, at {}\nthe action: {}/v1/actions/{}\n",
        action.created_by,
        clock::rfc3339(action.created_at),
        ctx.public_url.trim_end_matches('/'),
        action.id
    ));
    mail::notify(txn, now, &ctx.alerts, to, &title, &detail).map(|_| ())
}

/// The line of a transition in the interface's daily execution: failures,
/// closes, rejections, timeouts, conflicts and callbacks, and an accepted
/// call (a success, counted).
fn log(
    txn: &mut Txn,
    now: Timestamp,
    action: &Action,
    input: &Input,
    effect: &Effect,
    call: Option<(Category, String)>,
    ctx: &Ctx,
) -> Result<(), StoreError> {
    let p = &action.progress;
    let (id, name) = (&action.id, action.interface.as_str());
    let (level, category, message, detail) = match (input, effect) {
        (Input::Called(Called::Accepted), _) => {
            let detail = call.map(|(_, d)| d).unwrap_or_default();
            let line = format!("action {id}: attempt {} accepted; {detail}", p.attempts_made);
            return executions::log_successes(txn, now, &ctx.tz, name, INTERFACE_KIND, [line]);
        }
        (Input::Called(Called::Failed { message, .. } | Called::Refused { message }), _) => {
            let (category, detail) = call.unwrap_or((Category::External, String::new()));
            let next = match (effect, p.next_retry_at) {
                (Effect::RetryAt(_), Some(at)) => format!("next attempt at {}", clock::rfc3339(at)),
                _ if p.closed == Some(Closed::Refused) => "closed: the call was refused; the owner is mailed".into(),
                _ => "closed: no attempt left; the owner is mailed".into(),
            };
            let made = p.attempts_made;
            (
                Level::Error,
                Some(category),
                format!(
                    "action {id}: attempt {made} of {} failed: {message}; {next}",
                    p.attempts_max
                ),
                Some(detail),
            )
        }
        (Input::Callback(cb), Effect::Ended) if cb.success => (
            Level::Info,
            None,
            format!("action {id}: completed by the external system's callback"),
            None,
        ),
        (Input::Callback(cb), Effect::Ended) => (
            Level::Warn,
            None,
            format!(
                "action {id}: rejected by the external system: {}; it is to do for a person",
                cb.reason.as_deref().unwrap_or("no reason given")
            ),
            None,
        ),
        (Input::Callback(_), _) => (
            Level::Warn,
            Some(Category::External),
            format!(
                "action {id}: a callback was refused (409): the action is {} and no longer waits for one",
                p.state.as_str()
            ),
            None,
        ),
        (Input::TimedOut, _) => (
            Level::Warn,
            None,
            format!(
                "action {id}: no callback within the interface's action_timeout; moved to the queue {:?}",
                p.queue.as_deref().unwrap_or_default()
            ),
            None,
        ),
        (Input::AttemptsChanged(max), Effect::EndedMailOwner) => (
            Level::Error,
            Some(Category::Configuration),
            format!(
                "action {id}: closed: the interface's attempts were lowered to {max} and {} were made; \
                 the owner is mailed",
                p.attempts_made
            ),
            None,
        ),
        (Input::AttemptsChanged(_), _) => return Ok(()),
    };
    let line = LogLine {
        at: clock::to_ms(now),
        level,
        category,
        message,
        detail: detail.filter(|d| !d.is_empty()),
    };
    executions::log_daily(txn, now, &ctx.tz, name, INTERFACE_KIND, line).map(|_| ())
}

/// Applies a reloaded `attempts` to the actions of each interface named:
/// open ones go on to the new maximum or close at once, those closed by
/// their attempts show it. Runs in chunks, so the writer is never held long.
pub async fn attempts_changed(app: &App, changes: Vec<(String, u32)>) -> Result<(), StoreError> {
    const CHUNK: usize = 256;
    let ids: Vec<(String, u32)> = app.store.read(|r| {
        let mut ids = Vec::new();
        for row in r.open_table(ACTIONS)?.iter()? {
            let (k, v) = row?;
            let a: Action = store::decode("action", v.value())?;
            let Some((_, max)) = changes.iter().find(|(name, _)| *name == a.interface) else {
                continue;
            };
            let p = &a.progress;
            let concerned = p.state.open() || p.closed == Some(rules::Closed::AttemptsUsed);
            if concerned && p.attempts_max != *max {
                ids.push((k.value().to_string(), *max));
            }
        }
        Ok(ids)
    })?;
    let settings = app.settings();
    for chunk in ids.chunks(CHUNK) {
        let mut batch = Vec::with_capacity(chunk.len());
        for (id, max) in chunk {
            let Some(a) = app.store.read(|r| get(r, id))? else {
                continue;
            };
            batch.push((id.clone(), *max, Ctx::new(app, &settings, &a)));
        }
        let now = app.clock.now();
        app.store
            .write(Grows::No, move |txn| {
                for (id, max, ctx) in &batch {
                    commit(txn, id, Input::AttemptsChanged(*max), now, ctx, None, None)?;
                }
                Ok(())
            })
            .await?;
    }
    Ok(())
}
