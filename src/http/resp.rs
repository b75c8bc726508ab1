//! The shapes of herald's answers.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;

/// Every answer herald gives: a body read in one piece.
pub type Resp = Response<Full<Bytes>>;

pub fn json(status: StatusCode, body: &impl Serialize) -> Resp {
    let bytes = serde_json::to_vec(body).expect("API answers always serialize");
    with_type(status, Bytes::from(bytes), "application/json")
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
