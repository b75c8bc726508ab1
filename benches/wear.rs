//! Flash wear: bytes written to storage per event, as the daemon causes
//! them (`write_bytes` of its `/proc/PID/io`) and, where readable, as the
//! block device under the data directory counts them (`/sys/dev/block/…/stat`),
//! beside the floor measured in the same run on the same file system: a
//! 160-byte append and `fdatasync`, as one acknowledged write costs at least.
//!
//! 1. publish only, one event at a time every 10 ms;
//! 2. publish + one webhook delivery, the same pacing;
//! 3. 32 concurrent publishers, publish only;
//! 4. the replay of a buffer of `HERALD_BENCH_REPLAY` events (default 20,000;
//!    issue 15 names 1,000,000).
//!
//!   cargo bench --bench wear
//!   HERALD_BENCH_EVENTS=1000 HERALD_BENCH_REPLAY=1000000 cargo bench --bench wear

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// `write_bytes` of a process: what it sent to the storage layer.
fn proc_written(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Sectors written by the block device that holds `dir`, in bytes, if readable.
fn device_written(dir: &Path) -> Option<u64> {
    let dev = std::fs::metadata(dir).ok()?.dev();
    let (major, minor) = (
        ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff),
        (dev & 0xff) | ((dev >> 12) & !0xff),
    );
    let stat = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).ok()?;
    let sectors: u64 = stat.split_whitespace().nth(6)?.parse().ok()?;
    Some(sectors * 512)
}

/// Syncs the file systems so that what is pending is counted now.
fn sync() {
    let _ = std::process::Command::new("sync").status();
}

struct Counters<'a> {
    pid: String,
    dir: &'a Path,
    proc0: u64,
    dev0: Option<u64>,
}

impl<'a> Counters<'a> {
    fn start(pid: &str, dir: &'a Path) -> Counters<'a> {
        sync();
        Counters {
            pid: pid.to_string(),
            dir,
            proc0: proc_written(pid),
            dev0: device_written(dir),
        }
    }

    /// (process bytes, device bytes) per unit since start.
    fn per(&self, units: u64) -> (f64, Option<f64>) {
        sync();
        let p = proc_written(&self.pid).saturating_sub(self.proc0) as f64 / units as f64;
        let d = device_written(self.dir)
            .zip(self.dev0)
            .map(|(now, then)| now.saturating_sub(then) as f64 / units as f64);
        (p, d)
    }
}

fn show(label: &str, (p, d): (f64, Option<f64>), floor: f64) {
    println!(
        "  {label:<44} {p:>9.0} B/event (process){}   {:.1}× the floor",
        d.map(|d| format!(" {d:>9.0} B (device)")).unwrap_or_default(),
        p / floor
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let events: u64 = env_or("HERALD_BENCH_EVENTS", 300);
    let replay: u64 = env_or("HERALD_BENCH_REPLAY", 20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // The floor: a small append and fdatasync, in a directory on the same
        // file system as the daemon's data.
        let daemon = start("");
        let data = daemon.data_dir();
        let floor_file = data.join("floor.bin");
        let me = std::process::id().to_string();
        let floor = {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&floor_file)
                .unwrap();
            let c = Counters::start(&me, &data);
            for _ in 0..events {
                f.write_all(&[7u8; 160]).unwrap();
                f.sync_data().unwrap();
            }
            c.per(events)
        };
        let _ = std::fs::remove_file(&floor_file);
        println!("herald flash wear bench: {events} events a part, bytes written per event");
        println!(
            "  floor: 160-byte append + fdatasync          {:>9.0} B/write (process){}",
            floor.0,
            floor.1.map(|d| format!(" {d:>9.0} B (device)")).unwrap_or_default()
        );
        let addr = daemon.addr.clone();
        let pid = daemon.child.id().to_string();
        let publish = |n: u64| {
            api(
                &addr,
                "POST",
                "/v1/events",
                json!({"event": "tick", "data": {"n": n, "pad": "0123456789012345678901234567890123456789"}})
                    .to_string(),
            )
        };

        // 1. publish only, one at a time every 10 ms.
        let c = Counters::start(&pid, &data);
        for n in 0..events {
            let (status, body) = call(&addr, publish(n)).await;
            assert_eq!(status, 202, "{body}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        show("publish only, every 10 ms", c.per(events), floor.0);

        // 2. publish + one webhook delivery.
        let delivered = Arc::new(AtomicU64::new(0));
        let d2 = delivered.clone();
        let recv = receiver(move |_, _| {
            let d = d2.clone();
            async move {
                d.fetch_add(1, Ordering::Relaxed);
                200
            }
        })
        .await;
        let body = json!({"app": "wear", "event": "tick", "url": format!("http://{recv}/hook")}).to_string();
        let (status, text) = call(&addr, api(&addr, "POST", "/v1/webhooks", body)).await;
        assert_eq!(status, 201, "{text}");
        let c = Counters::start(&pid, &data);
        for n in 0..events {
            let (status, body) = call(&addr, publish(n)).await;
            assert_eq!(status, 202, "{body}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        while delivered.load(Ordering::Relaxed) < events && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        show("publish + one webhook delivery, every 10 ms", c.per(events), floor.0);
        let (id, _) = {
            let (_, list) = call(&addr, api(&addr, "GET", "/v1/webhooks", String::new())).await;
            let v: serde_json::Value = serde_json::from_str(&list).unwrap();
            (v["webhooks"][0]["id"].as_str().unwrap().to_string(), ())
        };
        let (status, _) = call(
            &addr,
            api(&addr, "DELETE", &format!("/v1/webhooks/{id}"), String::new()),
        )
        .await;
        assert_eq!(status, 204);

        // 3. 32 concurrent publishers.
        let total = events * 32;
        let next = Arc::new(AtomicU64::new(0));
        let c = Counters::start(&pid, &data);
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (addr, next) = (addr.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut sender = connect(&addr).await;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let req = api(
                        &addr,
                        "POST",
                        "/v1/events",
                        json!({"event": "tick", "data": {"n": n}}).to_string(),
                    );
                    let resp = sender.send_request(req).await.unwrap();
                    assert_eq!(resp.status(), 202);
                    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        show("32 concurrent publishers, publish only", c.per(total), floor.0);

        // 4. A replay: a webhook deactivated by a 410, `replay` events
        // buffered, then reactivated with replay.
        let gone = Arc::new(AtomicU64::new(1));
        let replayed = Arc::new(AtomicU64::new(0));
        let (g, r) = (gone.clone(), replayed.clone());
        let recv = receiver(move |_, _| {
            let (g, r) = (g.clone(), r.clone());
            async move {
                if g.load(Ordering::Relaxed) == 1 {
                    410
                } else {
                    r.fetch_add(1, Ordering::Relaxed);
                    200
                }
            }
        })
        .await;
        let body = json!({"app": "wear", "event": "replay", "url": format!("http://{recv}/hook")}).to_string();
        let (_, text) = call(&addr, api(&addr, "POST", "/v1/webhooks", body)).await;
        let wh = serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        call(
            &addr,
            api(
                &addr,
                "POST",
                "/v1/events",
                json!({"event": "replay", "data": 0}).to_string(),
            ),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut sent = 0;
        while sent < replay {
            let n = (replay - sent).min(1000);
            let batch: Vec<_> = (0..n)
                .map(|i| json!({"event": "replay", "data": {"i": sent + i}}))
                .collect();
            let (status, body) = call(
                &addr,
                api(&addr, "POST", "/v1/events", serde_json::to_string(&batch).unwrap()),
            )
            .await;
            assert_eq!(status, 202, "{body}");
            sent += n;
        }
        gone.store(0, Ordering::Relaxed);
        let c = Counters::start(&pid, &data);
        let started = Instant::now();
        let (status, text) = call(
            &addr,
            api(
                &addr,
                "POST",
                &format!("/v1/webhooks/{wh}/activate"),
                json!({"replay_events": true}).to_string(),
            ),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        while replayed.load(Ordering::Relaxed) < replay && started.elapsed() < Duration::from_secs(900) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        show(&format!("replay of {replay} buffered events"), c.per(replay), floor.0);
    });
}
