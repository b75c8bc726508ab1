//! Named points where a test build can make the process die as by
//! `kill -9`, to prove that a crash at any step of the journal's append,
//! apply and checkpoint loses nothing acknowledged.
//!
//! `HERALD_TEST_CRASH_AT=name:n` kills the process the n-th time it passes
//! `name`. Only builds with the `test-hooks` feature read it.

/// Passes the point `name`; if it is the one armed, runs `last` (to leave
/// a half-done write behind) and dies without any cleanup.
#[cfg(feature = "test-hooks")]
pub(super) fn point(name: &str, last: impl FnOnce()) {
    use std::sync::Mutex;
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<(String, Mutex<u64>)>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var("HERALD_TEST_CRASH_AT").ok()?;
        let (at, n) = spec.rsplit_once(':')?;
        Some((at.to_string(), Mutex::new(n.parse().ok()?)))
    });
    let Some((at, left)) = armed else { return };
    if at != name {
        return;
    }
    let mut left = left.lock().unwrap();
    *left = left.saturating_sub(1);
    if *left == 0 {
        last();
        let _ = signal_hook::low_level::raise(signal_hook::consts::SIGKILL);
    }
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub(super) fn point(_name: &str, _last: impl FnOnce()) {}

/// The checkpoint interval: `HERALD_TEST_CHECKPOINT_EVERY` (milliseconds)
/// in test builds, so that crash tests meet many checkpoints.
pub(super) fn checkpoint_every(default: std::time::Duration) -> std::time::Duration {
    #[cfg(feature = "test-hooks")]
    if let Some(ms) = std::env::var("HERALD_TEST_CHECKPOINT_EVERY")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return std::time::Duration::from_millis(ms);
    }
    default
}
