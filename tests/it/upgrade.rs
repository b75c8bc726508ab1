//! Upgrades: a data dir written by an earlier release opens with this build
//! and everything in it goes on working.
//!
//! Each release keeps a fixture in `tests/fixtures/`: the data dir of
//! [`write_fixture`] run on that release's binary, zipped. It holds events
//! with idempotency keys, a webhook with a retry pending, a deactivated one
//! with a buffer, queued mail, a planned ping, an action to call again and
//! one awaiting its callback, a planned run and one cut by the crash, and
//! so a job of every kind that release knew. The daemon was killed with
//! SIGKILL, so the journal holds commits that the database does not yet.
//!
//! To add the fixture of a new release, on that release's commit:
//! `HERALD_WRITE_FIXTURE=tests/fixtures/NAME.zip cargo test upgrade::write_fixture -- --ignored`
//! then add a test below that opens it.
//!
//! What herald stores names the counterparts by URL, so the fixture's
//! receivers listen on fixed loopback ports (below the ephemeral range,
//! where the other tests' receivers cannot be).

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::http_sink::{Answer, HttpSink};
use crate::smtp_sink::SmtpSink;
use crate::util::*;

/// The receivers' fixed ports, as stored in the fixtures.
const HTTP_PORT: u16 = 19801;
const SMTP_PORT: u16 = 19802;
/// Where the fixture's driven clock started, and where it stood at the kill.
const START: &str = "2026-12-01T10:00:00Z";
const AT_KILL: &str = "2026-12-01T10:01:30Z";

fn config() -> String {
    format!(
        "[general]\nname = \"gw-fixture\"\ntimezone = \"Europe/Zurich\"\n\
         [server]\npublic_url = \"https://gw.example.com:8470\"\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {SMTP_PORT}\nsecurity = \"none\"\nfrom = \"herald@example.com\"\n\
         retry_schedule = [\"30s\"]\n\
         [alerts]\ndebounce = \"60s\"\nmax_delay = \"15m\"\nsystem_recipients = [\"noc@example.com\"]\n\
         [webhooks]\nretry_schedule = [\"0s\", \"30s\"]\ndisable_after = \"1m\"\nbuffer_for = \"1h\"\n\
         [notifications]\ndelay = \"60s\"\n\
         [[interfaces]]\nname = \"crm\"\nkind = \"action\"\nurl = \"http://127.0.0.1:{HTTP_PORT}/crm\"\n\
         attempts = 3\nretry_wait = \"5m\"\naction_timeout = \"2h\"\ntimeout_queue = \"backoffice\"\n\
         [[interfaces]]\nname = \"shop\"\nkind = \"pull\"\nurl = \"http://127.0.0.1:{HTTP_PORT}/shop\"\ntimeout = \"1h\"\n\
         [[schedules]]\nname = \"shop-hourly\"\ninterface = \"shop\"\nevery = \"1h\"\n\
         {}",
        accounts()
    )
}

fn ok(r: Reply, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    r.json()
}

fn publish(d: &Daemon, event: &str, n: u32, key: Option<&str>) -> Value {
    let mut body = json!({"event": event, "data": {"n": n}});
    if let Some(k) = key {
        body["idempotency_key"] = json!(k);
    }
    d.post("/v1/events", Some(INTEGRATION), &body.to_string()).json()
}

fn webhook_by_url(d: &Daemon, path: &str) -> Value {
    let all = d.get("/v1/webhooks", Some(ADMIN)).json();
    let url = format!("http://127.0.0.1:{HTTP_PORT}{path}");
    all["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["url"] == url.as_str())
        .cloned()
        .unwrap_or_else(|| d.fail(&format!("no webhook at {url}: {all}")))
}

fn action_with_key(d: &Daemon, key: &str) -> Value {
    let r = d.post(
        "/v1/actions",
        Some(INTEGRATION),
        &json!({"interface": "crm", "payload": {"key": key}, "idempotency_key": key}).to_string(),
    );
    assert_eq!(r.status, 200, "the action exists already: {}", r.body);
    r.json()
}

/// Writes the data dir of this release's binary to `HERALD_WRITE_FIXTURE`.
#[test]
#[ignore = "run on a release's commit to write its fixture"]
fn write_fixture() {
    let out = std::env::var("HERALD_WRITE_FIXTURE").expect("HERALD_WRITE_FIXTURE names the zip to write");
    let sink = HttpSink::start_on(HTTP_PORT, Answer::Status(500));
    let d = Daemon::start_with_clock(&config(), Some(START));

    // Events, three with idempotency keys.
    for (n, key) in [(1, Some("k-1")), (2, Some("k-2")), (3, None)] {
        assert_eq!(publish(&d, "door.opened", n, key)["seq"], n);
    }
    // A webhook that fails: its retry stays pending.
    let body = json!({"app": "erp", "event": "door.opened", "url": format!("http://127.0.0.1:{HTTP_PORT}/a")});
    ok(d.post("/v1/webhooks", Some(ADMIN), &body.to_string()), 201);
    // One that fails until deactivated (its creator is mailed), then buffers.
    let body = json!({"app": "erp", "event": "gate.closed", "url": format!("http://127.0.0.1:{HTTP_PORT}/b")});
    let b = ok(d.post("/v1/webhooks", Some(ADMIN), &body.to_string()), 201);
    let b = b["id"].as_str().unwrap().to_string();
    publish(&d, "gate.closed", 4, None);
    let attempts = |n: usize| {
        d.eventually(Duration::from_secs(10), &format!("attempt {n}"), || {
            let a = d.get(&format!("/v1/webhooks/{b}/attempts"), Some(ADMIN)).json();
            (a["attempts"].as_array().unwrap().len() == n).then_some(())
        })
    };
    attempts(1);
    // An action accepted (it waits for its callback) and one failing (its retry pending).
    let action = |answer: Answer, key: &str, state: &str| {
        sink.set(answer);
        let body = json!({"interface": "crm", "payload": {"key": key}, "idempotency_key": key});
        let id = ok(d.post("/v1/actions", Some(INTEGRATION), &body.to_string()), 201)["id"]
            .as_str()
            .unwrap()
            .to_string();
        d.eventually(Duration::from_secs(10), &format!("{key} {state}"), || {
            (d.get(&format!("/v1/actions/{id}"), Some(ADMIN)).json()["state"] == state).then_some(())
        });
    };
    action(Answer::Status(202), "act-waits", "waiting");
    action(Answer::Status(500), "act-retries", "retrying");
    d.advance("40s");
    attempts(2);
    d.advance("40s");
    attempts(3);
    d.eventually(Duration::from_secs(10), "the deactivation", || {
        (d.get(&format!("/v1/webhooks/{b}"), Some(ADMIN)).json()["state"] == "disabled").then_some(())
    });
    publish(&d, "gate.closed", 5, None);
    publish(&d, "gate.closed", 6, None);
    // A change notification whose ping is planned.
    let ping = json!({"url": format!("http://127.0.0.1:{HTTP_PORT}/ping"), "inactive": 0});
    let r = d.request(
        "PUT",
        "/v1/notifications/erp/door.opened",
        Some(&format!("Bearer {ADMIN}")),
        Some(("application/json", &ping.to_string())),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    d.advance("10s");
    publish(&d, "door.opened", 7, Some("k-7"));
    // A run that hangs: the crash cuts it, its anomaly job is planned.
    sink.set(Answer::Hang);
    let run = ok(d.post("/v1/schedules/shop-hourly/run", Some(TECHNICIAN), ""), 202);
    let run = run["execution_id"].as_str().unwrap().to_string();
    sink.wait_for(1, Duration::from_secs(1));
    d.eventually(Duration::from_secs(10), "the run's call", || {
        sink.received().iter().any(|r| r.path == "/shop").then_some(())
    });

    let status = d.get("/v1/status", Some(ADMIN)).json();
    assert_eq!(
        d.get(&format!("/v1/executions/{run}"), Some(ADMIN)).json()["status"],
        "running"
    );
    eprintln!("status at the kill: {status}");
    let mut d = d;
    d.kill9();
    zip_dir(&d.data_dir(), Path::new(&out));
}

fn zip_dir(dir: &Path, out: &Path) {
    let file = std::fs::File::create(out).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    for name in names {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(&std::fs::read(dir.join(&name)).unwrap()).unwrap();
    }
    zip.finish().unwrap();
}

fn unzip_to(fixture: &Path, dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut zip = zip::ZipArchive::new(std::fs::File::open(fixture).unwrap()).unwrap();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let path = dir.join(entry.name().unwrap().as_ref());
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Opens the fixture `name` with this build, on the clock where it was left.
fn open_fixture(name: &str) -> Daemon {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let mut d = Daemon::prepare_with_clock(&config(), Some(AT_KILL));
    unzip_to(&fixture, &d.data_dir());
    d.spawn();
    d
}

/// Everything the first release's data dir holds goes on working.
#[test]
fn the_first_release_data_dir_opens_and_goes_on_working() {
    let sink = HttpSink::start_on(HTTP_PORT, Answer::Body(200, "[]".into()));
    let smtp = SmtpSink::start_on(SMTP_PORT, false);
    let d = open_fixture("0.1.0-c0b0aed.zip");

    // Events and their idempotency keys, the acknowledged ones all there.
    let names = d.event_names();
    let door = names.iter().filter(|n| *n == "door.opened").count();
    let gate = names.iter().filter(|n| *n == "gate.closed").count();
    assert_eq!((door, gate), (4, 3), "{names:?}");
    let again = d.post(
        "/v1/events",
        Some(INTEGRATION),
        &json!({"event": "door.opened", "data": {"n": 1}, "idempotency_key": "k-7"}).to_string(),
    );
    assert_eq!(again.status, 200, "a used key stays used: {}", again.body);
    let fresh = publish(&d, "door.opened", 8, Some("k-8"));
    assert!(fresh["seq"].as_u64().unwrap() > 7, "seq goes on: {fresh}");

    // The run the crash cut is closed KO; the planned one comes on time.
    let runs = d.get("/v1/executions?interface=shop", Some(ADMIN)).json();
    let cut = runs["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "ko")
        .count();
    assert_eq!(cut, 1, "{runs}");

    // The accepted action still waits, the failing one is still to retry.
    let waits = action_with_key(&d, "act-waits");
    assert_eq!(waits["state"], "waiting", "{waits}");
    let retries = action_with_key(&d, "act-retries");
    assert_eq!(retries["state"], "retrying", "{retries}");

    // The deactivated webhook keeps its buffer.
    let b = webhook_by_url(&d, "/b");
    assert_eq!(
        (b["state"].clone(), b["buffered"].clone()),
        (json!("disabled"), json!(3)),
        "{b}"
    );

    // Time goes on: the ping, the retries, the mails, the planned run.
    d.advance("6m");
    let paths = |sink: &HttpSink| sink.received().iter().map(|r| r.path.clone()).collect::<Vec<_>>();
    d.eventually(Duration::from_secs(15), "the pending work to be done", || {
        let p = paths(&sink);
        let a = p.iter().filter(|p| *p == "/a").count();
        (a >= 2 && p.iter().any(|p| p.starts_with("/ping")) && p.iter().any(|p| p == "/crm")).then_some(())
    });
    let to_a: Vec<u64> = sink
        .received()
        .iter()
        .filter(|r| r.path == "/a")
        .map(|r| r.json()["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(to_a, [7, 8], "the retry, then the new event");
    assert_eq!(webhook_by_url(&d, "/a")["state"], "active");
    let retried = d.get(&format!("/v1/actions/{}", retries["id"].as_str().unwrap()), Some(ADMIN));
    assert_eq!(retried.json()["state"], "waiting", "{}", retried.body);
    let mails = smtp.wait_for(1, Duration::from_secs(15));
    assert!(
        mails.iter().any(|m| m.subject.contains("deactivated")),
        "{:?}",
        mails.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );

    // Replaying the buffer delivers the three events in order.
    let r = d.post(
        &format!("/v1/webhooks/{}/activate", b["id"].as_str().unwrap()),
        Some(ADMIN),
        r#"{"replay_events": true}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let to_b = d.eventually(Duration::from_secs(15), "the replay", || {
        let got: Vec<u64> = sink
            .received()
            .iter()
            .filter(|r| r.path == "/b")
            .map(|r| r.json()["data"]["n"].as_u64().unwrap())
            .collect();
        (got.len() >= 3).then_some(got)
    });
    assert_eq!(to_b, [4, 5, 6]);

    // The next hourly run is made, and the accepted action times out to its queue.
    d.advance("2h");
    d.eventually(Duration::from_secs(15), "the next run and the timeout", || {
        let runs = d.get("/v1/executions?interface=shop", Some(ADMIN)).json();
        let ok_run = runs["executions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["status"] == "ok");
        let w = d
            .get(&format!("/v1/actions/{}", waits["id"].as_str().unwrap()), Some(ADMIN))
            .json();
        (ok_run && w["state"] == "todo").then_some(())
    });

    // The data dir now says what it holds: the release before this one,
    // which knows schema 1, refuses it with its own message.
    let mut d = d;
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
    let db = redb::Database::open(d.data_dir().join("herald.redb")).unwrap();
    let r = redb::ReadableDatabase::begin_read(&db).unwrap();
    let meta = r.open_table(redb::TableDefinition::<&str, u64>::new("meta")).unwrap();
    let schema = redb::ReadableTable::get(&meta, "schema_version")
        .unwrap()
        .unwrap()
        .value();
    assert_eq!(schema, 2);
}
