//! The retention sweep: one durable job that deletes, in bounded chunks,
//! what is older than `storage.retention`: the events no webhook still has
//! to deliver and no change feed has yet to read (up to
//! `notifications.keep_unread`, as for the events a push schedule has not
//! sent yet), executions that ended with their log
//! lines, and sent or failed mails. It asks each feature what it still
//! needs and lets each delete its own records; none of them knows the others.

use crate::jobs::Runner;
use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::app::App;
use crate::clock;
use crate::config::Config;
use crate::feature::Feature;
use serde::{Deserialize, Serialize};

use crate::jobs::{self, JobKey, JobKind};
use crate::store::{Grows, StoreError, Txn};
use crate::{actions, events, executions, mail, notifications, schedules, webhooks, worklist};

/// The sweep, as a feature: its job, planned at start.
pub const FEATURE: Feature = Feature {
    jobs: &[Runner::of::<Sweep>()],
    start: Some(|app| Box::pin(plan(app))),
    ..Feature::named("retention")
};

/// Makes sure the sweep is planned (at start).
async fn plan(app: &Arc<App>) -> Result<(), StoreError> {
    let now = app.clock.now();
    let retention = app.settings().storage.retention;
    app.store
        .write(Grows::No, move |txn| schedule(txn, now, retention))
        .await
}

/// The job's name in the queue (stored: keep it).
const JOB: &str = "events.sweep";
/// Rows each part deletes per sweep transaction, so a sweep never holds the
/// writer long; the job comes back at once while more remain.
const BUDGET: usize = 5000;

/// How often the sweep runs: often enough that a short retention (tests use
/// seconds) is honoured, at most every ten minutes.
pub fn interval(retention: Duration) -> Duration {
    (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600))
}

/// Makes sure the sweep is scheduled (at start).
pub fn schedule(txn: &mut Txn, now: Timestamp, retention: Duration) -> Result<(), StoreError> {
    if jobs::named(txn, JOB)?.is_none() {
        jobs::schedule_named(txn, JOB, clock::add(now, interval(retention)), &Sweep)?;
    }
    Ok(())
}

/// The sweep job: delete what `storage.retention` lets go; it reschedules itself.
#[derive(Debug, Serialize, Deserialize)]
pub struct Sweep;

impl JobKind for Sweep {
    const ID: u32 = 1;
    const NAME: &'static str = "sweep";

    async fn run(self, app: &App, key: JobKey) -> Result<jobs::Ran, StoreError> {
        let now = app.clock.now();
        let settings = app.settings();
        app.store
            .write(Grows::No, move |txn| sweep(txn, key, now, &settings))
            .await?;
        Ok(jobs::Ran::Ok)
    }
}

fn sweep(txn: &mut Txn, key: JobKey, now: Timestamp, settings: &Config) -> Result<(), StoreError> {
    let retention = settings.storage.retention;
    let cutoff = clock::sub(now, retention);
    let hooks = webhooks::ids(txn)?;
    let feeds = notifications::Feeds::of(txn)?;
    let pushes = schedules::Pushes::of(txn, settings)?;
    let unread_kept_since = clock::to_ms(clock::sub(now, settings.notifications.keep_unread));
    // Events dropped before a change feed read them: counted after the sweep.
    let missed = RefCell::new(Vec::new());
    let needed = |txn: &Txn, seq: u64, e: &events::StoredEvent| {
        if webhooks::needs(txn, &hooks, seq)? {
            return Ok(true);
        }
        // A push schedule that has not sent it yet keeps it as long as a
        // change feed would.
        if pushes.unsent(seq, &e.event) && e.created_at >= unread_kept_since {
            return Ok(true);
        }
        let unread = feeds.unread(seq, &e.event);
        if unread.is_empty() {
            return Ok(false);
        }
        if e.created_at >= unread_kept_since {
            return Ok(true);
        }
        missed
            .borrow_mut()
            .extend(unread.into_iter().map(|system| (system, e.event.clone())));
        Ok(false)
    };
    // What is on the worklist stays, whatever its age.
    let known = worklist::Known::read(
        settings,
        &txn.open(webhooks::WEBHOOKS)?,
        &txn.open(notifications::NOTIFICATIONS)?,
    )?;
    let kinds = executions::interface_kinds(&txn.open(executions::INTERFACES)?)?;
    let listed = |exe: &executions::Execution, later: &executions::LaterOk| {
        known.execution(exe, later, kinds.get(&exe.interface).map_or("", String::as_str))
    };
    let more = events::sweep(txn, cutoff, BUDGET, &needed)?
        | executions::sweep(txn, cutoff, BUDGET, listed)?
        | mail::sweep(txn, cutoff, BUDGET)?
        | actions::sweep(txn, cutoff, BUDGET, |a| known.action(a))?;
    let next = if more {
        now
    } else {
        clock::add(now, interval(retention))
    };
    notifications::missed(txn, now, &settings.general.timezone, missed.into_inner())?;
    jobs::reschedule(txn, key, next)?;
    Ok(())
}
