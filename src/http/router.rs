//! Routing, authentication and role checks for every request.
//!
//! Each feature declares its [`Route`]s (method, path pattern, who may call,
//! handler); the crate root collects them into one [`Router`]. Every request
//! goes through [`Router::handle`]: find the route, authenticate, check the
//! role, run the handler, and turn its error into the JSON error shape. A
//! call that fails goes to the router's failure hook, which records it
//! (the `api` execution log and the caller's error mail).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Method, Request, StatusCode, Uri};

use super::{ApiError, Resp};
use crate::App;
use crate::auth::{Account, AuthError, Role};

/// What a handler returns: a future borrowing the app and the call.
pub type Reply<'a> = Pin<Box<dyn Future<Output = Result<Resp, ApiError>> + Send + 'a>>;
/// A route's handler; written `|app, call| Box::pin(handler(app, call))`.
pub type Handler = for<'a> fn(&'a Arc<App>, &'a mut Call) -> Reply<'a>;
/// Records a failed call; set by the crate root.
pub type OnFailure = fn(&Arc<App>, Failed<'_>);

/// Who may call a route.
#[derive(Clone, Copy, PartialEq)]
pub enum Access {
    Public,
    /// Public unless `server.metrics_auth`.
    Metrics,
    Roles(&'static [Role]),
    /// These roles, or anyone holding a link with a single-purpose `token`
    /// in the query, which the handler checks.
    RolesOrLink(&'static [Role]),
}

pub const ALL: &[Role] = &[Role::Admin, Role::Integration, Role::Technician];
pub const PUBLISHERS: &[Role] = &[Role::Admin, Role::Integration];
pub const READERS: &[Role] = &[Role::Admin, Role::Technician];
pub const ADMIN: &[Role] = &[Role::Admin];

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
        Route {
            name: format!("{method} {path}"),
            pattern: segments(path),
            method,
            access,
            handler,
        }
    }

    /// The values of the `{…}` segments when `path` fits the pattern.
    fn matches(&self, path: &[&str]) -> Option<Vec<String>> {
        if path.len() != self.pattern.len() {
            return None;
        }
        let mut params = Vec::new();
        for (want, got) in self.pattern.iter().zip(path) {
            if want.starts_with('{') {
                params.push(got.to_string());
            } else if want != got {
                return None;
            }
        }
        Some(params)
    }
}

fn segments(path: &str) -> Vec<&str> {
    path.trim_end_matches('/').split('/').skip(1).collect()
}

/// A failed call, as the failure hook receives it.
pub struct Failed<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    /// The caller, when it authenticated.
    pub account: Option<&'a Account>,
    pub peer: SocketAddr,
    pub error: &'a ApiError,
    /// The body as far as the handler read it.
    pub body: Option<Bytes>,
}

pub struct Router {
    routes: Vec<Route>,
    on_failure: OnFailure,
}

impl Router {
    pub fn new(routes: Vec<Route>, on_failure: OnFailure) -> Router {
        Router { routes, on_failure }
    }

    /// The route of a request and its parameters, or why there is none.
    fn find(&self, method: &Method, path: &str) -> Result<(&Route, Vec<String>), ApiError> {
        let path_segments = segments(path);
        let mut allowed: Vec<&str> = Vec::new();
        for route in &self.routes {
            let Some(params) = route.matches(&path_segments) else {
                continue;
            };
            if route.method == *method {
                return Ok((route, params));
            }
            allowed.push(route.method.as_str());
        }
        if allowed.is_empty() {
            return Err(ApiError::not_found(format!(
                "there is no resource at {path}; see the API section of the README"
            )));
        }
        const ORDER: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
        allowed.sort_by_key(|m| ORDER.iter().position(|o| o == m));
        allowed.dedup();
        Err(ApiError::method_not_allowed(&allowed.join(", ")))
    }

    /// Answers one request. Never fails: every error becomes a JSON answer.
    pub async fn handle(&self, app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Resp {
        let (parts, body) = req.into_parts();
        let found = self.find(&parts.method, parts.uri.path());
        let query = Query::parse(parts.uri.query().unwrap_or(""));
        let (route, params) = match found {
            Ok((route, params)) => (Ok(route), params),
            Err(e) => (Err(e), Vec::new()),
        };
        let name = match route {
            Ok(r) => r.name.as_str(),
            Err(_) => "unknown",
        };
        let mut call = Call {
            max_body: app.settings().server.max_body,
            parts,
            body: Some(body),
            params,
            query,
            who: None,
            excerpt: None,
        };
        let result = self.run(&app, route, &mut call, peer).await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                let failed = Failed {
                    method: &call.parts.method,
                    uri: &call.parts.uri,
                    account: call.who.as_ref(),
                    peer,
                    error: &e,
                    body: call.excerpt.take(),
                };
                (self.on_failure)(&app, failed);
                error_response(&e)
            }
        };
        app.metrics.request(name, response.status().as_u16());
        response
    }

    async fn run(
        &self,
        app: &Arc<App>,
        route: Result<&Route, ApiError>,
        call: &mut Call,
        peer: SocketAddr,
    ) -> Result<Resp, ApiError> {
        let path = call.parts.uri.path();
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
            let header = call.header(header::AUTHORIZATION);
            let who = match app.auth.authenticate(header, peer.ip()) {
                Ok(a) => a,
                Err(AuthError::RateLimited) => return Err(ApiError::rate_limited()),
                Err(AuthError::Missing | AuthError::Wrong) => return Err(ApiError::unauthorized()),
            };
            let role = who.role;
            call.who = Some(who);
            if !roles.contains(&role) {
                return Err(ApiError::forbidden(role.as_str()));
            }
        }
        if app.draining.load(Ordering::Relaxed) && !matches!(access, Access::Public | Access::Metrics) {
            return Err(ApiError::shutting_down());
        }
        (route?.handler)(app, call).await
    }
}

fn error_response(e: &ApiError) -> Resp {
    let mut r = super::json(e.status, &e.body());
    if e.status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"herald\", charset=\"UTF-8\""),
        );
    }
    r
}

/// One request as a handler sees it.
pub struct Call {
    pub parts: Parts,
    body: Option<Incoming>,
    params: Vec<String>,
    pub query: Query,
    who: Option<Account>,
    /// The body as read, kept for the error mail of a failed call.
    excerpt: Option<Bytes>,
    max_body: u64,
}

impl Call {
    /// The value of the route's `{…}` segment.
    pub fn param(&self) -> &str {
        self.params.first().map_or("", String::as_str)
    }

    /// The caller, on routes that require an account.
    pub fn who(&self) -> &Account {
        self.who.as_ref().expect("the route requires an account")
    }

    /// The caller, if it authenticated.
    pub fn account(&self) -> Option<&Account> {
        self.who.as_ref()
    }

    pub fn header(&self, name: HeaderName) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn has_body(&self) -> bool {
        self.header(header::CONTENT_LENGTH).is_some_and(|v| v != "0")
            || self.parts.headers.contains_key(header::TRANSFER_ENCODING)
    }

    /// Reads a JSON body within `server.max_body`, checking the content type.
    pub async fn json(&mut self) -> Result<String, ApiError> {
        let max = self.max_body;
        let is_json = self
            .header(header::CONTENT_TYPE)
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::unsupported_media_type());
        }
        let declared = self.header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(ApiError::payload_too_large(max));
        }
        let bytes = self.read(max).await?;
        self.excerpt = Some(bytes.clone());
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::invalid_json("it is not UTF-8"))?;
        serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(ApiError::invalid_json)?;
        Ok(text)
    }

    /// Reads a form body (`application/x-www-form-urlencoded`) of at most `max` bytes.
    pub async fn form(&mut self, max: u64) -> Result<Query, ApiError> {
        let bytes = self.read(max).await?;
        Ok(Query::parse(&String::from_utf8_lossy(&bytes)))
    }

    async fn read(&mut self, max: u64) -> Result<Bytes, ApiError> {
        let body = self
            .body
            .take()
            .ok_or_else(|| ApiError::internal("the body was read twice"))?;
        let body = Limited::new(body, max as usize).collect().await.map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::payload_too_large(max)
            } else {
                ApiError::bad_request(format!("the body could not be read: {e}"))
            }
        })?;
        Ok(body.to_bytes())
    }
}

/// The query string (or a form body), decoded.
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(q: &str) -> Query {
        Query(form_urlencoded::parse(q.as_bytes()).into_owned().collect())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::invalid_field(key, format!("{v:?} is not a non-negative integer"))),
        }
    }

    /// `limit`: 100 by default, 1 to 1000.
    pub fn limit(&self) -> Result<usize, ApiError> {
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
