//! The status page (`GET /`): what a field technician opens first. Plain
//! server-rendered HTML, no scripts, problems at the top, links to the JSON
//! endpoints for the details.

use std::fmt::Write;
use std::sync::Arc;

use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use jiff::Timestamp;

use crate::App;
use crate::actions::rules::{State as ActionState, TodoReason};
use crate::actions::{self, Action};
use crate::auth::{Access, READERS};
use crate::clock;
use crate::executions::{self, Execution, Status};
use crate::html::{escape, page};
use crate::http::{self, ApiError, Call, Resp, Route};
use crate::mail;
use crate::notifications::{self, Notification};
use crate::store::StoreError;
use crate::webhooks::{self, Webhook};

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/", Access::Roles(READERS), |app, call| {
            Box::pin(status_page(app, call))
        }),
        // Browsers ask for it with every page; a 404 would read as an error.
        Route::new(Method::GET, "/favicon.ico", Access::Public, |_, _| {
            Box::pin(async { Ok(favicon()) })
        }),
    ]
}

const FAVICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\">\
    <circle cx=\"8\" cy=\"8\" r=\"8\" fill=\"#246\"/><path d=\"M5 3v10M11 3v10M5 8h6\" \
    stroke=\"#fff\" stroke-width=\"2\"/></svg>";

fn favicon() -> Resp {
    let mut r = http::with_type(StatusCode::OK, FAVICON.into(), "image/svg+xml");
    let day = HeaderValue::from_static("max-age=86400");
    r.headers_mut().insert(header::CACHE_CONTROL, day);
    r
}

async fn status_page(app: &Arc<App>, _: &mut Call) -> Result<Resp, ApiError> {
    Ok(crate::html::response(StatusCode::OK, render(app)?))
}

/// Rows shown per table; the JSON endpoints page through the rest.
const ROWS: usize = 20;

fn local(ms: i64, tz: &jiff::tz::TimeZone) -> String {
    clock::from_ms(ms)
        .to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// Each notification: system, event, URL (secrets masked), its state, the
/// pings not yet answered by a change query, the last and next ping, the
/// last error.
fn notifications_table(notes: &[&Notification], tz: &jiff::tz::TimeZone) -> String {
    let mut b = String::from(
        "<table><tr><th>System</th><th>Event</th><th>URL</th><th>State</th><th>Unacked</th>\
         <th>Last ping</th><th>Next ping</th><th>Last error</th></tr>",
    );
    for n in notes {
        let (cls, state) = match (&n.ping, &n.last_error) {
            (p, _) if p.inactive => ("", "inactive"),
            (p, _) if p.suspended => ("ko", "suspended"),
            (p, Some(_)) if p.retry => ("warn", "failing"),
            _ => ("ok", "active"),
        };
        let _ = write!(
            b,
            "<tr><td>{system}</td><td>{event}</td><td>{url}</td><td class=\"{cls}\">{state}</td><td>{unacked}</td>\
             <td>{last}</td><td>{next}</td><td>{error}</td></tr>",
            system = escape(&n.system),
            event = escape(&n.event),
            url = escape(&crate::redact::url(&n.url)),
            unacked = n.ping.unacked,
            last = n.ping.last_sent_at.map(|t| local(t, tz)).unwrap_or_default(),
            next = n.ping.next_send_at.map(|t| local(t, tz)).unwrap_or_default(),
            error = n
                .last_error
                .as_ref()
                .map(|(at, m)| format!("{} {}", local(*at, tz), escape(m)))
                .unwrap_or_default(),
        );
    }
    b.push_str("</table>");
    b
}

fn status_cell(e: &Execution) -> String {
    match (e.status, e.errors) {
        (Status::Ko, n) => format!("<span class=\"ko\">KO</span> ({n} errors)"),
        (Status::Ok, _) => "<span class=\"ok\">OK</span>".into(),
        (Status::Running, 0) => "running".into(),
        (Status::Running, n) => format!("running, <span class=\"ko\">{n} errors</span>"),
    }
}

/// Actions that wait for a person: retrying ("attempt N of M", the last
/// error and the next try), closed, or to do (with the reason and queue).
fn actions_table(acts: &[Action], total: u64, tz: &jiff::tz::TimeZone) -> String {
    let mut b = String::from(
        "<table><tr><th>Action</th><th>Interface</th><th>State</th><th>Attempts</th><th>Last error</th>\
         <th>Next try / queue</th></tr>",
    );
    for a in acts {
        let p = &a.progress;
        let (cls, state) = match p.state {
            ActionState::Retrying => ("warn", "retrying".to_string()),
            ActionState::Todo => (
                "warn",
                match p.todo {
                    Some(TodoReason::Timeout) => "to do: no answer in time".to_string(),
                    _ => format!(
                        "to do: rejected ({})",
                        p.callback
                            .as_ref()
                            .and_then(|c| c.reason.as_deref())
                            .unwrap_or("no reason")
                    ),
                },
            ),
            _ => ("ko", "closed, unsuccessful".to_string()),
        };
        let next = match (p.next_retry_at, &p.queue) {
            (Some(t), _) if p.state == ActionState::Retrying => local(t, tz),
            (_, Some(q)) => format!("queue {}", escape(q)),
            _ => String::new(),
        };
        let _ = write!(
            b,
            "<tr><td><a href=\"/v1/actions/{id}\"><code>{id}</code></a></td><td>{i}</td><td class=\"{cls}\">{st}</td>\
             <td>{n}</td><td>{err}</td><td>{next}</td></tr>",
            id = escape(&a.id),
            i = escape(&a.interface),
            st = escape(&state),
            n = a.attempts_text(),
            err = p
                .last_error
                .as_ref()
                .map(|(at, m)| format!("{} ({})", escape(m), local(*at, tz)))
                .unwrap_or_default(),
        );
    }
    if total > acts.len() as u64 {
        let _ = write!(
            b,
            "<tr><td colspan=\"6\">and {} more: <a href=\"/v1/actions?state=retrying\">retrying</a>, \
             <a href=\"/v1/actions?state=closed\">closed</a>, <a href=\"/v1/actions?state=todo\">to do</a></td></tr>",
            total - acts.len() as u64
        );
    }
    b.push_str("</table>");
    b
}

fn render(app: &App) -> Result<String, StoreError> {
    let settings = app.settings();
    let tz = &settings.general.timezone;
    let now: Timestamp = app.clock.now();
    let (interfaces, troubled, hooks, mails, notes, events_stored, (acts, acts_total)) = app.store.read(|r| {
        let interfaces = executions::interfaces(r)?;
        let filter = executions::Filter {
            interface: None,
            status: None,
            after: None,
            limit: 500,
        };
        let (recent, _) = executions::list(r, &filter)?;
        let troubled: Vec<Execution> = recent.into_iter().filter(|e| e.errors > 0).take(ROWS).collect();
        let hooks = webhooks::list(r)?;
        let (mails, _) = mail::list(
            r,
            &mail::Filter {
                state: None,
                after: None,
                limit: ROWS,
            },
        )?;
        let notes = notifications::list(r, None)?;
        Ok((
            interfaces,
            troubled,
            hooks,
            mails,
            notes,
            crate::events::count(r)?,
            actions::attention(r, ROWS)?,
        ))
    })?;
    let mut b = String::new();
    let ready = app.ready.load(std::sync::atomic::Ordering::Relaxed);
    let _ = write!(
        b,
        "<p>Gateway <b>{gw}</b>, herald {ver}. Now {now}. {state}. Store {size}{full}; {events} events kept.</p>",
        gw = escape(&settings.general.name),
        ver = env!("CARGO_PKG_VERSION"),
        now = local(clock::to_ms(now), tz),
        state = if ready {
            "<span class=\"ok\">Running</span>"
        } else {
            "<span class=\"warn\">Starting or stopping</span>"
        },
        size = bytesize::ByteSize(app.store.file_bytes()).display().iec_short(),
        full = if app.store.is_full() {
            " <span class=\"ko\">FULL: new events are refused (507)</span>"
        } else {
            ""
        },
        events = events_stored,
    );

    // What needs attention, first.
    let failing: Vec<&Webhook> = hooks
        .iter()
        .filter(|w| w.state == webhooks::State::Disabled || w.last_error.is_some())
        .collect();
    let stuck: Vec<&mail::Mail> = mails
        .iter()
        .filter(|m| m.state != mail::State::Sent && m.last_error.is_some())
        .collect();
    b.push_str("<h2>Needs attention</h2>");
    let unwell: Vec<&Notification> = notes
        .iter()
        .filter(|n| n.ping.suspended || (n.last_error.is_some() && n.ping.retry))
        .collect();
    if troubled.is_empty() && failing.is_empty() && stuck.is_empty() && unwell.is_empty() && acts.is_empty() {
        b.push_str(
            "<p class=\"ok\">Nothing: no errors in recent executions, every webhook delivers, every notification \
             pings, no action waits for a person, the outbox is clear.</p>",
        );
    }
    if !acts.is_empty() {
        b.push_str(&actions_table(&acts, acts_total, tz));
    }
    if !unwell.is_empty() {
        b.push_str(&notifications_table(&unwell, tz));
    }
    if !troubled.is_empty() {
        b.push_str("<table><tr><th>Interface</th><th>Execution</th><th>Status</th><th>Started</th><th>Log</th></tr>");
        for e in &troubled {
            let _ = write!(
                b,
                "<tr><td>{i}</td><td><code>{id}</code>{day}</td><td>{st}</td><td>{at}</td>\
                 <td><a href=\"/v1/executions/{id}/logs?level=error\">errors</a></td></tr>",
                i = escape(&e.interface),
                id = escape(&e.id),
                day = e.day.as_deref().map(|d| format!(" (day {d})")).unwrap_or_default(),
                st = status_cell(e),
                at = local(e.started_at, tz),
            );
        }
        b.push_str("</table>");
    }
    if !failing.is_empty() {
        b.push_str(
            "<table><tr><th>Webhook</th><th>State</th><th>Waiting</th><th>Last error</th><th>Next try</th></tr>",
        );
        for w in &failing {
            let disabled = w.state == webhooks::State::Disabled;
            let _ = write!(
                b,
                "<tr><td><code>{id}</code> {app} → {url}</td><td class=\"{cls}\">{state}</td><td>{n} {what}</td>\
                 <td>{err}</td><td>{next}</td></tr>",
                id = escape(&w.id),
                app = escape(&w.app),
                url = escape(&crate::redact::url(&w.url)),
                cls = if disabled { "ko" } else { "warn" },
                state = if disabled { "deactivated" } else { "retrying" },
                n = w.queued,
                what = if disabled { "buffered" } else { "pending" },
                err = escape(w.disabled_reason.as_deref().or(w.last_error.as_deref()).unwrap_or("")),
                next = w.next_retry_at.map(|t| local(t, tz)).unwrap_or_default(),
            );
        }
        b.push_str("</table>");
    }
    if !stuck.is_empty() {
        b.push_str("<table><tr><th>Mail</th><th>To</th><th>State</th><th>Last error</th></tr>");
        for m in &stuck {
            let _ = write!(
                b,
                "<tr><td>{s}</td><td>{to}</td><td class=\"ko\">{st}</td><td>{e}</td></tr>",
                s = escape(&m.subject(&settings.general.name)),
                to = escape(&m.to),
                st = m.state.as_str(),
                e = escape(m.last_error.as_deref().unwrap_or("")),
            );
        }
        b.push_str("</table>");
    }

    b.push_str("<h2>Interfaces</h2><table><tr><th>Name</th><th>Kind</th><th>Last execution</th><th></th></tr>");
    for (i, last) in &interfaces {
        let _ = write!(
            b,
            "<tr><td>{n}</td><td>{k}</td><td>{st}</td><td><a href=\"/v1/executions?interface={n}\">executions</a></td></tr>",
            n = escape(&i.name),
            k = escape(&i.kind),
            st = last.as_ref().map(status_cell).unwrap_or_default(),
        );
    }
    b.push_str("</table>");

    if !notes.is_empty() {
        b.push_str("<h2>Change notifications</h2>");
        b.push_str(&notifications_table(&notes.iter().collect::<Vec<_>>(), tz));
    }

    b.push_str("<h2>Webhooks</h2><table><tr><th>Id</th><th>App</th><th>Event</th><th>URL</th><th>State</th><th>Waiting</th></tr>");
    for w in hooks.iter().take(ROWS * 5) {
        let _ = write!(
            b,
            "<tr><td><a href=\"/v1/webhooks/{id}/attempts\"><code>{id}</code></a></td><td>{app}</td><td>{ev}</td>\
             <td>{url}</td><td>{st}</td><td>{n}</td></tr>",
            id = escape(&w.id),
            app = escape(&w.app),
            ev = escape(&w.event),
            url = escape(&crate::redact::url(&w.url)),
            st = if w.state == webhooks::State::Active {
                "active"
            } else {
                "deactivated"
            },
            n = w.queued,
        );
    }
    b.push_str("</table>");

    b.push_str(
        "<h2>Outbox</h2><table><tr><th>Subject</th><th>To</th><th>State</th><th>Entries</th><th>Send after</th></tr>",
    );
    for m in &mails {
        let _ = write!(
            b,
            "<tr><td>{s}</td><td>{to}</td><td>{st}</td><td>{n}</td><td>{at}</td></tr>",
            s = escape(&m.subject(&settings.general.name)),
            to = escape(&m.to),
            st = m.state.as_str(),
            n = m.total,
            at = local(m.send_after, tz),
        );
    }
    b.push_str("</table><p>Details as JSON: <a href=\"/v1/status\">status</a>, <a href=\"/v1/executions\">executions</a>, \
                <a href=\"/v1/webhooks\">webhooks</a>, <a href=\"/v1/mails\">mails</a>, <a href=\"/metrics\">metrics</a>.</p>");
    Ok(page(&format!("herald on {}", settings.general.name), &b))
}
