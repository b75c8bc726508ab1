//! The ping job: `GET url` (no body) within `notifications.timeout`, then
//! the outcome through the rules (`unacked` + 1, a retry after a failure,
//! suspension) in one transaction with the job's next step, and a line or
//! a counted success in the daily execution of the system's interface.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, USER_AGENT};

use super::plans::{INTERFACE_KIND, Ping, apply, job_name, load};
use super::records;
use super::rules::Input;
use crate::app::App;
use crate::clock;
use crate::executions::{self, Category, Level, LogLine};
use crate::jobs::JobKind;
use crate::jobs::{self, JobKey, Ran};
use crate::outbound::client::Outcome;
use crate::redact;
use crate::store::{Grows, StoreError};

// The id and name are stored and pinned (src/golden.rs): never change them.
impl JobKind for Ping {
    const ID: u32 = 5;
    const NAME: &'static str = "notification_ping";

    fn target(&self) -> String {
        self.host.clone()
    }

    async fn run(self, app: &App, key: JobKey) -> Result<jobs::Ran, StoreError> {
        run(app, key, self.system, self.event).await
    }
}

pub async fn run(app: &App, _key: JobKey, system: String, event: String) -> Result<Ran, StoreError> {
    let name = job_name(&system, &event);
    let n = app.store.read(|r| super::plans::get(r, &system, &event))?;
    let Some(n) = n.filter(|n| n.ping.next_send_at.is_some() && !n.ping.inactive) else {
        app.store
            .write(Grows::No, move |txn| jobs::cancel_named(txn, &name))
            .await?;
        return Ok(Ran::Ok);
    };
    let settings = app.settings();
    let mut answered_with = String::new();
    let failure = match request(&n.url) {
        Err(e) => Some((Category::Configuration, e)),
        Ok(req) => match app.http.send(req, settings.notifications.timeout, 1024).await {
            Outcome::Response { status, elapsed, .. } if status.is_success() => {
                answered_with = format!("{} in {}", status.as_u16(), executions::took(elapsed));
                None
            }
            Outcome::Response { status, .. } => {
                let category = match status.as_u16() {
                    401 | 403 | 404 => Category::Configuration,
                    _ => Category::External,
                };
                Some((category, format!("answered {status}")))
            }
            Outcome::Failed { error, timed_out, .. } => {
                let category = if error.to_ascii_lowercase().contains("certificate") {
                    Category::Configuration
                } else {
                    Category::External
                };
                Some((category, if timed_out { format!("timeout: {error}") } else { error }))
            }
        },
    };
    let now = app.clock.now();
    let answered = failure.is_none();
    app.store
        .write(Grows::No, move |txn| {
            let Some(mut n) = load(txn, &system, &event)? else {
                return jobs::cancel_named(txn, &name);
            };
            if let Some((_, message)) = &failure {
                n.last_error = Some((clock::to_ms(now), message.clone()));
            }
            apply(txn, &mut n, Input::Pinged { answered }, now, &settings)?;
            let tz = &settings.general.timezone;
            let Some((category, message)) = failure else {
                let line = format!(
                    "pinged {} for {event}: {answered_with}; unacked {}",
                    redact::url(&n.url),
                    n.ping.unacked
                );
                return executions::log_successes(txn, now, tz, &system, INTERFACE_KIND, [line]);
            };
            let next = match n.ping.next_send_at {
                Some(at) => format!("next try at {}", clock::rfc3339(at)),
                None if n.ping.suspended => "suspended until a change query or a reactivation".into(),
                None => "no further try".into(),
            };
            let line = LogLine {
                at: clock::to_ms(now),
                level: Level::Error,
                category: Some(category),
                message: format!("ping for {event} failed: {message}; {next}"),
                detail: Some(format!("url: {}; unacked: {}", redact::url(&n.url), n.ping.unacked)),
            };
            executions::log_daily(txn, now, tz, &system, INTERFACE_KIND, line).map(|_| ())
        })
        .await?;
    Ok(if answered { Ran::Ok } else { Ran::Failed })
}

/// `GET url`: no body, herald's user agent; the URL with any non-ASCII
/// character percent-encoded.
fn request(url: &str) -> Result<hyper::Request<Full<Bytes>>, String> {
    let uri: hyper::Uri = records::wire_url(url)
        .parse()
        .map_err(|e| format!("the URL {:?} cannot be used: {e}", redact::url(url)))?;
    let mut req = hyper::Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = uri;
    req.headers_mut().insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("herald/", env!("CARGO_PKG_VERSION"))),
    );
    Ok(req)
}
