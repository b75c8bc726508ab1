//! Schedules as planned: the `SCHEDULES` table, each schedule's next run
//! and push position, and reconciling them with the config at start and
//! on SIGHUP.

use jiff::Timestamp;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};

use super::rules;
use crate::app::App;
use crate::clock;
use crate::config::{Config, InterfaceKind, Schedule};
use crate::events;
use crate::executions::{self, Category, Level, LogLine};
use crate::jobs::{self};
use crate::store::{self, Grows, StoreError, Txn};

/// The name of a run's anomaly job in the queue (stored: keep it).
pub fn anomaly_job(execution: &str) -> String {
    format!("anomaly:{execution}")
}

store::tables! {
    /// Schedule name → its planning and push position (`schedules::Planned`).
    SCHEDULES: redb::TableDefinition<&str, &[u8]> = ("schedules", 21);
}

/// What herald keeps of a schedule between runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Planned {
    pub name: String,
    pub every_ms: i64,
    /// When the next planned run is due (its job's due time).
    pub next_run_at: i64,
    /// push: the last event sequence number sent with a 2xx.
    pub position: u64,
    /// The run going now, and whether it was planned (else "run now").
    pub running: Option<(String, bool)>,
    pub last_execution: Option<String>,
}

pub(super) fn job_name(schedule: &str) -> String {
    format!("schedule:{schedule}")
}

pub(super) fn job(s: &Schedule, config: &Config) -> RunJob {
    let host = config
        .interfaces
        .iter()
        .find(|i| i.name == s.interface)
        .map_or_else(|| "herald".to_string(), |i| crate::net::authority(&i.url));
    RunJob {
        schedule: s.name.clone(),
        host,
    }
}

pub fn load(txn: &Txn, name: &str) -> Result<Option<Planned>, StoreError> {
    store::get::<&str, Planned>(&txn.open(SCHEDULES)?, "schedule", name)
}

pub fn save(txn: &Txn, p: &Planned) -> Result<(), StoreError> {
    txn.open(SCHEDULES)?
        .insert(p.name.as_str(), store::encode(p).as_slice())?;
    Ok(())
}

pub fn get(r: &ReadTransaction, name: &str) -> Result<Option<Planned>, StoreError> {
    store::get::<&str, Planned>(&r.open_table(SCHEDULES)?, "schedule", name)
}

pub fn all(r: &ReadTransaction) -> Result<Vec<Planned>, StoreError> {
    let mut out = Vec::new();
    for row in r.open_table(SCHEDULES)?.iter()? {
        out.push(store::decode("schedule", row?.1.value())?);
    }
    Ok(out)
}

/// Brings the stored schedules in step with `config`: a new schedule's
/// first run is `every` from now (a push starts after the events stored
/// now); a changed `every` moves the next run; a removed schedule stops
/// (its executions stay). At start (`restarted`), a run left `running` by
/// a crash is closed `ko` and made again at once.
pub fn reconcile(txn: &mut Txn, config: &Config, now: Timestamp, restarted: bool) -> Result<(), StoreError> {
    let now_ms = clock::to_ms(now);
    let stored: Vec<String> = {
        let table = txn.open(SCHEDULES)?;
        let mut names = Vec::new();
        for row in table.iter()? {
            names.push(row?.0.value().to_string());
        }
        names
    };
    for name in stored
        .iter()
        .filter(|n| !config.schedules.iter().any(|s| &s.name == *n))
    {
        txn.open(SCHEDULES)?.remove(name.as_str())?;
        jobs::cancel_named(txn, &job_name(name))?;
        tracing::info!(schedule = %name, "schedule removed from the configuration: no more runs");
    }
    for s in &config.schedules {
        let every_ms = s.every.as_millis() as i64;
        let mut p = match load(txn, &s.name)? {
            Some(p) => p,
            None => Planned {
                name: s.name.clone(),
                every_ms,
                next_run_at: now_ms + every_ms,
                position: events::last_seq(txn)?,
                running: None,
                last_execution: None,
            },
        };
        if p.every_ms != every_ms {
            p.next_run_at = rules::moved(p.next_run_at, p.every_ms, every_ms, now_ms);
            p.every_ms = every_ms;
        }
        if restarted && let Some((exe, planned)) = p.running.take() {
            let line = LogLine {
                at: now_ms,
                level: Level::Error,
                category: Some(Category::Technical),
                message: "herald stopped during this run; it was not finished".into(),
                detail: Some(if planned {
                    "The run is made again now (runs are idempotent).".into()
                } else {
                    "Run it again with POST /v1/schedules/NAME/run.".into()
                }),
            };
            executions::log_to(txn, &exe, line)?;
            executions::end_run(txn, &exe, now)?;
            jobs::cancel_named(txn, &anomaly_job(&exe))?;
            if planned {
                p.next_run_at = now_ms;
            }
        }
        save(txn, &p)?;
        jobs::schedule_named(txn, &job_name(&s.name), clock::from_ms(p.next_run_at), &job(s, config))?;
    }
    Ok(())
}

/// The schedule `name` as configured now, with its interface if that is a
/// pull or push one.
pub fn configured<'a>(config: &'a Config, name: &str) -> Option<(&'a Schedule, Option<&'a crate::config::Interface>)> {
    let s = config.schedules.iter().find(|s| s.name == name)?;
    let i = config
        .interfaces
        .iter()
        .find(|i| i.name == s.interface && matches!(i.kind, InterfaceKind::Pull | InterfaceKind::Push));
    Some((s, i))
}

/// What the push schedules have yet to send, for the retention sweep.
pub struct Pushes(Vec<(u64, Option<Vec<String>>)>);

impl Pushes {
    pub fn of(txn: &Txn, config: &Config) -> Result<Pushes, StoreError> {
        let mut out = Vec::new();
        for s in &config.schedules {
            let Some((_, Some(i))) = configured(config, &s.name) else {
                continue;
            };
            if i.kind != InterfaceKind::Push {
                continue;
            }
            if let Some(p) = load(txn, &s.name)? {
                let names = (!i.events.iter().any(|e| e == "*")).then(|| i.events.clone());
                out.push((p.position, names));
            }
        }
        Ok(Pushes(out))
    }

    /// Whether a push schedule has yet to send the event `seq` named `event`.
    pub fn unsent(&self, seq: u64, event: &str) -> bool {
        self.0
            .iter()
            .any(|(position, names)| seq > *position && names.as_ref().is_none_or(|n| n.iter().any(|x| x == event)))
    }
}

/// Applies the config at start or after SIGHUP.
pub async fn apply_config(app: &App, restarted: bool) -> Result<(), StoreError> {
    let settings = app.settings();
    let now = app.clock.now();
    app.store
        .write(Grows::No, move |txn| reconcile(txn, &settings, now, restarted))
        .await
}

/// The job of the planned run of one schedule.
#[derive(Debug, Serialize, Deserialize)]
pub struct RunJob {
    pub schedule: String,
    pub host: String,
}

/// The job that flags a run still going an hour after it began.
#[derive(Debug, Serialize, Deserialize)]
pub struct AnomalyJob {
    pub execution: String,
}
