//! The technician's console: server-rendered pages (no scripts, no
//! external assets, readable on a phone) where a field technician finds
//! what is wrong and fixes what can be fixed.
//!
//! - `overview`: `GET /`, what needs attention first, each line with its
//!   button; then interfaces, schedules, webhooks, notifications, mails.
//! - `execution`: `GET /ui/executions/{id}`, an execution's log lines with
//!   filters, hints and the exports.
//! - this module: the buttons. Every one is a POST form to `/ui/...`;
//!   nothing changes on GET. A form carries a CSRF token bound to the
//!   caller's credentials (a browser resends Basic credentials by itself,
//!   so a foreign page must not be able to post), and a POST whose
//!   `Origin` is another site is refused.

mod execution;
mod notices;
mod overview;
mod parts;

use std::sync::Arc;

use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use subtle::ConstantTimeEq;

pub use self::notices::Notices;
use self::parts::csrf;
use crate::app::App;
use crate::auth::{Access, READERS};
use crate::feature::Feature;
use crate::html::{self, escape};
use crate::http::{self, ApiError, Call, Query, Resp, Route};
use crate::store::Grows;

/// The technician's pages and their buttons.
pub const FEATURE: Feature = Feature {
    routes,
    state: Some(|_| Arc::new(Notices::default())),
    ..Feature::named("ui")
};

pub fn routes() -> Vec<Route> {
    let readers = Access::Roles(READERS);
    vec![
        Route::new(Method::GET, "/", readers, |app, call| {
            Box::pin(overview::page(app, call))
        }),
        Route::new(Method::GET, "/ui/executions/{id}", readers, |app, call| {
            Box::pin(execution::page(app, call))
        }),
        Route::new(Method::POST, "/ui/actions/{id}/retry", readers, |app, call| {
            Box::pin(retry_action(app, call))
        }),
        Route::new(Method::POST, "/ui/executions/{id}/acknowledge", readers, |app, call| {
            Box::pin(acknowledge_execution(app, call))
        }),
        Route::new(Method::POST, "/ui/actions/{id}/resolve", readers, |app, call| {
            Box::pin(handle_action(app, call, "resolve"))
        }),
        Route::new(Method::POST, "/ui/actions/{id}/assign", readers, |app, call| {
            Box::pin(handle_action(app, call, "assign"))
        }),
        Route::new(Method::POST, "/ui/actions/{id}/acknowledge", readers, |app, call| {
            Box::pin(handle_action(app, call, "acknowledge"))
        }),
        Route::new(Method::POST, "/ui/schedules/{name}/run", readers, |app, call| {
            Box::pin(run_schedule(app, call))
        }),
        Route::new(Method::POST, "/ui/webhooks/{id}/activate", readers, |app, call| {
            Box::pin(activate_webhook(app, call))
        }),
        Route::new(
            Method::POST,
            "/ui/notifications/{system}/{event}/reactivate",
            readers,
            |app, call| Box::pin(reactivate_notification(app, call)),
        ),
        // Browsers ask for it with every page; a 404 would read as an error.
        Route::new(Method::GET, "/favicon.ico", Access::Public, |_, _| {
            Box::pin(async { Ok(favicon()) })
        }),
    ]
}

const FAVICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\">\
    <circle cx=\"8\" cy=\"8\" r=\"8\" fill=\"#246\"/><path d=\"M5 3v10M11 3v10M5 8h6\" \
    stroke=\"#fff\" stroke-width=\"2\"/></svg>";

fn favicon() -> Resp {
    let mut r = http::with_type(StatusCode::OK, FAVICON.into(), "image/svg+xml");
    let day = HeaderValue::from_static("max-age=86400");
    r.headers_mut().insert(header::CACHE_CONTROL, day);
    r
}

// ---- what the pages share ------------------------------------------------------

/// A page that says why a button did nothing, with the way back.
fn refused(status: StatusCode, message: &str, back: &str) -> Resp {
    html::response(
        status,
        html::page(
            "Not done",
            &format!(
                "<p class=\"ko\">{}</p><p><a href=\"{}\">Back</a></p>",
                escape(message),
                escape(back)
            ),
        ),
    )
}

/// A checked form: its fields, and where to go back to.
struct Form {
    fields: Query,
    back: String,
}

/// Reads a button's form and checks where it came from: the same origin,
/// and the caller's own form token. `Err` is the page to answer.
async fn form(call: &mut Call) -> Result<Result<Form, Resp>, ApiError> {
    let media = call.header(header::CONTENT_TYPE).unwrap_or("");
    if !media.starts_with("application/x-www-form-urlencoded") {
        return Err(ApiError::unsupported_media_type());
    }
    let body = call.body(8192).await?;
    let fields = Query::parse(&String::from_utf8_lossy(&body));
    // Only a path of this site: never a redirect elsewhere.
    let back = fields
        .get("back")
        .filter(|b| b.starts_with('/') && !b.starts_with("//") && !b.contains('\\'))
        .unwrap_or("/")
        .to_string();
    if !same_origin(call) {
        return Ok(Err(refused(
            StatusCode::FORBIDDEN,
            "this form was sent from another site; use the buttons on herald's own pages",
            "/",
        )));
    }
    let expected = csrf(call.who());
    let given = fields.get("csrf").unwrap_or("");
    if !bool::from(expected.as_bytes().ct_eq(given.as_bytes())) {
        return Ok(Err(refused(
            StatusCode::FORBIDDEN,
            "this page is out of date (herald restarted, or the token changed); reload it and press the button again",
            &back,
        )));
    }
    Ok(Ok(Form { fields, back }))
}

/// Whether the request came from a page of this very site. Browsers say
/// so in `Sec-Fetch-Site`; older ones send an `Origin` with every POST,
/// which must name our host. (Under a no-referrer policy Chromium sends
/// `Origin: null` for our own forms, so `Sec-Fetch-Site` decides first.)
fn same_origin(call: &Call) -> bool {
    if let Some(site) = call.header(HeaderName::from_static("sec-fetch-site")) {
        return site == "same-origin";
    }
    let Some(origin) = call.header(header::ORIGIN) else {
        return true;
    };
    let host = call.header(header::HOST).unwrap_or("");
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
}

/// Back to the page, which says what the button did (green when it did
/// what it says, red when not); the message stays in [`Notices`].
fn done(app: &Arc<App>, call: &Call, back: &str, ok: bool, message: String) -> Resp {
    let id = app.state::<Notices>().put(&call.who().name, ok, message);
    let sep = if back.contains('?') { '&' } else { '?' };
    let mut r = http::no_content();
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::try_from(format!("{back}{sep}done={id}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The message of a refusal from the API's own checks, as a page.
fn api_refused(e: ApiError, back: &str) -> Result<Resp, ApiError> {
    if e.status.is_server_error() {
        return Err(e);
    }
    Ok(refused(e.status, &e.message, back))
}

async fn retry_action(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let f = match form(call).await? {
        Ok(f) => f,
        Err(page) => return Ok(page),
    };
    let id = call.param().to_string();
    match crate::actions::retry_now(app, &id).await {
        Ok(a) => {
            // A retry that failed again is no green "Done".
            let failed = matches!(
                a.progress.state,
                crate::actions::rules::State::Retrying | crate::actions::rules::State::Closed
            );
            let why = a
                .progress
                .last_error
                .as_ref()
                .filter(|_| failed)
                .map(|(_, e)| format!(": {e}"))
                .unwrap_or_default();
            let text = format!(
                "action {id}: {} made, now {}{why}",
                a.attempts_text(),
                a.progress.state.as_str()
            );
            Ok(done(app, call, &f.back, !failed, text))
        }
        Err(e) => api_refused(e, &f.back),
    }
}

/// A button's form with its `note`, checked as the API checks it; `Err`
/// is the page to answer.
async fn form_with_note(call: &mut Call) -> Result<Result<(Form, Option<String>), Resp>, ApiError> {
    let f = match form(call).await? {
        Ok(f) => f,
        Err(page) => return Ok(Err(page)),
    };
    let v = serde_json::json!({ "note": f.fields.get("note") });
    match crate::executions::note(&v) {
        Ok(note) => Ok(Ok((f, note))),
        Err(e) => api_refused(e, &f.back).map(Err),
    }
}

async fn acknowledge_execution(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let (f, note) = match form_with_note(call).await? {
        Ok(f) => f,
        Err(page) => return Ok(page),
    };
    let id = call.param().to_string();
    match crate::executions::acknowledge_as(app, &id, &call.who().name, note).await {
        Ok(exe) => Ok(done(
            app,
            call,
            &f.back,
            true,
            format!(
                "execution {id}: {} acknowledged; it leaves the list",
                crate::executions::errors_text(exe.errors.into())
            ),
        )),
        Err(e) => api_refused(e, &f.back),
    }
}

/// Resolve, assign or acknowledge a to-do or closed action.
async fn handle_action(app: &Arc<App>, call: &mut Call, what: &str) -> Result<Resp, ApiError> {
    use crate::actions::handle::{Handling, handle};
    let (f, note) = match form_with_note(call).await? {
        Ok(f) => f,
        Err(page) => return Ok(page),
    };
    let id = call.param().to_string();
    let field = |name: &str| {
        f.fields
            .get(name)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    let handling = match what {
        "resolve" => match f.fields.get("resolution") {
            Some("successfully_completed") => Handling::Resolve { completed: true },
            Some("unsuccessfully_completed") => Handling::Resolve { completed: false },
            _ => {
                return Ok(refused(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "say whether the action was completed: press one of the two Resolve buttons",
                    &f.back,
                ));
            }
        },
        "assign" => match (field("queue"), field("assignee")) {
            (None, None) => {
                return Ok(refused(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "write a queue or a person to assign the action to",
                    &f.back,
                ));
            }
            (queue, assignee) => Handling::Assign { queue, assignee },
        },
        _ => Handling::Acknowledge,
    };
    match handle(app, &id, handling, &call.who().name, note).await {
        Ok(a) => {
            let text = match what {
                "assign" => format!(
                    "action {id} assigned to {}",
                    [
                        a.progress.queue.as_ref().map(|q| format!("queue {q}")),
                        a.assignee.clone()
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(", ")
                ),
                "resolve" => format!("action {id} is {}; it leaves the list", a.progress.state.as_str()),
                _ => format!("action {id} acknowledged; it leaves the list"),
            };
            Ok(done(app, call, &f.back, true, text))
        }
        Err(e) => api_refused(e, &f.back),
    }
}

async fn run_schedule(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let f = match form(call).await? {
        Ok(f) => f,
        Err(page) => return Ok(page),
    };
    let name = call.param().to_string();
    match crate::schedules::run::now(app.clone(), &name).await {
        Ok(id) => Ok(done(
            app,
            call,
            &f.back,
            true,
            format!("schedule {name}: run {id} started"),
        )),
        Err(crate::schedules::run::NotStarted::Busy) => Ok(refused(
            StatusCode::CONFLICT,
            &format!("a run of schedule {name} is going; wait for it to end"),
            &f.back,
        )),
        Err(crate::schedules::run::NotStarted::Unknown) => Ok(refused(
            StatusCode::NOT_FOUND,
            &format!("no schedule {name} in the configuration"),
            &f.back,
        )),
        Err(crate::schedules::run::NotStarted::Store(e)) => Err(e.into()),
    }
}

async fn activate_webhook(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let f = match form(call).await? {
        Ok(f) => f,
        Err(page) => return Ok(page),
    };
    let id = call.param().to_string();
    let replay = f.fields.get("replay") == Some("1");
    let (now, tz) = (app.clock.now(), app.settings().general.timezone.clone());
    let i = id.clone();
    let result = app
        .store
        .write(Grows::No, move |txn| {
            crate::webhooks::activate(txn, &i, replay, None, now, &tz)
        })
        .await?;
    match result {
        Ok(wh) => Ok(done(
            app,
            call,
            &f.back,
            true,
            if replay {
                format!(
                    "webhook {} of {} is active; its buffered events are being delivered",
                    id, wh.app
                )
            } else {
                format!("webhook {} of {} is active; its buffer was discarded", id, wh.app)
            },
        )),
        Err(_) => Ok(refused(StatusCode::NOT_FOUND, &format!("no webhook {id}"), &f.back)),
    }
}

async fn reactivate_notification(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let f = match form(call).await? {
        Ok(f) => f,
        Err(page) => return Ok(page),
    };
    let (system, event) = (call.params()[0].clone(), call.params()[1].clone());
    let (now, settings) = (app.clock.now(), app.settings());
    let (s, e) = (system.clone(), event.clone());
    let result = app
        .store
        .write(Grows::No, move |txn| {
            crate::notifications::reactivate(txn, now, &settings, &s, &e)
        })
        .await?;
    match result {
        Some(_) => Ok(done(
            app,
            call,
            &f.back,
            true,
            format!("notification {system}/{event} is active again"),
        )),
        None => Ok(refused(
            StatusCode::NOT_FOUND,
            &format!("no notification {system}/{event}"),
            &f.back,
        )),
    }
}
