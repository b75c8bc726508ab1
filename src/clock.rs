//! Business time, and how herald keeps it through wall-clock steps.
//!
//! A gateway often boots without a battery-backed clock: it starts at the
//! last saved time (or 1970), and NTP steps the clock later, by hours or
//! months; an operator may set it back. So herald keeps its own timeline,
//! *herald time*, that moves only as real time passes (the monotonic
//! clock, suspend included) while it runs, and by what the wall clock says
//! across a restart (never backwards). Every due time, deadline, age and
//! duration is herald time: retries, timeouts, debounce, buffers, retention
//! and `disable_after` count real time whatever the wall clock does.
//!
//! People compare instants with other systems, so what herald *shows*
//! (`created_at`, log lines, exports, the day of a daily execution) is wall
//! time. Herald time and wall time agree until a step; at a step the
//! *offset* between them changes, and is kept in a ledger: an instant
//! stored before a step is shown with the offset of its time, so it keeps
//! the wall time it had. Shown instants never go below the last one shown
//! before a backward step. Small drifts (NTP slewing) are followed, not
//! counted as steps.
//!
//! Every reading comes from a [`Clock`], never from `SystemTime` or a bare
//! `sleep`, so tests can drive days of rules in milliseconds: the driven
//! clock (`HERALD_TEST_CLOCK`, moved through `POST /v1/test/clock`) has a
//! wall time and a monotonic time that move together or apart.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A difference between the wall clock and herald time larger than this is
/// a step; smaller ones are drift, followed as they come.
pub const STEP: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct Clock(Arc<Inner>);

struct Inner {
    source: Source,
    line: Mutex<Timeline>,
    /// Wakes sleepers whenever a driven clock moves.
    moved: watch::Sender<()>,
    /// The number of steps seen; watched by whoever records them.
    steps: watch::Sender<u64>,
    /// Whether this clock's offsets are the ones [`shown`] uses.
    installed: std::sync::atomic::AtomicBool,
}

enum Source {
    System,
    /// Wall time and monotonic time, moved by tests.
    Driven(Mutex<(Timestamp, Duration)>),
}

/// A wall-clock step, as herald saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Herald time when it was seen (ms).
    pub at: i64,
    /// How far the wall clock moved beyond real time (ms; negative: back).
    pub by: i64,
}

/// What herald keeps of its time across restarts (in `META_BLOBS`).
/// Stored: append fields at the end only.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// The latest herald time read (ms).
    pub last: i64,
    /// Since when (herald time, ms) which offset is in force, and the
    /// lowest shown instant from then on; oldest first.
    pub ledger: Vec<Offset>,
}

/// From herald time `from` on, instants are shown `offset` ms later, and
/// not below `floor`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Offset {
    pub from: i64,
    pub offset: i64,
    pub floor: i64,
}

struct Timeline {
    /// Herald time is `anchor + (monotonic − anchor_mono)`.
    anchor: i64,
    anchor_mono: Duration,
    /// The latest herald time returned: it never goes back.
    last: i64,
    /// Shown = herald + offset, from `from` on.
    ledger: Vec<Offset>,
    /// Steps not yet taken by [`Clock::take_steps`].
    pending: Vec<Step>,
}

impl Timeline {
    fn offset(&self) -> Offset {
        self.ledger.last().copied().unwrap_or(Offset {
            from: i64::MIN,
            offset: 0,
            floor: i64::MIN,
        })
    }
}

/// The offsets of the process's clock, for showing stored instants from
/// anywhere (`rfc3339`, the pages, the exports) without passing the clock.
static SHOWN: RwLock<Vec<Offset>> = RwLock::new(Vec::new());

impl Clock {
    /// The system's clocks.
    pub fn system() -> Clock {
        Clock::new(Source::System)
    }

    /// A driven clock whose wall and herald time start at `start`.
    pub fn manual(start: Timestamp) -> Clock {
        Clock::new(Source::Driven(Mutex::new((start, Duration::ZERO))))
    }

    fn new(source: Source) -> Clock {
        let (wall, mono) = source.read();
        let now = to_ms(wall);
        Clock(Arc::new(Inner {
            source,
            line: Mutex::new(Timeline {
                anchor: now,
                anchor_mono: mono,
                last: now,
                ledger: Vec::new(),
                pending: Vec::new(),
            }),
            moved: watch::channel(()).0,
            steps: watch::channel(0).0,
            installed: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    pub fn is_manual(&self) -> bool {
        matches!(self.0.source, Source::Driven(_))
    }

    /// Herald time now: what due times, deadlines and ages are counted in.
    pub fn now(&self) -> Timestamp {
        from_ms(self.read())
    }

    /// Herald time now (ms); notices a step of the wall clock.
    fn read(&self) -> i64 {
        let (wall, mono) = self.0.source.read();
        let wall = to_ms(wall);
        let mut line = self.0.line.lock().unwrap();
        let elapsed = i64::try_from(mono.saturating_sub(line.anchor_mono).as_millis()).unwrap_or(i64::MAX);
        let mut now = line.anchor.saturating_add(elapsed).max(line.last);
        let current = line.offset();
        let drift = wall - (now + current.offset);
        if drift.unsigned_abs() <= STEP.as_millis() as u64 {
            // Drift (NTP slewing the clock, a few ms a second at most):
            // herald time follows the wall clock, but never goes back; it
            // stands still for the moment the wall clock takes to catch up.
            line.anchor += drift;
            now = (now + drift).max(line.last);
        } else {
            // A step: herald time goes on as real time did; the wall time
            // shown from now on moves by the step, never below what was shown.
            let floor = shown_with(&line.ledger, now);
            line.ledger.push(Offset {
                from: now,
                offset: current.offset + drift,
                floor,
            });
            line.pending.push(Step { at: now, by: drift });
            if self.0.installed.load(std::sync::atomic::Ordering::Relaxed) {
                *SHOWN.write().unwrap() = line.ledger.clone();
            }
            self.0.steps.send_modify(|n| *n += 1);
        }
        line.last = now;
        now
    }

    /// The wall time to show for now (ms): never below an instant shown before.
    #[cfg(test)]
    fn wall_ms(&self) -> i64 {
        let now = self.read();
        shown_with(&self.0.line.lock().unwrap().ledger, now)
    }

    /// Steps seen since the last call, oldest first.
    pub fn take_steps(&self) -> Vec<Step> {
        std::mem::take(&mut self.0.line.lock().unwrap().pending)
    }

    /// Changes each time a step is seen.
    pub fn steps(&self) -> watch::Receiver<u64> {
        self.0.steps.subscribe()
    }

    /// What to keep across a restart.
    pub fn saved(&self) -> Saved {
        let now = self.read();
        let line = self.0.line.lock().unwrap();
        Saved {
            last: now,
            ledger: line.ledger.clone(),
        }
    }

    /// Takes up what a previous run kept: herald time goes on from the
    /// wall clock less the offset in force (the downtime is what the wall
    /// clock says), but never from before the last time read, and the
    /// offsets keep showing stored instants as they were shown.
    pub fn restore(&self, saved: &Saved) {
        let (wall, mono) = self.0.source.read();
        let mut line = self.0.line.lock().unwrap();
        line.ledger = saved.ledger.clone();
        let offset = line.offset().offset;
        let now = (to_ms(wall) - offset).max(saved.last);
        line.anchor = now;
        line.anchor_mono = mono;
        line.last = now;
        if self.0.installed.load(std::sync::atomic::Ordering::Relaxed) {
            *SHOWN.write().unwrap() = line.ledger.clone();
        }
    }

    /// Makes this clock's offsets the ones [`shown`] uses: the daemon's
    /// clock, once per process.
    pub fn install(&self) {
        self.0.installed.store(true, std::sync::atomic::Ordering::Relaxed);
        *SHOWN.write().unwrap() = self.0.line.lock().unwrap().ledger.clone();
    }

    /// Moves a driven clock: both clocks by `by` (time passes), the wall
    /// clock alone by `step` (a step of the system clock), or the monotonic
    /// clock alone by `elapse`. Returns herald time; no-op on the system clock.
    pub fn drive(&self, by: SignedDuration, step: SignedDuration, elapse: Duration) -> Timestamp {
        if let Source::Driven(t) = &self.0.source {
            let mut t = t.lock().unwrap();
            let wall = t.0.saturating_add(by).and_then(|w| w.saturating_add(step));
            t.0 = wall.expect("a signed duration");
            t.1 += Duration::try_from(by).unwrap_or(Duration::ZERO) + elapse;
        }
        let now = self.now();
        self.0.moved.send_replace(());
        now
    }

    /// Moves a driven clock forward: time passes.
    pub fn advance(&self, by: SignedDuration) -> Timestamp {
        self.drive(by, SignedDuration::ZERO, Duration::ZERO)
    }

    /// Returns once herald time reads `t` or later.
    pub async fn sleep_until(&self, t: Timestamp) {
        let mut rx = self.0.moved.subscribe();
        loop {
            let wait = t.duration_since(self.now());
            if !wait.is_positive() {
                return;
            }
            match &self.0.source {
                // Real time: the monotonic clock, whatever the wall clock does.
                Source::System => tokio::time::sleep(Duration::try_from(wait).unwrap_or(Duration::ZERO)).await,
                Source::Driven(_) => {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

impl Source {
    /// The wall clock and the monotonic clock (suspend included).
    fn read(&self) -> (Timestamp, Duration) {
        match self {
            Source::System => {
                let mono = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
                let mono = Duration::new(mono.tv_sec as u64, mono.tv_nsec as u32);
                // Millisecond precision: what the store keeps and the API shows.
                let wall = Timestamp::now();
                (wall.round(jiff::Unit::Millisecond).unwrap_or(wall), mono)
            }
            Source::Driven(t) => *t.lock().unwrap(),
        }
    }
}

/// The wall time to show for herald time `ms` under `ledger`.
fn shown_with(ledger: &[Offset], ms: i64) -> i64 {
    match ledger.iter().rev().find(|o| o.from <= ms) {
        Some(o) => ms.saturating_add(o.offset).max(o.floor),
        None => ms,
    }
}

/// The wall time to show for a stored instant (herald time, ms): the one
/// it had when it was stored, whatever steps came since.
pub fn shown(ms: i64) -> i64 {
    let ledger = SHOWN.read().unwrap();
    if ledger.is_empty() {
        return ms;
    }
    shown_with(&ledger, ms)
}

/// The wall time to show for herald time `t`.
pub fn wall_of(t: Timestamp) -> Timestamp {
    from_ms(shown(to_ms(t)))
}

/// The herald time at which the wall clock will read `wall`, as far as the
/// offset in force now says: the due time of a calendar instant (midnight).
/// A step moves it, and whoever plans by the calendar plans again.
pub fn due_for_wall(wall: Timestamp) -> Timestamp {
    let offset = SHOWN.read().unwrap().last().map_or(0, |o| o.offset);
    from_ms(to_ms(wall).saturating_sub(offset))
}

/// A ULID for a record made at `ms` (herald time), greater than every one
/// this process made before: records made in the same millisecond keep
/// the order they were made in (a later run is later, also by its id).
pub fn ordered_ulid(ms: i64) -> ulid::Ulid {
    static LAST: std::sync::Mutex<ulid::Ulid> = std::sync::Mutex::new(ulid::Ulid::nil());
    let fresh = ulid::Ulid::from_parts(ms.max(0) as u64, rand::random());
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let next = if fresh > *last {
        fresh
    } else {
        // The same millisecond: one more than the last (a full one keeps
        // the fresh, unordered id).
        last.increment().unwrap_or(fresh)
    };
    *last = next;
    next
}

/// Milliseconds since the Unix epoch: how the store keeps instants.
pub fn to_ms(t: Timestamp) -> i64 {
    t.as_millisecond()
}

pub fn from_ms(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// RFC 3339 in UTC with milliseconds, as the API and the logs show a
/// stored instant (herald time, shown as wall time): `2026-11-22T10:00:05.000Z`.
pub fn rfc3339(ms: i64) -> String {
    fmt(from_ms(ms))
}

/// [`rfc3339`] of a timestamp (herald time) to the millisecond.
pub fn fmt(t: Timestamp) -> String {
    // jiff's RFC 3339 printer, not `strftime`, which interprets its format
    // at every call: every delivery's body carries one of these.
    const PRINTER: jiff::fmt::temporal::DateTimePrinter =
        jiff::fmt::temporal::DateTimePrinter::new().precision(Some(3));
    PRINTER.timestamp_to_string(&from_ms(shown(to_ms(t))))
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

    fn ms(t: &str) -> i64 {
        to_ms(t.parse().unwrap())
    }

    const HOUR: SignedDuration = SignedDuration::from_hours(1);

    #[test]
    fn a_forward_step_moves_what_is_shown_but_not_herald_time() {
        let clock = Clock::manual("2026-03-02T10:00:00Z".parse().unwrap());
        let before = to_ms(clock.now());
        clock.drive(SignedDuration::ZERO, HOUR * 24 * 7, Duration::ZERO);
        let now = to_ms(clock.now());
        assert_eq!(now, before, "no real time passed");
        assert_eq!(clock.wall_ms(), ms("2026-03-09T10:00:00Z"), "shown as the system says");
        let steps = clock.take_steps();
        assert_eq!(
            steps,
            [Step {
                at: now,
                by: 7 * 86_400_000
            }]
        );
        // Real time passes: both move on.
        clock.advance(HOUR);
        assert_eq!(to_ms(clock.now()), before + 3_600_000);
        assert_eq!(clock.wall_ms(), ms("2026-03-09T11:00:00Z"));
        // An instant stored before the step keeps the wall time it had.
        let line = clock.0.line.lock().unwrap();
        assert_eq!(shown_with(&line.ledger, before - 1000), before - 1000);
    }

    #[test]
    fn after_a_backward_step_nothing_shown_goes_below_what_was_shown() {
        let clock = Clock::manual("2026-03-02T10:00:00Z".parse().unwrap());
        let before = to_ms(clock.now());
        clock.drive(SignedDuration::ZERO, -HOUR * 24, Duration::ZERO);
        assert_eq!(to_ms(clock.now()), before);
        assert_eq!(clock.wall_ms(), before, "held at the last instant shown");
        clock.advance(HOUR);
        assert_eq!(to_ms(clock.now()), before + 3_600_000, "timers are not held back");
        assert_eq!(clock.wall_ms(), before, "the wall clock is still a day behind");
        clock.advance(HOUR * 24);
        assert_eq!(clock.wall_ms(), ms("2026-03-02T11:00:00Z"), "and then goes on");
    }

    #[test]
    fn monotonic_time_alone_is_real_time_passing_and_drift_is_followed() {
        let clock = Clock::manual("2026-03-02T10:00:00Z".parse().unwrap());
        let before = to_ms(clock.now());
        // Ten minutes pass while the wall clock stands still: a backward step.
        clock.drive(SignedDuration::ZERO, SignedDuration::ZERO, Duration::from_secs(600));
        assert_eq!(to_ms(clock.now()), before + 600_000);
        assert_eq!(clock.take_steps().len(), 1);
        // A second of drift is followed, not a step.
        let clock = Clock::manual("2026-03-02T10:00:00Z".parse().unwrap());
        clock.drive(SignedDuration::ZERO, SignedDuration::from_secs(1), Duration::ZERO);
        assert_eq!(to_ms(clock.now()), before + 1000);
        assert!(clock.take_steps().is_empty());
    }

    #[test]
    fn a_restart_counts_the_downtime_by_the_wall_clock_never_backwards() {
        let first = Clock::manual("2026-03-02T10:00:00Z".parse().unwrap());
        first.drive(SignedDuration::ZERO, HOUR * 24 * 7, Duration::ZERO);
        let saved = first.saved();
        // Down for an hour: the wall clock says so.
        let second = Clock::manual("2026-03-09T11:00:00Z".parse().unwrap());
        second.restore(&saved);
        assert_eq!(to_ms(second.now()), ms("2026-03-02T11:00:00Z"));
        assert_eq!(second.wall_ms(), ms("2026-03-09T11:00:00Z"));
        assert!(second.take_steps().is_empty());
        // Set back during the downtime: herald time goes on from where it was.
        let third = Clock::manual("2026-03-01T00:00:00Z".parse().unwrap());
        third.restore(&second.saved());
        assert_eq!(to_ms(third.now()), ms("2026-03-02T11:00:00Z"));
        assert_eq!(third.take_steps().len(), 1, "and the step is seen");
    }
}
