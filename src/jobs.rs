//! The durable timer queue and its dispatcher: herald's engine.
//!
//! Every piece of future work is a [`Job`] in the `JOBS` table, keyed by its
//! due time. The dispatcher sleeps on the [`Clock`] until the earliest due job
//! (or until a commit that touched the queue wakes it), claims what is due and
//! runs it under a concurrency limit per target.
//!
//! A claim lives only in memory. A job stays in the table until its handler
//! commits the outcome (finish or reschedule) in the same transaction as the
//! state it changes, so a crash anywhere leaves the job due and it runs again
//! after the restart: at least once, never lost.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::clock::{self, Clock};
use crate::metrics::Metrics;
use crate::store::{self, Store, StoreError, Txn};

store::tables! {
    /// (due ms, job id) -> `jobs::Job`: the durable timer queue, in due order.
    JOBS: redb::TableDefinition<(i64, u64), &[u8]> = ("jobs", 4);
    /// job name -> its key in `JOBS`, for jobs that exist at most once (the midnight roll).
    JOB_NAMES: redb::TableDefinition<&str, (i64, u64)> = ("job_names", 5);
}

/// A job's place in the queue: (due ms, id).
pub type JobKey = (i64, u64);

/// Every kind of future work. Append new kinds at the end: the stored
/// encoding is the variant's position.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Job {
    /// Close the daily executions of the day that ended, then schedule the next roll.
    RollDaily,
    /// Delete events and executions past `storage.retention`.
    Sweep,
    /// Send (or retry) one mail of the outbox.
    SendMail { id: String },
    /// Deliver the queued events of one webhook, in order.
    Deliver { webhook: String, host: String },
    /// The buffer window of a deactivated webhook is over.
    WebhookBufferEnd { webhook: String },
    /// Ping the URL of one change notification.
    Ping {
        system: String,
        event: String,
        host: String,
    },
    /// Call the external system of one action (its first call or a retry).
    /// The callback token rides here, since the action keeps only its hash.
    ActionCall { id: String, token: String, host: String },
    /// The wait of an accepted action for its callback is over.
    ActionTimeout { id: String },
    /// The planned run of one schedule.
    ScheduleRun { schedule: String, host: String },
    /// A run may have been going for an hour: flag it if it still is.
    RunAnomaly { execution: String },
}

impl Job {
    pub fn kind(&self) -> &'static str {
        match self {
            Job::RollDaily => "roll_daily",
            Job::Sweep => "sweep",
            Job::SendMail { .. } => "send_mail",
            Job::Deliver { .. } => "deliver",
            Job::WebhookBufferEnd { .. } => "webhook_buffer_end",
            Job::Ping { .. } => "notification_ping",
            Job::ActionCall { .. } => "action_call",
            Job::ActionTimeout { .. } => "action_timeout",
            Job::ScheduleRun { .. } => "schedule_run",
            Job::RunAnomaly { .. } => "run_anomaly",
        }
    }

    /// The counterpart this job talks to; at most `per_target` jobs of one
    /// target run at once, so a slow one cannot hold up the others.
    pub fn target(&self) -> String {
        match self {
            Job::RollDaily
            | Job::Sweep
            | Job::WebhookBufferEnd { .. }
            | Job::ActionTimeout { .. }
            | Job::RunAnomaly { .. } => "herald".to_string(),
            Job::SendMail { .. } => "smtp".to_string(),
            Job::Deliver { host, .. }
            | Job::Ping { host, .. }
            | Job::ActionCall { host, .. }
            | Job::ScheduleRun { host, .. } => host.clone(),
        }
    }
}

/// The error for a job handed to a feature that does not own its kind.
pub fn misrouted(job: &Job, feature: &str) -> StoreError {
    StoreError::Corrupt("job", format!("a {} job was handed to {feature}", job.kind()))
}

#[derive(Serialize, Deserialize)]
struct Record {
    /// Set for jobs that exist at most once (see [`schedule_named`]).
    name: Option<String>,
    job: Job,
}

/// Claimed jobs at most; the rest wait in the table, not in memory.
const MAX_IN_FLIGHT: usize = 256;
/// A handler that failed without committing is tried again this much later.
const RETRY_FAILED_HANDLER: Duration = Duration::from_secs(30);

/// Adds a job due at `due`.
pub fn schedule(txn: &mut Txn, due: Timestamp, job: Job) -> Result<JobKey, StoreError> {
    insert(txn, due, Record { name: None, job })
}

/// Adds or moves the job called `name`, so it exists exactly once.
pub fn schedule_named(txn: &mut Txn, name: &str, due: Timestamp, job: Job) -> Result<JobKey, StoreError> {
    let old = txn.open(JOB_NAMES)?.get(name)?.map(|v| v.value());
    if let Some(old) = old {
        txn.open(JOBS)?.remove(old)?;
    }
    let key = insert(
        txn,
        due,
        Record {
            name: Some(name.to_string()),
            job,
        },
    )?;
    txn.open(JOB_NAMES)?.insert(name, key)?;
    Ok(key)
}

/// The key of the job called `name`, if it is scheduled.
pub fn named(txn: &Txn, name: &str) -> Result<Option<JobKey>, StoreError> {
    Ok(txn.open(JOB_NAMES)?.get(name)?.map(|v| v.value()))
}

/// The job called `name` and its key, if it is scheduled.
pub fn get_named(r: &ReadTransaction, name: &str) -> Result<Option<(JobKey, Job)>, StoreError> {
    let Some(key) = r.open_table(JOB_NAMES)?.get(name)?.map(|v| v.value()) else {
        return Ok(None);
    };
    let bytes = r.open_table(JOBS)?.get(key)?.map(|v| v.value().to_vec());
    bytes
        .map(|b| store::decode::<Record>("job", &b).map(|rec| (key, rec.job)))
        .transpose()
}

/// Removes the job called `name`, if it is scheduled.
pub fn cancel_named(txn: &mut Txn, name: &str) -> Result<(), StoreError> {
    let key = txn.open(JOB_NAMES)?.remove(name)?.map(|v| v.value());
    if let Some(key) = key {
        txn.open(JOBS)?.remove(key)?;
    }
    Ok(())
}

/// Removes a job whose work is done.
pub fn finish(txn: &mut Txn, key: JobKey) -> Result<(), StoreError> {
    let removed = txn.open(JOBS)?.remove(key)?.map(|v| v.value().to_vec());
    if let Some(bytes) = removed {
        let rec: Record = store::decode("job", &bytes)?;
        if let Some(name) = rec.name {
            let mut names = txn.open(JOB_NAMES)?;
            if names.get(name.as_str())?.is_some_and(|v| v.value() == key) {
                names.remove(name.as_str())?;
            }
        }
    }
    Ok(())
}

/// Moves a job to a new due time (its next attempt); returns the new key.
pub fn reschedule(txn: &mut Txn, key: JobKey, due: Timestamp) -> Result<Option<JobKey>, StoreError> {
    let removed = txn.open(JOBS)?.remove(key)?.map(|v| v.value().to_vec());
    let Some(bytes) = removed else { return Ok(None) };
    let rec: Record = store::decode("job", &bytes)?;
    let name = rec.name.clone();
    let new = insert(txn, due, rec)?;
    if let Some(name) = name {
        txn.open(JOB_NAMES)?.insert(name.as_str(), new)?;
    }
    Ok(Some(new))
}

fn insert(txn: &mut Txn, due: Timestamp, rec: Record) -> Result<JobKey, StoreError> {
    let key = (clock::to_ms(due), txn.next_id("jobs.next_id")?);
    txn.open(JOBS)?.insert(key, store::encode(&rec).as_slice())?;
    txn.wake_jobs();
    Ok(key)
}

/// Jobs due at `now`, for the status summary and `/metrics`.
pub fn count_due(store: &Store, now: Timestamp) -> Result<u64, StoreError> {
    store.read(|r| {
        let jobs = r.open_table(JOBS)?;
        let mut n = 0;
        for row in jobs.range(..(clock::to_ms(now), u64::MAX))? {
            row?;
            n += 1;
        }
        Ok(n)
    })
}

pub fn count_all(store: &Store) -> Result<u64, StoreError> {
    store.read(|r| Ok(r.open_table(JOBS)?.len()?))
}

/// How a job's work went, for `/metrics`: a delivery that failed and was
/// rescheduled has run its job, but its work failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Ran {
    Ok,
    Failed,
}

/// What runs a claimed job. The handler commits the job's outcome itself
/// ([`finish`] or [`reschedule`]) in the transaction that changes its state.
pub trait Handler: Send + Sync + 'static {
    fn run(&self, key: JobKey, job: Job) -> Pin<Box<dyn Future<Output = Result<Ran, StoreError>> + Send + '_>>;
}

/// Claimed jobs, and when the next one after them is due.
type Scan = (Vec<(JobKey, Job)>, Option<Timestamp>);

pub struct Dispatcher {
    pub store: Store,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    /// Notified by the store writer after a commit that touched the queue.
    pub wake: Arc<Notify>,
    pub handler: Arc<dyn Handler>,
    /// Jobs of one target (a receiver's host and port) running at once.
    pub per_target: usize,
}

impl Dispatcher {
    /// Runs until `stop` is cancelled, then lets the claimed jobs finish for
    /// at most `drain`; those still running are aborted without committing,
    /// so they run again after the restart.
    pub async fn run(self, stop: CancellationToken, drain: Duration) {
        let in_flight: Arc<Mutex<HashSet<JobKey>>> = Arc::default();
        let mut limits: HashMap<String, Arc<Semaphore>> = HashMap::new();
        let mut tasks = tokio::task::JoinSet::new();
        // Ping systemd's watchdog from this loop: if the engine hangs, the
        // pings stop and systemd restarts herald.
        let watchdog = sd_notify::watchdog_enabled().map(|d| d / 2);
        let tick = watchdog.unwrap_or(Duration::from_secs(60));

        while !stop.is_cancelled() {
            if watchdog.is_some() {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
            }
            let now = self.clock.now();
            // Reap finished tasks, so the set holds only running ones.
            while tasks.try_join_next().is_some() {}
            let claimed = in_flight.lock().unwrap().clone();
            let room = MAX_IN_FLIGHT.saturating_sub(claimed.len());
            let (due, next) = match self.scan(now, &claimed, room) {
                Ok(x) => x,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the job queue");
                    (Vec::new(), Some(clock::add(now, Duration::from_secs(1))))
                }
            };
            self.metrics.jobs_due.set((due.len() + claimed.len()) as i64);
            limits.retain(|_, s| Arc::strong_count(s) > 1);
            for (key, job) in due {
                in_flight.lock().unwrap().insert(key);
                let limit = limits
                    .entry(job.target())
                    .or_insert_with(|| Arc::new(Semaphore::new(self.per_target)))
                    .clone();
                let handler = self.handler.clone();
                let (store, clock, metrics, in_flight, wake) = (
                    self.store.clone(),
                    self.clock.clone(),
                    self.metrics.clone(),
                    in_flight.clone(),
                    self.wake.clone(),
                );
                tasks.spawn(async move {
                    let _permit = limit.acquire_owned().await;
                    let kind = job.kind();
                    let outcome = handler.run(key, job).await;
                    let outcome = match outcome {
                        Ok(ran) => still_due(&store, key).map(|stuck| match (stuck, ran) {
                            (true, _) => "stuck",
                            (false, Ran::Ok) => "ok",
                            (false, Ran::Failed) => "failed",
                        }),
                        Err(e) => Err(e),
                    };
                    let recorded = match outcome {
                        Ok(done @ ("ok" | "failed")) => {
                            metrics.job(kind, done);
                            true
                        }
                        Ok(_) => {
                            tracing::error!(kind, "job handler returned without finishing its job; retrying later");
                            metrics.job(kind, "stuck");
                            retry_later(&store, &clock, key).await
                        }
                        Err(e) => {
                            // The store logs its own state (full, recovering) once.
                            if e.is_state() {
                                tracing::debug!(kind, error = %e, "job failed; retrying later");
                            } else {
                                tracing::error!(kind, error = %e, "job failed; retrying later");
                            }
                            metrics.job(kind, "error");
                            retry_later(&store, &clock, key).await
                        }
                    };
                    if recorded {
                        in_flight.lock().unwrap().remove(&key);
                        wake.notify_one();
                    } else {
                        // Its retry could not be stored either: keep the job
                        // claimed for as long, or it would run again at once.
                        tokio::spawn(async move {
                            tokio::time::sleep(RETRY_FAILED_HANDLER).await;
                            in_flight.lock().unwrap().remove(&key);
                            wake.notify_one();
                        });
                    }
                });
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = async {
                    match next {
                        Some(t) => self.clock.sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = tokio::time::sleep(tick) => {}
            }
        }
        let all_done = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(drain, all_done).await.is_err() {
            tracing::warn!(
                jobs = tasks.len(),
                "jobs still running at the drain timeout; they will run again after the restart"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
    }

    /// Up to `room` due jobs not yet claimed, and the due time of the first
    /// job after them.
    fn scan(&self, now: Timestamp, claimed: &HashSet<JobKey>, room: usize) -> Result<Scan, StoreError> {
        let now_ms = clock::to_ms(now);
        self.store.read(|r| {
            let jobs = r.open_table(JOBS)?;
            let mut due = Vec::new();
            for row in jobs.iter()? {
                let (k, v) = row?;
                let key = k.value();
                if claimed.contains(&key) {
                    continue;
                }
                if key.0 > now_ms {
                    return Ok((due, Some(clock::from_ms(key.0))));
                }
                if due.len() >= room {
                    // More is due than may run: come back when a claimed
                    // job finishes (it wakes us), not in a busy loop.
                    let next = if due.is_empty() { None } else { Some(now) };
                    return Ok((due, next));
                }
                match store::decode::<Record>("job", v.value()) {
                    Ok(rec) => due.push((key, rec.job)),
                    // A job this herald cannot read would block nothing but
                    // itself; leave it for the operator and the log.
                    Err(e) => tracing::error!(?key, error = %e, "unreadable job skipped"),
                }
            }
            Ok((due, None))
        })
    }
}

fn still_due(store: &Store, key: JobKey) -> Result<bool, StoreError> {
    store.read(|r| Ok(r.open_table(JOBS)?.get(key)?.is_some()))
}

/// Moves a failed job to later; whether that could be stored.
async fn retry_later(store: &Store, clock: &Clock, key: JobKey) -> bool {
    let due = clock::add(clock.now(), RETRY_FAILED_HANDLER);
    match store
        .write(store::Grows::No, move |txn| reschedule(txn, key, due))
        .await
    {
        Ok(_) => true,
        Err(e) => {
            if !e.is_state() {
                tracing::error!(error = %e, "cannot reschedule a failed job");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::store::Grows;

    const PER_TARGET: usize = 4;

    /// Records the jobs it runs; finishes them only when told to.
    struct Recorder {
        store: Store,
        finish: bool,
        ran: Mutex<Vec<Job>>,
        running: AtomicUsize,
        most_at_once: AtomicUsize,
        hold: Duration,
    }

    impl Handler for Recorder {
        fn run(&self, key: JobKey, job: Job) -> Pin<Box<dyn Future<Output = Result<Ran, StoreError>> + Send + '_>> {
            Box::pin(async move {
                let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
                self.most_at_once.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(self.hold).await;
                self.ran.lock().unwrap().push(job);
                self.running.fetch_sub(1, Ordering::SeqCst);
                if self.finish {
                    self.store.write(Grows::No, move |txn| finish(txn, key)).await?;
                    Ok(Ran::Ok)
                } else {
                    Err(StoreError::Closed)
                }
            })
        }
    }

    fn open(dir: &std::path::Path) -> (Store, crate::store::WriterGuard, Arc<Notify>) {
        let wake = Arc::new(Notify::new());
        let (store, guard) = Store::open(
            dir,
            1 << 20,
            1 << 30,
            crate::tables(),
            Arc::new(Metrics::new()),
            wake.clone(),
        )
        .unwrap();
        (store, guard, wake)
    }

    fn recorder(store: &Store, finish: bool, hold: Duration) -> Arc<Recorder> {
        Arc::new(Recorder {
            store: store.clone(),
            finish,
            ran: Mutex::default(),
            running: AtomicUsize::new(0),
            most_at_once: AtomicUsize::new(0),
            hold,
        })
    }

    async fn run_for(store: &Store, clock: &Clock, wake: Arc<Notify>, handler: Arc<Recorder>, d: Duration) {
        let dispatcher = Dispatcher {
            store: store.clone(),
            clock: clock.clone(),
            metrics: Arc::new(Metrics::new()),
            wake,
            handler,
            per_target: PER_TARGET,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(dispatcher.run(stop.clone(), Duration::from_secs(5)));
        tokio::time::sleep(d).await;
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn due_jobs_run_in_order_and_future_ones_wait_for_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _guard, wake) = open(dir.path());
        let clock = Clock::manual("2026-11-22T10:00:00Z".parse().unwrap());
        let now = clock.now();
        store
            .write(Grows::No, move |txn| {
                schedule(txn, clock::add(now, Duration::from_secs(60)), Job::RollDaily)?;
                schedule(txn, now, Job::Sweep)?;
                Ok(())
            })
            .await
            .unwrap();
        let h = recorder(&store, true, Duration::ZERO);
        let c2 = clock.clone();
        let h2 = h.clone();
        let s2 = store.clone();
        let w2 = wake.clone();
        let run = tokio::spawn(async move { run_for(&s2, &c2, w2, h2, Duration::from_millis(300)).await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*h.ran.lock().unwrap(), vec![Job::Sweep], "only the due job ran");
        clock.advance(jiff::SignedDuration::from_secs(60));
        run.await.unwrap();
        assert_eq!(*h.ran.lock().unwrap(), vec![Job::Sweep, Job::RollDaily]);
        assert_eq!(count_all(&store).unwrap(), 0);
    }

    #[tokio::test]
    async fn a_job_that_did_not_finish_runs_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::manual("2026-11-22T10:00:00Z".parse().unwrap());
        {
            let (store, guard, wake) = open(dir.path());
            let now = clock.now();
            store
                .write(Grows::No, move |txn| schedule(txn, now, Job::Sweep).map(|_| ()))
                .await
                .unwrap();
            // The handler "crashes": it never commits an outcome.
            let h = recorder(&store, false, Duration::ZERO);
            run_for(&store, &clock, wake, h.clone(), Duration::from_millis(100)).await;
            assert_eq!(h.ran.lock().unwrap().len(), 1);
            drop(h);
            drop(store);
            guard.close(Duration::from_secs(5));
        }
        let (store, _guard, wake) = open(dir.path());
        assert_eq!(count_all(&store).unwrap(), 1, "the unfinished job is still queued");
        clock.advance(jiff::SignedDuration::from_secs(60));
        let h = recorder(&store, true, Duration::ZERO);
        run_for(&store, &clock, wake, h.clone(), Duration::from_millis(200)).await;
        assert_eq!(*h.ran.lock().unwrap(), vec![Job::Sweep]);
        assert_eq!(count_all(&store).unwrap(), 0);
    }

    #[tokio::test]
    async fn one_target_runs_at_most_per_target_jobs_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _guard, wake) = open(dir.path());
        let clock = Clock::manual("2026-11-22T10:00:00Z".parse().unwrap());
        let now = clock.now();
        store
            .write(Grows::No, move |txn| {
                for _ in 0..12 {
                    schedule(txn, now, Job::Sweep)?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let h = recorder(&store, true, Duration::from_millis(50));
        run_for(&store, &clock, wake, h.clone(), Duration::from_millis(600)).await;
        assert_eq!(h.ran.lock().unwrap().len(), 12);
        assert_eq!(h.most_at_once.load(Ordering::SeqCst), PER_TARGET);
    }
}
