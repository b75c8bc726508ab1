//! The daemon's own endpoints: liveness (`/healthz`), readiness
//! (`/readyz`), Prometheus metrics (`/metrics`), the status summary
//! (`/v1/status`, what `herald status` prints), the API's reference
//! (`/openapi.json`, kept in `src/openapi.json`) and, for tests only, the
//! driven clock (`/v1/test/clock`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use hyper::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::{ADMIN, Access, READERS};
use crate::config;
use crate::feature::Feature;
use crate::http::{self, ApiError, Call, Resp, Route};
use crate::store::Health;
use crate::{actions, clock, events, executions, jobs, mail, webhooks};

/// Health, readiness, metrics and the status summary.
pub const FEATURE: Feature = Feature {
    routes,
    ..Feature::named("ops")
};

pub fn routes() -> Vec<Route> {
    let mut routes = vec![
        Route::new(Method::GET, "/healthz", Access::Public, |app, call| {
            Box::pin(healthz(app, call))
        }),
        Route::new(Method::GET, "/readyz", Access::Public, |app, call| {
            Box::pin(readyz(app, call))
        }),
        Route::new(Method::GET, "/metrics", Access::Metrics, |app, call| {
            Box::pin(metrics(app, call))
        }),
        Route::new(Method::GET, "/v1/status", Access::Roles(READERS), |app, call| {
            Box::pin(status(app, call))
        }),
        Route::new(Method::GET, "/openapi.json", Access::Public, |app, _| {
            Box::pin(async move { Ok(openapi(&app.settings())) })
        }),
        Route::new(Method::POST, "/v1/test/clock", Access::Roles(ADMIN), |app, call| {
            Box::pin(test_clock(app, call))
        }),
    ];
    // Lets the tests check that a panicking handler answers 500 and harms nothing.
    if cfg!(feature = "test-hooks") {
        routes.push(Route::new(
            Method::POST,
            "/v1/test/panic",
            Access::Roles(ADMIN),
            |_, _| Box::pin(async { panic!("a test asked for a panic") }),
        ));
    }
    routes
}

/// The HTTP API's reference, OpenAPI 3.1: every route of the router, with
/// the roles that may call it (a test holds the two together).
pub const OPENAPI: &str = include_str!("openapi.json");

/// The reference as this gateway serves it: the interfaces an action may
/// name are the configured ones.
fn openapi(settings: &config::Config) -> Resp {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    let mut doc = DOC
        .get_or_init(|| serde_json::from_str(OPENAPI).expect("src/openapi.json is JSON (a test reads it)"))
        .clone();
    let actions: Vec<&str> = settings
        .interfaces
        .iter()
        .filter(|i| i.kind == config::InterfaceKind::Action)
        .map(|i| i.name.as_str())
        .collect();
    if !actions.is_empty() {
        doc["components"]["schemas"]["ActionIn"]["properties"]["interface"]["enum"] = json!(actions);
    }
    http::json(StatusCode::OK, &doc)
}

async fn healthz(_: &Arc<App>, _: &mut Call) -> Result<Resp, ApiError> {
    Ok(text(StatusCode::OK, "ok\n"))
}

async fn readyz(app: &Arc<App>, _: &mut Call) -> Result<Resp, ApiError> {
    let draining = app.draining.load(Ordering::Relaxed);
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    Ok(
        match (app.ready.load(Ordering::Relaxed), draining, app.store.health()) {
            (_, true, _) => text(unavailable, "draining\n"),
            (false, _, _) => text(unavailable, "starting\n"),
            (true, _, Health::Ok) => text(StatusCode::OK, "ready\n"),
            // Not ready to take events; reads and deliveries go on.
            (true, _, Health::MaxSize | Health::DiskFull) => text(unavailable, "storage_full\n"),
            (true, _, Health::Recovering) => text(unavailable, "storage_recovering\n"),
        },
    )
}

/// The probes answer in plain text: what a shell script or a load balancer reads.
fn text(status: StatusCode, body: &'static str) -> Resp {
    http::with_type(status, Bytes::from_static(body.as_bytes()), "text/plain; charset=utf-8")
}

async fn metrics(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let now = app.clock.now();
    let m = &app.metrics;
    if let Ok(n) = jobs::count_due(&app.store, now) {
        m.jobs_due.set(n as i64);
    }
    m.storage_full.set(i64::from(app.store.is_full()));
    let (hooks, queued) = app
        .store
        .read(|r| Ok((webhooks::backlog(r)?, mail::count_queued(r)?)))?;
    m.mails_queued.set(queued as i64);
    // Every kind, zeros included: an alert rule sees the series exist.
    for (kind, n) in crate::worklist::sizes(app)? {
        m.worklist
            .get_or_create(&vec![("kind", kind.as_str().to_string())])
            .set(n as i64);
    }
    // Deleted webhooks leave the gauges.
    m.webhook_pending.clear();
    m.webhook_oldest_pending.clear();
    for (id, pending, oldest) in hooks {
        let labels = vec![("webhook", id)];
        m.webhook_pending.get_or_create(&labels).set(pending as i64);
        let age = oldest.map_or(0.0, |at| (clock::to_ms(now) - at).max(0) as f64 / 1000.0);
        m.webhook_oldest_pending.get_or_create(&labels).set(age);
    }
    // Prometheus asks for OpenMetrics first; `promtool` and older scrapers
    // ask for the 0.0.4 text format.
    let accept = call.header(header::ACCEPT).unwrap_or("");
    Ok(
        if accept.contains("text/plain") && !accept.contains("application/openmetrics-text") {
            http::with_type(
                StatusCode::OK,
                Bytes::from(m.encode_004()),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        } else {
            http::with_type(
                StatusCode::OK,
                Bytes::from(m.encode()),
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        },
    )
}

async fn status(app: &Arc<App>, _: &mut Call) -> Result<Resp, ApiError> {
    let now = app.clock.now();
    let (events_stored, (ko, running_with_errors), (acts, acts_total)) = app.store.read(|r| {
        Ok((
            events::count(r)?,
            executions::count_troubled(r)?,
            actions::attention(r, 20)?,
        ))
    })?;
    // "attempt N of M" beside each, as `herald status` prints them.
    let attention: Vec<Value> = acts
        .iter()
        .map(|a| {
            let mut v = a.json();
            v["attempts"] = json!(a.attempts_text());
            v
        })
        .collect();
    let settings = app.settings();
    Ok(http::json(
        StatusCode::OK,
        &json!({
            "version": env!("CARGO_PKG_VERSION"),
            "gateway": settings.general.name,
            // What the pages and the CLI show times in.
            "timezone": settings.general.timezone.iana_name().unwrap_or("UTC"),
            "now": clock::fmt(now),
            "health": "ok",
            "ready": app.ready.load(Ordering::Relaxed),
            "draining": app.draining.load(Ordering::Relaxed),
            "events_stored": events_stored,
            "jobs_due": jobs::count_due(&app.store, now)?,
            "jobs_scheduled": jobs::count_all(&app.store)?,
            "executions_ko": ko,
            "executions_running_with_errors": running_with_errors,
            "store_bytes": app.store.on_disk(),
            "storage_full": app.store.is_full(),
            "storage": app.store.health().as_str(),
            "actions_attention": acts_total,
            "actions": attention,
        }),
    ))
}

/// Moves the manual clock (tests only: exists when `HERALD_TEST_CLOCK` is set).
async fn test_clock(app: &Arc<App>, call: &mut Call) -> Result<Resp, ApiError> {
    let v = call.json_object(&["advance", "to", "step", "elapse"]).await?;
    if !app.clock.is_manual() {
        return Err(ApiError::not_found(
            "the clock is driven only when herald runs with HERALD_TEST_CLOCK",
        ));
    }
    let signed = |field: &'static str| -> Result<Option<jiff::SignedDuration>, ApiError> {
        let Some(text) = v.get(field).and_then(Value::as_str) else {
            return Ok(None);
        };
        let (minus, d) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.strip_prefix('+').unwrap_or(text)),
        };
        let d = config::parse_duration(d).map_err(|m| ApiError::invalid_field(field, m))?;
        let d = jiff::SignedDuration::try_from(d).map_err(|e| ApiError::invalid_field(field, e.to_string()))?;
        Ok(Some(if minus { -d } else { d }))
    };
    let by = match (signed("advance")?, v.get("to").and_then(Value::as_str)) {
        (Some(d), _) if d.is_negative() => {
            return Err(ApiError::invalid_field(
                "advance",
                "time only passes forward; step the wall clock back with \"step\": \"-1h\"",
            ));
        }
        (Some(d), _) => d,
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
        (None, None) => jiff::SignedDuration::ZERO,
    };
    // The wall clock alone (a step of the system clock), or the monotonic
    // clock alone (real time passing while the wall clock stands still).
    let step = signed("step")?.unwrap_or_default();
    let elapse = match signed("elapse")? {
        Some(d) if d.is_negative() => return Err(ApiError::invalid_field("elapse", "time only passes forward")),
        Some(d) => std::time::Duration::try_from(d).unwrap_or_default(),
        None => std::time::Duration::ZERO,
    };
    if by.is_zero() && step.is_zero() && elapse.is_zero() && !["advance", "to"].iter().any(|k| v.get(*k).is_some()) {
        return Err(ApiError::invalid_field(
            "advance",
            "give \"advance\": \"60s\", \"to\": RFC 3339, \"step\": \"-1h\" (the wall clock alone) \
             or \"elapse\": \"60s\" (the monotonic clock alone)",
        ));
    }
    let now = app.clock.drive(by, step, elapse);
    Ok(http::json(
        StatusCode::OK,
        &json!({ "now": clock::fmt(now), "herald_time": now.to_string() }),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::Value;

    use super::OPENAPI;
    use crate::auth::Access;
    use crate::feature::Features;

    /// Every route of the router is in the document with the roles that may
    /// call it, and the document has no operation the router lacks (the
    /// test-only routes aside).
    #[test]
    fn the_document_describes_every_route_and_no_other() {
        let doc: Value = serde_json::from_str(OPENAPI).expect("src/openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeMap::new();
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let roles: Vec<String> = op["x-roles"]
                    .as_array()
                    .map(|r| r.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default();
                documented.insert(format!("{} {path}", method.to_uppercase()), roles);
            }
        }
        let mut routed = BTreeMap::new();
        for route in Features::new(crate::FEATURES).unwrap().routes() {
            if route.name().contains(" /v1/test/") {
                continue;
            }
            let mut roles: Vec<String> = match route.access() {
                Access::Roles(r) | Access::RolesOrLink(r) => r.iter().map(|r| r.as_str().to_string()).collect(),
                Access::Public | Access::Metrics => Vec::new(),
            };
            roles.sort();
            routed.insert(route.name().to_string(), roles);
        }
        for roles in documented.values_mut() {
            roles.sort();
        }
        let missing: Vec<&String> = routed.keys().filter(|k| !documented.contains_key(*k)).collect();
        let extra: Vec<&String> = documented.keys().filter(|k| !routed.contains_key(*k)).collect();
        assert!(missing.is_empty(), "routes missing from src/openapi.json: {missing:?}");
        assert!(
            extra.is_empty(),
            "operations in src/openapi.json that no route serves: {extra:?}"
        );
        assert_eq!(
            documented, routed,
            "x-roles in src/openapi.json against the routes' access"
        );
    }
}
