//! What the benchmarks share: start the release binary, drive HTTP over
//! loopback with keep-alive clients, read metrics and RSS.

#![allow(dead_code)]

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

pub const TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";

pub struct Daemon {
    pub child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// `storage.dir` of this daemon.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts herald with an admin account (TOKEN) and `extra` config.
pub fn start(extra: &str) -> Daemon {
    // HERALD_BENCH_DIR: another file system for the data (a flash card, a fresh ext4).
    let dir = match std::env::var("HERALD_BENCH_DIR") {
        Ok(base) => tempfile::tempdir_in(base).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "{extra}\n[server]\nlisten = \"127.0.0.1:0\"\n[storage]\ndir = \"{}\"\n\n[[accounts]]\nname = \"bench\"\n\
             email = \"b@example.com\"\nrole = \"admin\"\ntoken_sha256 = \"{}\"\n",
            dir.path().join("data").display(),
            hex::encode(Sha256::digest(TOKEN.as_bytes()))
        ),
    )
    .unwrap();
    // HERALD_BIN runs another build (another opt-level, say) in the same bench.
    let bin = std::env::var("HERALD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_herald").to_string());
    let mut child = Command::new(bin)
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
    std::thread::sleep(Duration::from_millis(300));
    Daemon { child, addr, _dir: dir }
}

/// CPU time `pid` has used so far (user + system), in microseconds: what a
/// delivery costs herald is steadier across runs on a shared machine than
/// how fast it goes.
pub fn cpu_us(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    ticks * 10_000
}

pub fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub struct Load {
    pub requests: u64,
    pub per_sec: f64,
    pub latencies_us: Vec<u64>,
}

impl Load {
    pub fn pct(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p)
    }
}

/// The `p` quantile of sorted microseconds, in milliseconds.
pub fn percentile(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[i] as f64 / 1000.0
}

pub type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// `clients` keep-alive connections sending `make(i)` back to back for `secs`.
pub async fn drive(addr: &str, clients: usize, secs: f64, make: MakeRequest) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (addr, stop, make) = (addr.to_string(), stop.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(&addr).await;
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

pub async fn connect(addr: &str) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// One request on a fresh connection; the status and body.
pub async fn call(addr: &str, req: Request<Full<Bytes>>) -> (u16, String) {
    let mut sender = connect(addr).await;
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub fn api(addr: &str, method: &str, path: &str, body: String) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

pub async fn metric(addr: &str, name: &str) -> f64 {
    let req = Request::get("/metrics")
        .header("host", addr)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (_, text) = call(addr, req).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// A receiver on 127.0.0.1: each request's path and body go to `handle`,
/// whose status is the answer (body "ok"). Returns its address.
pub async fn receiver<F, Fut>(handle: F) -> String
where
    F: Fn(String, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = u16> + Send + 'static,
{
    serve(move |path, body| {
        let status = handle(path, body);
        async move { (status.await, Bytes::from_static(b"ok")) }
    })
    .await
}

/// A server on 127.0.0.1 that answers every request 200 with `body`.
pub async fn body_server(body: Bytes) -> String {
    serve(move |_, _| {
        let body = body.clone();
        async move { (200, body) }
    })
    .await
}

/// Serves `handle`'s (status, JSON body) for each request's path and body.
async fn serve<F, Fut>(handle: F) -> String
where
    F: Fn(String, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = (u16, Bytes)> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handle = handle.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let handle = handle.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let (status, answer) = handle(path, body).await;
                        let mut r = hyper::Response::new(Full::new(answer));
                        *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        r.headers_mut().insert(
                            "content-type",
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The environment variable `name` parsed, else `default`.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Waits until `done`, at most `within`; how long it took.
pub async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    started.elapsed()
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}
