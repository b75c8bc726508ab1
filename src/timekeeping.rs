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

/// Takes up what the last run saved, and makes the clock the one that shows
/// stored instants.
pub fn restore(store: &Store, clock: &Clock) -> Result<(), StoreError> {
    let saved: Option<Saved> = store.read(|r| match r.open_table(META_BLOBS)?.get(KEY)? {
        Some(v) => store::decode("clock", v.value()).map(Some),
        None => Ok(None),
    })?;
    if let Some(saved) = saved {
        clock.restore(&saved);
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
