//! The retention sweep: one durable job that deletes, in bounded chunks,
//! what is older than `storage.retention`: the events no webhook still has
//! to deliver, executions that ended with their log lines, and sent or
//! failed mails. It asks each feature what it still needs and lets each
//! delete its own records; none of them knows the others.

use std::time::Duration;

use jiff::Timestamp;

use crate::App;
use crate::clock;
use crate::jobs::{self, Job, JobKey};
use crate::store::{Grows, StoreError, Txn};
use crate::{events, executions, mail, webhooks};

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
        jobs::schedule_named(txn, JOB, clock::add(now, interval(retention)), Job::Sweep)?;
    }
    Ok(())
}

/// Runs the sweep job; it reschedules itself.
pub async fn run_job(app: &App, key: JobKey, job: Job) -> Result<jobs::Ran, StoreError> {
    let Job::Sweep = job else {
        return Err(jobs::misrouted(&job, "retention"));
    };
    let now = app.clock.now();
    let retention = app.settings().storage.retention;
    app.store
        .write(Grows::No, move |txn| sweep(txn, key, now, retention))
        .await?;
    Ok(jobs::Ran::Ok)
}

fn sweep(txn: &mut Txn, key: JobKey, now: Timestamp, retention: Duration) -> Result<(), StoreError> {
    let cutoff = clock::sub(now, retention);
    let hooks = webhooks::ids(txn)?;
    let needed = |txn: &Txn, seq: u64| webhooks::needs(txn, &hooks, seq);
    let more = events::sweep(txn, cutoff, BUDGET, &needed)?
        | executions::sweep(txn, cutoff, BUDGET)?
        | mail::sweep(txn, cutoff, BUDGET)?;
    let next = if more {
        now
    } else {
        clock::add(now, interval(retention))
    };
    jobs::reschedule(txn, key, next)?;
    Ok(())
}
