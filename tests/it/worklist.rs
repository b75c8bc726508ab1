//! The worklist on the real binary: what needs a person, and how each item
//! leaves the list (a later OK run, an acknowledgement, a resolution, a
//! deletion), never by age: retention keeps what is listed. The API, the
//! page and the CLI show the same list.

use std::time::Duration;

use scraper::{Html, Selector};
use serde_json::{Value, json};

use crate::http_sink::{Answer, HttpSink};
use crate::util::*;

const START: &str = "2026-12-01T10:00:00Z";

fn items(d: &Daemon) -> Vec<Value> {
    let r = d.get("/v1/attention", Some(TECHNICIAN));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["items"].as_array().unwrap().clone()
}

fn of_kind(d: &Daemon, kind: &str) -> Vec<Value> {
    items(d).into_iter().filter(|i| i["kind"] == kind).collect()
}

fn post_as(d: &Daemon, token: &str, path: &str, body: Value) -> Reply {
    d.post(path, Some(token), &body.to_string())
}

/// A pull interface `shop` at the sink, with the schedule `shop-sales`.
fn pulling(sink: &HttpSink, extra: &str) -> Daemon {
    Daemon::start_with_clock(
        &format!(
            "{extra}\n[[interfaces]]\nname = \"shop\"\nkind = \"pull\"\nurl = \"{}\"\n\n[[schedules]]\n\
             name = \"shop-sales\"\ninterface = \"shop\"\nevery = \"2h\"\n\n{}",
            sink.url("/shop"),
            accounts()
        ),
        Some(START),
    )
}

/// Runs `shop-sales` now and waits for the run's end; the execution.
fn run(d: &Daemon) -> Value {
    let r = post_as(d, TECHNICIAN, "/v1/schedules/shop-sales/run", json!({}));
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["execution_id"].as_str().unwrap().to_string();
    d.eventually(Duration::from_secs(10), "the run's end", || {
        let e = d.get(&format!("/v1/executions/{id}"), Some(ADMIN)).json();
        e.get("ended_at").is_some().then_some(e)
    })
}

fn logs(d: &Daemon, id: &str) -> String {
    d.get(&format!("/v1/executions/{id}/logs"), Some(ADMIN))
        .json()
        .to_string()
}

fn metric(d: &Daemon, kind: &str) -> String {
    let text = d.get("/metrics", None).body;
    let line = format!("herald_worklist_items{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&line).map(String::from))
        .unwrap_or_else(|| d.fail(&format!("no {line} in:\n{text}")))
}

#[test]
fn a_ko_run_leaves_the_list_when_a_later_run_of_its_schedule_ends_ok() {
    let sink = HttpSink::start(Answer::Status(500));
    let d = pulling(&sink, "");
    let first = run(&d);
    d.advance("1m");
    let second = run(&d);
    assert_eq!(
        (first["status"].as_str(), second["status"].as_str()),
        (Some("ko"), Some("ko"))
    );
    let listed = of_kind(&d, "execution");
    let ids: Vec<&str> = listed.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [&second["id"], &first["id"]].map(|v| v.as_str().unwrap()),
        "newest first"
    );
    let actions: Vec<(&str, &str)> = listed[0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["path"].as_str().unwrap()))
        .collect();
    let ack = format!("/v1/executions/{}/acknowledge", second["id"].as_str().unwrap());
    assert_eq!(
        actions,
        [("acknowledge", ack.as_str()), ("run", "/v1/schedules/shop-sales/run")]
    );
    assert!(
        listed[0]["title"].as_str().unwrap().contains("shop-sales"),
        "{listed:?}"
    );
    assert!(
        listed[0]["detail"].as_str().unwrap().contains("500"),
        "the error: {listed:?}"
    );
    assert_eq!(listed[0]["since"], second["started_at"]);
    assert_eq!(metric(&d, "execution"), "2");

    // The receiver is fixed; Run now succeeds: the old KO runs leave the list.
    sink.set(Answer::Body(200, "[]".into()));
    assert_eq!(run(&d)["status"], "ok");
    assert!(of_kind(&d, "execution").is_empty(), "{:?}", items(&d));
    assert_eq!(metric(&d, "execution"), "0");
    // They stay KO, red, in the history.
    let ko = d.get("/v1/executions?status=ko&interface=shop", Some(ADMIN)).json();
    assert_eq!(ko["executions"].as_array().unwrap().len(), 2, "{ko}");
    let (code, out, err) = run_cli(&["attention", "--url", &d.base, "--token", TECHNICIAN], None);
    assert_eq!(code, Some(0), "nothing needs attention: {out}{err}");

    // A later failure is listed again, alone.
    sink.set(Answer::Status(503));
    let third = run(&d);
    let ids: Vec<Value> = of_kind(&d, "execution").iter().map(|i| i["id"].clone()).collect();
    assert_eq!(ids, [third["id"].clone()]);
}

#[test]
fn an_acknowledged_run_leaves_the_list_and_its_log_says_who_and_why() {
    let sink = HttpSink::start(Answer::Status(500));
    let d = pulling(&sink, "");
    let exe = run(&d);
    let id = exe["id"].as_str().unwrap();
    let path = format!("/v1/executions/{id}/acknowledge");
    assert_eq!(metric(&d, "execution"), "1");

    // An integration may not; a bad note is named; an unknown id is 404.
    assert_eq!(post_as(&d, INTEGRATION, &path, json!({})).status, 403);
    let bad = post_as(&d, TECHNICIAN, &path, json!({"note": 7}));
    assert_eq!((bad.status, bad.json()["error"]["field"].clone()), (422, json!("note")));
    let long = post_as(&d, TECHNICIAN, &path, json!({"note": "x".repeat(501)}));
    assert_eq!(long.status, 422, "{}", long.body);
    let unknown = post_as(&d, TECHNICIAN, "/v1/executions/exe_nope/acknowledge", json!({}));
    assert_eq!(unknown.status, 404);
    let listed = |d: &Daemon| of_kind(d, "execution").iter().any(|i| i["id"] == id);
    assert!(listed(&d), "nothing changed");

    let r = post_as(
        &d,
        TECHNICIAN,
        &path,
        json!({"note": "receiver down, told the provider"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let acked = r.json();
    assert_eq!(acked["status"], "ko", "it stays KO");
    assert_eq!(acked["acknowledged"]["by"], "tech");
    assert_eq!(acked["acknowledged"]["note"], "receiver down, told the provider");
    assert_eq!(acked["acknowledged"]["errors"], 1);
    assert!(!listed(&d));
    // (The refused calls above are errors of the api interface's day.)
    assert_eq!(metric(&d, "execution"), "1");
    assert!(
        logs(&d, id).contains("1 error acknowledged by tech: receiver down, told the provider"),
        "{}",
        logs(&d, id)
    );
    assert_eq!(
        d.get(&format!("/v1/executions/{id}"), Some(ADMIN)).json()["acknowledged"]["by"],
        "tech"
    );
    // Twice: nothing left to acknowledge.
    let again = post_as(&d, ADMIN, &path, json!({}));
    assert_eq!(again.status, 409, "{}", again.body);
    assert!(
        again.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("acknowledged by tech")
    );
    // Without a body at all, and from the CLI: an OK run cannot be acknowledged.
    sink.set(Answer::Body(200, "[]".into()));
    let ok = run(&d);
    let ok_id = ok["id"].as_str().unwrap();
    let (code, _, err) = run_cli(&["acknowledge", ok_id, "--url", &d.base, "--token", TECHNICIAN], None);
    assert_eq!(code, Some(2));
    assert!(err.contains("409") && err.contains("is ok"), "{err}");
}

#[test]
fn a_daily_execution_is_ko_while_open_and_an_acknowledgement_covers_the_errors_so_far() {
    let d = Daemon::start_with_clock(&accounts(), Some(START));
    let fail = |n: u64| {
        d.post("/v1/events", Some(INTEGRATION), r#"{"event":"bad name"}"#);
        d.eventually(Duration::from_secs(5), "the failed call logged", || {
            let list = d.get("/v1/executions?interface=api&status=ko", Some(ADMIN)).json();
            let e = list["executions"][0].clone();
            (e["errors"] == n).then_some(e)
        })
    };
    let exe = fail(1);
    assert!(exe.get("ended_at").is_none(), "still open: {exe}");
    let id = exe["id"].as_str().unwrap().to_string();
    let listed = of_kind(&d, "execution");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], id.as_str());
    let (code, out, err) = run_cli(
        &[
            "acknowledge",
            &id,
            "--note",
            "a script sent a bad name",
            "--url",
            &d.base,
            "--token",
            TECHNICIAN,
        ],
        None,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(of_kind(&d, "execution").is_empty());
    let exe = d.get(&format!("/v1/executions/{id}"), Some(ADMIN)).json();
    assert_eq!(
        (exe["status"].as_str(), exe["acknowledged"]["errors"].as_u64()),
        (Some("ko"), Some(1))
    );

    // A new error brings it back, counting only what is new.
    fail(2);
    let listed = of_kind(&d, "execution");
    assert_eq!(listed.len(), 1, "{listed:?}");
    let title = listed[0]["title"].as_str().unwrap();
    assert!(title.contains("1 error since the last acknowledgement"), "{title}");
}

/// An action interface `crm` at `sink` answering 200, and `billing`
/// (one attempt) at `down`.
fn acting(sink: &HttpSink, down: &HttpSink, extra: &str) -> Daemon {
    Daemon::start_with_clock(
        &format!(
            "{extra}\n[[interfaces]]\nname = \"crm\"\nkind = \"action\"\nurl = \"{}\"\n\n[[interfaces]]\n\
             name = \"billing\"\nkind = \"action\"\nurl = \"{}\"\nattempts = 1\n\n{}",
            sink.url("/crm"),
            down.url("/billing"),
            accounts()
        ),
        Some(START),
    )
}

/// A `todo` action on crm: created, called, rejected by its callback.
fn rejected(d: &Daemon, sink: &HttpSink) -> String {
    let before = sink.received().len();
    let r = post_as(
        d,
        INTEGRATION,
        "/v1/actions",
        json!({"interface": "crm", "payload": {}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let got = sink.wait_for(before + 1, Duration::from_secs(10));
    let token = got[before].json()["callback_token"].as_str().unwrap().to_string();
    d.eventually(Duration::from_secs(10), "the call", || {
        (d.get(&format!("/v1/actions/{id}"), Some(ADMIN)).json()["state"] == "waiting").then_some(())
    });
    let cb = request_with(
        &format!("{}/v1/actions/{id}/callback", d.base),
        "POST",
        &[("x-herald-callback-token", &token)],
        Some((
            "application/json",
            r#"{"success": false, "reason": "customer unknown"}"#,
        )),
    );
    assert_eq!(cb.status, 200, "{}", cb.body);
    id
}

#[test]
fn to_do_actions_are_resolved_or_assigned_by_people_not_integrations() {
    let sink = HttpSink::start(Answer::Status(200));
    let down = HttpSink::start(Answer::Status(503));
    let d = acting(&sink, &down, "");
    let id = rejected(&d, &sink);
    let listed = of_kind(&d, "action");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0]["title"].as_str().unwrap().contains("customer unknown"),
        "{listed:?}"
    );
    let names: Vec<&str> = listed[0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["resolve", "assign"]);
    let resolve = format!("/v1/actions/{id}/resolve");
    let assign = format!("/v1/actions/{id}/assign");

    // Integrations may not; bad bodies are named by field.
    let done = json!({"resolution": "successfully_completed"});
    assert_eq!(post_as(&d, INTEGRATION, &resolve, done.clone()).status, 403);
    assert_eq!(post_as(&d, INTEGRATION, &assign, json!({"queue": "x"})).status, 403);
    let bad = post_as(&d, TECHNICIAN, &resolve, json!({"resolution": "done"}));
    assert_eq!(
        (bad.status, bad.json()["error"]["field"].clone()),
        (422, json!("resolution"))
    );
    let empty = post_as(&d, TECHNICIAN, &assign, json!({}));
    assert_eq!(empty.status, 422, "{}", empty.body);

    // Assigned to another queue and a person: still to do, listed by queue.
    let r = post_as(
        &d,
        TECHNICIAN,
        &assign,
        json!({"queue": "backoffice-2", "assignee": "anna", "note": "she knows them"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["queue"].clone(), r.json()["assignee"].clone()),
        (json!("backoffice-2"), json!("anna"))
    );
    let queue = d.get("/v1/actions?queue=backoffice-2", Some(TECHNICIAN)).json();
    assert_eq!(queue["actions"][0]["id"], id.as_str(), "{queue}");
    assert_eq!(
        d.get("/v1/actions?queue=elsewhere", Some(TECHNICIAN)).json()["actions"],
        json!([])
    );
    assert_eq!(
        d.get("/v1/actions?assignee=anna", Some(ADMIN)).json()["actions"][0]["id"],
        id.as_str()
    );
    let listed = of_kind(&d, "action");
    assert!(
        listed[0]["title"]
            .as_str()
            .unwrap()
            .contains("queue backoffice-2, assigned to anna"),
        "{listed:?}"
    );

    // Resolved: it leaves the list; a second resolution is refused.
    let r = post_as(
        &d,
        TECHNICIAN,
        &resolve,
        json!({"resolution": "unsuccessfully_completed", "note": "customer gone"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let a = r.json();
    assert_eq!(
        (
            a["state"].as_str(),
            a["resolution"].as_str(),
            a["resolved_by"].as_str(),
            a["note"].as_str()
        ),
        (
            Some("closed"),
            Some("unsuccessfully_completed"),
            Some("tech"),
            Some("customer gone")
        )
    );
    assert!(of_kind(&d, "action").is_empty(), "{:?}", items(&d));
    assert_eq!(post_as(&d, ADMIN, &resolve, done.clone()).status, 409);
    assert_eq!(post_as(&d, ADMIN, &assign, json!({"queue": "x"})).status, 409);
    let crm = d.newest_logs("crm", "?level=info").to_string();
    for line in [
        format!("action {id} assigned to queue backoffice-2, anna by tech: she knows them"),
        format!("action {id} resolved by tech as unsuccessfully completed: customer gone"),
    ] {
        assert!(crm.contains(&line), "{line:?} in {crm}");
    }

    // One completed from the CLI.
    let other = rejected(&d, &sink);
    let (code, out, err) = run_cli(
        &[
            "resolve",
            &other,
            "--completed",
            "--url",
            &d.base,
            "--token",
            TECHNICIAN,
        ],
        None,
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(
        d.get(&format!("/v1/actions/{other}"), Some(ADMIN)).json()["state"],
        "completed"
    );

    // A closed action stays listed until acknowledged.
    let r = post_as(
        &d,
        INTEGRATION,
        "/v1/actions",
        json!({"interface": "billing", "payload": {}}),
    );
    let closed = r.json()["id"].as_str().unwrap().to_string();
    d.eventually(Duration::from_secs(10), "closed by its one attempt", || {
        (d.get(&format!("/v1/actions/{closed}"), Some(ADMIN)).json()["state"] == "closed").then_some(())
    });
    let listed = of_kind(&d, "action");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["actions"][0]["name"], "acknowledge");
    assert_eq!(
        post_as(&d, TECHNICIAN, &format!("/v1/actions/{closed}/resolve"), done).status,
        409
    );
    let r = post_as(
        &d,
        TECHNICIAN,
        &format!("/v1/actions/{closed}/acknowledge"),
        json!({"note": "billed by hand"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(of_kind(&d, "action").is_empty());
    assert!(
        d.newest_logs("billing", "?level=info")
            .to_string()
            .contains("acknowledged by tech: billed by hand")
    );
}

#[test]
fn retention_keeps_what_is_listed_and_lets_it_go_once_handled() {
    let sink = HttpSink::start(Answer::Status(200));
    let down = HttpSink::start(Answer::Status(500));
    let d = Daemon::start_with_clock(
        &format!(
            "[storage]\nretention = \"1h\"\n\n[[interfaces]]\nname = \"crm\"\nkind = \"action\"\nurl = \"{}\"\n\n\
             [[interfaces]]\nname = \"shop\"\nkind = \"pull\"\nurl = \"{}\"\n\n[[schedules]]\nname = \"shop-sales\"\n\
             interface = \"shop\"\nevery = \"30d\"\n\n{}",
            sink.url("/crm"),
            down.url("/shop"),
            accounts()
        ),
        Some(START),
    );
    let action = rejected(&d, &sink);
    let exe = run(&d);
    assert_eq!(exe["status"], "ko");
    let exe = exe["id"].as_str().unwrap().to_string();
    let exists = |path: &str| d.get(path, Some(ADMIN)).status == 200;
    // Two days on, with sweeps every 6 minutes: both are still there.
    for _ in 0..8 {
        d.advance("6h");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(exists(&format!("/v1/actions/{action}")), "a to-do action is kept");
    assert!(
        exists(&format!("/v1/executions/{exe}")),
        "an unacknowledged KO run is kept"
    );
    assert_eq!(items(&d).len(), 2, "{:?}", items(&d));

    // Handled, they age out as anything else.
    let r = post_as(
        &d,
        TECHNICIAN,
        &format!("/v1/actions/{action}/resolve"),
        json!({"resolution": "successfully_completed"}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = post_as(&d, TECHNICIAN, &format!("/v1/executions/{exe}/acknowledge"), json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    d.advance("2h");
    d.eventually(Duration::from_secs(10), "the sweep", || {
        (!exists(&format!("/v1/actions/{action}")) && !exists(&format!("/v1/executions/{exe}"))).then_some(())
    });
}

#[test]
fn problems_of_a_deleted_webhook_or_interface_leave_the_list() {
    let receiver = HttpSink::start(Answer::Status(500));
    let d = Daemon::start_with_clock(&accounts(), Some(START));
    let wh = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "tick", "url": receiver.url("/hook")}).to_string(),
    );
    assert_eq!(wh.status, 201, "{}", wh.body);
    let wh = wh.json()["id"].as_str().unwrap().to_string();
    d.post("/v1/events", Some(ADMIN), r#"{"event":"tick","data":1}"#);
    let kinds = d.eventually(Duration::from_secs(10), "the failing webhook listed", || {
        let mut kinds: Vec<String> = items(&d)
            .iter()
            .map(|i| i["kind"].as_str().unwrap().to_string())
            .collect();
        kinds.sort();
        (kinds.contains(&"webhook".to_string()) && kinds.contains(&"execution".to_string())).then_some(kinds)
    });
    assert_eq!(
        kinds,
        ["execution", "webhook"],
        "the webhook, and the errors of erp's day"
    );
    let r = d.request(
        "DELETE",
        &format!("/v1/webhooks/{wh}"),
        Some(&format!("Bearer {ADMIN}")),
        None,
    );
    assert!(r.status < 300, "{} {}", r.status, r.body);
    assert_eq!(items(&d), Vec::<Value>::new());
}

#[test]
fn the_worklist_is_the_same_in_the_api_the_page_and_the_cli() {
    let (d, _sink, _action, _wh, _receiver) = crate::ui::troubled();
    // The set-up's last step moved the clock: a retry it made due may still
    // be running. Compare once the list holds still.
    let mut api = d.get("/v1/attention", Some(TECHNICIAN)).json();
    d.eventually(Duration::from_secs(10), "the worklist at rest", || {
        std::thread::sleep(Duration::from_millis(300));
        let again = d.get("/v1/attention", Some(TECHNICIAN)).json();
        let still = again == api;
        api = again;
        still.then_some(())
    });
    let list = api["items"].as_array().unwrap();
    let mut kinds: Vec<&str> = list.iter().map(|i| i["kind"].as_str().unwrap()).collect();
    kinds.dedup();
    assert_eq!(
        kinds,
        ["mail", "execution", "action", "webhook", "notification"],
        "{api}"
    );

    // The CLI prints the same items, in the same order, as JSON and as text.
    let (code, out, _) = run_cli(&["attention", "--json", "--url", &d.base, "--token", TECHNICIAN], None);
    assert_eq!(code, Some(1));
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), api);
    let (_, text, _) = run_cli(&["attention", "--url", &d.base, "--token", TECHNICIAN], None);
    let mut at = 0;
    for i in list {
        let title = i["title"].as_str().unwrap();
        let found = text[at..]
            .find(title)
            .unwrap_or_else(|| panic!("{title:?} in order in:\n{text}"));
        at += found + title.len();
    }

    // The page: one row per item, in the same order, with the same titles.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("tech:{TECHNICIAN}"));
    let html = d.request("GET", "/", Some(&format!("Basic {basic}")), None).body;
    let doc = Html::parse_document(&html);
    let rows = Selector::parse("#worklist tr[data-id]").unwrap();
    let title = Selector::parse("td.title").unwrap();
    let page: Vec<(String, String, String)> = doc
        .select(&rows)
        .map(|r| {
            (
                r.value().attr("data-kind").unwrap().to_string(),
                r.value().attr("data-id").unwrap().to_string(),
                r.select(&title).next().unwrap().text().collect(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = list
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_string(),
                i["id"].as_str().unwrap().to_string(),
                i["title"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(page, want);
}

#[test]
fn a_ko_run_of_an_interface_removed_from_the_config_leaves_the_list() {
    let sink = HttpSink::start(Answer::Status(500));
    let d = pulling(&sink, "");
    let exe = run(&d);
    assert_eq!(of_kind(&d, "execution").len(), 1);
    let mut t: toml::Table = std::fs::read_to_string(d.config_path()).unwrap().parse().unwrap();
    t.remove("schedules");
    t.remove("interfaces");
    std::fs::write(d.config_path(), toml::to_string(&t).unwrap()).unwrap();
    d.signal("HUP");
    d.eventually(Duration::from_secs(10), "the item gone", || {
        of_kind(&d, "execution").is_empty().then_some(())
    });
    // Its history stays readable.
    let kept = d.get(&format!("/v1/executions/{}", exe["id"].as_str().unwrap()), Some(ADMIN));
    assert_eq!(kept.json()["status"], "ko");
}

#[test]
fn the_page_shows_a_hundred_items_and_says_how_many_more() {
    let sink = HttpSink::start(Answer::Status(500));
    let d = pulling(&sink, "");
    for _ in 0..102 {
        run(&d);
    }
    assert_eq!(of_kind(&d, "execution").len(), 102, "the API lists all");
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("tech:{TECHNICIAN}"));
    let html = d.request("GET", "/", Some(&format!("Basic {basic}")), None).body;
    let doc = Html::parse_document(&html);
    let rows = Selector::parse("#worklist tr[data-id]").unwrap();
    assert_eq!(doc.select(&rows).count(), 100);
    assert!(
        html.contains("and 2 more: all of them with <code>herald attention</code>"),
        "{html}"
    );
}
