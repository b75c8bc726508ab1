//! Scheduled pull and push interfaces on the real binary, on the driven
//! clock: runs on time through restarts, pull idempotency, push batches
//! with their keys, run now and 409, the anomaly of a long run, SIGHUP, and
//! the CSV and XLSX exports read back by independent readers.

use std::io::Read;
use std::time::Duration;

use serde_json::{Value, json};

use crate::http_sink::{Answer, HttpSink, Received};
use crate::smtp_sink::SmtpSink;
use crate::util::*;

const START: &str = "2026-12-01T10:00:00Z";

fn config(interfaces: &str, schedules: &str, smtp: Option<u16>) -> String {
    let mail = smtp.map_or(String::new(), |port| {
        format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\nfrom = \"herald@example.com\"\n\n\
             [alerts]\ndebounce = \"60s\"\nmax_delay = \"15m\"\nsystem_recipients = [\"noc@example.com\"]\n\n"
        )
    });
    format!(
        "[general]\nname = \"gw-test\"\ntimezone = \"Europe/Zurich\"\n\n{mail}{interfaces}\n{schedules}\n{}",
        accounts()
    )
}

fn pull(url: &str) -> String {
    format!("[[interfaces]]\nname = \"shop\"\nkind = \"pull\"\nurl = \"{url}\"\ntimeout = \"5s\"\n")
}

fn every(name: &str, interface: &str, every: &str) -> String {
    format!("[[schedules]]\nname = \"{name}\"\ninterface = \"{interface}\"\nevery = \"{every}\"\n")
}

fn schedule(d: &Daemon, name: &str) -> Value {
    let all = d.get("/v1/schedules", Some(TECHNICIAN)).json();
    all["schedules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn execution(d: &Daemon, id: &str) -> Value {
    d.get(&format!("/v1/executions/{id}"), Some(ADMIN)).json()
}

/// Waits until the execution `id` has ended; returns it.
fn ended(d: &Daemon, id: &str) -> Value {
    d.eventually(Duration::from_secs(10), &format!("{id} to end"), || {
        let e = execution(d, id);
        (e["status"] != "running").then_some(e)
    })
}

fn logs(d: &Daemon, id: &str) -> Vec<Value> {
    d.get(&format!("/v1/executions/{id}/logs?limit=1000"), Some(ADMIN))
        .json()["logs"]
        .as_array()
        .unwrap()
        .clone()
}

fn run_now(d: &Daemon, name: &str) -> String {
    let r = d.post(&format!("/v1/schedules/{name}/run"), Some(TECHNICIAN), "");
    assert_eq!(r.status, 202, "{}", r.body);
    r.json()["execution_id"].as_str().unwrap().to_string()
}

fn publish(d: &Daemon, event: &str, n: u32) {
    let r = d.post(
        "/v1/events",
        Some(INTEGRATION),
        &format!(r#"{{"event":"{event}","data":{{"n":{n}}}}}"#),
    );
    assert_eq!(r.status, 202, "{}", r.body);
}

fn quiet(sink: &HttpSink, n: usize) {
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        sink.received().len(),
        n,
        "{:?}",
        sink.received().iter().map(|r| &r.path).collect::<Vec<_>>()
    );
}

#[test]
fn runs_happen_every_interval_and_a_restart_neither_skips_nor_doubles_them() {
    let sink = HttpSink::start(Answer::Body(200, "[]".into()));
    let mut d = Daemon::start_with_clock(
        &config(&pull(&sink.url("/sales")), &every("shop-sales", "shop", "10m"), None),
        Some(START),
    );
    let s = schedule(&d, "shop-sales");
    assert_eq!(s["next_run_at"], "2026-12-01T10:10:00.000Z", "{s}");
    assert_eq!(s["interface"], "shop");
    d.advance("9m");
    quiet(&sink, 0);
    d.advance("1m");
    sink.wait_for(1, Duration::from_secs(10));
    let first = d.eventually(Duration::from_secs(10), "the first run's end", || {
        let s = schedule(&d, "shop-sales");
        (s["last_execution"]["status"] == "ok").then_some(s)
    });
    assert_eq!(first["next_run_at"], "2026-12-01T10:20:00.000Z");
    let exe = execution(&d, first["last_execution"]["id"].as_str().unwrap());
    assert_eq!(
        (exe["kind"].as_str(), exe["schedule"].as_str()),
        (Some("scheduled"), Some("shop-sales"))
    );

    // A clean stop and a start five minutes later: nothing runs before 10:20.
    d.signal("TERM");
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    d.set_clock("2026-12-01T10:15:00Z");
    d.spawn();
    quiet(&sink, 1);
    d.advance("5m");
    sink.wait_for(2, Duration::from_secs(10));
    quiet(&sink, 2);

    // kill -9, and a start 45 minutes after the last run: one run at once
    // for the missed slots, then the same rate.
    d.kill9();
    d.set_clock("2026-12-01T11:05:00Z");
    d.spawn();
    sink.wait_for(3, Duration::from_secs(10));
    quiet(&sink, 3);
    d.eventually(Duration::from_secs(10), "the plan after the late run", || {
        (schedule(&d, "shop-sales")["next_run_at"] == "2026-12-01T11:10:00.000Z").then_some(())
    });
}

#[test]
fn a_run_cut_by_a_crash_is_closed_ko_and_made_again() {
    let sink = HttpSink::start(Answer::Hang);
    let mut d = Daemon::start_with_clock(
        &config(&pull(&sink.url("/sales")), &every("shop-sales", "shop", "10m"), None),
        Some(START),
    );
    d.advance("10m");
    sink.wait_for(1, Duration::from_secs(10));
    let cut = schedule(&d, "shop-sales");
    assert_eq!(cut["running"], true, "{cut}");
    d.kill9();
    sink.set(Answer::Body(200, "[]".into()));
    d.set_clock("2026-12-01T10:11:00Z");
    d.spawn();
    sink.wait_for(2, Duration::from_secs(10));
    let list = d.get("/v1/executions?interface=shop", Some(ADMIN)).json();
    let all = list["executions"].as_array().unwrap();
    assert_eq!(all.len(), 2, "{list}");
    let cut = all.iter().find(|e| e["status"] == "ko").expect("the cut run is ko");
    let lines = logs(&d, cut["id"].as_str().unwrap());
    assert!(
        lines[0]["message"]
            .as_str()
            .unwrap()
            .contains("stopped during this run"),
        "{lines:?}"
    );
    assert_eq!(lines[0]["category"], "technical");
    let again = all.iter().find(|e| e["id"] != cut["id"]).unwrap();
    assert_eq!(ended(&d, again["id"].as_str().unwrap())["status"], "ok");
}

#[test]
fn a_pull_publishes_each_item_once_and_names_the_ones_that_do_not_fit() {
    let items = json!([
        {"event": "sale.created", "data": {"ticket": 1}},
        {"event": "sale.created", "data": {"ticket": 2}, "idempotency_key": "t-2"},
        {"event": "bad name", "data": {}},
        {"event": "sale.created"},
        {"event": "sale.created", "data": {"ticket": 3}, "price": 10}
    ]);
    let sink = HttpSink::start(Answer::Body(200, items.to_string()));
    let d = Daemon::start_with_clock(
        &config(&pull(&sink.url("/sales")), &every("shop-sales", "shop", "2h"), None),
        Some(START),
    );
    let first = ended(&d, &run_now(&d, "shop-sales"));
    assert_eq!(first["status"], "ko", "{first}");
    assert_eq!(first["errors"], 2);
    // One exchange, the GET, a line of its own with its answer and duration.
    assert_eq!(first["successes"], 1);
    let names = d.event_names();
    assert_eq!(names, ["sale.created"; 3], "{names:?}");
    let lines = logs(&d, first["id"].as_str().unwrap());
    let errors: Vec<&Value> = lines.iter().filter(|l| l["level"] == "error").collect();
    assert_eq!(errors.len(), 2, "{lines:?}");
    assert!(
        errors[0]["message"].as_str().unwrap().contains("item 2")
            && errors[0]["message"].as_str().unwrap().contains("[2].event"),
        "{lines:?}"
    );
    assert!(
        errors[1]["message"].as_str().unwrap().contains("[4].price"),
        "{lines:?}"
    );
    assert!(errors.iter().all(|l| l["category"] == "mapping"));
    // The first error line says what to do; the next does not repeat it.
    assert!(
        errors[0]["detail"].as_str().unwrap().contains("check the mappings"),
        "{lines:?}"
    );
    assert!(
        errors[1]
            .get("detail")
            .is_none_or(|d| !d.as_str().unwrap_or("").contains("What to do"))
    );

    // A rerun: the same items, nothing published twice.
    let second = ended(&d, &run_now(&d, "shop-sales"));
    // One exchange (the GET); nothing published again.
    assert_eq!(second["successes"], 1, "{second}");
    assert_eq!(d.event_names().len(), 3);
    let info = logs(&d, second["id"].as_str().unwrap());
    assert!(
        info.iter()
            .any(|l| l["message"].as_str().unwrap().contains("3 published by an earlier run")),
        "{info:?}"
    );
}

fn push_config(url: &str) -> String {
    format!(
        "[[interfaces]]\nname = \"fnac\"\nkind = \"push\"\nurl = \"{url}\"\nevents = [\"sale.created\"]\nbatch = 2\n"
    )
}

fn keys(got: &[Received]) -> Vec<String> {
    got.iter().map(|r| r.headers["idempotency-key"].clone()).collect()
}

#[test]
fn a_push_resends_the_same_batches_after_a_failure_and_then_moves_on() {
    let sink = HttpSink::start(Answer::Status(503));
    let d = Daemon::start_with_clock(
        &config(&push_config(&sink.url("/in")), &every("fnac-sales", "fnac", "1h"), None),
        Some(START),
    );
    publish(&d, "sale.created", 1); // seq 1
    publish(&d, "other", 0); // seq 2: not sent
    publish(&d, "sale.created", 2); // seq 3
    publish(&d, "sale.created", 3); // seq 4
    let failed = ended(&d, &run_now(&d, "fnac-sales"));
    assert_eq!(failed["status"], "ko");
    assert_eq!(keys(&sink.received()), ["fnac-sales:1-3"]);
    let lines = logs(&d, failed["id"].as_str().unwrap());
    assert_eq!(lines[0]["category"], "external", "{lines:?}");
    assert!(lines[0]["detail"].as_str().unwrap().contains("re-run"), "{lines:?}");
    assert_eq!(lines[1]["category"], "cascade", "{lines:?}");

    sink.set(Answer::Status(200));
    let ok = ended(&d, &run_now(&d, "fnac-sales"));
    assert_eq!(ok["status"], "ok", "{ok}");
    // Two batches (batch = 3): each a line with its answer.
    assert_eq!(ok["successes"], 2);
    let sent: Vec<String> = logs(&d, ok["id"].as_str().unwrap())
        .iter()
        .filter_map(|l| {
            l["message"]
                .as_str()
                .filter(|m| m.starts_with("POST"))
                .map(String::from)
        })
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(
        sent[0].starts_with("POST of events #1 to #3 (fnac-sales:1-3, ") && sent[1].contains(": 200 in "),
        "{sent:?}"
    );
    let got = sink.received();
    assert_eq!(keys(&got), ["fnac-sales:1-3", "fnac-sales:1-3", "fnac-sales:4-4"]);
    assert_eq!(got[0].body, got[1].body, "the same batch, byte for byte");
    let batch = got[1].json();
    let seqs: Vec<u64> = batch
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 3]);
    assert_eq!(batch[0]["event"], "sale.created");
    assert_eq!(batch[0]["data"], json!({"n": 1}));

    // Nothing new: no request; then one new event, sent alone.
    assert_eq!(ended(&d, &run_now(&d, "fnac-sales"))["status"], "ok");
    assert_eq!(sink.received().len(), 3);
    publish(&d, "sale.created", 4);
    ended(&d, &run_now(&d, "fnac-sales"));
    assert_eq!(keys(&sink.received())[3], "fnac-sales:5-5");
}

#[test]
fn run_now_starts_at_once_and_refuses_a_second_run_while_one_goes() {
    let sink = HttpSink::start(Answer::Hang);
    let d = Daemon::start_with_clock(
        &config(&pull(&sink.url("/sales")), &every("shop-sales", "shop", "2h"), None),
        Some(START),
    );
    let id = run_now(&d, "shop-sales");
    assert!(id.starts_with("exe_"));
    sink.wait_for(1, Duration::from_secs(10));
    assert_eq!(execution(&d, &id)["status"], "running");
    let again = d.post("/v1/schedules/shop-sales/run", Some(ADMIN), "");
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.json()["error"]["code"], "conflict");
    // The planned run at 12:00 does not start beside it.
    d.advance("2h");
    quiet(&sink, 1);
    assert_eq!(
        d.post("/v1/schedules/shop-sales/run", Some(INTEGRATION), "").status,
        403
    );
    assert_eq!(d.post("/v1/schedules/nope/run", Some(ADMIN), "").status, 404);
    // Run now does not move the plan.
    assert_eq!(schedule(&d, "shop-sales")["next_run_at"], "2026-12-01T14:00:00.000Z");
}

#[test]
fn a_run_over_an_hour_is_an_anomaly_with_a_warning_and_one_mail() {
    let smtp = SmtpSink::start();
    let sink = HttpSink::start(Answer::Hang);
    let d = Daemon::start_with_clock(
        &config(
            &pull(&sink.url("/sales")).replace("timeout = \"5s\"", "timeout = \"60s\""),
            &every("shop-sales", "shop", "2h"),
            Some(smtp.port),
        ),
        Some(START),
    );
    let id = run_now(&d, "shop-sales");
    sink.wait_for(1, Duration::from_secs(10));
    d.advance("59m");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(execution(&d, &id)["anomaly"], false);
    assert!(logs(&d, &id).is_empty());
    d.advance("1m");
    let warn = d.eventually(Duration::from_secs(10), "the anomaly line", || {
        logs(&d, &id).into_iter().find(|l| l["level"] == "warn")
    });
    assert!(warn["message"].as_str().unwrap().contains("anomaly"), "{warn}");
    assert_eq!(execution(&d, &id)["anomaly"], true);
    d.advance("2m");
    let mails = smtp.wait_for(1, Duration::from_secs(10));
    assert_eq!(mails[0].to, ["noc@example.com"]);
    assert!(mails[0].subject.contains("shop-sales"), "{}", mails[0].subject);
    assert!(mails[0].body.contains(&id), "{}", mails[0].body);
    d.advance("30m");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(smtp.mails().len(), 1, "mailed once");
    assert_eq!(logs(&d, &id).len(), 1, "one warning");
}

#[test]
fn sighup_moves_the_next_run_and_stops_a_removed_schedule() {
    let sink = HttpSink::start(Answer::Body(200, "[]".into()));
    let d = Daemon::start_with_clock(
        &config(&pull(&sink.url("/sales")), &every("shop-sales", "shop", "10m"), None),
        Some(START),
    );
    d.advance("10m");
    sink.wait_for(1, Duration::from_secs(10));
    d.eventually(Duration::from_secs(10), "the first run to end", || {
        (schedule(&d, "shop-sales")["last_execution"]["status"] == "ok").then_some(())
    });
    let text = std::fs::read_to_string(d.config_path()).unwrap();
    std::fs::write(d.config_path(), text.replace("every = \"10m\"", "every = \"30m\"")).unwrap();
    d.signal("HUP");
    d.eventually(Duration::from_secs(10), "the moved plan", || {
        (schedule(&d, "shop-sales")["next_run_at"] == "2026-12-01T10:40:00.000Z").then_some(())
    });
    d.advance("15m");
    quiet(&sink, 1);

    let mut t: toml::Table = std::fs::read_to_string(d.config_path()).unwrap().parse().unwrap();
    t.remove("schedules");
    std::fs::write(d.config_path(), toml::to_string(&t).unwrap()).unwrap();
    d.signal("HUP");
    d.eventually(Duration::from_secs(10), "the schedule gone", || {
        schedule(&d, "shop-sales").is_null().then_some(())
    });
    d.advance("2h");
    quiet(&sink, 1);
    // Its executions stay readable.
    let list = d.get("/v1/executions?interface=shop", Some(ADMIN)).json();
    assert_eq!(list["executions"].as_array().unwrap().len(), 1, "{list}");
    let interfaces = d.get("/v1/interfaces", Some(ADMIN)).json();
    assert!(interfaces.to_string().contains("\"shop\""), "{interfaces}");
}

#[test]
fn an_execution_exports_as_csv_and_xlsx_that_other_programs_read() {
    // A run with error lines carrying ; " and line breaks.
    let items = json!([
        {"event": "sale.created", "data": {"n": 1}},
        {"event": "bad;\"name\"\nx", "data": {}},
        {"event": "sale.created", "data": {"n": 2}, "extra": 1}
    ]);
    let sink = HttpSink::start(Answer::Body(200, items.to_string()));
    let d = Daemon::start_with_clock(
        &config(&pull(&sink.url("/sales")), &every("shop-sales", "shop", "2h"), None),
        Some(START),
    );
    let id = run_now(&d, "shop-sales");
    let exe = ended(&d, &id);
    let lines = logs(&d, &id);
    // The GET, two skipped items, the summary: the whole story.
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("GET http://127.0.0.1:"),
        "{lines:?}"
    );
    assert!(lines[0]["message"].as_str().unwrap().contains(": 200 in "), "{lines:?}");

    let csv = d.request(
        "GET",
        &format!("/v1/executions/{id}/export?format=csv"),
        Some(&format!("Bearer {TECHNICIAN}")),
        None,
    );
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert_eq!(
        csv.header("content-disposition").unwrap(),
        format!("attachment; filename=\"herald-shop-{id}.csv\"")
    );
    assert!(csv.body.starts_with('\u{feff}'), "UTF-8 with BOM");
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_reader(csv.body.trim_start_matches('\u{feff}').as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    // The times' zone is named in their column's header.
    assert_eq!(
        header,
        ["#", "time (Europe/Zurich)", "level", "category", "message", "detail"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 4);
    for (row, line) in rows.iter().zip(&lines) {
        assert_eq!(&row[2], line["level"].as_str().unwrap());
        assert_eq!(
            &row[4],
            line["message"].as_str().unwrap(),
            "quoted fields come back whole"
        );
        assert_eq!(&row[5], line["detail"].as_str().unwrap_or(""));
    }
    assert_eq!(&rows[0][0], "1");
    // Times in general.timezone (Zurich, UTC+1 in December).
    assert!(rows[0][1].starts_with("2026-12-01 11:00:0"), "{:?}", &rows[0][1]);

    let xlsx = d.request(
        "GET",
        &format!("/v1/executions/{id}/export?format=xlsx"),
        Some(&format!("Bearer {ADMIN}")),
        None,
    );
    assert_eq!(xlsx.status, 200, "{}", xlsx.body);
    assert_eq!(
        xlsx.header("content-disposition").unwrap(),
        format!("attachment; filename=\"herald-shop-{id}.xlsx\"")
    );
    let bytes = xlsx_bytes(&d, &id);
    use calamine::Reader;
    let mut book: calamine::Xlsx<_> = calamine::open_workbook_from_rs(std::io::Cursor::new(bytes.clone())).unwrap();
    let sheet = book.worksheet_range("log").unwrap();
    let cells: Vec<Vec<String>> = sheet
        .rows()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    assert_eq!(cells[0][..2], ["interface".to_string(), "shop".to_string()]);
    assert_eq!(cells[1][..2], ["schedule".to_string(), "shop-sales".to_string()]);
    assert_eq!(
        cells[2][..2],
        ["status".to_string(), exe["status"].as_str().unwrap().to_string()]
    );
    assert_eq!(cells[5][..2], ["errors".to_string(), "2".to_string()]);
    let header = cells.iter().position(|r| r[0] == "#").expect("the header row");
    assert_eq!(cells[6][..2], ["time zone".to_string(), "Europe/Zurich".to_string()]);
    assert_eq!(
        cells[header],
        ["#", "time (Europe/Zurich)", "level", "category", "message", "detail"]
    );
    let body = &cells[header + 1..];
    assert_eq!(body.len(), 4);
    for (row, line) in body.iter().zip(&lines) {
        assert_eq!(row[2], line["level"].as_str().unwrap());
        assert_eq!(row[4], line["message"].as_str().unwrap());
    }

    // The parts calamine does not read: the frozen header, the autofilter,
    // and the red fill of the error rows (from the sheet's XML).
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    let mut sheet_xml = String::new();
    zip.by_name("xl/worksheets/sheet1.xml")
        .unwrap()
        .read_to_string(&mut sheet_xml)
        .unwrap();
    let mut styles = String::new();
    zip.by_name("xl/styles.xml")
        .unwrap()
        .read_to_string(&mut styles)
        .unwrap();
    let frozen_row = header + 2; // 1-based, below the header
    assert!(
        sheet_xml.contains(&format!("topLeftCell=\"A{frozen_row}\"")) && sheet_xml.contains("state=\"frozen\""),
        "{sheet_xml}"
    );
    assert!(
        sheet_xml.contains(&format!("<autoFilter ref=\"A{}:F{}\"", header + 1, header + 5)),
        "{sheet_xml}"
    );
    assert!(styles.contains("FFFFC7CE"), "a red fill: {styles}");
    // The message column fits the longest message (up to 100 characters).
    let longest = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap().chars().count())
        .max()
        .unwrap();
    let pattern = "<col min=\"5\" max=\"5\" width=\"";
    let at = sheet_xml.find(pattern).expect("the message column's width") + pattern.len();
    let width: f64 = sheet_xml[at..].split('"').next().unwrap().parse().unwrap();
    assert!(
        width >= longest.min(100) as f64 && width <= 104.0,
        "{width} for {longest}"
    );
    // Long and multi-line text wraps, in rows tall enough for it (LibreOffice
    // drew a detail's second line over the frozen header), and the sheet
    // prints one page wide with the header on every page.
    let xfs = &styles[styles.find("<cellXfs").unwrap()..styles.find("</cellXfs>").unwrap()];
    let wrapping: Vec<usize> = xfs
        .split("<xf ")
        .skip(1)
        .enumerate()
        .filter(|(_, x)| x.contains("wrapText=\"1\""))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(wrapping.len(), 2, "plain and red: {styles}");
    let long = lines
        .iter()
        .position(|l| l["message"].as_str().unwrap().chars().count() > 100)
        .expect("a message longer than its column");
    let long_row = row_of(&sheet_xml, header + 2 + long);
    assert!(
        long_row.contains("ht=\"30\" customHeight=\"1\""),
        "two lines high: {long_row}"
    );
    let message_cell = &long_row[long_row.find(&format!("r=\"E{}\"", header + 2 + long)).unwrap()..];
    assert!(
        wrapping
            .iter()
            .any(|i| message_cell.starts_with(&format!("r=\"E{}\" s=\"{i}\"", header + 2 + long))),
        "the message wraps: {message_cell}"
    );
    assert!(sheet_xml.contains("<pageSetUpPr fitToPage=\"1\"/>"), "{sheet_xml}");
    assert!(sheet_xml.contains("fitToWidth=\"1\" fitToHeight=\"0\""), "{sheet_xml}");
    let mut workbook = String::new();
    zip.by_name("xl/workbook.xml")
        .unwrap()
        .read_to_string(&mut workbook)
        .unwrap();
    assert!(
        workbook.contains(&format!(
            "_xlnm.Print_Titles\" localSheetId=\"0\">'log'!${h}:${h}<",
            h = header + 1
        )),
        "{workbook}"
    );
    let red_xf = red_style_index(&styles);
    for (i, line) in lines.iter().enumerate() {
        let row_xml = row_of(&sheet_xml, header + 2 + i);
        let red = row_xml.contains(&format!("s=\"{red_xf}\""));
        assert_eq!(red, line["level"] == "error", "row {}: {row_xml}", header + 2 + i);
    }
    assert_eq!(
        d.get(&format!("/v1/executions/{id}/export?format=pdf"), Some(ADMIN))
            .json()["error"]["field"],
        "format"
    );
    assert_eq!(
        d.get(&format!("/v1/executions/{id}/export"), Some(INTEGRATION)).status,
        403
    );
}

fn xlsx_bytes(d: &Daemon, id: &str) -> Vec<u8> {
    let resp = agent()
        .get(&format!("{}/v1/executions/{id}/export?format=xlsx", d.base))
        .header("authorization", &format!("Bearer {ADMIN}"))
        .call()
        .unwrap();
    let mut out = Vec::new();
    resp.into_body().into_reader().read_to_end(&mut out).unwrap();
    out
}

/// The `<row r="N" ...>...</row>` element of row N (1-based).
fn row_of(sheet: &str, n: usize) -> String {
    let start = sheet
        .find(&format!("<row r=\"{n}\""))
        .unwrap_or_else(|| panic!("row {n} in {sheet}"));
    let end = sheet[start..].find("</row>").unwrap() + start;
    sheet[start..end].to_string()
}

/// The index of the cell format whose fill is the red one.
fn red_style_index(styles: &str) -> usize {
    let fills = &styles[styles.find("<fills").unwrap()..styles.find("</fills>").unwrap()];
    let red_fill = fills
        .split("<fill>")
        .skip(1)
        .position(|f| f.contains("FFFFC7CE"))
        .expect("the red fill");
    let xfs = &styles[styles.find("<cellXfs").unwrap()..styles.find("</cellXfs>").unwrap()];
    xfs.split("<xf ")
        .skip(1)
        .position(|x| x.contains(&format!("fillId=\"{red_fill}\"")))
        .expect("a format with the red fill")
}

#[test]
fn retention_keeps_what_a_push_has_not_sent_yet() {
    let sink = HttpSink::start(Answer::Status(503));
    let d = Daemon::start_with_clock(
        &format!(
            "[storage]\nretention = \"1h\"\n[notifications]\nkeep_unread = \"1d\"\n{}",
            config(&push_config(&sink.url("/in")), &every("fnac-sales", "fnac", "1d"), None)
        ),
        Some(START),
    );
    publish(&d, "sale.created", 1);
    publish(&d, "other", 2);
    assert_eq!(ended(&d, &run_now(&d, "fnac-sales"))["status"], "ko");
    for _ in 0..16 {
        d.advance("6m"); // past the 1 h retention, within keep_unread
        std::thread::sleep(Duration::from_millis(50));
    }
    d.eventually(Duration::from_secs(5), "the sweep of what no one needs", || {
        (d.event_names() == ["sale.created"]).then_some(())
    });
    // Sent at last: then it goes too.
    sink.set(Answer::Status(200));
    assert_eq!(ended(&d, &run_now(&d, "fnac-sales"))["status"], "ok");
    assert_eq!(sink.received().last().unwrap().json()[0]["data"], json!({"n": 1}));
    for _ in 0..12 {
        d.advance("6m");
        std::thread::sleep(Duration::from_millis(50));
    }
    d.eventually(Duration::from_secs(5), "the sweep after the push", || {
        d.event_names().is_empty().then_some(())
    });
}

#[test]
fn a_pull_answer_over_max_response_publishes_nothing_and_says_what_to_change() {
    let items = json!([{"event": "sale.created", "data": {"pad": "x".repeat(200)}}]);
    let sink = HttpSink::start(Answer::Body(200, items.to_string()));
    let d = Daemon::start_with_clock(
        &config(
            &format!("{}max_response = \"100B\"\n", pull(&sink.url("/sales"))),
            &every("shop-sales", "shop", "2h"),
            None,
        ),
        Some(START),
    );
    let exe = ended(&d, &run_now(&d, "shop-sales"));
    assert_eq!(exe["status"], "ko");
    let lines = logs(&d, exe["id"].as_str().unwrap());
    assert_eq!(lines[0]["category"], "configuration", "{lines:?}");
    assert!(
        lines[0]["message"].as_str().unwrap().contains("max_response"),
        "{lines:?}"
    );
    assert!(d.event_names().is_empty());
}

#[test]
fn a_push_with_a_secret_signs_each_batch() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let sink = HttpSink::start(Answer::Status(200));
    let d = Daemon::start_with_clock(
        &config(
            &format!("{}secret = \"{SECRET}\"\n", push_config(&sink.url("/in"))),
            &every("fnac-sales", "fnac", "1h"),
            None,
        ),
        Some(START),
    );
    publish(&d, "sale.created", 1);
    assert_eq!(ended(&d, &run_now(&d, "fnac-sales"))["status"], "ok");
    let got = sink.received();
    let r = &got[0];
    assert_eq!(r.headers["webhook-id"], "fnac-sales:1-1");
    let ts: i64 = r.headers["webhook-timestamp"].parse().unwrap();
    let expected = standardwebhooks::Webhook::new(SECRET)
        .unwrap()
        .sign("fnac-sales:1-1", ts, &r.body)
        .unwrap();
    assert_eq!(r.headers["webhook-signature"], expected);
}
