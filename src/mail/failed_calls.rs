//! A failed call to herald's API: a line in the daily execution of the
//! built-in interface `api`, and an entry in the error mail to the caller's
//! account. Both show the call as received, with secrets blanked out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::{Method, StatusCode, header};
use jiff::Timestamp;
use serde_json::Value;

use super::{Entry, Kind, gather};
use crate::App;
use crate::clock;
use crate::executions::{self, Category, Level, LogLine};
use crate::http::{ApiError, Call};
use crate::store::Grows;

/// Records failed calls: in the daily execution of interface `api`, and,
/// when the caller authenticated, in the error mail to its account's address
/// (any 4xx but 429, any 5xx). A caller nobody could identify gets no line
/// of its own: such calls are counted and logged at most once a minute, so
/// a stranger cannot fill the log or the disk. Calls refused for rate
/// limiting or while draining are not written at all.
#[derive(Default)]
pub struct FailedCalls {
    /// A `std` mutex: held to count, never across `.await`.
    unidentified: Mutex<Tally>,
}

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
    pub fn record(&self, app: &Arc<App>, call: &Call, e: &ApiError) {
        let (method, who, peer, excerpt) = (
            &call.parts.method,
            call.account.as_ref(),
            call.peer,
            call.excerpt.as_ref(),
        );
        // As it is logged and mailed: secrets in the query (the reactivation
        // link's token) are blanked out.
        let target = redacted_target(&call.parts.uri);
        let target = target.as_str();
        let account = who.map_or("-", |a| a.name.as_str());
        let quiet = e.status == StatusCode::TOO_MANY_REQUESTS || e.code == "shutting_down";
        // A browser asks for a page without credentials first; the 401 makes
        // it ask the person for them. That is no error.
        let challenge = who.is_none()
            && e.status == StatusCode::UNAUTHORIZED
            && call.header(header::AUTHORIZATION).is_none()
            && *method == Method::GET
            && call.parts.uri.path() == "/";
        if quiet || challenge {
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
                message = format!("{count} calls without valid credentials since {since}; the last: {message}");
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
                    if let Some(body) = excerpt.map(|b| redacted_excerpt(b)) {
                        detail.push_str(&format!("\nbody: {body}"));
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
        let app = app.clone();
        tokio::spawn(async move {
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
                if let Err(err) = gathered {
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
            if let Err(err) = written {
                tracing::warn!(error = %err, "cannot record a failed call in the execution log");
            }
        });
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

/// The path and query of a request, with the values of secret-looking
/// query parameters replaced by `[redacted]`.
fn redacted_target(uri: &hyper::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_name(k) => format!("{k}=[redacted]"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{}?{}", uri.path(), parts.join("&"))
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|s| name.contains(s))
}

/// Names whose values never leave herald: not in mails, not in logs.
const SECRET_NAMES: [&str; 8] = [
    "secret",
    "password",
    "passwd",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "credential",
];
const EXCERPT_BYTES: usize = 2048;

/// The first 2 KiB of a request body, with the values of secret-looking
/// fields replaced by `[redacted]`.
fn redacted_excerpt(body: &[u8]) -> String {
    fn redact(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if is_secret_name(k) {
                        *v = Value::String("[redacted]".into());
                    } else {
                        redact(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(redact),
            _ => {}
        }
    }
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            redact(&mut v);
            v.to_string()
        }
        // Not JSON: it was refused before any field was read; show the raw
        // start, but never anything that looks like one of our secrets.
        Err(_) => String::from_utf8_lossy(body)
            .split_whitespace()
            .map(|w| {
                if w.contains("whsec_") || w.contains("hrl_") {
                    "[redacted]"
                } else {
                    w
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
    };
    if text.len() <= EXCERPT_BYTES {
        return text;
    }
    let mut end = EXCERPT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], body.len())
}

/// The execution-log category of a failed call to herald's API.
fn category(e: &ApiError) -> Category {
    match e.status.as_u16() {
        401 | 403 | 404 | 405 | 429 => Category::Configuration,
        400..=499 => Category::Mapping,
        _ => Category::Technical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_hide_secrets_and_stop_at_2_kib() {
        let body = br#"{"url":"https://x.io","secret":"whsec_abc","auth":{"Password":"p","user":"u"},"api_token":"t"}"#;
        let e = redacted_excerpt(body);
        assert!(
            !e.contains("whsec_abc") && !e.contains("\"p\"") && !e.contains("\"t\""),
            "{e}"
        );
        assert!(e.contains("https://x.io") && e.contains("\"user\":\"u\""), "{e}");
        let long = format!(r#"{{"data":"{}"}}"#, "é".repeat(3000));
        let e = redacted_excerpt(long.as_bytes());
        assert!(
            e.len() < EXCERPT_BYTES + 40 && e.ends_with("bytes in all)"),
            "{}",
            e.len()
        );
        assert_eq!(redacted_excerpt(b"not json whsec_zzz"), "not json [redacted]");
    }

    #[test]
    fn targets_hide_secret_query_parameters() {
        let uri: hyper::Uri = "/v1/webhooks/wh_1/activate?token=abc123&x=1&api_key=k".parse().unwrap();
        assert_eq!(
            redacted_target(&uri),
            "/v1/webhooks/wh_1/activate?token=[redacted]&x=1&api_key=[redacted]"
        );
        let plain: hyper::Uri = "/v1/events?after=5".parse().unwrap();
        assert_eq!(redacted_target(&plain), "/v1/events?after=5");
    }
}
