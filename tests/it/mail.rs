//! Admin error mails over real SMTP: debounce, the max_delay cap, no mail
//! for wrong credentials, one mail per account, SMTP outages, restarts.

use std::time::Duration;

use serde_json::Value;

use mailparse::MailHeaderMap;

use crate::smtp_sink::SmtpSink;
use crate::util::*;

const START: &str = "2026-11-22T10:00:00Z";

fn config(smtp_port: u16) -> String {
    format!(
        "[general]\nname = \"gw-test\"\n\n[smtp]\nhost = \"127.0.0.1\"\nport = {smtp_port}\nsecurity = \"none\"\n\
         from = \"herald@example.com\"\nretry_schedule = [\"30s\", \"5m\"]\nmail_retention = \"1h\"\n\n\
         [alerts]\ndebounce = \"60s\"\nmax_delay = \"15m\"\n\n{}",
        accounts()
    )
}

fn mails(d: &Daemon) -> Vec<Value> {
    let r = d.get("/v1/mails", Some(ADMIN));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["mails"].as_array().unwrap().clone()
}

/// Waits until the open mail to `to` holds `n` entries.
fn wait_entries(d: &Daemon, to: &str, n: u64) -> Value {
    d.eventually(Duration::from_secs(5), &format!("{n} entries for {to}"), || {
        mails(d)
            .into_iter()
            .find(|m| m["to"] == to && m["state"] == "queued" && m["entries"] == n)
    })
}

fn settle() {
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn a_burst_of_failures_is_one_mail_sent_a_debounce_after_the_last() {
    let sink = SmtpSink::start();
    let d = Daemon::start_with_clock(&config(sink.port), Some(START));
    let to = "erp@example.com";
    d.post("/v1/events", Some(INTEGRATION), r#"{"event":"bad name"}"#);
    wait_entries(&d, to, 1);
    d.advance("20s");
    d.get("/v1/no-such-thing?x=1", Some(INTEGRATION));
    wait_entries(&d, to, 2);
    d.advance("20s");
    d.post(
        "/v1/events",
        Some(INTEGRATION),
        r#"{"event":"also bad!","data":{"password":"s3cr3t-value","n":7}}"#,
    );
    let queued = wait_entries(&d, to, 3);
    assert_eq!(
        queued["send_after"], "2026-11-22T10:01:40.000Z",
        "debounce after the last failure"
    );

    d.advance("59s");
    settle();
    assert!(sink.mails().is_empty(), "nothing before the debounce has passed");
    d.advance("1s");
    let got = sink.wait_for(1, Duration::from_secs(5));
    let m = &got[0];
    assert_eq!(m.to, [to]);
    assert_eq!(m.from, "herald@example.com");
    assert_eq!(m.subject, "[herald gw-test] 3 API calls failed for account erp");
    for needle in [
        "POST /v1/events → 422 invalid_field",
        "GET /v1/no-such-thing?x=1 → 404 not_found",
        "2026-11-22T10:00:00.000Z",
        "2026-11-22T10:00:40.000Z",
        r#""event":"bad name""#,
        "[redacted]",
    ] {
        assert!(m.body.contains(needle), "missing {needle:?} in:\n{}", m.body);
    }
    assert!(!m.body.contains("s3cr3t-value"), "secrets never reach a mail");
    let sent = d.eventually(Duration::from_secs(5), "the mail marked sent", || {
        mails(&d).into_iter().find(|m| m["state"] == "sent")
    });
    assert_eq!(sent["entries"], 3);
    assert_eq!(sent["sent_at"], "2026-11-22T10:01:40.000Z");
    d.advance("10m");
    settle();
    assert_eq!(sink.mails().len(), 1, "exactly one mail");
    // (These checks are failed calls themselves: they come last.)
    let count = |q: &str| {
        d.get(&format!("/v1/mails{q}"), Some(ADMIN)).json()["mails"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!((count("?state=sent"), count("?state=queued")), (1, 0));
    let r = d.get("/v1/mails?state=nope", Some(ADMIN));
    assert_eq!((r.status, r.json()["error"]["field"].as_str()), (422, Some("state")));
    assert_eq!(
        d.get("/v1/mails", Some(TECHNICIAN)).status,
        403,
        "the outbox is for admins"
    );
}

#[test]
fn a_constant_storm_yields_a_mail_every_max_delay() {
    let sink = SmtpSink::start();
    let d = Daemon::start_with_clock(&config(sink.port), Some(START));
    let to = "erp@example.com";
    // A failure every 50 s: each one pushes the debounce (60 s) further.
    for round in 0..2u64 {
        for i in 1..=18u64 {
            d.get("/v1/nope", Some(INTEGRATION));
            wait_entries(&d, to, i);
            assert_eq!(sink.mails().len() as u64, round, "no mail before the cap (failure {i})");
            d.advance("50s");
        }
        // 18 × 50 s = 15 min after the first failure of the round: the cap.
        let got = sink.wait_for(round as usize + 1, Duration::from_secs(5));
        assert_eq!(
            got[round as usize].subject,
            "[herald gw-test] 18 API calls failed for account erp"
        );
        d.eventually(Duration::from_secs(5), "the mail marked sent", || {
            (mails(&d).iter().filter(|m| m["state"] == "sent").count() as u64 == round + 1).then_some(())
        });
    }
    let sent: Vec<String> = mails(&d)
        .iter()
        .map(|m| m["sent_at"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(sent.contains(&"2026-11-22T10:15:00.000Z".to_string()), "{sent:?}");
    assert!(sent.contains(&"2026-11-22T10:30:00.000Z".to_string()), "{sent:?}");
}

#[test]
fn wrong_credentials_send_no_mail_but_are_logged() {
    let sink = SmtpSink::start();
    let d = Daemon::start_with_clock(&config(sink.port), Some(START));
    for _ in 0..3 {
        assert_eq!(d.get("/v1/events", Some("not-a-token")).status, 401);
    }
    assert_eq!(d.get("/v1/events", None).status, 401);
    d.advance("20m");
    // Callers nobody can identify are logged as a count, at most once a minute.
    assert_eq!(d.get("/v1/events", None).status, 401);
    settle();
    assert!(sink.mails().is_empty());
    assert!(mails(&d).is_empty());
    let exe = d.eventually(Duration::from_secs(5), "the api execution", || {
        let list = d.get("/v1/executions?interface=api", Some(ADMIN)).json();
        list["executions"]
            .as_array()
            .unwrap()
            .first()
            .cloned()
            .filter(|e| e["errors"] == 2)
    });
    let logs = d
        .get(
            &format!("/v1/executions/{}/logs?level=error", exe["id"].as_str().unwrap()),
            Some(ADMIN),
        )
        .json();
    assert!(
        logs["logs"][0]["message"]
            .as_str()
            .unwrap()
            .contains("401 unauthorized")
    );
    let second = logs["logs"][1]["message"].as_str().unwrap();
    assert!(
        second.starts_with("4 calls without valid credentials since"),
        "{second}"
    );
}

#[test]
fn two_accounts_get_two_separate_mails() {
    let sink = SmtpSink::start();
    let d = Daemon::start_with_clock(&config(sink.port), Some(START));
    d.get("/v1/from-erp", Some(INTEGRATION));
    d.post("/v1/events", Some(TECHNICIAN), r#"{"event":"x"}"#);
    d.get("/v1/from-erp-again", Some(INTEGRATION));
    wait_entries(&d, "erp@example.com", 2);
    wait_entries(&d, "tech@example.com", 1);
    d.advance("61s");
    let mut got = sink.wait_for(2, Duration::from_secs(5));
    got.sort_by(|a, b| a.to.cmp(&b.to));
    assert_eq!(got[0].to, ["erp@example.com"]);
    assert_eq!(got[0].subject, "[herald gw-test] 2 API calls failed for account erp");
    assert!(got[0].body.contains("/v1/from-erp-again") && !got[0].body.contains("403"));
    assert_eq!(got[1].to, ["tech@example.com"]);
    assert_eq!(got[1].subject, "[herald gw-test] 1 API call failed for account tech");
    assert!(got[1].body.contains("403 forbidden") && !got[1].body.contains("from-erp"));
}

#[test]
fn smtp_down_keeps_the_mail_queued_until_it_is_back() {
    // Take a free port, and keep nothing listening on it for now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Daemon::start_with_clock(&config(port), Some(START));
    d.get("/v1/nope", Some(INTEGRATION));
    wait_entries(&d, "erp@example.com", 1);
    d.advance("60s");
    let queued = d.eventually(Duration::from_secs(10), "a failed attempt", || {
        mails(&d).into_iter().find(|m| m["last_error"].is_string())
    });
    assert_eq!(queued["state"], "queued");
    assert_eq!(queued["send_after"], "2026-11-22T10:01:30.000Z", "next try 30 s later");
    assert!(
        queued["last_error"]
            .as_str()
            .unwrap()
            .contains(&format!("127.0.0.1:{port}")),
        "{queued}"
    );
    // The exchange is in the log of interface `mail`, as an external error.
    let logs = d.newest_logs("mail", "");
    assert_eq!(logs["logs"][0]["category"], "external", "{logs}");

    let sink = SmtpSink::start_on(port, false);
    d.advance("30s");
    let got = sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(got[0].subject, "[herald gw-test] 1 API call failed for account erp");
    let sent = d.eventually(Duration::from_secs(5), "sent", || {
        mails(&d).into_iter().find(|m| m["state"] == "sent")
    });
    assert_eq!(sent["attempts"], 2);
}

#[test]
fn refused_smtp_login_is_a_configuration_error_and_retention_ends_in_failed() {
    let sink = SmtpSink::start_on(0, true);
    let config = config(sink.port).replace(
        "security = \"none\"\n",
        "security = \"none\"\nusername = \"herald\"\npassword = \"wrong-password\"\n",
    );
    let d = Daemon::start_with_clock(&config, Some(START));
    d.get("/v1/nope", Some(INTEGRATION));
    wait_entries(&d, "erp@example.com", 1);
    d.advance("60s");
    let m = d.eventually(Duration::from_secs(10), "a refused attempt", || {
        mails(&d).into_iter().find(|m| m["last_error"].is_string())
    });
    assert!(
        m["last_error"].as_str().unwrap().contains("authentication failed"),
        "{m}"
    );
    let logs = d.newest_logs("mail", "");
    assert_eq!(logs["logs"][0]["category"], "configuration", "{logs}");
    assert!(
        !d.log_text().contains("wrong-password"),
        "the password never reaches the log"
    );
    // mail_retention is 1h: keep failing until then, and the mail is `failed`.
    for _ in 0..14 {
        d.advance("5m");
        std::thread::sleep(Duration::from_millis(100));
    }
    d.eventually(Duration::from_secs(10), "the mail to fail", || {
        mails(&d).into_iter().find(|m| m["state"] == "failed")
    });
    assert!(sink.mails().is_empty());
}

#[test]
fn without_smtp_mails_stay_queued_and_the_mail_log_says_why() {
    let d = Daemon::start_with_clock(&format!("[alerts]\ndebounce = \"60s\"\n{}", accounts()), Some(START));
    d.get("/v1/nope", Some(INTEGRATION));
    wait_entries(&d, "erp@example.com", 1);
    d.advance("61s");
    let exe = d.eventually(Duration::from_secs(5), "the mail execution", || {
        d.get("/v1/executions?interface=mail", Some(ADMIN)).json()["executions"]
            .as_array()
            .unwrap()
            .first()
            .cloned()
    });
    let logs = d
        .get(
            &format!("/v1/executions/{}/logs", exe["id"].as_str().unwrap()),
            Some(ADMIN),
        )
        .json();
    assert_eq!(logs["logs"][0]["category"], "configuration");
    assert!(
        logs["logs"][0]["message"]
            .as_str()
            .unwrap()
            .contains("no [smtp] is configured"),
        "{logs}"
    );
    assert_eq!(mails(&d)[0]["state"], "queued");
}

#[test]
fn a_restart_inside_the_window_sends_one_mail_with_every_failure() {
    let sink = SmtpSink::start();
    let mut d = Daemon::start_with_clock(&config(sink.port), Some(START));
    d.get("/v1/first", Some(INTEGRATION));
    wait_entries(&d, "erp@example.com", 1);
    d.advance("10s");
    d.get("/v1/second", Some(INTEGRATION));
    wait_entries(&d, "erp@example.com", 2);
    d.kill9();
    d.set_clock("2026-11-22T10:00:30Z");
    d.spawn();
    d.get("/v1/third", Some(INTEGRATION));
    wait_entries(&d, "erp@example.com", 3);
    d.advance("60s");
    let got = sink.wait_for(1, Duration::from_secs(5));
    assert_eq!(got[0].subject, "[herald gw-test] 3 API calls failed for account erp");
    for path in ["/v1/first", "/v1/second", "/v1/third"] {
        assert!(got[0].body.contains(path), "{path} missing:\n{}", got[0].body);
    }
    d.advance("30m");
    settle();
    assert_eq!(sink.mails().len(), 1, "no duplicate");
}

/// A 409 answered to a person (Run now while the run goes) is no failed
/// API call: no mail to the technician who pressed it, no error line.
#[test]
fn a_conflict_answered_to_a_person_is_no_failed_call() {
    let smtp = SmtpSink::start();
    let sink = crate::http_sink::HttpSink::start(crate::http_sink::Answer::Hang);
    let d = Daemon::start_with_clock(
        &format!(
            "{}[[interfaces]]\nname = \"shop\"\nkind = \"pull\"\nurl = \"{}\"\ntimeout = \"60s\"\n\
             [[schedules]]\nname = \"sales\"\ninterface = \"shop\"\nevery = \"2h\"\n",
            config(smtp.port),
            sink.url("/sales")
        ),
        Some(START),
    );
    assert_eq!(d.post("/v1/schedules/sales/run", Some(TECHNICIAN), "").status, 202);
    sink.wait_for(1, Duration::from_secs(10));
    let again = d.post("/v1/schedules/sales/run", Some(TECHNICIAN), "");
    assert_eq!(again.status, 409, "{}", again.body);
    // The integration's own failure is still recorded.
    d.get("/v1/nope", Some(INTEGRATION));
    wait_entries(&d, "erp@example.com", 1);
    settle();
    assert!(
        mails(&d).iter().all(|m| m["to"] != "tech@example.com"),
        "{:?}",
        mails(&d)
    );
    let log = d.log_text();
    let failed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("request failed") && l.contains("status=409"))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
}

#[test]
fn a_mail_carries_the_headers_mail_systems_expect() {
    let sink = SmtpSink::start();
    let d = Daemon::start_with_clock(
        &config(sink.port).replace("name = \"gw-test\"", "name = \"gw-Zürich\""),
        Some(START),
    );
    d.post(
        "/v1/events",
        Some(INTEGRATION),
        r#"{"event":"bad name","data":{"city":"Genève"}}"#,
    );
    wait_entries(&d, "erp@example.com", 1);
    d.advance("60s");
    let got = sink.wait_for(1, Duration::from_secs(5));
    let m = &got[0];
    // Read back by a mail parser (mailparse), not by substring.
    let parsed = mailparse::parse_mail(&m.raw).unwrap();
    let header = |name: &str| parsed.headers.get_first_value(name);
    let id = header("Message-ID").expect("a Message-ID");
    assert!(id.starts_with('<') && id.ends_with('>') && id.contains('@'), "{id}");
    let date = mailparse::dateparse(&header("Date").expect("a Date")).unwrap();
    assert_eq!(date, 1_795_341_660, "herald's wall clock when it sent (10:01:00)");
    assert_eq!(header("MIME-Version").as_deref(), Some("1.0"));
    assert_eq!(parsed.ctype.mimetype, "text/plain");
    assert_eq!(parsed.ctype.charset, "utf-8");
    let encoding = header("Content-Transfer-Encoding").expect("a transfer encoding");
    assert!(
        ["7bit", "8bit", "quoted-printable", "base64"].contains(&encoding.to_ascii_lowercase().as_str()),
        "{encoding}"
    );
    assert!(m.subject.contains("gw-Zürich"), "the subject decodes: {}", m.subject);
    let body = parsed.get_body().unwrap();
    assert!(body.contains("gw-Zürich") || body.contains("Genève"), "{body}");
    assert!(
        !m.raw.iter().any(|b| *b >= 0x80) || encoding.eq_ignore_ascii_case("8bit"),
        "raw 8-bit only when declared"
    );
}
