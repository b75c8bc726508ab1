//! The technician's console on the real binary, read with an HTML parser:
//! what needs attention with its buttons per role, a POST per button doing
//! what it says, CSRF and Origin refusals, nothing changed on GET, and an
//! execution's page with red error lines and their hints.

use std::time::Duration;

use scraper::{Html, Selector};
use serde_json::{Value, json};

use crate::http_sink::{Answer, HttpSink};
use crate::util::*;

const START: &str = "2026-12-01T10:00:00Z";

fn basic(name: &str, token: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{name}:{token}"))
    )
}

fn tech() -> String {
    basic("tech", TECHNICIAN)
}

fn admin() -> String {
    basic("ops", ADMIN)
}

/// A button as the page offers it: its action and its fields.
#[derive(Debug, Clone)]
struct Button {
    action: String,
    label: String,
    fields: Vec<(String, String)>,
}

fn buttons(html: &str) -> Vec<Button> {
    let doc = Html::parse_document(html);
    let forms = Selector::parse("form").unwrap();
    let inputs = Selector::parse("input").unwrap();
    let button = Selector::parse("button").unwrap();
    doc.select(&forms)
        .map(|f| {
            assert_eq!(f.value().attr("method"), Some("post"), "every button is a POST form");
            Button {
                action: f.value().attr("action").unwrap().to_string(),
                label: f.select(&button).next().unwrap().text().collect(),
                fields: f
                    .select(&inputs)
                    .map(|i| {
                        (
                            i.value().attr("name").unwrap().to_string(),
                            i.value().attr("value").unwrap_or("").to_string(),
                        )
                    })
                    .collect(),
            }
        })
        .collect()
}

fn page(d: &Daemon, path: &str, auth: &str) -> String {
    let r = d.request("GET", path, Some(auth), None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// Presses `b` as a browser on the page would: the form's fields, the
/// credentials, our own Origin.
fn press(d: &Daemon, b: &Button, auth: &str) -> Reply {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(b.fields.iter())
        .finish();
    request_with(
        &format!("{}{}", d.base, b.action),
        "POST",
        &[("authorization", auth), ("origin", &d.base)],
        Some(("application/x-www-form-urlencoded", &body)),
    )
}

fn find<'a>(all: &'a [Button], action_part: &str, label_part: &str) -> &'a Button {
    all.iter()
        .find(|b| b.action.contains(action_part) && b.label.contains(label_part))
        .unwrap_or_else(|| panic!("no button {action_part} / {label_part} in {all:#?}"))
}

fn json_of(d: &Daemon, path: &str) -> Value {
    d.get(path, Some(ADMIN)).json()
}

/// A daemon with one of everything that needs attention: an action
/// retrying, a deactivated webhook with a buffer, a suspended notification,
/// and a schedule to run.
pub fn troubled() -> (Daemon, HttpSink, String, String, HttpSink) {
    let sink = HttpSink::start(Answer::Status(503));
    let d = Daemon::start_with_clock(
        &format!(
            "[notifications]\ndelay = \"60s\"\nmax_unacked = 1\n\n[[interfaces]]\nname = \"crm\"\nkind = \"action\"\n\
             url = \"{crm}\"\n\n[[interfaces]]\nname = \"shop\"\nkind = \"pull\"\nurl = \"{shop}\"\n\n\
             [[schedules]]\nname = \"shop-sales\"\ninterface = \"shop\"\nevery = \"2h\"\n\n{}",
            accounts(),
            crm = sink.url("/crm"),
            shop = sink.url("/shop"),
        ),
        Some(START),
    );
    let action = d.post("/v1/actions", Some(INTEGRATION), r#"{"interface":"crm","payload":{}}"#);
    assert_eq!(action.status, 201, "{}", action.body);
    let action = action.json()["id"].as_str().unwrap().to_string();
    d.eventually(Duration::from_secs(10), "the action retrying", || {
        (json_of(&d, &format!("/v1/actions/{action}"))["state"] == "retrying").then_some(())
    });
    let gone = HttpSink::start(Answer::Status(410));
    let wh = d.post(
        "/v1/webhooks",
        Some(ADMIN),
        &json!({"app": "erp", "event": "tick", "url": gone.url("/hook")}).to_string(),
    );
    let wh = wh.json()["id"].as_str().unwrap().to_string();
    d.post("/v1/events", Some(ADMIN), r#"{"event":"tick","data":1}"#);
    d.eventually(Duration::from_secs(10), "the webhook deactivated", || {
        (json_of(&d, &format!("/v1/webhooks/{wh}"))["state"] == "disabled").then_some(())
    });
    for n in 2..=3 {
        d.post("/v1/events", Some(ADMIN), &format!(r#"{{"event":"tick","data":{n}}}"#));
    }
    let r = d.request(
        "PUT",
        "/v1/notifications/erp/tick",
        Some(&format!("Bearer {ADMIN}")),
        Some(("application/json", &json!({"url": sink.url("/ping")}).to_string())),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    d.post("/v1/events", Some(ADMIN), r#"{"event":"tick","data":4}"#);
    d.advance("60s");
    d.eventually(Duration::from_secs(10), "the notification suspended", || {
        let n = json_of(&d, "/v1/notifications?system=erp");
        (n["notifications"][0]["suspended"] == true).then_some(())
    });
    (d, sink, action, wh, gone)
}

#[test]
fn each_fix_is_a_button_and_each_button_does_what_it_says() {
    let (d, sink, action, wh, receiver) = troubled();
    let html = page(&d, "/", &tech());
    let all = buttons(&html);

    // The technician is offered every fix, and nothing that is the admin's.
    let retry = find(&all, &format!("/ui/actions/{action}/retry"), "Retry").clone();
    let buffered = json_of(&d, &format!("/v1/webhooks/{wh}"))["buffered"].as_u64().unwrap();
    assert!(buffered >= 2, "{buffered}");
    let replay = find(&all, &format!("/ui/webhooks/{wh}/activate"), "replay the buffer").clone();
    assert!(
        html.contains(&format!("{buffered} events buffered until 2026-12-06")),
        "how many, kept until when (5 days): {html}"
    );
    find(&all, &format!("/ui/webhooks/{wh}/activate"), "discard");
    let reactivate = find(&all, "/ui/notifications/erp/tick/reactivate", "Reactivate").clone();
    let run = find(&all, "/ui/schedules/shop-sales/run", "Run now").clone();
    assert!(!html.contains("/v1/mails"), "the outbox is the admin's");
    assert!(page(&d, "/", &admin()).contains("/v1/mails"));
    assert!(html.contains("attempt 1 of 5"), "{html}");

    // A retry that fails again is no green "Done": the page says so, red.
    let r = press(&d, &retry, &tech());
    assert_eq!(r.status, 303, "{}", r.body);
    let failed = r.header("location").unwrap().to_string();
    let back = page(&d, &failed, &tech());
    assert!(
        back.contains("Not done: action") && !back.contains("Done: action"),
        "{back}"
    );
    // The message is herald's, for whoever pressed: not text from the URL.
    assert!(
        !page(&d, &failed, &admin()).contains("Not done"),
        "another account sees nothing"
    );
    let forged = page(&d, "/?done=Your%20gateway%20is%20hacked", &tech());
    assert!(!forged.contains("hacked"), "no page shows text taken from its URL");

    // Retry: one attempt at once, counted.
    sink.set(Answer::Status(202));
    let r = press(&d, &retry, &tech());
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(r.header("location").unwrap().starts_with("/?done="), "{:?}", r.headers);
    let a = json_of(&d, &format!("/v1/actions/{action}"));
    assert_eq!(
        (a["state"].as_str(), a["attempts_made"].as_u64()),
        (Some("waiting"), Some(3))
    );
    let back = page(&d, r.header("location").unwrap(), &tech());
    assert!(back.contains("Done: action"), "the page says what was done");

    // Reactivate and replay: the buffer is delivered in order.
    receiver.set(Answer::Status(200));
    let before = receiver.received().len();
    let r = press(&d, &replay, &tech());
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(json_of(&d, &format!("/v1/webhooks/{wh}"))["state"], "active");
    let got = receiver.wait_for(before + buffered as usize, Duration::from_secs(10));
    let data: Vec<Value> = got[before..].iter().map(|r| r.json()["data"].clone()).collect();
    let want: Vec<Value> = (1..=buffered).map(|n| json!(n)).collect();
    assert_eq!(data, want, "the whole buffer, in order");

    // Reactivate the notification.
    let r = press(&d, &reactivate, &tech());
    assert_eq!(r.status, 303, "{}", r.body);
    let n = json_of(&d, "/v1/notifications?system=erp");
    assert_eq!(n["notifications"][0]["suspended"], false, "{n}");

    // Run now: a run starts.
    sink.set(Answer::Body(200, "[]".into()));
    let r = press(&d, &run, &tech());
    assert_eq!(r.status, 303, "{}", r.body);
    d.eventually(Duration::from_secs(10), "the run", || {
        let s = json_of(&d, "/v1/schedules");
        s["schedules"][0].get("last_execution").cloned()
    });
}

#[test]
fn a_form_from_elsewhere_or_without_its_token_changes_nothing() {
    let (d, _sink, action, _, _receiver) = troubled();
    let all = buttons(&page(&d, "/", &tech()));
    let retry = find(&all, &format!("/ui/actions/{action}/retry"), "Retry").clone();
    let attempts = |d: &Daemon| json_of(d, &format!("/v1/actions/{action}"))["attempts_made"].clone();
    let before = attempts(&d);

    // No token.
    let mut bare = retry.clone();
    bare.fields.retain(|(k, _)| k != "csrf");
    assert_eq!(press(&d, &bare, &tech()).status, 403);
    // The token of another account's page.
    let admin_retry = find(&buttons(&page(&d, "/", &admin())), "/retry", "Retry").clone();
    assert_eq!(press(&d, &admin_retry, &tech()).status, 403);
    // A foreign page posting with the browser's credentials.
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(retry.fields.iter())
        .finish();
    let foreign = request_with(
        &format!("{}{}", d.base, retry.action),
        "POST",
        &[("authorization", &tech()), ("origin", "https://evil.example.com")],
        Some(("application/x-www-form-urlencoded", &body)),
    );
    assert_eq!(foreign.status, 403, "{}", foreign.body);
    let cross = request_with(
        &format!("{}{}", d.base, retry.action),
        "POST",
        &[("authorization", &tech()), ("sec-fetch-site", "cross-site")],
        Some(("application/x-www-form-urlencoded", &body)),
    );
    assert_eq!(cross.status, 403);
    // GET changes nothing.
    assert_eq!(d.request("GET", &retry.action, Some(&tech()), None).status, 405);
    // An integration cannot press it at all.
    assert_eq!(press(&d, &retry, &basic("erp", INTEGRATION)).status, 403);
    assert_eq!(attempts(&d), before);
    // The page's own form still works, also as Chromium sends it under a
    // no-referrer policy (Origin: null, Sec-Fetch-Site: same-origin).
    let own = request_with(
        &format!("{}{}", d.base, retry.action),
        "POST",
        &[
            ("authorization", &tech()),
            ("origin", "null"),
            ("sec-fetch-site", "same-origin"),
        ],
        Some(("application/x-www-form-urlencoded", &body)),
    );
    assert_eq!(own.status, 303, "{}", own.body);
    assert_ne!(attempts(&d), before);
}

#[test]
fn an_execution_page_shows_error_lines_red_with_what_to_do() {
    let items = json!([
        {"event": "sale.created", "data": {"n": 1}},
        {"event": "bad name", "data": {}},
        {"event": "sale.created", "colour": "red"}
    ]);
    let sink = HttpSink::start(Answer::Body(200, items.to_string()));
    let d = Daemon::start_with_clock(
        &format!(
            "[general]\ntimezone = \"Europe/Zurich\"\n[[interfaces]]\nname = \"shop\"\nkind = \"pull\"\n\
             url = \"{}\"\n\n[[schedules]]\nname = \"shop-sales\"\ninterface = \"shop\"\nevery = \"2h\"\n\n{}",
            sink.url("/shop"),
            accounts()
        ),
        Some(START),
    );
    let run = find(
        &buttons(&page(&d, "/", &tech())),
        "/ui/schedules/shop-sales/run",
        "Run now",
    )
    .clone();
    assert_eq!(press(&d, &run, &tech()).status, 303);
    let exe = d.eventually(Duration::from_secs(10), "the run's end", || {
        let s = json_of(&d, "/v1/schedules");
        let e = &s["schedules"][0]["last_execution"];
        (e["status"] == "ko").then(|| e["id"].as_str().unwrap().to_string())
    });
    // The overview shows it KO, red, linked to its page.
    let overview = Html::parse_document(&page(&d, "/", &tech()));
    let red = Selector::parse("tr.ko-row a").unwrap();
    assert!(
        overview
            .select(&red)
            .any(|a| a.value().attr("href") == Some(&format!("/ui/executions/{exe}"))),
        "a red KO line linking to the execution"
    );

    let html = page(&d, &format!("/ui/executions/{exe}"), &tech());
    let doc = Html::parse_document(&html);
    let rows = Selector::parse("tr.ko-row").unwrap();
    let red_rows: Vec<String> = doc.select(&rows).map(|r| r.text().collect()).collect();
    assert_eq!(red_rows.len(), 2, "{html}");
    assert!(
        red_rows.iter().all(|r| r.contains("check the mappings")),
        "{red_rows:?}"
    );
    assert_eq!(html.matches("(first error)").count(), 1);
    assert!(red_rows[0].contains("(first error)"));
    assert!(html.contains("11:00:0"), "local time (Zurich): {html}");
    let links = Selector::parse("a").unwrap();
    let hrefs: Vec<String> = doc
        .select(&links)
        .filter_map(|a| a.value().attr("href").map(String::from))
        .collect();
    assert!(
        hrefs.contains(&format!("/v1/executions/{exe}/export?format=xlsx")),
        "{hrefs:?}"
    );
    assert!(hrefs.contains(&format!("/v1/executions/{exe}/export?format=csv")));
    // A filter: only the info line.
    let info = page(&d, &format!("/ui/executions/{exe}?level=info"), &tech());
    assert_eq!(Html::parse_document(&info).select(&rows).count(), 0);
    assert!(info.contains("pulled 3 items"), "{info}");
    assert_eq!(
        d.request("GET", "/ui/executions/exe_nope", Some(&tech()), None).status,
        404
    );
}

#[test]
fn acknowledge_and_resolve_are_buttons_with_a_note_and_the_row_leaves() {
    let (d, sink, action, _wh, _receiver) = troubled();
    // A KO run of shop-sales, and the action rejected: to do.
    sink.set(Answer::Status(500));
    let r = d.post("/v1/schedules/shop-sales/run", Some(TECHNICIAN), "{}");
    let exe = r.json()["execution_id"].as_str().unwrap().to_string();
    d.eventually(Duration::from_secs(10), "the KO run", || {
        (json_of(&d, &format!("/v1/executions/{exe}"))["status"] == "ko").then_some(())
    });
    let html = page(&d, "/", &tech());
    let all = buttons(&html);
    let mut ack = find(&all, &format!("/ui/executions/{exe}/acknowledge"), "Acknowledge").clone();
    for (k, v) in ack.fields.iter_mut() {
        if k == "note" {
            *v = "provider called".into();
        }
    }
    let r = press(&d, &ack, &tech());
    assert_eq!(r.status, 303, "{}", r.body);
    let back = page(&d, r.header("location").unwrap(), &tech());
    assert!(back.contains("Done: execution"), "{back}");
    assert!(!back.contains(&format!("data-id=\"{exe}\"")), "the row left the list");
    let e = json_of(&d, &format!("/v1/executions/{exe}"));
    assert_eq!(e["acknowledged"]["note"], "provider called", "{e}");
    assert_eq!(e["acknowledged"]["by"], "tech");

    // The execution's own page offers Run now and says who acknowledged.
    let own = page(&d, &format!("/ui/executions/{exe}"), &tech());
    assert!(
        own.contains("acknowledged by tech") && own.contains("provider called"),
        "{own}"
    );
    find(&buttons(&own), "/ui/schedules/shop-sales/run", "Run now");

    // The action, rejected by its callback once a call is accepted.
    sink.set(Answer::Status(202));
    let retry = find(
        &buttons(&page(&d, "/", &tech())),
        &format!("/ui/actions/{action}/retry"),
        "Retry",
    )
    .clone();
    assert_eq!(press(&d, &retry, &tech()).status, 303);
    let token = sink.received().last().unwrap().json()["callback_token"]
        .as_str()
        .unwrap()
        .to_string();
    let cb = request_with(
        &format!("{}/v1/actions/{action}/callback", d.base),
        "POST",
        &[("x-herald-callback-token", &token)],
        Some((
            "application/json",
            r#"{"success": false, "reason": "no such customer"}"#,
        )),
    );
    assert_eq!(cb.status, 200, "{}", cb.body);
    let html = page(&d, "/", &tech());
    let all = buttons(&html);
    let resolve: Vec<&Button> = all
        .iter()
        .filter(|b| b.action == format!("/ui/actions/{action}/resolve"))
        .collect();
    assert_eq!(resolve.len(), 1, "one form, two choices: {all:#?}");
    let assign = find(&all, &format!("/ui/actions/{action}/assign"), "Assign").clone();
    // Assign with nothing filled in: the page says what is missing.
    let r = press(&d, &assign, &tech());
    assert_eq!(r.status, 422, "{}", r.body);
    // Resolve, completed: the button's own name=value says which.
    let mut done = resolve[0].clone();
    done.fields.push(("resolution".into(), "successfully_completed".into()));
    let r = press(&d, &done, &tech());
    assert_eq!(r.status, 303, "{}", r.body);
    let back = page(&d, r.header("location").unwrap(), &tech());
    assert!(back.contains(&format!("Done: action {action} is completed")), "{back}");
    assert!(
        !back.contains(&format!("data-id=\"{action}\"")),
        "the row left the list"
    );
    let a = json_of(&d, &format!("/v1/actions/{action}"));
    assert_eq!(
        (a["state"].as_str(), a["resolved_by"].as_str()),
        (Some("completed"), Some("tech"))
    );
}
