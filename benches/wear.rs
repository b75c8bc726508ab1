//! Flash wear: bytes written to storage per event, as the daemon causes
//! them (`write_bytes` of its `/proc/PID/io`) and, where readable, as the
//! block device under the data directory counts them (`/sys/dev/block/…/stat`),
//! beside the floor measured in the same run on the same file system: 160
//! bytes written in place in a preallocated file and `fdatasync`, every
//! 10 ms as the paced parts go, as one acknowledged write costs at least.
//!
//! 1. publish only, one event at a time every 10 ms;
//! 2. publish + one webhook delivery, the same pacing;
//! 3. 32 concurrent publishers, publish only; then, as a user checks it
//!    from outside, a burst of `HERALD_BENCH_BURST` (2,000) events from 32
//!    clients counted until the daemon has been idle 2 s, without a stop;
//! 4. batches of 50 events every 500 ms (100 events a second);
//! 5. the replay of a buffer of `HERALD_BENCH_REPLAY` events (default 20,000;
//!    issue 15 names 1,000,000);
//! 6. one event a second for `HERALD_BENCH_SLOW_SECS` (120), then a clean
//!    stop, whose checkpoint is counted: at a slow pace the checkpoint, not
//!    the journal, is what varies.
//!
//! Each part runs on a fresh daemon and ends with a clean stop, which is
//! counted: its checkpoint writes the database pages the part changed that
//! no checkpoint during the part wrote yet. A part's figure is therefore
//! what it costs in the long run, or a little more.
//!
//! `HERALD_BENCH_EVENTS` (default 3,000) sets the events of each part.
//! `HERALD_BENCH_DIR` puts the daemon's data (and the floor's file) on
//! another file system, a fresh ext4 on a loop device say.
//!
//!   cargo bench --bench wear
//!   HERALD_BENCH_EVENTS=1000 HERALD_BENCH_REPLAY=1000000 cargo bench --bench wear

mod common;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
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

/// What one part wrote per unit.
struct Per {
    process: f64,
    device: Option<f64>,
    syncs: f64,
    checkpoints: f64,
}

/// Counts from the start of a part.
struct Counters {
    pid: String,
    dir: PathBuf,
    proc0: u64,
    dev0: Option<u64>,
}

impl Counters {
    fn start(pid: &str, dir: &Path) -> Counters {
        sync();
        Counters {
            pid: pid.to_string(),
            dir: dir.to_path_buf(),
            proc0: proc_written(pid),
            dev0: device_written(dir),
        }
    }

    /// Bytes per unit since start (for the floors, in this process).
    fn per(&self, units: u64) -> Per {
        sync();
        let u = units as f64;
        Per {
            process: proc_written(&self.pid).saturating_sub(self.proc0) as f64 / u,
            device: device_written(&self.dir)
                .zip(self.dev0)
                .map(|(now, then)| now.saturating_sub(then) as f64 / u),
            syncs: 0.0,
            checkpoints: 0.0,
        }
    }
}

/// A fresh daemon for one part.
struct Part {
    daemon: Daemon,
    addr: String,
    pid: String,
    counters: Option<Counters>,
    /// Journal syncs and checkpoints when counting started.
    store0: (f64, f64),
}

async fn store_counts(addr: &str) -> (f64, f64) {
    (
        metric(addr, "herald_store_journal_syncs_total").await,
        metric(addr, "herald_store_checkpoints_total").await,
    )
}

impl Part {
    fn new() -> Part {
        let daemon = start("");
        let (addr, pid) = (daemon.addr.clone(), daemon.child.id().to_string());
        Part {
            daemon,
            addr,
            pid,
            counters: None,
            store0: (0.0, 0.0),
        }
    }

    /// Starts counting (after the part's set-up).
    async fn count(&mut self) {
        self.store0 = store_counts(&self.addr).await;
        self.counters = Some(Counters::start(&self.pid, &self.daemon.data_dir()));
    }

    /// Stops the daemon cleanly (its last checkpoint counted); per unit.
    async fn stop(mut self, units: u64) -> Per {
        let u = units as f64;
        let (syncs, checkpoints) = store_counts(&self.addr).await;
        let (syncs, checkpoints) = (syncs - self.store0.0, checkpoints - self.store0.1);
        let c = self.counters.take().expect("counting");
        // /proc/PID/io is gone once the process has exited: read it first.
        let process = proc_written(&self.pid).saturating_sub(c.proc0) as f64 / u;
        let _ = std::process::Command::new("kill").args(["-TERM", &self.pid]).status();
        let _ = self.daemon.child.wait();
        sync();
        Per {
            process,
            device: device_written(&c.dir)
                .zip(c.dev0)
                .map(|(now, then)| now.saturating_sub(then) as f64 / u),
            syncs: syncs / u,
            // The one at the clean stop too.
            checkpoints: (checkpoints + 1.0) / u,
        }
    }

    fn publish(&self, n: u64) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
        api(
            &self.addr,
            "POST",
            "/v1/events",
            json!({"event": "tick", "data": {"n": n, "pad": "0123456789012345678901234567890123456789"}}).to_string(),
        )
    }

    /// Publishes `events` one at a time, `pace` apart.
    async fn paced(&self, events: u64, pace: Duration) {
        for n in 0..events {
            let (status, body) = call(&self.addr, self.publish(n)).await;
            assert_eq!(status, 202, "{body}");
            tokio::time::sleep(pace).await;
        }
    }

    async fn webhook(&self, url: String, event: &str) -> String {
        let body = json!({"app": "wear", "event": event, "url": url}).to_string();
        let (status, text) = call(&self.addr, api(&self.addr, "POST", "/v1/webhooks", body)).await;
        assert_eq!(status, 201, "{text}");
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// One line: the bytes, their ratio to the floor (device bytes where
/// readable), and the journal syncs and checkpoints per event.
fn show(label: &str, per: &Per, floor: &Per) {
    let (mine, base) = match (per.device, floor.device) {
        (Some(d), Some(f)) => (d, f),
        _ => (per.process, floor.process),
    };
    println!(
        "  {label:<40} {:>7.0} B/event (process){}  {:>5.2}× the floor  {:.2} syncs/event, 1 checkpoint per {:.0} events",
        per.process,
        per.device.map(|d| format!(" {d:>7.0} B (device)")).unwrap_or_default(),
        mine / base,
        per.syncs,
        1.0 / per.checkpoints,
    );
}

fn show_floor(label: &str, per: &Per) {
    match per.device {
        Some(d) => println!("  {label:<40} {:>24} {d:>7.0} B (device)", ""),
        None => println!("  {label:<40} {:>7.0} B/write (process)", per.process),
    }
}

/// Publishes `total` events from 32 keep-alive clients as fast as they go.
async fn concurrent(addr: &str, total: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (addr, next) = (addr.to_string(), next.clone());
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
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let events: u64 = env_or("HERALD_BENCH_EVENTS", 3000);
    let replay: u64 = env_or("HERALD_BENCH_REPLAY", 20_000);
    let slow: u64 = env_or("HERALD_BENCH_SLOW_SECS", 120);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        // The floors, in a directory on the same file system as the daemons' data.
        let scratch = match std::env::var("HERALD_BENCH_DIR") {
            Ok(base) => tempfile::tempdir_in(base).unwrap(),
            Err(_) => tempfile::tempdir().unwrap(),
        };
        let floor_file = scratch.path().join("floor.bin");
        let me = std::process::id().to_string();
        let append = {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&floor_file)
                .unwrap();
            let c = Counters::start(&me, scratch.path());
            for _ in 0..events {
                f.write_all(&[7u8; 160]).unwrap();
                f.sync_data().unwrap();
            }
            c.per(events)
        };
        let _ = std::fs::remove_file(&floor_file);
        // The floor of one acknowledged write: 160 bytes written in place,
        // a page each, in a preallocated file, and fdatasync; once as fast as
        // it goes and once every 10 ms, as the paced parts publish (on some
        // file systems the changed mtime then costs a metadata commit too).
        let in_place = |pace: Option<Duration>| {
            let floor_file = floor_file.clone();
            let me = me.clone();
            let dir = scratch.path().to_path_buf();
            async move {
                use std::os::unix::fs::FileExt;
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(&floor_file)
                    .unwrap();
                f.write_all_at(&vec![0u8; (events as usize + 1) * 4096], 0).unwrap();
                f.sync_all().unwrap();
                let c = Counters::start(&me, &dir);
                for i in 0..events {
                    f.write_all_at(&[7u8; 160], i * 4096).unwrap();
                    f.sync_data().unwrap();
                    if let Some(p) = pace {
                        tokio::time::sleep(p).await;
                    }
                }
                let per = c.per(events);
                let _ = std::fs::remove_file(&floor_file);
                per
            }
        };
        let unpaced = in_place(None).await;
        let floor = in_place(Some(Duration::from_millis(10))).await;
        println!("herald flash wear bench: {events} events a part, bytes written per event");
        show_floor("160 bytes in place + fdatasync", &unpaced);
        show_floor("the floor: the same every 10 ms", &floor);
        show_floor("160-byte append to a growing file + fdatasync", &append);

        // 1. publish only, one at a time every 10 ms.
        let mut part = Part::new();
        part.count().await;
        part.paced(events, Duration::from_millis(10)).await;
        show("publish only, every 10 ms", &part.stop(events).await, &floor);

        // 2. publish + one webhook delivery.
        let mut part = Part::new();
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
        part.webhook(format!("http://{recv}/hook"), "tick").await;
        part.count().await;
        part.paced(events, Duration::from_millis(10)).await;
        let started = Instant::now();
        while delivered.load(Ordering::Relaxed) < events && started.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        show(
            "publish + one webhook delivery, 10 ms",
            &part.stop(events).await,
            &floor,
        );

        // 3. 32 concurrent publishers.
        let mut part = Part::new();
        let total = events * 32;
        part.count().await;
        concurrent(&part.addr, total).await;
        show(
            "32 concurrent publishers, publish only",
            &part.stop(total).await,
            &floor,
        );

        // 3b. The same as a user checks it from outside (issue 25): a burst
        // of `HERALD_BENCH_BURST` events from 32 clients, counted at the
        // block device from before the first event until the daemon has
        // written nothing for 2 s, plus a sync; the daemon keeps running,
        // so whatever it left for the kernel to flush is counted, and no
        // clean stop's checkpoint is.
        let burst: u64 = env_or("HERALD_BENCH_BURST", 2000);
        let mut part = Part::new();
        part.count().await;
        concurrent(&part.addr, burst).await;
        let (mut last, mut quiet) = (proc_written(&part.pid), Instant::now());
        while quiet.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = proc_written(&part.pid);
            if now != last {
                (last, quiet) = (now, Instant::now());
            }
        }
        let per = part.counters.as_ref().expect("counting").per(burst);
        let (syncs, _) = store_counts(&part.addr).await;
        let per = Per {
            syncs: (syncs - part.store0.0) / burst as f64,
            ..per
        };
        match per.device {
            Some(d) => println!(
                "  {:<40} {:>7.0} B/event (process) {d:>7.0} B (device)  goal <= 1024 at the device  {:.2} syncs/event",
                format!("{burst} events from 32 clients, idle 2 s"),
                per.process,
                per.syncs
            ),
            None => println!(
                "  {:<40} {:>7.0} B/event (process; the device is not readable here)",
                format!("{burst} events from 32 clients, idle 2 s"),
                per.process
            ),
        }
        drop(part);

        // 4. Batches of 50 events every 500 ms.
        let mut part = Part::new();
        let batches = (events / 50).max(1);
        part.count().await;
        for b in 0..batches {
            let batch: Vec<_> = (0..50)
                .map(|i| json!({"event": "tick", "data": {"n": b * 50 + i}}))
                .collect();
            let req = api(&part.addr, "POST", "/v1/events", serde_json::to_string(&batch).unwrap());
            let (status, body) = call(&part.addr, req).await;
            assert_eq!(status, 202, "{body}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        show("batches of 50 every 500 ms", &part.stop(batches * 50).await, &floor);

        // 5. A replay: a webhook deactivated by a 410, `replay` events
        // buffered, then reactivated with replay.
        let mut part = Part::new();
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
        let wh = part.webhook(format!("http://{recv}/hook"), "replay").await;
        let first = json!({"event": "replay", "data": 0}).to_string();
        call(&part.addr, api(&part.addr, "POST", "/v1/events", first)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut sent = 0;
        while sent < replay {
            let n = (replay - sent).min(1000);
            let batch: Vec<_> = (0..n)
                .map(|i| json!({"event": "replay", "data": {"i": sent + i}}))
                .collect();
            let req = api(&part.addr, "POST", "/v1/events", serde_json::to_string(&batch).unwrap());
            let (status, body) = call(&part.addr, req).await;
            assert_eq!(status, 202, "{body}");
            sent += n;
        }
        gone.store(0, Ordering::Relaxed);
        part.count().await;
        let started = Instant::now();
        let activate = api(
            &part.addr,
            "POST",
            &format!("/v1/webhooks/{wh}/activate"),
            json!({"replay_events": true}).to_string(),
        );
        let (status, text) = call(&part.addr, activate).await;
        assert_eq!(status, 200, "{text}");
        while replayed.load(Ordering::Relaxed) < replay && started.elapsed() < Duration::from_secs(900) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        show(
            &format!("replay of {replay} buffered events"),
            &part.stop(replay).await,
            &floor,
        );

        // 6. One event a second.
        let mut part = Part::new();
        part.count().await;
        part.paced(slow, Duration::from_secs(1)).await;
        show("one a second", &part.stop(slow).await, &floor);
    });
}
