//! The two error shapes of the wire: Databricks API errors and OAuth (RFC 6749) errors.
//!
//! Handlers return `Result<_, ApiError>` and use `?`; `From` impls turn domain errors into the right status. A 5xx body
//! is generic: the cause is logged once here and never sent to the client.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use deputy_store::StoreError;
use serde_json::json;

/// An error in the Databricks body format `{"error_code": ..., "message": ...}`, with the HTTP status the SDK maps
/// that code to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        error_code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            error_code,
            message: message.into(),
        }
    }

    pub fn invalid_parameter(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER_VALUE", message)
    }

    pub fn malformed_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_REQUEST", message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST", message)
    }

    pub fn already_exists(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "RESOURCE_ALREADY_EXISTS", message)
    }

    pub fn permission_denied(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "PERMISSION_DENIED", message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
    }

    pub fn endpoint_not_found(method: &str, path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "ENDPOINT_NOT_FOUND",
            format!("no API found for '{method} {path}'"),
        )
    }

    /// A failure the client cannot fix. The details go to the log, not the response.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error_code": self.error_code, "message": self.message });
        let mut response = (self.status, axum::Json(body)).into_response();
        response
            .extensions_mut()
            .insert(crate::audit::DeniedBecause(self.message));
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::AlreadyExists(what) => {
                ApiError::already_exists(format!("{what} already exists"))
            }
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} does not exist")),
            other => ApiError::internal(other),
        }
    }
}

/// An OAuth 2.0 error response (RFC 6749 §5.2): `{"error": ..., "error_description": ...}`, always with a
/// Content-Type header because the Databricks SDK indexes it unconditionally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    pub fn new(error: &'static str, description: impl Into<String>) -> OAuthError {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "access_denied" => StatusCode::FORBIDDEN,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    pub fn server_error(cause: impl std::fmt::Display) -> OAuthError {
        tracing::error!(%cause, "internal error in the token endpoint");
        OAuthError::new("server_error", "internal error; see the server log")
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error, "error_description": self.description });
        let mut response = (self.status, axum::Json(body)).into_response();
        // RFC 6749 §5.1: token responses and their errors must not be cached.
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"deputy\""),
            );
        }
        response
    }
}

impl From<StoreError> for OAuthError {
    fn from(error: StoreError) -> OAuthError {
        OAuthError::server_error(error)
    }
}
