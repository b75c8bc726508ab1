//! `[[interfaces]]` (the external systems herald calls: `action`, `pull`,
//! `push`) and `[[schedules]]` (when `pull` and `push` interfaces run).
//! A key that does not belong to an interface's kind is an error, so a
//! misplaced setting never passes silently.

use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use super::error::ConfigError;
use super::lines::line_of_nth;
use super::values::{Dur, Size};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceKind {
    Action,
    Pull,
    Push,
}

impl InterfaceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InterfaceKind::Action => "action",
            InterfaceKind::Pull => "pull",
            InterfaceKind::Push => "push",
        }
    }
}

/// An external system herald calls.
#[derive(Debug, Clone, PartialEq)]
pub struct Interface {
    pub name: String,
    pub kind: InterfaceKind,
    pub url: String,
    /// Signs outbound calls (Standard Webhooks) when set.
    pub secret: Option<String>,
    /// One call.
    pub timeout: Duration,
    /// pull: the largest answer read.
    pub max_response: u64,
    /// action: connection attempts in all.
    pub attempts: u32,
    /// action: the wait between attempts.
    pub retry_wait: Duration,
    /// action: the longest wait for the callback.
    pub action_timeout: Duration,
    /// action: the queue of actions whose callback never came.
    pub timeout_queue: String,
    /// push: the events sent (names, or "*").
    pub events: Vec<String>,
    /// push: events per request.
    pub batch: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub name: String,
    /// A pull or push interface.
    pub interface: String,
    pub every: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterface {
    name: String,
    kind: InterfaceKind,
    url: String,
    secret: Option<String>,
    timeout: Option<Dur>,
    max_response: Option<Size>,
    attempts: Option<u32>,
    retry_wait: Option<Dur>,
    action_timeout: Option<Dur>,
    timeout_queue: Option<String>,
    events: Option<Vec<String>>,
    batch: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    name: String,
    interface: String,
    every: Dur,
}

/// A name of an account, interface or schedule: 1 to 64 of A-Z a-z 0-9 . _ -
pub(super) fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_event(s: &str) -> bool {
    s == "*"
        || ((1..=128).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-')))
}

/// A Standard Webhooks secret, for webhooks and interfaces alike: `whsec_`
/// and 24 to 64 bytes in base64.
pub fn valid_secret(s: &str) -> bool {
    s.strip_prefix("whsec_")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|k| (24..=64).contains(&k.len()))
}

pub(super) fn from_raw(
    raw: Vec<RawInterface>,
    schedules: Vec<RawSchedule>,
    text: &str,
) -> Result<(Vec<Interface>, Vec<Schedule>), ConfigError> {
    let mut out: Vec<Interface> = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        let at = |key: &str, message: String| ConfigError {
            line: line_of_nth(text, "[[interfaces]]", i, key),
            key: format!("interfaces[{i}].{key}"),
            message,
        };
        if !valid_name(&r.name) || ["api", "mail"].contains(&r.name.as_str()) {
            let message = format!(
                "{:?} must be 1 to 64 characters of A-Z a-z 0-9 . _ - (not api or mail)",
                r.name
            );
            return Err(at("name", message));
        }
        if out.iter().any(|o| o.name == r.name) {
            return Err(at(
                "name",
                format!("{:?} is declared twice; interface names must be unique", r.name),
            ));
        }
        let url_ok = r.url.len() <= 2048
            && r.url.parse::<hyper::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
            });
        if !url_ok {
            return Err(at(
                "url",
                format!("{:?} is not an http(s) URL like https://crm.example.com/herald", r.url),
            ));
        }
        if let Some(secret) = &r.secret
            && !valid_secret(secret)
        {
            let message = "must be \"whsec_\" and 24 to 64 bytes in base64 (Standard Webhooks)".to_string();
            return Err(at("secret", message));
        }
        // Keys of another kind are mistakes, not ignored.
        let kind = r.kind;
        let not_for = |key: &str, set: bool, kinds: &[InterfaceKind]| -> Result<(), ConfigError> {
            if set && !kinds.contains(&kind) {
                let for_kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                let message = format!(
                    "is for {} interfaces; this one is {}",
                    for_kinds.join(" and "),
                    kind.as_str()
                );
                return Err(at(key, message));
            }
            Ok(())
        };
        use InterfaceKind::*;
        not_for("max_response", r.max_response.is_some(), &[Pull])?;
        not_for("attempts", r.attempts.is_some(), &[Action])?;
        not_for("retry_wait", r.retry_wait.is_some(), &[Action])?;
        not_for("action_timeout", r.action_timeout.is_some(), &[Action])?;
        not_for("timeout_queue", r.timeout_queue.is_some(), &[Action])?;
        not_for("events", r.events.is_some(), &[Push])?;
        not_for("batch", r.batch.is_some(), &[Push])?;
        let attempts = r.attempts.unwrap_or(5);
        if !(1..=100).contains(&attempts) {
            return Err(at("attempts", format!("{attempts} is out of range; use 1 to 100")));
        }
        let batch = r.batch.unwrap_or(1000);
        if !(1..=10_000).contains(&batch) {
            return Err(at("batch", format!("{batch} is out of range; use 1 to 10000")));
        }
        let events = r.events.unwrap_or_default();
        if kind == Push && events.is_empty() {
            return Err(at(
                "events",
                "is missing; name the events to push, like [\"sale.created\"] or [\"*\"]".into(),
            ));
        }
        if let Some(bad) = events.iter().find(|e| !valid_event(e)) {
            return Err(at(
                "events",
                format!("{bad:?} is neither \"*\" nor an event name (A-Z a-z 0-9 . _ : -)"),
            ));
        }
        let timeout_queue = r.timeout_queue.unwrap_or_else(|| "timeout".into());
        if timeout_queue.trim().is_empty() || timeout_queue.len() > 64 {
            return Err(at("timeout_queue", "must be 1 to 64 characters".into()));
        }
        out.push(Interface {
            name: r.name,
            kind,
            url: r.url,
            secret: r.secret,
            timeout: r.timeout.map_or(Duration::from_secs(30), |d| d.0),
            max_response: r.max_response.map_or(16 << 20, |s| s.0),
            attempts,
            retry_wait: r.retry_wait.map_or(Duration::from_secs(300), |d| d.0),
            action_timeout: r.action_timeout.map_or(Duration::from_secs(7200), |d| d.0),
            timeout_queue,
            events,
            batch,
        });
    }
    let mut planned: Vec<Schedule> = Vec::with_capacity(schedules.len());
    for (i, s) in schedules.into_iter().enumerate() {
        let at = |key: &str, message: String| ConfigError {
            line: line_of_nth(text, "[[schedules]]", i, key),
            key: format!("schedules[{i}].{key}"),
            message,
        };
        if !valid_name(&s.name) {
            return Err(at(
                "name",
                format!("{:?} must be 1 to 64 characters of A-Z a-z 0-9 . _ -", s.name),
            ));
        }
        if planned.iter().any(|p| p.name == s.name) {
            return Err(at(
                "name",
                format!("{:?} is declared twice; schedule names must be unique", s.name),
            ));
        }
        match out.iter().find(|f| f.name == s.interface) {
            None => {
                return Err(at(
                    "interface",
                    format!("{:?} is not an [[interfaces]] name", s.interface),
                ));
            }
            Some(f) if f.kind == InterfaceKind::Action => {
                let message = format!(
                    "{:?} is an action interface; schedules run pull and push ones",
                    s.interface
                );
                return Err(at("interface", message));
            }
            Some(_) => {}
        }
        planned.push(Schedule {
            name: s.name,
            interface: s.interface,
            every: s.every.0,
        });
    }
    Ok((out, planned))
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const CRM: &str = "[[interfaces]]\nname = \"crm\"\nkind = \"action\"\nurl = \"https://crm.example.com/herald\"\n";

    #[test]
    fn interfaces_take_their_kind_s_keys_and_defaults() {
        let text = format!(
            "{CRM}attempts = 7\ntimeout_queue = \"backoffice\"\n\n[[interfaces]]\nname = \"fnac\"\nkind = \"push\"\n\
             url = \"https://fnac.example.com/in\"\nevents = [\"sale.created\"]\n\n\
             [[schedules]]\nname = \"fnac-sales\"\ninterface = \"fnac\"\nevery = \"2h\"\n"
        );
        let c = Config::parse(&text, None).unwrap();
        let crm = &c.interfaces[0];
        assert_eq!((crm.attempts, crm.timeout_queue.as_str()), (7, "backoffice"));
        assert_eq!(crm.retry_wait, std::time::Duration::from_secs(300));
        assert_eq!(c.interfaces[1].batch, 1000);
        assert_eq!(c.schedules[0].every, std::time::Duration::from_secs(7200));
    }

    #[test]
    fn misplaced_and_bad_keys_name_the_interface_and_the_line() {
        let e = Config::parse(&format!("{CRM}events = [\"a\"]\n"), None).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(5), "interfaces[0].events"));
        assert!(e.message.contains("push"), "{e}");
        let e = Config::parse(&format!("{CRM}{CRM}"), None).unwrap_err();
        assert_eq!(e.key, "interfaces[1].name");
        let e = Config::parse(
            "[[interfaces]]\nname = \"p\"\nkind = \"push\"\nurl = \"http://x.io\"\n",
            None,
        )
        .unwrap_err();
        assert_eq!(e.key, "interfaces[0].events");
        let e = Config::parse(
            &format!("{CRM}\n[[schedules]]\nname = \"s\"\ninterface = \"crm\"\nevery = \"1h\"\n"),
            None,
        )
        .unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(8), "schedules[0].interface"));
        let e = Config::parse(
            "[[interfaces]]\nname = \"x\"\nkind = \"soap\"\nurl = \"http://x.io\"\n",
            None,
        )
        .unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
    }
}
