//! What outside testing found (issue 10): draining, exit codes, logs,
//! bad clients, and the other findings, each with the test that holds it.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::http_sink::{Answer, HttpSink};
use crate::smtp_sink::SmtpSink;
use crate::util::*;

/// Finding 7: while draining, herald keeps accepting and answers `503
/// shutting_down` with Retry-After, so a client can tell "stopping" from
/// "dead"; `/readyz` says draining and `/healthz` still answers.
#[test]
fn draining_keeps_answering_503_with_retry_after() {
    // A hanging delivery keeps the engine draining for the whole drain_timeout.
    let receiver = HttpSink::start(Answer::Hang);
    let mut d = Daemon::start(&format!(
        "[server]\ndrain_timeout = \"3s\"\n[webhooks]\ntimeout = \"60s\"\n{}",
        accounts()
    ));
    let r = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "*", "url": receiver.url("/")}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(d.post("/v1/events", Some(ADMIN), r#"{"event":"a"}"#).status, 202);
    receiver.wait_for(1, Duration::from_secs(5));
    let started = Instant::now();
    d.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));

    // A new connection during the drain: refused work, with a hint when to retry.
    let r = d.post("/v1/events", Some(ADMIN), r#"{"event":"b"}"#);
    if r.status != 503 {
        d.fail(&format!("expected 503 while draining, got {} {}", r.status, r.body));
    }
    assert_eq!(r.json()["error"]["code"], "shutting_down");
    let wait: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!(wait >= 1, "{wait}");
    assert_eq!(d.get("/v1/events", Some(ADMIN)).status, 503);
    let ready = d.get("/readyz", None);
    assert_eq!((ready.status, ready.body.trim()), (503, "draining"));
    assert_eq!(d.get("/healthz", None).status, 200);

    assert_eq!(d.wait_exit(Duration::from_secs(6)), Some(0));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

/// Finding 11: a configuration fault found at start, files included, exits
/// 78 before anything listens, so systemd does not restart in a loop.
#[test]
fn a_missing_tls_file_or_a_bad_data_dir_exits_78_before_listening() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    let missing = dir.path().join("missing.pem");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"{m}\"\ntls_key = \"{m}\"\n[storage]\ndir = \"{}\"\n",
            dir.path().join("data").display(),
            m = missing.display()
        ),
    )
    .unwrap();
    let (code, _, err) = run_cli(&["serve", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("server.tls_cert") && err.contains("missing.pem"), "{err}");
    assert!(!err.contains("listening on"), "nothing may listen first: {err}");

    // A data directory that cannot be made (a file is in the way).
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "").unwrap();
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"{}\"\n",
            blocker.join("data").display()
        ),
    )
    .unwrap();
    let (code, _, err) = run_cli(&["serve", "--config", config.to_str().unwrap()], None);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("storage.dir"), "{err}");
    assert!(!err.contains("listening on"), "{err}");
}

/// Finding 12: no colour codes when stderr is not a terminal (a file, the journal).
#[test]
fn logs_have_no_colour_codes_when_not_on_a_terminal() {
    let d = Daemon::start("");
    assert_eq!(d.get("/healthz", None).status, 200);
    let log = d.log_text();
    if log.contains('\u{1b}') {
        d.fail("the log holds ANSI escape codes");
    }
}

/// Finding 14: `check-config` reads `$HERALD_CONFIG` like `serve` and `status`.
#[test]
fn check_config_reads_herald_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, "[server]\nlisten = \"nowhere\"\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("check-config")
        .env("HERALD_CONFIG", &path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("server.listen"), "{err}");
}

/// Finding 2: `data` is served byte for byte as accepted (numbers beyond
/// f64, lone surrogates), in lists and webhooks; what cannot be served is
/// refused with 422 naming `data`.
#[test]
fn poison_data_is_served_verbatim_or_refused_naming_data() {
    let receiver = HttpSink::start(Answer::Status(200));
    let d = Daemon::start(&accounts());
    let r = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "*", "url": receiver.url("/")}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let big = "9".repeat(400);
    let samples = [
        "1e309".to_string(),
        "12345678901234567890123".to_string(),
        big.clone(),
        r#""\ud800""#.to_string(),
        format!(r#"{{"n": -{big}.5e-999, "s": "\udfff x", "a": [1.50, 2E+3]}}"#),
    ];
    for data in &samples {
        let r = d.post(
            "/v1/events",
            Some(ADMIN),
            &format!(r#"{{"event":"poison","data":{data}}}"#),
        );
        assert_eq!(r.status, 202, "{data}: {}", r.body);
    }
    let list = d.get("/v1/events", Some(ADMIN));
    assert_eq!(list.status, 200, "{}", list.body);
    for data in &samples {
        assert!(
            list.body.contains(&format!(r#""data":{data},"#)),
            "{data} not verbatim in {}",
            list.body
        );
    }
    // Page by page, too, and after a restart nothing changes.
    for (after, data) in samples.iter().enumerate() {
        let page = d.get(&format!("/v1/events?after={after}&limit=1"), Some(ADMIN));
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.contains(data.as_str()), "{}", page.body);
    }
    let got = receiver.wait_for(samples.len(), Duration::from_secs(10));
    for (data, req) in samples.iter().zip(&got) {
        let body = String::from_utf8_lossy(&req.body);
        assert!(body.ends_with(&format!(r#""data":{data}}}"#)), "{body}");
    }

    // Too deep to serve: refused, naming data; nothing stored.
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    assert_eq!(
        d.post(
            "/v1/events",
            Some(ADMIN),
            &format!(r#"{{"event":"ok","data":{}}}"#, deep(64))
        )
        .status,
        202
    );
    for n in [65, 127, 128, 500] {
        let r = d.post(
            "/v1/events",
            Some(ADMIN),
            &format!(r#"{{"event":"deep","data":{}}}"#, deep(n)),
        );
        assert_eq!(r.status, 422, "{n}: {}", r.body);
        assert_eq!(r.json()["error"]["field"], "data", "{}", r.body);
    }
    let stored = d.get("/v1/events?event=deep", Some(ADMIN)).json();
    assert_eq!(stored["events"].as_array().unwrap().len(), 0);
}

/// Finding 2, the last part: a panicking handler answers `500 internal`, is
/// logged, and the connection and the daemon go on.
#[test]
fn a_panicking_handler_answers_500_and_the_daemon_goes_on() {
    let d = Daemon::start(&accounts());
    let r = d.post("/v1/test/panic", Some(ADMIN), "{}");
    assert_eq!(r.status, 500, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "internal");
    assert!(d.log_text().contains("panicked"), "the panic is logged");
    assert_eq!(d.get("/v1/events", Some(ADMIN)).status, 200);
}

/// The `api` execution's log lines (all of today's).
fn api_log(d: &Daemon) -> Vec<serde_json::Value> {
    let list = d.get("/v1/executions?interface=api", Some(ADMIN)).json();
    let Some(exe) = list["executions"].as_array().and_then(|a| a.first().cloned()) else {
        return Vec::new();
    };
    let id = exe["id"].as_str().unwrap();
    // The failed calls (the successful ones are summed in info lines).
    d.get(&format!("/v1/executions/{id}/logs?limit=1000&level=error"), Some(ADMIN))
        .json()["logs"]
        .as_array()
        .unwrap()
        .clone()
}

/// Finding 5: callers nobody can identify are counted and sampled into the
/// log at most once a minute, never stored one by one; a browser's first,
/// credential-less request for the status page and its icon are no errors.
#[test]
fn strangers_are_counted_not_stored_one_by_one() {
    let d = Daemon::start_with_clock(
        &format!("[storage]\nmax_size = \"2MiB\"\n{}", accounts()),
        Some("2026-12-01T10:00:00Z"),
    );
    let page = d.get("/", None);
    assert_eq!(page.status, 401);
    assert!(page.header("www-authenticate").is_some_and(|v| v.starts_with("Basic")));
    // A bookmarked page of the console, opened without credentials, too.
    assert_eq!(d.get("/ui/executions/exe_x", None).status, 401);
    let icon = d.get("/favicon.ico", None);
    assert_eq!(icon.status, 200);
    assert_eq!(icon.header("content-type"), Some("image/svg+xml"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        api_log(&d).is_empty(),
        "the browser's challenge is no error: {:?}",
        api_log(&d)
    );

    for i in 0..2000 {
        let r = match i % 3 {
            0 => d.get("/v1/events", None),
            1 => d.post("/v1/events", None, r#"{"event":"a"}"#),
            _ => d.get("/v1/nothing", None),
        };
        assert_eq!(r.status, 401, "{}", r.body);
    }
    std::thread::sleep(Duration::from_millis(300));
    let lines = api_log(&d);
    assert_eq!(
        lines.len(),
        1,
        "one line for the first stranger, the rest counted: {lines:?}"
    );
    let r = d.post("/v1/events", Some(ADMIN), r#"{"event":"legit"}"#);
    assert_eq!(r.status, 202, "{}", r.body);

    // A minute later, the next stranger's line carries the count.
    d.advance("61s");
    assert_eq!(d.get("/v1/events", Some("wrong")).status, 401);
    let line = d.eventually(Duration::from_secs(5), "the sampled line", || {
        api_log(&d).into_iter().nth(1)
    });
    let message = line["message"].as_str().unwrap();
    assert!(
        message.starts_with("2000 calls without valid credentials since"),
        "{message}"
    );
}

/// Writes `head` (and `body`) on a raw connection; returns the stream.
fn raw(d: &Daemon, text: &str) -> std::net::TcpStream {
    use std::io::Write;
    let addr = d.base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(text.as_bytes()).unwrap();
    s
}

fn read_to_end(s: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Finding 6: a complete request followed by a half-close is answered; a
/// body that never comes is cut after `server.body_timeout`; slow
/// connections holding every place do not make `/healthz` unreachable.
#[test]
fn half_closed_requests_are_answered_and_slow_ones_are_cut() {
    let d = Daemon::start(&format!(
        "[server]\nbody_timeout = \"1s\"\nmax_connections = 16\n{}",
        accounts()
    ));
    let body = r#"{"event":"half.closed"}"#;
    let mut s = raw(
        &d,
        &format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let answer = read_to_end(&mut s);
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");

    // Headers promise a body that never comes: the connection is closed.
    let started = Instant::now();
    let mut s = raw(
        &d,
        &format!(
            "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        ),
    );
    read_to_end(&mut s);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let stored = d.get("/v1/events", Some(ADMIN)).json();
    assert_eq!(
        stored["events"].as_array().unwrap().len(),
        1,
        "only the complete request was stored"
    );

    // Every place taken by slow connections (the body timeout at its 30s
    // default): /healthz still answers, in a place they cannot keep.
    let d = Daemon::start(&format!("[server]\nmax_connections = 16\n{}", accounts()));
    let slow_request = format!(
        "POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    let slow: Vec<_> = (0..40).map(|_| raw(&d, &slow_request)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let r = d.get("/healthz", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    drop(slow);
}

/// A private CA (its PEM) and a server config for `localhost` signed by it.
fn private_ca_server() -> (String, std::sync::Arc<rustls::ServerConfig>) {
    let (ca_pem, leaf, key) = private_ca();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf], key)
        .unwrap();
    (ca_pem, std::sync::Arc::new(config))
}

/// A daemon whose error mails go to `port` with `security`; `extra` adds to [smtp].
fn mailing_daemon(port: u16, security: &str, extra: &str) -> Daemon {
    Daemon::start_with_clock(
        &format!(
            "[smtp]\nhost = \"localhost\"\nport = {port}\nsecurity = \"{security}\"\nfrom = \"herald@example.com\"\n\
             retry_schedule = [\"1h\"]\n{extra}\n[alerts]\ndebounce = \"60s\"\n\n{}",
            accounts()
        ),
        Some("2026-12-01T10:00:00Z"),
    )
}

/// Makes an error mail for erp@example.com and lets its time come.
fn trigger_mail(d: &Daemon) {
    assert_eq!(d.get("/v1/nothing", Some(INTEGRATION)).status, 404);
    d.eventually(Duration::from_secs(5), "the queued mail", || {
        let mails = d.get("/v1/mails", Some(ADMIN)).json();
        mails["mails"].as_array().unwrap().first().cloned()
    });
    d.advance("61s");
}

fn last_mail_error(d: &Daemon) -> String {
    d.eventually(Duration::from_secs(10), "a failed attempt", || {
        let mails = d.get("/v1/mails", Some(ADMIN)).json();
        mails["mails"][0]["last_error"].as_str().map(str::to_string)
    })
}

/// Finding 8: STARTTLS and implicit TLS to an on-site mail server whose
/// certificate comes from a private CA, trusted through `smtp.ca_file`.
#[test]
fn smtp_over_starttls_and_implicit_tls_with_a_private_ca() {
    let (ca_pem, server) = private_ca_server();
    let dir = tempfile::tempdir().unwrap();
    let ca_line = trusted(dir.path(), &ca_pem);
    mail_over_starttls_and_implicit_tls(&server, &ca_line);
}

/// `smtp.ca_file = "…"` naming a file in `dir` that holds `pem`.
fn trusted(dir: &std::path::Path, pem: &str) -> String {
    let ca = dir.join("mail-ca.pem");
    std::fs::write(&ca, pem).unwrap();
    format!("ca_file = \"{}\"", ca.display())
}

/// A mail reaches a server speaking with `server`'s TLS, over STARTTLS and
/// over implicit TLS, with `extra` in `[smtp]`.
fn mail_over_starttls_and_implicit_tls(server: &std::sync::Arc<rustls::ServerConfig>, extra: &str) {
    use crate::smtp_sink::{SmtpSink, Tls};
    for (tls, security) in [
        (Tls::RequireStarttls(server.clone()), "starttls"),
        (Tls::Implicit(server.clone()), "tls"),
    ] {
        let sink = SmtpSink::start_tls(tls);
        let d = mailing_daemon(sink.port, security, extra);
        trigger_mail(&d);
        let got = sink.wait_for(1, Duration::from_secs(10));
        assert_eq!(got[0].to, ["erp@example.com"], "{security}");
    }
}

/// A self-signed server certificate made the usual way (`openssl req
/// -x509` marks it CA:TRUE): its PEM and the server's TLS config.
fn self_signed_server() -> (String, std::sync::Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    (cert.pem(), std::sync::Arc::new(config))
}

/// A self-signed mail server certificate in `smtp.ca_file` (one that marks
/// itself CA:TRUE, as `openssl req -x509` makes them) is trusted, over
/// STARTTLS and implicit TLS; another self-signed one is not, and the error
/// says what `smtp.ca_file` must hold.
#[test]
fn a_self_signed_mail_server_certificate_in_smtp_ca_file_is_trusted() {
    use crate::smtp_sink::{SmtpSink, Tls};
    let (pem, server) = self_signed_server();
    let dir = tempfile::tempdir().unwrap();
    let ca_line = trusted(dir.path(), &pem);
    mail_over_starttls_and_implicit_tls(&server, &ca_line);
    // Another server's self-signed certificate: not this one.
    let (_, impostor) = self_signed_server();
    let sink = SmtpSink::start_tls(Tls::Implicit(impostor));
    let d = mailing_daemon(sink.port, "tls", &ca_line);
    trigger_mail(&d);
    let error = last_mail_error(&d);
    assert!(
        error.contains("not trusted") && error.contains("smtp.ca_file"),
        "{error}"
    );
    assert!(sink.mails().is_empty());
    let (_, impostor) = self_signed_server();
    let sink = SmtpSink::start_tls(Tls::RequireStarttls(impostor));
    let d = mailing_daemon(sink.port, "starttls", &ca_line);
    trigger_mail(&d);
    let error = last_mail_error(&d);
    assert!(error.contains("not trusted"), "{error}");
    assert!(sink.mails().is_empty(), "nothing said to an untrusted server");
}

/// Finding 8: without the CA, a certificate failure is a configuration
/// error that names smtp.ca_file, and herald's own log says so.
#[test]
fn an_untrusted_mail_server_certificate_names_smtp_ca_file() {
    use crate::smtp_sink::{SmtpSink, Tls};
    let (_, server) = private_ca_server();
    let sink = SmtpSink::start_tls(Tls::Implicit(server));
    let d = mailing_daemon(sink.port, "tls", "");
    trigger_mail(&d);
    let error = last_mail_error(&d);
    assert!(error.contains("smtp.ca_file"), "{error}");
    let logs = d.newest_logs("mail", "");
    assert_eq!(logs["logs"][0]["category"], "configuration", "{logs}");
    assert!(
        d.log_text().contains("mail not sent"),
        "herald's own log has the failed exchange"
    );
    assert!(sink.mails().is_empty());
}

/// Finding 9: `security = "none"` against a server that demands STARTTLS:
/// the error says so, and blames no username or password.
#[test]
fn a_server_that_demands_starttls_is_named_as_such() {
    use crate::smtp_sink::{SmtpSink, Tls};
    let (_, server) = private_ca_server();
    let sink = SmtpSink::start_tls(Tls::RequireStarttls(server));
    let d = mailing_daemon(sink.port, "none", "");
    trigger_mail(&d);
    let error = last_mail_error(&d);
    assert!(error.contains("smtp.security"), "{error}");
    assert!(!error.contains("username") && !error.contains("password"), "{error}");
}

/// `/metrics` as a scraper asks for it, with `accept`.
fn scrape(d: &Daemon, accept: &str) -> Reply {
    request_with(&format!("{}/metrics", d.base), "GET", &[("accept", accept)], None)
}

/// Finding 10: what an operator watches is in `/metrics` (deliveries by
/// webhook and outcome, the backlog and its age, mails queued, storage
/// full), a failed delivery is no successful job run, and the 0.0.4 text
/// format is served to whoever asks for it (it passes `promtool check metrics`).
#[test]
fn metrics_show_deliveries_backlog_mails_and_storage() {
    let receiver = HttpSink::start(Answer::Status(500));
    let d = Daemon::start_with_clock(
        &format!("[webhooks]\nretry_schedule = [\"0s\", \"1h\"]\n{}", accounts()),
        Some("2026-12-01T10:00:00Z"),
    );
    let r = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "*", "url": receiver.url("/")}).to_string(),
    );
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        d.post("/v1/events", Some(ADMIN), r#"[{"event":"a"},{"event":"b"}]"#)
            .status,
        202
    );
    receiver.wait_for(1, Duration::from_secs(5));
    d.get("/v1/nothing", Some(INTEGRATION)); // an error mail for erp, queued
    d.advance("90s");
    let needles = [
        format!("herald_webhook_deliveries_total{{webhook=\"{id}\",outcome=\"failure\"}} 1"),
        format!("herald_webhook_pending_events{{webhook=\"{id}\"}} 2"),
        format!("herald_webhook_oldest_pending_seconds{{webhook=\"{id}\"}} 90"),
        "herald_mails_queued 1".to_string(),
        "herald_storage_full 0".to_string(),
        "herald_store_refusing{reason=\"disk_full\"} 0".to_string(),
        "herald_jobs_run_total{kind=\"deliver\",outcome=\"failed\"} 1".to_string(),
    ];
    // Counters move just after the commits they count: scrape until all came.
    let deadline = Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = scrape(&d, "application/openmetrics-text; version=1.0.0").body;
        let missing: Vec<&String> = needles.iter().filter(|n| !text.contains(n.as_str())).collect();
        if missing.is_empty() {
            break text;
        }
        assert!(Instant::now() < deadline, "missing {missing:?} in:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!text.contains("kind=\"deliver\",outcome=\"ok\""), "{text}");
    rules_select_served_series(&text);

    // The 0.0.4 text format for tools that ask for it.
    let old = scrape(&d, "text/plain;version=0.0.4;q=1,*/*;q=0.1");
    assert_eq!(
        old.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(!old.body.contains("# EOF"), "{}", old.body);
    assert!(
        old.body.contains("# TYPE herald_webhook_deliveries_total counter"),
        "{}",
        old.body
    );
    if let Ok(mut promtool) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        use std::io::Write;
        promtool.stdin.take().unwrap().write_all(old.body.as_bytes()).unwrap();
        let out = promtool.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool check metrics: {said}\n{}", old.body);
    } else {
        eprintln!("promtool is not installed: the 0.0.4 text was checked by shape only");
    }
}

/// Each series the alert rules (`config/herald-alerts.yml`) select is one
/// herald serves, with the labels they match on: a renamed metric or label
/// would leave an alert that never fires.
fn rules_select_served_series(text: &str) {
    let rules = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/herald-alerts.yml")).unwrap();
    let mut checked = 0;
    for expr in rules.lines().filter_map(|l| l.trim().strip_prefix("expr:")) {
        let mut rest = expr;
        while let Some(at) = rest.find("herald_") {
            let selector = &rest[at..];
            let name_end = selector
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(selector.len());
            let name = &selector[..name_end];
            let matchers: Vec<&str> = match selector[name_end..].strip_prefix('{') {
                Some(labels) => labels[..labels.find('}').unwrap()].split(',').map(str::trim).collect(),
                None => Vec::new(),
            };
            let served = text.lines().any(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with(['{', ' ']) && matchers.iter().all(|m| r.contains(m)))
            });
            assert!(
                served,
                "the rule's {name}{{{}}} is not in /metrics:\n{text}",
                matchers.join(",")
            );
            checked += 1;
            rest = &selector[name_end..];
        }
    }
    assert!(checked >= 4, "{checked} series checked in {rules}");
}

/// Smaller findings: a webhook URL's password and secret-looking query
/// values are masked in every answer and page; unknown fields and unknown
/// query values are refused naming them; an integration sees the webhooks
/// of the application named like its account.
#[test]
fn urls_are_masked_and_unknown_fields_are_named() {
    let d = Daemon::start(&accounts());
    let url = "http://hook:pa55word@127.0.0.1:9/in?token=t0ps3cret&x=1";
    let r = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "*", "url": url}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["url"], "http://hook:***@127.0.0.1:9/in?token=***&x=1");
    for (path, token) in [("/v1/webhooks", INTEGRATION), ("/", TECHNICIAN)] {
        let r = match path {
            "/" => d.request("GET", "/", Some(&basic("tech", token)), None),
            _ => d.get(path, Some(token)),
        };
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(
            !r.body.contains("pa55word") && !r.body.contains("t0ps3cret"),
            "{path}: {}",
            r.body
        );
        assert!(
            r.body.contains("hook:***@"),
            "{path}: the integration erp sees app erp's webhook"
        );
    }

    let r = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "*", "url": "http://127.0.0.1:9/", "active": false}).to_string(),
    );
    assert_eq!(
        (r.status, r.json()["error"]["field"].clone()),
        (422, json!("active")),
        "{}",
        r.body
    );
    let r = d.post("/v1/events", Some(ADMIN), r#"{"event":"a","dat":{"x":1}}"#);
    assert_eq!(
        (r.status, r.json()["error"]["field"].clone()),
        (422, json!("dat")),
        "{}",
        r.body
    );
    let r = d.get("/v1/webhooks?active=maybe", Some(ADMIN));
    assert_eq!(
        (r.status, r.json()["error"]["field"].clone()),
        (422, json!("active")),
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

fn basic(name: &str, token: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{name}:{token}"))
    )
}

/// Smaller findings: the excerpt of a body that does not parse still hides
/// secrets by their names, and the mail says how the excerpt was made.
#[test]
fn error_mails_hide_secrets_in_bodies_that_do_not_parse() {
    use crate::smtp_sink::SmtpSink;
    let sink = SmtpSink::start();
    let d = mailing_daemon(sink.port, "none", "");
    let r = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        r#"{"app":"erp","url":"http://x.io","password":"hunter2","n":1e400}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    d.eventually(Duration::from_secs(5), "the queued mail", || {
        let mails = d.get("/v1/mails", Some(ADMIN)).json();
        mails["mails"].as_array().unwrap().first().cloned()
    });
    d.advance("61s");
    let got = sink.wait_for(1, Duration::from_secs(10));
    let body = &got[0].body;
    assert!(!body.contains("hunter2"), "{body}");
    assert!(body.contains(r#""password":"[redacted]""#), "{body}");
    assert!(body.contains("as received, secrets redacted"), "{body}");
}

/// Smaller findings: a deactivation nobody can be told of is a warning in
/// the log that says which key to set.
#[test]
fn a_notice_with_nobody_to_tell_is_a_warning() {
    let receiver = HttpSink::start(Answer::Status(410));
    // No accounts: the generated admin has no e-mail; no system recipients.
    let d = Daemon::start("");
    let token = std::fs::read_to_string(d.data_dir().join("admin.token")).unwrap();
    let token = token.trim();
    let r = d.post(
        "/v1/webhooks",
        Some(token),
        &json!({"app": "erp", "event": "*", "url": receiver.url("/")}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(d.post("/v1/events", Some(token), r#"{"event":"a"}"#).status, 202);
    receiver.wait_for(1, Duration::from_secs(5));
    d.eventually(Duration::from_secs(5), "the warning", || {
        d.log_text().contains("nobody was told").then_some(())
    });
    assert!(d.log_text().contains("alerts.system_recipients"));
}

/// Finding 3: with a small `storage.max_size`, the data dir never passes
/// it (what its files take on the disk, the journal included): new events
/// are refused before the limit, not after.
#[test]
fn a_small_max_size_is_never_passed() {
    let mut d = Daemon::start(&format!("[storage]\nmax_size = \"256KiB\"\n{}", accounts()));
    let data = d.data_dir();
    let mut largest = 0;
    let mut refused = None;
    for i in 0..2000 {
        let r = d.post(
            "/v1/events",
            Some(ADMIN),
            &format!(r#"{{"event":"e","data":"{i:0>500}"}}"#),
        );
        largest = largest.max(du(&data));
        if r.status != 202 {
            refused = Some((i, r));
            break;
        }
    }
    let (i, r) = refused.unwrap_or_else(|| d.fail("never refused"));
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (507, json!("storage_full")),
        "{}",
        r.body
    );
    assert!(r.body.contains("storage.max_size"), "{}", r.body);
    assert!(
        i > 20,
        "refused too early, at event {i} with the data dir at {largest} bytes"
    );
    for _ in 0..20 {
        d.post("/v1/events", Some(ADMIN), r#"{"event":"small"}"#);
        largest = largest.max(du(&data));
    }
    // A clean stop writes every page redb held in memory.
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    largest = largest.max(du(&data));
    assert!(largest <= 256 << 10, "the data dir reached {largest} bytes");
}

/// A tmpfs of `size` on a temporary directory, unmounted on drop; `None`
/// where this process may not mount (the test then says so and passes).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { dir })
    }

    /// Fills the disk to the last byte with a file; returns its path.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Finding 1: a real full disk (a 3 MiB tmpfs). New work is refused with
/// 507 naming the disk, reads go on, `/v1/status`, `/metrics` and `/readyz`
/// say so, the log is not flooded, and once space is freed herald takes
/// work again within seconds, without a restart.
#[test]
fn a_full_disk_refuses_work_and_recovers_by_itself() {
    let Some(disk) = SmallDisk::mount("3m") else {
        eprintln!("skipped: this test mounts a small tmpfs, which needs root (CI runs as root)");
        return;
    };
    let receiver = HttpSink::start(Answer::Status(500));
    let mut d = Daemon::start(&format!(
        "[storage]\ndir = \"{}\"\n[webhooks]\nretry_schedule = [\"0s\", \"1s\"]\n{}",
        disk.dir.path().join("data").display(),
        accounts()
    ));
    d.set_rust_log("info");
    let r = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "*", "url": receiver.url("/")}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let blob = "x".repeat(4000);
    let mut accepted = 0;
    for i in 0..100 {
        let r = d.post(
            "/v1/events",
            Some(ADMIN),
            &format!(r#"{{"event":"e","data":"{i} {blob}"}}"#),
        );
        assert_eq!(r.status, 202, "{}", r.body);
        accepted += 1;
    }
    let filler = disk.fill();
    // Deliveries now succeed and try to record their progress on a full disk.
    receiver.set(Answer::Status(200));
    std::thread::sleep(Duration::from_secs(2));

    let r = d.post("/v1/events", Some(ADMIN), r#"{"event":"refused"}"#);
    assert_eq!(r.status, 507, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "storage_full");
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("disk") && !message.contains("storage.max_size"),
        "{message}"
    );
    let listed = d.get("/v1/events?limit=1000", Some(ADMIN));
    assert_eq!(listed.status, 200, "reads go on: {}", listed.body);
    assert_eq!(listed.json()["events"].as_array().unwrap().len(), accepted);
    assert_eq!(d.get("/v1/status", Some(ADMIN)).json()["storage_full"], true);
    assert_eq!(d.get("/readyz", None).body.trim(), "storage_full");
    let metrics = d.get("/metrics", None).body;
    assert!(metrics.contains("herald_storage_full 1"), "{metrics}");
    assert!(
        metrics.contains("herald_store_refusing{reason=\"disk_full\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herald_store_refusing{reason=\"max_size\"} 0"),
        "{metrics}"
    );

    // Some seconds on a full disk do not flood the log.
    std::thread::sleep(Duration::from_secs(3));
    let errors = d.log_text().lines().filter(|l| l.contains("ERROR")).count();
    assert!(errors < 10, "{errors} error lines:\n{}", d.log_text());

    // Space comes back: work is taken again within seconds, no restart.
    std::fs::remove_file(filler).unwrap();
    let r = d.eventually(Duration::from_secs(10), "a publish after space returned", || {
        let r = d.post("/v1/events", Some(ADMIN), r#"{"event":"after"}"#);
        (r.status == 202).then_some(r)
    });
    assert!(r.json()["seq"].as_u64().unwrap() > accepted as u64);
    assert_eq!(d.get("/readyz", None).status, 200);
    assert_eq!(d.get("/v1/status", Some(ADMIN)).json()["storage_full"], false);
    assert_eq!(
        d.get("/v1/events?limit=1000", Some(ADMIN)).json()["events"]
            .as_array()
            .unwrap()
            .len(),
        accepted + 1,
        "nothing acknowledged was lost"
    );
    d.kill9();
}

/// Issue 21, finding 1: herald fills a small disk (16 MiB) itself. It
/// refuses new work only when less than a few hundred KiB are really left
/// (not with half the disk free because redb's file is long and sparse),
/// reads and deliveries go on while it is full, the system recipients are
/// told once, and it takes work again within seconds once a few MiB are
/// freed, without a restart.
#[test]
fn herald_fills_a_small_disk_and_takes_work_again_once_space_is_freed() {
    let Some(disk) = SmallDisk::mount("16m") else {
        eprintln!("skipped: this test mounts a small tmpfs, which needs root (CI runs as root)");
        return;
    };
    let free = || {
        let s = rustix::fs::statvfs(disk.dir.path()).unwrap();
        s.f_bavail * s.f_frsize
    };
    // Space another program holds, freed later.
    let ballast = disk.dir.path().join("ballast");
    std::fs::write(&ballast, vec![1u8; 3 << 20]).unwrap();
    let smtp = SmtpSink::start();
    let receiver = HttpSink::start(Answer::Status(500));
    let mut d = Daemon::start(&format!(
        "[storage]\ndir = \"{}\"\nmax_event_size = \"64KiB\"\n\
         [webhooks]\nretry_schedule = [\"0s\", \"1s\"]\n\
         [smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nfrom = \"herald@example.com\"\n\
         [alerts]\ndebounce = \"1s\"\nmax_delay = \"2s\"\nsystem_recipients = [\"noc@example.com\"]\n{}",
        disk.dir.path().join("data").display(),
        smtp.port,
        accounts()
    ));
    let r = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "big", "url": receiver.url("/")}).to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let blob = "x".repeat(60 * 1024);
    let post = |i: i64| {
        d.post(
            "/v1/events",
            Some(ADMIN),
            &format!(r#"{{"event":"big","data":{{"i":{i},"b":"{blob}"}}}}"#),
        )
    };
    let mut accepted = 0;
    let refused = loop {
        let r = post(accepted);
        match r.status {
            202 => accepted += 1,
            507 => break r,
            other => d.fail(&format!("unexpected {other}: {}", r.body)),
        }
        assert!(accepted < 1000, "never refused");
    };
    let left = free();
    assert!(refused.body.contains("disk"), "{}", refused.body);
    assert!(
        left <= 768 << 10,
        "refused after {accepted} events with {left} bytes free on a 16 MiB disk"
    );
    // Full: reads go on, and so do deliveries.
    let listed = d.get("/v1/events?limit=1000", Some(ADMIN));
    assert_eq!(listed.json()["events"].as_array().unwrap().len(), accepted as usize);
    receiver.set(Answer::Status(200));
    let answered_200_from = Instant::now();
    let delivered = |r: &HttpSink| {
        r.received()
            .iter()
            .filter(|m| m.at >= answered_200_from)
            .map(|m| m.body.clone())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    d.eventually(
        Duration::from_secs(30),
        "every accepted event delivered while full",
        || (delivered(&receiver) == accepted as usize).then_some(()),
    );
    let status = d.get("/v1/status", Some(ADMIN)).json();
    assert_eq!(status["storage"], "disk_full", "{status}");
    assert!(
        d.get("/", Some(ADMIN))
            .body
            .contains("The disk that holds storage.dir is full")
    );
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert!(mails[0].body.contains("the disk is full"), "{}", mails[0].body);
    assert!(mails[0].body.contains("Free space on that disk"), "{}", mails[0].body);

    // Another program frees 3 MiB: work is taken again within seconds.
    std::fs::remove_file(&ballast).unwrap();
    let since = Instant::now();
    d.eventually(Duration::from_secs(10), "a publish after space was freed", || {
        (post(-1).status == 202).then_some(())
    });
    let back_after = since.elapsed();
    let mut more = 0;
    while post(more).status == 202 {
        more += 1;
    }
    assert!(
        more >= 30,
        "only {more} more events of 60 KiB after 3 MiB were freed (back after {back_after:?})"
    );
    assert_eq!(
        smtp.mails().len(),
        1,
        "one mail for the first episode, the second is not sent yet"
    );
    d.kill9();
}
