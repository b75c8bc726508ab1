//! Webhook delivery benchmark, over loopback, beside baselines measured in
//! the same run:
//!
//! 1. deliveries/s with 32 webhooks on one receiver, beside that receiver's
//!    own rate under 32 keep-alive connections from this process; three
//!    rounds, each ratio against the baseline measured just before it, and
//!    their median (and against wrk itself, when wrk is installed);
//! 2. event→delivery latency p50/p99 at a steady 1000 events/s;
//! 3. replay of a buffer of deactivated-webhook events (default 1,000,000),
//!    beside one client doing what a replay does (one request at a time on
//!    one connection, from another thread); then the same replay again with
//!    herald and the receiver pinned to one core (`taskset -c 0`), where a
//!    round trip costs no wake-up across CPUs.
//!
//!   cargo bench --bench webhooks
//!   HERALD_BENCH_REPLAY=100000 HERALD_BENCH_SECS=3 cargo bench --bench webhooks
//!
//! HERALD_BENCH_ONLY=replay runs part 3 alone; HERALD_BIN runs another build.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::json;

const CLIENTS: usize = 32;
const WEBHOOKS: usize = 32;

/// The receiver: counts deliveries per path, answers 410 on /gone while
/// `gone` is set, and records event→delivery latency on /lat.
struct Receiver {
    fanout: AtomicU64,
    replayed: AtomicU64,
    gone: AtomicBool,
    base: Instant,
    latencies_us: Mutex<Vec<u64>>,
}

async fn receiver(state: Arc<Receiver>) -> String {
    common::receiver(move |path: String, body: Bytes| {
        let state = state.clone();
        async move {
            match path.as_str() {
                "/gone" if state.gone.load(Ordering::Relaxed) => return 410,
                "/gone" => {
                    state.replayed.fetch_add(1, Ordering::Relaxed);
                }
                "/lat" => {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    if let Some(sent) = v["data"]["t"].as_u64() {
                        let now = state.base.elapsed().as_micros() as u64;
                        state.latencies_us.lock().unwrap().push(now.saturating_sub(sent));
                    }
                }
                _ => {
                    state.fanout.fetch_add(1, Ordering::Relaxed);
                }
            }
            200
        }
    })
    .await
}

async fn publish_batch(addr: &str, name: &str, n: usize) {
    let events: Vec<_> = (0..n).map(|i| json!({"event": name, "data": {"i": i}})).collect();
    let (status, body) = call(
        addr,
        api(addr, "POST", "/v1/events", serde_json::to_string(&events).unwrap()),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

async fn create_webhook(addr: &str, event: &str, url: String) -> String {
    let body = json!({"app": "bench", "event": event, "url": url}).to_string();
    let (status, text) = call(addr, api(addr, "POST", "/v1/webhooks", body)).await;
    assert_eq!(status, 201, "{text}");
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `drive` with one connection from a thread of its own, as herald's
/// delivery task is on another thread (and process) than the receiver.
async fn drive_from_another_thread(addr: &str, secs: f64, make: MakeRequest) -> Load {
    let addr = addr.to_string();
    tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(drive(&addr, 1, secs, make))
    })
    .await
    .unwrap()
}

/// The receiver's rate under wrk itself (two threads, `CLIENTS`
/// connections, a POST like a delivery), when wrk is installed: a load
/// generator in a process of its own, as herald is.
async fn wrk_rate(addr: &str, secs: f64) -> Option<f64> {
    let script = std::env::temp_dir().join(format!("herald-bench-{}.lua", std::process::id()));
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\n\
         wrk.body = '{\"id\":\"evt_1\",\"event\":\"tick\",\"data\":{\"i\":1}}'\n\
         wrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )
    .ok()?;
    let url = format!("http://{addr}/base");
    let duration = format!("{}s", secs.ceil() as u64);
    let mut wrk = std::process::Command::new("wrk");
    wrk.args(["-t2", &format!("-c{CLIENTS}"), "-d", &duration, "-s"])
        .arg(&script)
        .arg(url);
    let out = tokio::task::spawn_blocking(move || wrk.output()).await.ok()?.ok()?;
    let _ = std::fs::remove_file(&script);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs: f64 = env_or("HERALD_BENCH_SECS", 5.0);
    let replay: usize = env_or("HERALD_BENCH_REPLAY", 1_000_000);
    let fanout_events: usize = env_or("HERALD_BENCH_FANOUT", 2000);
    let pinned = std::env::var("HERALD_BENCH_PINNED").is_ok();
    let replay_only = pinned || std::env::var("HERALD_BENCH_ONLY").is_ok_and(|v| v == "replay");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let state = Arc::new(Receiver {
            fanout: AtomicU64::new(0),
            replayed: AtomicU64::new(0),
            gone: AtomicBool::new(true),
            base: Instant::now(),
            latencies_us: Mutex::default(),
        });
        let recv = receiver(state.clone()).await;
        let daemon = start(&format!("[webhooks]\nmax_per_host = {WEBHOOKS}\n"));
        let addr = daemon.addr.clone();
        let pid = daemon.child.id();
        let post: MakeRequest = {
            let host = recv.clone();
            Arc::new(move |i| {
                Request::post("/base")
                    .header("host", &host)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(format!(
                        r#"{{"id":"evt_{i}","event":"tick","data":{{"i":{i}}}}}"#
                    ))))
                    .unwrap()
            })
        };
        if pinned {
            println!();
            println!("pinned to one core (taskset -c 0): herald and the receiver share it");
        } else {
            println!("herald webhook benchmark over loopback (receiver in the bench process)");
        }

        if !replay_only {
            // 1. Rounds of: the receiver's own rate, then herald's deliveries to it.
            for _ in 0..WEBHOOKS {
                create_webhook(&addr, "tick", format!("http://{recv}/fanout")).await;
            }
            println!();
            let (mut ratios, mut wrk_ratios, mut costs) = (Vec::new(), Vec::new(), Vec::new());
            for round in 1..=3 {
                let base = drive(&recv, CLIENTS, secs, post.clone()).await;
                let wrk = wrk_rate(&recv, secs).await;
                state.fanout.store(0, Ordering::Relaxed);
                let started = Instant::now();
                let cpu = cpu_us(pid);
                for _ in 0..fanout_events / 500 {
                    publish_batch(&addr, "tick", 500).await;
                }
                let expected = (fanout_events / 500 * 500 * WEBHOOKS) as u64;
                wait_until("the fan-out deliveries", Duration::from_secs(600), || {
                    state.fanout.load(Ordering::Relaxed) >= expected
                })
                .await;
                let rate = expected as f64 / started.elapsed().as_secs_f64();
                costs.push((cpu_us(pid) - cpu) as f64 / expected as f64);
                ratios.push(rate / base.per_sec);
                let by_wrk = match wrk {
                    Some(w) => {
                        wrk_ratios.push(rate / w);
                        format!(" (wrk {w:.0} req/s, ratio {:.2})", rate / w)
                    }
                    None => String::new(),
                };
                println!(
                    "  round {round}: receiver alone, {CLIENTS} connections {:>7.0} req/s; \
                     {WEBHOOKS} webhooks {:>7.0} deliveries/s; ratio {:.2}{by_wrk}",
                    base.per_sec,
                    rate,
                    rate / base.per_sec
                );
            }
            println!(
                "  ratio deliveries / receiver, median {:>5.2}      (goal >= 0.7)",
                median(ratios)
            );
            println!("  herald's CPU per delivery, median {:>5.1} µs", median(costs));
            if !wrk_ratios.is_empty() {
                println!("  the same against wrk, median       {:>5.2}", median(wrk_ratios));
            }

            // 2. Latency at a steady 1000 events/s, one webhook.
            create_webhook(&addr, "lat", format!("http://{recv}/lat")).await;
            let mut sender = connect(&addr).await;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            let n = (secs * 1000.0) as u64;
            for _ in 0..n {
                tick.tick().await;
                let t = state.base.elapsed().as_micros() as u64;
                let req = api(
                    &addr,
                    "POST",
                    "/v1/events",
                    json!({"event": "lat", "data": {"t": t}}).to_string(),
                );
                if sender.ready().await.is_err() {
                    sender = connect(&addr).await;
                }
                let resp = sender.send_request(req).await.unwrap();
                let _ = resp.into_body().collect().await;
            }
            wait_until("the latency deliveries", Duration::from_secs(60), || {
                state.latencies_us.lock().unwrap().len() as u64 >= n
            })
            .await;
            let mut lat = state.latencies_us.lock().unwrap().clone();
            lat.sort_unstable();
            println!(
                "  event→delivery at 1000 events/s   p50 {:.2} ms   p99 {:.2} ms   (goal p99 < 20 ms)",
                percentile(&lat, 0.5),
                percentile(&lat, 0.99)
            );
        }

        // 3. Replay: a webhook deactivated by 410 buffers `replay` events.
        let id = create_webhook(&addr, "buffered", format!("http://{recv}/gone")).await;
        publish_batch(&addr, "buffered", 1).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let fill = Instant::now();
        let mut left = replay;
        while left > 0 {
            let n = left.min(1000);
            publish_batch(&addr, "buffered", n).await;
            left -= n;
        }
        let fill_rate = replay as f64 / fill.elapsed().as_secs_f64();
        state.gone.store(false, Ordering::Relaxed);
        let started = Instant::now();
        let cpu = cpu_us(pid);
        let (status, body) = call(
            &addr,
            api(
                &addr,
                "POST",
                &format!("/v1/webhooks/{id}/activate"),
                r#"{"replay_events": true}"#.into(),
            ),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let want = replay as u64 + 1;
        wait_until("the replay", Duration::from_secs(3600), || {
            state.replayed.load(Ordering::Relaxed) >= want
        })
        .await;
        let replay_rate = want as f64 / started.elapsed().as_secs_f64();
        let replay_cost = (cpu_us(pid) - cpu) as f64 / want as f64;
        let single = drive_from_another_thread(&recv, secs, post).await;
        println!(
            "  buffered {replay} events at        {:>9.0} events/s (batches of 1000)",
            fill_rate
        );
        println!(
            "  replay of the buffer              {:>9.0} events/s (goal >= 10,000)",
            replay_rate
        );
        println!("  herald's CPU per replayed event     {replay_cost:>7.1} µs");
        println!(
            "  one request at a time, 1 connection, other thread {:>7.0} req/s  (replay / that: {:.2}, goal >= 0.95)",
            single.per_sec,
            replay_rate / single.per_sec
        );
        println!(
            "  peak RSS                          {:>9.1} MiB",
            rss_kib(pid, "VmHWM:") as f64 / 1024.0
        );
        drop(daemon);
    });
    if !pinned {
        replay_pinned();
    }
}

/// Part 3 again in a copy of this bench pinned to CPU 0, if `taskset` is here.
fn replay_pinned() {
    let me = std::env::current_exe().unwrap();
    let status = std::process::Command::new("taskset")
        .args(["-c", "0"])
        .arg(me)
        .env("HERALD_BENCH_PINNED", "1")
        .status();
    if !status.is_ok_and(|s| s.success()) {
        println!("  (no pinned replay: taskset, from util-linux, did not run)");
    }
}
