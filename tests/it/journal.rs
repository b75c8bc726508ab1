//! Execution log lines in the systemd journal: the test binds a datagram
//! socket where journald's would be, points the daemon at it
//! (`HERALD_JOURNAL_SOCKET`) and reads the entries back in journald's
//! native protocol.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::http_sink::{Answer, HttpSink};
use crate::util::*;

/// One entry: its fields, as journald reads a datagram.
type Entry = HashMap<String, String>;

fn parse(mut b: &[u8]) -> Entry {
    let mut out = Entry::new();
    while !b.is_empty() {
        let end = b
            .iter()
            .position(|&c| c == b'=' || c == b'\n')
            .expect("a field name ends with = or a newline");
        let name = String::from_utf8(b[..end].to_vec()).unwrap();
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_'),
            "journald drops the field name {name:?}"
        );
        let value;
        if b[end] == b'=' {
            let nl = end
                + b[end..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .expect("a newline ends the value");
            value = &b[end + 1..nl];
            b = &b[nl + 1..];
        } else {
            let len = u64::from_le_bytes(b[end + 1..end + 9].try_into().unwrap()) as usize;
            value = &b[end + 9..end + 9 + len];
            assert_eq!(b[end + 9 + len], b'\n', "a newline ends a binary field");
            b = &b[end + 10 + len..];
        }
        out.insert(name, String::from_utf8(value.to_vec()).unwrap());
    }
    out
}

struct Journal {
    socket: UnixDatagram,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    got: Vec<(Entry, String)>,
}

impl Journal {
    fn bind() -> Journal {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        Journal {
            socket,
            path,
            _dir: dir,
            got: Vec::new(),
        }
    }

    /// A socket, and a daemon started with `config` that sends to it.
    fn with_daemon(config: &str) -> (Journal, Daemon) {
        let journal = Journal::bind();
        let mut d = Daemon::prepare_with_clock(&format!("{}{config}", accounts()), None);
        d.set_env("HERALD_JOURNAL_SOCKET", Some(journal.path.to_str().unwrap()));
        d.spawn();
        (journal, d)
    }

    /// Reads what came until `done` holds of what came, or fails after 10 s.
    fn until(&mut self, d: &Daemon, what: &str, done: impl Fn(&[(Entry, String)]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = vec![0u8; 1 << 17];
        while !done(&self.got) {
            if Instant::now() > deadline {
                let seen: Vec<&String> = self.got.iter().map(|(_, raw)| raw).collect();
                d.fail(&format!("the journal never got {what}; it got {seen:#?}"));
            }
            if let Ok(n) = self.socket.recv(&mut buf) {
                let raw = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.got.push((parse(&buf[..n]), raw));
            }
        }
    }
}

fn lines_of(d: &Daemon, execution: &str) -> Vec<Value> {
    d.get(&format!("/v1/executions/{execution}/logs?limit=1000"), Some(ADMIN))
        .json()["logs"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn every_execution_line_is_a_journal_entry_with_fields_to_select_on_and_no_secret() {
    let sink = HttpSink::start(Answer::Status(200));
    let (mut journal, d) = Journal::with_daemon("[general]\nname = \"gw-7\"\n");

    // Secrets a line could carry: the webhook's signing secret, a password
    // in its URL, a token in its query, a password in an answer's body,
    // and the credentials of a refused API call.
    let url = sink
        .url("/hooks?token=tok-in-the-query")
        .replacen("http://", "http://erp:p%40ss-in-url@", 1);
    let secret = "whsec_c2VjcmV0LXRoYXQtc3RheXMtaW4taGVyYWxk";
    let r = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "*", "url": url, "secret": secret}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let publish = |n: u32| {
        let r = d.post(
            "/v1/events",
            Some(ADMIN),
            &json!({"event": "door.opened", "data": n}).to_string(),
        );
        assert_eq!(r.status, 202, "{}", r.body);
    };
    publish(1);
    sink.wait_for(1, Duration::from_secs(5));
    sink.set(Answer::Body(
        500,
        json!({"error": "down", "password": "hunter2-in-the-answer"}).to_string(),
    ));
    publish(2);
    let wrong = d.request("GET", "/v1/events", Some("not-a-token-of-anyone"), None);
    assert_eq!(wrong.status, 401);

    // The webhook's daily execution: a delivery (info) and a failure.
    let exe = d.eventually(Duration::from_secs(10), "a failed delivery", || {
        let list = d.get("/v1/executions?interface=erp", Some(ADMIN)).json();
        list["executions"]
            .get(0)
            .cloned()
            .filter(|e| e["errors"].as_u64() >= Some(1))
    });
    let id = exe["id"].as_str().unwrap().to_string();
    let lines = lines_of(&d, &id);
    journal.until(&d, "each line of the webhook's execution", |got| {
        got.iter()
            .filter(|(e, _)| e.get("HERALD_EXECUTION") == Some(&id))
            .count()
            >= lines.len()
    });

    // Each line is one entry, in order, with the fields a shipper selects on.
    let entries: Vec<&Entry> = journal
        .got
        .iter()
        .map(|(e, _)| e)
        .filter(|e| e.get("HERALD_EXECUTION") == Some(&id))
        .collect();
    for (n, (line, entry)) in lines.iter().zip(&entries).enumerate() {
        assert_eq!(entry["HERALD_LINE"], n.to_string(), "{entry:?}");
        assert_eq!(entry["HERALD_INTERFACE"], "erp");
        assert_eq!(entry["HERALD_GATEWAY"], "gw-7");
        assert_eq!(entry["SYSLOG_IDENTIFIER"], "herald");
        assert_eq!(entry["HERALD_TIME"], line["at"].as_str().unwrap());
        let level = line["level"].as_str().unwrap();
        assert_eq!(entry["HERALD_LEVEL"], level);
        let priority = match level {
            "error" => "3",
            "warn" => "4",
            _ => "6",
        };
        assert_eq!(entry["PRIORITY"], priority, "{entry:?}");
        assert_eq!(
            entry.get("HERALD_CATEGORY").map(String::as_str),
            line["category"].as_str()
        );
        let message = entry["MESSAGE"].as_str();
        assert!(
            message.starts_with(line["message"].as_str().unwrap()),
            "{message:?} against {line}"
        );
        if let Some(detail) = line["detail"].as_str() {
            assert!(message.ends_with(detail), "{message:?} ends with its detail {detail:?}");
        }
    }
    let success = lines
        .iter()
        .position(|l| l["level"] == "info")
        .expect("a delivery line");
    assert_eq!(entries[success]["PRIORITY"], "6");
    let failure = lines.iter().position(|l| l["level"] != "info").expect("a failure line");
    assert!(
        entries[failure].contains_key("HERALD_CATEGORY"),
        "{:?}",
        entries[failure]
    );

    // The refused API call is a line of the `api` interface, and an entry too.
    journal.until(&d, "the refused API call", |got| {
        got.iter()
            .any(|(e, _)| e.get("HERALD_INTERFACE").map(String::as_str) == Some("api"))
    });

    let token = std::fs::read_to_string(d.data_dir().join("admin.token")).unwrap_or_default();
    for (_, raw) in &journal.got {
        for secret in [
            secret,
            "p@ss-in-url",
            "p%40ss-in-url",
            "tok-in-the-query",
            "hunter2-in-the-answer",
            "not-a-token-of-anyone",
            ADMIN,
        ]
        .into_iter()
        .chain((!token.trim().is_empty()).then_some(token.trim()))
        {
            assert!(!raw.contains(secret), "the journal got {secret:?}: {raw}");
        }
    }
}

#[test]
fn general_journal_sets_the_lowest_level_sent() {
    let sink = HttpSink::start(Answer::Status(500));
    let (mut journal, d) = Journal::with_daemon("[general]\njournal = \"warn\"\n");
    let r = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "*", "url": sink.url("/h")}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    sink.set(Answer::Status(200));
    let r = d.post("/v1/events", Some(ADMIN), &json!({"event": "a", "data": 1}).to_string());
    assert_eq!(r.status, 202);
    sink.wait_for(1, Duration::from_secs(5));
    sink.set(Answer::Status(500));
    let r = d.post("/v1/events", Some(ADMIN), &json!({"event": "b", "data": 2}).to_string());
    assert_eq!(r.status, 202);
    journal.until(&d, "the failed delivery", |got| {
        got.iter()
            .any(|(e, _)| e.get("HERALD_INTERFACE").map(String::as_str) == Some("erp"))
    });
    // The success line was written before the failure: had it been sent, it came first.
    let erp: Vec<&Entry> = journal
        .got
        .iter()
        .map(|(e, _)| e)
        .filter(|e| e.get("HERALD_INTERFACE").map(String::as_str) == Some("erp"))
        .collect();
    assert!(erp.iter().all(|e| e["HERALD_LEVEL"] != "info"), "{erp:?}");
    let lines = d.newest_logs("erp", "");
    assert!(
        lines["logs"].as_array().unwrap().iter().any(|l| l["level"] == "info"),
        "the execution keeps the info line: {lines}"
    );
}

#[test]
fn a_bad_general_journal_names_the_key_and_the_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, "[general]\njournal = \"verbose\"\n").unwrap();
    let (code, _, err) = run_cli(&["check-config", "--config", path.to_str().unwrap()], None);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("general.journal") && err.contains("warn"), "{err}");
}

/// A journald that takes nothing (its socket is never read) holds up
/// neither the store nor the deliveries: lines it cannot take are dropped
/// from the journal, herald says so, and the executions keep them all.
#[test]
fn a_journal_that_takes_nothing_holds_up_nothing() {
    let sink = HttpSink::start(Answer::Status(200));
    let (_journal, d) = Journal::with_daemon("");
    let r = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "*", "url": sink.url("/h")}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // More lines than the socket's queue holds (512 datagrams by default).
    const EVENTS: usize = 1500;
    for chunk in 0..EVENTS / 100 {
        let batch: Vec<Value> = (0..100)
            .map(|i| json!({"event": "door.opened", "data": chunk * 100 + i}))
            .collect();
        let r = d.post("/v1/events", Some(ADMIN), &Value::Array(batch).to_string());
        assert_eq!(r.status, 202, "{}", r.body);
    }
    sink.wait_for(EVENTS, Duration::from_secs(20));
    let exe = d.eventually(Duration::from_secs(10), "every delivery counted", || {
        let list = d.get("/v1/executions?interface=erp", Some(ADMIN)).json();
        list["executions"].get(0).cloned().filter(|e| e["successes"] == EVENTS)
    });
    assert_eq!(exe["errors"], 0);
    d.eventually(
        Duration::from_secs(10),
        "herald saying the journal took nothing",
        || d.log_text().contains("could not be sent to the journal").then_some(()),
    );
    let r = d.post("/v1/events", Some(ADMIN), r#"{"event":"after"}"#);
    assert_eq!(r.status, 202, "{}", r.body);
}
