//! Operations: crash safety, shutdown, config errors, the out-of-the-box
//! start, a full store, reload, and the command line.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::smtp_sink::SmtpSink;
use crate::util::*;

#[test]
fn kill_9_after_acknowledged_events_loses_none() {
    let mut d = Daemon::start(&accounts());
    // 500 events from 10 concurrent clients, each acknowledged before the kill.
    let base = d.base.clone();
    let ids: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..10)
            .map(|w| {
                let base = base.clone();
                s.spawn(move || {
                    (0..50)
                        .map(|i| {
                            let r = request(
                                &format!("{base}/v1/events"),
                                "POST",
                                Some(&format!("Bearer {INTEGRATION}")),
                                Some((
                                    "application/json",
                                    &format!(r#"{{"event":"tick","data":{{"w":{w},"i":{i}}}}}"#),
                                )),
                            );
                            assert_eq!(r.status, 202, "{}", r.body);
                            r.json()["id"].as_str().unwrap().to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    assert_eq!(ids.len(), 500);
    d.kill9();
    d.spawn();
    let stored = d.get("/v1/events?limit=1000", Some(ADMIN)).json();
    let stored: HashSet<String> = stored["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let acked: HashSet<String> = ids.into_iter().collect();
    assert_eq!(stored, acked, "every acknowledged event survives kill -9");
}

#[test]
fn sigterm_drains_and_exits_0() {
    let mut d = Daemon::start(&format!("[server]\ndrain_timeout = \"3s\"\n{}", accounts()));
    assert_eq!(d.post("/v1/events", Some(ADMIN), r#"{"event":"a"}"#).status, 202);
    let started = Instant::now();
    d.signal("TERM");
    let code = d.wait_exit(Duration::from_secs(4));
    assert_eq!(code, Some(0), "exit code after SIGTERM");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(d.log_text().contains("stopped"));
    // The data is intact for the next start.
    d.spawn();
    assert_eq!(
        d.get("/v1/events", Some(ADMIN)).json()["events"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn bad_config_exits_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"not-an-address\"\n").unwrap();
    let p = path.to_str().unwrap();
    let (code, _, err) = run_cli(&["serve", "--config", p], None);
    assert_eq!(code, Some(78));
    assert!(
        err.contains("config line 2: server.listen: \"not-an-address\" is not an address like 127.0.0.1:8470"),
        "{err}"
    );
    let (code, _, err) = run_cli(&["check-config", "--config", p], None);
    assert_eq!(code, Some(78));
    assert!(err.contains("server.listen"), "{err}");

    std::fs::write(&path, "[storage]\nretention = \"5d\"\n\nretension = \"6d\"\n").unwrap();
    let (code, _, err) = run_cli(&["check-config", "--config", p], None);
    assert_eq!(code, Some(78));
    assert!(err.contains("config line 4: storage.retension: unknown field"), "{err}");

    std::fs::write(&path, "[storage]\nretention = \"5d\"\n").unwrap();
    let (code, out, err) = run_cli(&["check-config", "--config", p], None);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("config OK"));
}

#[test]
fn a_bad_rust_log_is_named_and_logging_goes_on_at_info() {
    let mut d = Daemon::start("");
    d.kill9();
    d.set_rust_log("herald=loud");
    d.spawn();
    let log = d.log_text();
    if !log.contains(r#"RUST_LOG="herald=loud" is not a list like warn,herald=debug"#) {
        d.fail("no warning naming the bad RUST_LOG");
    }
    // `spawn` found "listening on" after the restart: info lines still come.
    assert_eq!(d.get("/healthz", None).status, 200);
}

#[test]
fn serve_without_config_answers_on_8470() {
    // The built-in default port: when something else holds it (a herald the
    // README's run command started, say), this check cannot run here.
    if std::net::TcpListener::bind("127.0.0.1:8470").is_err() {
        eprintln!("skipped: 127.0.0.1:8470 is in use; stop what listens there to check the built-in defaults");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("HERALD_CONFIG")
        .env_remove("STATE_DIRECTORY")
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ok = false;
    while Instant::now() < deadline && !ok {
        ok = std::net::TcpStream::connect("127.0.0.1:8470").is_ok()
            && request("http://127.0.0.1:8470/readyz", "GET", None, None).status == 200;
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    let token_file = dir.path().join("herald-data/admin.token");
    let result = std::panic::catch_unwind(|| {
        assert!(ok, "no answer on 127.0.0.1:8470");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();
        assert!(!log.contains(&token), "the token must never be logged");
        assert!(log.contains("admin.token"), "the log names the token file: {log}");
        let r = request(
            "http://127.0.0.1:8470/v1/events",
            "POST",
            Some(&format!("Bearer {token}")),
            Some(("application/json", r#"{"event":"hello"}"#)),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        // `herald status` finds the daemon and the token by itself.
        let (code, out, err) = run_cli(&["status"], Some(dir.path()));
        assert_eq!(code, Some(0), "{out}{err}");
        assert!(out.contains("events stored:     1"), "{out}");
    });
    let _ = std::process::Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    if let Err(e) = result {
        eprintln!(
            "{}",
            std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
        );
        std::panic::resume_unwind(e);
    }
    assert_eq!(status.code(), Some(0));
}

/// Posts events of `blob` until one is refused; the ids taken and the refusal.
fn fill(d: &Daemon, blob: &str) -> (Vec<String>, Reply) {
    let mut accepted = Vec::new();
    for i in 0..1000 {
        let r = d.post(
            "/v1/events",
            Some(ADMIN),
            &format!(r#"{{"event":"big","data":{{"i":{i},"b":"{blob}"}}}}"#),
        );
        match r.status {
            202 => accepted.push(r.json()["id"].as_str().unwrap().to_string()),
            507 => return (accepted, r),
            other => d.fail(&format!("unexpected {other}: {}", r.body)),
        }
    }
    d.fail("the store never filled up")
}

/// A full store (`storage.max_size` of 1 MiB): the refusal holds for the
/// whole episode (it does not flap back at the next write: issue 21,
/// finding 8), reads go on, the page and the status say so, the system
/// recipients get one mail for the episode, and the data dir, journal
/// included, stays within the limit.
#[test]
fn storage_full_refuses_new_events_and_keeps_old_ones() {
    let smtp = SmtpSink::start();
    let mut d = Daemon::start(&format!(
        "[storage]\nmax_size = \"1MiB\"\nmax_event_size = \"64KiB\"\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"herald@example.com\"\n\
         [alerts]\ndebounce = \"1s\"\nmax_delay = \"2s\"\nsystem_recipients = [\"noc@example.com\"]\n{}",
        smtp.port,
        accounts()
    ));
    let blob = "x".repeat(60 * 1024);
    let (accepted, full) = fill(&d, &blob);
    assert_eq!(full.json()["error"]["code"], "storage_full");
    assert!(full.body.contains("storage.max_size"), "{}", full.body);
    assert!(accepted.len() >= 8, "refused after {} events of 60 KiB", accepted.len());
    // The episode holds across the store's rechecks (one a second): a big
    // event and a small one are refused alike, and it does not flap.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        for body in [
            format!(r#"{{"event":"big","data":{{"i":-1,"b":"{blob}"}}}}"#),
            r#"{"event":"small"}"#.to_string(),
        ] {
            let r = d.post("/v1/events", Some(ADMIN), &body);
            assert_eq!(r.status, 507, "{}", r.body);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!d.log_text().contains("room again"), "{}", d.log_text());
    // Reads go on and every accepted event is there.
    let listed = d.get("/v1/events?limit=1000", Some(ADMIN)).json();
    let ids: Vec<String> = listed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, accepted);
    assert_eq!(d.get("/healthz", None).status, 200);
    let status = d.get("/v1/status", Some(ADMIN)).json();
    assert_eq!(
        (status["storage_full"].clone(), status["storage"].clone()),
        (json!(true), json!("max_size"))
    );
    let page = d.get("/", Some(ADMIN)).body;
    assert!(page.contains("The store is full"), "{page}");
    // A worklist item, the same in the API and the CLI, counted in /metrics.
    let items = d.get("/v1/attention", Some(ADMIN)).json();
    let store = &items["items"][0];
    assert_eq!(
        (store["kind"].as_str(), store["id"].as_str()),
        (Some("storage"), Some("store")),
        "{items}"
    );
    assert!(
        store["detail"].as_str().unwrap().contains("raise storage.max_size"),
        "{items}"
    );
    let (code, out, _) = run_cli(&["attention", "--url", &d.base, "--token", ADMIN], None);
    assert_eq!(code, Some(1));
    assert!(out.starts_with("STORAGE      store since "), "{out}");
    assert!(
        d.get("/metrics", None)
            .body
            .contains("herald_worklist_items{kind=\"storage\"} 1")
    );
    // One mail for the episode, with what to do.
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(mails[0].to, ["noc@example.com"]);
    assert!(mails[0].body.contains("Storage full"), "{}", mails[0].body);
    assert!(mails[0].body.contains("raise storage.max_size"), "{}", mails[0].body);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(smtp.mails().len(), 1, "one mail per episode");
    // What the data dir takes on the disk, journal included, once every
    // page is written (a clean stop).
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    let taken = du(&d.data_dir());
    assert!(taken <= 1280 << 10, "the data dir takes {taken} bytes");
}

/// A full store takes work again by itself once retention frees room
/// (the pages freed inside the file are counted again, though the file
/// keeps its blocks), and the page then says nothing more of it.
#[test]
fn a_full_store_takes_work_again_once_retention_frees_room() {
    let d = Daemon::start_with_clock(
        &format!(
            "[storage]\nmax_size = \"1MiB\"\nmax_event_size = \"64KiB\"\nretention = \"1h\"\n{}",
            accounts()
        ),
        Some("2026-03-02T10:00:00Z"),
    );
    let blob = "x".repeat(60 * 1024);
    let (accepted, _) = fill(&d, &blob);
    assert!(d.get("/", Some(ADMIN)).body.contains("The store is full"));
    d.advance("2h");
    d.eventually(Duration::from_secs(15), "a publish once retention freed room", || {
        let r = d.post(
            "/v1/events",
            Some(ADMIN),
            &format!(r#"{{"event":"big","data":{{"i":-1,"b":"{blob}"}}}}"#),
        );
        (r.status == 202).then_some(())
    });
    assert!(d.log_text().contains("storage has room again"), "{}", d.log_text());
    let listed = d.get("/v1/events?limit=1000", Some(ADMIN)).json();
    assert_eq!(
        listed["events"].as_array().unwrap().len(),
        1,
        "{} swept",
        accepted.len()
    );
    assert_eq!(d.get("/v1/status", Some(ADMIN)).json()["storage_full"], false);
    let page = d.get("/", Some(ADMIN)).body;
    assert!(!page.contains("The store is"), "{page}");
    let items = d.get("/v1/attention", Some(ADMIN)).json();
    assert!(
        !items.to_string().contains("\"storage\""),
        "the store left the worklist: {items}"
    );
}

/// `storage.max_size` of 8 MiB: work is taken until the data dir takes
/// nearly all of it, not refused at half (redb doubles its file's length,
/// but the new half is a hole until written): issue 21, findings 1 and 2.
#[test]
fn a_store_takes_work_until_near_its_max_size() {
    let mut d = Daemon::start(&format!(
        "[storage]\nmax_size = \"8MiB\"\nmax_event_size = \"64KiB\"\n{}",
        accounts()
    ));
    let (accepted, full) = fill(&d, &"x".repeat(60 * 1024));
    assert!(full.body.contains("storage.max_size"), "{}", full.body);
    let at_refusal = d.get("/v1/status", Some(ADMIN)).json()["store_bytes"].as_u64().unwrap();
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    let taken = du(&d.data_dir());
    let journal = std::fs::metadata(d.data_dir().join("herald.journal")).unwrap().len();
    assert_eq!(journal, 1 << 20, "the journal is an eighth of max_size");
    assert!(
        (7 << 20..=8 << 20).contains(&taken),
        "{} events of 60 KiB taken; the data dir takes {taken} bytes (status said {at_refusal})",
        accepted.len()
    );
    assert!((7 << 20..=8 << 20).contains(&at_refusal), "status said {at_refusal}");
}

#[test]
fn sighup_reloads_accounts_and_keeps_them_on_a_bad_file() {
    let d = Daemon::start(&accounts());
    assert_eq!(d.get("/v1/events", Some(TECHNICIAN)).status, 200);
    let original = std::fs::read_to_string(d.config_path()).unwrap();

    // A broken file: the old accounts stay.
    std::fs::write(d.config_path(), format!("{original}\n[server]\nbogus = 1\n")).unwrap();
    d.signal("HUP");
    d.eventually(Duration::from_secs(5), "the reload error in the log", || {
        d.log_text()
            .contains("keeping the previous configuration")
            .then_some(())
    });
    assert_eq!(d.get("/v1/events", Some(TECHNICIAN)).status, 200);

    // Without the technician: its token stops working, the others go on.
    let without: String = {
        let mut t: toml::Table = original.parse().unwrap();
        let accounts = t.get_mut("accounts").unwrap().as_array_mut().unwrap();
        accounts.retain(|a| a["name"].as_str() != Some("tech"));
        toml::to_string(&t).unwrap()
    };
    std::fs::write(d.config_path(), without).unwrap();
    d.signal("HUP");
    d.eventually(Duration::from_secs(5), "the technician to be gone", || {
        (d.get("/v1/events", Some(TECHNICIAN)).status == 401).then_some(())
    });
    assert_eq!(d.get("/v1/events", Some(ADMIN)).status, 200);
}

#[test]
fn token_command_prints_a_token_and_its_hash() {
    let (code, out, _) = run_cli(&["token"], None);
    assert_eq!(code, Some(0));
    let token = out.lines().find_map(|l| l.strip_prefix("token: ")).unwrap();
    let line = out.lines().find(|l| l.starts_with("token_sha256 = ")).unwrap();
    use sha2::Digest;
    assert!(line.contains(&hex::encode(sha2::Sha256::digest(token.as_bytes()))));
    assert!(token.len() >= 43, "at least 32 bytes of entropy");
    let (_, again, _) = run_cli(&["token"], None);
    assert_ne!(out, again);
}

#[test]
fn metrics_count_requests_commits_and_events() {
    let d = Daemon::start(&accounts());
    d.post("/v1/events", Some(ADMIN), r#"[{"event":"a"},{"event":"b"}]"#);
    d.get("/v1/nope", Some(ADMIN));
    let text = d.get("/metrics", None).body;
    for needle in [
        "herald_events_ingested_total 2",
        "herald_http_requests_total{route=\"POST /v1/events\",status=\"202\"} 1",
        "herald_http_requests_total{route=\"unknown\",status=\"404\"} 1",
        "herald_store_commit_seconds_bucket",
        "herald_store_commit_batch_size_count",
        "herald_jobs_due",
        "herald_store_size_bytes",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
}

#[test]
fn tls_serves_https_with_the_configured_certificate() {
    use std::io::{Read, Write};
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, key.cert.pem()).unwrap();
    std::fs::write(&key_path, key.signing_key.serialize_pem()).unwrap();
    let d = Daemon::start_tls(&format!(
        "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n{}",
        cert_path.display(),
        key_path.display(),
        accounts()
    ));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(key.cert.der().clone()).unwrap();
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = std::net::TcpStream::connect(d.base.trim_start_matches("https://")).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(
        format!(
            "GET /v1/events HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {ADMIN}\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"events\":[]"), "{answer}");

    // A bad key file is a config error that names the key.
    std::fs::write(&key_path, "not a key").unwrap();
    let config = d.config_path().to_str().unwrap().to_string();
    let (code, _, err) = run_cli(&["check-config", "--config", &config], None);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("server.tls_key"), "{err}");
}

#[test]
fn status_page_shows_what_needs_attention() {
    let d = Daemon::start(&format!("[general]\nname = \"gw-page\"\n{}", accounts()));
    // A failed call: the api execution has an error to show.
    d.post("/v1/events", Some(INTEGRATION), r#"{"event":"bad <name>"}"#);
    d.eventually(Duration::from_secs(5), "the api execution", || {
        let list = d.get("/v1/executions", Some(ADMIN)).json();
        list["executions"].as_array().unwrap().first().cloned()
    });
    let r = d.get("/", None);
    assert_eq!(r.status, 401);
    assert!(
        r.header("www-authenticate").unwrap().starts_with("Basic"),
        "a browser asks for the login"
    );
    assert_eq!(d.get("/", Some(INTEGRATION)).status, 403);
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("tech:{TECHNICIAN}"));
    let page = d.request("GET", "/", Some(&format!("Basic {basic}")), None);
    assert_eq!(page.status, 200);
    assert!(page.header("content-type").unwrap().starts_with("text/html"));
    for needle in ["gw-page", "Needs attention", "api on ", ": KO, ", "/ui/executions/"] {
        assert!(page.body.contains(needle), "missing {needle:?} in:\n{}", page.body);
    }
    assert!(!page.body.contains("bad <name>"), "everything shown is escaped");
}
