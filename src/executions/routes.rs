//! `GET /v1/interfaces`, `/v1/executions`, `/v1/executions/{id}`, its
//! `/logs` and its `/export`.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::export;
use super::log::{Category, Level, LogLine, Status};
use crate::app::App;
use crate::auth::{Access, READERS};
use crate::clock;
use crate::http::{self, ApiError, Call, Resp, Route};

pub fn routes() -> Vec<Route> {
    let readers = Access::Roles(READERS);
    vec![
        Route::new(Method::GET, "/v1/interfaces", readers, |app, call| {
            Box::pin(interfaces(app, call))
        }),
        Route::new(Method::GET, "/v1/executions", readers, |app, call| {
            Box::pin(list(app, call))
        }),
        Route::new(Method::GET, "/v1/executions/{id}", readers, |app, call| {
            Box::pin(get(app, call))
        }),
        Route::new(Method::GET, "/v1/executions/{id}/logs", readers, |app, call| {
            Box::pin(logs(app, call))
        }),
        Route::new(Method::GET, "/v1/executions/{id}/export", readers, |app, call| {
            Box::pin(export(app, call))
        }),
        Route::new(Method::POST, "/v1/executions/{id}/acknowledge", readers, |app, call| {
            Box::pin(acknowledge(app, call))
        }),
    ]
}

/// The optional `note` of a person's acknowledgement, resolution or assignment.
pub fn note(v: &Value) -> Result<Option<String>, ApiError> {
    match v.get("note") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= MAX_NOTE && !s.chars().any(char::is_control) => {
            Ok(Some(s.trim().to_string()))
        }
        Some(Value::String(_)) => Err(ApiError::invalid_field(
            "note",
            format!("must be one line of at most {MAX_NOTE} characters"),
        )),
        Some(_) => Err(ApiError::invalid_field("note", "must be a string")),
    }
}

/// Longest note, in characters.
const MAX_NOTE: usize = 500;

async fn acknowledge(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let v = call.optional_object(&["note"]).await?;
    let note = note(&v)?;
    let exe = acknowledge_as(app, call.param(), &call.who().name, note).await?;
    Ok(http::json(StatusCode::OK, &execution_json(&exe, app.clock.now())))
}

/// `by` acknowledges the execution `id` (the API's and the page's button).
pub async fn acknowledge_as(
    app: &App,
    id: &str,
    by: &str,
    note: Option<String>,
) -> Result<super::log::Execution, ApiError> {
    let now = app.clock.now();
    let (i, who) = (id.to_string(), by.to_string());
    let done = app
        .store
        .write(crate::store::Grows::No, move |txn| {
            super::log::acknowledge(txn, &i, now, &who, note)
        })
        .await?;
    match done {
        Ok(exe) => {
            tracing::info!(execution = %id, by, "execution acknowledged");
            Ok(exe)
        }
        Err(super::log::NotAcknowledged::Unknown) => Err(no_execution(id)),
        Err(super::log::NotAcknowledged::NothingToAcknowledge(exe)) => Err(ApiError::conflict(format!(
            "execution {id} is {}{}; only a KO execution with errors not yet acknowledged can be acknowledged",
            exe.state().as_str(),
            exe.acknowledged
                .as_ref()
                .map(|a| format!(", acknowledged by {} at {}", a.by, clock::rfc3339(a.at)))
                .unwrap_or_default()
        ))),
    }
}

async fn get(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let exe = find(app, call.param())?;
    Ok(http::json(StatusCode::OK, &execution_json(&exe, app.clock.now())))
}

fn execution_json(e: &super::log::Execution, now: jiff::Timestamp) -> Value {
    let mut v = json!({
        "id": e.id,
        "interface": e.interface,
        "kind": match e.kind { super::log::Kind::Daily => "daily", super::log::Kind::Scheduled => "scheduled" },
        "status": e.state().as_str(),
        "started_at": clock::rfc3339(e.started_at),
        "errors": e.errors,
        "successes": e.successes,
        "anomaly": e.anomaly(now),
    });
    if let Some(s) = &e.schedule {
        v["schedule"] = json!(s);
    }
    if let Some(t) = e.ended_at {
        v["ended_at"] = json!(clock::rfc3339(t));
    }
    if let Some(d) = &e.day {
        v["day"] = json!(d);
    }
    if let Some(a) = &e.acknowledged {
        v["acknowledged"] = json!({"at": clock::rfc3339(a.at), "by": a.by, "errors": a.errors});
        if let Some(n) = &a.note {
            v["acknowledged"]["note"] = json!(n);
        }
    }
    v
}

async fn interfaces(app: &Arc<App>, _: &mut Call) -> Result<Resp, ApiError> {
    let mut rows = app.store.read(super::log::interfaces)?;
    // Configured interfaces that have not run yet are listed too.
    for i in &app.settings().interfaces {
        if !rows.iter().any(|(r, _)| r.name == i.name) {
            let iface = super::log::Interface {
                name: i.name.clone(),
                kind: i.kind.as_str().to_string(),
                last_execution: None,
            };
            rows.push((iface, None));
        }
    }
    let out: Vec<Value> = rows
        .iter()
        .map(|(i, last)| {
            let mut v = json!({"name": i.name, "kind": i.kind});
            if let Some(e) = last {
                v["last_execution"] = json!({"id": e.id, "status": e.state().as_str()});
            }
            v
        })
        .collect();
    Ok(http::json(StatusCode::OK, &json!({ "interfaces": out })))
}

async fn list(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let q = &call.query;
    let status = match q.get("status") {
        Some(s) => Some(
            Status::parse(s)
                .ok_or_else(|| ApiError::invalid_field("status", format!("{s:?} is not one of running, ok, ko")))?,
        ),
        None => None,
    };
    let filter = super::log::Filter {
        interface: q.get("interface"),
        status,
        after: q.get("after"),
        limit: q.limit()?,
    };
    let (rows, next) = app.store.read(|r| super::log::list(r, &filter))?;
    let now = app.clock.now();
    let out: Vec<Value> = rows.iter().map(|e| execution_json(e, now)).collect();
    Ok(http::json(StatusCode::OK, &json!({ "executions": out, "next": next })))
}

fn find(app: &Arc<App>, id: &str) -> Result<super::log::Execution, ApiError> {
    app.store
        .read(|r| super::log::get(r, id))?
        .ok_or_else(|| no_execution(id))
}

fn no_execution(id: &str) -> ApiError {
    ApiError::not_found(format!("no execution {id:?}; list them with GET /v1/executions"))
}

async fn logs(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let q = &call.query;
    let exe = find(app, call.param())?;
    let level = match q.get("level") {
        Some(s) => Some(
            Level::parse(s)
                .ok_or_else(|| ApiError::invalid_field("level", format!("{s:?} is not one of info, warn, error")))?,
        ),
        None => None,
    };
    let category = match q.get("category") {
        Some(s) => Some(Category::parse(s).ok_or_else(|| {
            ApiError::invalid_field(
                "category",
                format!("{s:?} is not one of external, configuration, mapping, technical, cascade"),
            )
        })?),
        None => None,
    };
    let after = q.u64("after")?.map(|a| a.min(u64::from(u32::MAX)) as u32);
    let filter = super::log::LogFilter {
        level,
        category,
        after,
        limit: q.limit()?,
    };
    let (lines, next) = app.store.read(|r| super::log::logs(r, &exe, &filter))?;
    let out: Vec<Value> = lines.iter().map(log_json).collect();
    Ok(http::json(StatusCode::OK, &json!({ "logs": out, "next": next })))
}

async fn export(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let exe = find(app, call.param())?;
    let settings = app.settings();
    let tz = settings.general.timezone.clone();
    let (body, ext, content_type) = match call.query.get("format").unwrap_or("csv") {
        "csv" => {
            let text = app.store.read(|r| export::csv(r, &exe, &tz))?;
            (Bytes::from(text), "csv", "text/csv; charset=utf-8")
        }
        "xlsx" => {
            // Compressing is CPU work: off the runtime's threads.
            let (app, exe) = (app.clone(), exe.clone());
            let file = tokio::task::spawn_blocking(move || {
                app.store
                    .read(|r| Ok(export::xlsx(r, &exe, &tz)))?
                    .map_err(|e| match e {
                        export::ExportError::Store(e) => ApiError::from(e),
                        other => ApiError::internal(other),
                    })
            })
            .await
            .map_err(ApiError::internal)??;
            (
                Bytes::from(file),
                "xlsx",
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            )
        }
        other => {
            return Err(ApiError::invalid_field(
                "format",
                format!("{other:?} is not an export format; use csv or xlsx"),
            ));
        }
    };
    let mut resp = http::with_type(StatusCode::OK, body, content_type);
    let disposition = format!("attachment; filename=\"{}\"", export::file_name(&exe, ext));
    resp.headers_mut().insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::try_from(disposition).map_err(ApiError::internal)?,
    );
    Ok(resp)
}

fn log_json(l: &LogLine) -> Value {
    let mut v = json!({"at": clock::rfc3339(l.at), "level": l.level.as_str(), "message": l.message});
    if let Some(c) = l.category {
        v["category"] = json!(c.as_str());
    }
    if let Some(d) = &l.detail {
        v["detail"] = json!(d);
    }
    v
}
