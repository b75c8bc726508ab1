//! HTTP, and only HTTP: the server, the router that the crate root fills
//! with the features' route tables, authentication and role checks, the
//! JSON error shape, query and body parsing with their limits, the answers'
//! shapes, and the outbound client the features call counterparts with.
//!
//! Nothing here knows a feature: each feature owns its handlers and JSON
//! (`routes.rs` in its folder) and hands them over as [`Route`]s.

pub mod client;
mod error;
mod router;
mod server;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;

pub use self::error::ApiError;
pub use self::router::{ADMIN, ALL, Access, Call, Failed, PUBLISHERS, Query, READERS, Route, Router};
pub use self::server::serve;

/// Every answer herald gives: a body read in one piece.
pub type Resp = Response<Full<Bytes>>;

pub fn json(status: StatusCode, body: &impl Serialize) -> Resp {
    let bytes = serde_json::to_vec(body).expect("API answers always serialize");
    with_type(status, Bytes::from(bytes), "application/json")
}

pub fn text(status: StatusCode, body: &str) -> Resp {
    with_type(status, Bytes::from(body.to_string()), "text/plain; charset=utf-8")
}

/// An HTML page; no referrer leaves it, since its URL may hold a link's token.
pub fn html(status: StatusCode, page: String) -> Resp {
    let mut r = with_type(status, Bytes::from(page), "text/html; charset=utf-8");
    r.headers_mut()
        .insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    r
}

pub fn no_content() -> Resp {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

pub fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> Resp {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
