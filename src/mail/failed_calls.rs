//! A failed call to herald's API: a line in the daily execution of the
//! built-in interface `api`, and an entry in the error mail to the caller's
//! account. Both show the call as received, with secrets blanked out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::{Method, StatusCode, header};
use jiff::Timestamp;
use tokio::sync::mpsc;

use super::outbox::{Entry, Kind, gather};
use crate::app::App;
use crate::clock;
use crate::executions::{self, Category, Level, LogLine};
use crate::http::{ApiError, Call};
use crate::redact;
use crate::store::Grows;

/// Records failed calls: in the daily execution of interface `api`, and,
/// when the caller authenticated, in the error mail to its account's address
/// (any 4xx but 429, any 5xx). A caller nobody could identify gets no line
/// of its own: such calls are counted and logged at most once a minute, so
/// a stranger cannot fill the log or the disk. Calls refused for rate
/// limiting or while draining are not written at all.
pub struct FailedCalls {
    /// A `std` mutex: held to count, never across `.await`.
    unidentified: Mutex<Tally>,
    /// To the task that writes them, in order.
    queue: mpsc::Sender<Failure>,
}

/// What is written of one failed call.
struct Failure {
    now: Timestamp,
    line: LogLine,
    /// The error mail's entry: (account, address, entry).
    mail: Option<(String, String, Entry)>,
}

/// Failed calls waiting to be written; beyond, they are dropped.
const QUEUE: usize = 1024;

#[derive(Default)]
struct Tally {
    /// When the last line about them was written.
    logged_at: Option<Timestamp>,
    /// Calls since then.
    count: u64,
}

/// At most one line a minute about calls without valid credentials.
const SAMPLE_EVERY: Duration = Duration::from_secs(60);

impl FailedCalls {
    /// Starts the task that writes the failed calls of `app`'s API.
    pub fn start(app: Arc<App>) -> FailedCalls {
        let (queue, mut rx) = mpsc::channel::<Failure>(QUEUE);
        tokio::spawn(async move {
            while let Some(f) = rx.recv().await {
                write(&app, f).await;
            }
        });
        FailedCalls {
            unidentified: Mutex::default(),
            queue,
        }
    }

    pub fn record(&self, app: &Arc<App>, call: &Call, e: &ApiError) {
        let (method, who, peer, excerpt) = (
            &call.parts.method,
            call.account.as_ref(),
            call.peer,
            call.excerpt.as_ref(),
        );
        // As it is logged and mailed: secrets in the query (the reactivation
        // link's token) are blanked out.
        let target = redact::target(&call.parts.uri);
        let target = target.as_str();
        let account = who.map_or("-", |a| a.name.as_str());
        let quiet = e.status == StatusCode::TOO_MANY_REQUESTS
            || matches!(e.code, "shutting_down" | "storage_full" | "storage_unavailable");
        // A browser asks for a page without credentials first; the 401 makes
        // it ask the person for them. That is no error.
        let challenge = who.is_none()
            && e.status == StatusCode::UNAUTHORIZED
            && call.header(header::AUTHORIZATION).is_none()
            && *method == Method::GET
            && (call.parts.uri.path() == "/" || call.parts.uri.path().starts_with("/ui/"));
        // A 409 to a person (a button pressed twice, a run already going, a
        // reactivation link used after the webhook came back) tells them how
        // things stand; it is no failed integration call, and a link's
        // caller is no stranger without credentials.
        let person = who.map_or_else(
            || call.query.get("token").is_some() || call.parts.uri.path().starts_with("/ui/"),
            |a| a.role != crate::config::Role::Integration,
        );
        let conflict = e.status == StatusCode::CONFLICT && person;
        if quiet || challenge || conflict {
            tracing::debug!(%method, target, status = e.status.as_u16(), %peer, "request refused");
            return;
        }
        let now = app.clock.now();
        let title = format!("{method} {target} → {} {}", e.status.as_u16(), e.code);
        let mut message = format!("{title}: {}", e.message);
        if who.is_none() {
            let Some((count, since)) = self.count_unidentified(now) else {
                return;
            };
            if let Some(since) = since {
                message = format!(
                    "{count} calls without valid credentials since {}; the last: {message}",
                    clock::fmt(since)
                );
            }
        }
        tracing::info!(%method, target, status = e.status.as_u16(), code = e.code, account, %peer, "request failed");
        let line = LogLine {
            at: clock::to_ms(now),
            level: Level::Error,
            category: Some(category(e)),
            message,
            detail: Some(format!("account: {account}; from: {}", peer.ip())),
        };
        let mail = match who {
            Some(a) => match &a.email {
                Some(email) => {
                    let mut detail = format!("error: {}\nfrom: {}", e.message, peer.ip());
                    if let Some((body, reserialised)) = excerpt.map(|b| redact::excerpt(b)) {
                        let how = if reserialised { "re-serialised" } else { "as received" };
                        detail.push_str(&format!("\nbody ({how}, secrets redacted): {body}"));
                    }
                    let entry = Entry {
                        at: clock::to_ms(now),
                        title,
                        detail,
                    };
                    Some((a.name.clone(), email.clone(), entry))
                }
                None => {
                    tracing::debug!(account = a.name, "the account has no e-mail address; no error mail");
                    None
                }
            },
            _ => None,
        };
        // In the order the calls failed: one after the other, off the request.
        if self.queue.try_send(Failure { now, line, mail }).is_err() {
            tracing::debug!("too many failed calls at once; this one is not recorded");
        }
    }

    /// Counts a call nobody could identify; when it is the first, or a
    /// minute passed since the last line, returns the count to log and when
    /// that last line was.
    fn count_unidentified(&self, now: Timestamp) -> Option<(u64, Option<Timestamp>)> {
        let mut tally = self.unidentified.lock().unwrap();
        tally.count += 1;
        if tally.logged_at.is_some_and(|at| now < clock::add(at, SAMPLE_EVERY)) {
            return None;
        }
        let sample = (tally.count, tally.logged_at.replace(now));
        tally.count = 0;
        Some(sample)
    }
}

async fn write(app: &App, f: Failure) {
    let Failure { now, line, mail } = f;
    let settings = app.settings();
    if let Some((account, email, entry)) = mail {
        // Allowed when the store is full: that is when the admins must hear of it.
        let alerts = settings.alerts.clone();
        let gathered = app
            .store
            .write(Grows::No, move |txn| {
                gather(txn, now, &alerts, Kind::ApiFailures { account }, &email, entry)
            })
            .await;
        if let Err(err) = gathered
            && !err.is_state()
        {
            tracing::error!(error = %err, "cannot record a failed call for the error mail");
        }
    }
    let tz = settings.general.timezone.clone();
    let written = app
        .store
        .write(Grows::Yes, move |txn| {
            executions::log_daily(txn, now, &tz, executions::API, "api", line)
        })
        .await;
    if let Err(err) = written
        && !err.is_state()
    {
        tracing::warn!(error = %err, "cannot record a failed call in the execution log");
    }
}

/// The execution-log category of a failed call to herald's API.
fn category(e: &ApiError) -> Category {
    match e.status.as_u16() {
        401 | 403 | 404 | 405 | 429 => Category::Configuration,
        400..=499 => Category::Mapping,
        _ => Category::Technical,
    }
}
