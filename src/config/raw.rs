//! The file as serde reads it: every table with `deny_unknown_fields`, so
//! a typo never passes silently, and value types that check their own
//! syntax where they are read, so the error points at the value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::interfaces::{RawInterface, RawSchedule};
use super::values::{Dur, JournalLevel, Role, Security, Size};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    pub(super) storage: RawStorage,
    pub(super) general: RawGeneral,
    pub(super) accounts: Vec<RawAccount>,
    pub(super) smtp: Option<RawSmtp>,
    pub(super) alerts: RawAlerts,
    pub(super) webhooks: RawWebhooks,
    pub(super) notifications: RawNotifications,
    pub(super) interfaces: Vec<RawInterface>,
    pub(super) schedules: Vec<RawSchedule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawNotifications {
    pub(super) delay: Dur,
    pub(super) timeout: Dur,
    pub(super) max_unacked: u32,
    pub(super) keep_unread: Dur,
}

impl Default for RawNotifications {
    fn default() -> Self {
        RawNotifications {
            delay: Dur(Duration::from_secs(60)),
            timeout: Dur(Duration::from_secs(15)),
            max_unacked: 100,
            keep_unread: Dur(Duration::from_secs(7 * 86400)),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawWebhooks {
    pub(super) timeout: Dur,
    pub(super) retry_schedule: Vec<ZeroOk>,
    pub(super) disable_after: Dur,
    pub(super) buffer_for: Dur,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) max_per_host: usize,
}

impl Default for RawWebhooks {
    fn default() -> Self {
        let s = |n| ZeroOk(Duration::from_secs(n));
        RawWebhooks {
            timeout: Dur(Duration::from_secs(15)),
            retry_schedule: vec![s(0), s(5), s(300), s(1800), s(7200), s(18000), s(36000), s(36000)],
            disable_after: Dur(Duration::from_secs(86400)),
            buffer_for: Dur(Duration::from_secs(5 * 86400)),
            ca_file: None,
            max_per_host: 16,
        }
    }
}

/// A duration where zero is allowed (\"0s\": at once).
#[derive(Clone, Copy)]
pub(super) struct ZeroOk(pub(super) Duration);

impl<'de> Deserialize<'de> for ZeroOk {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(ZeroOk)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a duration like \"0s\", \"5s\" or \"2h\"")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSmtp {
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) security: Option<Security>,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) from: Option<String>,
    pub(super) ca_file: Option<PathBuf>,
    #[serde(default = "default_smtp_timeout")]
    pub(super) timeout: Dur,
    #[serde(default = "default_retry_schedule")]
    pub(super) retry_schedule: Vec<Dur>,
    #[serde(default = "default_mail_retention")]
    pub(super) mail_retention: Dur,
}

pub(super) fn default_retry_schedule() -> Vec<Dur> {
    [30, 60, 300, 900, 3600]
        .into_iter()
        .map(|n| Dur(Duration::from_secs(n)))
        .collect()
}

pub(super) fn default_mail_retention() -> Dur {
    Dur(Duration::from_secs(7 * 86400))
}

pub(super) fn default_smtp_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAlerts {
    pub(super) debounce: Dur,
    pub(super) max_delay: Dur,
    pub(super) system_recipients: Vec<String>,
}

impl Default for RawAlerts {
    fn default() -> Self {
        RawAlerts {
            debounce: Dur(Duration::from_secs(60)),
            max_delay: Dur(Duration::from_secs(900)),
            system_recipients: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub(super) listen: Listen,
    pub(super) max_body: Size,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) metrics_auth: bool,
    pub(super) drain_timeout: Dur,
    pub(super) public_url: Option<PublicUrl>,
    pub(super) body_timeout: Dur,
    pub(super) max_connections: usize,
    pub(super) wrong_credentials: u32,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: Listen(SocketAddr::from(([127, 0, 0, 1], 8470))),
            max_body: Size(1 << 20),
            tls_cert: None,
            tls_key: None,
            metrics_auth: false,
            drain_timeout: Dur(Duration::from_secs(10)),
            public_url: None,
            body_timeout: Dur(Duration::from_secs(30)),
            max_connections: 1024,
            wrong_credentials: 10,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStorage {
    pub(super) dir: Option<PathBuf>,
    pub(super) max_size: Size,
    pub(super) retention: Dur,
    pub(super) cache_size: Size,
    pub(super) max_event_size: Size,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            dir: None,
            max_size: Size(1 << 30),
            retention: Dur(Duration::from_secs(5 * 86400)),
            // redb's own default is 1 GiB: far too much for a 256 MiB gateway.
            cache_size: Size(16 << 20),
            max_event_size: Size(256 << 10),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawGeneral {
    pub(super) name: Option<String>,
    pub(super) timezone: Option<String>,
    pub(super) journal: JournalLevel,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub(super) name: String,
    pub(super) email: String,
    pub(super) role: Role,
    pub(super) token_sha256: String,
}

/// `host:port`, checked where it is read so the error points at the value.
pub(super) struct Listen(pub(super) SocketAddr);

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map(Listen)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an address like 127.0.0.1:8470")))
    }
}

pub(super) struct PublicUrl(pub(super) String);

impl<'de> Deserialize<'de> for PublicUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.parse::<hyper::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() => Ok(PublicUrl(s)),
            _ => Err(serde::de::Error::custom(format!(
                "{s:?} is not an http(s) URL like https://gateway.example.com:8470"
            ))),
        }
    }
}
