//! Webhooks: signed delivery verified by an independent Standard Webhooks
//! implementation, order, isolation, retries on a driven clock,
//! deactivation with mail, page and token, buffer and replay, crash safety.

use std::time::Duration;

use serde_json::{Value, json};

use crate::http_sink::{Answer, HttpSink};
use crate::smtp_sink::SmtpSink;
use crate::util::*;

const START: &str = "2026-11-22T10:00:00Z";

fn create(d: &Daemon, token: &str, body: Value) -> Value {
    let r = d.post("/v1/webhooks", Some(token), &body.to_string());
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

fn publish(d: &Daemon, name: &str, data: Value) -> Value {
    let r = d.post(
        "/v1/events",
        Some(ADMIN),
        &json!({"event": name, "data": data}).to_string(),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    r.json()
}

fn webhook(d: &Daemon, id: &str) -> Value {
    d.get(&format!("/v1/webhooks/{id}"), Some(ADMIN)).json()
}

fn attempts(d: &Daemon, id: &str) -> Vec<Value> {
    d.get(&format!("/v1/webhooks/{id}/attempts"), Some(ADMIN)).json()["attempts"]
        .as_array()
        .unwrap()
        .clone()
}

fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn resource_create_list_get_delete_and_validation() {
    let d = Daemon::start(&accounts());
    let body = json!({"app": "erp", "event": "door.opened", "url": "http://127.0.0.1:9/x"});
    let r = d.post("/v1/webhooks", Some(INTEGRATION), &body.to_string());
    assert_eq!(r.status, 403, "only admins subscribe others");
    let wh = create(&d, ADMIN, body);
    let id = wh["id"].as_str().unwrap();
    assert!(id.starts_with("wh_"));
    assert!(wh["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(
        (wh["active"].clone(), wh["state"].clone(), wh["buffered"].clone()),
        (json!(true), json!("active"), json!(0))
    );
    // The secret is shown once only.
    assert!(webhook(&d, id).get("secret").is_none());
    assert!(!d.get("/v1/webhooks", Some(ADMIN)).body.contains("whsec_"));
    let given = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let other = create(
        &d,
        ADMIN,
        json!({"app": "crm", "event": "*", "url": "https://crm.example.com/h", "secret": given}),
    );
    assert_eq!(other["secret"], given);

    let list = |q: &str, token: &str| -> usize {
        d.get(&format!("/v1/webhooks{q}"), Some(token)).json()["webhooks"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(list("", ADMIN), 2);
    assert_eq!(list("?app=erp", ADMIN), 1);
    assert_eq!(list("?event=*", TECHNICIAN), 1);
    assert_eq!(
        list("", INTEGRATION),
        1,
        "integrations see their own: those they created and those of the app named like them"
    );
    assert_eq!(d.get(&format!("/v1/webhooks/{id}"), Some(TECHNICIAN)).status, 200);
    assert_eq!(
        d.get(
            &format!("/v1/webhooks/{}", other["id"].as_str().unwrap()),
            Some(INTEGRATION)
        )
        .status,
        404
    );

    for (body, field) in [
        (json!({"event": "a", "url": "http://x.io"}), "app"),
        (json!({"app": "a", "event": "bad name", "url": "http://x.io"}), "event"),
        (json!({"app": "a", "event": "a", "url": "ftp://x.io"}), "url"),
        (
            json!({"app": "a", "event": "a", "url": format!("http://x.io/{}", "p".repeat(2048))}),
            "url",
        ),
        (
            json!({"app": "a", "event": "a", "url": "http://x.io", "secret": "whsec_abc"}),
            "secret",
        ),
        (
            json!({"app": "a".repeat(65), "event": "a", "url": "http://x.io"}),
            "app",
        ),
    ] {
        let r = d.post("/v1/webhooks", Some(ADMIN), &body.to_string());
        assert_eq!(
            (r.status, r.json()["error"]["field"].as_str()),
            (422, Some(field)),
            "{}",
            r.body
        );
    }
    assert_eq!(
        d.post("/v1/webhooks", Some(TECHNICIAN), &json!({}).to_string()).status,
        403
    );

    assert_eq!(
        d.request(
            "DELETE",
            &format!("/v1/webhooks/{id}"),
            Some(&format!("Bearer {ADMIN}")),
            None
        )
        .status,
        204
    );
    assert_eq!(d.get(&format!("/v1/webhooks/{id}"), Some(ADMIN)).status, 404);
}

#[test]
fn deliveries_are_signed_per_standard_webhooks_and_in_order() {
    let sink = HttpSink::start(Answer::Status(200));
    let d = Daemon::start(&accounts());
    let wh = create(
        &d,
        ADMIN,
        json!({"app": "erp", "event": "tick", "url": sink.url("/hook")}),
    );
    let verifier = standardwebhooks::Webhook::new(wh["secret"].as_str().unwrap()).unwrap();
    publish(&d, "other", json!({}));
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(publish(&d, "tick", json!({"i": i}))["id"].as_str().unwrap().to_string());
    }
    let got = sink.wait_for(30, Duration::from_secs(10));
    let seen: Vec<String> = got
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, ids, "every matching event, in order, and only those");
    let first = &got[0];
    assert_eq!((first.method.as_str(), first.path.as_str()), ("POST", "/hook"));
    assert_eq!(first.headers["content-type"], "application/json");
    assert!(first.headers["user-agent"].starts_with("herald/"));
    assert_eq!(first.headers["host"], format!("127.0.0.1:{}", sink.port));
    assert_eq!(first.headers["webhook-id"], ids[0]);
    let body = first.json();
    assert_eq!(body["event"], "tick");
    assert_eq!(body["app"], "erp");
    assert_eq!(body["data"], json!({"i": 0}));
    assert!(body["created_at"].as_str().unwrap().ends_with('Z'));
    for r in &got {
        let mut headers = hyper::HeaderMap::new();
        for k in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            headers.insert(k, r.headers[k].parse().unwrap());
        }
        verifier
            .verify(&r.body, &headers)
            .expect("a valid Standard Webhooks signature");
    }
    // Successes are counted in the app's daily execution, not logged line by line.
    let exe = d.eventually(Duration::from_secs(5), "30 successes", || {
        let list = d.get("/v1/executions?interface=erp", Some(ADMIN)).json();
        list["executions"]
            .as_array()
            .unwrap()
            .first()
            .cloned()
            .filter(|e| e["successes"] == 30)
    });
    assert_eq!(exe["errors"], 0);
}

#[test]
fn a_long_queue_is_delivered_in_order_once_each_across_batches() {
    // More than a run's batches (500 events each): each batch's progress is
    // committed while the next is posted, and nothing is sent twice or skipped.
    let sink = HttpSink::start(Answer::Status(200));
    let d = Daemon::start(&accounts());
    let wh = create(
        &d,
        ADMIN,
        json!({"app": "erp", "event": "tick", "url": sink.url("/hook")}),
    );
    let id = wh["id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for chunk in 0..3 {
        let batch: Vec<Value> = (0..700)
            .map(|i| json!({"event": "tick", "data": {"i": chunk * 700 + i}}))
            .collect();
        let r = d.post("/v1/events", Some(ADMIN), &Value::Array(batch).to_string());
        assert_eq!(r.status, 202, "{}", r.body);
        ids.extend(
            r.json()["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string()),
        );
    }
    let got = sink.wait_for(ids.len(), Duration::from_secs(30));
    let seen: Vec<String> = got
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen.len(), ids.len(), "each event once");
    assert!(seen == ids, "in order");
    let wh = d.eventually(Duration::from_secs(10), "the queue empty", || {
        let wh = d.get(&format!("/v1/webhooks/{id}"), Some(ADMIN)).json();
        (wh["pending"] == 0).then_some(wh)
    });
    assert_eq!(wh["state"], "active");
    let attempts = d
        .get(&format!("/v1/webhooks/{id}/attempts?limit=3"), Some(ADMIN))
        .json();
    let newest: Vec<&str> = attempts["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["event_id"].as_str().unwrap())
        .collect();
    let last3: Vec<&str> = ids.iter().rev().take(3).map(String::as_str).collect();
    assert_eq!(newest, last3, "the attempt log ends with the last events, newest first");
    d.eventually(Duration::from_secs(5), "2,100 successes", || {
        let list = d.get("/v1/executions?interface=erp", Some(ADMIN)).json();
        list["executions"][0]["successes"].as_u64().filter(|n| *n == 2100)
    });
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.received().len(), ids.len(), "nothing sent again");
}

#[test]
fn deliveries_share_pooled_keep_alive_connections() {
    let sink = HttpSink::start(Answer::Status(200));
    let d = Daemon::start(&accounts());
    for app in ["erp", "mes"] {
        create(
            &d,
            ADMIN,
            json!({"app": app, "event": "tick", "url": sink.url("/hook")}),
        );
    }
    for i in 0..10 {
        publish(&d, "tick", json!({"i": i}));
        sink.wait_for(2 * (i + 1), Duration::from_secs(10));
    }
    // Two webhooks, each one request at a time: never more than two
    // connections, whatever the order the jobs take them from the pool.
    assert!(
        sink.connections() <= 2,
        "20 deliveries took {} connections",
        sink.connections()
    );
}

#[test]
fn a_receiver_that_drops_idle_connections_loses_no_delivery() {
    let sink = HttpSink::start(Answer::Close(200));
    let d = Daemon::start(&accounts());
    let wh = create(
        &d,
        ADMIN,
        json!({"app": "erp", "event": "tick", "url": sink.url("/hook")}),
    );
    // One at a time, so each delivery finds the last connection closed.
    for i in 0..10 {
        publish(&d, "tick", json!({"i": i}));
        sink.wait_for(i + 1, Duration::from_secs(10));
    }
    // A burst, so deliveries race the receiver closing the connection.
    for i in 10..40 {
        publish(&d, "tick", json!({"i": i}));
    }
    let got = sink.wait_for(40, Duration::from_secs(10));
    let seen: Vec<i64> = got.iter().map(|r| r.json()["data"]["i"].as_i64().unwrap()).collect();
    assert_eq!(seen, (0..40).collect::<Vec<_>>());
    let id = wh["id"].as_str().unwrap();
    d.eventually(Duration::from_secs(5), "40 attempts recorded", || {
        let list = attempts(&d, id);
        (list.len() == 40).then_some(())
    });
    for a in attempts(&d, id) {
        assert_eq!(
            (a["attempt"].as_u64(), a["status_code"].as_u64()),
            (Some(1), Some(200)),
            "{a}"
        );
    }
}

/// A delivery run holds one connection for all its requests, and takes a
/// new one for each request when the receiver closes each after answering.
#[test]
fn a_run_keeps_its_connection_unless_the_receiver_closes_it() {
    for (answer, connections) in [(Answer::Status(200), 1..=1), (Answer::CloseSaying(200), 60..=60)] {
        let sink = HttpSink::start(answer.clone());
        let d = Daemon::start(&accounts());
        let wh = create(
            &d,
            ADMIN,
            json!({"app": "erp", "event": "tick", "url": sink.url("/hook")}),
        );
        // One publish of 60, so that one run posts them back to back.
        let events: Vec<Value> = (0..60).map(|i| json!({"event": "tick", "data": {"i": i}})).collect();
        let r = d.post("/v1/events", Some(ADMIN), &Value::from(events).to_string());
        assert_eq!(r.status, 202, "{}", r.body);
        let got = sink.wait_for(60, Duration::from_secs(10));
        let seen: Vec<i64> = got.iter().map(|r| r.json()["data"]["i"].as_i64().unwrap()).collect();
        assert_eq!(seen, (0..60).collect::<Vec<_>>(), "{answer:?}");
        assert!(
            connections.contains(&sink.connections()),
            "{answer:?}: 60 deliveries took {} connections",
            sink.connections()
        );
        let id = wh["id"].as_str().unwrap();
        d.eventually(Duration::from_secs(5), "60 attempts recorded", || {
            let list = attempts(&d, id);
            (list.len() == 60).then_some(list)
        })
        .iter()
        .for_each(|a| assert_eq!(a["attempt"].as_u64(), Some(1), "{answer:?}: {a}"));
    }
}

/// The next POST is built while one is in flight, but sent only after a
/// success: a failed event holds back the rest of its batch.
#[test]
fn a_failure_holds_back_the_post_built_after_it() {
    let sink = HttpSink::start(Answer::Status(500));
    let d = Daemon::start(&format!("[webhooks]\nretry_schedule = [\"1h\"]\n{}", accounts()));
    let wh = create(&d, ADMIN, json!({"app": "erp", "event": "tick", "url": sink.url("/")}));
    let id = wh["id"].as_str().unwrap();
    let events: Vec<Value> = (0..60).map(|i| json!({"event": "tick", "data": {"i": i}})).collect();
    let r = d.post("/v1/events", Some(ADMIN), &Value::from(events).to_string());
    assert_eq!(r.status, 202, "{}", r.body);
    let first = &sink.wait_for(1, Duration::from_secs(5))[0];
    assert_eq!(first.json()["data"]["i"], 0);
    let list = d.eventually(Duration::from_secs(5), "the failed attempt", || {
        let list = attempts(&d, id);
        (!list.is_empty()).then_some(list)
    });
    settle();
    assert_eq!(sink.received().len(), 1, "nothing after the failed event");
    assert_eq!((list.len(), list[0]["status_code"].as_u64()), (1, Some(500)));
    assert_eq!(webhook(&d, id)["pending"], 60);
}

#[test]
fn a_hanging_receiver_does_not_delay_another() {
    let hanging = HttpSink::start(Answer::Hang);
    let good = HttpSink::start(Answer::Status(204));
    let d = Daemon::start(&format!("[webhooks]\ntimeout = \"30s\"\n{}", accounts()));
    create(&d, ADMIN, json!({"app": "slow", "event": "*", "url": hanging.url("/")}));
    create(&d, ADMIN, json!({"app": "fast", "event": "*", "url": good.url("/")}));
    for i in 0..5 {
        publish(&d, "e", json!(i));
        // Each event reaches the good receiver while the other hangs on the first.
        good.wait_for(i + 1, Duration::from_secs(2));
    }
    assert_eq!(
        hanging.received().len(),
        1,
        "the hanging receiver got the first event only"
    );
}

#[test]
fn retries_follow_the_schedule_on_the_driven_clock() {
    let sink = HttpSink::start(Answer::Status(500));
    let d = Daemon::start_with_clock(
        &format!("[webhooks]\nretry_schedule = [\"0s\", \"10s\", \"5m\"]\n{}", accounts()),
        Some(START),
    );
    let wh = create(&d, ADMIN, json!({"app": "erp", "event": "*", "url": sink.url("/")}));
    let id = wh["id"].as_str().unwrap();
    let e1 = publish(&d, "a", json!(1));
    publish(&d, "b", json!(2));
    sink.wait_for(1, Duration::from_secs(5));
    let a = d.eventually(Duration::from_secs(5), "the first attempt", || {
        attempts(&d, id).first().cloned()
    });
    assert_eq!((a["attempt"].clone(), a["status_code"].clone()), (json!(1), json!(500)));
    assert_eq!(a["event_id"], e1["id"]);
    // 10 s ± 20 %.
    let next: jiff::Timestamp = a["next_retry_at"].as_str().unwrap().parse().unwrap();
    let start: jiff::Timestamp = START.parse().unwrap();
    let wait = next.duration_since(start).as_secs_f64();
    assert!((8.0..=12.0).contains(&wait), "{wait}");
    assert_eq!(webhook(&d, id)["pending"], 2, "the second event is held back");

    d.advance("7s");
    settle();
    assert_eq!(sink.received().len(), 1, "no retry before its time");
    d.advance("6s");
    sink.wait_for(2, Duration::from_secs(5));
    let a2 = d.eventually(Duration::from_secs(5), "attempt 2", || {
        attempts(&d, id).first().cloned().filter(|a| a["attempt"] == 2)
    });
    let next2: jiff::Timestamp = a2["next_retry_at"].as_str().unwrap().parse().unwrap();
    let wait2 = next2
        .duration_since(a2["at"].as_str().unwrap().parse::<jiff::Timestamp>().unwrap())
        .as_secs_f64();
    assert!((240.0..=360.0).contains(&wait2), "5 min ± 20 %: {wait2}");
    // Every attempt is logged as an external error in the app's execution.
    let logs = d.newest_logs("erp", "?category=external");
    assert_eq!(logs["logs"].as_array().unwrap().len(), 2);

    sink.set(Answer::Status(200));
    d.advance("6m");
    let got = sink.wait_for(4, Duration::from_secs(5));
    let names: Vec<&str> = got.iter().map(|r| r.headers["webhook-id"].as_str()).collect();
    assert_eq!(
        names[..3],
        [e1["id"].as_str().unwrap(); 3],
        "the same webhook-id on every retry"
    );
    let w = d.eventually(Duration::from_secs(5), "nothing pending", || {
        Some(webhook(&d, id)).filter(|w| w["pending"] == 0)
    });
    assert!(w.get("last_error").is_none());
}

#[test]
fn retry_after_is_honoured_up_to_the_longest_step() {
    let sink = HttpSink::start(Answer::RetryAfter(503, 120));
    let d = Daemon::start_with_clock(
        &format!("[webhooks]\nretry_schedule = [\"0s\", \"5s\", \"10m\"]\n{}", accounts()),
        Some(START),
    );
    let id = create(&d, ADMIN, json!({"app": "erp", "event": "*", "url": sink.url("/")}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    publish(&d, "a", json!(1));
    let a = d.eventually(Duration::from_secs(5), "the first attempt", || {
        attempts(&d, &id).first().cloned()
    });
    assert_eq!(a["next_retry_at"], "2026-11-22T10:02:00.000Z");
}

fn deactivation_config(smtp: u16) -> String {
    format!(
        "[general]\nname = \"gw-test\"\n[server]\npublic_url = \"https://gw.example.com:8470\"\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {smtp}\nsecurity = \"none\"\nfrom = \"herald@example.com\"\n\
         [webhooks]\nretry_schedule = [\"0s\", \"30s\"]\ndisable_after = \"1m\"\nbuffer_for = \"1h\"\n{}",
        accounts()
    )
}

/// Fails the webhook's first event until it is deactivated; returns its id.
fn fail_until_disabled(d: &Daemon, sink: &HttpSink) -> String {
    let id = create(d, ADMIN, json!({"app": "erp", "event": "*", "url": sink.url("/")}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    publish(d, "e1", json!(1));
    sink.wait_for(1, Duration::from_secs(5));
    d.eventually(Duration::from_secs(5), "attempt 1", || {
        (attempts(d, &id).len() == 1).then_some(())
    });
    d.advance("40s");
    sink.wait_for(2, Duration::from_secs(5));
    d.eventually(Duration::from_secs(5), "attempt 2", || {
        (attempts(d, &id).len() == 2).then_some(())
    });
    d.advance("40s");
    sink.wait_for(3, Duration::from_secs(5));
    d.eventually(Duration::from_secs(5), "deactivation", || {
        Some(webhook(d, &id)).filter(|w| w["state"] == "disabled")
    });
    id
}

#[test]
fn deactivation_mails_a_link_whose_page_changes_nothing_and_whose_post_replays() {
    let smtp = SmtpSink::start();
    let sink = HttpSink::start(Answer::Status(500));
    let d = Daemon::start_with_clock(&deactivation_config(smtp.port), Some(START));
    let id = fail_until_disabled(&d, &sink);
    let w = webhook(&d, &id);
    assert_eq!(w["active"], false);
    assert_eq!(w["disabled_at"], "2026-11-22T10:01:20.000Z");
    assert!(w["disabled_reason"].as_str().unwrap().contains("500"), "{w}");
    assert_eq!(w["buffered"], 1, "the failed event is kept");
    let active = |q: &str| {
        d.get(&format!("/v1/webhooks?active={q}"), Some(ADMIN)).json()["webhooks"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!((active("false"), active("true")), (1, 0));

    // The internal event is published, for others to subscribe to.
    let internal = d.get("/v1/events?event=herald.webhook.deactivated", Some(ADMIN)).json();
    assert_eq!(internal["events"][0]["data"]["webhook"], id.as_str());

    // Events while disabled are buffered, not sent.
    publish(&d, "e2", json!(2));
    publish(&d, "e3", json!(3));
    settle();
    assert_eq!(sink.received().len(), 3);
    assert_eq!(webhook(&d, &id)["buffered"], 3);

    // The creator (ops, the admin) is notified, debounced, with the link.
    d.advance("61s");
    let mail = &smtp.wait_for(1, Duration::from_secs(5))[0];
    assert_eq!(mail.to, ["ops@example.com"]);
    assert!(
        mail.subject.contains(&format!("Webhook {id} of erp deactivated")),
        "{}",
        mail.subject
    );
    assert!(mail.body.contains("HTTP 500"), "{}", mail.body);
    let prefix = format!("https://gw.example.com:8470/v1/webhooks/{id}/activate?token=");
    let token = mail
        .body
        .split(&prefix)
        .nth(1)
        .expect("the link")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    // Opening the link only shows the page.
    let page = d.get(&format!("/v1/webhooks/{id}/activate?token={token}"), None);
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    assert!(
        page.body.contains("Reactivate and replay") && page.body.contains("method=\"post\""),
        "{}",
        page.body
    );
    assert_eq!(webhook(&d, &id)["state"], "disabled", "a GET never changes anything");
    assert_eq!(
        d.get(&format!("/v1/webhooks/{id}/activate?token=wrong"), None).status,
        403
    );

    // The button: reactivate and replay, in order, then live events.
    sink.set(Answer::Status(200));
    let done = d.request(
        "POST",
        &format!("/v1/webhooks/{id}/activate?token={token}"),
        None,
        Some(("application/x-www-form-urlencoded", "replay_events=true")),
    );
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("active again"));
    publish(&d, "e4", json!(4));
    let got = sink.wait_for(7, Duration::from_secs(5));
    let names: Vec<String> = got[3..]
        .iter()
        .map(|r| r.json()["event"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["e1", "e2", "e3", "e4"]);
    assert_eq!(webhook(&d, &id)["state"], "active");
    // The token was single-purpose.
    let again = d.request(
        "POST",
        &format!("/v1/webhooks/{id}/activate?token={token}"),
        None,
        Some(("application/x-www-form-urlencoded", "replay_events=true")),
    );
    assert_eq!(again.status, 403);
    assert!(!d.log_text().contains(&token), "the token never reaches the log");
    // The failed call is recorded just after it is answered.
    let logs = d.eventually(Duration::from_secs(5), "the failed call in the api log", || {
        let list = d.get("/v1/executions?interface=api", Some(ADMIN)).json();
        let id = list["executions"][0]["id"].as_str()?.to_string();
        Some(d.get(&format!("/v1/executions/{id}/logs"), Some(ADMIN))).filter(|l| l.body.contains("/activate"))
    });
    assert!(
        logs.body.contains("token=[redacted]") && !logs.body.contains(&token),
        "{}",
        logs.body
    );
}

#[test]
fn activation_without_replay_discards_the_buffer() {
    let smtp = SmtpSink::start();
    let sink = HttpSink::start(Answer::Status(500));
    let d = Daemon::start_with_clock(&deactivation_config(smtp.port), Some(START));
    let id = fail_until_disabled(&d, &sink);
    publish(&d, "e2", json!(2));
    assert_eq!(webhook(&d, &id)["buffered"], 2);
    sink.set(Answer::Status(200));
    let r = d.post(
        &format!("/v1/webhooks/{id}/activate"),
        Some(TECHNICIAN),
        r#"{"replay_events": false}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["state"].clone(), r.json()["pending"].clone()),
        (json!("active"), json!(0))
    );
    publish(&d, "e3", json!(3));
    let got = sink.wait_for(4, Duration::from_secs(5));
    assert_eq!(got[3].json()["event"], "e3");
    settle();
    assert_eq!(sink.received().len(), 4, "the buffer was not delivered");
    let logs = d.newest_logs("erp", "?category=cascade");
    assert!(
        logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("2 buffered events discarded")),
        "{logs}"
    );
}

#[test]
fn the_buffer_ends_after_buffer_for_and_the_link_expires_with_it() {
    let smtp = SmtpSink::start();
    let sink = HttpSink::start(Answer::Status(500));
    let d = Daemon::start_with_clock(&deactivation_config(smtp.port), Some(START));
    let id = fail_until_disabled(&d, &sink);
    d.advance("61s");
    let mail = &smtp.wait_for(1, Duration::from_secs(5))[0];
    let token = mail
        .body
        .split("?token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    d.advance("1h");
    d.eventually(Duration::from_secs(5), "the buffer to end", || {
        Some(webhook(&d, &id)).filter(|w| w["buffered"] == 0)
    });
    publish(&d, "late", json!(0));
    d.eventually(Duration::from_secs(5), "not kept", || {
        Some(webhook(&d, &id)).filter(|w| w["not_kept"] == 1)
    });
    assert_eq!(
        d.get(&format!("/v1/webhooks/{id}/activate?token={token}"), None).status,
        403
    );
}

#[test]
fn gone_deactivates_at_once() {
    let sink = HttpSink::start(Answer::Status(410));
    let d = Daemon::start_with_clock(&accounts(), Some(START));
    let id = create(&d, ADMIN, json!({"app": "erp", "event": "*", "url": sink.url("/")}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    publish(&d, "a", json!(1));
    let w = d.eventually(Duration::from_secs(5), "deactivation", || {
        Some(webhook(&d, &id)).filter(|w| w["state"] == "disabled")
    });
    assert!(w["disabled_reason"].as_str().unwrap().contains("410"), "{w}");
    assert_eq!(sink.received().len(), 1, "no retry after 410");
    // The creator is told (no [smtp] here, so the notice waits in the outbox).
    let mails = d.get("/v1/mails", Some(ADMIN)).json();
    assert_eq!(mails["mails"][0]["to"], "ops@example.com", "{mails}");
    assert!(
        mails["mails"][0]["subject"].as_str().unwrap().contains("deactivated"),
        "{mails}"
    );
}

#[test]
fn kill_9_with_deliveries_pending_delivers_all_after_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut d = Daemon::start(&format!(
        "[webhooks]\nretry_schedule = [\"0s\", \"1s\"]\n{}",
        accounts()
    ));
    create(
        &d,
        ADMIN,
        json!({"app": "erp", "event": "*", "url": format!("http://127.0.0.1:{port}/")}),
    );
    let ids: Vec<String> = (0..10)
        .map(|i| publish(&d, "e", json!(i))["id"].as_str().unwrap().to_string())
        .collect();
    d.kill9();
    let sink = HttpSink::start_on(port, Answer::Status(200));
    d.spawn();
    let got = sink.wait_for(10, Duration::from_secs(10));
    let seen: Vec<String> = got
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, ids);
}

/// A one-request-per-connection HTTPS receiver with the given certificate.
fn tls_receiver(
    cert: rustls::pki_types::CertificateDer<'static>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut reader = BufReader::new(&mut tls);
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    let mut body = vec![0; len];
                    if reader.read_exact(&mut body).is_ok() {
                        let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
                        let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    }
                    break;
                }
            }
        }
    });
    (port, rx)
}

#[test]
fn receivers_behind_an_on_premise_ca_are_trusted_through_ca_file() {
    let (ca_pem, leaf, key) = private_ca();
    let (port, got) = tls_receiver(leaf, key);

    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("site-ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    let d = Daemon::start(&format!(
        "[webhooks]\nca_file = \"{}\"\n{}",
        ca_path.display(),
        accounts()
    ));
    create(
        &d,
        ADMIN,
        json!({"app": "erp", "event": "*", "url": format!("https://localhost:{port}/hook")}),
    );
    let sent = publish(&d, "secure", json!({"n": 1}));
    let body = got.recv_timeout(Duration::from_secs(10)).expect("a delivery over TLS");
    assert!(body.contains(sent["id"].as_str().unwrap()), "{body}");

    // Without the CA, the same receiver is not trusted: the attempt fails.
    let plain = Daemon::start(&accounts());
    let id = create(
        &plain,
        ADMIN,
        json!({"app": "erp", "event": "*", "url": format!("https://localhost:{port}/hook")}),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    publish(&plain, "secure", json!({"n": 2}));
    let a = plain.eventually(Duration::from_secs(10), "a failed attempt", || {
        attempts(&plain, &id).first().cloned()
    });
    assert!(
        a["error"].as_str().unwrap().to_lowercase().contains("certificate"),
        "{a}"
    );
    let logs = plain.newest_logs("erp", "");
    assert_eq!(logs["logs"][0]["category"], "configuration", "{logs}");
}

#[test]
fn deleting_drops_pending_deliveries_and_retention_keeps_what_webhooks_need() {
    let sink = HttpSink::start(Answer::Status(500));
    let d = Daemon::start_with_clock(
        &format!(
            "[storage]\nretention = \"1h\"\n[webhooks]\nretry_schedule = [\"0s\", \"10h\"]\n{}",
            accounts()
        ),
        Some(START),
    );
    publish(&d, "unwatched", json!(0));
    let id = create(
        &d,
        ADMIN,
        json!({"app": "erp", "event": "watched", "url": sink.url("/")}),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..3 {
        publish(&d, "watched", json!(i));
    }
    // Published after the ones still needed, and needed by nobody.
    publish(&d, "unwatched-later", json!(4));
    sink.wait_for(1, Duration::from_secs(5));
    // Two hours on, past retention: the unwatched event goes, the three the
    // webhook still has to deliver stay.
    d.advance("2h");
    d.eventually(Duration::from_secs(5), "the sweep", || {
        (!d.event_names().iter().any(|n| n.starts_with("unwatched"))).then_some(())
    });
    assert_eq!(d.event_names(), ["watched", "watched", "watched"]);
    assert_eq!(webhook(&d, &id)["pending"], 3);

    let r = d.request(
        "DELETE",
        &format!("/v1/webhooks/{id}"),
        Some(&format!("Bearer {ADMIN}")),
        None,
    );
    assert_eq!(r.status, 204);
    let logs = d.newest_logs("erp", "?category=cascade").to_string();
    assert!(logs.contains("3 pending deliveries dropped"), "{logs}");
    // Nothing needs them any more: the next sweep frees them.
    d.advance("10m");
    d.eventually(Duration::from_secs(5), "the second sweep", || {
        d.event_names().is_empty().then_some(())
    });
    settle();
    assert_eq!(sink.received().len(), 1, "no delivery after the delete");
}

#[test]
fn sigterm_with_a_hanging_delivery_exits_in_time_and_redelivers_after_restart() {
    let receiver = HttpSink::start(Answer::Hang);
    let mut d = Daemon::start(&format!(
        "[server]\ndrain_timeout = \"1s\"\n[webhooks]\ntimeout = \"60s\"\n{}",
        accounts()
    ));
    create(&d, ADMIN, json!({"app": "erp", "event": "*", "url": receiver.url("/")}));
    let sent = publish(&d, "e", json!(1));
    receiver.wait_for(1, Duration::from_secs(5));
    let started = std::time::Instant::now();
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    let log = d.log_text();
    assert!(log.contains("will run again after the restart"), "{log}");
    assert!(
        !log.contains("store writer still busy"),
        "the store closed cleanly: {log}"
    );
    // The aborted delivery was never recorded: it runs again, with the same id.
    receiver.set(Answer::Status(200));
    d.spawn();
    let got = receiver.wait_for(2, Duration::from_secs(10));
    assert_eq!(got[1].headers["webhook-id"], sent["id"].as_str().unwrap());
}

/// Credentials in a webhook's URL go as HTTP Basic authentication, as every
/// HTTP client sends them, and stay masked wherever the URL is shown.
#[test]
fn url_credentials_are_sent_as_basic_authentication() {
    let sink = HttpSink::start(Answer::Status(200));
    let d = Daemon::start(&accounts());
    let url = sink.url("/hooks").replacen("http://", "http://erp:p%40ss@", 1);
    let wh = create(&d, ADMIN, json!({"app": "erp", "event": "*", "url": url}));
    assert!(!wh.to_string().contains("p%40ss"), "masked: {wh}");
    publish(&d, "a", json!(1));
    let got = sink.wait_for(1, Duration::from_secs(5));
    use base64::Engine;
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("erp:p@ss"));
    assert_eq!(got[0].headers["authorization"], expected);
    assert_eq!(got[0].path, "/hooks");
    assert!(!d.log_text().contains("p%40ss") && !d.log_text().contains("p@ss"));
}

/// `replayEvents` (mailingwork's name) is taken beside `replay_events`.
#[test]
fn replay_events_is_also_taken_by_mailingworks_name() {
    let smtp = SmtpSink::start();
    let sink = HttpSink::start(Answer::Status(500));
    let d = Daemon::start_with_clock(&deactivation_config(smtp.port), Some(START));
    let id = fail_until_disabled(&d, &sink);
    let path = format!("/v1/webhooks/{id}/activate");
    let bad = d.post(&path, Some(ADMIN), r#"{"replayEvents": "yes"}"#);
    assert_eq!(
        (bad.status, bad.json()["error"]["field"].clone()),
        (422, json!("replayEvents"))
    );
    sink.set(Answer::Status(200));
    let r = d.post(&path, Some(ADMIN), r#"{"replayEvents": true}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    let got = sink.wait_for(4, Duration::from_secs(5));
    assert_eq!(got.len(), 4, "three failed attempts, then the buffered event replayed");
    d.eventually(Duration::from_secs(5), "the buffer delivered", || {
        Some(webhook(&d, &id)).filter(|w| w["pending"] == 0 && w["buffered"] == 0)
    });
}
