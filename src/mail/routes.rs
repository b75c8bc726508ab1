//! `GET /v1/mails`: the outbox, for admins.

use std::sync::Arc;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::outbox::{Filter, State};
use crate::app::App;
use crate::auth::{ADMIN, Access};
use crate::clock;
use crate::http::{self, ApiError, Call, Resp, Route};

pub fn routes() -> Vec<Route> {
    vec![Route::new(
        Method::GET,
        "/v1/mails",
        Access::Roles(ADMIN),
        |app, call| Box::pin(list(app, call)),
    )]
}

async fn list(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let q = &call.query;
    let state = match q.get("state") {
        Some(s) => Some(
            State::parse(s)
                .ok_or_else(|| ApiError::invalid_field("state", format!("{s:?} is not one of queued, sent, failed")))?,
        ),
        None => None,
    };
    let filter = Filter {
        state,
        after: q.get("after"),
        limit: q.limit()?,
    };
    let (rows, next) = app.store.read(|r| super::outbox::list(r, &filter))?;
    let gateway = app.settings().general.name.clone();
    let out: Vec<Value> = rows
        .iter()
        .map(|m| {
            let mut v = json!({
                "id": m.id,
                "to": m.to,
                "subject": m.subject(&gateway),
                "state": m.state.as_str(),
                "entries": m.total,
                "attempts": m.attempts,
                "created_at": clock::rfc3339(m.created_at),
                "send_after": clock::rfc3339(m.send_after),
            });
            if let Some(t) = m.sent_at {
                v["sent_at"] = json!(clock::rfc3339(t));
            }
            if let Some(e) = &m.last_error {
                v["last_error"] = json!(e);
            }
            v
        })
        .collect();
    Ok(http::json(StatusCode::OK, &json!({ "mails": out, "next": next })))
}
