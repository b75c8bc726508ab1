//! The webhook API: create, list, get, delete, activate (by an account, or
//! by the reactivation link's token with its confirmation page), attempts.

use std::sync::Arc;

use hyper::header;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::record::{ActivateError, Attempt, MAX_APP, MAX_URL, NewWebhook, State, Webhook, token_valid};
use crate::app::App;
use crate::auth::{ADMIN, ALL, Access, AuthError, READERS};
use crate::auth::{Account, Role};
use crate::clock;
use crate::events;
use crate::html::{self, escape};
use crate::http::{self, ApiError, Call, Query, Resp, Route};
use crate::redact;
use crate::store::Grows;

pub fn routes() -> Vec<Route> {
    // GET first: a 405 lists the methods in this order.
    vec![
        Route::new(Method::GET, "/v1/webhooks", Access::Roles(ALL), |app, call| {
            Box::pin(list(app, call))
        }),
        Route::new(Method::POST, "/v1/webhooks", Access::Roles(ADMIN), |app, call| {
            Box::pin(create(app, call))
        }),
        Route::new(Method::GET, "/v1/webhooks/{id}", Access::Roles(ALL), |app, call| {
            Box::pin(get(app, call))
        }),
        Route::new(
            Method::DELETE,
            "/v1/webhooks/{id}",
            Access::Roles(ADMIN),
            |app, call| Box::pin(delete(app, call)),
        ),
        // The reactivation link carries its own single-purpose token.
        Route::new(
            Method::GET,
            "/v1/webhooks/{id}/activate",
            Access::Public,
            |app, call| Box::pin(activate_page(app, call)),
        ),
        Route::new(
            Method::POST,
            "/v1/webhooks/{id}/activate",
            Access::RolesOrLink(READERS),
            |app, call| Box::pin(activate(app, call)),
        ),
        Route::new(
            Method::GET,
            "/v1/webhooks/{id}/attempts",
            Access::Roles(ALL),
            |app, call| Box::pin(attempts(app, call)),
        ),
    ]
}

async fn get(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let wh = find(app, call.param(), call.account.as_ref())?;
    Ok(http::json(StatusCode::OK, &webhook_json(&wh)))
}

async fn delete(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let id = find(app, call.param(), call.account.as_ref())?.id;
    let (now, tz) = (app.clock.now(), app.settings().general.timezone.clone());
    app.store
        .write(Grows::No, move |txn| super::record::delete(txn, &id, now, &tz))
        .await?;
    Ok(http::no_content())
}

async fn attempts(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let id = find(app, call.param(), call.account.as_ref())?.id;
    let after = call.query.u64("after")?;
    let limit = call.query.limit()?;
    let (rows, next) = app.store.read(|r| super::record::attempts(r, &id, after, limit))?;
    let out: Vec<Value> = rows.iter().map(attempt_json).collect();
    Ok(http::json(StatusCode::OK, &json!({ "attempts": out, "next": next })))
}

fn page(status: StatusCode, title: &str, body: &str) -> Resp {
    html::response(status, html::page(title, body))
}

fn webhook_json(w: &Webhook) -> Value {
    let active = w.state == State::Active;
    let mut v = json!({
        "id": w.id,
        "app": w.app,
        "event": w.event,
        "url": redact::url(&w.url),
        "active": active,
        "state": if active { "active" } else { "disabled" },
        "buffered": if active { 0 } else { w.queued },
        "pending": if active { w.queued } else { 0 },
        "created_at": clock::rfc3339(w.created_at),
        "created_by": w.created_by,
    });
    let optional = [
        ("disabled_at", w.disabled_at.map(clock::rfc3339)),
        ("disabled_reason", w.disabled_reason.clone()),
        ("last_error", w.last_error.clone()),
        ("next_retry_at", w.next_retry_at.map(clock::rfc3339)),
        (
            "buffer_until",
            if active {
                None
            } else {
                w.buffer_until.map(clock::rfc3339)
            },
        ),
    ];
    for (k, val) in optional {
        if let Some(val) = val {
            v[k] = json!(val);
        }
    }
    if w.not_kept > 0 {
        v["not_kept"] = json!(w.not_kept);
    }
    v
}

fn attempt_json(a: &Attempt) -> Value {
    let mut v = json!({
        "event_id": a.event_id,
        "attempt": a.attempt,
        "at": clock::rfc3339(a.at),
        "duration_ms": a.duration_ms,
    });
    if let Some(s) = a.status_code {
        v["status_code"] = json!(s);
    }
    if let Some(e) = &a.error {
        v["error"] = json!(e);
    }
    if let Some(t) = a.next_retry_at {
        v["next_retry_at"] = json!(clock::rfc3339(t));
    }
    if !a.response.is_empty() {
        v["response"] = json!(a.response);
    }
    v
}

/// Whether `who` may see a webhook: an integration sees its own, those it
/// created and those of the application named like its account.
fn visible(wh: &Webhook, who: &Account) -> bool {
    who.role != Role::Integration || wh.created_by == who.name || wh.app == who.name
}

/// The webhook, if it exists and `who` may see it (integrations: their own).
fn find(app: &Arc<App>, id: &str, who: Option<&Account>) -> Result<Webhook, ApiError> {
    let not_found = || ApiError::not_found(format!("no webhook {id:?}; list them with GET /v1/webhooks"));
    let wh = app.store.read(|r| super::record::get(r, id))?.ok_or_else(not_found)?;
    match who {
        Some(a) if !visible(&wh, a) => Err(not_found()),
        _ => Ok(wh),
    }
}

async fn create(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let v = call.json_object(&["app", "event", "url", "secret"]).await?;
    let who = call.who();
    let field = |name: &str| v.get(name).filter(|x| !x.is_null());
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match field(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid_field(name, "must be a string")),
        }
    };
    let app_name =
        text("app")?.ok_or_else(|| ApiError::invalid_field("app", "is missing; name the subscribing application"))?;
    if app_name.trim().is_empty() || app_name.chars().count() > MAX_APP || app_name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "app",
            format!("must be 1 to {} printable characters", MAX_APP),
        ));
    }
    let event =
        text("event")?.ok_or_else(|| ApiError::invalid_field("event", "is missing; give an event name or \"*\""))?;
    if event != "*" && !events::valid_name(&event) {
        return Err(ApiError::invalid_field(
            "event",
            format!("{event:?} is neither \"*\" nor an event name (A-Z a-z 0-9 . _ : -)"),
        ));
    }
    let url =
        text("url")?.ok_or_else(|| ApiError::invalid_field("url", "is missing; give the receiver's http(s) URL"))?;
    let parsed = url.parse::<hyper::Uri>().ok();
    let url_ok = url.len() <= MAX_URL
        && parsed.as_ref().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(crate::net::valid_host)
        });
    if !url_ok {
        return Err(ApiError::invalid_field(
            "url",
            format!(
                "must be an http(s) URL of at most {} characters, like https://erp.example.com/hooks",
                MAX_URL
            ),
        ));
    }
    let secret = text("secret")?;
    if let Some(s) = &secret
        && !crate::config::valid_secret(s)
    {
        return Err(ApiError::invalid_field(
            "secret",
            "must be \"whsec_\" and 24 to 64 bytes in base64; or leave it out and herald makes one",
        ));
    }
    let new = NewWebhook {
        app: app_name,
        event,
        url,
        secret,
        created_by: who.name.clone(),
        notify: who.email.clone(),
    };
    let now = app.clock.now();
    let wh = app
        .store
        .write(Grows::Yes, move |txn| super::record::create(txn, now, new))
        .await?;
    let mut v = webhook_json(&wh);
    v["secret"] = json!(wh.secret);
    Ok(http::json(StatusCode::CREATED, &v))
}

async fn list(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let (q, who) = (&call.query, call.who());
    let active = match q.get("active") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::invalid_field(
                "active",
                format!("{other:?} is neither true nor false"),
            ));
        }
    };
    let all = app.store.read(super::record::list)?;
    let out: Vec<Value> = all
        .iter()
        .filter(|w| visible(w, who))
        .filter(|w| q.get("app").is_none_or(|a| a == w.app))
        .filter(|w| q.get("event").is_none_or(|e| e == w.event))
        .filter(|w| match active {
            Some(want) => (w.state == State::Active) == want,
            None => true,
        })
        .map(webhook_json)
        .collect();
    Ok(http::json(StatusCode::OK, &json!({ "webhooks": out })))
}

/// Activation, by an account (JSON) or by the link's token (the form of
/// the confirmation page, answered with a page).
async fn activate(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let id = call.param().to_string();
    let id = id.as_str();
    let token = call.query.get("token").map(str::to_string);
    let is_form = call
        .header(header::CONTENT_TYPE)
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let replay = if is_form {
        let form = Query::parse(&String::from_utf8_lossy(&call.body(4096).await?));
        let field = form.get("replay_events").or(form.get("replayEvents"));
        matches!(field, Some("true" | "1" | "on"))
    } else if has_body(call) {
        // `replayEvents` is mailingwork's name for the same field.
        let v = call.json_object(&["replay_events", "replayEvents"]).await?;
        let (name, field) = match v.get("replay_events") {
            Some(f) => ("replay_events", Some(f)),
            None => ("replayEvents", v.get("replayEvents")),
        };
        match field {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ApiError::invalid_field(name, "must be true or false")),
        }
    } else {
        false
    };
    let (now, tz) = (app.clock.now(), app.settings().general.timezone.clone());
    let id2 = id.to_string();
    let t2 = token.clone();
    let result = app
        .store
        .write(Grows::No, move |txn| {
            super::record::activate(txn, &id2, replay, t2.as_deref(), now, &tz)
        })
        .await?;
    match (result, token.is_some()) {
        (Ok(wh), false) => Ok(http::json(StatusCode::OK, &webhook_json(&wh))),
        (Ok(wh), true) => Ok(page(
            StatusCode::OK,
            "Webhook reactivated",
            &format!(
                "<p>Webhook <code>{}</code> of <b>{}</b> is active again{}.</p>",
                escape(&wh.id),
                escape(&wh.app),
                if replay {
                    ", and its buffered events are being delivered in order"
                } else {
                    "; its buffered events were discarded"
                }
            ),
        )),
        (Err(ActivateError::NotFound), _) => Err(ApiError::not_found(format!("no webhook {id:?}"))),
        (Err(ActivateError::BadToken), _) => Err(bad_link(app, call)),
    }
}

/// Whether a body came: the JSON one of an account's call is optional.
fn has_body(call: &Call) -> bool {
    call.header(header::CONTENT_LENGTH).is_some_and(|v| v != "0")
        || call.parts.headers.contains_key(header::TRANSFER_ENCODING)
}

/// A link's token is a credential: a wrong one counts toward the
/// failed-login limit of the caller's address.
fn bad_link(app: &App, call: &Call) -> ApiError {
    if let AuthError::RateLimited(left) = app.auth.wrong(call.peer.ip(), app.settings().server.wrong_credentials) {
        return ApiError::rate_limited(left);
    }
    let mut e = ApiError::forbidden("link");
    e.message = BAD_LINK.into();
    e
}

const BAD_LINK: &str =
    "this reactivation link is not valid: it was used, it expired with the buffer, or it is incomplete";

/// The page a reactivation link opens. It changes nothing (mail scanners
/// open links); its buttons POST the choice with the token.
async fn activate_page(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let (id, token) = (call.param(), call.query.get("token").unwrap_or(""));
    let wh = app.store.read(|r| super::record::get(r, id))?;
    let Some(wh) = wh.filter(|w| token_valid(w, token, app.clock.now())) else {
        let e = bad_link(app, call);
        return Ok(page(
            e.status,
            "Link not valid",
            &format!("<p>{}</p>", escape(&e.message)),
        ));
    };
    let action = format!("/v1/webhooks/{}/activate?token={}", escape(&wh.id), escape(token));
    let body = format!(
        "<p>Webhook <code>{id}</code> of <b>{app}</b> was deactivated on {at}.</p>\
         <table><tr><th>URL</th><td>{url}</td></tr><tr><th>Event</th><td>{event}</td></tr>\
         <tr><th>Reason</th><td>{reason}</td></tr><tr><th>Buffered events</th><td>{buffered}</td></tr>\
         <tr><th>Kept until</th><td>{until}</td></tr></table>\
         <form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"replay_events\" value=\"true\">\
         <button type=\"submit\">Reactivate and replay the {buffered} buffered events</button></form>\
         <form method=\"post\" action=\"{action}\"><input type=\"hidden\" name=\"replay_events\" value=\"false\">\
         <button type=\"submit\">Reactivate and discard the buffer</button></form>",
        id = escape(&wh.id),
        app = escape(&wh.app),
        at = wh.disabled_at.map(clock::rfc3339).unwrap_or_default(),
        url = escape(&redact::url(&wh.url)),
        event = escape(&wh.event),
        reason = escape(wh.disabled_reason.as_deref().unwrap_or("")),
        buffered = wh.queued,
        until = wh.buffer_until.map(clock::rfc3339).unwrap_or_default(),
    );
    Ok(page(StatusCode::OK, "Reactivate webhook", &body))
}
