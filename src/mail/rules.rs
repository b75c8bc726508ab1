//! When a mail goes out, and what follows a failed attempt: pure functions
//! of the settings and the times, tested without I/O.

use std::time::Duration;

use jiff::Timestamp;

use crate::clock;
use crate::config::{Alerts, MailPolicy};

/// When a gathering mail is sent: `debounce` after its last entry, but no
/// later than `max_delay` after its first.
pub fn due(first_at: Timestamp, last_at: Timestamp, alerts: &Alerts) -> Timestamp {
    clock::add(last_at, alerts.debounce).min(clock::add(first_at, alerts.max_delay))
}

/// What follows a failed attempt.
#[derive(Debug, PartialEq)]
pub enum AfterFailure {
    RetryAt(Timestamp),
    /// `mail_retention` has passed since the mail was created.
    GiveUp,
}

/// `attempts` counts the attempts made, including the one that just failed.
pub fn after_failure(created: Timestamp, attempts: u32, now: Timestamp, policy: &MailPolicy) -> AfterFailure {
    let deadline = clock::add(created, policy.retention);
    if now >= deadline {
        return AfterFailure::GiveUp;
    }
    let step = (attempts.max(1) as usize - 1).min(policy.retry_schedule.len().saturating_sub(1));
    let wait = policy
        .retry_schedule
        .get(step)
        .copied()
        .unwrap_or(Duration::from_secs(60));
    AfterFailure::RetryAt(clock::add(now, wait).min(deadline))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::mail) fn alerts() -> Alerts {
        Alerts {
            debounce: Duration::from_secs(60),
            max_delay: Duration::from_secs(900),
            system_recipients: vec![],
        }
    }

    pub(in crate::mail) fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn each_entry_pushes_the_sending_back_up_to_max_delay() {
        let first = t("2026-11-22T10:00:00Z");
        assert_eq!(due(first, first, &alerts()), t("2026-11-22T10:01:00Z"));
        assert_eq!(
            due(first, t("2026-11-22T10:00:50Z"), &alerts()),
            t("2026-11-22T10:01:50Z")
        );
        // A storm: the cap holds.
        assert_eq!(
            due(first, t("2026-11-22T10:14:30Z"), &alerts()),
            t("2026-11-22T10:15:00Z")
        );
        assert_eq!(
            due(first, t("2026-11-22T11:00:00Z"), &alerts()),
            t("2026-11-22T10:15:00Z")
        );
    }

    #[test]
    fn retries_follow_the_schedule_and_stop_after_retention() {
        let policy = MailPolicy {
            retry_schedule: vec![
                Duration::from_secs(30),
                Duration::from_secs(60),
                Duration::from_secs(3600),
            ],
            retention: Duration::from_secs(7 * 86400),
        };
        let created = t("2026-11-22T10:00:00Z");
        let now = t("2026-11-22T10:01:00Z");
        assert_eq!(
            after_failure(created, 1, now, &policy),
            AfterFailure::RetryAt(t("2026-11-22T10:01:30Z"))
        );
        assert_eq!(
            after_failure(created, 2, now, &policy),
            AfterFailure::RetryAt(t("2026-11-22T10:02:00Z"))
        );
        // The last step repeats.
        assert_eq!(
            after_failure(created, 9, now, &policy),
            AfterFailure::RetryAt(t("2026-11-22T11:01:00Z"))
        );
        // Never past the retention, and then no more.
        let late = t("2026-11-29T09:30:00Z");
        assert_eq!(
            after_failure(created, 50, late, &policy),
            AfterFailure::RetryAt(t("2026-11-29T10:00:00Z"))
        );
        assert_eq!(
            after_failure(created, 51, t("2026-11-29T10:00:00Z"), &policy),
            AfterFailure::GiveUp
        );
    }
}
