//! One run of a schedule: planned (by its job) or "run now" (by the API),
//! never two of one schedule at once. A `pull` run GETs the interface's URL
//! and publishes the items; a `push` run POSTs the matching events since
//! the last 2xx in batches. Every failure is a categorised error line of
//! the run's execution; a run still going after an hour is flagged.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use jiff::Timestamp;

use super::plan::{AnomalyJob, RunJob, anomaly_job};
use super::plan::{Planned, configured, job, job_name, load, save};
use super::rules::{self, Pulled};
use crate::app::App;
use crate::clock;
use crate::config::{Config, Interface, InterfaceKind};
use crate::events::{self, NewEvent, Publisher};
use crate::executions::{self, ANOMALY_AFTER_MS, Category, Execution, Level, LogLine};
use crate::jobs::{self, JobKey, JobKind, Ran};
use crate::mail::{self, Recipient};
use crate::outbound::client::Outcome;
use crate::outbound::{Signer, judge};
use crate::redact;
use crate::store::{Grows, StoreError, Txn};

// The ids and names are stored and pinned (src/golden.rs): never change them.
impl JobKind for RunJob {
    const ID: u32 = 8;
    const NAME: &'static str = "schedule_run";

    fn target(&self) -> String {
        self.host.clone()
    }

    async fn run(self, app: &App, key: JobKey) -> Result<jobs::Ran, StoreError> {
        planned(app, key, self.schedule).await
    }
}
impl JobKind for AnomalyJob {
    const ID: u32 = 9;
    const NAME: &'static str = "run_anomaly";

    async fn run(self, app: &App, key: JobKey) -> Result<jobs::Ran, StoreError> {
        anomaly(app, key, self.execution).await
    }
}

/// Items published per commit.
const PUBLISH_CHUNK: usize = 1000;
/// The part of a failed answer shown in its log line.
const ANSWER_SHOWN: usize = 300;

/// The schedules with a run going in this process.
#[derive(Default)]
pub struct Runs(Arc<Mutex<HashSet<String>>>);

/// A schedule's run slot, held for the length of a run.
pub struct Slot {
    runs: Arc<Mutex<HashSet<String>>>,
    name: String,
}

impl Runs {
    pub fn claim(&self, name: &str) -> Option<Slot> {
        self.0.lock().unwrap().insert(name.to_string()).then(|| Slot {
            runs: self.0.clone(),
            name: name.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.runs.lock().unwrap().remove(&self.name);
    }
}

/// Opens a run in `txn`: its execution, the running mark and the anomaly
/// job, and for a planned run the next slot. `None` when the schedule is
/// gone or a run of it is going.
fn begin(
    txn: &mut Txn,
    name: &str,
    config: &Config,
    now: Timestamp,
    planned: bool,
) -> Result<Option<(Planned, Execution)>, StoreError> {
    let (Some(mut p), Some((s, iface))) = (load(txn, name)?, configured(config, name)) else {
        return Ok(None);
    };
    if p.running.is_some() {
        return Ok(None);
    }
    let kind = iface.map_or("scheduled", |i| i.kind.as_str());
    let exe = executions::start_run(txn, now, &s.interface, kind, name)?;
    p.running = Some((exe.id.clone(), planned));
    if planned {
        p.next_run_at = rules::next_slot(p.next_run_at, p.every_ms, clock::to_ms(now));
        jobs::schedule_named(txn, &job_name(name), clock::from_ms(p.next_run_at), &job(s, config))?;
    }
    save(txn, &p)?;
    let due = clock::from_ms(exe.started_at + ANOMALY_AFTER_MS);
    let flag = AnomalyJob {
        execution: exe.id.clone(),
    };
    jobs::schedule_named(txn, &anomaly_job(&exe.id), due, &flag)?;
    Ok(Some((p, exe)))
}

/// The planned run's job.
pub async fn planned(app: &App, key: JobKey, name: String) -> Result<Ran, StoreError> {
    let settings = app.settings();
    let now = app.clock.now();
    let Some(slot) = app.state::<Runs>().claim(&name) else {
        let skipped = name.clone();
        // A "run now" is going: this slot passes, so runs never overlap.
        app.store
            .write(Grows::No, move |txn| {
                let (Some(mut p), Some((s, _))) = (load(txn, &name)?, configured(&settings, &name)) else {
                    return jobs::finish(txn, key);
                };
                p.next_run_at = rules::next_slot(p.next_run_at, p.every_ms, clock::to_ms(now));
                save(txn, &p)?;
                jobs::schedule_named(txn, &job_name(&name), clock::from_ms(p.next_run_at), &job(s, &settings))
                    .map(|_| ())
            })
            .await?;
        tracing::warn!(
            schedule = %skipped,
            "a planned run was skipped: the previous run of this schedule (planned or started by hand) \
             was still going; runs never overlap"
        );
        return Ok(Ran::Ok);
    };
    let config = settings.clone();
    let n = name.clone();
    let opened = app
        .store
        .write(Grows::Yes, move |txn| {
            let opened = begin(txn, &n, &config, now, true)?;
            if opened.is_none() {
                jobs::finish(txn, key)?;
            }
            Ok(opened)
        })
        .await?;
    let Some((p, exe)) = opened else { return Ok(Ran::Ok) };
    let ok = go(app, &p, &exe.id).await;
    drop(slot);
    Ok(if ok { Ran::Ok } else { Ran::Failed })
}

/// Why a run could not start now.
pub enum NotStarted {
    /// A run of this schedule is going.
    Busy,
    /// No such schedule in the configuration.
    Unknown,
    Store(StoreError),
}

/// "Run now": opens a run at once and makes it in the background; returns
/// its execution id. The planned runs stay as they were.
pub async fn now(app: Arc<App>, name: &str) -> Result<String, NotStarted> {
    let settings = app.settings();
    if configured(&settings, name).is_none() {
        return Err(NotStarted::Unknown);
    }
    let slot = app.state::<Runs>().claim(name).ok_or(NotStarted::Busy)?;
    let now = app.clock.now();
    let n = name.to_string();
    let opened = app
        .store
        .write(Grows::Yes, move |txn| begin(txn, &n, &settings, now, false))
        .await
        .map_err(NotStarted::Store)?;
    let (p, exe) = opened.ok_or(NotStarted::Busy)?;
    let id = exe.id.clone();
    tokio::spawn(async move {
        go(&app, &p, &exe.id).await;
        drop(slot);
    });
    Ok(id)
}

/// Makes the run and ends it; whether it ended `ok`.
async fn go(app: &App, p: &Planned, exe: &str) -> bool {
    if let Err(e) = perform(app, p, exe).await {
        // herald's own fault (the store): say so in the run, if it can be said.
        let line = LogLine {
            at: clock::to_ms(app.clock.now()),
            level: Level::Error,
            category: Some(Category::Technical),
            message: format!("the run stopped: {e}"),
            detail: None,
        };
        let id = exe.to_string();
        if let Err(e) = app
            .store
            .write(Grows::No, move |txn| executions::log_to(txn, &id, line))
            .await
        {
            tracing::error!(execution = exe, error = %e, "cannot log a run's failure");
        }
    }
    let (name, id, now) = (p.name.clone(), exe.to_string(), app.clock.now());
    let ended = app
        .store
        .write(Grows::No, move |txn| {
            let exe = executions::end_run(txn, &id, now)?;
            jobs::cancel_named(txn, &anomaly_job(&id))?;
            if let Some(mut p) = load(txn, &name)?
                && p.running.as_ref().is_some_and(|(e, _)| *e == id)
            {
                p.running = None;
                p.last_execution = Some(id.clone());
                save(txn, &p)?;
            }
            Ok(exe)
        })
        .await;
    match ended {
        Ok(exe) => exe.is_some_and(|e| e.errors == 0),
        Err(e) => {
            tracing::error!(execution = exe, error = %e, "cannot end a run; the next start closes it");
            false
        }
    }
}

/// One line in the run's execution.
async fn log(
    app: &App,
    exe: &str,
    level: Level,
    category: Option<Category>,
    message: String,
    detail: String,
) -> Result<(), StoreError> {
    let line = LogLine {
        at: clock::to_ms(app.clock.now()),
        level,
        category,
        message,
        detail: (!detail.is_empty()).then_some(detail),
    };
    let id = exe.to_string();
    app.store
        .write(Grows::No, move |txn| executions::log_to(txn, &id, line))
        .await
}

async fn perform(app: &App, p: &Planned, exe: &str) -> Result<(), StoreError> {
    let settings = app.settings();
    let Some((s, iface)) = configured(&settings, &p.name) else {
        return Ok(());
    };
    match iface {
        None => {
            log(
                app,
                exe,
                Level::Error,
                Some(Category::Configuration),
                format!(
                    "schedule {} names interface {:?}, which is not a pull or push interface in the configuration",
                    s.name, s.interface
                ),
                String::new(),
            )
            .await
        }
        Some(i) if i.kind == InterfaceKind::Push => push(app, p, i, exe).await,
        Some(i) => pull(app, i, exe, &settings).await,
    }
}

/// A request to the interface's URL, with herald's user agent.
fn request(i: &Interface, method: hyper::Method, body: Bytes) -> Result<hyper::Request<Full<Bytes>>, String> {
    let uri: hyper::Uri = i
        .url
        .parse()
        .map_err(|e| format!("the URL {:?} cannot be used: {e}", redact::url(&i.url)))?;
    let mut req = hyper::Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    req.headers_mut().insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("herald/", env!("CARGO_PKG_VERSION"))),
    );
    Ok(req)
}

/// A failed exchange as (category, message, detail).
fn failure(i: &Interface, outcome: &Outcome, now: Timestamp) -> Option<(Category, String, String)> {
    let url = redact::url(&i.url);
    match outcome {
        Outcome::Response {
            status, headers, body, ..
        } => {
            let retry_after = headers.get("retry-after").and_then(|v| v.to_str().ok());
            let f = judge(status.as_u16(), retry_after, now).err()?;
            let answer: String = redact::excerpt(body).0.chars().take(ANSWER_SHOWN).collect();
            Some((f.category, f.message, format!("url: {url}; answer: {}", answer.trim())))
        }
        Outcome::Failed { error, timed_out, .. } => {
            let category = if error.to_ascii_lowercase().contains("certificate") {
                Category::Configuration
            } else {
                Category::External
            };
            let message = if *timed_out {
                format!("no answer within the interface's timeout ({error})")
            } else {
                error.clone()
            };
            Some((category, message, format!("url: {url}")))
        }
    }
}

async fn pull(app: &App, i: &Interface, exe: &str, settings: &Config) -> Result<(), StoreError> {
    let max = i.max_response;
    let outcome = match request(i, hyper::Method::GET, Bytes::new()) {
        Ok(req) => app.http.send(req, i.timeout, (max as usize).saturating_add(1)).await,
        Err(e) => return log(app, exe, Level::Error, Some(Category::Configuration), e, String::new()).await,
    };
    let now = app.clock.now();
    if let Some((category, message, detail)) = failure(i, &outcome, now) {
        return log(
            app,
            exe,
            Level::Error,
            Some(category),
            format!("GET failed: {message}"),
            detail,
        )
        .await;
    }
    let Outcome::Response {
        status,
        headers,
        body,
        elapsed,
    } = outcome
    else {
        unreachable!("a failure is handled above")
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if body.len() as u64 > max || declared.is_some_and(|n| n > max) {
        let message = format!(
            "the answer is over the interface's max_response ({} bytes); nothing was published",
            max
        );
        let detail = "raise max_response in the interface's configuration, or ask the provider to page".to_string();
        return log(app, exe, Level::Error, Some(Category::Configuration), message, detail).await;
    }
    // The exchange itself, as it went.
    let line = format!(
        "GET {}: {} in {}, {} bytes",
        redact::url(&i.url),
        status.as_u16(),
        executions::took(elapsed),
        body.len()
    );
    let id = exe.to_string();
    app.store
        .write(Grows::No, move |txn| {
            executions::log_successes_to(txn, &id, now, [line])
        })
        .await?;
    let Pulled { items, bad } = match rules::pulled(&body, settings.storage.max_event_size) {
        Ok(p) => p,
        Err(e) => return log(app, exe, Level::Error, Some(Category::Mapping), e, String::new()).await,
    };
    // The skipped items' lines, many to a commit.
    for chunk in bad.chunks(PUBLISH_CHUNK) {
        let at = clock::to_ms(app.clock.now());
        let lines: Vec<LogLine> = chunk
            .iter()
            .map(|(index, f)| LogLine {
                at,
                level: Level::Error,
                category: Some(Category::Mapping),
                message: format!("item {index} skipped: {}: {}", f.field, f.message),
                detail: None,
            })
            .collect();
        let id = exe.to_string();
        app.store
            .write(Grows::Yes, move |txn| {
                lines
                    .into_iter()
                    .try_for_each(|line| executions::log_to(txn, &id, line))
            })
            .await?;
    }
    let total = items.len() + bad.len();
    let account = format!("pull:{}", i.name);
    let (mut new, mut known) = (0u64, 0u64);
    let mut items: Vec<NewEvent> = items.into_iter().map(|(_, e)| e).collect();
    while !items.is_empty() {
        let chunk: Vec<NewEvent> = items.drain(..items.len().min(PUBLISH_CHUNK)).collect();
        let (publisher, settings, account) = (app.state::<Publisher>().clone(), app.settings(), account.clone());
        let now = app.clock.now();
        let created = app
            .store
            .write(Grows::Yes, move |txn| {
                let published = publisher.publish(txn, &account, now, chunk, &settings)?;
                let created = published.iter().filter(|p| p.created).count() as u64;
                Ok((created, published.len() as u64 - created))
            })
            .await?;
        new += created.0;
        known += created.1;
    }
    let message = format!(
        "pulled {total} items: {new} published, {known} published by an earlier run, {} skipped",
        bad.len()
    );
    log(app, exe, Level::Info, None, message, String::new()).await
}

async fn push(app: &App, p: &Planned, i: &Interface, exe: &str) -> Result<(), StoreError> {
    let names: Option<Vec<String>> = (!i.events.iter().any(|e| e == "*")).then(|| i.events.clone());
    // Read with the run's start, in the commit that opened it.
    let mut position = p.position;
    let signer = i.secret.as_deref().map(Signer::new);
    let mut sent = 0u64;
    loop {
        let filter = events::Filter {
            after: position,
            limit: i.batch,
            event: None,
            names: names.as_deref(),
            account: None,
        };
        let (rows, next) = app.store.read(|r| events::list(r, &filter))?;
        let Some(((first, _), (last, _))) = rows.first().zip(rows.last()) else {
            match next {
                // Nothing to send in what was scanned: move past it.
                Some(n) => {
                    position = n;
                    save_position(app, &p.name, position).await?;
                    continue;
                }
                None => break,
            }
        };
        let (first, last) = (*first, *last);
        let mut body = Vec::with_capacity(rows.len() * 160);
        body.push(b'[');
        for (n, (seq, e)) in rows.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            events::write_json(&mut body, *seq, e);
        }
        body.push(b']');
        let key = rules::batch_key(&p.name, first, last);
        let now = app.clock.now();
        let built = request(i, hyper::Method::POST, Bytes::new()).and_then(|mut req| {
            let value = |v: String| HeaderValue::try_from(v).map_err(|e| format!("cannot build the request: {e}"));
            let h = req.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(HeaderName::from_static("idempotency-key"), value(key.clone())?);
            if let Some(signer) = &signer {
                let ts = clock::wall_of(now).as_second();
                h.insert(HeaderName::from_static("webhook-id"), value(key.clone())?);
                h.insert(HeaderName::from_static("webhook-timestamp"), HeaderValue::from(ts));
                h.insert(
                    HeaderName::from_static("webhook-signature"),
                    value(signer.sign(&key, ts, &body))?,
                );
            }
            *req.body_mut() = Full::new(Bytes::from(std::mem::take(&mut body)));
            Ok(req)
        });
        let outcome = match built {
            Ok(req) => app.http.send(req, i.timeout, ANSWER_SHOWN).await,
            Err(e) => return log(app, exe, Level::Error, Some(Category::Configuration), e, String::new()).await,
        };
        if let Some((category, message, detail)) = failure(i, &outcome, app.clock.now()) {
            let message = format!("POST of events #{first} to #{last} ({key}) failed: {message}");
            log(app, exe, Level::Error, Some(category), message, detail).await?;
            let cascade = format!(
                "the events from #{first} on were not sent because of the error above; \
                 the next run sends them again with the same idempotency keys"
            );
            return log(app, exe, Level::Warn, Some(Category::Cascade), cascade, String::new()).await;
        }
        position = next.unwrap_or(last).max(last);
        sent += rows.len() as u64;
        let line = match &outcome {
            Outcome::Response { status, elapsed, .. } => format!(
                "POST of events #{first} to #{last} ({key}, {} events): {} in {}",
                rows.len(),
                status.as_u16(),
                executions::took(*elapsed)
            ),
            Outcome::Failed { .. } => unreachable!("a failure is handled above"),
        };
        let (name, id, now) = (p.name.clone(), exe.to_string(), app.clock.now());
        app.store
            .write(Grows::No, move |txn| {
                set_position(txn, &name, position)?;
                executions::log_successes_to(txn, &id, now, [line])
            })
            .await?;
        if next.is_none() {
            break;
        }
    }
    let message = format!("pushed {sent} events; sent up to #{position}");
    log(app, exe, Level::Info, None, message, String::new()).await
}

fn set_position(txn: &mut Txn, name: &str, position: u64) -> Result<(), StoreError> {
    if let Some(mut p) = load(txn, name)? {
        p.position = position;
        save(txn, &p)?;
    }
    Ok(())
}

async fn save_position(app: &App, name: &str, position: u64) -> Result<(), StoreError> {
    let name = name.to_string();
    app.store
        .write(Grows::No, move |txn| set_position(txn, &name, position))
        .await
}

/// The anomaly job: a run still going an hour after it started gets a
/// `warn` line, and the system recipients one mail.
pub async fn anomaly(app: &App, key: JobKey, execution: String) -> Result<Ran, StoreError> {
    let settings = app.settings();
    let now = app.clock.now();
    app.store
        .write(Grows::No, move |txn| {
            jobs::finish(txn, key)?;
            let exe = executions::get_in(txn, &execution)?;
            let Some(exe) = exe.filter(|e| e.status == executions::Status::Running) else {
                return Ok(());
            };
            let schedule = exe.schedule.clone().unwrap_or_default();
            let line = LogLine {
                at: clock::to_ms(now),
                level: Level::Warn,
                category: None,
                message: "anomaly: this run has been going for more than an hour".into(),
                detail: Some("a run normally takes minutes; check the interface and its counterpart".into()),
            };
            executions::log_to(txn, &execution, line)?;
            let title = format!("run of schedule {schedule} still going after an hour");
            let detail = format!(
                "interface: {}\nexecution: {}\nstarted: {}\nlog: {}/v1/executions/{}/logs",
                exe.interface,
                exe.id,
                clock::rfc3339(exe.started_at),
                settings.server.public_url.trim_end_matches('/'),
                exe.id
            );
            mail::notify(txn, now, &settings.alerts, Recipient::System, &title, &detail).map(|_| ())
        })
        .await?;
    Ok(Ran::Ok)
}
