//! External API action benchmark, over loopback, beside the webhook
//! delivery rate measured in the same run (same daemon, same receiver):
//!
//! - 1,000 actions created at once (32 clients) against a receiver that
//!   accepts each call (202) and answers by callback 10 ms later;
//!   actions/s from the first create to the last `completed`, and the time
//!   from each create to its completion (p50, p99);
//! - deliveries/s of 32 webhooks on the same receiver;
//! - three rounds, the ratio of each, and their median; peak RSS.
//!
//!   cargo bench --bench actions
//!   HERALD_BENCH_ACTIONS=5000 HERALD_BENCH_ROUNDS=5 cargo bench --bench actions

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::{Value, json};

const CLIENTS: usize = 32;
const WEBHOOKS: usize = 32;
const CALLBACK_DELAY: Duration = Duration::from_millis(10);

/// The external system: takes calls on /enate and answers each by callback
/// 10 ms later; counts webhook deliveries on /hook.
struct Receiver {
    herald: Mutex<String>,
    base: Instant,
    /// Action number → when its callback was answered 200, in µs since base.
    completed: Mutex<HashMap<u64, u64>>,
    failed_callbacks: AtomicU64,
    deliveries: AtomicU64,
}

async fn receiver(state: Arc<Receiver>) -> String {
    common::receiver(move |path: String, body: Bytes| {
        let state = state.clone();
        async move {
            if path == "/enate" {
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                tokio::spawn(answer_later(state.clone(), v));
            } else {
                state.deliveries.fetch_add(1, Ordering::Relaxed);
            }
            202
        }
    })
    .await
}

/// The callback, 10 ms after the call, on a connection of its own.
async fn answer_later(state: Arc<Receiver>, made: Value) {
    tokio::time::sleep(CALLBACK_DELAY).await;
    let herald = state.herald.lock().unwrap().clone();
    let id = made["action_id"].as_str().unwrap_or_default();
    let n = made["payload"]["n"].as_u64().unwrap_or(u64::MAX);
    let req = Request::post(format!("/v1/actions/{id}/callback"))
        .header("host", &herald)
        .header("content-type", "application/json")
        .header(
            "x-herald-callback-token",
            made["callback_token"].as_str().unwrap_or_default(),
        )
        .body(Full::new(Bytes::from_static(br#"{"success":true,"data":{"ok":1}}"#)))
        .unwrap();
    let (status, _) = call(&herald, req).await;
    if status == 200 {
        let at = state.base.elapsed().as_micros() as u64;
        state.completed.lock().unwrap().insert(n, at);
    } else {
        state.failed_callbacks.fetch_add(1, Ordering::Relaxed);
    }
}

/// Creates actions `from..from + n` with `CLIENTS` clients; each one's
/// create time in µs since `base`.
async fn create_all(addr: &str, base: Instant, from: u64, n: u64) -> HashMap<u64, u64> {
    let next = Arc::new(AtomicU64::new(from));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (addr, next) = (addr.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(&addr).await;
            let mut sent = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= from + n {
                    break;
                }
                let at = base.elapsed().as_micros() as u64;
                let body = json!({"interface": "crm", "payload": {"n": i, "order": "A-1"}}).to_string();
                let resp = sender
                    .send_request(api(&addr, "POST", "/v1/actions", body))
                    .await
                    .expect("create");
                let status = resp.status();
                let _ = resp.into_body().collect().await;
                assert_eq!(status, 201);
                sent.push((i, at));
            }
            sent
        }));
    }
    let mut out = HashMap::new();
    for t in tasks {
        out.extend(t.await.unwrap());
    }
    out
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let actions: u64 = env_or("HERALD_BENCH_ACTIONS", 1000);
    let rounds: usize = env_or("HERALD_BENCH_ROUNDS", 3);
    let per_webhook: usize = env_or("HERALD_BENCH_EVENTS", 100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let state = Arc::new(Receiver {
            herald: Mutex::default(),
            base: Instant::now(),
            completed: Mutex::default(),
            failed_callbacks: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
        });
        let recv = receiver(state.clone()).await;
        let daemon = start(&format!(
            "[webhooks]\nmax_per_host = {WEBHOOKS}\n\n[[interfaces]]\nname = \"crm\"\nkind = \"action\"\n\
             url = \"http://{recv}/enate\"\n"
        ));
        let addr = daemon.addr.clone();
        *state.herald.lock().unwrap() = addr.clone();
        let pid = daemon.child.id();
        for _ in 0..WEBHOOKS {
            let body = json!({"app": "bench", "event": "tick", "url": format!("http://{recv}/hook")}).to_string();
            let (status, text) = call(&addr, api(&addr, "POST", "/v1/webhooks", body)).await;
            assert_eq!(status, 201, "{text}");
        }
        println!(
            "herald actions bench: {actions} actions a round, callback {} ms after each call, {CLIENTS} clients; \
             {WEBHOOKS} webhooks x {per_webhook} events beside it",
            CALLBACK_DELAY.as_millis()
        );
        let (mut ratios, mut rates, mut p99s) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            // The baseline: webhook deliveries on the same daemon and receiver.
            let before = state.deliveries.load(Ordering::Relaxed);
            let want = before + (WEBHOOKS * per_webhook) as u64;
            let events: Vec<_> = (0..per_webhook)
                .map(|i| json!({"event": "tick", "data": {"i": i}}))
                .collect();
            let started = Instant::now();
            let (status, body) = call(
                &addr,
                api(&addr, "POST", "/v1/events", serde_json::to_string(&events).unwrap()),
            )
            .await;
            assert_eq!(status, 202, "{body}");
            wait_until("the deliveries", Duration::from_secs(300), || {
                state.deliveries.load(Ordering::Relaxed) >= want
            })
            .await;
            let deliveries = (WEBHOOKS * per_webhook) as f64 / started.elapsed().as_secs_f64();

            // The actions.
            let from = round as u64 * actions;
            let first = state.base.elapsed().as_micros() as u64;
            let created = create_all(&addr, state.base, from, actions).await;
            wait_until("every action completed", Duration::from_secs(300), || {
                state.completed.lock().unwrap().len() as u64 >= from + actions
            })
            .await;
            let done = state.completed.lock().unwrap().clone();
            let mut lat: Vec<u64> = created.iter().map(|(n, at)| done[n].saturating_sub(*at)).collect();
            lat.sort_unstable();
            let last = created.keys().map(|n| done[n]).max().unwrap();
            let per_sec = actions as f64 / ((last - first) as f64 / 1e6);
            let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
            println!(
                "round {}: actions {per_sec:>7.0}/s to completed (create→completed p50 {p50:.1} ms, p99 {p99:.1} ms) \
                 | webhook deliveries {deliveries:>7.0}/s | ratio {:.2}",
                round + 1,
                per_sec / deliveries
            );
            ratios.push(per_sec / deliveries);
            rates.push(per_sec);
            p99s.push(p99);
        }
        assert_eq!(
            state.failed_callbacks.load(Ordering::Relaxed),
            0,
            "every callback answered 200"
        );
        println!(
            "median: {:.0} actions/s, p99 {:.1} ms, actions/s ÷ deliveries/s {:.2}; peak RSS {} KiB",
            median(rates),
            median(p99s),
            median(ratios),
            rss_kib(pid, "VmHWM:")
        );
    });
}
