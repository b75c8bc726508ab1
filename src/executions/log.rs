//! Interfaces, executions and their log lines: the `INTERFACES`,
//! `EXECUTIONS`, `DAILY` and `LOGS` tables, the daily execution of each
//! interface, and the midnight roll.

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use redb::{ReadTransaction, ReadableTable};
use serde::{Deserialize, Serialize};
use serde_repr::{Deserialize_repr, Serialize_repr};

use crate::app::App;
pub use crate::category::Category;
use crate::clock;
use crate::jobs::{self, JobKey, JobKind};
use crate::journald;
use crate::store::{self, Grows, StoreError, Txn};

store::tables! {
    /// name -> `executions::Interface`.
    INTERFACES: redb::TableDefinition<&str, &[u8]> = ("interfaces", 6);
    /// execution id (time-ordered) -> `executions::Execution`.
    EXECUTIONS: redb::TableDefinition<&str, &[u8]> = ("executions", 7);
    /// "interface\0YYYY-MM-DD" -> id of that day's daily execution.
    DAILY: redb::TableDefinition<&str, &str> = ("daily", 8);
    /// (execution id, line number) -> `executions::LogLine`.
    LOGS: redb::TableDefinition<(&str, u32), &[u8]> = ("logs", 9);
}

/// The built-in interface that records failed calls to herald's own API.
pub const API: &str = "api";
/// Name of the one roll job in the queue.
const ROLL_JOB: &str = "executions.roll";
/// A scheduled run longer than this is flagged as an anomaly.
pub const ANOMALY_AFTER_MS: i64 = 3_600_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    /// `api`, `mail`, `webhook`, ...: what the interface talks to.
    pub kind: String,
    pub last_execution: Option<String>,
}

/// Stored as its tag (below 128): never change or reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum Kind {
    Scheduled = 0,
    Daily = 1,
}

/// Stored as its tag (below 128): never change or reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum Status {
    Running = 0,
    Ok = 1,
    Ko = 2,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Ok => "ok",
            Status::Ko => "ko",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [Status::Running, Status::Ok, Status::Ko]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Execution {
    pub id: String,
    pub interface: String,
    pub schedule: Option<String>,
    pub kind: Kind,
    pub status: Status,
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub errors: u32,
    /// Exchanges that went well (each also an `info` line).
    pub successes: u64,
    /// Log lines written so far; the next line's number.
    pub lines: u32,
    /// For daily executions, the local day it covers.
    pub day: Option<String>,
    /// The last acknowledgement by a person (added in 0.1 schema 2: older
    /// records read as none).
    pub acknowledged: Option<Ack>,
}

/// A person's acknowledgement of a KO execution: it covers the errors the
/// execution had then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub at: i64,
    /// The account that acknowledged.
    pub by: String,
    pub note: Option<String>,
    pub errors: u32,
}

impl Execution {
    pub fn anomaly(&self, now: Timestamp) -> bool {
        self.kind == Kind::Scheduled && self.ended_at.unwrap_or(clock::to_ms(now)) - self.started_at >= ANOMALY_AFTER_MS
    }

    /// The status as shown and filtered on: a daily execution is `ko` from
    /// its first error line on, while still open (records written before
    /// that rule say `running`).
    pub fn state(&self) -> Status {
        match self.kind {
            Kind::Daily if self.errors > 0 => Status::Ko,
            _ => self.status,
        }
    }

    /// Whether it has errors nobody acknowledged. (A scheduled run is also
    /// cleared by a later run of its schedule that ends `ok`: see
    /// [`later_ok`].)
    pub fn unacknowledged(&self) -> bool {
        self.state() == Status::Ko && self.errors > self.acknowledged.as_ref().map_or(0, |a| a.errors)
    }

    /// Whether it is an open problem: unacknowledged errors, and for a
    /// scheduled run, no later run of its schedule ended `ok`.
    pub fn open_problem(&self, later_ok: &LaterOk) -> bool {
        if !self.unacknowledged() {
            return false;
        }
        match (&self.kind, &self.schedule) {
            (Kind::Scheduled, Some(s)) => later_ok.get(s).is_none_or(|ok| ok.as_str() < self.id.as_str()),
            _ => true,
        }
    }
}

/// The newest run of each schedule that ended `ok`.
pub type LaterOk = std::collections::HashMap<String, String>;

/// The newest `ok` run of each schedule, from the executions table.
pub fn later_ok(table: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<LaterOk, StoreError> {
    let mut out = LaterOk::new();
    for row in table.iter()?.rev() {
        let (k, v) = row?;
        let exe: Execution = store::decode("execution", v.value())?;
        if exe.status == Status::Ok
            && let Some(s) = exe.schedule
        {
            out.entry(s).or_insert_with(|| k.value().to_string());
        }
    }
    Ok(out)
}

/// Stored as its tag (below 128): never change or reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize_repr, Deserialize_repr)]
#[repr(u8)]
pub enum Level {
    Info = 0,
    Warn = 1,
    Error = 2,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        [Level::Info, Level::Warn, Level::Error]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub at: i64,
    pub level: Level,
    pub category: Option<Category>,
    pub message: String,
    pub detail: Option<String>,
}

/// "1 error", "2 errors": an execution's error count as people read it.
pub fn errors_text(n: u64) -> String {
    if n == 1 {
        "1 error".into()
    } else {
        format!("{n} errors")
    }
}

/// The local calendar day of `now` (herald time), as the wall clock shows
/// it: after a backward step, the day that is open goes on.
pub fn local_day(now: Timestamp, tz: &TimeZone) -> Date {
    clock::wall_of(now).to_zoned(tz.clone()).date()
}

/// The herald time at which the local day after `day` begins (DST-safe).
fn start_of_next_day(day: Date, tz: &TimeZone) -> Timestamp {
    let next = day.tomorrow().unwrap_or(day);
    next.to_zoned(tz.clone())
        .map(|z| clock::due_for_wall(z.timestamp()))
        .unwrap_or(Timestamp::MAX)
}

fn new_id(now: Timestamp) -> String {
    let ulid = clock::ordered_ulid(clock::to_ms(now));
    format!("exe_{ulid}")
}

fn daily_key(interface: &str, day: Date) -> String {
    format!("{interface}\0{day}")
}

/// Appends `line` to today's daily execution of `interface` (creating the
/// interface and the execution on first use); returns the execution id.
pub fn log_daily(
    txn: &mut Txn,
    now: Timestamp,
    tz: &TimeZone,
    interface: &str,
    interface_kind: &str,
    line: LogLine,
) -> Result<String, StoreError> {
    let mut exe = daily(txn, now, tz, interface, interface_kind)?;
    append(txn, &mut exe, line)?;
    Ok(exe.id)
}

/// Successful exchanges in today's daily execution of `interface`: each
/// an `info` line saying what it was, its answer and its duration, and
/// counted (SecuTix: every exchange with an external system is logged in
/// the execution).
pub fn log_successes(
    txn: &mut Txn,
    now: Timestamp,
    tz: &TimeZone,
    interface: &str,
    interface_kind: &str,
    messages: impl IntoIterator<Item = String>,
) -> Result<(), StoreError> {
    let mut exe = daily(txn, now, tz, interface, interface_kind)?;
    successes(txn, &mut exe, now, messages)
}

/// Successful exchanges of the execution `id` (a scheduled run), as
/// [`log_successes`] writes them.
pub fn log_successes_to(
    txn: &mut Txn,
    id: &str,
    now: Timestamp,
    messages: impl IntoIterator<Item = String>,
) -> Result<(), StoreError> {
    match get_in(txn, id)? {
        Some(mut exe) => successes(txn, &mut exe, now, messages),
        None => Ok(()),
    }
}

fn successes(
    txn: &mut Txn,
    exe: &mut Execution,
    now: Timestamp,
    messages: impl IntoIterator<Item = String>,
) -> Result<(), StoreError> {
    let at = clock::to_ms(now);
    {
        let mut logs = txn.open(LOGS)?;
        for message in messages {
            let line = LogLine {
                at,
                level: Level::Info,
                category: None,
                message,
                detail: None,
            };
            logs.insert((exe.id.as_str(), exe.lines), store::encode(&line).as_slice())?;
            journald::record(txn, exe, exe.lines, &line);
            exe.lines += 1;
            exe.successes += 1;
        }
    }
    txn.open(EXECUTIONS)?
        .insert(exe.id.as_str(), store::encode(&*exe).as_slice())?;
    Ok(())
}

/// How long an exchange took, as a line says it: "12 ms", "1.4 s".
pub fn took(d: std::time::Duration) -> String {
    match d.as_millis() {
        ms @ 0..1000 => format!("{ms} ms"),
        ms => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

fn daily(
    txn: &mut Txn,
    now: Timestamp,
    tz: &TimeZone,
    interface: &str,
    interface_kind: &str,
) -> Result<Execution, StoreError> {
    let day = local_day(now, tz);
    let key = daily_key(interface, day);
    let existing = txn.open(DAILY)?.get(key.as_str())?.map(|v| v.value().to_string());
    if let Some(id) = existing
        && let Some(exe) = store::get::<&str, Execution>(&txn.open(EXECUTIONS)?, "execution", id.as_str())?
    {
        return Ok(exe);
    }
    let exe = open(txn, now, interface, interface_kind, None, Some(day.to_string()))?;
    txn.open(DAILY)?.insert(key.as_str(), exe.id.as_str())?;
    Ok(exe)
}

/// Opens a running execution of `interface` (a scheduled run with
/// `schedule`, else the daily one of `day`), which becomes the interface's
/// last one.
fn open(
    txn: &mut Txn,
    now: Timestamp,
    interface: &str,
    interface_kind: &str,
    schedule: Option<&str>,
    day: Option<String>,
) -> Result<Execution, StoreError> {
    let exe = Execution {
        id: new_id(now),
        interface: interface.to_string(),
        schedule: schedule.map(String::from),
        kind: if schedule.is_some() {
            Kind::Scheduled
        } else {
            Kind::Daily
        },
        status: Status::Running,
        started_at: clock::to_ms(now),
        ended_at: None,
        errors: 0,
        successes: 0,
        lines: 0,
        day,
        acknowledged: None,
    };
    txn.open(EXECUTIONS)?
        .insert(exe.id.as_str(), store::encode(&exe).as_slice())?;
    let iface = Interface {
        name: interface.to_string(),
        kind: interface_kind.to_string(),
        last_execution: Some(exe.id.clone()),
    };
    txn.open(INTERFACES)?
        .insert(interface, store::encode(&iface).as_slice())?;
    Ok(exe)
}

/// What to do about a run's first error, by its category (SecuTix).
pub fn advice(category: Option<Category>) -> &'static str {
    match category {
        Some(Category::External) => "What to do: re-run the execution; if it fails again, contact the provider",
        Some(Category::Configuration) => "What to do: check the configuration of the interface (URL, credentials)",
        Some(Category::Mapping) => "What to do: check the mappings (what is sent against what the other side expects)",
        Some(Category::Cascade) => "What to do: see the error above; this one follows from it",
        Some(Category::Technical) | None => "What to do: contact support with this execution's export",
    }
}

fn append(txn: &mut Txn, exe: &mut Execution, mut line: LogLine) -> Result<(), StoreError> {
    if line.level == Level::Error {
        // The first error line of a run says what to do.
        if exe.errors == 0 && exe.kind == Kind::Scheduled {
            let advice = advice(line.category);
            line.detail = Some(match line.detail.take() {
                Some(d) if !d.is_empty() => format!("{advice}.\n{d}"),
                _ => format!("{advice}."),
            });
        }
        exe.errors += 1;
        if exe.kind == Kind::Daily {
            exe.status = Status::Ko;
        }
    }
    let n = exe.lines;
    exe.lines += 1;
    txn.open(LOGS)?
        .insert((exe.id.as_str(), n), store::encode(&line).as_slice())?;
    journald::record(txn, exe, n, &line);
    txn.open(EXECUTIONS)?
        .insert(exe.id.as_str(), store::encode(&*exe).as_slice())?;
    Ok(())
}

/// Starts a run of `schedule` on `interface`: a running execution of kind
/// `scheduled`, which becomes the interface's last one.
pub fn start_run(
    txn: &mut Txn,
    now: Timestamp,
    interface: &str,
    interface_kind: &str,
    schedule: &str,
) -> Result<Execution, StoreError> {
    open(txn, now, interface, interface_kind, Some(schedule), None)
}

/// The execution `id`, inside a write.
pub fn get_in(txn: &Txn, id: &str) -> Result<Option<Execution>, StoreError> {
    store::get::<&str, Execution>(&txn.open(EXECUTIONS)?, "execution", id)
}

/// Appends `line` to the execution `id`, if it exists.
pub fn log_to(txn: &mut Txn, id: &str, line: LogLine) -> Result<(), StoreError> {
    let exe = store::get::<&str, Execution>(&txn.open(EXECUTIONS)?, "execution", id)?;
    match exe {
        Some(mut exe) => append(txn, &mut exe, line),
        None => Ok(()),
    }
}

/// Ends a run: `ok` without error lines, else `ko`.
pub fn end_run(txn: &mut Txn, id: &str, now: Timestamp) -> Result<Option<Execution>, StoreError> {
    let mut executions = txn.open(EXECUTIONS)?;
    let Some(mut exe) = store::get::<&str, Execution>(&executions, "execution", id)? else {
        return Ok(None);
    };
    if exe.status == Status::Running {
        exe.ended_at = Some(clock::to_ms(now));
        exe.status = if exe.errors > 0 { Status::Ko } else { Status::Ok };
        executions.insert(id, store::encode(&exe).as_slice())?;
    }
    Ok(Some(exe))
}

/// Why an execution cannot be acknowledged.
#[derive(Debug)]
pub enum NotAcknowledged {
    Unknown,
    /// Not `ko`, or nothing new since the last acknowledgement.
    NothingToAcknowledge(Box<Execution>),
}

/// A person acknowledges the errors of the KO execution `id` so far: an
/// `info` line naming them and their note, and the execution leaves the
/// worklist (a daily one comes back with its next error).
pub fn acknowledge(
    txn: &mut Txn,
    id: &str,
    now: Timestamp,
    by: &str,
    note: Option<String>,
) -> Result<Result<Execution, NotAcknowledged>, StoreError> {
    let Some(mut exe) = get_in(txn, id)? else {
        return Ok(Err(NotAcknowledged::Unknown));
    };
    if !exe.unacknowledged() {
        return Ok(Err(NotAcknowledged::NothingToAcknowledge(Box::new(exe))));
    }
    let at = clock::to_ms(now);
    let line = LogLine {
        at,
        level: Level::Info,
        category: None,
        message: format!(
            "{} acknowledged by {by}{}",
            errors_text(exe.errors.into()),
            note.as_deref().map(|n| format!(": {n}")).unwrap_or_default()
        ),
        detail: None,
    };
    exe.acknowledged = Some(Ack {
        at,
        by: by.to_string(),
        note,
        errors: exe.errors,
    });
    append(txn, &mut exe, line)?;
    Ok(Ok(exe))
}

/// Makes sure the midnight roll is scheduled for the next local midnight
/// (called at start, so a changed `general.timezone` takes effect).
pub fn schedule_roll(txn: &mut Txn, now: Timestamp, tz: &TimeZone) -> Result<(), StoreError> {
    let due = start_of_next_day(local_day(now, tz), tz);
    jobs::schedule_named(txn, ROLL_JOB, due, &RollDaily)?;
    Ok(())
}

/// The job of the midnight roll: close the daily executions of the day
/// that ended, then schedule the next roll.
#[derive(Debug, Serialize, Deserialize)]
pub struct RollDaily;

impl JobKind for RollDaily {
    const ID: u32 = 0;
    const NAME: &'static str = "roll_daily";

    async fn run(self, app: &App, key: JobKey) -> Result<jobs::Ran, StoreError> {
        let now = app.clock.now();
        let tz = app.settings().general.timezone.clone();
        let closed = app.store.write(Grows::No, move |txn| roll(txn, key, now, &tz)).await?;
        tracing::info!(closed, "daily executions rolled at midnight");
        Ok(jobs::Ran::Ok)
    }
}

/// The roll: closes every daily execution of a day before today (at the
/// midnight that ended it), and schedules the next roll.
pub fn roll(txn: &mut Txn, key: JobKey, now: Timestamp, tz: &TimeZone) -> Result<usize, StoreError> {
    let today = local_day(now, tz).to_string();
    let stale: Vec<(String, String)> = {
        let daily = txn.open(DAILY)?;
        let mut out = Vec::new();
        for row in daily.iter()? {
            let (k, v) = row?;
            let day = k.value().split('\0').nth(1).unwrap_or("").to_string();
            if day < today {
                out.push((k.value().to_string(), v.value().to_string()));
            }
        }
        out
    };
    for (k, id) in &stale {
        let mut executions = txn.open(EXECUTIONS)?;
        if let Some(mut exe) = store::get::<&str, Execution>(&executions, "execution", id.as_str())? {
            let ended = exe
                .day
                .as_deref()
                .and_then(|d| d.parse::<Date>().ok())
                .map(|d| start_of_next_day(d, tz))
                .unwrap_or(now);
            exe.ended_at = Some(clock::to_ms(ended.min(now)));
            exe.status = if exe.errors > 0 { Status::Ko } else { Status::Ok };
            executions.insert(id.as_str(), store::encode(&exe).as_slice())?;
        }
        drop(executions);
        txn.open(DAILY)?.remove(k.as_str())?;
    }
    jobs::finish(txn, key)?;
    schedule_roll(txn, now, tz)?;
    Ok(stale.len())
}

/// Deletes executions that ended before `cutoff`, with their log lines,
/// except those `kept` (open problems on the worklist); at most `budget`
/// log lines per call. Returns whether more remain.
pub fn sweep(
    txn: &mut Txn,
    cutoff: Timestamp,
    budget: usize,
    kept: impl Fn(&Execution, &LaterOk) -> bool,
) -> Result<bool, StoreError> {
    let cutoff = clock::to_ms(cutoff);
    let old: Vec<Execution> = {
        let executions = txn.open(EXECUTIONS)?;
        let later = later_ok(&executions)?;
        let mut out = Vec::new();
        for row in executions.iter()? {
            let (_, v) = row?;
            let exe: Execution = store::decode("execution", v.value())?;
            if exe.started_at >= cutoff {
                break;
            }
            if exe.ended_at.is_some_and(|e| e < cutoff) && !kept(&exe, &later) {
                out.push(exe);
            }
        }
        out
    };
    let mut spent = 0;
    for exe in old {
        if spent + exe.lines as usize > budget && spent > 0 {
            return Ok(true);
        }
        spent += exe.lines as usize;
        let mut logs = txn.open(LOGS)?;
        for n in 0..exe.lines {
            logs.remove((exe.id.as_str(), n))?;
        }
        drop(logs);
        txn.open(EXECUTIONS)?.remove(exe.id.as_str())?;
    }
    Ok(false)
}

// ---- reads -------------------------------------------------------------------

pub fn interfaces(r: &ReadTransaction) -> Result<Vec<(Interface, Option<Execution>)>, StoreError> {
    let table = r.open_table(INTERFACES)?;
    let executions = r.open_table(EXECUTIONS)?;
    let mut out = Vec::new();
    for row in table.iter()? {
        let (_, v) = row?;
        let iface: Interface = store::decode("interface", v.value())?;
        let last = match &iface.last_execution {
            Some(id) => store::get::<&str, Execution>(&executions, "execution", id.as_str())?,
            None => None,
        };
        out.push((iface, last));
    }
    Ok(out)
}

/// Each interface's kind (`webhook`, `action`, `api`, ...).
pub fn interface_kinds(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<std::collections::HashMap<String, String>, StoreError> {
    let mut out = std::collections::HashMap::new();
    for row in table.iter()? {
        let iface: Interface = store::decode("interface", row?.1.value())?;
        out.insert(iface.name, iface.kind);
    }
    Ok(out)
}

pub fn get(r: &ReadTransaction, id: &str) -> Result<Option<Execution>, StoreError> {
    store::get::<&str, Execution>(&r.open_table(EXECUTIONS)?, "execution", id)
}

pub struct Filter<'a> {
    pub interface: Option<&'a str>,
    pub status: Option<Status>,
    /// Newest first: continue with executions older than this id.
    pub after: Option<&'a str>,
    pub limit: usize,
}

/// Executions, newest first, and the cursor of the next page.
pub fn list(r: &ReadTransaction, f: &Filter<'_>) -> Result<(Vec<Execution>, Option<String>), StoreError> {
    store::page_newest(r, EXECUTIONS, "execution", f.after, f.limit, |e: &Execution| {
        f.interface.is_none_or(|i| i == e.interface) && f.status.is_none_or(|s| s == e.state())
    })
}

pub struct LogFilter {
    pub level: Option<Level>,
    pub category: Option<Category>,
    pub after: Option<u32>,
    pub limit: usize,
}

/// Log lines of one execution in order, with their numbers, and the next cursor.
pub fn logs(r: &ReadTransaction, exe: &Execution, f: &LogFilter) -> Result<(Vec<LogLine>, Option<u32>), StoreError> {
    let table = r.open_table(LOGS)?;
    let start = f.after.map_or(0, |a| a.saturating_add(1));
    let mut out = Vec::new();
    for n in start..exe.lines {
        let Some(line) = store::get::<(&str, u32), LogLine>(&table, "log line", (exe.id.as_str(), n))? else {
            continue;
        };
        if f.level.is_some_and(|l| l != line.level) || f.category.is_some_and(|c| Some(c) != line.category) {
            continue;
        }
        if out.len() == f.limit {
            return Ok((out, Some(n - 1)));
        }
        out.push(line);
    }
    Ok((out, None))
}

/// The last error line of `exe`, among its last `scan` lines.
pub fn last_error(r: &ReadTransaction, exe: &Execution, scan: u32) -> Result<Option<LogLine>, StoreError> {
    let table = r.open_table(LOGS)?;
    let from = exe.lines.saturating_sub(scan);
    for row in table
        .range((exe.id.as_str(), from)..(exe.id.as_str(), exe.lines))?
        .rev()
    {
        let line: LogLine = store::decode("log line", row?.1.value())?;
        if line.level == Level::Error {
            return Ok(Some(line));
        }
    }
    Ok(None)
}

/// Executions that ended KO, and running ones that already recorded errors.
pub fn count_troubled(r: &ReadTransaction) -> Result<(u64, u64), StoreError> {
    let table = r.open_table(EXECUTIONS)?;
    let (mut ko, mut running_with_errors) = (0, 0);
    for row in table.iter()? {
        let (_, v) = row?;
        let exe: Execution = store::decode("execution", v.value())?;
        match exe.state() {
            Status::Ko if exe.ended_at.is_none() => running_with_errors += 1,
            Status::Ko => ko += 1,
            Status::Running if exe.errors > 0 => running_with_errors += 1,
            _ => {}
        }
    }
    Ok((ko, running_with_errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_midnight_follows_the_time_zone() {
        let tz = TimeZone::get("Europe/Zurich").unwrap();
        let now: Timestamp = "2026-11-22T22:59:30Z".parse().unwrap(); // 23:59:30 in Zurich
        assert_eq!(local_day(now, &tz).to_string(), "2026-11-22");
        let midnight = start_of_next_day(local_day(now, &tz), &tz);
        assert_eq!(midnight.to_string(), "2026-11-22T23:00:00Z");
        // The night clocks go back: 25 hours in that day.
        let d: Date = "2026-10-25".parse().unwrap();
        assert_eq!(start_of_next_day(d, &tz).to_string(), "2026-10-25T23:00:00Z");
    }
}
