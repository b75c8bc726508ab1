//! Routing, authentication and role checks for every request.
//!
//! Each feature declares its [`Route`]s (method, path pattern, who may call,
//! handler); the crate root collects them into one [`Router`]. A request is
//! routed, authenticated and checked against the route's roles before its
//! handler runs; an error becomes the JSON error shape, and the failed call
//! goes to the failure hook (the `api` execution log and the error mail).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::FutureExt;
use hyper::body::Incoming;
use hyper::{Method, Request, header};

use super::call::{Call, Query};
use super::error::ApiError;
use super::resp::Resp;
use crate::app::App;
use crate::auth::{ALL, Access, AuthError};

/// A route's handler, written `|app, call| Box::pin(handler(app, call))`:
/// its future borrows the app and the call.
pub type Handler =
    for<'a> fn(&'a Arc<App>, &'a mut Call) -> Pin<Box<dyn Future<Output = Result<Resp, ApiError>> + Send + 'a>>;

pub struct Route {
    method: Method,
    /// Path segments; `{name}` matches any one segment.
    pattern: Vec<&'static str>,
    access: Access,
    handler: Handler,
    /// `METHOD /path/{id}`: the label of the request metrics.
    name: String,
}

impl Route {
    pub fn new(method: Method, path: &'static str, access: Access, handler: Handler) -> Route {
        let (name, pattern) = (format!("{method} {path}"), segments(path));
        Route {
            method,
            pattern,
            access,
            handler,
            name,
        }
    }

    /// `METHOD /path/{id}`, as declared.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who may call it.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The values of the `{…}` segments when `path` fits the pattern.
    fn matches(&self, path: &[&str]) -> Option<Vec<String>> {
        let pairs = || self.pattern.iter().zip(path);
        let fits = path.len() == self.pattern.len() && pairs().all(|(want, got)| want.starts_with('{') || want == got);
        fits.then(|| {
            // A parameter is percent-decoded: a Collmex system may be any
            // printable text, spaces and slashes included.
            pairs()
                .filter(|(want, _)| want.starts_with('{'))
                .map(|(_, got)| param(got))
                .collect()
        })
    }
}

/// `text` as one segment of a path (percent-encoded where it must be), the
/// way links and buttons name a resource whose name is free text.
pub fn segment(text: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'.')
        .remove(b'_')
        .remove(b'-')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, SEGMENT).to_string()
}

/// A path parameter as the handler reads it: percent-decoded.
pub fn param(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

fn segments(path: &str) -> Vec<&str> {
    path.trim_end_matches('/').split('/').skip(1).collect()
}

/// Records a failed call (the `api` execution log, the error mail).
pub type OnFailure = Box<dyn Fn(&Arc<App>, &Call, &ApiError) + Send + Sync>;

/// The API: the app its handlers serve, every route, and the hook that
/// records a failed call. The crate root builds it.
pub struct Router {
    pub app: Arc<App>,
    pub routes: Vec<Route>,
    pub on_failure: OnFailure,
}

impl Router {
    /// The route of a request and its parameters, or why there is none.
    fn find(&self, method: &Method, path: &str) -> (Result<&Route, ApiError>, Vec<String>) {
        let path_segments = segments(path);
        let mut allowed: Vec<&str> = Vec::new();
        for route in &self.routes {
            match route.matches(&path_segments) {
                Some(params) if route.method == *method => return (Ok(route), params),
                Some(_) => allowed.push(route.method.as_str()),
                None => {}
            }
        }
        if allowed.is_empty() {
            let message = format!("there is no resource at {path}; see the API section of the README");
            return (Err(ApiError::not_found(message)), Vec::new());
        }
        // In the order the routes were declared: GET first, by convention.
        (Err(ApiError::method_not_allowed(&allowed.join(", "))), Vec::new())
    }

    /// Answers one request. Never fails: every error becomes a JSON answer.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Resp {
        let app = &self.app;
        let (parts, body) = req.into_parts();
        let (route, params) = self.find(&parts.method, parts.uri.path());
        let name = route.as_ref().map_or("unknown", |r| r.name.as_str());
        let query = Query::parse(parts.uri.query().unwrap_or(""));
        let max_body = app.settings().server.max_body;
        let (account, excerpt, incoming) = (None, None, Some(body));
        let mut call = Call {
            parts,
            query,
            peer,
            account,
            excerpt,
            incoming,
            params,
            max_body,
        };
        let started = std::time::Instant::now();
        let response = match self.run(route, &mut call).await {
            Ok(r) => {
                // Successful calls of the API by an account: summed a minute at a time.
                if let Some(who) = &call.account
                    && r.status().is_success()
                    && call.parts.uri.path().starts_with("/v1/")
                    && !call.parts.uri.path().starts_with("/v1/test/")
                {
                    let now = crate::clock::to_ms(app.clock.now());
                    app.state::<crate::executions::ApiCalls>()
                        .count(now, &who.name, name, started.elapsed());
                }
                r
            }
            Err(e) => {
                (self.on_failure)(app, &call, &e);
                e.response()
            }
        };
        app.metrics.request(name, response.status().as_u16());
        response
    }

    async fn run(&self, route: Result<&Route, ApiError>, call: &mut Call) -> Result<Resp, ApiError> {
        let (app, path) = (&self.app, call.parts.uri.path());
        let access = match &route {
            Ok(r) => match r.access {
                Access::RolesOrLink(_) if call.query.get("token").is_some() => Access::Public,
                other => other,
            },
            // Unknown resources under /v1 still authenticate first: strangers
            // learn nothing about which paths exist, and a caller's mistake is
            // attributed to its account.
            Err(_) if path == "/v1" || path.starts_with("/v1/") => Access::Roles(ALL),
            Err(_) => Access::Public,
        };
        let roles = match access {
            Access::Public => None,
            Access::Metrics => app.settings().server.metrics_auth.then_some(ALL),
            Access::Roles(roles) | Access::RolesOrLink(roles) => Some(roles),
        };
        if let Some(roles) = roles {
            let who = match app.auth.authenticate(
                call.header(header::AUTHORIZATION),
                call.peer.ip(),
                app.settings().server.wrong_credentials,
            ) {
                Ok(a) => call.account.insert(a),
                Err(AuthError::RateLimited(left)) => return Err(ApiError::rate_limited(left)),
                Err(AuthError::Missing | AuthError::Wrong) => return Err(ApiError::unauthorized()),
            };
            if !roles.contains(&who.role) {
                return Err(ApiError::forbidden(who.role.as_str()));
            }
        }
        if app.draining.load(Ordering::Relaxed) && !matches!(access, Access::Public | Access::Metrics) {
            return Err(ApiError::shutting_down());
        }
        let route = route?;
        // A panic in a handler (a bug, or a record it cannot take) answers
        // 500 and is logged; the connection and the daemon go on.
        let run = std::panic::AssertUnwindSafe((route.handler)(app, call));
        run.catch_unwind().await.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .copied()
                .or(panic.downcast_ref::<String>().map(|s| s.as_str()));
            Err(ApiError::internal(format!(
                "{} panicked: {}",
                route.name,
                what.unwrap_or("?")
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_goes_into_one_path_segment_and_comes_back_whole() {
        assert_eq!(segment("Shop B/über"), "Shop%20B%2F%C3%BCber");
        assert_eq!(segment("order.changed"), "order.changed");
        assert_eq!(param(&segment("Shop B/über")), "Shop B/über");
    }
}
