//! External API actions on the real binary, on the driven clock, against a
//! local receiver: the signed call, the callback (success, rejection, its
//! repeat, 409, a wrong token), the timeout to a queue, retries to closed
//! with the owner's mail, the manual retry, attempts changed by SIGHUP, and
//! kill -9 while waiting, retrying and calling.

use std::time::Duration;

use serde_json::{Value, json};

use crate::http_sink::{Answer, HttpSink, Received};
use crate::smtp_sink::SmtpSink;
use crate::util::*;

const START: &str = "2026-12-01T10:00:00Z";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// An action interface `crm` at `url` with `settings` (TOML lines), mail to
/// the SMTP sink on `smtp`, and the three accounts.
fn config(url: &str, settings: &str, smtp: Option<u16>) -> String {
    let mail = smtp.map_or(String::new(), |port| {
        format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nfrom = \"herald@example.com\"\n\n\
             [alerts]\ndebounce = \"60s\"\nmax_delay = \"15m\"\n\n"
        )
    });
    format!(
        "[general]\nname = \"gw-test\"\n\n{mail}[[interfaces]]\nname = \"crm\"\nkind = \"action\"\nurl = \"{url}\"\n\
         {settings}\n\n{}",
        accounts()
    )
}

fn daemon(sink: &HttpSink, settings: &str, smtp: Option<u16>) -> Daemon {
    Daemon::start_with_clock(&config(&sink.url("/enate"), settings, smtp), Some(START))
}

fn create(d: &Daemon, body: Value) -> Value {
    let r = d.post("/v1/actions", Some(INTEGRATION), &body.to_string());
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()
}

fn action(d: &Daemon, id: &str) -> Value {
    let r = d.get(&format!("/v1/actions/{id}"), Some(ADMIN));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// Waits until the action `id` has made `n` attempts and left `pending`.
fn after_attempts(d: &Daemon, id: &str, n: u64) -> Value {
    d.eventually(Duration::from_secs(10), &format!("attempt {n} of {id}"), || {
        let a = action(d, id);
        (a["attempts_made"] == n && a["state"] != "pending").then_some(a)
    })
}

fn callback(d: &Daemon, id: &str, token: &str, body: Value) -> Reply {
    request_with(
        &format!("{}/v1/actions/{id}/callback", d.base),
        "POST",
        &[("x-herald-callback-token", token)],
        Some(("application/json", &body.to_string())),
    )
}

/// The callback token of the call `r`.
fn token_of(r: &Received) -> String {
    r.json()["callback_token"].as_str().unwrap().to_string()
}

fn calls_of(sink: &HttpSink, id: &str) -> Vec<Received> {
    sink.received()
        .into_iter()
        .filter(|r| r.json()["action_id"] == id)
        .collect()
}

#[test]
fn an_accepted_call_completes_by_callback_and_repeats_change_nothing() {
    let sink = HttpSink::start(Answer::Status(202));
    let d = daemon(&sink, &format!("secret = \"{SECRET}\""), None);
    let body = json!({"interface": "crm", "payload": {"order": 7, "name": "Müller"},
                      "idempotency_key": "order-7"});
    let a = create(&d, body.clone());
    let id = a["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("act_"), "{a}");
    assert_eq!(a["state"], "pending");
    assert_eq!(
        (a["attempts_made"].as_u64(), a["attempts_max"].as_u64()),
        (Some(0), Some(5))
    );

    let got = sink.wait_for(1, Duration::from_secs(10));
    let call = &got[0];
    assert_eq!((call.method.as_str(), call.path.as_str()), ("POST", "/enate"));
    let sent = call.json();
    assert_eq!(sent["action_id"], id.as_str());
    assert_eq!(sent["interface"], "crm");
    assert_eq!(sent["payload"], json!({"order": 7, "name": "Müller"}));
    assert!(
        sent["callback_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/actions/{id}/callback")),
        "{sent}"
    );
    // Signed as Standard Webhooks, by the official library's reckoning (its
    // `verify` checks the timestamp against the real clock, not the driven one).
    assert_eq!(call.headers["webhook-id"], id);
    let ts: i64 = call.headers["webhook-timestamp"].parse().unwrap();
    assert_eq!(
        ts,
        "2026-12-01T10:00:00Z".parse::<jiff::Timestamp>().unwrap().as_second()
    );
    let verifier = standardwebhooks::Webhook::new(SECRET).unwrap();
    assert_eq!(
        call.headers["webhook-signature"],
        verifier.sign(&id, ts, &call.body).unwrap()
    );

    let waiting = after_attempts(&d, &id, 1);
    assert_eq!(waiting["state"], "waiting", "{waiting}");
    // A repeated idempotency key gives the first action, and no second call.
    let again = d.post("/v1/actions", Some(INTEGRATION), &body.to_string());
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.json()["id"], id.as_str());

    // The payload goes out as it came, every digit and escape kept.
    let exact = d.post(
        "/v1/actions",
        Some(INTEGRATION),
        r#"{"interface": "crm", "payload": {"big": 123456789012345678901234567890, "s": "\u00e9"}}"#,
    );
    assert_eq!(exact.status, 201, "{}", exact.body);
    let got = sink.wait_for(2, Duration::from_secs(10));
    let raw = String::from_utf8_lossy(&got[1].body).into_owned();
    assert!(
        raw.contains(r#""payload":{"big": 123456789012345678901234567890, "s": "\u00e9"}"#),
        "{raw}"
    );

    let token = token_of(call);
    let done = callback(&d, &id, &token, json!({"success": true, "data": {"ticket": "T-1"}}));
    assert_eq!(done.status, 200, "{}", done.body);
    let done = done.json();
    assert_eq!(done["state"], "completed");
    assert_eq!(done["resolution"], "successfully_completed");
    assert_eq!(done["data"], json!({"ticket": "T-1"}));
    // The same callback again: 200, nothing changes.
    let repeat = callback(&d, &id, &token, json!({"success": true, "data": {"ticket": "T-1"}}));
    assert_eq!(repeat.status, 200, "{}", repeat.body);
    assert_eq!(repeat.json(), done);
    // A different one after the wait: 409, logged, nothing changes.
    let other = callback(&d, &id, &token, json!({"success": false, "reason": "late"}));
    assert_eq!(other.status, 409, "{}", other.body);
    assert_eq!(other.json()["error"]["code"], "conflict");
    assert_eq!(action(&d, &id), done);
    // The timeout of a completed action does nothing.
    d.advance("3h");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(action(&d, &id)["state"], "completed");
    assert_eq!(calls_of(&sink, &id).len(), 1, "one call in all");

    let logs = d.newest_logs("crm", "");
    let messages: Vec<&str> = logs["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.contains(&id) && m.contains("completed by the external system")),
        "{logs}"
    );
    assert!(
        messages.iter().any(|m| m.contains(&id) && m.contains("409")),
        "the refused callback is logged: {logs}"
    );
}

#[test]
fn a_callback_that_overtakes_the_answer_to_the_call_is_taken() {
    // The external system calls back while its answer to the call is still
    // on the way (here: never comes, and the call times out).
    let sink = HttpSink::start(Answer::Hang);
    let d = daemon(&sink, "timeout = \"1s\"\nretry_wait = \"1m\"", None);
    let id = create(&d, json!({"interface": "crm", "payload": {}}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = sink.wait_for(1, Duration::from_secs(10));
    let r = callback(&d, &id, &token_of(&got[0]), json!({"success": true, "data": 42}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["state"].as_str(), r.json()["attempts_made"].as_u64()),
        (Some("completed"), Some(1))
    );
    // The call's timeout afterwards changes nothing, and nothing is retried.
    std::thread::sleep(Duration::from_millis(1500));
    d.advance("5m");
    std::thread::sleep(Duration::from_millis(300));
    let a = action(&d, &id);
    assert_eq!(
        (a["state"].as_str(), a["data"].as_u64()),
        (Some("completed"), Some(42)),
        "{a}"
    );
    assert!(a.get("last_error").is_none(), "{a}");
    assert_eq!(sink.received().len(), 1);
}

#[test]
fn a_rejection_is_to_do_with_its_reason() {
    let sink = HttpSink::start(Answer::Status(200));
    let d = daemon(&sink, "", None);
    let id = create(&d, json!({"interface": "crm", "payload": [1, 2]}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = sink.wait_for(1, Duration::from_secs(10));
    after_attempts(&d, &id, 1);
    let r = callback(
        &d,
        &id,
        &token_of(&got[0]),
        json!({"success": false, "reason": "customer 4711 unknown"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let a = r.json();
    assert_eq!(a["state"], "todo");
    assert_eq!(a["reason"], "updated_by_integration");
    assert_eq!(a["rejected_reason"], "customer 4711 unknown");
    assert!(a.get("resolution").is_none() && a.get("data").is_none(), "{a}");
    let warn = d.newest_logs("crm", "?level=warn");
    assert!(warn.to_string().contains("customer 4711 unknown"), "{warn}");
    // Bad callbacks are named by field.
    let bad = callback(&d, &id, &token_of(&got[0]), json!({"success": "yes"}));
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(bad.json()["error"]["field"], "success");
}

#[test]
fn no_callback_in_time_goes_to_the_timeout_queue_without_mail() {
    let smtp = SmtpSink::start();
    let sink = HttpSink::start(Answer::Status(202));
    let d = daemon(
        &sink,
        "action_timeout = \"2h\"\ntimeout_queue = \"backoffice\"",
        Some(smtp.port),
    );
    let a = create(
        &d,
        json!({"interface": "crm", "payload": {}, "owner": "owner@example.com"}),
    );
    let id = a["id"].as_str().unwrap();
    let got = sink.wait_for(1, Duration::from_secs(10));
    after_attempts(&d, id, 1);
    d.advance("119m");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(action(&d, id)["state"], "waiting", "not before action_timeout");
    d.advance("1m");
    let a = d.eventually(Duration::from_secs(10), "the timeout", || {
        let a = action(&d, id);
        (a["state"] == "todo").then_some(a)
    });
    assert_eq!(a["reason"], "timeout");
    assert_eq!(a["queue"], "backoffice");
    let logs = d.newest_logs("crm", "?level=warn");
    assert!(logs.to_string().contains("backoffice"), "{logs}");
    // A late callback: 409.
    let late = callback(&d, id, &token_of(&got[0]), json!({"success": true}));
    assert_eq!(late.status, 409, "{}", late.body);
    // The owner is not mailed, however long one waits.
    d.advance("1h");
    std::thread::sleep(Duration::from_millis(500));
    assert!(smtp.mails().is_empty(), "{:?}", smtp.mails());
    assert_eq!(d.get("/v1/mails", Some(ADMIN)).json()["mails"], json!([]));
}

#[test]
fn failed_attempts_retry_then_close_and_mail_the_owner() {
    let smtp = SmtpSink::start();
    let sink = HttpSink::start(Answer::Status(503));
    let d = daemon(&sink, "attempts = 3\nretry_wait = \"1m\"", Some(smtp.port));
    let with_owner = create(
        &d,
        json!({"interface": "crm", "payload": {"n": 1}, "owner": "owner@example.com"}),
    );
    let without = create(&d, json!({"interface": "crm", "payload": {"n": 2}}));
    let (a, b) = (with_owner["id"].as_str().unwrap(), without["id"].as_str().unwrap());
    let first = after_attempts(&d, a, 1);
    after_attempts(&d, b, 1);
    assert_eq!(first["state"], "retrying", "{first}");
    assert_eq!(first["next_retry_at"], "2026-12-01T10:01:00.000Z");
    assert_eq!(first["last_error"]["at"], "2026-12-01T10:00:00.000Z");
    assert!(
        first["last_error"]["message"].as_str().unwrap().contains("503"),
        "{first}"
    );
    // `herald status` and the status page say "attempt N of M".
    let (code, out, err) = run_cli(&["status", "--url", &d.base, "--token", ADMIN], None);
    assert!(code.is_some(), "{err}");
    assert!(
        out.contains(&format!("{a} retrying")) && out.contains("attempt 1 of 3"),
        "{out}{err}"
    );
    let page = d.get("/", Some(TECHNICIAN)).body;
    assert!(page.contains(a) && page.contains("attempt 1 of 3"), "{page}");

    d.advance("1m");
    after_attempts(&d, a, 2);
    after_attempts(&d, b, 2);
    d.advance("1m");
    let closed = after_attempts(&d, a, 3);
    after_attempts(&d, b, 3);
    assert_eq!(closed["state"], "closed");
    assert_eq!(closed["resolution"], "unsuccessfully_completed");
    assert!(closed.get("next_retry_at").is_none(), "{closed}");
    d.advance("10m");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(calls_of(&sink, a).len(), 3, "never a fourth attempt");

    // The owner, else the creating account's e-mail, is told.
    let mails = smtp.wait_for(2, Duration::from_secs(10));
    let to_owner = mails
        .iter()
        .find(|m| m.to == ["owner@example.com"])
        .expect("a mail to the owner");
    for part in [a, "crm", "attempt 3 of 3", "503"] {
        assert!(
            to_owner.subject.contains(part) || to_owner.body.contains(part),
            "{part} in {}\n{}",
            to_owner.subject,
            to_owner.body
        );
    }
    let to_creator = mails
        .iter()
        .find(|m| m.to == ["erp@example.com"])
        .expect("a mail to the creator");
    assert!(to_creator.body.contains(b), "{}", to_creator.body);

    // Each failure is an external error line of the interface's daily execution.
    let errors = d.newest_logs("crm", "?level=error");
    let lines = errors["logs"].as_array().unwrap();
    assert_eq!(lines.len(), 6, "{errors}");
    assert!(lines.iter().all(|l| l["category"] == "external"), "{errors}");
    assert!(
        lines
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains("attempt 3 of 3")),
        "{errors}"
    );
}

#[test]
fn a_refusal_closes_at_once_as_a_mapping_error() {
    let sink = HttpSink::start(Answer::Status(422));
    let d = daemon(&sink, "", None);
    let id = create(&d, json!({"interface": "crm", "payload": {}}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let a = after_attempts(&d, &id, 1);
    assert_eq!(a["state"], "closed", "{a}");
    assert_eq!(a["resolution"], "unsuccessfully_completed");
    assert_eq!(
        (a["attempts_made"].as_u64(), a["attempts_max"].as_u64()),
        (Some(1), Some(5))
    );
    let errors = d.newest_logs("crm", "?level=error");
    assert_eq!(errors["logs"][0]["category"], "mapping", "{errors}");
    // A retry of a closed action: 409.
    let r = d.post(&format!("/v1/actions/{id}/retry"), Some(TECHNICIAN), "");
    assert_eq!(r.status, 409, "{}", r.body);
}

#[test]
fn a_manual_retry_is_one_attempt_at_once_and_counts() {
    let sink = HttpSink::start(Answer::Status(500));
    let d = daemon(&sink, "retry_wait = \"5m\"", None);
    let id = create(&d, json!({"interface": "crm", "payload": {}}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    after_attempts(&d, &id, 1);
    let path = format!("/v1/actions/{id}/retry");
    assert_eq!(d.post(&path, Some(INTEGRATION), "").status, 403);

    // Still failing: retrying, counted, the next try planned from now.
    d.advance("2m");
    let r = d.post(&path, Some(TECHNICIAN), "");
    assert_eq!(r.status, 200, "{}", r.body);
    let a = r.json();
    assert_eq!(
        (a["state"].as_str(), a["attempts_made"].as_u64()),
        (Some("retrying"), Some(2))
    );
    assert_eq!(a["next_retry_at"], "2026-12-01T10:07:00.000Z");
    assert_eq!(sink.received().len(), 2);

    // Now accepted: waiting, and a retry is no longer allowed.
    sink.set(Answer::Status(202));
    let r = d.post(&path, Some(ADMIN), "");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["state"].as_str(), r.json()["attempts_made"].as_u64()),
        (Some("waiting"), Some(3))
    );
    let again = d.post(&path, Some(ADMIN), "");
    assert_eq!(again.status, 409, "{}", again.body);
    // The planned automatic retry is gone with it.
    d.advance("10m");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.received().len(), 3);
    // The token went out again with every call.
    let tokens: Vec<String> = sink.received().iter().map(token_of).collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]), "{tokens:?}");
    let done = callback(&d, &id, &tokens[0], json!({"success": true}));
    assert_eq!(done.status, 200, "{}", done.body);
}

#[test]
fn a_wrong_callback_token_is_refused_and_counts_as_a_failed_login() {
    let sink = HttpSink::start(Answer::Status(202));
    let d = daemon(&sink, "", None);
    let id = create(&d, json!({"interface": "crm", "payload": {}}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = sink.wait_for(1, Duration::from_secs(10));
    after_attempts(&d, &id, 1);
    let missing = request_with(
        &format!("{}/v1/actions/{id}/callback", d.base),
        "POST",
        &[],
        Some(("application/json", r#"{"success":true}"#)),
    );
    assert_eq!(missing.status, 401, "{}", missing.body);
    for _ in 0..10 {
        let r = callback(&d, &id, "hrl_wrong", json!({"success": true}));
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(r.json()["error"]["code"], "unauthorized");
    }
    let limited = callback(&d, &id, "hrl_wrong", json!({"success": true}));
    assert_eq!(limited.status, 429, "{}", limited.body);
    // An admin's token is not the action's.
    assert_eq!(callback(&d, &id, ADMIN, json!({"success": true})).status, 429);
    assert_eq!(action(&d, &id)["state"], "waiting");
    // The right token still passes.
    let ok = callback(&d, &id, &token_of(&got[0]), json!({"success": true}));
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(callback(&d, "act_nope", "x", json!({"success": true})).status, 404);
}

#[test]
fn bad_requests_name_the_field() {
    let sink = HttpSink::start(Answer::Status(202));
    let d = daemon(&sink, "", None);
    for (body, field) in [
        (json!({"payload": {}}), "interface"),
        (json!({"interface": "nope", "payload": {}}), "interface"),
        (json!({"interface": "crm"}), "payload"),
        (
            json!({"interface": "crm", "payload": {}, "owner": "not-an-address"}),
            "owner",
        ),
        (
            json!({"interface": "crm", "payload": {}, "idempotency_key": ""}),
            "idempotency_key",
        ),
        (json!({"interface": "crm", "payload": {}, "colour": "red"}), "colour"),
    ] {
        let r = d.post("/v1/actions", Some(ADMIN), &body.to_string());
        assert_eq!(r.status, 422, "{body}: {}", r.body);
        assert_eq!(r.json()["error"]["field"], field, "{body}: {}", r.body);
    }
    assert_eq!(
        d.post("/v1/actions", Some(TECHNICIAN), r#"{"interface":"crm","payload":1}"#)
            .status,
        403
    );
    assert_eq!(d.get("/v1/actions/act_nope", Some(ADMIN)).status, 404);
    assert_eq!(
        d.get("/v1/actions?state=lost", Some(ADMIN)).json()["error"]["field"],
        "state"
    );
    assert!(sink.received().is_empty(), "nothing was called");
    assert_eq!(d.get("/v1/actions", Some(ADMIN)).json()["actions"], json!([]));
}

/// Rewrites the interface's `attempts` and reloads.
fn reload_attempts(d: &Daemon, sink: &HttpSink, attempts: u32) {
    let text = std::fs::read_to_string(d.config_path()).unwrap();
    let mut t: toml::Table = text.parse().unwrap();
    let crm = &mut t["interfaces"].as_array_mut().unwrap()[0];
    crm.as_table_mut().unwrap().insert("attempts".into(), attempts.into());
    assert_eq!(crm["url"].as_str(), Some(sink.url("/enate").as_str()));
    std::fs::write(d.config_path(), toml::to_string(&t).unwrap()).unwrap();
    d.signal("HUP");
}

#[test]
fn raised_attempts_show_on_a_closed_action_and_let_an_open_one_go_on() {
    let sink = HttpSink::start(Answer::Status(503));
    let d = daemon(&sink, "attempts = 5\nretry_wait = \"1m\"", None);
    let a = create(&d, json!({"interface": "crm", "payload": {"a": 1}}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    after_attempts(&d, &a, 1);
    d.advance("1m");
    after_attempts(&d, &a, 2);
    let b = create(&d, json!({"interface": "crm", "payload": {"b": 1}}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    after_attempts(&d, &b, 1);
    for n in 3..=5 {
        d.advance("1m");
        after_attempts(&d, &a, n);
        after_attempts(&d, &b, n - 1);
    }
    assert_eq!(action(&d, &a)["state"], "closed");
    assert_eq!(action(&d, &b)["state"], "retrying");

    reload_attempts(&d, &sink, 7);
    d.eventually(Duration::from_secs(10), "attempts 7 applied", || {
        (action(&d, &a)["attempts_max"] == 7 && action(&d, &b)["attempts_max"] == 7).then_some(())
    });
    let closed = action(&d, &a);
    assert_eq!(
        (closed["state"].as_str(), closed["attempts_made"].as_u64()),
        (Some("closed"), Some(5)),
        "closed at 5/5 shows 5/7"
    );
    for n in 5..=7 {
        d.advance("1m");
        after_attempts(&d, &b, n);
    }
    let b_end = action(&d, &b);
    assert_eq!(b_end["state"], "closed", "{b_end}");
    assert_eq!(
        (b_end["attempts_made"].as_u64(), b_end["attempts_max"].as_u64()),
        (Some(7), Some(7))
    );
    d.advance("10m");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(calls_of(&sink, &a).len(), 5, "the closed one is never tried again");
    assert_eq!(calls_of(&sink, &b).len(), 7, "the open one tried until 7");
}

#[test]
fn lowered_attempts_close_an_open_action_at_once_and_mail_its_owner() {
    let smtp = SmtpSink::start();
    let sink = HttpSink::start(Answer::Status(503));
    let d = daemon(&sink, "attempts = 10\nretry_wait = \"1m\"", Some(smtp.port));
    let id = create(
        &d,
        json!({"interface": "crm", "payload": {}, "owner": "owner@example.com"}),
    )["id"]
        .as_str()
        .unwrap()
        .to_string();
    after_attempts(&d, &id, 1);
    for n in 2..=4 {
        d.advance("1m");
        after_attempts(&d, &id, n);
    }
    reload_attempts(&d, &sink, 4);
    let a = d.eventually(Duration::from_secs(10), "the close", || {
        let a = action(&d, &id);
        (a["state"] == "closed").then_some(a)
    });
    assert_eq!(
        (a["attempts_made"].as_u64(), a["attempts_max"].as_u64()),
        (Some(4), Some(10))
    );
    assert_eq!(a["resolution"], "unsuccessfully_completed");
    d.advance("2m");
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(mails[0].to, ["owner@example.com"]);
    assert!(mails[0].body.contains(&id), "{}", mails[0].body);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sink.received().len(), 4, "no attempt after the close");
}

#[test]
fn kill_9_loses_no_action_and_repeats_no_answered_call() {
    let sink = HttpSink::start(Answer::Status(202));
    let mut d = daemon(&sink, "retry_wait = \"1m\"", None);
    let waiting = create(&d, json!({"interface": "crm", "payload": {"w": 1}}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    after_attempts(&d, &waiting, 1);
    sink.set(Answer::Status(503));
    let retrying = create(&d, json!({"interface": "crm", "payload": {"r": 1}}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    after_attempts(&d, &retrying, 1);
    // A third call hangs: it is in flight when the process dies.
    sink.set(Answer::Hang);
    let in_flight = create(&d, json!({"interface": "crm", "payload": {"f": 1}}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    d.eventually(Duration::from_secs(10), "the hanging call", || {
        (!calls_of(&sink, &in_flight).is_empty()).then_some(())
    });
    d.kill9();
    sink.set(Answer::Status(202));
    d.spawn();

    // The call in flight is made again, with the same action and token.
    d.eventually(Duration::from_secs(10), "the call again", || {
        (calls_of(&sink, &in_flight).len() == 2).then_some(())
    });
    let again = calls_of(&sink, &in_flight);
    assert_eq!(token_of(&again[0]), token_of(&again[1]));
    // The waiting one still waits, with no second call, and takes its callback.
    let w = action(&d, &waiting);
    assert_eq!(
        (w["state"].as_str(), w["attempts_made"].as_u64()),
        (Some("waiting"), Some(1))
    );
    assert_eq!(calls_of(&sink, &waiting).len(), 1);
    let token = token_of(&calls_of(&sink, &waiting)[0]);
    assert_eq!(callback(&d, &waiting, &token, json!({"success": true})).status, 200);
    // The retrying one keeps its plan and its token.
    let r = action(&d, &retrying);
    assert_eq!(
        (r["state"].as_str(), r["attempts_made"].as_u64()),
        (Some("retrying"), Some(1))
    );
    assert_eq!(calls_of(&sink, &retrying).len(), 1, "not called again before its time");
    d.advance("1m");
    let r = after_attempts(&d, &retrying, 2);
    assert_eq!(r["state"], "waiting", "{r}");
    let calls = calls_of(&sink, &retrying);
    assert_eq!(calls.len(), 2);
    assert_eq!(token_of(&calls[0]), token_of(&calls[1]));
    assert_eq!(
        callback(&d, &retrying, &token_of(&calls[1]), json!({"success": true})).status,
        200
    );
}

/// A changed `attempts` reaches stored actions after a restart as it does
/// after SIGHUP.
#[test]
fn attempts_changed_while_stopped_reach_the_actions_at_start() {
    let sink = HttpSink::start(Answer::Status(503));
    let mut d = daemon(&sink, "attempts = 5\nretry_wait = \"1m\"", None);
    let a = create(&d, json!({"interface": "crm", "payload": {"a": 1}}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    after_attempts(&d, &a, 1);
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    let text = std::fs::read_to_string(d.config_path()).unwrap();
    let mut t: toml::Table = text.parse().unwrap();
    let crm = &mut t["interfaces"].as_array_mut().unwrap()[0];
    crm.as_table_mut().unwrap().insert("attempts".into(), 2.into());
    std::fs::write(d.config_path(), toml::to_string(&t).unwrap()).unwrap();
    d.spawn();
    d.eventually(Duration::from_secs(10), "attempts 2 applied", || {
        (action(&d, &a)["attempts_max"] == 2).then_some(())
    });
    d.advance("1m");
    after_attempts(&d, &a, 2);
    d.eventually(Duration::from_secs(5), "closed after 2", || {
        (action(&d, &a)["state"] == "closed").then_some(())
    });
}
