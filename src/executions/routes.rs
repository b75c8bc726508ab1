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
    ]
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
        "status": e.status.as_str(),
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
                v["last_execution"] = json!({"id": e.id, "status": e.status.as_str()});
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
        .ok_or_else(|| ApiError::not_found(format!("no execution {id:?}; list them with GET /v1/executions")))
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
