//! One request as a handler sees it: its parts, the route's parameter, the
//! decoded query, the caller, and the body, read within its limits.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName};
use hyper::http::request::Parts;

use super::error::ApiError;
use crate::auth::Account;

pub struct Call {
    pub parts: Parts,
    pub query: Query,
    pub peer: SocketAddr,
    /// The caller, once the router authenticated it.
    pub account: Option<Account>,
    /// The body as far as it was read, for the error mail of a failed call.
    pub excerpt: Option<Bytes>,
    pub(super) incoming: Option<Incoming>,
    pub(super) params: Vec<String>,
    pub(super) max_body: u64,
}

impl Call {
    /// The value of the route's `{…}` segment.
    pub fn param(&self) -> &str {
        self.params.first().map_or("", String::as_str)
    }

    /// The values of all the route's `{…}` segments, in order.
    pub fn params(&self) -> &[String] {
        &self.params
    }

    /// The caller, on routes that require an account.
    pub fn who(&self) -> &Account {
        self.account.as_ref().expect("the route requires an account")
    }

    pub fn header(&self, name: HeaderName) -> Option<&str> {
        self.parts.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Reads a JSON body within `server.max_body`, checking the content type.
    pub async fn json(&mut self) -> Result<String, ApiError> {
        let text = self.json_text().await?;
        serde_json::from_str::<serde::de::IgnoredAny>(&text).map_err(ApiError::invalid_json)?;
        Ok(text)
    }

    /// A JSON object body with only the `known` fields: any other is named
    /// in a 422, since a field herald ignores would be a silent mistake.
    pub async fn json_object(&mut self, known: &[&str]) -> Result<serde_json::Value, ApiError> {
        let v: serde_json::Value = serde_json::from_str(&self.json().await?).map_err(ApiError::invalid_json)?;
        let fields = v
            .as_object()
            .ok_or_else(|| ApiError::invalid_json("the body must be a JSON object"))?;
        match fields.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => Err(ApiError::invalid_field(
                k.as_str(),
                format!("is not known here; use {}", known.join(", ")),
            )),
            None => Ok(v),
        }
    }

    /// [`Call::json_object`] where every field is optional: no body at all
    /// (and no `content-type`) is the empty object.
    pub async fn optional_object(&mut self, known: &[&str]) -> Result<serde_json::Value, ApiError> {
        if self.header(header::CONTENT_TYPE).is_none() {
            let bytes = self.body(self.max_body).await?;
            return if bytes.is_empty() {
                Ok(serde_json::json!({}))
            } else {
                Err(ApiError::unsupported_media_type())
            };
        }
        self.json_object(known).await
    }

    /// [`Call::json`] without the syntax check, for a handler that checks more first.
    pub async fn json_text(&mut self) -> Result<String, ApiError> {
        let max = self.max_body;
        let media = self.header(header::CONTENT_TYPE).and_then(|v| v.split(';').next());
        if !media.is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json")) {
            return Err(ApiError::unsupported_media_type());
        }
        let declared = self.header(header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return Err(ApiError::payload_too_large(max));
        }
        let bytes = self.body(max).await?;
        self.excerpt = Some(bytes.clone());
        String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::invalid_json("it is not UTF-8"))
    }

    /// Reads the body, at most `max` bytes.
    pub async fn body(&mut self, max: u64) -> Result<Bytes, ApiError> {
        let body = self
            .incoming
            .take()
            .ok_or_else(|| ApiError::internal("the body was read twice"))?;
        match Limited::new(body, max as usize).collect().await {
            Ok(body) => Ok(body.to_bytes()),
            Err(e) if e.is::<LengthLimitError>() => Err(ApiError::payload_too_large(max)),
            Err(e) => Err(ApiError::bad_request(format!("the body could not be read: {e}"))),
        }
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
        let parse = |v: &str| v.parse().map_err(|_| format!("{v:?} is not a non-negative integer"));
        self.get(key)
            .map(parse)
            .transpose()
            .map_err(|m| ApiError::invalid_field(key, m))
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
