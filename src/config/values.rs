//! The typed values the file's keys take, each checking its own syntax
//! where it is read so that an error points at the value: sizes,
//! durations, roles, SMTP security.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What an account may do (API.md's roles). Declared here because the
/// config file assigns it; `auth` enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Integration,
    Technician,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Integration => "integration",
            Role::Technician => "technician",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    None,
    Starttls,
    Tls,
}

/// The lowest level of execution log lines that also go to the systemd
/// journal (`general.journal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalLevel {
    #[default]
    Info,
    Warn,
    Error,
    Off,
}

/// A size such as `"1MiB"` or `"512KiB"` (a bare integer counts bytes).
#[derive(Clone, Copy)]
pub(super) struct Size(pub(super) u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec_short())
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Int(u64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Int(n) => Ok(Size(n)),
            Either::Text(s) => bytesize::ByteSize::from_str(&s)
                .map(|b| Size(b.0))
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a size like \"16MiB\" or \"512KiB\""))),
        }
    }
}

/// A duration such as `"60s"`, `"5m"`, `"2h"`, `"5d"`; zero is refused.
#[derive(Clone, Copy)]
pub(super) struct Dur(pub(super) Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

/// Parses a duration as config and requests write them (`"60s"`, `"5d"`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err(format!("{s:?} is zero; give a positive duration like \"60s\"")),
        Err(_) => Err(format!(
            "{s:?} is not a duration like \"60s\", \"5m\", \"2h\" or \"5d\""
        )),
    }
}
