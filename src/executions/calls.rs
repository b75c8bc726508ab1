//! Successful calls into herald's API: summed per account and minute, and
//! written as one `info` line each in the daily execution of the built-in
//! interface `api` (failed calls have a line each: see
//! `mail::failed_calls`). A technician sees who talked to herald and how
//! much, without a line per event; a busy integration costs one small
//! write a minute.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::log::{API, log_successes, took};
use crate::app::App;
use crate::clock;
use crate::store::Grows;

/// The calls of the minute going on, by account.
#[derive(Default)]
pub struct ApiCalls(Mutex<HashMap<String, Tally>>);

/// One account's calls since `since`.
struct Tally {
    since: i64,
    calls: u64,
    /// Calls by route ("POST /v1/events").
    routes: BTreeMap<String, u64>,
    total: Duration,
    slowest: Duration,
}

/// How often the sums are written: at most one line per account and this.
const EVERY: Duration = Duration::from_secs(60);

impl ApiCalls {
    /// Counts one successful call of `account` to `route` that took `took`.
    pub fn count(&self, now_ms: i64, account: &str, route: &str, took: Duration) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // No allocation but for an account's or a route's first call of the minute.
        if !all.contains_key(account) {
            let tally = Tally {
                since: now_ms,
                calls: 0,
                routes: BTreeMap::new(),
                total: Duration::ZERO,
                slowest: Duration::ZERO,
            };
            all.insert(account.to_string(), tally);
        }
        let Some(t) = all.get_mut(account) else { return };
        t.calls += 1;
        match t.routes.get_mut(route) {
            Some(n) => *n += 1,
            None => {
                t.routes.insert(route.to_string(), 1);
            }
        }
        t.total += took;
        t.slowest = t.slowest.max(took);
    }

    /// The lines of what was counted, which starts again.
    fn take(&self) -> Vec<String> {
        let all = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        let mut accounts: Vec<(String, Tally)> = all.into_iter().collect();
        accounts.sort_by(|a, b| a.0.cmp(&b.0));
        accounts
            .into_iter()
            .map(|(account, t)| {
                let routes: Vec<String> = t.routes.iter().map(|(r, n)| format!("{r} {n}")).collect();
                format!(
                    "{account}: {} answered 2xx since {} ({} on average, the slowest {}): {}",
                    if t.calls == 1 {
                        "1 call".to_string()
                    } else {
                        format!("{} calls", t.calls)
                    },
                    clock::rfc3339(t.since),
                    took(t.total / u32::try_from(t.calls).unwrap_or(u32::MAX).max(1)),
                    took(t.slowest),
                    routes.join(", ")
                )
            })
            .collect()
    }
}

/// Writes the sums every minute (herald time), for as long as the app lives.
pub(super) fn summarize(app: &Arc<App>) {
    let weak: Weak<App> = Arc::downgrade(app);
    tokio::spawn(async move {
        loop {
            let Some(app) = weak.upgrade() else { return };
            let next = clock::add(app.clock.now(), EVERY);
            let clock = app.clock.clone();
            drop(app);
            clock.sleep_until(next).await;
            let Some(app) = weak.upgrade() else { return };
            let lines = app.state::<ApiCalls>().take();
            if lines.is_empty() {
                continue;
            }
            let (now, tz) = (app.clock.now(), app.settings().general.timezone.clone());
            let written = app
                .store
                .write_progress(Grows::No, move |txn| log_successes(txn, now, &tz, API, "api", lines))
                .await;
            if let Err(e) = written {
                tracing::debug!(error = %e, "the minute's API calls were not logged");
            }
        }
    });
}
