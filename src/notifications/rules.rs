//! The rules of a change notification (Collmex "API-Benachrichtigungen"),
//! pure: a notification's ping state, one input and the time give the new
//! state and what to do with its ping job. The shell around it stores the
//! state and schedules or cancels the job in the same transaction.
//!
//! - An event plans a ping `delay` after it; events while one is planned
//!   join it; after a ping, the next is planned no sooner than `delay`
//!   after that ping: at most one ping per `delay`.
//! - Each ping sent raises `unacked`, answered or not; a failed one is tried
//!   again `delay` later for as long as the changes stay unqueried.
//! - At `max_unacked` the notification is suspended: no pings until a
//!   change query, a toggle to inactive and back, or a reactivation, which
//!   all set `unacked` to 0.
//! - Inactive notifications plan nothing.

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::clock;

/// The part of a notification the rules decide on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pinging {
    pub inactive: bool,
    pub unacked: u32,
    pub suspended: bool,
    /// When the planned ping is due (ms), if one is planned.
    pub next_send_at: Option<i64>,
    /// Whether the planned ping repeats a failed one (a change query makes
    /// it needless) rather than telling of a new event.
    pub retry: bool,
    pub last_sent_at: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input {
    /// An event of the notification's name was published.
    Event,
    /// The planned ping went out; `answered`: a 2xx came back.
    Pinged { answered: bool },
    /// A change query of the notification's system.
    Queried,
    /// `inactive` set to 0 (false) or 1 (true).
    SetInactive(bool),
    /// `POST .../reactivate`.
    Reactivate,
}

/// What becomes of the notification's ping job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Job {
    Keep,
    /// Plan (or move) the ping to this time.
    PlanAt(Timestamp),
    Cancel,
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub delay: Duration,
    pub max_unacked: u32,
}

/// The rules: the state after `input` at `now`, and the job's next step.
pub fn apply(mut s: Pinging, input: Input, now: Timestamp, cfg: Settings) -> (Pinging, Job) {
    let job = match input {
        Input::Event if s.inactive || s.suspended => Job::Keep,
        Input::Event if s.next_send_at.is_some() => {
            // Joins the planned ping, which now tells of a change too.
            s.retry = false;
            Job::Keep
        }
        Input::Event => {
            let mut at = clock::add(now, cfg.delay);
            if let Some(last) = s.last_sent_at {
                at = at.max(clock::add(clock::from_ms(last), cfg.delay));
            }
            plan(&mut s, at, false)
        }
        Input::Pinged { answered } => {
            s.unacked = s.unacked.saturating_add(1);
            s.last_sent_at = Some(clock::to_ms(now));
            s.next_send_at = None;
            s.retry = false;
            if s.unacked >= cfg.max_unacked {
                s.suspended = true;
            }
            if answered || s.suspended || s.inactive {
                Job::Cancel
            } else {
                plan(&mut s, clock::add(now, cfg.delay), true)
            }
        }
        Input::Queried => {
            s.unacked = 0;
            s.suspended = false;
            if s.retry {
                s.next_send_at = None;
                s.retry = false;
                Job::Cancel
            } else {
                Job::Keep
            }
        }
        Input::SetInactive(true) => {
            s.inactive = true;
            s.next_send_at = None;
            s.retry = false;
            Job::Cancel
        }
        Input::SetInactive(false) if s.inactive => {
            s.inactive = false;
            s.unacked = 0;
            s.suspended = false;
            Job::Keep
        }
        Input::SetInactive(false) => Job::Keep,
        Input::Reactivate => {
            s.inactive = false;
            s.unacked = 0;
            s.suspended = false;
            Job::Keep
        }
    };
    (s, job)
}

fn plan(s: &mut Pinging, at: Timestamp, retry: bool) -> Job {
    s.next_send_at = Some(clock::to_ms(at));
    s.retry = retry;
    Job::PlanAt(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: Settings = Settings {
        delay: Duration::from_secs(60),
        max_unacked: 3,
    };

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn at(s: &str) -> Option<i64> {
        Some(clock::to_ms(t(s)))
    }

    #[test]
    fn an_event_plans_a_ping_a_delay_later_and_later_events_join_it() {
        let (s, job) = apply(Pinging::default(), Input::Event, t("2026-12-01T10:00:00Z"), CFG);
        assert_eq!(job, Job::PlanAt(t("2026-12-01T10:01:00Z")));
        assert_eq!(s.next_send_at, at("2026-12-01T10:01:00Z"));
        // A delay, not a debounce: the next event does not push it back.
        let (s, job) = apply(s, Input::Event, t("2026-12-01T10:00:50Z"), CFG);
        assert_eq!(job, Job::Keep);
        assert_eq!(s.next_send_at, at("2026-12-01T10:01:00Z"));
    }

    #[test]
    fn at_most_one_ping_per_delay() {
        let s = Pinging {
            last_sent_at: at("2026-12-01T10:01:00Z"),
            ..Default::default()
        };
        // An event 10 s after a ping: the next ping is a delay after that ping.
        let (_, job) = apply(s.clone(), Input::Event, t("2026-12-01T10:01:10Z"), CFG);
        assert_eq!(job, Job::PlanAt(t("2026-12-01T10:02:10Z")));
        let (_, job) = apply(s, Input::Event, t("2026-12-01T10:05:00Z"), CFG);
        assert_eq!(job, Job::PlanAt(t("2026-12-01T10:06:00Z")));
    }

    #[test]
    fn each_ping_counts_and_a_failed_one_is_tried_again_a_delay_later() {
        let s = Pinging {
            next_send_at: at("2026-12-01T10:01:00Z"),
            ..Default::default()
        };
        let now = t("2026-12-01T10:01:00Z");
        let (answered, job) = apply(s.clone(), Input::Pinged { answered: true }, now, CFG);
        assert_eq!((answered.unacked, answered.next_send_at, job), (1, None, Job::Cancel));
        let (failed, job) = apply(s, Input::Pinged { answered: false }, now, CFG);
        assert_eq!(failed.unacked, 1, "a failed ping counts too");
        assert_eq!(job, Job::PlanAt(t("2026-12-01T10:02:00Z")));
        assert!(failed.retry);
        // A change query makes the retry needless.
        let (queried, job) = apply(failed, Input::Queried, t("2026-12-01T10:01:30Z"), CFG);
        assert_eq!((queried.next_send_at, job, queried.unacked), (None, Job::Cancel, 0));
    }

    #[test]
    fn max_unacked_suspends_until_a_query_or_a_toggle_or_a_reactivation() {
        let mut s = Pinging::default();
        let now = t("2026-12-01T10:00:00Z");
        for _ in 0..3 {
            s = apply(s, Input::Pinged { answered: true }, now, CFG).0;
        }
        assert!(s.suspended && s.unacked == 3);
        assert_eq!(
            apply(s.clone(), Input::Event, now, CFG).1,
            Job::Keep,
            "suspended: no plan"
        );
        let (q, _) = apply(s.clone(), Input::Queried, now, CFG);
        assert!(!q.suspended && q.unacked == 0);
        let (off, job) = apply(s.clone(), Input::SetInactive(true), now, CFG);
        assert_eq!(job, Job::Cancel);
        let (on, _) = apply(off, Input::SetInactive(false), now, CFG);
        assert!(!on.inactive && !on.suspended && on.unacked == 0);
        let (r, _) = apply(s.clone(), Input::Reactivate, now, CFG);
        assert!(!r.inactive && !r.suspended && r.unacked == 0);
        // Setting active what is active changes nothing, the counter included.
        let (same, job) = apply(s.clone(), Input::SetInactive(false), now, CFG);
        assert_eq!((same, job), (s, Job::Keep));
    }

    #[test]
    fn inactive_notifications_plan_nothing_and_lose_their_planned_ping() {
        let s = Pinging {
            next_send_at: at("2026-12-01T10:01:00Z"),
            ..Default::default()
        };
        let (off, job) = apply(s, Input::SetInactive(true), t("2026-12-01T10:00:30Z"), CFG);
        assert_eq!((off.next_send_at, job), (None, Job::Cancel));
        assert_eq!(apply(off, Input::Event, t("2026-12-01T10:00:40Z"), CFG).1, Job::Keep);
    }

    #[test]
    fn an_event_joining_a_retry_makes_it_a_ping_a_query_does_not_cancel() {
        let s = Pinging {
            next_send_at: at("2026-12-01T10:02:00Z"),
            retry: true,
            ..Default::default()
        };
        let (s, _) = apply(s, Input::Event, t("2026-12-01T10:01:10Z"), CFG);
        assert!(!s.retry);
        let (s, job) = apply(s, Input::Queried, t("2026-12-01T10:01:20Z"), CFG);
        assert_eq!((job, s.next_send_at), (Job::Keep, at("2026-12-01T10:02:00Z")));
    }
}
