//! An execution's page (`GET /ui/executions/{id}`): its header, then its
//! log lines as a table, error lines red with their category's hint and
//! the first one marked, filters by level and category, and the exports.

use std::fmt::Write;
use std::sync::Arc;

use hyper::StatusCode;

use super::parts::{human, local};
use crate::app::App;
use crate::clock;
use crate::executions::{self, Category, Level, LogFilter, Status};
use crate::html::{self, escape};
use crate::http::{ApiError, Call, Resp};

/// Lines shown per page; `after` goes on.
const LINES: usize = 500;

pub async fn page(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let id = call.param().to_string();
    let q = &call.query;
    let level = q.get("level").and_then(Level::parse);
    let category = q.get("category").and_then(Category::parse);
    let after = q.u64("after")?.map(|a| a.min(u64::from(u32::MAX)) as u32);
    let settings = app.settings();
    let tz = &settings.general.timezone;
    let now = app.clock.now();
    let found = app.store.read(|r| {
        let Some(exe) = executions::get(r, &id)? else {
            return Ok(None);
        };
        let filter = LogFilter {
            level,
            category,
            after,
            limit: LINES,
        };
        let (lines, next) = executions::logs(r, &exe, &filter)?;
        // The first error line of the run, wherever the filters start.
        let first_error = executions::logs(
            r,
            &exe,
            &LogFilter {
                level: Some(Level::Error),
                category: None,
                after: None,
                limit: 1,
            },
        )?
        .0
        .into_iter()
        .next()
        .map(|l| (l.at, l.message));
        Ok(Some((exe, lines, next, first_error)))
    })?;
    let Some((exe, lines, next, first_error)) = found else {
        return Ok(html::response(
            StatusCode::NOT_FOUND,
            html::page(
                "No such execution",
                &format!(
                    "<p>There is no execution {} (retention may have deleted it).</p><p><a href=\"/\">Back</a></p>",
                    escape(&id)
                ),
            ),
        ));
    };
    let mut b = String::from("<p><a href=\"/\">← overview</a></p>");
    // What a button on this page did: only a message herald keeps, for whoever pressed it.
    if let Some((ok, text)) = q
        .get("done")
        .and_then(|d| app.state::<super::Notices>().get(d, &call.who().name))
    {
        let _ = if ok {
            write!(b, "<p class=\"done\">Done: {}</p>", escape(&text))
        } else {
            write!(b, "<p class=\"ko\">Not done: {}</p>", escape(&text))
        };
    }
    let status = match exe.state() {
        Status::Ok => "<span class=\"ok\">OK</span>".to_string(),
        Status::Ko => format!(
            "<span class=\"ko\">KO</span>, {}",
            crate::executions::errors_text(exe.errors.into())
        ),
        Status::Running => format!("running, {}", crate::executions::errors_text(exe.errors.into())),
    };
    let ended = exe.ended_at.unwrap_or(clock::to_ms(now));
    let _ = write!(
        b,
        "<table><tr><th>Interface</th><td>{i}</td></tr>{sched}<tr><th>Status</th><td>{status}{anomaly}</td></tr>\
         <tr><th>Started</th><td>{start}</td></tr><tr><th>{end_label}</th><td>{end}</td></tr>\
         <tr><th>Successful exchanges</th><td>{ok}</td></tr><tr><th>Log lines</th><td>{n}</td></tr></table>",
        i = escape(&exe.interface),
        sched = exe
            .schedule
            .as_ref()
            .map(|s| format!("<tr><th>Schedule</th><td>{}</td></tr>", escape(s)))
            .unwrap_or_default(),
        anomaly = if exe.anomaly(now) {
            " <span class=\"ko\">anomaly: over an hour</span>"
        } else {
            ""
        },
        start = local(exe.started_at, tz),
        end_label = if exe.ended_at.is_some() { "Ended" } else { "Running for" },
        end = match exe.ended_at {
            Some(t) => format!("{} (took {})", local(t, tz), human(t - exe.started_at)),
            None => human(ended - exe.started_at),
        },
        ok = exe.successes,
        n = exe.lines,
    );
    if let Some(a) = &exe.acknowledged {
        let _ = write!(
            b,
            "<p>{} acknowledged by {} at {}{}</p>",
            crate::executions::errors_text(a.errors.into()),
            escape(&a.by),
            local(a.at, tz),
            a.note
                .as_deref()
                .map(|n| format!(": {}", escape(n)))
                .unwrap_or_default()
        );
    }
    // What can be done about a KO execution: the same steps as in the worklist.
    let back = format!("/ui/executions/{}", crate::http::segment(&exe.id));
    let mut steps = Vec::new();
    if exe.unacknowledged() {
        steps.push(crate::worklist::Step::AcknowledgeExecution(exe.id.clone()));
    }
    if let Some(s) = &exe.schedule
        && exe.state() == Status::Ko
        && settings.schedules.iter().any(|c| &c.name == s)
    {
        steps.push(crate::worklist::Step::Run(s.clone()));
    }
    if !steps.is_empty() {
        b.push_str("<p>");
        for step in &steps {
            b.push_str(&super::parts::step_buttons(call.who(), step, &back));
        }
        b.push_str("</p>");
    }
    let _ = write!(
        b,
        "<p>Download: <a href=\"/v1/executions/{id}/export?format=xlsx\">XLSX</a> · \
         <a href=\"/v1/executions/{id}/export?format=csv\">CSV</a></p>",
        id = escape(&exe.id)
    );
    // Filters: links, as they change nothing.
    let link = |label: &str, level: Option<&str>, category: Option<&str>| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(l) = level {
            q.append_pair("level", l);
        }
        if let Some(c) = category {
            q.append_pair("category", c);
        }
        format!(
            "<a href=\"/ui/executions/{}?{}\">{}</a>",
            escape(&exe.id),
            q.finish(),
            escape(label)
        )
    };
    b.push_str("<p>Show: ");
    b.push_str(&link("all", None, None));
    for l in ["error", "warn", "info"] {
        b.push_str(" · ");
        b.push_str(&link(l, Some(l), None));
    }
    b.push_str(" — category: ");
    for (n, c) in ["external", "configuration", "mapping", "technical", "cascade"]
        .iter()
        .enumerate()
    {
        if n > 0 {
            b.push_str(" · ");
        }
        b.push_str(&link(c, None, Some(c)));
    }
    b.push_str("</p>");
    if lines.is_empty() {
        b.push_str("<p>No log lines");
        if level.is_some() || category.is_some() {
            b.push_str(" match these filters");
        }
        b.push_str(".</p>");
    } else {
        b.push_str("<table><tr><th>Time</th><th>Level</th><th>Category</th><th>Message</th><th>What to do</th></tr>");
        for l in &lines {
            let error = l.level == Level::Error;
            let first = error
                && first_error
                    .as_ref()
                    .is_some_and(|(at, m)| *at == l.at && *m == l.message);
            let hint = if error { executions::advice(l.category) } else { "" };
            let _ = write!(
                b,
                "<tr class=\"{cls}\"><td>{at}</td><td>{lvl}{mark}</td><td>{cat}</td><td>{msg}{detail}</td><td>{hint}</td></tr>",
                cls = if error { "ko-row" } else { "" },
                at = local(l.at, tz),
                lvl = l.level.as_str(),
                mark = if first {
                    " <b class=\"first\">(first error)</b>"
                } else {
                    ""
                },
                cat = l.category.map_or("", |c| c.as_str()),
                msg = escape(&l.message),
                detail = l
                    .detail
                    .as_ref()
                    .map(|d| format!("<br><small>{}</small>", escape(d).replace('\n', "<br>")))
                    .unwrap_or_default(),
                hint = escape(hint.trim_start_matches("What to do: ")),
            );
        }
        b.push_str("</table>");
        if let Some(n) = next {
            let mut q = form_urlencoded::Serializer::new(String::new());
            q.append_pair("after", &n.to_string());
            if let Some(l) = level {
                q.append_pair("level", l.as_str());
            }
            if let Some(c) = category {
                q.append_pair("category", c.as_str());
            }
            let _ = write!(
                b,
                "<p><a href=\"/ui/executions/{}?{}\">Next {LINES} lines →</a></p>",
                escape(&exe.id),
                q.finish()
            );
        }
    }
    let title = format!("{} execution {}", exe.interface, exe.id);
    Ok(html::response(StatusCode::OK, html::page(&title, &b)))
}
