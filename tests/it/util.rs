//! Helpers for the integration tests: start the real `herald` binary on
//! 127.0.0.1 port 0 with a temporary data directory, talk to it over HTTP,
//! and print its log when a test fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub const ADMIN: &str = "admin-token-0123456789abcdef0123456789abcdef";
pub const INTEGRATION: &str = "integration-token-0123456789abcdef0123456789";
pub const TECHNICIAN: &str = "technician-token-0123456789abcdef0123456789";

/// Three accounts, one per role, with the tokens above.
pub fn accounts() -> String {
    let mut out = String::new();
    for (name, role, token) in [
        ("ops", "admin", ADMIN),
        ("erp", "integration", INTEGRATION),
        ("tech", "technician", TECHNICIAN),
    ] {
        out.push_str(&format!(
            "[[accounts]]\nname = \"{name}\"\nemail = \"{name}@example.com\"\nrole = \"{role}\"\ntoken_sha256 = \"{}\"\n\n",
            hex::encode(Sha256::digest(token.as_bytes()))
        ));
    }
    out
}

pub struct Daemon {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub log: PathBuf,
    config: PathBuf,
    clock: Option<String>,
    rust_log: String,
    /// Environment of the next `spawn`, beside the usual.
    env: Vec<(String, String)>,
}

pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Daemon {
    /// Starts herald with `extra` appended to a config that listens on port 0
    /// and stores into a fresh temporary directory.
    pub fn start(extra: &str) -> Daemon {
        Daemon::start_with_clock(extra, None)
    }

    /// Same, serving HTTPS (the config names tls_cert and tls_key); readiness
    /// is checked over TLS by the test itself.
    pub fn start_tls(extra: &str) -> Daemon {
        let mut d = Daemon::prepare(extra, None);
        let lines_before = d.log_text().lines().count();
        d.launch();
        let addr = d.wait_for_log(lines_before, "listening on ");
        d.wait_for_log(lines_before, "herald is ready");
        d.base = format!("https://{addr}");
        d
    }

    /// Same, with the manual clock set to `start` (RFC 3339).
    pub fn start_with_clock(extra: &str, clock: Option<&str>) -> Daemon {
        let mut d = Daemon::prepare(extra, clock);
        d.spawn();
        d
    }

    /// The daemon's config and directory, not started: a test may fill the
    /// data dir first (an upgrade from a fixture), then `spawn`.
    pub fn prepare_with_clock(extra: &str, clock: Option<&str>) -> Daemon {
        Daemon::prepare(extra, clock)
    }

    fn prepare(extra: &str, clock: Option<&str>) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("herald.toml");
        let data = dir.path().join("data");
        // Merge the test's settings over a config that listens on port 0 and
        // stores into the temporary directory.
        let mut table: toml::Table = extra.parse().expect("the test's config is TOML");
        let server = table.entry("server").or_insert(toml::Value::Table(Default::default()));
        let server = server.as_table_mut().unwrap();
        server.entry("listen").or_insert("127.0.0.1:0".into());
        server.entry("drain_timeout").or_insert("5s".into());
        let storage = table.entry("storage").or_insert(toml::Value::Table(Default::default()));
        storage
            .as_table_mut()
            .unwrap()
            .entry("dir")
            .or_insert(data.display().to_string().into());
        std::fs::write(&config, toml::to_string(&table).unwrap()).unwrap();
        Daemon {
            child: None,
            log: dir.path().join("herald.log"),
            dir,
            base: String::new(),
            config,
            clock: clock.map(str::to_string),
            rust_log: "info,herald=debug".into(),
            env: Vec::new(),
        }
    }

    /// The `RUST_LOG` of the next `spawn`.
    pub fn set_rust_log(&mut self, value: &str) {
        self.rust_log = value.to_string();
    }

    /// Sets (or with `None` removes) a variable of the next `spawn`'s environment.
    pub fn set_env(&mut self, name: &str, value: Option<&str>) {
        self.env.retain(|(n, _)| n != name);
        if let Some(v) = value {
            self.env.push((name.to_string(), v.to_string()));
        }
    }

    /// Starts the process; true once it is ready, false if it died first
    /// (a start that a test hook makes crash).
    pub fn try_spawn(&mut self) -> bool {
        let lines_before = self.log_text().lines().count();
        self.launch();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let text = self.log_text();
            let addr = text
                .lines()
                .skip(lines_before)
                .find_map(|l| l.split("listening on ").nth(1))
                .and_then(|rest| rest.split_whitespace().next());
            if let Some(addr) = addr
                && self.base != format!("http://{addr}")
            {
                self.base = format!("http://{addr}");
            }
            if addr.is_some()
                && try_request_with(&format!("{}/readyz", self.base), "GET", &[], None).is_ok_and(|r| r.status == 200)
            {
                return true;
            }
            if self.child.as_mut().unwrap().try_wait().unwrap().is_some() {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.fail("herald neither became ready nor died");
    }

    /// Where the manual clock starts at the next `spawn` (a restart later in time).
    pub fn set_clock(&mut self, start: &str) {
        self.clock = Some(start.to_string());
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// (Re)starts the process on the same config and data; waits until ready.
    pub fn spawn(&mut self) {
        let lines_before = self.log_text().lines().count();
        self.launch();
        let addr = self.wait_for_log(lines_before, "listening on ");
        self.base = format!("http://{addr}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.get("/readyz", None).status == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.fail("herald did not become ready");
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", &self.rust_log)
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("HERALD_TEST_CLOCK")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(c) = &self.clock {
            cmd.env("HERALD_TEST_CLOCK", c);
        }
        cmd.env_remove("HERALD_TEST_CRASH_AT")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        self.child = Some(cmd.spawn().expect("starting herald"));
    }

    fn wait_for_log(&mut self, skip: usize, marker: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let text = self.log_text();
            for line in text.lines().skip(skip) {
                if let Some(rest) = line.split(marker).nth(1) {
                    return rest.split_whitespace().next().unwrap_or("").to_string();
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.fail(&format!("herald exited early with {status}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.fail(&format!("no {marker:?} in the log"));
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics after printing the daemon's log.
    pub fn fail(&self, why: &str) -> ! {
        eprintln!("----- herald log -----\n{}\n----------------------", self.log_text());
        panic!("{why}");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn kill9(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to end in any way; whether it did.
    pub fn wait_gone(&mut self, within: Duration) -> bool {
        let _ = self.wait_exit(within);
        self.child.is_none()
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().unwrap();
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn request(&self, method: &str, path: &str, auth: Option<&str>, body: Option<(&str, &str)>) -> Reply {
        request(&format!("{}{path}", self.base), method, auth, body)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.request("GET", path, token.map(|t| format!("Bearer {t}")).as_deref(), None)
    }

    pub fn post(&self, path: &str, token: Option<&str>, json: &str) -> Reply {
        self.request(
            "POST",
            path,
            token.map(|t| format!("Bearer {t}")).as_deref(),
            Some(("application/json", json)),
        )
    }

    /// Moves the manual clock forward.
    pub fn advance(&self, by: &str) {
        let r = self.post("/v1/test/clock", Some(ADMIN), &format!("{{\"advance\": \"{by}\"}}"));
        if r.status != 200 {
            self.fail(&format!("advancing the clock: {} {}", r.status, r.body));
        }
    }

    /// Steps the wall clock alone (`"+7d"`, `"-1h"`), as NTP or an operator
    /// steps the system clock: no real time passes.
    pub fn step(&self, by: &str) {
        let r = self.post("/v1/test/clock", Some(ADMIN), &format!("{{\"step\": \"{by}\"}}"));
        if r.status != 200 {
            self.fail(&format!("stepping the clock: {} {}", r.status, r.body));
        }
    }

    /// The log lines of the newest execution of `interface`; `query` filters
    /// them (`"?category=cascade"`).
    pub fn newest_logs(&self, interface: &str, query: &str) -> serde_json::Value {
        let list = self
            .get(&format!("/v1/executions?interface={interface}"), Some(ADMIN))
            .json();
        let Some(id) = list["executions"][0]["id"].as_str() else {
            self.fail(&format!("no execution of {interface}: {list}"));
        };
        self.get(&format!("/v1/executions/{id}/logs{query}"), Some(ADMIN))
            .json()
    }

    /// The names of the stored events, in order.
    pub fn event_names(&self) -> Vec<String> {
        self.get("/v1/events?limit=1000", Some(ADMIN)).json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap().to_string())
            .collect()
    }

    /// Polls `check` until it returns Some, for at most `within`.
    pub fn eventually<T>(&self, within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = check() {
                return v;
            }
            if Instant::now() > deadline {
                self.fail(&format!("timed out waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- herald log -----\n{}\n----------------------", self.log_text());
        }
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        // A 303 after a button is what the tests look at, not where it leads.
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

pub fn request(url: &str, method: &str, auth: Option<&str>, body: Option<(&str, &str)>) -> Reply {
    let auth: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    request_with(url, method, &auth, body)
}

/// [`request`] with any headers.
pub fn request_with(url: &str, method: &str, headers: &[(&str, &str)], body: Option<(&str, &str)>) -> Reply {
    try_request_with(url, method, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// [`request_with`], with a failed exchange (no answer) as an error.
pub fn try_request_with(
    url: &str,
    method: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &str)>,
) -> Result<Reply, String> {
    let agent = agent();
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let result = match body {
        Some((ctype, text)) => {
            let req = builder.header("content-type", ctype).body(text.to_string()).unwrap();
            agent.run(req)
        }
        None => agent.run(builder.body(()).unwrap()),
    };
    let mut resp = result.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    Ok(Reply { status, body, headers })
}

/// A private CA (its PEM) and a leaf certificate for `localhost` signed by
/// it, with the leaf's key: for receivers and mail servers behind an
/// on-premise CA.
pub fn private_ca() -> (
    String,
    rustls::pki_types::CertificateDer<'static>,
    rustls::pki_types::PrivateKeyDer<'static>,
) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &Issuer::new(ca_params, ca_key))
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    (ca_cert.pem(), leaf.der().clone(), key)
}

/// Runs the binary with `args`, returning (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], cwd: Option<&Path>) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    cmd.args(args).env_remove("HERALD_CONFIG").env_remove("HERALD_TOKEN");
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Reads lines from a child's pipe into a string (used for CLI output).
pub fn read_all(r: impl std::io::Read) -> String {
    BufReader::new(r)
        .lines()
        .map_while(Result::ok)
        .collect::<Vec<_>>()
        .join("\n")
}

/// What the files under `dir` take on the disk, as `du` counts it (their
/// allocated blocks: a file with holes takes less than its length).
pub fn du(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => du(&e.path()),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}
