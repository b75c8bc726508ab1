//! Durable ingest benchmark: starts the release binary, drives it over
//! loopback with 32 concurrent keep-alive clients, and prints events/s beside
//! the same daemon's `/healthz` rate measured in the same run, latency
//! percentiles, events per commit, fsyncs per 1000 events, and RSS.
//!
//!   cargo bench --bench ingest
//!   HERALD_BENCH_SECS=10 HERALD_BENCH_ROUNDS=5 cargo bench --bench ingest
//!
//! The machine is shared and noisy: rounds alternate baseline and ingest,
//! and the report gives medians and ratios.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::Request;

const CLIENTS: usize = 32;

fn main() {
    // `cargo bench` passes --bench; a plain `cargo test` run of benches must not spend minutes.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: f64 = std::env::var("HERALD_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let rounds: usize = std::env::var("HERALD_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let daemon = start("");
    let pid = daemon.child.id();
    let addr = daemon.addr.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = rss_kib(pid, "VmRSS:");

    let healthz: MakeRequest = {
        let host = addr.clone();
        Arc::new(move |_| {
            Request::get("/healthz")
                .header("host", &host)
                .body(Full::new(Bytes::new()))
                .unwrap()
        })
    };
    let ingest = ingest_request(&addr);

    println!("herald ingest benchmark: {CLIENTS} keep-alive clients over loopback, {rounds} rounds of {secs}s each");
    let (mut base_rates, mut ingest_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut base_p50, mut base_p99, mut ing_p50, mut ing_p99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut per_commit = Vec::new();
    let mut per_fsync = Vec::new();
    let mut commit_ms = Vec::new();
    for round in 1..=rounds {
        let base = rt.block_on(drive(&addr, CLIENTS, secs, healthz.clone()));
        let commits0 = rt.block_on(metric(&addr, "herald_store_commits_total"));
        let fsyncs0 = rt.block_on(fsyncs(&addr));
        let events0 = rt.block_on(metric(&addr, "herald_events_ingested_total"));
        let commit_sum0 = rt.block_on(metric(&addr, "herald_store_commit_seconds_sum"));
        let load = rt.block_on(drive(&addr, CLIENTS, secs, ingest.clone()));
        let commits = rt.block_on(metric(&addr, "herald_store_commits_total")) - commits0;
        let synced = rt.block_on(fsyncs(&addr)) - fsyncs0;
        let events = rt.block_on(metric(&addr, "herald_events_ingested_total")) - events0;
        let commit_sum = rt.block_on(metric(&addr, "herald_store_commit_seconds_sum")) - commit_sum0;
        commit_ms.push(commit_sum * 1000.0 / commits.max(1.0));
        assert_eq!(
            events as u64, load.requests,
            "every acknowledged request is one stored event"
        );
        println!(
            "  round {round}: /healthz {:>8.0}/s   POST /v1/events {:>8.0}/s   ratio {:.2}   events/commit {:.1}",
            base.per_sec,
            load.per_sec,
            load.per_sec / base.per_sec,
            events / commits.max(1.0)
        );
        ratios.push(load.per_sec / base.per_sec);
        per_commit.push(events / commits.max(1.0));
        // Before the journal (HERALD_BIN of an older build) each commit was an fsync.
        per_fsync.push(events / if synced > 0.0 { synced } else { commits.max(1.0) });
        base_p50.push(base.pct(0.50));
        base_p99.push(base.pct(0.99));
        ing_p50.push(load.pct(0.50));
        ing_p99.push(load.pct(0.99));
        base_rates.push(base.per_sec);
        ingest_rates.push(load.per_sec);
    }
    let peak_rss = rss_kib(pid, "VmHWM:");
    let epc = median(per_commit);
    println!();
    println!("                          median        p50 ms    p99 ms");
    println!(
        "  GET /healthz (baseline)  {:>9.0}/s  {:>7.2}   {:>7.2}",
        median(base_rates),
        median(base_p50),
        median(base_p99)
    );
    println!(
        "  POST /v1/events (durable)  {:>9.0}/s  {:>7.2}   {:>7.2}",
        median(ingest_rates),
        median(ing_p50),
        median(ing_p99)
    );
    println!("  ratio ingest / healthz   {:>9.2}     (goal >= 0.5)", median(ratios));
    println!("  events per commit        {:>9.1}", epc);
    println!("  fsyncs per 1000 events   {:>9.1}", 1000.0 / median(per_fsync));
    println!("  mean commit              {:>9.2} ms", median(commit_ms));
    println!(
        "  idle RSS                 {:>9.1} MiB (goal < 10)",
        idle_rss as f64 / 1024.0
    );
    println!(
        "  peak RSS under load      {:>9.1} MiB (goal < 64)",
        peak_rss as f64 / 1024.0
    );
    drop(daemon);

    // Part 2 (issue 11): 1,000 active change notifications on the event's
    // name must not slow ingest. Two daemons, one with them, rounds in turn.
    let quiet = "[notifications]\ndelay = \"1h\"";
    let (plain, noted) = (start(quiet), start(quiet));
    for i in 0..1000 {
        let path = format!("/v1/notifications/sys{i}/bench.tick");
        let body = r#"{"url":"http://127.0.0.1:9/ping"}"#.to_string();
        let (status, text) = rt.block_on(call(&noted.addr, api(&noted.addr, "PUT", &path, body)));
        assert_eq!(status, 201, "{text}");
    }
    let mut with_ratios = Vec::new();
    for round in 1..=rounds {
        let without = rt.block_on(drive(&plain.addr, CLIENTS, secs, ingest_request(&plain.addr)));
        let with = rt.block_on(drive(&noted.addr, CLIENTS, secs, ingest_request(&noted.addr)));
        println!(
            "  round {round}: no notifications {:>8.0}/s   1,000 on the event {:>8.0}/s   ratio {:.2}",
            without.per_sec,
            with.per_sec,
            with.per_sec / without.per_sec
        );
        with_ratios.push(with.per_sec / without.per_sec);
    }
    println!(
        "  ratio with / without 1,000 notifications {:>5.2} (goal >= 0.9)",
        median(with_ratios)
    );
}

/// `POST /v1/events` with one small event, numbered.
fn ingest_request(addr: &str) -> MakeRequest {
    let host = addr.to_string();
    Arc::new(move |i| {
        let body = format!(r#"{{"event":"bench.tick","data":{{"i":{i},"site":"gateway-042","ok":true}}}}"#);
        Request::post("/v1/events")
            .header("host", &host)
            .header("authorization", format!("Bearer {TOKEN}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    })
}

/// The daemon's fsyncs so far: journal syncs and checkpoints.
async fn fsyncs(addr: &str) -> f64 {
    metric(addr, "herald_store_journal_syncs_total").await + metric(addr, "herald_store_checkpoints_total").await
}
