//! Change notifications on the real binary, on the driven clock: the delay
//! and one ping per delay, the counter and suspension, the change query
//! with its cursor and role rule, the import and export, and a restart.

use std::time::Duration;

use serde_json::{Value, json};

use crate::http_sink::{Answer, HttpSink};
use crate::util::*;

const START: &str = "2026-12-01T10:00:00Z";

fn daemon(extra: &str) -> Daemon {
    Daemon::start_with_clock(
        &format!("[notifications]\ndelay = \"60s\"\n{extra}\n{}", accounts()),
        Some(START),
    )
}

fn put(d: &Daemon, system: &str, event: &str, body: Value) -> Reply {
    d.request(
        "PUT",
        &format!("/v1/notifications/{system}/{event}"),
        Some(&format!("Bearer {ADMIN}")),
        Some(("application/json", &body.to_string())),
    )
}

fn publish(d: &Daemon, event: &str, n: u32) {
    let r = d.post(
        "/v1/events",
        Some(ADMIN),
        &format!(r#"{{"event":"{event}","data":{{"n":{n}}}}}"#),
    );
    assert_eq!(r.status, 202, "{}", r.body);
}

fn basic_auth(name: &str, token: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{name}:{token}"))
    )
}

fn notification(d: &Daemon, system: &str) -> Value {
    d.get(&format!("/v1/notifications?system={system}"), Some(ADMIN)).json()["notifications"][0].clone()
}

#[test]
fn a_burst_is_one_ping_a_delay_after_its_first_event() {
    let sink = HttpSink::start(Answer::Status(200));
    let d = daemon("");
    let r = put(
        &d,
        "erp",
        "order.changed",
        json!({"url": sink.url("/ping?token=s3cret")}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.json()["url"],
        sink.url("/ping?token=***"),
        "secrets in URLs are masked"
    );
    for i in 0..50 {
        publish(&d, "order.changed", i);
    }
    publish(&d, "other.event", 0);
    assert_eq!(notification(&d, "erp")["next_send_at"], "2026-12-01T10:01:00.000Z");
    d.advance("59s");
    std::thread::sleep(Duration::from_millis(300));
    assert!(sink.received().is_empty(), "not before the delay");
    d.advance("1s");
    let got = sink.wait_for(1, Duration::from_secs(5));
    assert_eq!(
        (got[0].method.as_str(), got[0].path.as_str()),
        ("GET", "/ping?token=s3cret")
    );
    assert!(got[0].headers["user-agent"].starts_with("herald/"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.received().len(), 1, "50 events, one ping");
    let n = d.eventually(Duration::from_secs(5), "the ping counted", || {
        Some(notification(&d, "erp")).filter(|n| n["unacked"] == 1)
    });
    assert_eq!(n["last_sent_at"], "2026-12-01T10:01:00.000Z");
    let page = d.request("GET", "/", Some(&basic_auth("tech", TECHNICIAN)), None);
    assert!(
        page.body.contains("Change notifications") && page.body.contains("order.changed"),
        "{}",
        page.body
    );
    assert!(
        page.body.contains("token=***") && !page.body.contains("s3cret"),
        "{}",
        page.body
    );
    // An event right after the ping: the next one a delay after that ping.
    d.advance("10s");
    publish(&d, "order.changed", 99);
    assert_eq!(notification(&d, "erp")["next_send_at"], "2026-12-01T10:02:10.000Z");
}

#[test]
fn pings_count_until_suspension_and_a_change_query_resets_them() {
    let sink = HttpSink::start(Answer::Status(500));
    let d = daemon("max_unacked = 3");
    assert_eq!(put(&d, "erp", "a", json!({"url": sink.url("/")})).status, 201);
    publish(&d, "a", 1);
    for i in 1..=3 {
        d.advance("60s");
        sink.wait_for(i, Duration::from_secs(5));
        // Each failed ping counts, and its retry is planned a delay later.
        d.eventually(Duration::from_secs(5), "the ping recorded", || {
            Some(notification(&d, "erp")).filter(|n| n["unacked"] == i)
        });
    }
    let n = d.eventually(Duration::from_secs(5), "suspension", || {
        Some(notification(&d, "erp")).filter(|n| n["suspended"] == true)
    });
    assert_eq!(n["unacked"], 3, "{n}");
    assert!(n["last_error"]["message"].as_str().unwrap().contains("500"), "{n}");
    let page = d.request("GET", "/", Some(&basic_auth("tech", TECHNICIAN)), None);
    assert!(
        page.body.contains(">suspended<"),
        "the status page shows it: {}",
        page.body
    );
    let logs = d.newest_logs("erp", "");
    assert_eq!(logs["logs"][0]["category"], "external", "{logs}");
    // Suspended: no more pings, not even for new events.
    publish(&d, "a", 2);
    d.advance("5m");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.received().len(), 3);

    // The change query: both events, the counter back to 0, pings again.
    let page = d.get("/v1/changes?system=erp", Some(INTEGRATION)).json();
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs.len(), 2, "{page}");
    let n = notification(&d, "erp");
    assert_eq!((n["unacked"].clone(), n["suspended"].clone()), (json!(0), json!(false)));
    sink.set(Answer::Status(200));
    publish(&d, "a", 3);
    d.advance("60s");
    sink.wait_for(4, Duration::from_secs(5));
    // Reactivation and toggling reset the counter too.
    let r = d.post("/v1/notifications/erp/a/reactivate", Some(TECHNICIAN), "");
    assert_eq!((r.status, r.json()["unacked"].clone()), (200, json!(0)), "{}", r.body);
}

#[test]
fn the_change_query_pages_moves_its_cursor_and_keeps_to_its_system() {
    let d = daemon("");
    publish(&d, "a", 0); // before the notification: not in the feed
    assert_eq!(put(&d, "erp", "a", json!({"url": "http://127.0.0.1:9/"})).status, 201);
    assert_eq!(
        put(&d, "erp", "b", json!({"url": "http://127.0.0.1:9/", "inactive": 1})).status,
        201
    );
    for i in 1..=5 {
        publish(&d, if i % 2 == 0 { "b" } else { "a" }, i);
        publish(&d, "c", i);
    }
    let first = d.get("/v1/changes?system=erp&limit=3", Some(INTEGRATION)).json();
    let names: Vec<&str> = first["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "a"], "inactive notifications still feed the query");
    let next = first["next"].as_u64().expect("a next page");
    let second = d
        .get(&format!("/v1/changes?system=erp&after={next}"), Some(INTEGRATION))
        .json();
    assert_eq!(second["events"].as_array().unwrap().len(), 2);
    assert_eq!(second["next"], Value::Null);
    // The cursor moved: a query without `after` returns nothing new.
    let again = d.get("/v1/changes?system=erp", Some(INTEGRATION)).json();
    assert_eq!(again["events"].as_array().unwrap().len(), 0);
    // An integration reads only the system named like its account.
    assert_eq!(put(&d, "shop", "a", json!({"url": "http://127.0.0.1:9/"})).status, 201);
    assert_eq!(d.get("/v1/changes?system=shop", Some(INTEGRATION)).status, 403);
    assert_eq!(d.get("/v1/changes?system=shop", Some(TECHNICIAN)).status, 200);
    assert_eq!(d.get("/v1/changes?system=none", Some(ADMIN)).status, 404);
    // Deleting: 204, and it is gone.
    assert_eq!(put(&d, "erp", "b", json!({"inactive": 2})).status, 204);
    let list = d.get("/v1/notifications?system=erp", Some(ADMIN)).json();
    assert_eq!(list["notifications"].as_array().unwrap().len(), 1);
}

fn import(d: &Daemon, content_type: &str, body: &[u8]) -> Reply {
    let req = ureq::http::Request::post(format!("{}/v1/notifications/import", d.base))
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", content_type)
        .body(body.to_vec())
        .unwrap();
    let mut resp = agent().run(req).unwrap();
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap();
    Reply {
        status,
        body,
        headers: Vec::new(),
    }
}

#[test]
fn import_is_all_or_nothing_reads_latin1_and_round_trips_through_the_export() {
    let d = daemon("");
    let bad = b"API_NOTIFICATION;shop;1;https://shop.example.com/a;0\r\n\r\nAPI_NOTE;shop;2;https://x.io/;0\r\nAPI_NOTIFICATION;shop;1;ftp://x/;0\r\n";
    let r = import(&d, "text/csv; charset=utf-8", bad);
    assert_eq!(r.status, 422, "{}", r.body);
    let lines = r.json()["error"]["lines"].clone();
    assert_eq!(lines[0]["line"], 3);
    assert_eq!(lines[0]["field"], "Record type");
    assert_eq!(
        (lines[1]["line"].clone(), lines[1]["field"].clone()),
        (json!(4), json!("URL"))
    );
    assert_eq!(
        d.get("/v1/notifications", Some(ADMIN)).json()["notifications"],
        json!([]),
        "nothing applied"
    );

    let latin1 = b"API_NOTIFICATION;shop;3;https://shop.example.com/\xfcbersicht;0\nAPI_NOTIFICATION;crm;door.opened;http://127.0.0.1:9/x;1\n";
    let r = import(&d, "text/csv; charset=ISO-8859-1", latin1);
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"imported": 2, "deleted": 0})),
        "{}",
        r.body
    );
    let shop = notification(&d, "shop");
    assert_eq!(shop["event"], "sales_order.changed");
    assert_eq!(shop["url"], "https://shop.example.com/übersicht");

    let export = d.get("/v1/notifications?format=csv", Some(ADMIN));
    assert_eq!(export.status, 200);
    assert_eq!(export.header("content-type"), Some("text/csv; charset=utf-8"));
    // The gateway's name (the host's by default) names the file.
    let gateway = d.get("/v1/status", Some(ADMIN)).json()["gateway"]
        .as_str()
        .unwrap()
        .to_string();
    let safe: String = gateway
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    assert_eq!(
        export.header("content-disposition"),
        Some(format!("attachment; filename=\"herald-{safe}-notifications.csv\"").as_str()),
        "a file to save, with a name"
    );
    let one = d.get("/v1/notifications?format=csv&system=Shop%20B%2F1", Some(ADMIN));
    assert_eq!(
        one.header("content-disposition"),
        Some(format!("attachment; filename=\"herald-{safe}-notifications-Shop_B_1.csv\"").as_str())
    );
    assert_eq!(
        d.get("/v1/notifications?format=csv", Some(TECHNICIAN)).status,
        403,
        "URLs unmasked: admins only"
    );
    assert!(
        export
            .body
            .contains("API_NOTIFICATION;shop;sales_order.changed;https://shop.example.com/übersicht;0\r\n")
    );
    let again = import(&d, "text/csv; charset=utf-8", export.body.as_bytes());
    assert_eq!(
        again.json(),
        json!({"imported": 0, "deleted": 0}),
        "the round trip changes nothing"
    );
    let delete = import(
        &d,
        "text/csv",
        b"API_NOTIFICATION;crm;door.opened;http://127.0.0.1:9/x;2\nAPI_NOTIFICATION;none;a;http://x.io/;2\n",
    );
    assert_eq!(delete.json(), json!({"imported": 0, "deleted": 1}));
}

#[test]
fn a_ping_planned_before_a_kill_9_arrives_once_after_the_restart() {
    let sink = HttpSink::start(Answer::Status(200));
    let mut d = daemon("");
    assert_eq!(put(&d, "erp", "a", json!({"url": sink.url("/p")})).status, 201);
    publish(&d, "a", 1);
    d.kill9();
    d.set_clock("2026-12-01T10:02:00Z");
    d.spawn();
    sink.wait_for(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.received().len(), 1);
}

#[test]
fn unread_events_are_kept_up_to_keep_unread_then_counted_as_missed() {
    let d = Daemon::start_with_clock(
        &format!(
            "[storage]\nretention = \"1h\"\n[notifications]\ndelay = \"60s\"\nkeep_unread = \"2h\"\n{}",
            accounts()
        ),
        Some(START),
    );
    assert_eq!(put(&d, "erp", "a", json!({"url": "http://127.0.0.1:9/"})).status, 201);
    assert_eq!(put(&d, "shop", "b", json!({"url": "http://127.0.0.1:9/"})).status, 201);
    publish(&d, "a", 1);
    publish(&d, "b", 2);
    publish(&d, "c", 3);
    // shop reads its feed; erp does not.
    assert_eq!(
        d.get("/v1/changes?system=shop", Some(ADMIN)).json()["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let count = |d: &Daemon| {
        d.get("/v1/events", Some(ADMIN)).json()["events"]
            .as_array()
            .unwrap()
            .len()
    };
    for _ in 0..16 {
        d.advance("6m"); // past the 1 h retention, within keep_unread
        std::thread::sleep(Duration::from_millis(50));
    }
    let kept = d.eventually(Duration::from_secs(5), "retention of what was read", || {
        let events = d.get("/v1/events", Some(ADMIN)).json();
        let names: Vec<String> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect();
        (names == ["a"]).then_some(names)
    });
    assert_eq!(kept, ["a"], "erp has not read it yet");
    for _ in 0..12 {
        d.advance("6m"); // past keep_unread
        std::thread::sleep(Duration::from_millis(50));
    }
    d.eventually(Duration::from_secs(5), "the unread event dropped", || {
        (count(&d) == 0).then_some(())
    });
    let erp = notification(&d, "erp");
    assert_eq!(erp["missed"], 1, "{erp}");
    let logs = d.newest_logs("erp", "?category=cascade");
    let line = logs["logs"][0]["message"].as_str().unwrap_or_default().to_string();
    assert!(line.contains("dropped unread"), "{logs}");
}

#[test]
fn toggling_resets_the_counter_and_deleting_cancels_the_planned_ping() {
    let sink = HttpSink::start(Answer::Status(200));
    let d = daemon("max_unacked = 2");
    assert_eq!(put(&d, "erp", "a", json!({"url": sink.url("/")})).status, 201);
    for i in 1..=2 {
        publish(&d, "a", i);
        d.advance("60s");
        sink.wait_for(i as usize, Duration::from_secs(5));
        d.eventually(Duration::from_secs(5), "the ping recorded", || {
            Some(notification(&d, "erp")).filter(|n| n["unacked"] == i)
        });
    }
    assert_eq!(notification(&d, "erp")["suspended"], true);
    // The same URL again changes nothing, the counter included.
    let same = put(&d, "erp", "a", json!({"url": sink.url("/")}));
    assert_eq!((same.status, same.json()["unacked"].clone()), (200, json!(2)));
    assert_eq!(
        put(&d, "erp", "a", json!({"url": sink.url("/"), "inactive": 1})).json()["inactive"],
        1
    );
    let back = put(&d, "erp", "a", json!({"url": sink.url("/"), "inactive": 0}));
    assert_eq!(
        (back.json()["unacked"].clone(), back.json()["suspended"].clone()),
        (json!(0), json!(false)),
        "{}",
        back.body
    );
    // A ping planned, then the notification deleted: no ping.
    publish(&d, "a", 3);
    assert!(notification(&d, "erp")["next_send_at"].is_string());
    assert_eq!(put(&d, "erp", "a", json!({"inactive": 2})).status, 204);
    d.advance("5m");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.received().len(), 2);
}

/// A Collmex event number names its event in the PUT path as in the import.
#[test]
fn a_collmex_event_number_names_its_event_in_the_path() {
    let sink = HttpSink::start(Answer::Status(200));
    let d = daemon("");
    let r = put(&d, "shop", "3", json!({"url": sink.url("/p")}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["event"], "sales_order.changed");
    let r = put(&d, "shop", "3", json!({"url": sink.url("/p"), "inactive": 1}));
    assert_eq!(r.status, 200, "the same notification: {}", r.body);
    let r = put(&d, "shop", "10", json!({"url": sink.url("/p")}));
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("Collmex event number"), "{}", r.body);
}

/// A Collmex `System` is up to 20 characters of any printable text: it is
/// percent-encoded in paths and comes back whole.
#[test]
fn a_system_of_printable_text_is_taken_in_paths() {
    let sink = HttpSink::start(Answer::Status(200));
    let d = daemon("");
    let r = put(&d, "Shop%20B%2F%C3%BCber", "1", json!({"url": sink.url("/p")}));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["system"], "Shop B/über");
    let listed = d
        .get("/v1/notifications?system=Shop%20B%2F%C3%BCber", Some(ADMIN))
        .json();
    assert_eq!(listed["notifications"][0]["event"], "booking.posted", "{listed}");
    let r = put(&d, "Shop%0AB", "1", json!({"url": sink.url("/p")}));
    assert_eq!((r.status, r.json()["error"]["field"].clone()), (422, json!("system")));
    let r = put(&d, &"x".repeat(21), "1", json!({"url": sink.url("/p")}));
    assert_eq!(r.status, 422, "{}", r.body);
    // The export quotes nothing it need not; the import takes it back.
    let export = d.get("/v1/notifications?format=csv", Some(ADMIN)).body;
    assert!(
        export.contains("API_NOTIFICATION;Shop B/über;booking.posted;"),
        "{export}"
    );
}
