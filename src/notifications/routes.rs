//! The notification API: PUT (create, change, delete), list (JSON or the
//! Collmex CSV), reactivate, the CSV import, and the change query.

use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::plans::{Notification, Put};
use super::records::{self, Record};
use crate::app::App;
use crate::auth::{ADMIN, ALL, Access, Account, READERS, Role};
use crate::clock;
use crate::events;
use crate::executions;
use crate::http::{self, ApiError, Call, Resp, Route};
use crate::redact;
use crate::store::Grows;

pub fn routes() -> Vec<Route> {
    vec![
        Route::new(Method::GET, "/v1/notifications", Access::Roles(ALL), |app, call| {
            Box::pin(list(app, call))
        }),
        Route::new(
            Method::POST,
            "/v1/notifications/import",
            Access::Roles(ADMIN),
            |app, call| Box::pin(import(app, call)),
        ),
        Route::new(
            Method::PUT,
            "/v1/notifications/{system}/{event}",
            Access::Roles(ADMIN),
            |app, call| Box::pin(put(app, call)),
        ),
        Route::new(
            Method::POST,
            "/v1/notifications/{system}/{event}/reactivate",
            Access::Roles(READERS),
            |app, call| Box::pin(reactivate(app, call)),
        ),
        Route::new(Method::GET, "/v1/changes", Access::Roles(ALL), |app, call| {
            Box::pin(changes(app, call))
        }),
    ]
}

fn notification_json(n: &Notification) -> Value {
    let mut v = json!({
        "system": n.system,
        "event": n.event,
        "url": redact::url(&n.url),
        "inactive": u8::from(n.ping.inactive),
        "unacked": n.ping.unacked,
        "suspended": n.ping.suspended,
        "created_at": clock::rfc3339(n.created_at),
        "missed": n.missed,
    });
    if let Some(t) = n.ping.last_sent_at {
        v["last_sent_at"] = json!(clock::rfc3339(t));
    }
    if let Some(t) = n.ping.next_send_at {
        v["next_send_at"] = json!(clock::rfc3339(t));
    }
    if let Some((at, message)) = &n.last_error {
        v["last_error"] = json!({"at": clock::rfc3339(*at), "message": message});
    }
    v
}

/// An integration reads only the system named like its account.
fn may_see(who: &Account, system: &str) -> bool {
    who.role != Role::Integration || who.name == system
}

/// The path's system and event, checked.
fn path(call: &Call) -> Result<(String, String), ApiError> {
    let (system, event) = (call.params()[0].clone(), call.params()[1].clone());
    if !records::valid_system(&system) {
        let message = format!(
            "{system:?} must be 1 to {} characters of printable text",
            records::MAX_SYSTEM
        );
        return Err(ApiError::invalid_field("system", message));
    }
    let Some(event) = records::event_named(&event) else {
        return Err(ApiError::invalid_field(
            "event",
            format!("{event:?} is neither a Collmex event number (1 to 9) nor an event name (A-Z a-z 0-9 . _ : -)"),
        ));
    };
    Ok((system, event))
}

async fn put(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let (system, event) = path(call)?;
    let v = call.json_object(&["url", "inactive"]).await?;
    let inactive = match v.get("inactive") {
        None | Some(Value::Null) => 0,
        Some(i) => match i.as_u64() {
            Some(i @ 0..=2) => i as u8,
            _ => {
                return Err(ApiError::invalid_field(
                    "inactive",
                    "must be 0 (active), 1 (inactive) or 2 (delete)",
                ));
            }
        },
    };
    let url = match v.get("url") {
        Some(Value::String(u)) => u.clone(),
        None | Some(Value::Null) if inactive == 2 => String::new(),
        None | Some(Value::Null) => {
            return Err(ApiError::invalid_field(
                "url",
                "is missing; give the http(s) URL to ping",
            ));
        }
        Some(_) => return Err(ApiError::invalid_field("url", "must be a string")),
    };
    // A URL given is checked, also with a deletion (where none is needed).
    if (inactive != 2 || !url.is_empty())
        && let Some(problem) = records::url_problem(&url)
    {
        return Err(ApiError::invalid_field("url", problem));
    }
    let (now, settings) = (app.clock.now(), app.settings());
    let done = app
        .store
        .write(Grows::Yes, move |txn| {
            super::plans::put(txn, now, &settings, &system, &event, &url, inactive)
        })
        .await?;
    Ok(match done {
        Put::Created(n) => http::json(StatusCode::CREATED, &notification_json(&n)),
        Put::Updated(n) => http::json(StatusCode::OK, &notification_json(&n)),
        Put::Deleted | Put::Absent => http::no_content(),
    })
}

async fn list(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let who = call.who();
    let system = call.query.get("system");
    let csv = match call.query.get("format") {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::invalid_field(
                "format",
                format!("{other:?} is neither json nor csv"),
            ));
        }
    };
    // The export carries the URLs as they are (secrets in them included),
    // so that importing it changes nothing: for admins only.
    if csv && who.role != Role::Admin {
        let mut e = ApiError::forbidden(who.role.as_str());
        e.message = "the CSV export holds the URLs unmasked and is for admins; use the JSON list".into();
        return Err(e);
    }
    let all = app.store.read(|r| super::plans::list(r, system))?;
    let mine: Vec<&Notification> = all.iter().filter(|n| may_see(who, &n.system)).collect();
    if csv {
        let rows: Vec<Record> = mine
            .iter()
            .map(|n| Record {
                system: n.system.clone(),
                event: n.event.clone(),
                url: n.url.clone(),
                inactive: u8::from(n.ping.inactive),
            })
            .collect();
        let body = Bytes::from(records::export(&rows));
        let mut resp = http::with_type(StatusCode::OK, body, "text/csv; charset=utf-8");
        // A file to save, named for the gateway (and the system asked for).
        let gateway = crate::executions::export::safe_name(&app.settings().general.name);
        let name = match system {
            Some(s) => format!(
                "herald-{gateway}-notifications-{}.csv",
                crate::executions::export::safe_name(s)
            ),
            None => format!("herald-{gateway}-notifications.csv"),
        };
        if let Ok(v) = hyper::header::HeaderValue::try_from(format!("attachment; filename=\"{name}\"")) {
            resp.headers_mut().insert(hyper::header::CONTENT_DISPOSITION, v);
        }
        return Ok(resp);
    }
    let out: Vec<Value> = mine.into_iter().map(notification_json).collect();
    Ok(http::json(StatusCode::OK, &json!({ "notifications": out })))
}

async fn reactivate(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let (system, event) = path(call)?;
    let (now, settings) = (app.clock.now(), app.settings());
    let (s, e) = (system.clone(), event.clone());
    let n = app
        .store
        .write(Grows::No, move |txn| {
            super::plans::reactivate(txn, now, &settings, &s, &e)
        })
        .await?;
    match n {
        Some(n) => Ok(http::json(StatusCode::OK, &notification_json(&n))),
        None => Err(ApiError::not_found(format!("no notification for {system} {event}"))),
    }
}

async fn import(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let content_type = call.header(header::CONTENT_TYPE).unwrap_or("").to_ascii_lowercase();
    let mut parts = content_type.split(';').map(str::trim);
    if parts.next() != Some("text/csv") {
        let mut e = ApiError::unsupported_media_type();
        e.message = "send the records as text/csv (charset utf-8 or iso-8859-1)".into();
        return Err(e);
    }
    let charset = parts.find_map(|p| p.strip_prefix("charset=")).map(str::to_string);
    let max = app.settings().server.max_body;
    let body = call.body(max).await?;
    let text = records::decode(&body, charset.as_deref()).map_err(|m| ApiError::invalid_field("charset", m))?;
    let records = match records::parse(&text) {
        Ok(r) => r,
        Err(errors) => {
            let lines: Vec<Value> = errors
                .iter()
                .map(|e| json!({"line": e.line, "field": e.field, "message": e.message}))
                .collect();
            let mut e = ApiError::invalid_field(
                "lines",
                format!(
                    "{} lines of the file are not valid records; nothing was imported",
                    errors.len()
                ),
            );
            e.field = None;
            e.lines = Some(Box::new(Value::Array(lines)));
            return Err(e);
        }
    };
    let (now, settings) = (app.clock.now(), app.settings());
    let (imported, deleted) = app
        .store
        .write(Grows::By(body.len() as u64), move |txn| {
            let (mut imported, mut deleted) = (0u64, 0u64);
            for (_, r) in records {
                let before = super::plans::load(txn, &r.system, &r.event)?;
                let changed = before
                    .as_ref()
                    .is_none_or(|b| b.url != r.url || b.ping.inactive != (r.inactive == 1));
                match super::plans::put(txn, now, &settings, &r.system, &r.event, &r.url, r.inactive)? {
                    Put::Deleted => deleted += 1,
                    Put::Absent => {}
                    Put::Created(_) | Put::Updated(_) if changed => imported += 1,
                    Put::Created(_) | Put::Updated(_) => {}
                }
            }
            Ok((imported, deleted))
        })
        .await?;
    Ok(http::json(
        StatusCode::OK,
        &json!({"imported": imported, "deleted": deleted}),
    ))
}

async fn changes(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let q = &call.query;
    let system = q
        .get("system")
        .ok_or_else(|| ApiError::invalid_field("system", "is missing; name the system whose changes to read"))?
        .to_string();
    if !may_see(call.who(), &system) {
        let mut e = ApiError::forbidden("integration");
        e.message =
            format!("an integration reads only the changes of the system named like its account, not {system:?}");
        return Err(e);
    }
    let (after, limit) = (q.u64("after")?, q.limit()?);
    let found = app.store.read(|r| super::plans::changes(r, &system, after, limit))?;
    let Some((rows, next)) = found else {
        return Err(ApiError::not_found(format!(
            "no notification for system {system:?}; create one with PUT /v1/notifications/{system}/EVENT"
        )));
    };
    let last = rows.last().map(|(seq, _)| *seq);
    let (now, settings) = (app.clock.now(), app.settings());
    let line = format!(
        "change query by {}: 200, {} changes{}{}",
        call.who().name,
        rows.len(),
        after.map(|a| format!(" after #{a}")).unwrap_or_default(),
        if next.is_some() { ", more to read" } else { "" }
    );
    app.store
        .write(Grows::No, move |txn| {
            super::plans::queried(txn, now, &settings, &system, last)?;
            let tz = &settings.general.timezone;
            executions::log_successes(txn, now, tz, &system, super::plans::INTERFACE_KIND, [line])
        })
        .await?;
    Ok(http::with_type(
        StatusCode::OK,
        events::page_json(&rows, next).into(),
        "application/json",
    ))
}
