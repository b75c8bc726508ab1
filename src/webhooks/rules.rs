//! The delivery rules, pure and tested without I/O: when to try again or
//! give up after a failed attempt, and which events a webhook takes. What
//! an answer means and how a delivery is signed are `outbound`'s.

use jiff::Timestamp;

use crate::clock;
use crate::config::Webhooks as Settings;
use crate::outbound::Failure;

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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::outbound::judge;

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
}
