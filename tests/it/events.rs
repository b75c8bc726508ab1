//! Publishing and listing events, idempotency, roles and every error code.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::util::*;

#[test]
fn publish_list_and_idempotency() {
    let d = Daemon::start(&accounts());
    let r = d.post(
        "/v1/events",
        Some(INTEGRATION),
        r#"{"event":"door.opened","data":{"door":3,"v":1.50},"idempotency_key":"k-1"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let first = r.json();
    assert!(first["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(first["event"], "door.opened");
    assert!(first["created_at"].as_str().unwrap().ends_with('Z'));
    let seq = first["seq"].as_u64().unwrap();

    // The same key again: 200 with the first event, nothing new stored.
    let r = d.post(
        "/v1/events",
        Some(INTEGRATION),
        r#"{"event":"door.opened","data":{"door":4},"idempotency_key":"k-1"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), first);

    // A batch: new events and one repeat.
    let r = d.post(
        "/v1/events",
        Some(INTEGRATION),
        r#"[{"event":"a"},{"event":"b","data":[1,2]},{"event":"x","idempotency_key":"k-1"},{"event":"c","idempotency_key":"k-2"},{"event":"c","idempotency_key":"k-2"}]"#,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let acks = r.json()["events"].as_array().unwrap().clone();
    assert_eq!(acks.len(), 5);
    assert_eq!(acks[2], first);
    assert_eq!(acks[3], acks[4], "a key repeated inside one batch maps to one event");
    let seqs: Vec<u64> = acks.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    assert!(seqs[0] > seq && seqs[1] > seqs[0] && seqs[3] > seqs[1]);

    // A batch of repeats only answers 200.
    let r = d.post(
        "/v1/events",
        Some(INTEGRATION),
        r#"[{"event":"c","idempotency_key":"k-2"}]"#,
    );
    assert_eq!(r.status, 200);

    let list = d.get("/v1/events", Some(ADMIN)).json();
    let events = list["events"].as_array().unwrap();
    assert_eq!(events.len(), 4, "{list}");
    assert_eq!(events[0]["data"], json!({"door":3,"v":1.50}));
    assert_eq!(events[2]["data"], json!([1, 2]));
    assert_eq!(events[1]["data"], Value::Null);
    assert_eq!(list["next"], Value::Null);

    // Paging by `after`, and the event filter.
    let page = d.get("/v1/events?limit=2", Some(ADMIN)).json();
    assert_eq!(page["events"].as_array().unwrap().len(), 2);
    let next = page["next"].as_u64().expect("a cursor while more remain");
    let rest = d.get(&format!("/v1/events?after={next}&limit=2"), Some(ADMIN)).json();
    let ids: HashSet<String> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .chain(rest["events"].as_array().unwrap())
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 4);
    assert_eq!(rest["next"], Value::Null);
    let only_c = d.get("/v1/events?event=c", Some(ADMIN)).json();
    assert_eq!(only_c["events"].as_array().unwrap().len(), 1);
}

#[test]
fn every_error_code_has_the_json_shape() {
    let d = Daemon::start(&accounts());
    let check = |r: &Reply, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", r.body);
        let e = &r.json()["error"];
        assert_eq!(e["code"], code, "{}", r.body);
        assert!(e["message"].as_str().unwrap().len() > 10, "{}", r.body);
    };
    check(
        &d.post("/v1/events", Some(ADMIN), r#"{"event": "a",,}"#),
        400,
        "invalid_json",
    );
    let r = d.get("/v1/events", None);
    check(&r, 401, "unauthorized");
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    check(&d.get("/v1/events", Some("wrong")), 401, "unauthorized");
    check(
        &d.post("/v1/events", Some(TECHNICIAN), r#"{"event":"a"}"#),
        403,
        "forbidden",
    );
    check(&d.get("/v1/nothing-here", Some(ADMIN)), 404, "not_found");
    check(&d.get("/v1/executions/exe_nope", Some(ADMIN)), 404, "not_found");
    check(
        &d.request(
            "POST",
            "/v1/events",
            Some(&format!("Bearer {ADMIN}")),
            Some(("text/plain", r#"{"event":"a"}"#)),
        ),
        415,
        "unsupported_media_type",
    );

    let r = d.post("/v1/events", Some(ADMIN), r#"{"event":"no spaces allowed"}"#);
    check(&r, 422, "invalid_field");
    assert_eq!(r.json()["error"]["field"], "event");
    let r = d.post(
        "/v1/events",
        Some(ADMIN),
        &format!(r#"{{"event":"{}"}}"#, "n".repeat(129)),
    );
    assert_eq!(r.json()["error"]["field"], "event");
    let r = d.post("/v1/events", Some(ADMIN), r#"{"data":{}}"#);
    assert_eq!(r.json()["error"]["field"], "event");
    let many: Vec<Value> = (0..1001).map(|_| json!({"event": "a"})).collect();
    let r = d.post("/v1/events", Some(ADMIN), &serde_json::to_string(&many).unwrap());
    check(&r, 422, "invalid_field");
    assert_eq!(r.json()["error"]["field"], "events");
    let r = d.post(
        "/v1/events",
        Some(ADMIN),
        &format!(r#"{{"event":"a","data":"{}"}}"#, "x".repeat(300 * 1024)),
    );
    assert_eq!(r.json()["error"]["field"], "data");
    let r = d.get("/v1/events?limit=5000", Some(ADMIN));
    check(&r, 422, "invalid_field");
    assert_eq!(r.json()["error"]["field"], "limit");
    let r = d.get("/v1/events?event=bad%20name", Some(ADMIN));
    check(&r, 422, "invalid_field");
    assert_eq!(r.json()["error"]["field"], "event");
    let r = d.get("/v1/events?after=yesterday", Some(ADMIN));
    check(&r, 422, "invalid_field");
    assert_eq!(r.json()["error"]["field"], "after");
    let not_allowed = d.request("DELETE", "/v1/events", Some(&format!("Bearer {ADMIN}")), None);
    check(&not_allowed, 405, "method_not_allowed");
    assert_eq!(
        not_allowed.header("allow"),
        Some("GET, POST"),
        "RFC 9110: a 405 says what is allowed"
    );

    // Nothing of the refused calls was stored.
    assert_eq!(
        d.get("/v1/events", Some(ADMIN)).json()["events"]
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // Repeated wrong credentials from one address: further wrong ones get
    // 429 with Retry-After, but every local program shares 127.0.0.1, so
    // the right token still passes.
    for _ in 0..10 {
        d.get("/v1/events", Some("guess"));
    }
    let limited = d.get("/v1/events", Some("guess"));
    check(&limited, 429, "rate_limited");
    let wait: u64 = limited.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(
        d.get("/v1/events", Some(ADMIN)).status,
        200,
        "the right token is never refused"
    );
    let r = d.post("/v1/events", Some(ADMIN), r#"{"event":"still.accepted"}"#);
    assert_eq!(r.status, 202, "{}", r.body);
}

#[test]
fn body_over_max_body_is_413_and_stores_nothing() {
    let d = Daemon::start(&format!(
        "[server]\nmax_body = \"4KiB\"\n[storage]\nmax_event_size = \"2KiB\"\n{}",
        accounts()
    ));
    let big = format!(r#"{{"event":"a","data":"{}"}}"#, "x".repeat(5000));
    let r = d.post("/v1/events", Some(ADMIN), &big);
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{}",
        r.body
    );
    let r = d.post(
        "/v1/events",
        Some(ADMIN),
        &format!(r#"{{"event":"a","data":"{}"}}"#, "x".repeat(3000)),
    );
    assert_eq!(
        (r.status, r.json()["error"]["field"].as_str()),
        (422, Some("data")),
        "{}",
        r.body
    );
    assert_eq!(
        d.get("/v1/events", Some(ADMIN)).json()["events"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn roles() {
    let d = Daemon::start(&accounts());
    // Integration publishes and reads only its own events.
    assert_eq!(
        d.post("/v1/events", Some(INTEGRATION), r#"{"event":"from.erp"}"#)
            .status,
        202
    );
    assert_eq!(
        d.post("/v1/events", Some(ADMIN), r#"{"event":"from.admin"}"#).status,
        202
    );
    let own = d.get("/v1/events", Some(INTEGRATION)).json();
    assert_eq!(own["events"].as_array().unwrap().len(), 1);
    assert_eq!(own["events"][0]["event"], "from.erp");
    assert_eq!(d.get("/v1/executions", Some(INTEGRATION)).status, 403);
    assert_eq!(d.get("/v1/status", Some(INTEGRATION)).status, 403);

    // Technician reads everything, publishes nothing.
    assert_eq!(d.post("/v1/events", Some(TECHNICIAN), r#"{"event":"x"}"#).status, 403);
    assert_eq!(
        d.get("/v1/events", Some(TECHNICIAN)).json()["events"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(d.get("/v1/executions", Some(TECHNICIAN)).status, 200);
    assert_eq!(d.get("/v1/interfaces", Some(TECHNICIAN)).status, 200);

    // Unauthenticated: only the operational endpoints.
    assert_eq!(d.get("/v1/events", None).status, 401);
    assert_eq!(d.post("/v1/events", None, r#"{"event":"x"}"#).status, 401);
    assert_eq!(d.get("/healthz", None).status, 200);
    assert_eq!(d.get("/readyz", None).status, 200);
    assert_eq!(d.get("/metrics", None).status, 200);

    // Basic auth (for browsers): account name and token.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("tech:{TECHNICIAN}"));
    assert_eq!(
        d.request("GET", "/v1/events", Some(&format!("Basic {basic}")), None)
            .status,
        200
    );
    let wrong = base64::engine::general_purpose::STANDARD.encode(format!("ops:{TECHNICIAN}"));
    assert_eq!(
        d.request("GET", "/v1/events", Some(&format!("Basic {wrong}")), None)
            .status,
        401
    );
}

#[test]
fn metrics_can_require_auth() {
    let d = Daemon::start(&accounts());
    let text = d.get("/metrics", None).body;
    assert!(text.contains("herald_store_commits_total"), "{text}");
    drop(d);
    let d = Daemon::start(&format!("[server]\nmetrics_auth = true\n{}", accounts()));
    assert_eq!(d.get("/metrics", None).status, 401);
    assert_eq!(d.get("/metrics", Some(TECHNICIAN)).status, 200);
    assert_eq!(d.get("/healthz", None).status, 200);
}

#[test]
fn the_wrong_credentials_limit_is_server_wrong_credentials() {
    let d = Daemon::start(&format!("[server]\nwrong_credentials = 3\n{}", accounts()));
    for _ in 0..3 {
        assert_eq!(d.get("/v1/events", Some("guess")).status, 401);
    }
    assert_eq!(
        d.get("/v1/events", Some("guess")).status,
        429,
        "after 3 within a minute"
    );
    assert_eq!(d.get("/v1/events", Some(ADMIN)).status, 200);
    let bad = run_cli(&["check-config", "--config", "/dev/null"], None);
    assert_eq!(bad.0, Some(0), "an empty config is the defaults");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, "[server]\nwrong_credentials = 0\n").unwrap();
    let (code, _, err) = run_cli(&["check-config", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, Some(78));
    assert!(
        err.contains("wrong_credentials") && err.contains("use 1 to 1000000"),
        "{err}"
    );
}
