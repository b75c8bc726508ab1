//! `GET /v1/schedules` and `POST /v1/schedules/{name}/run`.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::run::{self, NotStarted};
use crate::app::App;
use crate::auth::{Access, READERS};
use crate::clock;
use crate::executions;
use crate::http::{self, ApiError, Call, Resp, Route};

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/v1/schedules", Access::Roles(READERS), |app, call| {
            Box::pin(list(app, call))
        }),
        Route::new(
            Method::POST,
            "/v1/schedules/{name}/run",
            Access::Roles(READERS),
            |app, call| Box::pin(run_now(app, call)),
        ),
    ]
}

async fn list(app: &Arc<App>, _: &mut Call) -> Result<Resp, ApiError> {
    let settings = app.settings();
    let stored = app.store.read(|r| {
        let mut out = Vec::new();
        for s in &settings.schedules {
            let p = super::plan::get(r, &s.name)?;
            let last = match p
                .as_ref()
                .and_then(|p| p.running.as_ref().map(|(e, _)| e).or(p.last_execution.as_ref()))
            {
                Some(id) => executions::get(r, id)?,
                None => None,
            };
            out.push((s, p, last));
        }
        Ok(out)
    })?;
    let out: Vec<Value> = stored
        .iter()
        .map(|(s, p, last)| {
            let mut v = json!({
                "name": s.name,
                "interface": s.interface,
                "every": humantime::format_duration(s.every).to_string(),
                "next_run_at": p.as_ref().map(|p| clock::rfc3339(p.next_run_at)),
                "running": p.as_ref().is_some_and(|p| p.running.is_some()),
            });
            if let Some(e) = last {
                v["last_execution"] = json!({"id": e.id, "status": e.status.as_str()});
            }
            v
        })
        .collect();
    Ok(http::json(StatusCode::OK, &json!({ "schedules": out })))
}

async fn run_now(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let name = call.param().to_string();
    match run::now(app.clone(), &name).await {
        Ok(id) => Ok(http::json(StatusCode::ACCEPTED, &json!({ "execution_id": id }))),
        Err(NotStarted::Busy) => Err(ApiError::conflict(format!(
            "a run of schedule {name} is going; wait for it to end (GET /v1/schedules)"
        ))),
        Err(NotStarted::Unknown) => Err(ApiError::not_found(format!(
            "no schedule {name:?} in the configuration; list them with GET /v1/schedules"
        ))),
        Err(NotStarted::Store(e)) => Err(e.into()),
    }
}
