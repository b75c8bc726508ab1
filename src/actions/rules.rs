//! The rules of an external API action (Enate "Trigger External API"),
//! pure: an action's state, one input and the time give the new state and
//! what the shell must do (schedule a retry or the timeout, cancel them,
//! mail the owner). Every transition of API.md's table is here, with the
//! attempts that SIGHUP may change under a running action.

use serde_repr::{Deserialize_repr, Serialize_repr};
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::clock;

/// Stored as its tag (below 128): never change or reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum State {
    /// Created; the first call is not made yet.
    Pending = 0,
    /// A call failed; the next is at `next_retry_at`.
    Retrying = 1,
    /// The external system accepted the call; its callback is awaited.
    Waiting = 2,
    /// The callback said success.
    Completed = 3,
    /// For a person: the callback refused it, or it never came.
    Todo = 4,
    /// Every attempt failed, or the call was refused.
    Closed = 5,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Retrying => "retrying",
            State::Waiting => "waiting",
            State::Completed => "completed",
            State::Todo => "todo",
            State::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<State> {
        [
            State::Pending,
            State::Retrying,
            State::Waiting,
            State::Completed,
            State::Todo,
            State::Closed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// Still to be called (by the retry job, or at once when new).
    pub fn open(self) -> bool {
        matches!(self, State::Pending | State::Retrying)
    }
}

/// Why an action was closed: only one closed by using up its attempts
/// shows a later change of `attempts`. (One a person closed has none, so
/// that an older release still reads it.)
/// Stored as its tag (below 128): never change or reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum Closed {
    /// Its attempts were used up.
    AttemptsUsed = 0,
    /// `attempts` was lowered to what it had made already.
    AttemptsLowered = 1,
    /// A 4xx other than 408 and 429.
    Refused = 2,
}

/// Stored as its tag (below 128): never change or reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum TodoReason {
    UpdatedByIntegration = 0,
    Timeout = 1,
}

/// A callback as it came, to tell a repeat from a different one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    pub success: bool,
    /// `data` as sent (JSON text).
    pub data: Option<String>,
    pub reason: Option<String>,
}

/// The part of an action the rules decide on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub state: State,
    pub attempts_made: u32,
    pub attempts_max: u32,
    pub next_retry_at: Option<i64>,
    /// The last failed call: when, and why.
    pub last_error: Option<(i64, String)>,
    pub closed: Option<Closed>,
    pub todo: Option<TodoReason>,
    /// `timeout_queue` when it timed out.
    pub queue: Option<String>,
    /// The callback that ended the wait.
    pub callback: Option<Callback>,
}

impl Progress {
    pub fn new(attempts_max: u32) -> Progress {
        Progress {
            state: State::Pending,
            attempts_made: 0,
            attempts_max,
            next_retry_at: None,
            last_error: None,
            closed: None,
            todo: None,
            queue: None,
            callback: None,
        }
    }
}

/// What a call came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Called {
    /// A 2xx: the answer comes by callback.
    Accepted,
    /// No connection, the timeout, a 5xx, 408 or 429: worth trying again;
    /// `retry_after` from a 429 or 503.
    Failed {
        message: String,
        retry_after: Option<Duration>,
    },
    /// A 4xx other than 408 and 429: trying again would not help.
    Refused { message: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A call was made (the first, an automatic retry, or a manual one).
    Called(Called),
    Callback(Callback),
    /// The interface's `action_timeout` passed while waiting.
    TimedOut,
    /// SIGHUP changed the interface's `attempts`.
    AttemptsChanged(u32),
}

/// What the shell does after a transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Nothing,
    /// Plan the next call at this time.
    RetryAt(Timestamp),
    /// Plan the timeout of the wait.
    TimeoutAt(Timestamp),
    /// The action ended: cancel its jobs.
    Ended,
    /// It ended unsuccessfully: cancel its jobs and mail the owner.
    EndedMailOwner,
    /// A callback that repeats the one taken: answer 200, change nothing.
    Repeat,
    /// A callback the action cannot take (it no longer waits): answer 409.
    Conflict,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub retry_wait: Duration,
    pub action_timeout: Duration,
    pub timeout_queue: String,
}

/// Whether a manual retry may be made now: only while `retrying`.
pub fn may_retry(p: &Progress) -> bool {
    p.state == State::Retrying
}

/// The rules: the progress after `input` at `now`, and what to do.
pub fn apply(mut p: Progress, input: Input, now: Timestamp, cfg: &Settings) -> (Progress, Effect) {
    let effect = match input {
        Input::Called(_) if !p.state.open() => Effect::Nothing,
        Input::Called(called) => {
            p.attempts_made += 1;
            p.next_retry_at = None;
            match called {
                Called::Accepted => {
                    p.state = State::Waiting;
                    Effect::TimeoutAt(clock::add(now, cfg.action_timeout))
                }
                Called::Refused { message } => {
                    p.last_error = Some((clock::to_ms(now), message));
                    close(&mut p, Closed::Refused)
                }
                Called::Failed { message, retry_after } => {
                    p.last_error = Some((clock::to_ms(now), message));
                    if p.attempts_made >= p.attempts_max {
                        close(&mut p, Closed::AttemptsUsed)
                    } else {
                        let wait = retry_after.map_or(cfg.retry_wait, |asked| asked.max(cfg.retry_wait));
                        let at = clock::add(now, wait);
                        p.state = State::Retrying;
                        p.next_retry_at = Some(clock::to_ms(at));
                        Effect::RetryAt(at)
                    }
                }
            }
        }
        // Only a call carries the token, so a callback while the action is
        // still open means the external system took a call whose answer
        // herald has not seen yet (a fast system calls back before its 2xx
        // arrives, or answered after herald gave up waiting). The first
        // call, still in flight, is counted; the call's late outcome then
        // changes nothing.
        Input::Callback(cb) if p.state == State::Waiting || p.state.open() => {
            if p.state == State::Pending {
                p.attempts_made = p.attempts_made.max(1);
            }
            p.next_retry_at = None;
            if cb.success {
                p.state = State::Completed;
            } else {
                p.state = State::Todo;
                p.todo = Some(TodoReason::UpdatedByIntegration);
            }
            p.callback = Some(cb);
            Effect::Ended
        }
        Input::Callback(cb) if p.callback.as_ref() == Some(&cb) => Effect::Repeat,
        Input::Callback(_) => Effect::Conflict,
        Input::TimedOut if p.state == State::Waiting => {
            p.state = State::Todo;
            p.todo = Some(TodoReason::Timeout);
            p.queue = Some(cfg.timeout_queue.clone());
            // A person takes it from the queue; the owner is not mailed.
            Effect::Ended
        }
        Input::TimedOut => Effect::Nothing,
        Input::AttemptsChanged(max) if p.state.open() => {
            if max <= p.attempts_made {
                // Closed at once; it keeps the attempts_max it had.
                close(&mut p, Closed::AttemptsLowered)
            } else {
                p.attempts_max = max;
                Effect::Nothing
            }
        }
        Input::AttemptsChanged(max) if p.closed == Some(Closed::AttemptsUsed) => {
            // Shown with the new maximum, never tried again.
            p.attempts_max = max;
            Effect::Nothing
        }
        Input::AttemptsChanged(_) => Effect::Nothing,
    };
    (p, effect)
}

fn close(p: &mut Progress, why: Closed) -> Effect {
    p.state = State::Closed;
    p.closed = Some(why);
    p.next_retry_at = None;
    Effect::EndedMailOwner
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Settings {
        Settings {
            retry_wait: Duration::from_secs(300),
            action_timeout: Duration::from_secs(7200),
            timeout_queue: "backoffice".into(),
        }
    }

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-12-01T10:00:00Z";

    fn failed() -> Input {
        Input::Called(Called::Failed {
            message: "connection refused".into(),
            retry_after: None,
        })
    }

    /// An action that made `made` failed attempts of `max`.
    fn after_failures(made: u32, max: u32) -> Progress {
        let mut p = Progress::new(max);
        for _ in 0..made {
            p = apply(p, failed(), t(NOW), &cfg()).0;
        }
        p
    }

    fn callback(success: bool, reason: Option<&str>) -> Callback {
        Callback {
            success,
            data: success.then(|| r#"{"ticket":7}"#.to_string()),
            reason: reason.map(str::to_string),
        }
    }

    #[test]
    fn accepted_calls_wait_for_the_callback_until_the_timeout() {
        let (p, e) = apply(Progress::new(5), Input::Called(Called::Accepted), t(NOW), &cfg());
        assert_eq!((p.state, p.attempts_made), (State::Waiting, 1));
        assert_eq!(e, Effect::TimeoutAt(t("2026-12-01T12:00:00Z")));
        // No callback in time: to do, in the timeout queue, nobody mailed.
        let (p, e) = apply(p, Input::TimedOut, t("2026-12-01T12:00:00Z"), &cfg());
        assert_eq!(
            (p.state, p.todo, p.queue.as_deref()),
            (State::Todo, Some(TodoReason::Timeout), Some("backoffice"))
        );
        assert_eq!(e, Effect::Ended);
    }

    #[test]
    fn callbacks_complete_or_reject_and_repeats_change_nothing() {
        let waiting = apply(Progress::new(5), Input::Called(Called::Accepted), t(NOW), &cfg()).0;
        let (done, e) = apply(waiting.clone(), Input::Callback(callback(true, None)), t(NOW), &cfg());
        assert_eq!((done.state, e), (State::Completed, Effect::Ended));
        assert_eq!(done.callback.as_ref().unwrap().data.as_deref(), Some(r#"{"ticket":7}"#));
        let (again, e) = apply(done.clone(), Input::Callback(callback(true, None)), t(NOW), &cfg());
        assert_eq!((again, e), (done.clone(), Effect::Repeat));
        let (_, e) = apply(done, Input::Callback(callback(false, Some("no"))), t(NOW), &cfg());
        assert_eq!(e, Effect::Conflict, "a different callback after the wait");

        let (todo, _) = apply(
            waiting,
            Input::Callback(callback(false, Some("unknown customer"))),
            t(NOW),
            &cfg(),
        );
        assert_eq!(
            (todo.state, todo.todo),
            (State::Todo, Some(TodoReason::UpdatedByIntegration))
        );
        assert_eq!(todo.callback.unwrap().reason.as_deref(), Some("unknown customer"));
        // A callback that overtakes the answer to the first call: taken,
        // the call counted, and its late answer changes nothing.
        let (fast, e) = apply(Progress::new(5), Input::Callback(callback(true, None)), t(NOW), &cfg());
        assert_eq!(
            (fast.state, fast.attempts_made, e),
            (State::Completed, 1, Effect::Ended)
        );
        let (late, e) = apply(fast.clone(), Input::Called(Called::Accepted), t(NOW), &cfg());
        assert_eq!((late, e), (fast, Effect::Nothing));
        // One for an earlier attempt of a retrying action: taken, nothing more counted.
        let retrying = apply(Progress::new(5), failed(), t(NOW), &cfg()).0;
        let (p, e) = apply(retrying, Input::Callback(callback(false, Some("no"))), t(NOW), &cfg());
        assert_eq!(
            (p.state, p.attempts_made, p.next_retry_at, e),
            (State::Todo, 1, None, Effect::Ended)
        );
    }

    #[test]
    fn failed_calls_retry_after_retry_wait_until_the_attempts_are_used() {
        let (p, e) = apply(Progress::new(3), failed(), t(NOW), &cfg());
        assert_eq!((p.state, p.attempts_made), (State::Retrying, 1));
        assert_eq!(e, Effect::RetryAt(t("2026-12-01T10:05:00Z")));
        assert_eq!(p.last_error, Some((clock::to_ms(t(NOW)), "connection refused".into())));
        // A Retry-After longer than retry_wait is honoured.
        let busy = Input::Called(Called::Failed {
            message: "429".into(),
            retry_after: Some(Duration::from_secs(900)),
        });
        assert_eq!(
            apply(p.clone(), busy, t(NOW), &cfg()).1,
            Effect::RetryAt(t("2026-12-01T10:15:00Z"))
        );
        let p = after_failures(3, 3);
        assert_eq!(
            (p.state, p.closed, p.attempts_made),
            (State::Closed, Some(Closed::AttemptsUsed), 3)
        );
        assert_eq!(
            apply(after_failures(2, 3), failed(), t(NOW), &cfg()).1,
            Effect::EndedMailOwner
        );
    }

    #[test]
    fn a_refused_call_closes_at_once_and_mails_the_owner() {
        let refused = Input::Called(Called::Refused {
            message: "answered 422".into(),
        });
        let (p, e) = apply(Progress::new(5), refused, t(NOW), &cfg());
        assert_eq!(
            (p.state, p.closed, p.attempts_made, e),
            (State::Closed, Some(Closed::Refused), 1, Effect::EndedMailOwner)
        );
    }

    #[test]
    fn a_manual_retry_is_allowed_only_while_retrying_and_counts() {
        assert!(!may_retry(&Progress::new(5)));
        let p = after_failures(1, 5);
        assert!(may_retry(&p));
        let (p, _) = apply(p, failed(), t(NOW), &cfg());
        assert_eq!(p.attempts_made, 2, "the manual attempt counts");
        let waiting = apply(p, Input::Called(Called::Accepted), t(NOW), &cfg()).0;
        assert!(!may_retry(&waiting));
        // A late call outcome for an action that is no longer open changes nothing.
        let (same, e) = apply(waiting.clone(), failed(), t(NOW), &cfg());
        assert_eq!((same, e), (waiting, Effect::Nothing));
    }

    #[test]
    fn changing_attempts_follows_the_three_examples() {
        // Closed at 5/5, raised to 7: shows 5/7, never tried again.
        let (p, e) = apply(after_failures(5, 5), Input::AttemptsChanged(7), t(NOW), &cfg());
        assert_eq!(
            (p.state, p.attempts_made, p.attempts_max, e),
            (State::Closed, 5, 7, Effect::Nothing)
        );
        // 4 of 5 made, raised to 7: tries until 7.
        let (mut p, _) = apply(after_failures(4, 5), Input::AttemptsChanged(7), t(NOW), &cfg());
        assert_eq!((p.state, p.attempts_max), (State::Retrying, 7));
        for _ in 0..3 {
            p = apply(p, failed(), t(NOW), &cfg()).0;
        }
        assert_eq!((p.state, p.attempts_made, p.attempts_max), (State::Closed, 7, 7));
        // 4 of 10 made, lowered to 4: closed at once, shows 4/10.
        let (p, e) = apply(after_failures(4, 10), Input::AttemptsChanged(4), t(NOW), &cfg());
        assert_eq!(
            (p.state, p.attempts_made, p.attempts_max, e),
            (State::Closed, 4, 10, Effect::EndedMailOwner)
        );
        // Closed by a lowered maximum, it keeps what it showed.
        assert_eq!(apply(p, Input::AttemptsChanged(12), t(NOW), &cfg()).0.attempts_max, 10);
    }
}
