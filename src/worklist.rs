//! The worklist: what needs a person, computed here and only here. The
//! status page's "Needs attention", `herald attention` and
//! `GET /v1/attention` all show [`compute`]'s items, each with since when,
//! what is wrong and its next steps (a button on the page, a command in
//! the CLI, a path in the API).
//!
//! An item is an open problem; it leaves the list when the problem is
//! resolved (a later run ended `ok`, a person acknowledged or resolved it,
//! the webhook delivers again, the thing was deleted), never only by age:
//! retention keeps what is on the list ([`Known::keeps`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use hyper::{Method, StatusCode};
use jiff::Timestamp;
use redb::{ReadTransaction, ReadableTable};
use serde_json::{Value, json};

use crate::actions::rules::{State as ActionState, TodoReason};
use crate::actions::{self, Action};
use crate::app::App;
use crate::auth::{Access, READERS};
use crate::clock;
use crate::config::Config;
use crate::executions::{self, Execution, Kind as ExecutionKind, LaterOk, Status};
use crate::feature::Feature;
use crate::http::{self, ApiError, Call, Resp, Route};
use crate::mail;
use crate::notifications::{self, Notification};
use crate::store::{self, StoreError};
use crate::webhooks::{self, Webhook};

/// The worklist's endpoint, and when the store began refusing work.
pub const FEATURE: Feature = Feature {
    routes,
    state: Some(|_| Arc::new(FullSince::default())),
    start: Some(|app| {
        watch_storage(app);
        Box::pin(async { Ok(()) })
    }),
    ..Feature::named("worklist")
};

fn routes() -> Vec<Route> {
    vec![Route::new(
        Method::GET,
        "/v1/attention",
        Access::Roles(READERS),
        |app, call| Box::pin(attention(app, call)),
    )]
}

async fn attention(app: &Arc<App>, _: &mut Call) -> Result<Resp, ApiError> {
    let items: Vec<Value> = compute(app)?.iter().map(Item::json).collect();
    Ok(http::json(StatusCode::OK, &json!({ "items": items })))
}

/// What an item is about. The order is the list's: what stops everything
/// first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Storage,
    Mail,
    Execution,
    Action,
    Webhook,
    Notification,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Storage,
        Kind::Mail,
        Kind::Execution,
        Kind::Action,
        Kind::Webhook,
        Kind::Notification,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Storage => "storage",
            Kind::Mail => "mail",
            Kind::Execution => "execution",
            Kind::Action => "action",
            Kind::Webhook => "webhook",
            Kind::Notification => "notification",
        }
    }
}

/// A next step for an item: an API call, a button, a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Acknowledge a KO execution's errors so far.
    AcknowledgeExecution(String),
    /// Run the schedule whose run failed.
    Run(String),
    /// Resolve a to-do action (completed, or not).
    Resolve(String),
    /// Assign a to-do action to another queue or a person.
    Assign(String),
    /// Acknowledge an action closed by its attempts.
    AcknowledgeAction(String),
    /// One more attempt of a retrying action.
    Retry(String),
    /// Reactivate a deactivated webhook (replaying its buffer, or not).
    Reactivate(String),
    /// Reactivate a suspended notification: system, event.
    ReactivateNotification(String, String),
}

impl Step {
    /// The name in the API's `actions`.
    pub fn name(&self) -> &'static str {
        match self {
            Step::AcknowledgeExecution(_) | Step::AcknowledgeAction(_) => "acknowledge",
            Step::Run(_) => "run",
            Step::Resolve(_) => "resolve",
            Step::Assign(_) => "assign",
            Step::Retry(_) => "retry",
            Step::Reactivate(_) | Step::ReactivateNotification(..) => "reactivate",
        }
    }

    /// The API call that takes it (always a POST).
    pub fn path(&self) -> String {
        let seg = http::segment;
        match self {
            Step::AcknowledgeExecution(id) => format!("/v1/executions/{}/acknowledge", seg(id)),
            Step::Run(name) => format!("/v1/schedules/{}/run", seg(name)),
            Step::Resolve(id) => format!("/v1/actions/{}/resolve", seg(id)),
            Step::Assign(id) => format!("/v1/actions/{}/assign", seg(id)),
            Step::AcknowledgeAction(id) => format!("/v1/actions/{}/acknowledge", seg(id)),
            Step::Retry(id) => format!("/v1/actions/{}/retry", seg(id)),
            Step::Reactivate(id) => format!("/v1/webhooks/{}/activate", seg(id)),
            Step::ReactivateNotification(s, e) => {
                format!("/v1/notifications/{}/{}/reactivate", seg(s), seg(e))
            }
        }
    }

    /// The button's form on the page: the same path under `/ui`.
    pub fn ui_path(&self) -> String {
        format!("/ui{}", self.path().trim_start_matches("/v1"))
    }

    /// The step read back from the API's `path` (what the CLI gets).
    pub fn from_path(path: &str) -> Option<Step> {
        let parts: Vec<String> = path.strip_prefix("/v1/")?.split('/').map(http::param).collect();
        let p: Vec<&str> = parts.iter().map(String::as_str).collect();
        let id = |s: &str| s.to_string();
        Some(match p.as_slice() {
            ["executions", x, "acknowledge"] => Step::AcknowledgeExecution(id(x)),
            ["schedules", x, "run"] => Step::Run(id(x)),
            ["actions", x, "resolve"] => Step::Resolve(id(x)),
            ["actions", x, "assign"] => Step::Assign(id(x)),
            ["actions", x, "acknowledge"] => Step::AcknowledgeAction(id(x)),
            ["actions", x, "retry"] => Step::Retry(id(x)),
            ["webhooks", x, "activate"] => Step::Reactivate(id(x)),
            ["notifications", s, e, "reactivate"] => Step::ReactivateNotification(id(s), id(e)),
            _ => return None,
        })
    }

    /// The command that takes it from a shell on the gateway.
    pub fn command(&self) -> String {
        let w = shell_word;
        match self {
            Step::AcknowledgeExecution(id) | Step::AcknowledgeAction(id) => {
                format!("herald acknowledge {} --note '...'", w(id))
            }
            Step::Run(name) => format!("herald run {}", w(name)),
            Step::Resolve(id) => format!("herald resolve {} --completed|--not-completed --note '...'", w(id)),
            Step::Assign(id) => format!("herald assign {} --queue QUEUE | --assignee PERSON", w(id)),
            Step::Retry(id) => format!("herald retry {}", w(id)),
            Step::Reactivate(id) => format!("herald reactivate-webhook {} --replay", w(id)),
            Step::ReactivateNotification(s, e) => format!("herald reactivate-notification {} {}", w(s), w(e)),
        }
    }
}

/// `word` as one word of a shell command a person copies: quoted when it
/// holds anything but letters, digits and `. _ - : /`.
pub fn shell_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c)) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// One open problem.
#[derive(Debug, Clone)]
pub struct Item {
    pub kind: Kind,
    /// What it is about: an execution, action, webhook or mail id, a
    /// notification's `system/event`, `store`.
    pub id: String,
    /// What is wrong, in one line.
    pub title: String,
    /// Since when (ms of herald time).
    pub since: i64,
    pub detail: Option<String>,
    pub steps: Vec<Step>,
}

impl Item {
    pub fn json(&self) -> Value {
        let mut v = json!({
            "kind": self.kind.as_str(),
            "id": self.id,
            "title": self.title,
            "since": clock::rfc3339(self.since),
            "actions": self.steps.iter().map(|s| json!({
                "name": s.name(),
                "method": "POST",
                "path": s.path(),
            })).collect::<Vec<_>>(),
        });
        if let Some(d) = &self.detail {
            v["detail"] = json!(d);
        }
        v
    }
}

/// When the store began refusing work (the current full episode).
#[derive(Default)]
pub struct FullSince(Mutex<Option<i64>>);

/// Notes when each full episode began.
fn watch_storage(app: &Arc<App>) {
    let mut changes = app.store.health_changes();
    let weak = Arc::downgrade(app);
    tokio::spawn(async move {
        loop {
            let full = changes.borrow_and_update().is_full();
            {
                let Some(app) = weak.upgrade() else { return };
                let mut since = app.state::<FullSince>().0.lock().unwrap_or_else(|e| e.into_inner());
                match (full, *since) {
                    (true, None) => *since = Some(clock::to_ms(app.clock.now())),
                    (false, Some(_)) => *since = None,
                    _ => {}
                }
            }
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
}

/// What exists now: the problems of anything else left the list.
pub struct Known {
    /// Interfaces by kind: configured ones, webhook apps, notification systems.
    interfaces: HashSet<(String, String)>,
    schedules: HashSet<String>,
}

impl Known {
    /// From the config and the webhooks and notifications tables.
    pub fn read(
        settings: &Config,
        hooks: &impl ReadableTable<&'static str, &'static [u8]>,
        notes: &impl ReadableTable<&'static str, &'static [u8]>,
    ) -> Result<Known, StoreError> {
        let mut interfaces: HashSet<(String, String)> = settings
            .interfaces
            .iter()
            .map(|i| (i.kind.as_str().to_string(), i.name.clone()))
            .collect();
        for row in hooks.iter()? {
            let w: Webhook = store::decode("webhook", row?.1.value())?;
            interfaces.insert(("webhook".into(), w.app));
        }
        for row in notes.iter()? {
            let (k, _) = row?;
            let system = k.value().split('\0').next().unwrap_or("").to_string();
            interfaces.insert((notifications::INTERFACE_KIND.into(), system));
        }
        Ok(Known {
            interfaces,
            schedules: settings.schedules.iter().map(|s| s.name.clone()).collect(),
        })
    }

    /// Whether the interface `name` of `kind` still exists. The built-in
    /// ones (`api`, `mail`, `herald`) always do.
    fn interface(&self, kind: &str, name: &str) -> bool {
        match kind {
            "webhook" | "action" | "pull" | "push" | notifications::INTERFACE_KIND => {
                self.interfaces.contains(&(kind.to_string(), name.to_string()))
            }
            _ => true,
        }
    }

    /// Whether `exe` is on the worklist.
    pub fn execution(&self, exe: &Execution, later: &LaterOk, kind: &str) -> bool {
        exe.open_problem(later)
            && self.interface(kind, &exe.interface)
            && exe.schedule.as_ref().is_none_or(|s| self.schedules.contains(s))
    }

    /// Whether `a` is on the worklist.
    pub fn action(&self, a: &Action) -> bool {
        action_open(a) && self.interface(actions::run::INTERFACE_KIND, &a.interface)
    }
}

/// An action a person must handle: to do (until resolved), closed by its
/// attempts or refused (until acknowledged), or retrying.
pub fn action_open(a: &Action) -> bool {
    match a.progress.state {
        ActionState::Todo | ActionState::Retrying => true,
        ActionState::Closed => a.resolved_by.is_none(),
        _ => false,
    }
}

/// The worklist now.
pub fn compute(app: &App) -> Result<Vec<Item>, StoreError> {
    compute_with(app, true)
}

/// How many items of each kind (what `/metrics` shows): the list without
/// reading log lines for the details.
pub fn sizes(app: &App) -> Result<Vec<(Kind, usize)>, StoreError> {
    let items = compute_with(app, false)?;
    Ok(Kind::ALL
        .iter()
        .map(|k| (*k, items.iter().filter(|i| i.kind == *k).count()))
        .collect())
}

fn compute_with(app: &App, details: bool) -> Result<Vec<Item>, StoreError> {
    let settings = app.settings();
    let now = app.clock.now();
    let mut items = Vec::new();
    let health = app.store.health();
    if health.is_full() {
        let since = *app.state::<FullSince>().0.lock().unwrap_or_else(|e| e.into_inner());
        let store = &app.store;
        items.push(Item {
            kind: Kind::Storage,
            id: "store".into(),
            title: match health {
                crate::store::Health::DiskFull => "The disk is full: new events are refused (507)".into(),
                _ => "The store is full at storage.max_size: new events are refused (507)".into(),
            },
            since: since.unwrap_or_else(|| clock::to_ms(now)),
            detail: Some(health.advice(store.on_disk(), store.room_left(), settings.storage.max_size)),
            steps: Vec::new(),
        });
    }
    app.store.read(|r| {
        let known = Known::read(
            &settings,
            &r.open_table(webhooks::WEBHOOKS)?,
            &r.open_table(notifications::NOTIFICATIONS)?,
        )?;
        mails(r, &mut items, &settings.general.name)?;
        executions_of(r, &known, now, details, &mut items)?;
        actions_of(r, &known, &mut items)?;
        hooks_of(r, &mut items)?;
        notifications_of(r, &mut items)?;
        Ok(())
    })?;
    // What stops everything first; within a kind, the newest first.
    items.sort_by(|a, b| a.kind.cmp(&b.kind).then(b.since.cmp(&a.since)).then(b.id.cmp(&a.id)));
    Ok(items)
}

/// The outbox, while a mail cannot be sent: one item for it.
fn mails(r: &ReadTransaction, items: &mut Vec<Item>, gateway: &str) -> Result<(), StoreError> {
    let (queued, _) = mail::list(
        r,
        &mail::Filter {
            state: Some(mail::State::Queued),
            after: None,
            limit: usize::MAX,
        },
    )?;
    let stuck: Vec<&mail::Mail> = queued.iter().filter(|m| m.last_error.is_some()).collect();
    let (Some(oldest), Some(newest)) = (stuck.last(), stuck.first()) else {
        return Ok(());
    };
    let n = stuck.len();
    items.push(Item {
        kind: Kind::Mail,
        id: "outbox".into(),
        title: format!(
            "{} cannot be sent: {}",
            if n == 1 {
                "1 mail".to_string()
            } else {
                format!("{n} mails")
            },
            newest.last_error.as_deref().unwrap_or("")
        ),
        since: oldest.created_at,
        detail: Some(format!(
            "Check [smtp] in the configuration and that the mail server answers; herald keeps trying \
             (the oldest: {} to {}). The mail execution's log lines say each attempt.",
            oldest.subject(gateway),
            oldest.to
        )),
        steps: Vec::new(),
    });
    Ok(())
}

/// How many of an execution's last lines are read for its last error.
const DETAIL_SCAN: u32 = 2000;

fn executions_of(
    r: &ReadTransaction,
    known: &Known,
    now: Timestamp,
    details: bool,
    items: &mut Vec<Item>,
) -> Result<(), StoreError> {
    let table = r.open_table(executions::EXECUTIONS)?;
    let later = executions::later_ok(&table)?;
    let kinds = executions::interface_kinds(&r.open_table(executions::INTERFACES)?)?;
    for row in table.iter()?.rev() {
        let exe: Execution = store::decode("execution", row?.1.value())?;
        let kind = kinds.get(&exe.interface).map_or("", String::as_str);
        let anomaly = exe.anomaly(now) && exe.ended_at.is_none();
        if !anomaly && !known.execution(&exe, &later, kind) {
            continue;
        }
        let open = exe.ended_at.is_none();
        let new_errors = exe.errors - exe.acknowledged.as_ref().map_or(0, |a| a.errors);
        let what = match (&exe.schedule, &exe.day) {
            (Some(s), _) => format!("Run of schedule {s} ({})", exe.interface),
            (None, Some(day)) => format!("{} on {day}", exe.interface),
            _ => exe.interface.clone(),
        };
        let title = if anomaly && new_errors == 0 {
            format!("{what}: still going after more than an hour (anomaly)")
        } else {
            format!(
                "{what}: {}{}{}",
                if open && exe.kind == ExecutionKind::Scheduled {
                    "running, "
                } else {
                    "KO, "
                },
                executions::errors_text(new_errors.into()),
                if exe.acknowledged.is_some() {
                    " since the last acknowledgement"
                } else {
                    ""
                }
            )
        };
        // The last error line says what went wrong.
        let detail = if details {
            executions::last_error(r, &exe, DETAIL_SCAN)?.map(|l| l.message)
        } else {
            None
        };
        let mut steps = Vec::new();
        if exe.unacknowledged() {
            steps.push(Step::AcknowledgeExecution(exe.id.clone()));
        }
        if let Some(s) = &exe.schedule
            && known.schedules.contains(s)
            && exe.state() == Status::Ko
        {
            steps.push(Step::Run(s.clone()));
        }
        let since = match (&exe.acknowledged, exe.kind) {
            (Some(a), ExecutionKind::Daily) => a.at,
            _ => exe.started_at,
        };
        items.push(Item {
            kind: Kind::Execution,
            id: exe.id.clone(),
            title,
            since,
            detail,
            steps,
        });
    }
    Ok(())
}

fn actions_of(r: &ReadTransaction, known: &Known, items: &mut Vec<Item>) -> Result<(), StoreError> {
    for row in r.open_table(actions::ACTIONS)?.iter()?.rev() {
        let a: Action = store::decode("action", row?.1.value())?;
        if !known.action(&a) {
            continue;
        }
        let p = &a.progress;
        let (title, steps) = match p.state {
            ActionState::Todo => (
                format!(
                    "Action on {} to do: {}{}{}",
                    a.interface,
                    match p.todo {
                        Some(TodoReason::Timeout) => "no answer in time".to_string(),
                        _ => format!(
                            "rejected ({})",
                            p.callback
                                .as_ref()
                                .and_then(|c| c.reason.as_deref())
                                .unwrap_or("no reason given")
                        ),
                    },
                    p.queue.as_deref().map(|q| format!(", queue {q}")).unwrap_or_default(),
                    a.assignee
                        .as_deref()
                        .map(|q| format!(", assigned to {q}"))
                        .unwrap_or_default(),
                ),
                vec![Step::Resolve(a.id.clone()), Step::Assign(a.id.clone())],
            ),
            ActionState::Retrying => (
                format!("Action on {} retrying, {}", a.interface, a.attempts_text()),
                vec![Step::Retry(a.id.clone())],
            ),
            _ => (
                format!("Action on {} closed unsuccessfully, {}", a.interface, a.attempts_text()),
                vec![Step::AcknowledgeAction(a.id.clone())],
            ),
        };
        items.push(Item {
            kind: Kind::Action,
            id: a.id.clone(),
            title,
            since: a.updated_at,
            detail: p.last_error.as_ref().map(|(_, m)| format!("last error: {m}")),
            steps,
        });
    }
    Ok(())
}

fn hooks_of(r: &ReadTransaction, items: &mut Vec<Item>) -> Result<(), StoreError> {
    for w in webhooks::list(r)? {
        let disabled = w.state == webhooks::State::Disabled;
        if !disabled && w.last_error.is_none() {
            continue;
        }
        let title = if disabled {
            format!(
                "Webhook of {} to {} deactivated; {} events buffered{}",
                w.app,
                crate::redact::url(&w.url),
                w.queued,
                w.buffer_until
                    .map(|t| format!(" until {}", clock::rfc3339(t)))
                    .unwrap_or_default()
            )
        } else {
            format!(
                "Webhook of {} to {} failing; {} events pending{}",
                w.app,
                crate::redact::url(&w.url),
                w.queued,
                w.next_retry_at
                    .map(|t| format!(", next try {}", clock::rfc3339(t)))
                    .unwrap_or_default()
            )
        };
        items.push(Item {
            kind: Kind::Webhook,
            id: w.id.clone(),
            title,
            since: w
                .disabled_at
                .filter(|_| disabled)
                .or(w.failing_since)
                .unwrap_or(w.created_at),
            detail: w.disabled_reason.clone().filter(|_| disabled).or(w.last_error.clone()),
            steps: if disabled {
                vec![Step::Reactivate(w.id.clone())]
            } else {
                Vec::new()
            },
        });
    }
    Ok(())
}

fn notifications_of(r: &ReadTransaction, items: &mut Vec<Item>) -> Result<(), StoreError> {
    for n in notifications::list(r, None)? {
        let failing = n.last_error.is_some() && n.ping.retry;
        if !n.ping.suspended && !failing {
            continue;
        }
        items.push(Item {
            kind: Kind::Notification,
            id: format!("{}/{}", n.system, n.event),
            title: if n.ping.suspended {
                format!(
                    "Notification {}/{} suspended after {} unanswered pings",
                    n.system, n.event, n.ping.unacked
                )
            } else {
                format!(
                    "Notification {}/{} failing to ping {}",
                    n.system,
                    n.event,
                    crate::redact::url(&n.url)
                )
            },
            since: notification_since(&n),
            detail: n.last_error.as_ref().map(|(_, m)| m.clone()),
            steps: if n.ping.suspended {
                vec![Step::ReactivateNotification(n.system.clone(), n.event.clone())]
            } else {
                Vec::new()
            },
        });
    }
    Ok(())
}

fn notification_since(n: &Notification) -> i64 {
    n.last_error.as_ref().map_or(n.created_at, |(at, _)| *at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_goes_to_its_path_and_back() {
        let steps = [
            Step::AcknowledgeExecution("exe_1".into()),
            Step::Run("fnac-sales".into()),
            Step::Resolve("act_1".into()),
            Step::Assign("act_1".into()),
            Step::AcknowledgeAction("act_1".into()),
            Step::Retry("act_1".into()),
            Step::Reactivate("wh_1".into()),
            Step::ReactivateNotification("Shop B/2".into(), "door.opened".into()),
        ];
        for s in steps {
            assert_eq!(Step::from_path(&s.path()), Some(s.clone()), "{}", s.path());
            assert!(s.ui_path().starts_with("/ui/"), "{}", s.ui_path());
        }
        assert_eq!(
            Step::ReactivateNotification("Shop B/2".into(), "e".into()).command(),
            "herald reactivate-notification 'Shop B/2' e"
        );
        assert_eq!(Step::from_path("/v1/elsewhere"), None);
    }

    #[test]
    fn a_command_to_copy_quotes_what_the_shell_would_split() {
        assert_eq!(shell_word("shop"), "shop");
        assert_eq!(shell_word("Shop B"), "'Shop B'");
        assert_eq!(shell_word("it's"), "'it'\\''s'");
    }
}
