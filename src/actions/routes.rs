//! The action API: create, list, get, the manual retry, and the callback
//! (authenticated by the action's own token, not by an account).

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::header::HeaderName;
use hyper::{Method, StatusCode};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::record::Action;
use super::rules::{Callback, Effect, Input, State, may_retry};
use super::run::{self, Calls, Ctx};
use super::stored::CallJob;
use super::stored::{Created, NewAction};
use crate::app::App;
use crate::auth::{ALL, Access, AuthError, PUBLISHERS, READERS, Role};
use crate::events;
use crate::http::{self, ApiError, Call, Resp, Route};
use crate::jobs;
use crate::store::Grows;

/// The header that carries the callback token.
const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-herald-callback-token");
/// Longest `idempotency_key` and callback `reason`.
const MAX_KEY: usize = 255;
const MAX_REASON: usize = 2000;

pub fn routes() -> Vec<Route> {
    // GET first: a 405 lists the methods in this order.
    vec![
        Route::new(Method::GET, "/v1/actions", Access::Roles(ALL), |app, call| {
            Box::pin(list(app, call))
        }),
        Route::new(Method::POST, "/v1/actions", Access::Roles(PUBLISHERS), |app, call| {
            Box::pin(create(app, call))
        }),
        Route::new(Method::GET, "/v1/actions/{id}", Access::Roles(ALL), |app, call| {
            Box::pin(get(app, call))
        }),
        Route::new(
            Method::POST,
            "/v1/actions/{id}/retry",
            Access::Roles(READERS),
            |app, call| Box::pin(retry(app, call)),
        ),
        Route::new(
            Method::POST,
            "/v1/actions/{id}/resolve",
            Access::Roles(READERS),
            |app, call| Box::pin(super::handle::resolve(app, call)),
        ),
        Route::new(
            Method::POST,
            "/v1/actions/{id}/assign",
            Access::Roles(READERS),
            |app, call| Box::pin(super::handle::assign(app, call)),
        ),
        Route::new(
            Method::POST,
            "/v1/actions/{id}/acknowledge",
            Access::Roles(READERS),
            |app, call| Box::pin(super::handle::acknowledge(app, call)),
        ),
        Route::new(
            Method::POST,
            "/v1/actions/{id}/callback",
            Access::Public,
            |app, call| Box::pin(callback(app, call)),
        ),
    ]
}

/// A JSON object body with only the `known` fields, each kept as sent, so
/// a payload or callback data keeps every digit and escape.
async fn fields(call: &mut Call, known: &[&str]) -> Result<BTreeMap<String, Box<RawValue>>, ApiError> {
    let text = call.json().await?;
    let v: BTreeMap<String, Box<RawValue>> =
        serde_json::from_str(&text).map_err(|_| ApiError::invalid_json("the body must be a JSON object"))?;
    match v.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::invalid_field(
            k.as_str(),
            format!("is not known here; use {}", known.join(", ")),
        )),
        None => Ok(v),
    }
}

/// The string field `name`, if given (null is not given).
fn text(v: &BTreeMap<String, Box<RawValue>>, name: &str) -> Result<Option<String>, ApiError> {
    match v.get(name).map(|r| r.get()) {
        None | Some("null") => Ok(None),
        Some(raw) => serde_json::from_str::<String>(raw)
            .map(Some)
            .map_err(|_| ApiError::invalid_field(name, "must be a string")),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no action {id:?}; list them with GET /v1/actions"))
}

/// The action, if it exists and the caller may see it (an integration: the
/// actions it created).
fn find(app: &App, call: &Call) -> Result<Action, ApiError> {
    let id = call.param();
    let action = app
        .store
        .read(|r| super::stored::get(r, id))?
        .ok_or_else(|| not_found(id))?;
    match &call.account {
        Some(who) if who.role == Role::Integration && who.name != action.created_by => Err(not_found(id)),
        _ => Ok(action),
    }
}

async fn get(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    Ok(http::json(StatusCode::OK, &find(app, call)?.json()))
}

async fn list(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let q = &call.query;
    let state = match q.get("state") {
        None => None,
        Some(s) => Some(State::parse(s).ok_or_else(|| {
            ApiError::invalid_field(
                "state",
                format!("{s:?} is not a state; use pending, retrying, waiting, completed, todo or closed"),
            )
        })?),
    };
    let limit = q.limit()?;
    let who = call.who();
    let own = (who.role == Role::Integration).then_some(who.name.as_str());
    let filter = super::stored::Filter {
        state,
        interface: q.get("interface"),
        created_by: own,
        queue: q.get("queue"),
        assignee: q.get("assignee"),
    };
    let (actions, next) = app
        .store
        .read(|r| super::stored::list(r, &filter, q.get("after"), limit))?;
    let out: Vec<Value> = actions.iter().map(Action::json).collect();
    Ok(http::json(StatusCode::OK, &json!({ "actions": out, "next": next })))
}

async fn create(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let v = fields(call, &["interface", "payload", "owner", "idempotency_key"]).await?;
    let settings = app.settings();
    let text = |name: &str| text(&v, name);
    let configured = || {
        let names: Vec<&str> = settings
            .interfaces
            .iter()
            .filter(|i| i.kind == crate::config::InterfaceKind::Action)
            .map(|i| i.name.as_str())
            .collect();
        if names.is_empty() {
            "none is configured; add an [[interfaces]] entry with kind = \"action\"".to_string()
        } else {
            format!("the action interfaces are: {}", names.join(", "))
        }
    };
    let name = text("interface")?
        .ok_or_else(|| ApiError::invalid_field("interface", format!("is missing; {}", configured())))?;
    let iface = run::interface(&settings, &name).ok_or_else(|| {
        ApiError::invalid_field(
            "interface",
            format!("{name:?} is not an action interface; {}", configured()),
        )
    })?;
    let payload = v
        .get("payload")
        .ok_or_else(|| ApiError::invalid_field("payload", "is missing; give the JSON to send to the external system"))?
        .get()
        .to_string();
    let max = settings.storage.max_event_size;
    if payload.len() as u64 > max {
        return Err(ApiError::invalid_field(
            "payload",
            format!(
                "is {} bytes; at most {max} are accepted (storage.max_event_size)",
                payload.len()
            ),
        ));
    }
    if events::depth(&payload) > events::MAX_DEPTH {
        return Err(ApiError::invalid_field(
            "payload",
            format!(
                "is nested deeper than {} levels of arrays and objects",
                events::MAX_DEPTH
            ),
        ));
    }
    let owner = text("owner")?;
    if let Some(o) = &owner
        && (o.len() > 254 || o.parse::<lettre::Address>().is_err())
    {
        return Err(ApiError::invalid_field(
            "owner",
            format!("{o:?} is not an e-mail address; give one like ops@example.com, or leave it out"),
        ));
    }
    let idempotency_key = text("idempotency_key")?;
    if let Some(k) = &idempotency_key
        && (k.is_empty() || k.chars().count() > MAX_KEY || k.chars().any(char::is_control))
    {
        return Err(ApiError::invalid_field(
            "idempotency_key",
            format!("must be 1 to {MAX_KEY} characters of printable text"),
        ));
    }
    let new = NewAction {
        interface: name,
        payload,
        owner,
        idempotency_key,
        account: call.who().name.clone(),
        attempts_max: iface.attempts,
        host: crate::net::authority(&iface.url),
    };
    let now = app.clock.now();
    let created = app
        .store
        .write(Grows::Yes, move |txn| super::stored::create(txn, new, now))
        .await?;
    Ok(match created {
        Created::New(a, _) => http::json(StatusCode::CREATED, &a.json()),
        Created::Repeat(a) => http::json(StatusCode::OK, &a.json()),
    })
}

/// One attempt at once, counted; answered after it was made.
async fn retry(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let id = find(app, call)?.id;
    Ok(http::json(StatusCode::OK, &retry_now(app, &id).await?.json()))
}

/// A manual retry of the action `id`: one attempt at once, counted; the
/// action after it. 409 unless the action is `retrying`.
pub async fn retry_now(app: &App, id: &str) -> Result<Action, ApiError> {
    let not_retrying = |a: &Action| {
        ApiError::conflict(format!(
            "action {id} is {} ({}); only a retrying action can be retried",
            a.progress.state.as_str(),
            a.attempts_text()
        ))
    };
    let Some(_slot) = app.state::<Calls>().claim(id) else {
        return Err(ApiError::conflict(format!(
            "a call of action {id} is being made right now; look at it again in a moment"
        )));
    };
    // Read again under the slot: the retry job may have just called.
    let (action, job) = app.store.read(|r| {
        Ok((
            super::stored::get(r, id)?,
            jobs::get_named::<CallJob>(r, &super::stored::call_job(id))?,
        ))
    })?;
    let action = action.ok_or_else(|| not_found(id))?;
    if !may_retry(&action.progress) {
        return Err(not_retrying(&action));
    }
    let Some((_, CallJob { token, .. })) = job else {
        return Err(ApiError::internal(format!(
            "action {id} is retrying but has no call job"
        )));
    };
    let (after, _) = run::attempt(app, action, token).await?;
    after.ok_or_else(|| not_found(id))
}

async fn callback(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let id = call.param().to_string();
    let token = call.header(TOKEN_HEADER).map(str::to_string);
    let action = app
        .store
        .read(|r| super::stored::get(r, &id))?
        .ok_or_else(|| not_found(&id))?;
    let wrong_token = || ApiError {
        message: format!("missing or wrong callback token; send the one herald gave in the call, in {TOKEN_HEADER}"),
        ..ApiError::unauthorized()
    };
    let Some(token) = token else {
        return Err(wrong_token());
    };
    if !action.token_matches(&token) {
        return Err(
            match app.auth.wrong(call.peer.ip(), app.settings().server.wrong_credentials) {
                AuthError::RateLimited(left) => ApiError::rate_limited(left),
                _ => wrong_token(),
            },
        );
    }
    let v = fields(call, &["success", "data", "reason"]).await?;
    let success = match v.get("success").map(|r| r.get()) {
        Some("true") => true,
        Some("false") => false,
        _ => return Err(ApiError::invalid_field("success", "must be true or false")),
    };
    let reason = text(&v, "reason")?;
    if reason.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(ApiError::invalid_field(
            "reason",
            format!("is over {MAX_REASON} characters"),
        ));
    }
    let data = v
        .get("data")
        .map(|d| d.get())
        .filter(|d| *d != "null")
        .map(str::to_string);
    let cb = Callback { success, data, reason };
    // The same callback again changes nothing and needs no write.
    if action.progress.state != State::Waiting && action.progress.callback.as_ref() == Some(&cb) {
        return Ok(http::json(StatusCode::OK, &action.json()));
    }
    let settings = app.settings();
    let ctx = Ctx::new(app, &settings, &action);
    let now = app.clock.now();
    let done = app
        .store
        .write(Grows::No, move |txn| {
            run::commit(txn, &id, Input::Callback(cb), now, &ctx, None, None)
        })
        .await?;
    match done {
        None => Err(not_found(call.param())),
        Some((a, Effect::Conflict)) => Err(ApiError::conflict(format!(
            "action {} is {} and no longer waits for a callback; this one changed nothing",
            a.id,
            a.progress.state.as_str()
        ))),
        Some((a, _)) => Ok(http::json(StatusCode::OK, &a.json())),
    }
}
