//! The configuration file: its defaults, its parsing and its validation.
//!
//! Defaults live here in code; the TOML file overrides them. Parsing goes in
//! two steps: serde reads the file into `Raw*` structs (unknown keys are
//! errors, so a typo never passes silently, and each value type checks its own
//! syntax), then [`Config::from_raw`] checks what needs more than one value.
//! Every error names the line and the dotted key, because the person reading it
//! is on a console at a customer site with the file open in an editor.

mod error;
mod interfaces;
mod lines;
mod raw;
mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use self::error::ConfigError;
pub use self::interfaces::{Interface, InterfaceKind, Schedule, valid_secret};
use self::lines::{key_at, line_of, line_of_nth};
use self::raw::{RawConfig, RawSmtp, default_mail_retention, default_retry_schedule};
pub use self::values::{JournalLevel, Role, Security, parse_duration};

/// Exit code for an invalid configuration (sysexits' EX_CONFIG). The unit file
/// lists it in `RestartPreventExitStatus=` so systemd does not restart-loop.
pub const EX_CONFIG: i32 = 78;

/// Where `herald serve` looks when neither `--config` nor `$HERALD_CONFIG` is given.
pub const SYSTEM_PATH: &str = "/etc/herald/herald.toml";

#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub storage: Storage,
    pub general: General,
    pub accounts: Vec<AccountConfig>,
    /// `None` without an `[smtp]` table: mails then stay queued.
    pub smtp: Option<Smtp>,
    pub mail: MailPolicy,
    pub alerts: Alerts,
    pub webhooks: Webhooks,
    pub notifications: Notifications,
    /// The external systems herald calls (`[[interfaces]]`).
    pub interfaces: Vec<Interface>,
    /// When the pull and push interfaces run (`[[schedules]]`).
    pub schedules: Vec<Schedule>,
    /// The file this came from, kept so SIGHUP can read it again.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: SocketAddr,
    pub max_body: u64,
    pub tls: Option<TlsFiles>,
    pub metrics_auth: bool,
    pub drain_timeout: Duration,
    pub public_url: String,
    /// How long a read or a write may wait on a client: a body that does
    /// not come, an answer nobody reads, an idle keep-alive connection.
    pub body_timeout: Duration,
    /// Open connections at most (a few more get a short deadline).
    pub max_connections: usize,
    /// Wrong credentials from one address within a minute before its wrong
    /// ones are refused with 429 for a while.
    pub wrong_credentials: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Storage {
    pub dir: PathBuf,
    pub max_size: u64,
    pub retention: Duration,
    pub cache_size: u64,
    pub max_event_size: u64,
}

#[derive(Debug, Clone)]
pub struct General {
    pub name: String,
    pub timezone: jiff::tz::TimeZone,
    /// Execution log lines of this level and above are also journal
    /// entries (under systemd); read at start.
    pub journal: JournalLevel,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccountConfig {
    pub name: String,
    pub email: String,
    pub role: Role,
    /// Lower-case hex of SHA-256 of the token; the token itself is never stored.
    pub token_sha256: [u8; 32],
}

#[derive(Debug, Clone)]
pub struct Smtp {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from: String,
    pub timeout: Duration,
    /// PEM roots of `smtp.ca_file`, for a mail server with a private CA or
    /// a self-signed certificate; trusted besides the public roots.
    pub ca_pem: Option<Vec<u8>>,
}

/// How the outbox retries and how long it keeps trying (from `[smtp]`).
#[derive(Debug, Clone)]
pub struct MailPolicy {
    /// Waits between attempts; the last one repeats.
    pub retry_schedule: Vec<Duration>,
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct Alerts {
    pub debounce: Duration,
    pub max_delay: Duration,
    pub system_recipients: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Webhooks {
    /// Each delivery attempt may take this long.
    pub timeout: Duration,
    /// Wait before each attempt of one event: the first is usually zero
    /// (at once); the last repeats. Each wait gets ±20 % jitter.
    pub retry_schedule: Vec<Duration>,
    /// Failing without any success for this long deactivates a webhook.
    pub disable_after: Duration,
    /// How long a deactivated webhook keeps its events for a replay.
    pub buffer_for: Duration,
    /// Extra PEM roots for receivers behind an on-premise CA.
    pub ca_file: Option<PathBuf>,
    /// Deliveries in flight at once to one receiver (host and port).
    pub max_per_host: usize,
}

/// Change notifications (`[notifications]`): GET pings, then a change query.
#[derive(Debug, Clone, PartialEq)]
pub struct Notifications {
    /// A ping goes this long after the event that plans it; at most one per
    /// notification per `delay`.
    pub delay: Duration,
    /// Each ping may take this long.
    pub timeout: Duration,
    /// Pings sent without a change query before a notification is suspended.
    pub max_unacked: u32,
    /// Events a change feed has not read are kept at most this long.
    pub keep_unread: Duration,
}

/// A password: never printed, not even by `{:?}`.
#[derive(Clone, PartialEq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Config {
    /// The built-in defaults, as `herald serve` uses them without a file.
    pub fn defaults() -> Config {
        Config::from_raw(RawConfig::default(), "", None).expect("built-in defaults are valid")
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            line: None,
            key: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        Config::parse(&text, Some(path.to_path_buf()))
    }

    pub fn parse(text: &str, source: Option<PathBuf>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (line, key) = match e.span() {
                Some(span) => {
                    let (line, key) = key_at(text, span.start);
                    (Some(line), key)
                }
                None => (None, String::new()),
            };
            ConfigError {
                line,
                key,
                message: e.message().trim().to_string(),
            }
        })?;
        Config::from_raw(raw, text, source)
    }

    fn from_raw(raw: RawConfig, text: &str, source: Option<PathBuf>) -> Result<Config, ConfigError> {
        let err = |section: &str, key: &str, message: String| ConfigError {
            line: line_of(text, section, key),
            key: format!("{section}.{key}"),
            message,
        };
        let s = raw.server;
        let tls = match (s.tls_cert, s.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (Some(_), None) => {
                return Err(err(
                    "server",
                    "tls_cert",
                    "is set but server.tls_key is not; set both to serve HTTPS, or neither".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(err(
                    "server",
                    "tls_key",
                    "is set but server.tls_cert is not; set both to serve HTTPS, or neither".into(),
                ));
            }
        };
        if !(1024..=(256 << 20)).contains(&s.max_body.0) {
            return Err(err(
                "server",
                "max_body",
                format!("{} is out of range; use between 1KiB and 256MiB", s.max_body),
            ));
        }
        if s.drain_timeout.0 > Duration::from_secs(60) {
            return Err(err(
                "server",
                "drain_timeout",
                format!(
                    "{} is too long; systemd stops herald after 90s, use at most 60s",
                    s.drain_timeout
                ),
            ));
        }
        if !(16..=65536).contains(&s.max_connections) {
            return Err(err(
                "server",
                "max_connections",
                format!("{} is out of range; use 16 to 65536", s.max_connections),
            ));
        }
        if !(1..=1_000_000).contains(&s.wrong_credentials) {
            return Err(err(
                "server",
                "wrong_credentials",
                format!("{} is out of range; use 1 to 1000000", s.wrong_credentials),
            ));
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = match s.public_url {
            Some(url) => url.0.trim_end_matches('/').to_string(),
            None => format!("{scheme}://{}", s.listen.0),
        };

        let st = raw.storage;
        let dir = match st.dir {
            Some(dir) => dir,
            None => match std::env::var_os("STATE_DIRECTORY") {
                // systemd may pass several colon-separated directories; the first is ours.
                Some(v) => PathBuf::from(v.to_string_lossy().split(':').next().unwrap_or("herald-data")),
                None => PathBuf::from("herald-data"),
            },
        };
        if st.max_size.0 < (256 << 10) {
            return Err(err(
                "storage",
                "max_size",
                format!("{} is too small; use at least 256KiB", st.max_size),
            ));
        }
        if st.cache_size.0 < (1 << 20) {
            return Err(err(
                "storage",
                "cache_size",
                format!("{} is too small; use at least 1MiB", st.cache_size),
            ));
        }
        if st.max_event_size.0 < 1024 || st.max_event_size.0 > s.max_body.0 {
            return Err(err(
                "storage",
                "max_event_size",
                format!(
                    "{} is out of range; use between 1KiB and server.max_body ({})",
                    st.max_event_size, s.max_body
                ),
            ));
        }

        let g = raw.general;
        let timezone = match g.timezone {
            Some(name) => jiff::tz::TimeZone::get(&name).map_err(|_| {
                err(
                    "general",
                    "timezone",
                    format!("{name:?} is not a known IANA time zone like \"Europe/Zurich\""),
                )
            })?,
            None => jiff::tz::TimeZone::system(),
        };
        let name = match g.name {
            Some(name) if name.trim().is_empty() || name.len() > 64 => {
                return Err(err("general", "name", "must be 1 to 64 characters".into()));
            }
            Some(name) => name,
            None => hostname(),
        };

        let mut accounts: Vec<AccountConfig> = Vec::with_capacity(raw.accounts.len());
        for (i, a) in raw.accounts.into_iter().enumerate() {
            let at = |key: &str, message: String| ConfigError {
                line: line_of_nth(text, "[[accounts]]", i, key),
                key: format!("accounts[{i}].{key}"),
                message,
            };
            if !interfaces::valid_name(&a.name) {
                return Err(at(
                    "name",
                    format!("{:?} must be 1 to 64 characters of A-Z a-z 0-9 . _ -", a.name),
                ));
            }
            if accounts.iter().any(|b| b.name == a.name) {
                return Err(at(
                    "name",
                    format!("{:?} is declared twice; account names must be unique", a.name),
                ));
            }
            if !valid_email(&a.email) {
                return Err(at(
                    "email",
                    format!("{:?} is not an e-mail address like ops@example.com", a.email),
                ));
            }
            let mut hash = [0u8; 32];
            if hex::decode_to_slice(&a.token_sha256, &mut hash).is_err() {
                return Err(at(
                    "token_sha256",
                    "must be 64 hex digits: the SHA-256 of the token, as `herald token` prints it".into(),
                ));
            }
            accounts.push(AccountConfig {
                name: a.name,
                email: a.email,
                role: a.role,
                token_sha256: hash,
            });
        }

        let (smtp, mail) = smtp_from_raw(raw.smtp, &err)?;
        let a = raw.alerts;
        if let Err(m) = check_debounce(a.debounce.0, cfg!(feature = "test-hooks")) {
            return Err(err("alerts", "debounce", m));
        }
        if a.max_delay.0 < a.debounce.0 {
            return Err(err(
                "alerts",
                "max_delay",
                format!(
                    "{} is shorter than alerts.debounce ({}); it caps the debounce, so make it longer",
                    a.max_delay, a.debounce
                ),
            ));
        }
        for (i, r) in a.system_recipients.iter().enumerate() {
            if !valid_email(r) {
                return Err(err(
                    "alerts",
                    "system_recipients",
                    format!("entry {i}: {r:?} is not an e-mail address"),
                ));
            }
        }
        let alerts = Alerts {
            debounce: a.debounce.0,
            max_delay: a.max_delay.0,
            system_recipients: a.system_recipients,
        };

        let w = raw.webhooks;
        if w.retry_schedule.is_empty() {
            return Err(err(
                "webhooks",
                "retry_schedule",
                "is empty; give at least one wait like [\"0s\", \"5s\"]".into(),
            ));
        }
        if !(1..=256).contains(&w.max_per_host) {
            return Err(err(
                "webhooks",
                "max_per_host",
                format!("{} is out of range; use 1 to 256", w.max_per_host),
            ));
        }
        if let Some(ca) = &w.ca_file {
            crate::net::load_roots(ca).map_err(|e| err("webhooks", "ca_file", e))?;
        }
        let webhooks = Webhooks {
            timeout: w.timeout.0,
            retry_schedule: w.retry_schedule.iter().map(|d| d.0).collect(),
            disable_after: w.disable_after.0,
            buffer_for: w.buffer_for.0,
            ca_file: w.ca_file,
            max_per_host: w.max_per_host,
        };

        let n = raw.notifications;
        if !(1..=100_000).contains(&n.max_unacked) {
            return Err(err(
                "notifications",
                "max_unacked",
                format!("{} is out of range; use 1 to 100000", n.max_unacked),
            ));
        }
        let notifications = Notifications {
            delay: n.delay.0,
            timeout: n.timeout.0,
            max_unacked: n.max_unacked,
            keep_unread: n.keep_unread.0,
        };

        let (interfaces, schedules) = interfaces::from_raw(raw.interfaces, raw.schedules, text)?;

        Ok(Config {
            server: Server {
                listen: s.listen.0,
                max_body: s.max_body.0,
                tls,
                metrics_auth: s.metrics_auth,
                drain_timeout: s.drain_timeout.0,
                public_url,
                body_timeout: s.body_timeout.0,
                max_connections: s.max_connections,
                wrong_credentials: s.wrong_credentials,
            },
            storage: Storage {
                dir,
                max_size: st.max_size.0,
                retention: st.retention.0,
                cache_size: st.cache_size.0,
                max_event_size: st.max_event_size.0,
            },
            general: General {
                name,
                timezone,
                journal: g.journal,
            },
            accounts,
            smtp,
            mail,
            alerts,
            webhooks,
            notifications,
            interfaces,
            schedules,
            source,
        })
    }
}

type ErrAt<'a> = dyn Fn(&str, &str, String) -> ConfigError + 'a;

fn smtp_from_raw(raw: Option<RawSmtp>, err: &ErrAt<'_>) -> Result<(Option<Smtp>, MailPolicy), ConfigError> {
    let Some(raw) = raw else {
        let retry_schedule = default_retry_schedule().iter().map(|d| d.0).collect();
        return Ok((
            None,
            MailPolicy {
                retry_schedule,
                retention: default_mail_retention().0,
            },
        ));
    };
    let policy = MailPolicy {
        retry_schedule: raw.retry_schedule.iter().map(|d| d.0).collect(),
        retention: raw.mail_retention.0,
    };
    if policy.retry_schedule.is_empty() {
        return Err(err(
            "smtp",
            "retry_schedule",
            "is empty; give at least one wait like [\"30s\", \"5m\"]".into(),
        ));
    }
    let host = raw.host.filter(|h| !h.trim().is_empty()).ok_or_else(|| {
        err(
            "smtp",
            "host",
            "is missing; name the mail relay, like host = \"smtp.example.com\"".into(),
        )
    })?;
    let from = raw.from.ok_or_else(|| {
        err(
            "smtp",
            "from",
            "is missing; set the sender address, like from = \"herald@example.com\"".into(),
        )
    })?;
    if from.parse::<lettre::message::Mailbox>().is_err() {
        return Err(err(
            "smtp",
            "from",
            format!("{from:?} is not an address like herald@example.com or \"Herald <herald@example.com>\""),
        ));
    }
    let password = match (raw.password, raw.password_file) {
        (Some(_), Some(_)) => {
            return Err(err(
                "smtp",
                "password_file",
                "and smtp.password are both set; keep one".into(),
            ));
        }
        (Some(p), None) => Some(Secret(p)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| err("smtp", "password_file", format!("cannot read {}: {e}", path.display())))?;
            Some(Secret(text.trim_end_matches(['\r', '\n']).to_string()))
        }
        (None, None) => None,
    };
    if password.is_some() != raw.username.is_some() {
        return Err(err(
            "smtp",
            "username",
            "and a password go together; set both or neither".into(),
        ));
    }
    let security = raw.security.unwrap_or(Security::Starttls);
    let port = raw.port.unwrap_or(match security {
        Security::None => 25,
        Security::Starttls => 587,
        Security::Tls => 465,
    });
    let ca_pem = match &raw.ca_file {
        Some(path) => {
            crate::net::load_roots(path).map_err(|e| err("smtp", "ca_file", e))?;
            Some(
                std::fs::read(path)
                    .map_err(|e| err("smtp", "ca_file", format!("cannot read {}: {e}", path.display())))?,
            )
        }
        None => None,
    };
    let smtp = Smtp {
        host,
        port,
        security,
        username: raw.username,
        password,
        from,
        timeout: raw.timeout.0,
        ca_pem,
    };
    Ok((Some(smtp), policy))
}

pub fn valid_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && s.len() <= 254
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        }
        None => false,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "herald".to_string())
}

/// Error mails gather for at least a minute (a portatour lesson: a mail per
/// failed call floods the admins). Test builds may gather for less, so that
/// tests need not wait.
const MIN_DEBOUNCE: Duration = Duration::from_secs(60);

fn check_debounce(debounce: Duration, test_build: bool) -> Result<(), String> {
    if debounce < MIN_DEBOUNCE && !test_build {
        return Err(format!(
            "{} is too short: error mails gather for at least 60s, so that a storm of failures is one \
             mail, not hundreds; use 60s or more",
            humantime::format_duration(debounce)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_mails_gather_for_at_least_a_minute_outside_test_builds() {
        let e = check_debounce(Duration::from_secs(30), false).unwrap_err();
        assert!(e.contains("30s is too short") && e.contains("60s or more"), "{e}");
        assert!(check_debounce(Duration::from_secs(60), false).is_ok());
        assert!(
            check_debounce(Duration::from_secs(1), true).is_ok(),
            "tests may gather for less"
        );
    }

    #[test]
    fn defaults_are_loopback_and_small() {
        let c = Config::parse("", None).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8470");
        assert_eq!(c.server.max_body, 1 << 20);
        assert_eq!(c.storage.cache_size, 16 << 20);
        assert_eq!(c.storage.retention, Duration::from_secs(5 * 86400));
        assert_eq!(c.server.public_url, "http://127.0.0.1:8470");
    }

    #[test]
    fn bad_listen_names_line_and_key() {
        let e = Config::parse("[server]\nlisten = \"not-an-address\"\n", None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config line 2: server.listen: \"not-an-address\" is not an address like 127.0.0.1:8470"
        );
    }

    #[test]
    fn unknown_key_is_an_error() {
        let e = Config::parse("[storage]\nretention = \"5d\"\nretension = \"6d\"\n", None).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key, "storage.retension");
        assert!(e.message.contains("unknown field"), "{e}");
    }

    #[test]
    fn post_checks_find_their_line() {
        let e = Config::parse("[server]\n\ntls_cert = \"/x.pem\"\n", None).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert_eq!(e.key, "server.tls_cert");
        let e = Config::parse("[general]\ntimezone = \"Mars/Olympus\"\n", None).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(2), "general.timezone"));
    }

    #[test]
    fn accounts_are_checked_one_by_one() {
        let good = format!("token_sha256 = \"{}\"", "ab".repeat(32));
        let text = format!(
            "[[accounts]]\nname = \"a\"\nemail = \"a@x.io\"\nrole = \"admin\"\n{good}\n\
             [[accounts]]\nname = \"b\"\nemail = \"nope\"\nrole = \"technician\"\n{good}\n"
        );
        let e = Config::parse(&text, None).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(8), "accounts[1].email"));
        let e = Config::parse(&text.replace("admin", "boss"), None).unwrap_err();
        assert_eq!(e.line, Some(4));
        assert!(e.message.contains("boss"), "{e}");
    }

    #[test]
    fn template_parses_and_states_the_defaults() {
        let t = Config::parse(include_str!("../../config/herald.toml"), None).unwrap();
        let d = Config::defaults();
        assert_eq!(t.server.listen, d.server.listen);
        assert_eq!(t.server.max_body, d.server.max_body);
        assert_eq!(t.server.metrics_auth, d.server.metrics_auth);
        assert_eq!(t.server.drain_timeout, d.server.drain_timeout);
        assert_eq!(t.server.body_timeout, d.server.body_timeout);
        assert_eq!(t.server.max_connections, d.server.max_connections);
        assert_eq!(t.storage.max_size, d.storage.max_size);
        assert_eq!(t.storage.retention, d.storage.retention);
        assert_eq!(t.storage.cache_size, d.storage.cache_size);
        assert_eq!(t.storage.max_event_size, d.storage.max_event_size);
        assert_eq!(t.alerts.debounce, d.alerts.debounce);
        assert_eq!(t.alerts.max_delay, d.alerts.max_delay);
        assert_eq!(t.webhooks.timeout, d.webhooks.timeout);
        assert_eq!(t.webhooks.retry_schedule, d.webhooks.retry_schedule);
        assert_eq!(t.webhooks.disable_after, d.webhooks.disable_after);
        assert_eq!(t.webhooks.buffer_for, d.webhooks.buffer_for);
        assert_eq!(t.webhooks.max_per_host, d.webhooks.max_per_host);
        assert_eq!(t.notifications, d.notifications);
        assert_eq!(d.notifications.delay, Duration::from_secs(60));
        assert_eq!(d.notifications.max_unacked, 100);
        assert!(t.accounts.is_empty());
    }

    #[test]
    fn smtp_defaults_and_checks() {
        let c = Config::parse(
            "[smtp]\nhost = \"mail.example.com\"\nfrom = \"herald@example.com\"\n",
            None,
        )
        .unwrap();
        let smtp = c.smtp.unwrap();
        assert_eq!((smtp.port, smtp.security), (587, Security::Starttls));
        assert_eq!(c.mail.retry_schedule.len(), 5);
        assert_eq!(c.alerts.debounce, Duration::from_secs(60));
        assert_eq!(c.alerts.max_delay, Duration::from_secs(900));
        let e = Config::parse("[smtp]\nfrom = \"herald@example.com\"\n", None).unwrap_err();
        assert_eq!(e.key, "smtp.host");
        let e = Config::parse("[smtp]\nhost = \"h\"\nfrom = \"x\"\nsecurity = \"ssl\"\n", None).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(4), "smtp.security"));
        let e = Config::parse("[smtp]\nhost = \"h\"\nfrom = \"a@b.io\"\nretry_shedule = []\n", None).unwrap_err();
        assert_eq!(e.key, "smtp.retry_shedule");
        let e = Config::parse("[alerts]\ndebounce = \"10m\"\nmax_delay = \"5m\"\n", None).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(3), "alerts.max_delay"));
        let with_password = "[smtp]\nhost = \"h\"\nfrom = \"a@b.io\"\nusername = \"u\"\npassword = \"hunter2\"\n";
        let c = Config::parse(with_password, None).unwrap();
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "the password never shows in Debug output"
        );
    }

    #[test]
    fn durations_and_sizes() {
        let c = Config::parse("[storage]\nretention = \"2h\"\nmax_size = \"2MiB\"\n", None).unwrap();
        assert_eq!(c.storage.retention, Duration::from_secs(7200));
        assert_eq!(c.storage.max_size, 2 << 20);
        let e = Config::parse("[storage]\nretention = \"0s\"\n", None).unwrap_err();
        assert_eq!(e.key, "storage.retention");
    }
}
