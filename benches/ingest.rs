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

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

const CLIENTS: usize = 32;
const TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";

struct Daemon {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"{}\"\n\n[[accounts]]\nname = \"bench\"\nemail = \"b@example.com\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
            dir.path().join("data").display(),
            hex::encode(Sha256::digest(TOKEN.as_bytes()))
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "warn,herald=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting herald");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("herald exited").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stderr so the daemon never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Daemon { child, addr, _dir: dir }
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

struct Load {
    requests: u64,
    per_sec: f64,
    latencies_us: Vec<u64>,
}

impl Load {
    fn pct(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// `CLIENTS` keep-alive connections sending `make(i)` back to back for `secs`.
async fn drive(addr: &str, secs: f64, make: Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (addr, stop, make) = (addr.to_string(), stop.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut lat = Vec::new();
            let mut i = (c as u64) << 32;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let resp = sender.send_request(make(i)).await.expect("request");
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                assert!(status.is_success(), "status {status}");
                lat.push(started.elapsed().as_micros() as u64);
                i += 1;
            }
            lat
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Load {
        requests: all.len() as u64,
        per_sec: all.len() as f64 / elapsed,
        latencies_us: all,
    }
}

async fn metric(addr: &str, name: &str) -> f64 {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/metrics")
        .header("host", addr)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let body = sender
        .send_request(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

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
    let daemon = start();
    let pid = daemon.child.id();
    let addr = daemon.addr.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();

    std::thread::sleep(Duration::from_secs(1));
    let idle_rss = rss_kib(pid, "VmRSS:");

    let healthz: Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync> = {
        let host = addr.clone();
        Arc::new(move |_| {
            Request::get("/healthz")
                .header("host", &host)
                .body(Full::new(Bytes::new()))
                .unwrap()
        })
    };
    let ingest: Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync> = {
        let host = addr.clone();
        Arc::new(move |i| {
            let body = format!(r#"{{"event":"bench.tick","data":{{"i":{i},"site":"gateway-042","ok":true}}}}"#);
            Request::post("/v1/events")
                .header("host", &host)
                .header("authorization", format!("Bearer {TOKEN}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        })
    };

    println!("herald ingest benchmark: {CLIENTS} keep-alive clients over loopback, {rounds} rounds of {secs}s each");
    let (mut base_rates, mut ingest_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut base_p50, mut base_p99, mut ing_p50, mut ing_p99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut per_commit = Vec::new();
    let mut commit_ms = Vec::new();
    for round in 1..=rounds {
        let base = rt.block_on(drive(&addr, secs, healthz.clone()));
        let commits0 = rt.block_on(metric(&addr, "herald_store_commits_total"));
        let events0 = rt.block_on(metric(&addr, "herald_events_ingested_total"));
        let commit_sum0 = rt.block_on(metric(&addr, "herald_store_commit_seconds_sum"));
        let load = rt.block_on(drive(&addr, secs, ingest.clone()));
        let commits = rt.block_on(metric(&addr, "herald_store_commits_total")) - commits0;
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
        "  POST /v1/events (fsync)  {:>9.0}/s  {:>7.2}   {:>7.2}",
        median(ingest_rates),
        median(ing_p50),
        median(ing_p99)
    );
    println!("  ratio ingest / healthz   {:>9.2}     (goal >= 0.5)", median(ratios));
    println!("  events per commit        {:>9.1}", epc);
    println!("  fsyncs per 1000 events   {:>9.1}", 1000.0 / epc);
    println!("  mean commit (fsync)      {:>9.2} ms", median(commit_ms));
    println!(
        "  idle RSS                 {:>9.1} MiB (goal < 10)",
        idle_rss as f64 / 1024.0
    );
    println!(
        "  peak RSS under load      {:>9.1} MiB (goal < 64)",
        peak_rss as f64 / 1024.0
    );
}
