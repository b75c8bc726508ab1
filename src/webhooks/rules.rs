//! The delivery rules, pure and tested without I/O: what an answer means
//! (success, or a failure with its category), when to try again or give
//! up, which events a webhook takes, and how a delivery is signed.

use std::time::Duration;

use base64::Engine;
use hmac::{KeyInit, Mac};
use jiff::Timestamp;
use sha2::Sha256;

use crate::clock;
use crate::config::Webhooks as Settings;
use crate::executions::Category;

/// Why an attempt failed, judged from what came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub category: Category,
    pub message: String,
    pub status: Option<u16>,
    /// `Retry-After` of a 429 or 503.
    pub retry_after: Option<Duration>,
    /// 410 Gone: the receiver says this webhook is over.
    pub gone: bool,
}

/// Any 2xx is success; everything else fails the attempt, with the category
/// that says whom to call.
pub fn judge(status: u16, retry_after: Option<&str>, now: Timestamp) -> Result<(), Failure> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let category = match status {
        401 | 403 | 404 | 410 => Category::Configuration,
        400 | 422 => Category::Mapping,
        _ => Category::External,
    };
    let retry_after = if matches!(status, 429 | 503) {
        retry_after.and_then(|v| parse_retry_after(v, now))
    } else {
        None
    };
    Err(Failure {
        category,
        message: format!("answered {status}"),
        status: Some(status),
        retry_after,
        gone: status == 410,
    })
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(v: &str, now: Timestamp) -> Option<Duration> {
    if let Ok(secs) = v.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v.trim()).ok()?.timestamp();
    Duration::try_from(at.duration_since(now)).ok()
}

#[derive(Debug, PartialEq)]
pub enum Next {
    RetryAt(Timestamp),
    Disable,
}

/// After a failed attempt: when to try again, or deactivate. `attempts` is
/// the number made on this event so far; `jitter` is in [-1, 1] (±20 %).
pub fn after_failure(
    failing_since: Timestamp,
    attempts: u32,
    now: Timestamp,
    f: &Failure,
    s: &Settings,
    jitter: f64,
) -> Next {
    if f.gone
        || now.duration_since(failing_since) >= jiff::SignedDuration::try_from(s.disable_after).unwrap_or_default()
    {
        return Next::Disable;
    }
    let step = (attempts as usize).min(s.retry_schedule.len() - 1);
    let base = s.retry_schedule[step];
    let mut wait = base.mul_f64(1.0 + 0.2 * jitter.clamp(-1.0, 1.0));
    if let Some(asked) = f.retry_after {
        let longest = s.retry_schedule.iter().max().copied().unwrap_or(base);
        wait = wait.max(asked.min(longest));
    }
    Next::RetryAt(clock::add(now, wait))
}

pub fn matches(subscribed: &str, event: &str) -> bool {
    subscribed == "*" || subscribed == event
}

/// Signs deliveries per Standard Webhooks: the key is decoded and the
/// HMAC keyed once per delivery run, not once per event.
pub struct Signer(hmac::Hmac<Sha256>);

impl Signer {
    pub fn new(secret: &str) -> Signer {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
            .unwrap_or_default();
        Signer(hmac::Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length"))
    }

    /// `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = self.0.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }
}

pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::valid_secret;

    fn settings() -> Settings {
        let s = |n| Duration::from_secs(n);
        Settings {
            timeout: s(15),
            retry_schedule: vec![s(0), s(5), s(300), s(1800), s(7200), s(18000), s(36000), s(36000)],
            disable_after: s(86400),
            buffer_for: s(5 * 86400),
            ca_file: None,
            max_per_host: 16,
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn failure(status: u16) -> Failure {
        judge(status, None, t("2026-11-22T10:00:00Z")).unwrap_err()
    }

    #[test]
    fn statuses_and_categories() {
        let now = t("2026-11-22T10:00:00Z");
        assert!(judge(200, None, now).is_ok() && judge(204, None, now).is_ok());
        assert_eq!(failure(500).category, Category::External);
        assert_eq!(failure(404).category, Category::Configuration);
        assert_eq!(failure(401).category, Category::Configuration);
        assert_eq!(failure(422).category, Category::Mapping);
        assert!(failure(410).gone);
        assert_eq!(
            judge(429, Some("120"), now).unwrap_err().retry_after,
            Some(Duration::from_secs(120))
        );
        let date = judge(503, Some("Sun, 22 Nov 2026 10:01:00 GMT"), now).unwrap_err();
        assert_eq!(date.retry_after, Some(Duration::from_secs(60)));
        assert_eq!(judge(500, Some("120"), now).unwrap_err().retry_after, None);
    }

    #[test]
    fn retries_follow_the_schedule_with_jitter() {
        let s = settings();
        let start = t("2026-11-22T10:00:00Z");
        // After the first attempt failed: the second step, 5 s, ±20 %.
        assert_eq!(
            after_failure(start, 1, start, &failure(500), &s, 0.0),
            Next::RetryAt(t("2026-11-22T10:00:05Z"))
        );
        assert_eq!(
            after_failure(start, 1, start, &failure(500), &s, 1.0),
            Next::RetryAt(t("2026-11-22T10:00:06Z"))
        );
        assert_eq!(
            after_failure(start, 1, start, &failure(500), &s, -1.0),
            Next::RetryAt(t("2026-11-22T10:00:04Z"))
        );
        assert_eq!(
            after_failure(start, 2, start, &failure(500), &s, 0.0),
            Next::RetryAt(t("2026-11-22T10:05:00Z"))
        );
        // Past the end of the schedule, the last step repeats.
        assert_eq!(
            after_failure(start, 20, start, &failure(500), &s, 0.0),
            Next::RetryAt(t("2026-11-22T20:00:00Z"))
        );
        // Retry-After is honoured, up to the longest step.
        let mut busy = failure(429);
        busy.retry_after = Some(Duration::from_secs(600));
        assert_eq!(
            after_failure(start, 1, start, &busy, &s, 0.0),
            Next::RetryAt(t("2026-11-22T10:10:00Z"))
        );
        busy.retry_after = Some(Duration::from_secs(999_999));
        assert_eq!(
            after_failure(start, 1, start, &busy, &s, 0.0),
            Next::RetryAt(t("2026-11-22T20:00:00Z"))
        );
        // 24 h without success, or 410: deactivate.
        assert_eq!(
            after_failure(start, 7, t("2026-11-23T10:00:00Z"), &failure(500), &s, 0.0),
            Next::Disable
        );
        assert_eq!(after_failure(start, 1, start, &failure(410), &s, 0.0), Next::Disable);
    }

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            Signer::new(secret).sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(valid_secret(&new_secret()));
        assert!(!valid_secret("whsec_short") && !valid_secret("nope"));
    }
}
