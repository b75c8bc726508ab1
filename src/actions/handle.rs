//! What a person does with an action that needs one (Enate: "afterwards it
//! behaves like a manual action"): resolve a `todo` action as completed or
//! not, assign it to another queue or a person, acknowledge one `closed` by
//! its attempts. Each is an `info` line in the interface's daily execution
//! naming the account and the note.

use std::sync::Arc;

use hyper::StatusCode;
use jiff::Timestamp;
use serde_json::Value;

use super::record::Action;
use super::rules::State;
use super::run::INTERFACE_KIND;
use crate::app::App;
use crate::clock;
use crate::executions::{self, Level, LogLine};
use crate::http::{self, ApiError, Call, Resp};
use crate::store::{Grows, StoreError, Txn};

/// What a person does.
#[derive(Debug, Clone)]
pub enum Handling {
    /// A `todo` action is done: completed (true) or not (false).
    Resolve { completed: bool },
    /// A `todo` action goes to another queue, or a person, or both.
    Assign {
        queue: Option<String>,
        assignee: Option<String>,
    },
    /// A `closed` action was seen.
    Acknowledge,
}

/// Why it was not done.
#[derive(Debug)]
pub enum NotHandled {
    Unknown,
    /// Not in a state this handling applies to.
    Conflict(Box<Action>),
}

/// Applies `what` by `by` to the action `id`, with its log line.
pub fn apply(
    txn: &mut Txn,
    id: &str,
    what: &Handling,
    by: &str,
    note: Option<String>,
    now: Timestamp,
    tz: &jiff::tz::TimeZone,
) -> Result<Result<Action, NotHandled>, StoreError> {
    let Some(mut a) = super::stored::load(txn, id)? else {
        return Ok(Err(NotHandled::Unknown));
    };
    let noted = note.as_deref().map(|n| format!(": {n}")).unwrap_or_default();
    let message = match what {
        Handling::Resolve { completed } => {
            if a.progress.state != State::Todo {
                return Ok(Err(NotHandled::Conflict(Box::new(a))));
            }
            a.progress.state = if *completed { State::Completed } else { State::Closed };
            a.resolved_by = Some(by.to_string());
            a.note = note;
            format!(
                "action {id} resolved by {by} as {}{noted}",
                if *completed {
                    "successfully completed"
                } else {
                    "unsuccessfully completed"
                }
            )
        }
        Handling::Assign { queue, assignee } => {
            if a.progress.state != State::Todo {
                return Ok(Err(NotHandled::Conflict(Box::new(a))));
            }
            if let Some(q) = queue {
                a.progress.queue = Some(q.clone());
            }
            if let Some(p) = assignee {
                a.assignee = Some(p.clone());
            }
            if note.is_some() {
                a.note = note;
            }
            let to = [
                queue.as_ref().map(|q| format!("queue {q}")),
                assignee.as_ref().map(|p| p.to_string()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
            format!("action {id} assigned to {to} by {by}{noted}")
        }
        Handling::Acknowledge => {
            if a.progress.state != State::Closed || a.resolved_by.is_some() {
                return Ok(Err(NotHandled::Conflict(Box::new(a))));
            }
            a.resolved_by = Some(by.to_string());
            a.note = note;
            format!("action {id} (closed unsuccessfully) acknowledged by {by}{noted}")
        }
    };
    a.updated_at = clock::to_ms(now);
    super::stored::save(txn, &a)?;
    let line = LogLine {
        at: clock::to_ms(now),
        level: Level::Info,
        category: None,
        message,
        detail: None,
    };
    executions::log_daily(txn, now, tz, &a.interface, INTERFACE_KIND, line)?;
    Ok(Ok(a))
}

/// A short text: a queue or a person's name.
fn name(v: &Value, field: &'static str) -> Result<Option<String>, ApiError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() || s.chars().count() > 200 || s.chars().any(char::is_control) {
                Err(ApiError::invalid_field(
                    field,
                    "must be one line of 1 to 200 characters",
                ))
            } else {
                Ok(Some(s.to_string()))
            }
        }
        Some(_) => Err(ApiError::invalid_field(field, "must be a string")),
    }
}

/// `POST /v1/actions/{id}/resolve`.
pub async fn resolve(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let v = call.json_object(&["resolution", "note"]).await?;
    let completed = match v.get("resolution").and_then(Value::as_str) {
        Some("successfully_completed") => true,
        Some("unsuccessfully_completed") => false,
        _ => {
            return Err(ApiError::invalid_field(
                "resolution",
                "give \"successfully_completed\" or \"unsuccessfully_completed\"",
            ));
        }
    };
    let note = executions::note(&v)?;
    let a = handle(
        app,
        call.param(),
        Handling::Resolve { completed },
        &call.who().name,
        note,
    )
    .await?;
    Ok(http::json(StatusCode::OK, &a.json()))
}

/// `POST /v1/actions/{id}/assign`.
pub async fn assign(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let v = call.json_object(&["queue", "assignee", "note"]).await?;
    let (queue, assignee) = (name(&v, "queue")?, name(&v, "assignee")?);
    if queue.is_none() && assignee.is_none() {
        return Err(ApiError::invalid_field("queue", "give a queue, an assignee, or both"));
    }
    let note = executions::note(&v)?;
    let a = handle(
        app,
        call.param(),
        Handling::Assign { queue, assignee },
        &call.who().name,
        note,
    )
    .await?;
    Ok(http::json(StatusCode::OK, &a.json()))
}

/// `POST /v1/actions/{id}/acknowledge`.
pub async fn acknowledge(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let v = call.optional_object(&["note"]).await?;
    let note = executions::note(&v)?;
    let a = handle(app, call.param(), Handling::Acknowledge, &call.who().name, note).await?;
    Ok(http::json(StatusCode::OK, &a.json()))
}

/// Applies `what` to the action `id` for `by` (the API's and the page's buttons).
pub async fn handle(app: &App, id: &str, what: Handling, by: &str, note: Option<String>) -> Result<Action, ApiError> {
    let (now, tz) = (app.clock.now(), app.settings().general.timezone.clone());
    let (i, who, w) = (id.to_string(), by.to_string(), what.clone());
    let done = app
        .store
        .write(Grows::No, move |txn| apply(txn, &i, &w, &who, note, now, &tz))
        .await?;
    match done {
        Ok(a) => {
            tracing::info!(action = %id, by, ?what, "action handled by a person");
            Ok(a)
        }
        Err(NotHandled::Unknown) => Err(ApiError::not_found(format!(
            "no action {id:?}; list them with GET /v1/actions"
        ))),
        Err(NotHandled::Conflict(a)) => Err(ApiError::conflict(format!(
            "action {id} is {}{}; {}",
            a.progress.state.as_str(),
            a.resolved_by
                .as_deref()
                .map(|b| format!(" (handled by {b})"))
                .unwrap_or_default(),
            match what {
                Handling::Acknowledge => "only a closed action not yet acknowledged can be acknowledged",
                _ => "only a to-do action can be resolved or assigned",
            }
        ))),
    }
}
