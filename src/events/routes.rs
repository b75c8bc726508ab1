//! `POST /v1/events` and `GET /v1/events`.

use std::sync::{Arc, OnceLock};

use hyper::{Method, StatusCode};
use serde::Serialize;
use serde_json::json;

use super::parse::{MAX_DEPTH, depth, parse, valid_name};
use super::stored::{self, Filter, Publisher, StoredEvent};
use crate::app::App;
use crate::auth::Role;
use crate::auth::{ALL, Access, PUBLISHERS};
use crate::clock;
use crate::http::{self, ApiError, Call, Resp, Route};
use crate::store::Grows;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/v1/events", Access::Roles(ALL), |app, call| {
            Box::pin(list(app, call))
        }),
        Route::new(Method::POST, "/v1/events", Access::Roles(PUBLISHERS), |app, call| {
            Box::pin(publish(app, call))
        }),
    ]
}

#[derive(Serialize)]
struct EventAck<'a> {
    id: &'a str,
    seq: u64,
    event: &'a str,
    created_at: String,
}

async fn publish(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let body = call.json_text().await?;
    // Deeper than any event may be (an array, an event, its data): refuse
    // before a JSON parser meets its own recursion limit.
    let deepest = depth(&body);
    if deepest > MAX_DEPTH + 2 {
        let message = format!("is nested {deepest} levels deep; at most {MAX_DEPTH} levels are accepted");
        return Err(ApiError::invalid_field("data", message));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(&body).map_err(ApiError::invalid_json)?;
    let max_data = app.settings().storage.max_event_size;
    let (events, batch) = parse(&body, max_data).map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    let account = call.who().name.clone();
    let now = app.clock.now();
    let (publisher, settings) = (app.state::<Publisher>().clone(), app.settings());
    let ticket = app
        .store
        .write(Grows::By(body.len() as u64), move |txn| {
            Ok(publisher.publish_gathered(txn, account, now, events, settings))
        })
        .await?;
    // The commit is made: its gathered work filled every ticket.
    let published = Arc::try_unwrap(ticket)
        .ok()
        .and_then(OnceLock::into_inner)
        .ok_or_else(|| ApiError::internal("the commit kept no answer for this request"))?;
    let created = published.iter().filter(|p| p.created).count();
    app.metrics.events_ingested.inc_by(created as u64);
    let status = if created > 0 {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let acks: Vec<EventAck<'_>> = published
        .iter()
        .map(|p| EventAck {
            id: &p.event.id,
            seq: p.seq,
            event: &p.event.event,
            created_at: clock::rfc3339(p.event.created_at),
        })
        .collect();
    Ok(if batch {
        http::json(status, &json!({ "events": acks }))
    } else {
        http::json(status, &acks[0])
    })
}

async fn list(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let q = &call.query;
    let after = q.u64("after")?.unwrap_or(0);
    let limit = q.limit()?;
    let event = q.get("event");
    if let Some(name) = event
        && !valid_name(name)
    {
        return Err(ApiError::invalid_field(
            "event",
            format!("{name:?} is not an event name"),
        ));
    }
    let who = call.who();
    let account = (who.role == Role::Integration).then_some(who.name.as_str());
    let filter = Filter {
        after,
        limit,
        event,
        names: None,
        account,
    };
    let (rows, next) = app.store.read(|r| stored::list(r, &filter))?;
    Ok(http::with_type(
        StatusCode::OK,
        page_json(&rows, next).into(),
        "application/json",
    ))
}

/// `{"events": [...], "next"}`, each event's `data` exactly as accepted.
pub fn page_json(rows: &[(u64, StoredEvent)], next: Option<u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + rows.iter().map(|(_, e)| e.data.len() + 128).sum::<usize>());
    out.extend_from_slice(b"{\"events\":[");
    for (i, (seq, e)) in rows.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        stored::write_json(&mut out, *seq, e);
    }
    out.extend_from_slice(b"],\"next\":");
    serde_json::to_writer(&mut out, &next).expect("a number serializes");
    out.push(b'}');
    out
}
