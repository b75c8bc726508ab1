//! Keeps herald time across restarts: what the clock saved (the latest
//! herald time and the ledger of offsets, see `clock.rs`) is read before
//! anything reads the clock, and written on each step, every ten minutes
//! and at a clean stop.

use std::time::Duration;

use crate::clock::{Clock, Saved};
use crate::store::{self, Grows, META_BLOBS, Store, StoreError};

/// The `META_BLOBS` key of the clock's `Saved` (postcard). Stored: keep it.
const KEY: &str = "clock";
/// How often herald time is saved while nothing else saves it: after a
/// crash, a restart on a wall clock set back resumes from at most this long ago.
pub const SAVE_EVERY: Duration = Duration::from_secs(600);
/// A downtime longer than this is said in the log at start.
const LONG_DOWNTIME_MS: i64 = 86_400_000;

/// Takes up what the last run saved, and makes the clock the one that shows
/// stored instants.
pub fn restore(store: &Store, clock: &Clock) -> Result<(), StoreError> {
    let saved: Option<Saved> = store.read(|r| match r.open_table(META_BLOBS)?.get(KEY)? {
        Some(v) => store::decode("clock", v.value()).map(Some),
        None => Ok(None),
    })?;
    if let Some(saved) = saved {
        clock.restore(&saved);
        // The downtime is what the wall clock says: a long one makes what
        // fell due meanwhile (retries, buffers, retention) run at once.
        let down = crate::clock::to_ms(clock.now()) - saved.last;
        if down > LONG_DOWNTIME_MS {
            tracing::warn!(
                down = %humantime::format_duration(Duration::from_secs((down / 1000) as u64)),
                last = %crate::clock::rfc3339(saved.last),
                "herald was stopped this long by the wall clock; what fell due meanwhile runs now \
                 (if the clock was wrong before or is wrong now, that is what moved)"
            );
        }
    }
    clock.install();
    Ok(())
}

/// Saves herald time now.
pub async fn save(store: &Store, clock: &Clock) -> Result<(), StoreError> {
    let saved = store::encode(&clock.saved());
    store
        .write_progress(Grows::No, move |txn| {
            txn.open(META_BLOBS)?.insert(KEY, saved.as_slice())?;
            Ok(())
        })
        .await
}
