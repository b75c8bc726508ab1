//! Export benchmark: an execution with 100,000 log lines (a pull run whose
//! answer holds 100,000 items that do not fit, each a `mapping` line),
//! exported as CSV and as XLSX; the time, the file size and the daemon's
//! peak RSS, beside its RSS before the exports and the time of the run.
//!
//!   cargo bench --bench export
//!   HERALD_BENCH_LINES=20000 cargo bench --bench export

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;

async fn get_bytes(addr: &str, path: &str) -> (u16, Bytes) {
    let mut sender = connect(addr).await;
    let req = Request::get(path)
        .header("host", addr)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.into_body().collect().await.unwrap().to_bytes())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let lines: usize = env_or("HERALD_BENCH_LINES", 100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // Items whose event name is not one: each is skipped with a line.
        let items = body_server(Bytes::from(answer_body(lines))).await;
        let daemon = start(&format!(
            "[[interfaces]]\nname = \"shop\"\nkind = \"pull\"\nurl = \"http://{items}/items\"\n\
             max_response = \"64MiB\"\ntimeout = \"120s\"\n\n[[schedules]]\nname = \"shop-sales\"\n\
             interface = \"shop\"\nevery = \"1d\"\n"
        ));
        let addr = daemon.addr.clone();
        let pid = daemon.child.id();
        let started = Instant::now();
        let (status, body) = call(&addr, api(&addr, "POST", "/v1/schedules/shop-sales/run", String::new())).await;
        assert_eq!(status, 202, "{body}");
        let exe: serde_json::Value = serde_json::from_str(&body).unwrap();
        let id = exe["execution_id"].as_str().unwrap().to_string();
        loop {
            let (_, text) = call(&addr, api(&addr, "GET", &format!("/v1/executions/{id}"), String::new())).await;
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            if v["status"] != "running" {
                assert_eq!(v["errors"].as_u64(), Some(lines as u64), "{v}");
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(600), "the run did not end");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let run = started.elapsed();
        let before = rss_kib(pid, "VmRSS:");
        let peak_before = rss_kib(pid, "VmHWM:");
        println!(
            "herald export bench: an execution of {lines} log lines (made by one pull run in {:.1} s)",
            run.as_secs_f64()
        );
        println!(
            "  RSS before the exports         {:>7} KiB (peak so far {} KiB)",
            before, peak_before
        );
        for format in ["csv", "xlsx"] {
            // Reset the peak (VmHWM) so that it is this export's.
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
            let t = Instant::now();
            let (status, file) = get_bytes(&addr, &format!("/v1/executions/{id}/export?format={format}")).await;
            assert_eq!(status, 200);
            println!(
                "  {format:<4} {:>9.1} MiB in {:>5.2} s   peak RSS {:>7} KiB",
                file.len() as f64 / 1048576.0,
                t.elapsed().as_secs_f64(),
                rss_kib(pid, "VmHWM:")
            );
        }
    });
}

fn answer_body(lines: usize) -> String {
    let mut answer = String::from("[");
    for i in 0..lines {
        if i > 0 {
            answer.push(',');
        }
        answer.push_str(&format!(r#"{{"event":"bad name {i}","data":{{"i":{i}}}}}"#));
    }
    answer.push(']');
    answer
}
