//! Time through wall-clock steps (issue 22): the driven clock steps the
//! wall clock alone, as NTP or an operator steps the system clock, and
//! herald must count real time for every delay, deadline and age, show
//! wall time, and say that the clock was stepped.

use std::time::Duration;

use serde_json::{Value, json};

use crate::http_sink::{Answer, HttpSink};
use crate::util::*;

const START: &str = "2026-11-22T10:00:00Z";

fn publish(d: &Daemon, name: &str) -> Value {
    let r = d.post(
        "/v1/events",
        Some(ADMIN),
        &json!({"event": name, "data": 1}).to_string(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    r.json()
}

fn attempts(d: &Daemon, id: &str) -> Vec<Value> {
    d.get(&format!("/v1/webhooks/{id}/attempts"), Some(ADMIN)).json()["attempts"]
        .as_array()
        .unwrap()
        .clone()
}

/// A webhook to `sink` retried after 0 s and 5 min, deactivated after an
/// hour without success; its first attempt has failed.
fn failing_webhook(d: &Daemon, sink: &HttpSink) -> String {
    let r = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "*", "url": sink.url("/")}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    publish(d, "a");
    sink.wait_for(1, Duration::from_secs(5));
    d.eventually(Duration::from_secs(5), "the first attempt", || {
        (attempts(d, &id).len() == 1).then_some(())
    });
    id
}

fn config() -> String {
    format!(
        "[webhooks]\nretry_schedule = [\"0s\", \"5m\"]\ndisable_after = \"1h\"\n{}",
        accounts()
    )
}

/// The clock's lines in herald's daily execution (none before it exists).
fn step_lines(d: &Daemon) -> Vec<String> {
    let list = d.get("/v1/executions?interface=herald", Some(ADMIN)).json();
    let Some(id) = list["executions"][0]["id"].as_str() else {
        return Vec::new();
    };
    d.get(&format!("/v1/executions/{id}/logs?level=warn"), Some(ADMIN))
        .json()["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["category"] == "technical")
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect()
}

/// Case 2: a step of a day forward fires no retry early and deactivates
/// nothing; the step is a warn line, a log line and a count.
#[test]
fn a_day_forward_fires_no_retry_early_and_deactivates_nothing() {
    let sink = HttpSink::start(Answer::Status(500));
    let d = Daemon::start_with_clock(&config(), Some(START));
    let id = failing_webhook(&d, &sink);
    d.step("+1d");
    d.eventually(Duration::from_secs(10), "the step noticed", || {
        (!step_lines(&d).is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.received().len(), 1, "no retry before its real time");
    let w = d.get(&format!("/v1/webhooks/{id}"), Some(ADMIN)).json();
    assert_eq!(w["state"], "active", "{w}");
    let lines = step_lines(&d);
    assert!(lines[0].contains("stepped forward by 1day"), "{lines:?}");
    assert!(d.log_text().contains("the system clock was stepped forward"));
    assert!(d.get("/metrics", None).body.contains("herald_clock_steps_total 1"));
    // Real time passes: the retry comes when it is due, the webhook stays.
    d.advance("6m");
    let got = sink.wait_for(2, Duration::from_secs(5));
    // The signature's timestamp is wall time: receivers compare it with theirs.
    let signed: i64 = got[1].headers["webhook-timestamp"].parse().unwrap();
    let start: jiff::Timestamp = START.parse().unwrap();
    let skew = signed - start.as_second() - 86_400;
    assert!(
        (240..=420).contains(&skew),
        "webhook-timestamp {signed}: {skew} s after START + 1 day"
    );
    // What is shown is wall time: the attempt is a day after the first.
    let shown: jiff::Timestamp = d.eventually(Duration::from_secs(5), "attempt 2", || {
        attempts(&d, &id)
            .first()
            .filter(|a| a["attempt"] == 2)
            .map(|a| a["at"].as_str().unwrap().parse().unwrap())
    });
    let after = shown.duration_since(start).as_secs();
    assert!((86_400 + 240..86_400 + 420).contains(&after), "{after}");
    let w = d.get(&format!("/v1/webhooks/{id}"), Some(ADMIN)).json();
    assert_eq!(w["state"], "active", "{w}");
}

/// Case 3: a step of a day back holds no timer back, opens no earlier
/// day, and no later event sorts before an earlier one.
#[test]
fn a_day_back_holds_no_timer_back_and_opens_no_earlier_day() {
    let sink = HttpSink::start(Answer::Status(500));
    let d = Daemon::start_with_clock(&config(), Some(START));
    let id = failing_webhook(&d, &sink);
    let before = publish(&d, "before");
    d.step("-1d");
    d.advance("6m");
    sink.wait_for(2, Duration::from_secs(5));
    let after = publish(&d, "after");
    assert!(
        after["id"].as_str() > before["id"].as_str(),
        "{after} sorts after {before}"
    );
    assert!(
        after["created_at"].as_str() >= before["created_at"].as_str(),
        "{after} is not before {before}"
    );
    // The day that is open goes on: no daily execution of yesterday.
    let list = d.get("/v1/executions?interface=erp", Some(ADMIN)).json();
    let days: Vec<&str> = list["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["day"].as_str())
        .collect();
    assert_eq!(days, ["2026-11-22"], "{list}");
    assert!(step_lines(&d)[0].contains("stepped back by 1day"));
    assert_eq!(attempts(&d, &id).len(), 2);
}

/// Case 5: a ping planned a minute after an event, the wall clock ten
/// minutes back: the ping comes after a minute of real time, not eleven.
#[test]
fn ten_minutes_back_leaves_the_ping_on_time() {
    let sink = HttpSink::start(Answer::Status(200));
    let d = Daemon::start_with_clock(
        &format!("[notifications]\ndelay = \"60s\"\n{}", accounts()),
        Some(START),
    );
    let r = d.request(
        "PUT",
        "/v1/notifications/erp/order.changed",
        Some(&format!("Bearer {ADMIN}")),
        Some(("application/json", &json!({"url": sink.url("/ping")}).to_string())),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    publish(&d, "order.changed");
    d.step("-10m");
    d.advance("59s");
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.received().is_empty(), "not before the delay");
    d.advance("1s");
    sink.wait_for(1, Duration::from_secs(5));
}

/// Case 1: a webhook deactivated with events buffered, then the wall clock
/// a week forward, and ten minutes of real time: no event is deleted by
/// retention, the buffer and the reactivation link stay, a used
/// idempotency key is still known, and the day's executions are there.
#[test]
fn a_week_forward_loses_no_event_buffer_link_or_key() {
    let smtp = crate::smtp_sink::SmtpSink::start();
    let sink = HttpSink::start(Answer::Status(500));
    let d = Daemon::start_with_clock(
        &format!(
            "[server]\npublic_url = \"https://gw.example.com:8470\"\n\
             [smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"herald@example.com\"\n\
             [webhooks]\nretry_schedule = [\"0s\", \"30s\"]\ndisable_after = \"1m\"\nbuffer_for = \"1h\"\n{}",
            smtp.port,
            accounts()
        ),
        Some(START),
    );
    let r = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "*", "url": sink.url("/")}).to_string(),
    );
    let id = r.json()["id"].as_str().unwrap().to_string();
    publish(&d, "e1");
    for n in 2..=3 {
        sink.wait_for(n - 1, Duration::from_secs(5));
        d.eventually(Duration::from_secs(5), "an attempt", || {
            (attempts(&d, &id).len() == n - 1).then_some(())
        });
        d.advance("40s");
    }
    let webhook = || d.get(&format!("/v1/webhooks/{id}"), Some(ADMIN)).json();
    d.eventually(Duration::from_secs(5), "deactivation", || {
        Some(webhook()).filter(|w| w["state"] == "disabled")
    });
    let keyed = d.post(
        "/v1/events",
        Some(ADMIN),
        r#"{"event":"e2","data":2,"idempotency_key":"k-1"}"#,
    );
    assert_eq!(keyed.status, 202, "{}", keyed.body);
    for name in ["e3", "e4", "e5", "e6"] {
        publish(&d, name);
    }
    d.advance("61s");
    let mail = &smtp.wait_for(1, Duration::from_secs(5))[0];
    let link = mail
        .body
        .split("https://gw.example.com:8470")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    let buffered = webhook()["buffered"].clone();
    assert_eq!(buffered, 6, "{}", webhook());

    d.step("+7d");
    d.advance("11m");
    d.eventually(Duration::from_secs(10), "the step noticed", || {
        (!step_lines(&d).is_empty()).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let names = d.event_names();
    for name in ["e1", "e2", "e3", "e4", "e5", "e6"] {
        assert!(names.iter().any(|n| n == name), "{name} was deleted: {names:?}");
    }
    assert_eq!(webhook()["buffered"], buffered, "{}", webhook());
    assert_eq!(d.get(&link, None).status, 200, "the reactivation link still works");
    let again = d.post(
        "/v1/events",
        Some(ADMIN),
        r#"{"event":"e2","data":2,"idempotency_key":"k-1"}"#,
    );
    assert_eq!(
        (again.status, again.json()["id"].clone()),
        (200, keyed.json()["id"].clone())
    );
    let erp = d.get("/v1/executions?interface=erp", Some(ADMIN)).json();
    assert!(!erp["executions"].as_array().unwrap().is_empty(), "{erp}");
}

/// Case 4: the wall clock three hours forward during a run of 20 s: the
/// run is no anomaly, and it took 20 s.
#[test]
fn three_hours_forward_during_a_run_is_no_anomaly() {
    let sink = HttpSink::start(Answer::Hang);
    let d = Daemon::start_with_clock(
        &format!(
            "[general]\ntimezone = \"Europe/Zurich\"\n\
             [[interfaces]]\nname = \"shop\"\nkind = \"pull\"\nurl = \"{}\"\ntimeout = \"2s\"\n\
             [[schedules]]\nname = \"shop-sales\"\ninterface = \"shop\"\nevery = \"2h\"\n{}",
            sink.url("/sales"),
            accounts()
        ),
        Some(START),
    );
    let r = d.post("/v1/schedules/shop-sales/run", Some(TECHNICIAN), "");
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["execution_id"].as_str().unwrap().to_string();
    sink.wait_for(1, Duration::from_secs(10));
    d.step("+3h");
    d.advance("20s");
    let e = d.eventually(Duration::from_secs(10), "the run to end", || {
        let e = d.get(&format!("/v1/executions/{id}"), Some(ADMIN)).json();
        (e["status"] != "running").then_some(e)
    });
    assert_eq!(e["anomaly"], false, "{e}");
    let page = d.get(&format!("/ui/executions/{id}"), Some(ADMIN)).body;
    assert!(page.contains("took 20 s"), "{page}");
    let warnings = d
        .get(&format!("/v1/executions/{id}/logs?level=warn"), Some(ADMIN))
        .json();
    assert!(!warnings.to_string().contains("anomaly"), "{warnings}");
}

/// Across a restart the downtime is what the wall clock says, never
/// negative: a restart on a clock set back a day holds no timer back.
#[test]
fn a_restart_on_a_clock_set_back_holds_no_timer_back() {
    let sink = HttpSink::start(Answer::Status(500));
    let mut d = Daemon::start_with_clock(&config(), Some(START));
    let id = failing_webhook(&d, &sink);
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    d.set_clock("2026-11-21T10:00:00Z");
    d.spawn();
    d.advance("6m");
    sink.wait_for(2, Duration::from_secs(5));
    d.eventually(Duration::from_secs(5), "attempt 2", || {
        (attempts(&d, &id).len() == 2).then_some(())
    });
    d.eventually(Duration::from_secs(10), "the step noticed", || {
        step_lines(&d)
            .iter()
            .any(|l| l.contains("stepped back by 1day"))
            .then_some(())
    });
}
