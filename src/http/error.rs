//! API errors: the status, a stable code, a sentence a person can act on,
//! and the field at fault. Deliberate errors pass through as JSON; anything
//! else is logged with its cause and answered with a plain 500.

use hyper::StatusCode;
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn invalid_json(detail: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {detail}"),
        )
    }

    pub fn unauthorized() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong credentials; send Authorization: Bearer TOKEN (or Basic with the account name)",
        )
    }

    pub fn forbidden(role: &str) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the {role} role may not do this; use an account with a role that may"),
        )
    }

    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn method_not_allowed(allowed: &str) -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this path accepts {allowed}"),
        )
    }

    pub fn payload_too_large(max: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is over {max} bytes (server.max_body); send smaller batches"),
        )
    }

    pub fn unsupported_media_type() -> ApiError {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        )
    }

    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        let field = field.into();
        let message = format!("{field}: {}", message.into());
        ApiError {
            field: Some(field),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
        }
    }

    pub fn rate_limited() -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many failed logins from this address; wait a minute and check the token",
        )
    }

    pub fn shutting_down() -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "herald is stopping; retry in a moment",
        )
    }

    pub fn storage_full() -> ApiError {
        ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "storage_full",
            "the database reached storage.max_size and nothing was stored; free space or raise storage.max_size",
        )
    }

    /// Logs the cause, answers without it.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the daemon's log has the cause",
        )
    }

    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = &self.field {
            error["field"] = json!(field);
        }
        json!({ "error": error })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full => ApiError::storage_full(),
            StoreError::Closed => ApiError::shutting_down(),
            other => ApiError::internal(other),
        }
    }
}
