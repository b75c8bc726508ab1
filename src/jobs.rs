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
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::app::App;
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

/// A kind of future work, declared by the feature that runs it.
///
/// A stored job is its name (for jobs that exist at most once), its kind's
/// [`ID`](JobKind::ID) as a postcard varint, then the kind's fields in
/// postcard: the same bytes as the one enum of the first release, whose
/// variant indexes became the ids. The id is what makes stored bytes mean
/// this kind, so it is never changed and never reused; a new kind takes a
/// new id, and the registry refuses two kinds with one id at start.
pub trait JobKind: Serialize + DeserializeOwned + Send + 'static {
    /// Stored with every job of this kind.
    const ID: u32;
    /// The kind in logs and `/metrics`.
    const NAME: &'static str;

    /// The counterpart this job talks to; at most `per_target` jobs of one
    /// target run at once, so a slow one cannot hold up the others.
    fn target(&self) -> String {
        "herald".to_string()
    }

    /// Does the work. It commits the job's outcome itself ([`finish`] or
    /// [`reschedule`]) in the transaction that changes its state.
    fn run(self, app: &App, key: JobKey) -> impl Future<Output = Result<Ran, StoreError>> + Send;
}

/// A job as the queue holds it: its kind's id and its fields, still encoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub kind: u32,
    pub payload: Vec<u8>,
}

impl Job {
    pub fn of<J: JobKind>(job: &J) -> Job {
        Job {
            kind: J::ID,
            payload: store::encode(job),
        }
    }
}

/// A job's work, under way.
pub type Running<'a> = Pin<Box<dyn Future<Output = Result<Ran, StoreError>> + Send + 'a>>;

/// How the engine runs one kind: what a feature's descriptor lists.
pub struct Runner {
    pub id: u32,
    pub name: &'static str,
    target: fn(&[u8]) -> Result<String, StoreError>,
    run: for<'a> fn(&'a App, JobKey, &'a [u8]) -> Running<'a>,
}

impl Runner {
    pub const fn of<J: JobKind>() -> Runner {
        Runner {
            id: J::ID,
            name: J::NAME,
            target: target_of::<J>,
            run: run_of::<J>,
        }
    }
}

fn target_of<J: JobKind>(payload: &[u8]) -> Result<String, StoreError> {
    Ok(store::decode::<J>(J::NAME, payload)?.target())
}

fn run_of<'a, J: JobKind>(app: &'a App, key: JobKey, payload: &'a [u8]) -> Running<'a> {
    Box::pin(async move { store::decode::<J>(J::NAME, payload)?.run(app, key).await })
}

/// Every kind of job of a herald, by id; two kinds with one id or one name
/// are refused.
pub struct Runners(Vec<&'static Runner>);

impl Runners {
    pub fn new(all: impl IntoIterator<Item = &'static Runner>) -> Result<Runners, String> {
        let mut kinds: Vec<&'static Runner> = Vec::new();
        for runner in all {
            if let Some(other) = kinds.iter().find(|r| r.id == runner.id) {
                return Err(format!(
                    "the job kinds {} and {} both have the id {}: give the newer one a new id, never reuse one",
                    other.name, runner.name, runner.id
                ));
            }
            if kinds.iter().any(|r| r.name == runner.name) {
                return Err(format!("the job kind {} is declared twice", runner.name));
            }
            kinds.push(runner);
        }
        kinds.sort_by_key(|r| r.id);
        Ok(Runners(kinds))
    }

    /// (id, name) of every kind, by id: what the golden test pins.
    pub fn ids(&self) -> Vec<(u32, &'static str)> {
        self.0.iter().map(|r| (r.id, r.name)).collect()
    }
}

/// Runs each job with the feature that owns its kind.
pub struct Engine {
    pub app: Arc<App>,
    pub runners: Runners,
}

impl Handler for Engine {
    fn describe(&self, job: &Job) -> Result<(&'static str, String), StoreError> {
        let runner = self.runner(job)?;
        Ok((runner.name, (runner.target)(&job.payload)?))
    }

    fn run(&self, key: JobKey, job: Job) -> Pin<Box<dyn Future<Output = Result<Ran, StoreError>> + Send + '_>> {
        Box::pin(async move {
            let runner = self.runner(&job)?;
            (runner.run)(&self.app, key, &job.payload).await
        })
    }
}

impl Engine {
    fn runner(&self, job: &Job) -> Result<&'static Runner, StoreError> {
        self.runners
            .0
            .iter()
            .find(|r| r.id == job.kind)
            .copied()
            .ok_or_else(|| StoreError::Corrupt("job", format!("no kind of job has the id {}", job.kind)))
    }
}

/// The bytes a job of kind `J` is stored as, for the golden tests.
#[cfg(test)]
pub(crate) fn stored_bytes<J: JobKind>(name: Option<&str>, job: &J) -> Vec<u8> {
    encode_record(name, &Job::of(job))
}

/// A stored job: its name, if it exists at most once, then the job.
fn encode_record(name: Option<&str>, job: &Job) -> Vec<u8> {
    let mut out = store::encode(&name);
    out.extend_from_slice(&store::encode(&job.kind));
    out.extend_from_slice(&job.payload);
    out
}

fn decode_record(bytes: &[u8]) -> Result<(Option<String>, Job), StoreError> {
    let bad = |e: postcard::Error| StoreError::Corrupt("job", e.to_string());
    let (name, rest) = postcard::take_from_bytes::<Option<String>>(bytes).map_err(bad)?;
    let (kind, payload) = postcard::take_from_bytes::<u32>(rest).map_err(bad)?;
    Ok((
        name,
        Job {
            kind,
            payload: payload.to_vec(),
        },
    ))
}

/// Claimed jobs at most; the rest wait in the table, not in memory.
const MAX_IN_FLIGHT: usize = 256;
/// A handler that failed without committing is tried again this much later.
const RETRY_FAILED_HANDLER: Duration = Duration::from_secs(30);

/// Adds a job due at `due`.
pub fn schedule<J: JobKind>(txn: &mut Txn, due: Timestamp, job: &J) -> Result<JobKey, StoreError> {
    insert(txn, due, &encode_record(None, &Job::of(job)))
}

/// Adds or moves the job called `name`, so it exists exactly once.
pub fn schedule_named<J: JobKind>(txn: &mut Txn, name: &str, due: Timestamp, job: &J) -> Result<JobKey, StoreError> {
    let old = txn.open(JOB_NAMES)?.get(name)?.map(|v| v.value());
    if let Some(old) = old {
        txn.open(JOBS)?.remove(old)?;
    }
    let key = insert(txn, due, &encode_record(Some(name), &Job::of(job)))?;
    txn.open(JOB_NAMES)?.insert(name, key)?;
    Ok(key)
}

/// The key of the job called `name`, if it is scheduled.
pub fn named(txn: &Txn, name: &str) -> Result<Option<JobKey>, StoreError> {
    Ok(txn.open(JOB_NAMES)?.get(name)?.map(|v| v.value()))
}

/// The job called `name` and its key, if it is scheduled and of kind `J`.
pub fn get_named<J: JobKind>(r: &ReadTransaction, name: &str) -> Result<Option<(JobKey, J)>, StoreError> {
    let Some(key) = r.open_table(JOB_NAMES)?.get(name)?.map(|v| v.value()) else {
        return Ok(None);
    };
    let Some(bytes) = r.open_table(JOBS)?.get(key)?.map(|v| v.value().to_vec()) else {
        return Ok(None);
    };
    let (_, job) = decode_record(&bytes)?;
    if job.kind != J::ID {
        return Ok(None);
    }
    Ok(Some((key, store::decode(J::NAME, &job.payload)?)))
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
        let (name, _) = decode_record(&bytes)?;
        if let Some(name) = name {
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
    let (name, _) = decode_record(&bytes)?;
    let new = insert(txn, due, &bytes)?;
    if let Some(name) = name {
        txn.open(JOB_NAMES)?.insert(name.as_str(), new)?;
    }
    Ok(Some(new))
}

fn insert(txn: &mut Txn, due: Timestamp, record: &[u8]) -> Result<JobKey, StoreError> {
    let key = (clock::to_ms(due), txn.next_id("jobs.next_id")?);
    txn.open(JOBS)?.insert(key, record)?;
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
    /// The name of the job's kind and its target; an error for a job this
    /// herald cannot run.
    fn describe(&self, job: &Job) -> Result<(&'static str, String), StoreError>;

    fn run(&self, key: JobKey, job: Job) -> Running<'_>;
}

/// Claimed jobs, and when the next one after them is due.
type Scan = (Vec<(JobKey, Job, &'static str, String)>, Option<Timestamp>);

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
            for (key, job, kind, target) in due {
                in_flight.lock().unwrap().insert(key);
                let limit = limits
                    .entry(target)
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
                let described = decode_record(v.value())
                    .and_then(|(_, job)| self.handler.describe(&job).map(|(kind, target)| (job, kind, target)));
                match described {
                    Ok((job, kind, target)) => due.push((key, job, kind, target)),
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

    use serde::Deserialize;

    use super::*;
    use crate::store::Grows;

    const PER_TARGET: usize = 4;

    /// Two kinds of job that only the recorder runs.
    #[derive(Debug, Serialize, Deserialize)]
    struct Early;
    #[derive(Debug, Serialize, Deserialize)]
    struct Late;

    impl JobKind for Early {
        const ID: u32 = 1000;
        const NAME: &'static str = "early";
        async fn run(self, _: &App, _: JobKey) -> Result<Ran, StoreError> {
            unreachable!("the recorder runs it")
        }
    }

    impl JobKind for Late {
        const ID: u32 = 1001;
        const NAME: &'static str = "late";
        async fn run(self, _: &App, _: JobKey) -> Result<Ran, StoreError> {
            unreachable!("the recorder runs it")
        }
    }

    fn early() -> Job {
        Job::of(&Early)
    }

    fn late() -> Job {
        Job::of(&Late)
    }

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
        fn describe(&self, job: &Job) -> Result<(&'static str, String), StoreError> {
            Ok((if job.kind == Early::ID { "early" } else { "late" }, "herald".into()))
        }

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
                schedule(txn, clock::add(now, Duration::from_secs(60)), &Late)?;
                schedule(txn, now, &Early)?;
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
        assert_eq!(*h.ran.lock().unwrap(), vec![early()], "only the due job ran");
        clock.advance(jiff::SignedDuration::from_secs(60));
        run.await.unwrap();
        assert_eq!(*h.ran.lock().unwrap(), vec![early(), late()]);
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
                .write(Grows::No, move |txn| schedule(txn, now, &Early).map(|_| ()))
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
        assert_eq!(*h.ran.lock().unwrap(), vec![early()]);
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
                    schedule(txn, now, &Early)?;
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
