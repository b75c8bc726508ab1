//! The overview (`GET /`): what needs attention first, each line with the
//! button that fixes what can be fixed; then interfaces with their last
//! execution, schedules with their next run, webhooks, notifications and
//! the outbox.

use std::fmt::Write;
use std::sync::Arc;

use hyper::StatusCode;
use jiff::Timestamp;

use super::parts::{button, human, local, short, step_buttons};
use crate::app::App;
use crate::auth::{Account, Role};
use crate::clock;
use crate::executions::{self, Execution, Status};
use crate::html::{escape, page as layout};
use crate::http::{ApiError, Call, Resp};
use crate::mail;
use crate::notifications::{self, Notification};
use crate::schedules;
use crate::store::StoreError;
use crate::webhooks;
use crate::worklist;

pub async fn page(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    // What a button did: only a message herald keeps, for whoever pressed it.
    let done = call
        .query
        .get("done")
        .and_then(|id| app.state::<super::Notices>().get(id, &call.who().name));
    Ok(crate::html::response(StatusCode::OK, render(app, call.who(), done)?))
}

/// Rows shown per table; the JSON endpoints page through the rest.
const ROWS: usize = 20;

/// Each notification: system, event, URL (secrets masked), its state, the
/// pings not yet answered by a change query, the last and next ping, the
/// last error.
fn notifications_table(notes: &[&Notification], tz: &jiff::tz::TimeZone, who: &Account) -> String {
    let mut b = String::from(
        "<table><tr><th>System</th><th>Event</th><th>URL</th><th>State</th><th>Unacked</th>\
         <th>Last ping</th><th>Next ping</th><th>Last error</th><th></th></tr>",
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
             <td>{last}</td><td>{next}</td><td>{error}</td><td>{act}</td></tr>",
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
            act = if n.ping.suspended {
                button(
                    who,
                    &format!(
                        "/ui/notifications/{}/{}/reactivate",
                        crate::http::segment(&n.system),
                        crate::http::segment(&n.event)
                    ),
                    "Reactivate",
                    "/",
                    &[],
                )
            } else {
                String::new()
            },
        );
    }
    b.push_str("</table>");
    b
}

/// An execution's status, linked to its page.
fn execution_link(e: &Execution, now: Timestamp) -> String {
    format!(
        "<a href=\"/ui/executions/{}\">{}</a>{}",
        escape(&e.id),
        status_cell(e),
        if e.anomaly(now) {
            " <span class=\"ko\">anomaly</span>"
        } else {
            ""
        }
    )
}

fn status_cell(e: &Execution) -> String {
    match (e.state(), e.errors) {
        (Status::Ko, n) => format!("<span class=\"ko\">KO</span> ({})", executions::errors_text(n.into())),
        (Status::Ok, _) => "<span class=\"ok\">OK</span>".into(),
        (Status::Running, 0) => "running".into(),
        (Status::Running, n) => format!(
            "running, <span class=\"ko\">{}</span>",
            executions::errors_text(n.into())
        ),
    }
}

/// Items the page shows; the rest are in `herald attention` and the API.
const WORKLIST_ROWS: usize = 100;

/// The worklist: one row per item, with its buttons.
fn worklist_table(items: &[worklist::Item], tz: &jiff::tz::TimeZone, who: &Account) -> String {
    let mut b = String::from(
        "<table id=\"worklist\"><tr><th>What</th><th>Since</th><th>Problem</th><th>Detail</th><th></th></tr>",
    );
    for item in items.iter().take(WORKLIST_ROWS) {
        let what = match item.kind {
            worklist::Kind::Execution => format!(
                "execution <a href=\"/ui/executions/{}\">{}</a>",
                crate::http::segment(&item.id),
                short(&item.id)
            ),
            worklist::Kind::Action => format!(
                "action <a href=\"/v1/actions/{}\">{}</a>",
                crate::http::segment(&item.id),
                short(&item.id)
            ),
            worklist::Kind::Webhook => format!(
                "webhook <a href=\"/v1/webhooks/{}/attempts\">{}</a>",
                crate::http::segment(&item.id),
                short(&item.id)
            ),
            kind => format!("{} {}", kind.as_str(), escape(&item.id)),
        };
        let buttons: String = item.steps.iter().map(|s| step_buttons(who, s, "/")).collect();
        let _ = write!(
            b,
            "<tr class=\"ko-row\" data-kind=\"{kind}\" data-id=\"{id}\"><td>{what}</td><td>{since}</td>\
             <td class=\"title\">{title}</td><td>{detail}</td><td>{buttons}</td></tr>",
            kind = item.kind.as_str(),
            id = escape(&item.id),
            since = local(item.since, tz),
            title = escape(&item.title),
            detail = escape(item.detail.as_deref().unwrap_or("")),
        );
    }
    if items.len() > WORKLIST_ROWS {
        let _ = write!(
            b,
            "<tr><td colspan=\"5\">and {} more: all of them with <code>herald attention</code> or in \
             <a href=\"/v1/attention\">/v1/attention</a></td></tr>",
            items.len() - WORKLIST_ROWS
        );
    }
    b.push_str("</table>");
    b
}

fn render(app: &App, who: &Account, done: Option<(bool, String)>) -> Result<String, StoreError> {
    let settings = app.settings();
    let tz = &settings.general.timezone;
    let now: Timestamp = app.clock.now();
    let now_ms = clock::to_ms(now);
    let (interfaces, hooks, mails, notes, events_stored, planned) = app.store.read(|r| {
        let (mails, _) = mail::list(
            r,
            &mail::Filter {
                state: None,
                after: None,
                limit: ROWS,
            },
        )?;
        Ok((
            executions::interfaces(r)?,
            webhooks::list(r)?,
            mails,
            notifications::list(r, None)?,
            crate::events::count(r)?,
            schedules::all(r)?,
        ))
    })?;
    let work = worklist::compute(app)?;
    let mut b = String::new();
    if let Some(done) = done {
        let _ = match done {
            (true, text) => write!(b, "<p class=\"done\">Done: {}</p>", escape(&text)),
            (false, text) => write!(b, "<p class=\"ko\">Not done: {}</p>", escape(&text)),
        };
    }
    let ready = app.ready.load(std::sync::atomic::Ordering::Relaxed);
    let size = app.store.on_disk();
    let max = settings.storage.max_size;
    let _ = write!(
        b,
        "<p>Gateway <b>{gw}</b>, herald {ver}. Now {now}. {state}. Store {size} of {max}; {events} events kept.</p>",
        gw = escape(&settings.general.name),
        ver = env!("CARGO_PKG_VERSION"),
        now = local(now_ms, tz),
        state = if ready {
            "<span class=\"ok\">Running</span>"
        } else {
            "<span class=\"warn\">Starting or stopping</span>"
        },
        size = bytesize::ByteSize(size).display().iec_short(),
        max = bytesize::ByteSize(max).display().iec_short(),
        events = events_stored,
    );

    // What needs attention, first: the worklist, as the CLI and the API show it.
    b.push_str("<h2>Needs attention</h2>");
    if work.is_empty() {
        b.push_str(
            "<p class=\"ok\">Nothing: no execution has errors nobody acknowledged, every webhook delivers, \
             every notification pings, no action waits for a person, the outbox is clear, the store has room.</p>",
        );
    } else {
        b.push_str(&worklist_table(&work, tz, who));
    }
    let room = app.store.room_left();
    if !app.store.is_full() && room < max / 10 {
        // Not refused yet: a warning, not an item of the list.
        b.push_str(&format!(
            "<p class=\"warn\">{}</p>",
            escape(&app.store.health().advice(size, room, max))
        ));
    }

    b.push_str("<h2>Interfaces</h2><table><tr><th>Name</th><th>Kind</th><th>Last execution</th></tr>");
    for (i, last) in &interfaces {
        let _ = write!(
            b,
            "<tr><td>{n}</td><td>{k}</td><td>{st}</td></tr>",
            n = escape(&i.name),
            k = escape(&i.kind),
            st = last.as_ref().map(|e| execution_link(e, now)).unwrap_or_default(),
        );
    }
    b.push_str("</table>");

    if !settings.schedules.is_empty() {
        b.push_str(
            "<h2>Schedules</h2><table><tr><th>Schedule</th><th>Interface</th><th>Every</th><th>Next run</th>\
             <th>Last run</th><th></th></tr>",
        );
        for s in &settings.schedules {
            let p = planned.iter().find(|p| p.name == s.name);
            let next = p.map_or(String::new(), |p| {
                format!("{} (in {})", local(p.next_run_at, tz), human(p.next_run_at - now_ms))
            });
            let last = match p.and_then(|p| p.running.as_ref().map(|(e, _)| e).or(p.last_execution.as_ref())) {
                Some(id) => format!("<a href=\"/ui/executions/{}\">{}</a>", escape(id), short(id)),
                None => String::new(),
            };
            let going = p.is_some_and(|p| p.running.is_some());
            let _ = write!(
                b,
                "<tr><td>{n}</td><td>{i}</td><td>{every}</td><td>{next}</td><td>{last}{going}</td><td>{act}</td></tr>",
                n = escape(&s.name),
                i = escape(&s.interface),
                every = human(s.every.as_millis() as i64),
                going = if going { " (running)" } else { "" },
                act = if going {
                    String::new()
                } else {
                    button(who, &format!("/ui/schedules/{}/run", s.name), "Run now", "/", &[])
                },
            );
        }
        b.push_str("</table>");
    }

    if !notes.is_empty() {
        b.push_str("<h2>Change notifications</h2>");
        b.push_str(&notifications_table(&notes.iter().collect::<Vec<_>>(), tz, who));
    }

    b.push_str("<h2>Webhooks</h2><table><tr><th>Webhook</th><th>App</th><th>Event</th><th>URL</th><th>State</th><th>Waiting</th></tr>");
    for w in hooks.iter().take(ROWS * 5) {
        let _ = write!(
            b,
            "<tr><td><a href=\"/v1/webhooks/{id}/attempts\">{short}</a></td><td>{app}</td><td>{ev}</td>\
             <td>{url}</td><td>{st}</td><td>{n}</td></tr>",
            id = escape(&w.id),
            short = short(&w.id),
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

    // The outbox and its JSON are the admin's: not offered to others.
    if who.role == Role::Admin {
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
        b.push_str("</table>");
    }
    b.push_str(
        "<p>Details as JSON: <a href=\"/v1/status\">status</a>, <a href=\"/v1/executions\">executions</a>, \
         <a href=\"/v1/webhooks\">webhooks</a>, <a href=\"/v1/actions\">actions</a>, \
         <a href=\"/v1/schedules\">schedules</a>",
    );
    if who.role == Role::Admin {
        b.push_str(", <a href=\"/v1/mails\">mails</a>");
    }
    b.push_str(", <a href=\"/metrics\">metrics</a>.</p>");
    Ok(layout(&format!("herald on {}", settings.general.name), &b))
}
