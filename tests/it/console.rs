//! The console commands against the real daemon: what needs attention
//! (for people and as JSON, with its exit code), the fixes, an execution's
//! log lines and its export to a file.

use std::time::Duration;

use serde_json::Value;

use crate::http_sink::{Answer, HttpSink};
use crate::ui::troubled;
use crate::util::*;

fn cli(d: &Daemon, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--url", &d.base, "--token", TECHNICIAN]);
    run_cli(&all, None)
}

fn json_of(d: &Daemon, path: &str) -> Value {
    d.get(path, Some(ADMIN)).json()
}

#[test]
fn attention_lists_each_problem_with_its_fix_and_the_fixes_work() {
    let (d, sink, action, wh, receiver) = troubled();
    let (code, out, err) = cli(&d, &["attention"]);
    assert_eq!(code, Some(1), "something needs attention: {out}{err}");
    for needle in [
        format!("ACTION       {action} since 2026-12-01 10:00:00 UTC"),
        "Action on crm retrying, attempt 1 of 5".into(),
        format!("→ herald retry {action}"),
        format!("WEBHOOK      {wh}"),
        format!("→ herald reactivate-webhook {wh} --replay"),
        "NOTIFICATION erp/tick since".into(),
        "Notification erp/tick suspended after 1 unanswered pings".into(),
        "→ herald reactivate-notification erp tick".into(),
    ] {
        assert!(out.contains(&needle), "{needle:?} in:\n{out}");
    }
    let (code, out, _) = cli(&d, &["attention", "--json"]);
    assert_eq!(code, Some(1));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, json_of(&d, "/v1/attention"), "the API's list, as it is");
    let kinds: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    for k in ["action", "webhook", "notification"] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }

    // The fixes.
    sink.set(Answer::Status(202));
    let (code, out, err) = cli(&d, &["retry", &action]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("attempt 2 of 5 made; now waiting"), "{out}");
    receiver.set(Answer::Status(200));
    let (code, out, err) = cli(&d, &["reactivate-webhook", &wh, "--replay"]);
    assert_eq!(code, Some(0), "{out}{err}");
    // The one answered 410, then the whole buffer (events 1 to 4).
    receiver.wait_for(5, Duration::from_secs(10));
    d.eventually(Duration::from_secs(10), "the webhook healthy", || {
        json_of(&d, &format!("/v1/webhooks/{wh}"))
            .get("last_error")
            .is_none_or(Value::is_null)
            .then_some(())
    });
    let (code, _, err) = cli(&d, &["reactivate-notification", "erp", "tick"]);
    assert_eq!(code, Some(0), "{err}");
    sink.set(Answer::Body(200, "[]".into()));
    let (code, out, err) = cli(&d, &["run", "shop-sales", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    let exe = serde_json::from_str::<Value>(&out).unwrap()["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    d.eventually(Duration::from_secs(10), "the run's end", || {
        (json_of(&d, &format!("/v1/executions/{exe}"))["status"] == "ok").then_some(())
    });
    // What was fixed is gone from the list; today's executions keep their errors.
    let (_, out, _) = cli(&d, &["attention"]);
    for gone in ["ACTION", "WEBHOOK", "NOTIFICATION"] {
        assert!(!out.contains(gone), "{gone} fixed:\n{out}");
    }

    // A refusal is exit 2 with the daemon's reason.
    let (code, _, err) = cli(&d, &["retry", &action]);
    assert_eq!(code, Some(2));
    assert!(err.contains("409") && err.contains("only a retrying action"), "{err}");
}

#[test]
fn nothing_to_do_is_exit_0() {
    let d = Daemon::start(&accounts());
    let (code, out, err) = cli(&d, &["attention"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "Nothing needs attention.");
    let (code, out, _) = cli(&d, &["attention", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), r#"{"items":[]}"#);
}

#[test]
fn logs_and_exports_of_an_execution() {
    let items = serde_json::json!([{"event": "bad name", "data": {}}, {"event": "ok", "data": 1}]);
    let sink = HttpSink::start(Answer::Body(200, items.to_string()));
    let d = Daemon::start(&format!(
        "[[interfaces]]\nname = \"shop\"\nkind = \"pull\"\nurl = \"{}\"\n\n[[schedules]]\nname = \"shop-sales\"\n\
         interface = \"shop\"\nevery = \"2h\"\n\n{}",
        sink.url("/shop"),
        accounts()
    ));
    let (_, out, _) = cli(&d, &["run", "shop-sales", "--json"]);
    let exe = serde_json::from_str::<Value>(&out).unwrap()["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    d.eventually(Duration::from_secs(10), "the run's end", || {
        (json_of(&d, &format!("/v1/executions/{exe}"))["status"] == "ko").then_some(())
    });
    let (code, out, _) = cli(&d, &["attention"]);
    assert_eq!(code, Some(1), "a KO run needs attention: {out}");
    for needle in [
        format!("EXECUTION    {exe} since "),
        "Run of schedule shop-sales (shop): KO, 1 error".into(),
        "item 0 skipped".into(),
        format!("→ herald acknowledge {exe} --note"),
        "→ herald run shop-sales".into(),
    ] {
        assert!(out.contains(&needle), "{needle:?} in:\n{out}");
    }
    let (code, out, err) = cli(&d, &["logs", &exe]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("KO, 1 error,") && out.contains("item 0 skipped") && out.contains("check the mappings"),
        "{out}"
    );
    let (_, out, _) = cli(&d, &["logs", &exe, "--level", "info", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    // The GET and the summary.
    assert_eq!(v["logs"].as_array().unwrap().len(), 2, "{v}");

    let dir = tempfile::tempdir().unwrap();
    let xlsx = dir.path().join("run.xlsx");
    let (code, _, err) = cli(&d, &["export", &exe, "--format", "xlsx", "-o", xlsx.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(std::fs::read(&xlsx).unwrap().starts_with(b"PK"), "a zip file");
    // The format follows the file's name; a --format that says otherwise is refused.
    let csv = dir.path().join("run.csv");
    let (code, _, err) = cli(&d, &["export", &exe, "--format", "xlsx", "-o", csv.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("does not match the file name"), "{err}");
    assert!(!csv.exists(), "nothing written");
    let (code, _, err) = cli(&d, &["export", &exe, "-o", dir.path().join("run").to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("name the file .csv or .xlsx"), "{err}");
    let (code, _, err) = cli(&d, &["export", &exe, "-o", csv.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(std::fs::read_to_string(&csv).unwrap().starts_with("\u{feff}#;time ("));
    let (code, _, err) = cli(&d, &["logs", "exe_nope"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("404"), "{err}");
}

#[test]
fn status_and_refusals_exit_2_with_the_reason_and_times_are_local() {
    let d = Daemon::start_with_clock(
        &format!("[general]\ntimezone = \"Europe/Zurich\"\n{}", accounts()),
        Some("2026-12-01T10:00:00Z"),
    );
    let (code, out, err) = cli(&d, &["status"]);
    assert_eq!(code, Some(0), "ready: {out}{err}");
    assert!(
        out.contains("now:               2026-12-01 11:00:00 CET"),
        "general.timezone: {out}"
    );
    // A wrong token: exit 2, the daemon's reason, no raw JSON.
    let (code, out, err) = run_cli(&["status", "--url", &d.base, "--token", "wrong"], None);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        err.contains("401 missing or wrong credentials") && !err.contains("{\""),
        "{err}"
    );
    // Nobody listening: exit 2.
    let (code, _, err) = run_cli(&["status", "--url", "http://127.0.0.1:9", "--token", ADMIN], None);
    assert_eq!(code, Some(2));
    assert!(err.contains("is herald running?"), "{err}");
    let (code, _, err) = run_cli(&["attention", "--url", "http://127.0.0.1:9", "--token", ADMIN], None);
    assert_eq!(code, Some(2), "{err}");

    // Reactivating an active webhook: nothing to do, said so.
    let sink = HttpSink::start(Answer::Status(200));
    let wh = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &serde_json::json!({"app": "erp", "event": "tick", "url": sink.url("/hook")}).to_string(),
    );
    let wh = wh.json()["id"].as_str().unwrap().to_string();
    let (code, out, err) = cli(&d, &["reactivate-webhook", &wh, "--replay"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), format!("webhook {wh} is active: nothing to reactivate"));
    // Times in the log, local as on the page.
    d.post("/v1/events", Some(INTEGRATION), r#"{"event":"bad name"}"#);
    let exe = d.eventually(Duration::from_secs(5), "the failed call logged", || {
        let list = json_of(&d, "/v1/executions?interface=api&status=ko");
        list["executions"][0]["id"].as_str().map(String::from)
    });
    let (_, out, _) = cli(&d, &["logs", &exe]);
    assert!(out.contains("started 2026-12-01 11:00:00 CET"), "{out}");
    assert!(out.contains("\n2026-12-01 11:00:00 CET error"), "{out}");
}
