//! The store's journal through crashes: the process dies (as by kill -9,
//! from a test hook) at named points of the journal's append, its sync,
//! the apply to the database, the checkpoint and the replay at start.
//! Nothing acknowledged may be lost, every acknowledged event is delivered,
//! and the restart always succeeds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::http_sink::{Answer, HttpSink};
use crate::util::*;

/// A count to stop at, different on every run: the crash lands at a
/// different moment of the same step each time.
fn some(below: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    2 + u64::from(nanos) % below
}

/// Publishes from 4 clients until the daemon stops answering (or 1500 each);
/// returns the ids of the events it acknowledged.
fn publish_until_it_dies(base: &str) -> Vec<String> {
    let dead = AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let dead = &dead;
                s.spawn(move || {
                    let mut acked = Vec::new();
                    for i in 0..1500 {
                        if dead.load(Ordering::Relaxed) {
                            break;
                        }
                        let body = format!(r#"{{"event":"tick","data":{{"w":{w},"i":{i}}}}}"#);
                        let auth = format!("Bearer {INTEGRATION}");
                        let r = try_request_with(
                            &format!("{base}/v1/events"),
                            "POST",
                            &[("authorization", &auth)],
                            Some(("application/json", &body)),
                        );
                        match r {
                            Ok(r) if r.status == 202 => acked.push(r.json()["id"].as_str().unwrap().to_string()),
                            Ok(r) => panic!("a publish answered {}: {}", r.status, r.body),
                            Err(_) => {
                                dead.store(true, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                    acked
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    })
}

/// The ids of every stored `tick` event, page by page.
fn stored_ticks(d: &Daemon) -> HashSet<String> {
    let mut stored = HashSet::new();
    let mut after = 0;
    loop {
        let page = d
            .get(&format!("/v1/events?limit=1000&after={after}"), Some(ADMIN))
            .json();
        for e in page["events"].as_array().unwrap() {
            if e["event"] == "tick" {
                stored.insert(e["id"].as_str().unwrap().to_string());
            }
        }
        match page["next"].as_u64() {
            Some(next) => after = next,
            None => return stored,
        }
    }
}

/// One crash at `point`: a daemon with a webhook is armed to die the n-th
/// time it passes the point, takes events until it dies, then starts again
/// (once more dying in the replay, if asked) and must hold and deliver
/// every acknowledged event.
fn crash_at(point: &str, n: u64, then_in_replay: bool) {
    let sink = HttpSink::start(Answer::Status(200));
    let mut d = Daemon::start(&format!(
        "{}\n[webhooks]\nretry_schedule = [\"0s\", \"1s\"]\n",
        accounts()
    ));
    let r = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "*", "url": sink.url("/")}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));

    // Checkpoints every 20 ms, so that runs meet many.
    d.set_env("HERALD_TEST_CHECKPOINT_EVERY", Some("20"));
    d.set_env("HERALD_TEST_CRASH_AT", Some(&format!("{point}:{n}")));
    let mut acked = Vec::new();
    if d.try_spawn() {
        acked = publish_until_it_dies(&d.base);
        if !d.wait_gone(Duration::from_secs(10)) {
            d.fail(&format!("herald did not die at {point}:{n}"));
        }
    }
    assert!(
        !d.log_text().contains("panicked"),
        "{point}:{n}: a panic, not the crash\n{}",
        d.log_text()
    );

    if then_in_replay {
        d.set_env("HERALD_TEST_CRASH_AT", Some("replay:1"));
        assert!(!d.try_spawn(), "the start meant to die in the replay became ready");
    }
    d.set_env("HERALD_TEST_CRASH_AT", None);
    assert!(d.try_spawn(), "{point}:{n}: the restart failed");

    let stored = stored_ticks(&d);
    for id in &acked {
        if !stored.contains(id) {
            d.fail(&format!("{point}:{n}: acknowledged event {id} lost"));
        }
    }
    // Every stored event reaches the webhook, acknowledged or not; a second
    // delivery is the same message (same webhook-id and body).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = sink.received();
        let delivered: HashSet<String> = got.iter().map(|r| r.headers["webhook-id"].clone()).collect();
        if stored.iter().all(|id| delivered.contains(id)) {
            for r in &got {
                let id = &r.headers["webhook-id"];
                assert!(stored.contains(id), "{point}:{n}: delivered {id}, which is not stored");
                assert_eq!(
                    r.json()["id"],
                    id.as_str(),
                    "the body and the webhook-id name one event"
                );
            }
            break;
        }
        if std::time::Instant::now() > deadline {
            let missing = stored.iter().filter(|id| !delivered.contains(*id)).count();
            let webhooks = d.get("/v1/webhooks", Some(ADMIN)).body;
            let jobs = d.get("/v1/status", Some(ADMIN)).body;
            let metrics: String = d
                .get("/metrics", None)
                .body
                .lines()
                .filter(|l| l.contains("job") || l.contains("deliver") || l.contains("store_"))
                .map(|l| format!("{l}\n"))
                .collect();
            eprintln!("{metrics}");
            d.fail(&format!(
                "{point}:{n}: {missing} of {} stored events not delivered ({} received)\nwebhooks: {webhooks}\nstatus: {jobs}",
                stored.len(),
                got.len()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "{point}:{n}: {} acknowledged, {} stored, restart ok",
        acked.len(),
        stored.len()
    );
    d.kill9();
}

#[test]
fn a_crash_while_a_journal_record_is_written_loses_nothing_acknowledged() {
    crash_at("journal-append", some(150), false);
    crash_at("journal-append", some(400), false);
}

#[test]
fn a_crash_after_the_journal_sync_loses_nothing_and_a_crash_in_the_replay_neither() {
    crash_at("journal-synced", some(150), true);
    crash_at("journal-synced", some(400), false);
}

#[test]
fn a_crash_between_the_journal_and_the_database_loses_nothing() {
    crash_at("apply", some(150), false);
    crash_at("apply", some(400), true);
}

#[test]
fn a_crash_during_a_checkpoint_loses_nothing() {
    crash_at("checkpoint", some(6), false);
    crash_at("checkpoint-done", some(6), true);
}

/// A first start killed while redb writes its new file (its header before
/// its magic number) must not leave a file that no later start can open.
#[test]
fn a_first_start_cut_short_can_be_started_again() {
    let mut d = Daemon::prepare_with_clock(&accounts(), None);
    d.set_env("HERALD_TEST_CRASH_AT", Some("first-start:1"));
    assert!(!d.try_spawn(), "the test hook kills the first start");
    let data = d.data_dir();
    assert!(
        !data.join("herald.redb").exists(),
        "no database was left under its name"
    );
    d.set_env("HERALD_TEST_CRASH_AT", None);
    d.spawn();
    let r = d.post("/v1/events", Some(INTEGRATION), r#"{"event":"first","data":1}"#);
    assert_eq!(r.status, 202, "{}", r.body);
    assert!(!data.join("herald.redb.new").exists(), "the half-made file is gone");
    assert!(d.log_text().contains("the first start was cut short before"));
}

/// The journal is sized from `storage.max_size` and counts in it: a data
/// dir whose journal is larger (an older release's 8 MiB, or a lowered
/// max_size) is replayed first, then the journal gives back the rest.
#[test]
fn a_lowered_max_size_shrinks_the_journal_after_its_replay() {
    let mut d = Daemon::start(&accounts());
    let journal = d.data_dir().join("herald.journal");
    assert_eq!(std::fs::metadata(&journal).unwrap().len(), 8 << 20);
    let ids: Vec<String> = (0..50)
        .map(|i| {
            let r = d.post(
                "/v1/events",
                Some(INTEGRATION),
                &format!(r#"{{"event":"tick","data":{i}}}"#),
            );
            assert_eq!(r.status, 202, "{}", r.body);
            r.json()["id"].as_str().unwrap().to_string()
        })
        .collect();
    // Acknowledged, in the journal only: no checkpoint has run.
    d.kill9();
    let config = std::fs::read_to_string(d.config_path()).unwrap();
    let config = config.replace("[storage]", "[storage]\nmax_size = \"2MiB\"");
    std::fs::write(d.config_path(), config).unwrap();
    d.spawn();
    assert!(
        d.log_text().contains("applied the journal's commits"),
        "{}",
        d.log_text()
    );
    let listed: HashSet<String> = d.get("/v1/events?limit=1000", Some(ADMIN)).json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ids.into_iter().collect(), "every acknowledged event is there");
    assert_eq!(
        std::fs::metadata(&journal).unwrap().len(),
        256 << 10,
        "an eighth of 2 MiB"
    );
    assert!(du(&d.data_dir()) <= 2 << 20);
}
