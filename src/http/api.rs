//! Routing, authentication, limits and the handlers of the API (API.md).
//!
//! Every request goes through [`handle`]: route, authenticate, check the
//! role, run the handler, and turn its error into the JSON error shape. A
//! call that fails is also recorded in the daily execution of the built-in
//! interface `api`, so the technician sees failed imports beside everything
//! else.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::App;
use crate::auth::{Account, AuthError, Role};
use crate::clock;
use crate::events;
use crate::executions::{self, Category, Level, LogLine, Status};
use crate::jobs;
use crate::mail;
use crate::store::Grows;
use crate::ui::escape;
use crate::webhooks::{self, Webhook};

type Resp = Response<Full<Bytes>>;

/// Who may call a route.
#[derive(Clone, Copy, PartialEq)]
enum Access {
    Public,
    /// Public unless `server.metrics_auth`.
    Metrics,
    Roles(&'static [Role]),
}

const ALL: &[Role] = &[Role::Admin, Role::Integration, Role::Technician];
const PUBLISHERS: &[Role] = &[Role::Admin, Role::Integration];
const READERS: &[Role] = &[Role::Admin, Role::Technician];
const ADMIN: &[Role] = &[Role::Admin];

enum Route {
    StatusPage,
    Healthz,
    Readyz,
    Metrics,
    Status,
    PublishEvents,
    ListEvents,
    Interfaces,
    Executions,
    Execution(String),
    ExecutionLogs(String),
    Mails,
    CreateWebhook,
    ListWebhooks,
    Webhook(String),
    DeleteWebhook(String),
    ActivateWebhook(String),
    ActivatePage(String),
    WebhookAttempts(String),
    TestClock,
}

impl Route {
    fn name(&self) -> &'static str {
        match self {
            Route::StatusPage => "GET /",
            Route::Healthz => "GET /healthz",
            Route::Readyz => "GET /readyz",
            Route::Metrics => "GET /metrics",
            Route::Status => "GET /v1/status",
            Route::PublishEvents => "POST /v1/events",
            Route::ListEvents => "GET /v1/events",
            Route::Interfaces => "GET /v1/interfaces",
            Route::Executions => "GET /v1/executions",
            Route::Execution(_) => "GET /v1/executions/{id}",
            Route::ExecutionLogs(_) => "GET /v1/executions/{id}/logs",
            Route::Mails => "GET /v1/mails",
            Route::CreateWebhook => "POST /v1/webhooks",
            Route::ListWebhooks => "GET /v1/webhooks",
            Route::Webhook(_) => "GET /v1/webhooks/{id}",
            Route::DeleteWebhook(_) => "DELETE /v1/webhooks/{id}",
            Route::ActivateWebhook(_) => "POST /v1/webhooks/{id}/activate",
            Route::ActivatePage(_) => "GET /v1/webhooks/{id}/activate",
            Route::WebhookAttempts(_) => "GET /v1/webhooks/{id}/attempts",
            Route::TestClock => "POST /v1/test/clock",
        }
    }

    fn access(&self) -> Access {
        match self {
            Route::Healthz | Route::Readyz => Access::Public,
            Route::Metrics => Access::Metrics,
            Route::PublishEvents => Access::Roles(PUBLISHERS),
            Route::ListEvents => Access::Roles(ALL),
            Route::StatusPage
            | Route::Status
            | Route::Interfaces
            | Route::Executions
            | Route::Execution(_)
            | Route::ExecutionLogs(_) => Access::Roles(READERS),
            Route::TestClock | Route::Mails => Access::Roles(ADMIN),
            Route::CreateWebhook | Route::DeleteWebhook(_) => Access::Roles(ADMIN),
            Route::ListWebhooks | Route::Webhook(_) | Route::WebhookAttempts(_) => Access::Roles(ALL),
            Route::ActivateWebhook(_) => Access::Roles(READERS),
            // The reactivation link carries its own single-purpose token.
            Route::ActivatePage(_) => Access::Public,
        }
    }
}

/// Finds the route of a request, or says why there is none.
fn route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let only = |m: Method, r: Route| {
        if *method == m {
            Ok(r)
        } else {
            Err(ApiError::method_not_allowed(m.as_str()))
        }
    };
    match segments.as_slice() {
        [] => only(Method::GET, Route::StatusPage),
        ["healthz"] => only(Method::GET, Route::Healthz),
        ["readyz"] => only(Method::GET, Route::Readyz),
        ["metrics"] => only(Method::GET, Route::Metrics),
        ["v1", "status"] => only(Method::GET, Route::Status),
        ["v1", "events"] => match *method {
            Method::POST => Ok(Route::PublishEvents),
            Method::GET => Ok(Route::ListEvents),
            _ => Err(ApiError::method_not_allowed("GET, POST")),
        },
        ["v1", "interfaces"] => only(Method::GET, Route::Interfaces),
        ["v1", "executions"] => only(Method::GET, Route::Executions),
        ["v1", "executions", id] => only(Method::GET, Route::Execution(id.to_string())),
        ["v1", "executions", id, "logs"] => only(Method::GET, Route::ExecutionLogs(id.to_string())),
        ["v1", "mails"] => only(Method::GET, Route::Mails),
        ["v1", "webhooks"] => match *method {
            Method::POST => Ok(Route::CreateWebhook),
            Method::GET => Ok(Route::ListWebhooks),
            _ => Err(ApiError::method_not_allowed("GET, POST")),
        },
        ["v1", "webhooks", id] => match *method {
            Method::GET => Ok(Route::Webhook(id.to_string())),
            Method::DELETE => Ok(Route::DeleteWebhook(id.to_string())),
            _ => Err(ApiError::method_not_allowed("GET, DELETE")),
        },
        ["v1", "webhooks", id, "activate"] => match *method {
            Method::POST => Ok(Route::ActivateWebhook(id.to_string())),
            Method::GET => Ok(Route::ActivatePage(id.to_string())),
            _ => Err(ApiError::method_not_allowed("GET, POST")),
        },
        ["v1", "webhooks", id, "attempts"] => only(Method::GET, Route::WebhookAttempts(id.to_string())),
        ["v1", "test", "clock"] => only(Method::POST, Route::TestClock),
        _ => Err(ApiError::not_found(format!(
            "there is no resource at {path}; see the API section of the README"
        ))),
    }
}

/// Answers one request. Never fails: every error becomes a JSON answer.
pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let method = req.method().clone();
    // As it is logged and mailed: secrets in the query (the reactivation
    // link's token) are blanked out.
    let target = redacted_target(req.uri());
    let mut account: Option<Account> = None;
    let mut route_name = "unknown";
    // The body as read, kept for the error mail; redacted only if the call fails.
    let mut excerpt: Option<Bytes> = None;
    let result = async {
        let path = req.uri().path();
        let routed = route(&method, path);
        // Unknown resources under /v1 still authenticate first: strangers
        // learn nothing about which paths exist, and a caller's mistake is
        // attributed to its account.
        let with_token = req
            .uri()
            .query()
            .is_some_and(|q| Query::parse(q).get("token").is_some());
        let access = match &routed {
            Ok(Route::ActivateWebhook(_)) if with_token => {
                route_name = "POST /v1/webhooks/{id}/activate";
                Access::Public
            }
            Ok(r) => {
                route_name = r.name();
                r.access()
            }
            Err(_) if path == "/v1" || path.starts_with("/v1/") => Access::Roles(ALL),
            Err(_) => Access::Public,
        };
        let needs_auth = match access {
            Access::Public => false,
            Access::Metrics => app.settings().server.metrics_auth,
            Access::Roles(_) => true,
        };
        if needs_auth {
            let header = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            let who = match app.auth.authenticate(header, peer.ip()) {
                Ok(a) => a,
                Err(AuthError::RateLimited) => return Err(ApiError::rate_limited()),
                Err(AuthError::Missing | AuthError::Wrong) => return Err(ApiError::unauthorized()),
            };
            if let Access::Roles(roles) = access
                && !roles.contains(&who.role)
            {
                account = Some(who.clone());
                return Err(ApiError::forbidden(who.role.as_str()));
            }
            account = Some(who);
        }
        if app.draining.load(Ordering::Relaxed) && !matches!(access, Access::Public | Access::Metrics) {
            return Err(ApiError::shutting_down());
        }
        dispatch(&app, routed?, req, account.as_ref(), &mut excerpt).await
    }
    .await;

    let response = match result {
        Ok(r) => r,
        Err(e) => {
            record_failure(&app, &method, &target, account.as_ref(), peer, &e, excerpt);
            error_response(&e)
        }
    };
    app.metrics.request(route_name, response.status().as_u16());
    response
}

async fn dispatch(
    app: &Arc<App>,
    route: Route,
    req: Request<Incoming>,
    who: Option<&Account>,
    excerpt: &mut Option<Bytes>,
) -> Result<Resp, ApiError> {
    let query = req.uri().query().unwrap_or("").to_string();
    let q = Query::parse(&query);
    match route {
        Route::StatusPage => {
            let page = crate::ui::render(app)?;
            Ok(html_page(StatusCode::OK, page))
        }
        Route::Healthz => Ok(text(StatusCode::OK, "ok\n")),
        Route::Readyz => Ok(
            if app.ready.load(Ordering::Relaxed) && !app.draining.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n")
            } else if app.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n")
            },
        ),
        Route::Metrics => {
            if let Ok(n) = jobs::count_due(&app.store, app.clock.now()) {
                app.metrics.jobs_due.set(n as i64);
            }
            let mut r = text(StatusCode::OK, &app.metrics.encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            Ok(r)
        }
        Route::Status => status(app),
        Route::PublishEvents => {
            let body = read_json(app, req, excerpt).await?;
            publish(app, who.expect("authenticated"), &body).await
        }
        Route::ListEvents => list_events(app, &q, who.expect("authenticated")),
        Route::Interfaces => interfaces(app),
        Route::Executions => list_executions(app, &q),
        Route::Execution(id) => {
            let exe = find_execution(app, &id)?;
            Ok(json_response(StatusCode::OK, &execution_json(&exe, app.clock.now())))
        }
        Route::ExecutionLogs(id) => execution_logs(app, &id, &q),
        Route::Mails => list_mails(app, &q),
        Route::CreateWebhook => {
            let body = read_json(app, req, excerpt).await?;
            create_webhook(app, who.expect("authenticated"), &body).await
        }
        Route::ListWebhooks => list_webhooks(app, &q, who.expect("authenticated")),
        Route::Webhook(id) => {
            let wh = find_webhook(app, &id, who)?;
            Ok(json_response(StatusCode::OK, &webhook_json(&wh)))
        }
        Route::DeleteWebhook(id) => {
            find_webhook(app, &id, who)?;
            let (now, tz) = (app.clock.now(), app.settings().general.timezone.clone());
            app.store
                .write(Grows::No, move |txn| webhooks::delete(txn, &id, now, &tz))
                .await?;
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            Ok(r)
        }
        Route::WebhookAttempts(id) => {
            find_webhook(app, &id, who)?;
            let after = q.u64("after")?;
            let limit = q.limit()?;
            let (rows, next) = app.store.read(|r| webhooks::attempts(r, &id, after, limit))?;
            let out: Vec<Value> = rows.iter().map(attempt_json).collect();
            Ok(json_response(StatusCode::OK, &json!({ "attempts": out, "next": next })))
        }
        Route::ActivateWebhook(id) => activate_webhook(app, &id, &q, req, excerpt).await,
        Route::ActivatePage(id) => activate_page(app, &id, &q),
        Route::TestClock => {
            let body = read_json(app, req, excerpt).await?;
            test_clock(app, &body)
        }
    }
}

// ---- events -----------------------------------------------------------------

#[derive(Serialize)]
struct EventAck<'a> {
    id: &'a str,
    seq: u64,
    event: &'a str,
    created_at: String,
}

async fn publish(app: &Arc<App>, who: &Account, body: &str) -> Result<Resp, ApiError> {
    let max_data = app.settings().storage.max_event_size;
    let (events, batch) = events::parse(body, max_data).map_err(|e| ApiError::invalid_field(e.field, e.message))?;
    let account = who.name.clone();
    let now = app.clock.now();
    let published = app
        .store
        .write(Grows::Yes, move |txn| {
            let published = events::publish(txn, &account, now, events)?;
            webhooks::fan_out(txn, &published)?;
            Ok(published)
        })
        .await?;
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
        json_response(status, &json!({ "events": acks }))
    } else {
        json_response(status, &acks[0])
    })
}

#[derive(Serialize)]
struct EventOut<'a> {
    id: &'a str,
    seq: u64,
    event: &'a str,
    data: &'a RawValue,
    created_at: String,
}

fn list_events(app: &Arc<App>, q: &Query, who: &Account) -> Result<Resp, ApiError> {
    let after = q.u64("after")?.unwrap_or(0);
    let limit = q.limit()?;
    let event = q.get("event");
    if let Some(name) = event
        && !events::valid_name(name)
    {
        return Err(ApiError::invalid_field(
            "event",
            format!("{name:?} is not an event name"),
        ));
    }
    let account = (who.role == Role::Integration).then_some(who.name.as_str());
    let filter = events::Filter {
        after,
        limit,
        event,
        account,
    };
    let (rows, next) = app.store.read(|r| events::list(r, &filter))?;
    let raws: Vec<Box<RawValue>> = rows
        .iter()
        .map(|(_, e)| RawValue::from_string(e.data.clone()))
        .collect::<Result<_, _>>()
        .map_err(ApiError::internal)?;
    let out: Vec<EventOut<'_>> = rows
        .iter()
        .zip(&raws)
        .map(|((seq, e), data)| EventOut {
            id: &e.id,
            seq: *seq,
            event: &e.event,
            data,
            created_at: clock::rfc3339(e.created_at),
        })
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "events": out, "next": next })))
}

// ---- webhooks ---------------------------------------------------------------

fn webhook_json(w: &Webhook) -> Value {
    let active = w.state == webhooks::State::Active;
    let mut v = json!({
        "id": w.id,
        "app": w.app,
        "event": w.event,
        "url": w.url,
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

fn attempt_json(a: &webhooks::Attempt) -> Value {
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

/// The webhook, if it exists and `who` may see it (integrations: their own).
fn find_webhook(app: &Arc<App>, id: &str, who: Option<&Account>) -> Result<Webhook, ApiError> {
    let not_found = || ApiError::not_found(format!("no webhook {id:?}; list them with GET /v1/webhooks"));
    let wh = app.store.read(|r| webhooks::get(r, id))?.ok_or_else(not_found)?;
    match who {
        Some(a) if a.role == Role::Integration && a.name != wh.created_by => Err(not_found()),
        _ => Ok(wh),
    }
}

async fn create_webhook(app: &Arc<App>, who: &Account, body: &str) -> Result<Resp, ApiError> {
    let v: Value = serde_json::from_str(body).map_err(ApiError::invalid_json)?;
    let field = |name: &str| v.get(name).filter(|x| !x.is_null());
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        match field(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid_field(name, "must be a string")),
        }
    };
    if !v.is_object() {
        return Err(ApiError::invalid_field(
            "app",
            "the body must be a JSON object with app, event and url",
        ));
    }
    let app_name =
        text("app")?.ok_or_else(|| ApiError::invalid_field("app", "is missing; name the subscribing application"))?;
    if app_name.trim().is_empty()
        || app_name.chars().count() > webhooks::MAX_APP
        || app_name.chars().any(char::is_control)
    {
        return Err(ApiError::invalid_field(
            "app",
            format!("must be 1 to {} printable characters", webhooks::MAX_APP),
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
    let url_ok = url.len() <= webhooks::MAX_URL
        && parsed.as_ref().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
        });
    if !url_ok {
        return Err(ApiError::invalid_field(
            "url",
            format!(
                "must be an http(s) URL of at most {} characters, like https://erp.example.com/hooks",
                webhooks::MAX_URL
            ),
        ));
    }
    let secret = text("secret")?;
    if let Some(s) = &secret
        && !webhooks::valid_secret(s)
    {
        return Err(ApiError::invalid_field(
            "secret",
            "must be \"whsec_\" and 24 to 64 bytes in base64; or leave it out and herald makes one",
        ));
    }
    let new = webhooks::NewWebhook {
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
        .write(Grows::Yes, move |txn| webhooks::create(txn, now, new))
        .await?;
    let mut v = webhook_json(&wh);
    v["secret"] = json!(wh.secret);
    Ok(json_response(StatusCode::CREATED, &v))
}

fn list_webhooks(app: &Arc<App>, q: &Query, who: &Account) -> Result<Resp, ApiError> {
    let all = app.store.read(webhooks::list)?;
    let out: Vec<Value> = all
        .iter()
        .filter(|w| who.role != Role::Integration || w.created_by == who.name)
        .filter(|w| q.get("app").is_none_or(|a| a == w.app))
        .filter(|w| q.get("event").is_none_or(|e| e == w.event))
        .filter(|w| match q.get("active") {
            Some("true") => w.state == webhooks::State::Active,
            Some("false") => w.state == webhooks::State::Disabled,
            _ => true,
        })
        .map(webhook_json)
        .collect();
    Ok(json_response(StatusCode::OK, &json!({ "webhooks": out })))
}

/// Activation, by an account (JSON) or by the link's token (the form of
/// the confirmation page, answered with a page).
async fn activate_webhook(
    app: &Arc<App>,
    id: &str,
    q: &Query,
    req: Request<Incoming>,
    excerpt: &mut Option<Bytes>,
) -> Result<Resp, ApiError> {
    let token = q.get("token").map(str::to_string);
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let has_body = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "0")
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let replay = if is_form {
        let body = Limited::new(req.into_body(), 4096)
            .collect()
            .await
            .map_err(|_| ApiError::payload_too_large(4096))?
            .to_bytes();
        let form = Query::parse(&String::from_utf8_lossy(&body));
        matches!(form.get("replay_events"), Some("true" | "1" | "on"))
    } else if has_body {
        let body = read_json(app, req, excerpt).await?;
        let v: Value = serde_json::from_str(&body).map_err(ApiError::invalid_json)?;
        match v.get("replay_events") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ApiError::invalid_field("replay_events", "must be true or false")),
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
            webhooks::activate(txn, &id2, replay, t2.as_deref(), now, &tz)
        })
        .await?;
    match (result, token.is_some()) {
        (Ok(wh), false) => Ok(json_response(StatusCode::OK, &webhook_json(&wh))),
        (Ok(wh), true) => Ok(html(
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
        (Err(webhooks::ActivateError::NotFound), _) => Err(ApiError::not_found(format!("no webhook {id:?}"))),
        (Err(webhooks::ActivateError::BadToken), _) => Err(bad_link()),
    }
}

fn bad_link() -> ApiError {
    let mut e = ApiError::forbidden("link");
    e.message =
        "this reactivation link is not valid: it was used, it expired with the buffer, or it is incomplete".into();
    e
}

/// The page a reactivation link opens. It changes nothing (mail scanners
/// open links); its buttons POST the choice with the token.
fn activate_page(app: &Arc<App>, id: &str, q: &Query) -> Result<Resp, ApiError> {
    let token = q.get("token").unwrap_or("");
    let wh = app.store.read(|r| webhooks::get(r, id))?;
    let Some(wh) = wh.filter(|w| webhooks::token_valid(w, token, app.clock.now())) else {
        return Ok(html(
            StatusCode::FORBIDDEN,
            "Link not valid",
            &format!("<p>{}</p>", escape(&bad_link().message)),
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
        url = escape(&wh.url),
        event = escape(&wh.event),
        reason = escape(wh.disabled_reason.as_deref().unwrap_or("")),
        buffered = wh.queued,
        until = wh.buffer_until.map(clock::rfc3339).unwrap_or_default(),
    );
    Ok(html(StatusCode::OK, "Reactivate webhook", &body))
}

fn html(status: StatusCode, title: &str, body: &str) -> Resp {
    html_page(status, crate::ui::page(title, body))
}

fn html_page(status: StatusCode, page: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(page)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

// ---- executions -------------------------------------------------------------

fn execution_json(e: &executions::Execution, now: jiff::Timestamp) -> Value {
    let mut v = json!({
        "id": e.id,
        "interface": e.interface,
        "kind": match e.kind { executions::Kind::Daily => "daily", executions::Kind::Scheduled => "scheduled" },
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

fn interfaces(app: &Arc<App>) -> Result<Resp, ApiError> {
    let rows = app.store.read(executions::interfaces)?;
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
    Ok(json_response(StatusCode::OK, &json!({ "interfaces": out })))
}

fn list_executions(app: &Arc<App>, q: &Query) -> Result<Resp, ApiError> {
    let status = match q.get("status") {
        Some(s) => Some(
            Status::parse(s)
                .ok_or_else(|| ApiError::invalid_field("status", format!("{s:?} is not one of running, ok, ko")))?,
        ),
        None => None,
    };
    let filter = executions::Filter {
        interface: q.get("interface"),
        status,
        after: q.get("after"),
        limit: q.limit()?,
    };
    let (rows, next) = app.store.read(|r| executions::list(r, &filter))?;
    let now = app.clock.now();
    let out: Vec<Value> = rows.iter().map(|e| execution_json(e, now)).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "executions": out, "next": next }),
    ))
}

fn find_execution(app: &Arc<App>, id: &str) -> Result<executions::Execution, ApiError> {
    app.store
        .read(|r| executions::get(r, id))?
        .ok_or_else(|| ApiError::not_found(format!("no execution {id:?}; list them with GET /v1/executions")))
}

fn execution_logs(app: &Arc<App>, id: &str, q: &Query) -> Result<Resp, ApiError> {
    let exe = find_execution(app, id)?;
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
    let filter = executions::LogFilter {
        level,
        category,
        after,
        limit: q.limit()?,
    };
    let (lines, next) = app.store.read(|r| executions::logs(r, &exe, &filter))?;
    let out: Vec<Value> = lines.iter().map(log_json).collect();
    Ok(json_response(StatusCode::OK, &json!({ "logs": out, "next": next })))
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

// ---- operations -------------------------------------------------------------

fn status(app: &Arc<App>) -> Result<Resp, ApiError> {
    let now = app.clock.now();
    let (events_stored, (ko, running_with_errors)) = app
        .store
        .read(|r| Ok((events::count(r)?, executions::count_troubled(r)?)))?;
    let settings = app.settings();
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "gateway": settings.general.name,
            "now": now.to_string(),
            "health": "ok",
            "ready": app.ready.load(Ordering::Relaxed),
            "draining": app.draining.load(Ordering::Relaxed),
            "events_stored": events_stored,
            "jobs_due": jobs::count_due(&app.store, now)?,
            "jobs_scheduled": jobs::count_all(&app.store)?,
            "executions_ko": ko,
            "executions_running_with_errors": running_with_errors,
            "store_bytes": app.store.file_bytes(),
            "storage_full": app.store.is_full(),
        }),
    ))
}

/// Moves the manual clock (tests only: exists when `HERALD_TEST_CLOCK` is set).
fn test_clock(app: &Arc<App>, body: &str) -> Result<Resp, ApiError> {
    if !app.clock.is_manual() {
        return Err(ApiError::not_found(
            "the clock is driven only when herald runs with HERALD_TEST_CLOCK",
        ));
    }
    let v: Value = serde_json::from_str(body).map_err(ApiError::invalid_json)?;
    let by = match (
        v.get("advance").and_then(Value::as_str),
        v.get("to").and_then(Value::as_str),
    ) {
        (Some(d), _) => jiff::SignedDuration::try_from(
            crate::config::parse_duration(d).map_err(|m| ApiError::invalid_field("advance", m))?,
        )
        .map_err(|e| ApiError::invalid_field("advance", e.to_string()))?,
        (None, Some(t)) => {
            let to: jiff::Timestamp = t
                .parse()
                .map_err(|_| ApiError::invalid_field("to", format!("{t:?} is not an RFC 3339 time")))?;
            let by = to.duration_since(app.clock.now());
            if by.is_negative() {
                return Err(ApiError::invalid_field("to", "the clock only moves forward"));
            }
            by
        }
        (None, None) => {
            return Err(ApiError::invalid_field(
                "advance",
                "give \"advance\": \"60s\" or \"to\": RFC 3339",
            ));
        }
    };
    let now = app.clock.advance(by);
    Ok(json_response(StatusCode::OK, &json!({ "now": now.to_string() })))
}

// ---- failed calls -----------------------------------------------------------

/// Records a failed call: in the daily execution of interface `api`, and,
/// when the caller authenticated, in the error mail to its account's address
/// (any 4xx but 401 and 429, any 5xx). Calls refused for rate limiting are not
/// written at all: a stranger must not be able to fill the log.
fn record_failure(
    app: &Arc<App>,
    method: &Method,
    target: &str,
    who: Option<&Account>,
    peer: SocketAddr,
    e: &ApiError,
    excerpt: Option<Bytes>,
) {
    let account = who.map_or("-", |a| a.name.as_str());
    tracing::info!(%method, target, status = e.status.as_u16(), code = e.code, account, %peer, "request failed");
    if e.status == StatusCode::TOO_MANY_REQUESTS || e.code == "shutting_down" {
        return;
    }
    let now = app.clock.now();
    let title = format!("{method} {target} → {} {}", e.status.as_u16(), e.code);
    let line = LogLine {
        at: clock::to_ms(now),
        level: Level::Error,
        category: Some(e.category()),
        message: format!("{title}: {}", e.message),
        detail: Some(format!("account: {account}; from: {}", peer.ip())),
    };
    let mail = match who {
        Some(a) if e.status != StatusCode::UNAUTHORIZED => match &a.email {
            Some(email) => {
                let mut detail = format!("error: {}\nfrom: {}", e.message, peer.ip());
                if let Some(body) = excerpt.as_deref().map(redacted_excerpt) {
                    detail.push_str(&format!("\nbody: {body}"));
                }
                let entry = mail::Entry {
                    at: clock::to_ms(now),
                    title,
                    detail,
                };
                Some((a.name.clone(), email.clone(), entry))
            }
            None => {
                tracing::debug!(account = a.name, "the account has no e-mail address; no error mail");
                None
            }
        },
        _ => None,
    };
    let app = app.clone();
    tokio::spawn(async move {
        let settings = app.settings();
        if let Some((account, email, entry)) = mail {
            // Allowed when the store is full: that is when the admins must hear of it.
            let alerts = settings.alerts.clone();
            let gathered = app
                .store
                .write(Grows::No, move |txn| {
                    mail::gather(txn, now, &alerts, mail::Kind::ApiFailures { account }, &email, entry)
                })
                .await;
            if let Err(err) = gathered {
                tracing::error!(error = %err, "cannot record a failed call for the error mail");
            }
        }
        let tz = settings.general.timezone.clone();
        let written = app
            .store
            .write(Grows::Yes, move |txn| {
                executions::log_daily(txn, now, &tz, executions::API, "api", line)
            })
            .await;
        if let Err(err) = written {
            tracing::warn!(error = %err, "cannot record a failed call in the execution log");
        }
    });
}

/// The path and query of a request, with the values of secret-looking
/// query parameters replaced by `[redacted]`.
fn redacted_target(uri: &hyper::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_string();
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if is_secret_name(k) => format!("{k}=[redacted]"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{}?{}", uri.path(), parts.join("&"))
}

fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|s| name.contains(s))
}

/// Names whose values never leave herald: not in mails, not in logs.
const SECRET_NAMES: [&str; 8] = [
    "secret",
    "password",
    "passwd",
    "token",
    "authorization",
    "api_key",
    "apikey",
    "credential",
];
const EXCERPT_BYTES: usize = 2048;

/// The first 2 KiB of a request body, with the values of secret-looking
/// fields replaced by `[redacted]`.
fn redacted_excerpt(body: &[u8]) -> String {
    fn redact(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if is_secret_name(k) {
                        *v = Value::String("[redacted]".into());
                    } else {
                        redact(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(redact),
            _ => {}
        }
    }
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(mut v) => {
            redact(&mut v);
            v.to_string()
        }
        // Not JSON: it was refused before any field was read; show the raw
        // start, but never anything that looks like one of our secrets.
        Err(_) => String::from_utf8_lossy(body)
            .split_whitespace()
            .map(|w| {
                if w.contains("whsec_") || w.contains("hrl_") {
                    "[redacted]"
                } else {
                    w
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
    };
    if text.len() <= EXCERPT_BYTES {
        return text;
    }
    let mut end = EXCERPT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], body.len())
}

fn list_mails(app: &Arc<App>, q: &Query) -> Result<Resp, ApiError> {
    let state = match q.get("state") {
        Some(s) => Some(
            mail::State::parse(s)
                .ok_or_else(|| ApiError::invalid_field("state", format!("{s:?} is not one of queued, sent, failed")))?,
        ),
        None => None,
    };
    let filter = mail::Filter {
        state,
        after: q.get("after"),
        limit: q.limit()?,
    };
    let (rows, next) = app.store.read(|r| mail::list(r, &filter))?;
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
    Ok(json_response(StatusCode::OK, &json!({ "mails": out, "next": next })))
}

// ---- plumbing ---------------------------------------------------------------

/// Reads a JSON body within `server.max_body`, checking the content type;
/// keeps it in `excerpt` for the error mail.
async fn read_json(app: &Arc<App>, req: Request<Incoming>, excerpt: &mut Option<Bytes>) -> Result<String, ApiError> {
    let max = app.settings().server.max_body;
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::unsupported_media_type());
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(ApiError::payload_too_large(max));
    }
    let body = Limited::new(req.into_body(), max as usize)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::payload_too_large(max)
            } else {
                ApiError::bad_request(format!("the body could not be read: {e}"))
            }
        })?;
    let bytes = body.to_bytes();
    *excerpt = Some(bytes.clone());
    let text = String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::invalid_json("it is not UTF-8"))?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(ApiError::invalid_json)?;
    Ok(text)
}

struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: &str) -> Query {
        Query(form_urlencoded::parse(q.as_bytes()).into_owned().collect())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::invalid_field(key, format!("{v:?} is not a non-negative integer"))),
        }
    }

    fn limit(&self) -> Result<usize, ApiError> {
        match self.u64("limit")? {
            None => Ok(100),
            Some(n @ 1..=1000) => Ok(n as usize),
            Some(n) => Err(ApiError::invalid_field(
                "limit",
                format!("{n} is out of range; use 1 to 1000"),
            )),
        }
    }
}

fn json_response(status: StatusCode, body: &impl Serialize) -> Resp {
    let bytes = serde_json::to_vec(body).expect("API answers always serialize");
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn text(status: StatusCode, body: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn error_response(e: &ApiError) -> Resp {
    let mut r = json_response(e.status, &e.body());
    if e.status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"herald\", charset=\"UTF-8\""),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_hide_secrets_and_stop_at_2_kib() {
        let body = br#"{"url":"https://x.io","secret":"whsec_abc","auth":{"Password":"p","user":"u"},"api_token":"t"}"#;
        let e = redacted_excerpt(body);
        assert!(
            !e.contains("whsec_abc") && !e.contains("\"p\"") && !e.contains("\"t\""),
            "{e}"
        );
        assert!(e.contains("https://x.io") && e.contains("\"user\":\"u\""), "{e}");
        let long = format!(r#"{{"data":"{}"}}"#, "é".repeat(3000));
        let e = redacted_excerpt(long.as_bytes());
        assert!(
            e.len() < EXCERPT_BYTES + 40 && e.ends_with("bytes in all)"),
            "{}",
            e.len()
        );
        assert_eq!(redacted_excerpt(b"not json whsec_zzz"), "not json [redacted]");
    }

    #[test]
    fn targets_hide_secret_query_parameters() {
        let uri: hyper::Uri = "/v1/webhooks/wh_1/activate?token=abc123&x=1&api_key=k".parse().unwrap();
        assert_eq!(
            redacted_target(&uri),
            "/v1/webhooks/wh_1/activate?token=[redacted]&x=1&api_key=[redacted]"
        );
        let plain: hyper::Uri = "/v1/events?after=5".parse().unwrap();
        assert_eq!(redacted_target(&plain), "/v1/events?after=5");
    }
}
