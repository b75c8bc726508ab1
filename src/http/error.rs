//! API errors: the status, a stable code, a sentence a person can act on,
//! and the field at fault. Deliberate errors pass through as JSON; anything
//! else is logged with its cause and answered with a plain 500.

use hyper::StatusCode;
use hyper::header::{self, HeaderValue};
use serde::Serialize;
use serde_json::json;

use super::resp::{Resp, json};
use crate::store::StoreError;

#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Every bad line of an imported file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Box<serde_json::Value>>,
    /// Seconds for `Retry-After`, when waiting helps.
    #[serde(skip)]
    pub retry_after: Option<u64>,
    /// The methods a path takes, for the `Allow` of a 405.
    #[serde(skip)]
    pub allow: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            lines: None,
            retry_after: None,
            allow: None,
        }
    }

    fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn invalid_json(detail: impl std::fmt::Display) -> ApiError {
        let message = format!("the body is not valid JSON: {detail}");
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    pub fn unauthorized() -> ApiError {
        let message = "missing or wrong credentials; send Authorization: Bearer TOKEN (or Basic with the account name)";
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(role: &str) -> ApiError {
        let message = format!("the {role} role may not do this; use an account with a role that may");
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn method_not_allowed(allowed: &str) -> ApiError {
        let message = format!("this path accepts {allowed}");
        let mut e = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", message);
        e.allow = Some(allowed.to_string());
        e
    }

    pub fn payload_too_large(max: u64) -> ApiError {
        let message = format!("the body is over {max} bytes (server.max_body); send smaller batches");
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    pub fn unsupported_media_type() -> ApiError {
        let message = "send the body as JSON with Content-Type: application/json";
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", message)
    }

    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        let field = field.into();
        let message = format!("{field}: {}", message.into());
        ApiError {
            field: Some(field),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
        }
    }

    /// Wrong credentials came too often from this address; `left` until
    /// they are looked at again. Correct ones still pass.
    pub fn rate_limited(left: std::time::Duration) -> ApiError {
        let secs = left.as_secs().max(1);
        let message = format!("too many wrong credentials from this address; check the token, and retry in {secs}s");
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message).retry_after(secs)
    }

    pub fn shutting_down() -> ApiError {
        let message = "herald is stopping; retry in a moment";
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message).retry_after(5)
    }

    /// Logs the cause, answers without it.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        let message = "internal error; the daemon's log has the cause";
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The answer: the status and the JSON body; a 401 also carries the
    /// Basic challenge, so a browser asks for the account and token.
    pub fn response(&self) -> Resp {
        let mut r = json(self.status, &json!({ "error": self }));
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = HeaderValue::from_static("Basic realm=\"herald\", charset=\"UTF-8\"");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(v) = self.allow.as_deref().and_then(|a| HeaderValue::try_from(a).ok()) {
            r.headers_mut().insert(header::ALLOW, v);
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Full(_) => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "storage_full", e.to_string()),
            StoreError::Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", e.to_string()).retry_after(2)
            }
            StoreError::Closed => ApiError::shutting_down(),
            _ => ApiError::internal(e),
        }
    }
}
