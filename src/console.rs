//! The technician's console on the command line, for a shell on the
//! gateway: what needs attention, an execution's log lines and its export,
//! and the fixes (retry an action, run a schedule, reactivate a webhook or
//! a notification). It talks to the local daemon's API, as `herald status`
//! does; `--json` prints what scripts read.
//!
//! Exit codes: 0 done (or nothing needs attention), 1 something needs
//! attention, 2 the daemon refused or could not be reached.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

/// Where the daemon is, how to authenticate to it, and the time zone its
/// times are shown in: the daemon's `general.timezone`, as on the page
/// (the local config's until the daemon said).
pub struct Daemon {
    pub url: String,
    pub token: String,
    pub tz: jiff::tz::TimeZone,
}

/// What the daemon answered.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("the daemon's answer is not JSON")
    }

    /// The answer's JSON if it is a success, else its error message.
    fn ok(self, what: &str) -> anyhow::Result<Value> {
        if (200..300).contains(&self.status) {
            return if self.body.is_empty() {
                Ok(Value::Null)
            } else {
                self.json()
            };
        }
        let message = self
            .json()
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        bail!("{what}: {} {message}", self.status)
    }
}

impl Daemon {
    /// One request to the local daemon (plain HTTP over loopback).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let uri: hyper::Uri = url.parse().with_context(|| format!("{url:?} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("--url must be http://HOST:PORT (the console talks to the local daemon over loopback)");
        }
        let host = uri.host().context("the URL has no host")?.to_string();
        let port = uri.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .context("timed out connecting")?
        .with_context(|| format!("cannot connect to {host}:{port}; is herald running?"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(uri.clone())
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.token));
        let body = match body {
            Some(v) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        let resp = tokio::time::timeout(
            Duration::from_secs(120),
            sender.send_request(req.body(Full::new(body))?),
        )
        .await
        .context("timed out")??;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Answer { status, body })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.call("GET", path, None).await?.ok(&format!("GET {path}"))
    }

    /// Takes the daemon's time zone (from its status), for [`Daemon::local`].
    async fn zone(&mut self) -> anyhow::Result<Value> {
        let s = self.get("/v1/status").await?;
        if let Some(tz) = s["timezone"].as_str().and_then(|n| jiff::tz::TimeZone::get(n).ok()) {
            self.tz = tz;
        }
        Ok(s)
    }

    /// An instant of the API (RFC 3339) as the page shows it: local time
    /// in `general.timezone`, to the second.
    pub fn local(&self, rfc3339: &str) -> String {
        match rfc3339.parse::<jiff::Timestamp>() {
            Ok(t) => t.to_zoned(self.tz.clone()).strftime("%Y-%m-%d %H:%M:%S %Z").to_string(),
            Err(_) => rfc3339.to_string(),
        }
    }

    /// `value`'s string field `key` as a local time ("-" when absent).
    fn time_of(&self, value: &Value, key: &str) -> String {
        value[key].as_str().map_or_else(|| "-".to_string(), |t| self.local(t))
    }
}

/// The daemon's summary (`herald status`); whether it is ready.
pub async fn status(d: &mut Daemon) -> anyhow::Result<bool> {
    let s = d.zone().await?;
    let n = |k: &str| s[k].as_u64().unwrap_or(0);
    let ready = s["ready"].as_bool().unwrap_or(false);
    println!(
        "herald {} on {}: {}",
        s["version"].as_str().unwrap_or("?"),
        s["gateway"].as_str().unwrap_or("?"),
        if s["draining"].as_bool() == Some(true) {
            "draining"
        } else if ready {
            "healthy, ready"
        } else {
            "healthy, not ready"
        }
    );
    println!("now:               {}", d.time_of(&s, "now"));
    println!("events stored:     {}", n("events_stored"));
    println!(
        "jobs due:          {} ({} scheduled)",
        n("jobs_due"),
        n("jobs_scheduled")
    );
    println!(
        "executions in KO:  {} ({} running with errors)",
        n("executions_ko"),
        n("executions_running_with_errors")
    );
    println!(
        "store:             {}{}",
        bytesize::ByteSize(n("store_bytes")).display().iec_short(),
        if s["storage_full"].as_bool() == Some(true) {
            " (FULL: new events are refused)"
        } else {
            ""
        }
    );
    println!("actions to look at: {}", n("actions_attention"));
    for a in s["actions"].as_array().into_iter().flatten() {
        let text = |k: &str| a[k].as_str().unwrap_or("");
        let mut line = format!(
            "  {} {:<9} {}, {}",
            text("id"),
            text("state"),
            text("interface"),
            text("attempts")
        );
        match text("state") {
            "retrying" => line.push_str(&format!("; next try {}", d.time_of(a, "next_retry_at"))),
            "todo" => line.push_str(&format!(
                "; to do: {}{}",
                text("reason"),
                a["queue"].as_str().map(|q| format!(" (queue {q})")).unwrap_or_default()
            )),
            _ => {}
        }
        if let Some(e) = a["last_error"]["message"].as_str() {
            line.push_str(&format!("; last error: {e}"));
        }
        println!("{line}");
    }
    println!("(the worklist: herald attention)");
    Ok(ready)
}

/// The worklist, as the page shows it (`GET /v1/attention`); whether
/// anything needs attention.
pub async fn attention(d: &mut Daemon, as_json: bool) -> anyhow::Result<bool> {
    d.zone().await?;
    let v = d.get("/v1/attention").await?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    if as_json {
        println!("{v}");
    } else if items.is_empty() {
        println!("Nothing needs attention.");
    } else {
        for i in &items {
            let text = |k: &str| i[k].as_str().unwrap_or("");
            println!(
                "{:<12} {} since {}: {}",
                text("kind").to_uppercase(),
                text("id"),
                d.local(text("since")),
                text("title")
            );
            if let Some(detail) = i["detail"].as_str() {
                for line in detail.lines() {
                    println!("{:13}{line}", "");
                }
            }
            for a in i["actions"].as_array().into_iter().flatten() {
                if let Some(step) = a["path"].as_str().and_then(crate::worklist::Step::from_path) {
                    println!("{:13}→ {}", "", step.command());
                }
            }
        }
    }
    Ok(!items.is_empty())
}

/// An execution's log lines.
pub async fn logs(
    d: &mut Daemon,
    id: &str,
    level: Option<&str>,
    category: Option<&str>,
    as_json: bool,
) -> anyhow::Result<()> {
    d.zone().await?;
    let exe = d.get(&format!("/v1/executions/{id}")).await?;
    let mut lines = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("limit", "1000");
        if let Some(l) = level {
            q.append_pair("level", l);
        }
        if let Some(c) = category {
            q.append_pair("category", c);
        }
        if let Some(a) = after {
            q.append_pair("after", &a.to_string());
        }
        let page = d.get(&format!("/v1/executions/{id}/logs?{}", q.finish())).await?;
        lines.extend(page["logs"].as_array().cloned().unwrap_or_default());
        match page["next"].as_u64() {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    if as_json {
        println!("{}", json!({"execution": exe, "logs": lines}));
        return Ok(());
    }
    println!(
        "{} of {}{}: {}, {}, started {}{}",
        id,
        exe["interface"].as_str().unwrap_or(""),
        exe["schedule"]
            .as_str()
            .map(|s| format!(" (schedule {s})"))
            .unwrap_or_default(),
        exe["status"].as_str().unwrap_or("").to_uppercase(),
        crate::executions::errors_text(exe["errors"].as_u64().unwrap_or(0)),
        d.time_of(&exe, "started_at"),
        exe["ended_at"]
            .as_str()
            .map(|t| format!(", ended {}", d.local(t)))
            .unwrap_or_default(),
    );
    for l in &lines {
        println!(
            "{} {:<5} {:<13} {}",
            d.time_of(l, "at"),
            l["level"].as_str().unwrap_or(""),
            l["category"].as_str().unwrap_or("-"),
            l["message"].as_str().unwrap_or("")
        );
        if let Some(detail) = l["detail"].as_str() {
            for line in detail.lines() {
                println!("{:>44}{line}", "");
            }
        }
    }
    Ok(())
}

/// Writes an execution's export to `out`, in the format its name says
/// (or `--format`, which must then agree with it).
pub async fn export(d: &Daemon, id: &str, format: Option<&str>, out: &std::path::Path) -> anyhow::Result<()> {
    let named = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .filter(|e| matches!(e.as_str(), "csv" | "xlsx"));
    let format = match (format, named.as_deref()) {
        (Some(f), _) if !matches!(f, "csv" | "xlsx") => bail!("--format must be csv or xlsx"),
        (Some(f), Some(n)) if f != n => {
            bail!(
                "--format {f} does not match the file name {}; name it .{f}, or drop --format",
                out.display()
            )
        }
        (Some(f), _) => f,
        (None, Some(n)) => n,
        (None, None) => bail!(
            "say the format: name the file .csv or .xlsx, or give --format csv|xlsx ({})",
            out.display()
        ),
    };
    let answer = d
        .call("GET", &format!("/v1/executions/{id}/export?format={format}"), None)
        .await?;
    if answer.status != 200 {
        answer.ok("export")?;
        bail!("export: no file");
    }
    std::fs::write(out, &answer.body).with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {} ({} bytes)", out.display(), answer.body.len());
    Ok(())
}

/// Prints the result of a fix: its JSON, or a line for people.
fn report(v: &Value, as_json: bool, line: String) {
    if as_json {
        println!("{v}");
    } else {
        println!("{line}");
    }
}

pub async fn retry(d: &Daemon, id: &str, as_json: bool) -> anyhow::Result<()> {
    let a = d
        .call("POST", &format!("/v1/actions/{id}/retry"), None)
        .await?
        .ok("retry")?;
    let line = format!(
        "action {id}: attempt {} of {} made; now {}{}",
        a["attempts_made"],
        a["attempts_max"],
        a["state"].as_str().unwrap_or(""),
        a["last_error"]["message"]
            .as_str()
            .filter(|_| a["state"] != "waiting")
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    report(&a, as_json, line);
    Ok(())
}

pub async fn run(d: &Daemon, schedule: &str, as_json: bool) -> anyhow::Result<()> {
    let v = d
        .call("POST", &format!("/v1/schedules/{schedule}/run"), None)
        .await?
        .ok("run")?;
    let id = v["execution_id"].as_str().unwrap_or("");
    report(
        &v,
        as_json,
        format!("schedule {schedule}: run {id} started; herald logs {id}"),
    );
    Ok(())
}

pub async fn reactivate_webhook(d: &Daemon, id: &str, replay: bool, as_json: bool) -> anyhow::Result<()> {
    let wh = d.get(&format!("/v1/webhooks/{}", crate::http::segment(id))).await?;
    if wh["state"] == "active" {
        report(&wh, as_json, format!("webhook {id} is active: nothing to reactivate"));
        return Ok(());
    }
    let v = d
        .call(
            "POST",
            &format!("/v1/webhooks/{id}/activate"),
            Some(json!({ "replay_events": replay })),
        )
        .await?
        .ok("reactivate")?;
    let what = if replay {
        "its buffered events are being delivered in order"
    } else {
        "its buffer was discarded"
    };
    report(&v, as_json, format!("webhook {id} is active; {what}"));
    Ok(())
}

/// An acknowledgement: of an action (`act_...`) or an execution.
pub async fn acknowledge(d: &Daemon, id: &str, note: Option<String>, as_json: bool) -> anyhow::Result<()> {
    let path = if id.starts_with("act_") {
        format!("/v1/actions/{}/acknowledge", crate::http::segment(id))
    } else {
        format!("/v1/executions/{}/acknowledge", crate::http::segment(id))
    };
    let v = d
        .call("POST", &path, Some(json!({ "note": note })))
        .await?
        .ok("acknowledge")?;
    report(&v, as_json, format!("{id} acknowledged; it leaves the worklist"));
    Ok(())
}

pub async fn resolve(d: &Daemon, id: &str, completed: bool, note: Option<String>, as_json: bool) -> anyhow::Result<()> {
    let resolution = if completed {
        "successfully_completed"
    } else {
        "unsuccessfully_completed"
    };
    let v = d
        .call(
            "POST",
            &format!("/v1/actions/{}/resolve", crate::http::segment(id)),
            Some(json!({ "resolution": resolution, "note": note })),
        )
        .await?
        .ok("resolve")?;
    report(
        &v,
        as_json,
        format!(
            "action {id} is {}; it leaves the worklist",
            v["state"].as_str().unwrap_or("")
        ),
    );
    Ok(())
}

pub async fn assign(
    d: &Daemon,
    id: &str,
    queue: Option<String>,
    assignee: Option<String>,
    note: Option<String>,
    as_json: bool,
) -> anyhow::Result<()> {
    let v = d
        .call(
            "POST",
            &format!("/v1/actions/{}/assign", crate::http::segment(id)),
            Some(json!({ "queue": queue, "assignee": assignee, "note": note })),
        )
        .await?
        .ok("assign")?;
    let to: Vec<String> = [
        v["queue"].as_str().map(|q| format!("queue {q}")),
        v["assignee"].as_str().map(String::from),
    ]
    .into_iter()
    .flatten()
    .collect();
    report(&v, as_json, format!("action {id} assigned to {}", to.join(", ")));
    Ok(())
}

pub async fn reactivate_notification(d: &Daemon, system: &str, event: &str, as_json: bool) -> anyhow::Result<()> {
    let v = d
        .call(
            "POST",
            &format!(
                "/v1/notifications/{}/{}/reactivate",
                crate::http::segment(system),
                crate::http::segment(event)
            ),
            None,
        )
        .await?
        .ok("reactivate")?;
    report(&v, as_json, format!("notification {system}/{event} is active again"));
    Ok(())
}
