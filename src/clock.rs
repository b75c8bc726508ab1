//! Business time.
//!
//! Every due time, debounce window, timeout and retention period reads the
//! time from a [`Clock`], never from `SystemTime` or a bare `sleep`, so tests
//! can drive one day of rules in milliseconds. The system clock is the real
//! one; the manual clock stands still until told to move (tests set
//! `HERALD_TEST_CLOCK` and move it through `POST /v1/test/clock`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use tokio::sync::watch;

#[derive(Clone)]
pub enum Clock {
    System,
    Manual(Arc<Manual>),
}

pub struct Manual {
    /// A `std` mutex: held only to read or replace the value, never across `.await`.
    now: Mutex<Timestamp>,
    /// Wakes sleepers whenever the time is moved.
    moved: watch::Sender<()>,
}

impl Clock {
    pub fn manual(start: Timestamp) -> Clock {
        Clock::Manual(Arc::new(Manual {
            now: Mutex::new(start),
            moved: watch::channel(()).0,
        }))
    }

    pub fn now(&self) -> Timestamp {
        match self {
            // Millisecond precision: what the store keeps and the API shows.
            Clock::System => Timestamp::now()
                .round(jiff::Unit::Millisecond)
                .unwrap_or_else(|_| Timestamp::now()),
            Clock::Manual(m) => *m.now.lock().unwrap(),
        }
    }

    pub fn is_manual(&self) -> bool {
        matches!(self, Clock::Manual(_))
    }

    /// Moves a manual clock forward (or to a given instant); no-op on the system clock.
    pub fn advance(&self, by: SignedDuration) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Manual(m) => {
                let mut now = m.now.lock().unwrap();
                *now = now.saturating_add(by).expect("signed duration");
                m.moved.send_replace(());
                *now
            }
        }
    }

    /// Returns once the clock reads `t` or later.
    pub async fn sleep_until(&self, t: Timestamp) {
        match self {
            Clock::System => {
                let wait = t.duration_since(Timestamp::now());
                if wait.is_positive() {
                    tokio::time::sleep(Duration::try_from(wait).unwrap_or(Duration::ZERO)).await;
                }
            }
            Clock::Manual(m) => {
                let mut rx = m.moved.subscribe();
                while *m.now.lock().unwrap() < t {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Milliseconds since the Unix epoch: how the store keeps instants.
pub fn to_ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

pub fn from_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// RFC 3339 in UTC with milliseconds, as the API and the logs show
/// instants: `2026-11-22T10:00:05.000Z`, always three digits.
pub fn rfc3339(ms: i64) -> String {
    fmt(from_ms(ms))
}

/// [`rfc3339`] of a timestamp (to the millisecond).
pub fn fmt(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(t)
}

pub fn sub(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_sub(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_show_milliseconds_always() {
        assert_eq!(rfc3339(1_795_435_205_000), "2026-11-23T12:00:05.000Z");
        assert_eq!(
            fmt("2026-11-23T09:20:05.123456Z".parse().unwrap()),
            "2026-11-23T09:20:05.123Z"
        );
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_when_moved() {
        let clock = Clock::manual("2026-11-22T23:59:00Z".parse().unwrap());
        let target = add(clock.now(), Duration::from_secs(60));
        let c2 = clock.clone();
        let sleeper = tokio::spawn(async move { c2.sleep_until(target).await });
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(SignedDuration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!sleeper.is_finished());
        clock.advance(SignedDuration::from_secs(30));
        tokio::time::timeout(Duration::from_secs(1), sleeper)
            .await
            .unwrap()
            .unwrap();
    }
}
