//! The execution log: failed API calls land in the daily execution of
//! interface `api`, which rolls at local midnight (driven clock).

use std::time::Duration;

use serde_json::Value;

use crate::util::*;

fn executions(d: &Daemon) -> Vec<Value> {
    d.get("/v1/executions?interface=api", Some(ADMIN)).json()["executions"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn failed_calls_are_logged_with_their_category() {
    let d = Daemon::start(&accounts());
    d.post("/v1/events", Some(INTEGRATION), r#"{"event":"bad name"}"#);
    d.get("/v1/no-such-thing", Some(INTEGRATION));
    d.post("/v1/events", Some(TECHNICIAN), r#"{"event":"a"}"#);
    let exe = d.eventually(Duration::from_secs(5), "three error lines", || {
        executions(&d).into_iter().find(|e| e["errors"] == 3)
    });
    assert_eq!(exe["kind"], "daily");
    // KO from its first error line on, while still open.
    assert_eq!(exe["status"], "ko");
    assert!(exe.get("ended_at").is_none(), "{exe}");
    assert_eq!(exe["interface"], "api");
    let id = exe["id"].as_str().unwrap();
    let logs = d.get(&format!("/v1/executions/{id}/logs"), Some(TECHNICIAN)).json()["logs"]
        .as_array()
        .unwrap()
        .clone();
    let categories: Vec<&str> = logs.iter().map(|l| l["category"].as_str().unwrap()).collect();
    assert_eq!(categories, ["mapping", "configuration", "configuration"], "{logs:?}");
    assert!(
        logs[0]["message"]
            .as_str()
            .unwrap()
            .contains("POST /v1/events → 422 invalid_field"),
        "{logs:?}"
    );
    assert!(logs[0]["detail"].as_str().unwrap().contains("account: erp"));
    assert!(logs.iter().all(|l| l["level"] == "error"));

    let mapping = d
        .get(&format!("/v1/executions/{id}/logs?category=mapping"), Some(ADMIN))
        .json();
    assert_eq!(mapping["logs"].as_array().unwrap().len(), 1);
    let r = d.get(&format!("/v1/executions/{id}/logs?category=nope"), Some(ADMIN));
    assert_eq!((r.status, r.json()["error"]["field"].as_str()), (422, Some("category")));

    let ifaces = d.get("/v1/interfaces", Some(ADMIN)).json();
    assert_eq!(ifaces["interfaces"][0]["name"], "api");
    assert_eq!(ifaces["interfaces"][0]["last_execution"]["id"], id);
}

#[test]
fn daily_execution_rolls_at_local_midnight() {
    // 23:59:00 in Zurich (UTC+1 in November).
    let d = Daemon::start_with_clock(
        &format!("[general]\ntimezone = \"Europe/Zurich\"\n{}", accounts()),
        Some("2026-11-22T22:59:00Z"),
    );
    d.post("/v1/events", Some(ADMIN), r#"{"event":"before midnight!"}"#);
    let before = d.eventually(Duration::from_secs(5), "the first daily execution", || {
        executions(&d).into_iter().next()
    });
    assert_eq!(before["day"], "2026-11-22");
    assert_eq!(before["status"], "ko", "KO while open: it has an error line");
    assert!(before.get("ended_at").is_none());

    // 30 s later nothing rolls yet.
    d.advance("30s");
    std::thread::sleep(Duration::from_millis(200));
    assert!(executions(&d)[0].get("ended_at").is_none());

    // Past midnight the roll closes it as KO (it recorded an error), ended at midnight.
    d.advance("40s");
    let closed = d.eventually(Duration::from_secs(5), "the roll", || {
        executions(&d)
            .into_iter()
            .find(|e| e["id"] == before["id"] && e.get("ended_at").is_some())
    });
    assert_eq!(closed["status"], "ko");
    assert_eq!(closed["ended_at"], "2026-11-22T23:00:00.000Z");

    // A new failure goes into the new day's execution.
    d.post("/v1/events", Some(ADMIN), r#"{"event":"after midnight!"}"#);
    let after = d.eventually(Duration::from_secs(5), "the second daily execution", || {
        executions(&d)
            .into_iter()
            .find(|e| e["id"] != before["id"] && e["errors"] == 1)
    });
    assert_eq!(after["day"], "2026-11-23");
    assert_eq!(after["status"], "ko");
    // `status=ko` finds both: the closed one and the one still open.
    let ko = d.get("/v1/executions?status=ko&interface=api", Some(ADMIN)).json();
    let open: Vec<&Value> = ko["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.get("ended_at").is_none())
        .collect();
    assert_eq!((ko["executions"].as_array().unwrap().len(), open.len()), (2, 1), "{ko}");

    // The next roll is a day later, not sooner: 23 hours on, still open.
    d.advance("23h");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(executions(&d).iter().filter(|e| e.get("ended_at").is_none()).count(), 1);
}

#[test]
fn retention_sweep_deletes_old_events_and_frees_their_keys() {
    let d = Daemon::start_with_clock(
        &format!("[storage]\nretention = \"1h\"\n{}", accounts()),
        Some("2026-11-22T10:00:00Z"),
    );
    let r = d.post("/v1/events", Some(ADMIN), r#"{"event":"old","idempotency_key":"once"}"#);
    assert_eq!(r.status, 202);
    d.advance("30m");
    assert_eq!(d.post("/v1/events", Some(ADMIN), r#"{"event":"newer"}"#).status, 202);
    d.advance("40m");
    d.eventually(Duration::from_secs(5), "the sweep", || {
        (d.event_names() == ["newer"]).then_some(())
    });
    // The key expired with its event: the same key now stores a new one.
    let again = d.post("/v1/events", Some(ADMIN), r#"{"event":"old","idempotency_key":"once"}"#);
    assert_eq!(again.status, 202);
    assert_ne!(again.json()["id"], r.json()["id"]);
}

/// The messages of the newest execution of `interface`, at `level`.
fn messages(d: &Daemon, interface: &str, level: &str) -> Vec<String> {
    let list = d
        .get(&format!("/v1/executions?interface={interface}"), Some(ADMIN))
        .json();
    let Some(id) = list["executions"][0]["id"].as_str() else {
        return Vec::new();
    };
    d.get(
        &format!("/v1/executions/{id}/logs?level={level}&limit=1000"),
        Some(ADMIN),
    )
    .json()["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_exchange_is_a_line_with_its_answer_and_duration() {
    use crate::http_sink::{Answer, HttpSink};
    let sink = HttpSink::start(Answer::Status(202));
    let d = Daemon::start_with_clock(
        &format!(
            "[notifications]\ndelay = \"60s\"\n\n[[interfaces]]\nname = \"crm\"\nkind = \"action\"\nurl = \"{}\"\n\n{}",
            sink.url("/crm"),
            accounts()
        ),
        Some("2026-12-01T10:00:00Z"),
    );
    // A webhook delivery.
    let wh = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &serde_json::json!({"app": "shop", "event": "tick", "url": sink.url("/hook")}).to_string(),
    );
    let wh = wh.json()["id"].as_str().unwrap().to_string();
    // A notification and its ping.
    let r = d.request(
        "PUT",
        "/v1/notifications/erp/tick",
        Some(&format!("Bearer {ADMIN}")),
        Some((
            "application/json",
            &serde_json::json!({"url": sink.url("/ping")}).to_string(),
        )),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let published = d
        .post("/v1/events", Some(INTEGRATION), r#"{"event":"tick","data":1}"#)
        .json();
    let event = published["id"].as_str().unwrap().to_string();
    let delivered = d.eventually(Duration::from_secs(10), "the delivery line", || {
        messages(&d, "shop", "info")
            .into_iter()
            .find(|m| m.contains("delivered"))
    });
    assert!(
        delivered.starts_with(&format!("{wh} delivered {event} (#1): 202 in ")),
        "{delivered}"
    );
    d.advance("60s");
    let pinged = d.eventually(Duration::from_secs(10), "the ping line", || {
        messages(&d, "erp", "info")
            .into_iter()
            .find(|m| m.starts_with("pinged"))
    });
    assert!(
        pinged.contains("for tick: 202 in ") && pinged.contains("/ping"),
        "{pinged}"
    );
    // The change query that answers it.
    assert_eq!(d.get("/v1/changes?system=erp", Some(INTEGRATION)).status, 200);
    let queried = messages(&d, "erp", "info");
    assert!(
        queried.iter().any(|m| m == "change query by erp: 200, 1 changes"),
        "{queried:?}"
    );
    // An action's call, accepted.
    let action = d.post("/v1/actions", Some(INTEGRATION), r#"{"interface":"crm","payload":{}}"#);
    let action = action.json()["id"].as_str().unwrap().to_string();
    let called = d.eventually(Duration::from_secs(10), "the call line", || {
        messages(&d, "crm", "info").into_iter().find(|m| m.contains("accepted"))
    });
    assert!(
        called.starts_with(&format!("action {action}: attempt 1 accepted; url: "))
            && called.contains("answered 202 in "),
        "{called}"
    );
    // Successful calls into the API: one line per account and minute.
    d.advance("60s");
    let summed = d.eventually(Duration::from_secs(10), "the API calls' lines", || {
        let lines: Vec<String> = messages(&d, "api", "info")
            .into_iter()
            .filter(|m| m.starts_with("erp: "))
            .collect();
        (lines.len() == 2).then_some(lines)
    });
    assert!(
        summed[0].starts_with("erp: 1 call answered 2xx since 2026-12-01T10:00:00")
            && summed[0].ends_with(": POST /v1/events 1"),
        "the first minute: {summed:?}"
    );
    assert!(
        summed[1].starts_with("erp: 2 calls answered 2xx since 2026-12-01T10:01:00")
            && summed[1].ends_with(": GET /v1/changes 1, POST /v1/actions 1"),
        "the second: {summed:?}"
    );
    // Each success is counted, and the export tells the whole story.
    let shop = d.get("/v1/executions?interface=shop", Some(ADMIN)).json()["executions"][0].clone();
    assert_eq!(shop["successes"], 1, "{shop}");
    let csv = d.get(
        &format!("/v1/executions/{}/export?format=csv", shop["id"].as_str().unwrap()),
        Some(ADMIN),
    );
    assert!(csv.body.contains(&format!("{wh} delivered {event}")), "{}", csv.body);
}
