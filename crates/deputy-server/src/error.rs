//! The two error shapes of the wire: Databricks API errors and OAuth (RFC 6749) errors.
//!
//! Domain crates return [`deputy_access::Error`]; handlers return `Result<_, ApiError>` and use `?`, and the code
//! picks the status here. A 5xx body is generic: the cause was logged where the error was made.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use deputy_access::{Error, ErrorCode};
use deputy_store::StoreError;
use serde_json::json;

/// A domain error on the wire: the Databricks body `{"error_code": ..., "message": ...}` with the HTTP status the SDK
/// maps that code to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError(pub Error);

/// The status each code is answered with, as Databricks does.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidParameterValue
        | ErrorCode::MalformedRequest
        | ErrorCode::BadRequest
        | ErrorCode::InvalidState => StatusCode::BAD_REQUEST,
        ErrorCode::ResourceDoesNotExist | ErrorCode::EndpointNotFound => StatusCode::NOT_FOUND,
        ErrorCode::ResourceAlreadyExists => StatusCode::CONFLICT,
        ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::RequestLimitExceeded => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::BadGateway => StatusCode::BAD_GATEWAY,
        ErrorCode::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        status_of(self.0.code)
    }

    pub fn endpoint_not_found(method: &str, path: &str) -> ApiError {
        ApiError(Error::new(
            ErrorCode::EndpointNotFound,
            format!("no API found for '{method} {path}'"),
        ))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let Error { code, message } = self.0;
        let body = json!({ "error_code": code.as_str(), "message": message });
        let mut response = (status, axum::Json(body)).into_response();
        response.extensions_mut().insert(DeniedBecause(message));
        response
    }
}

/// The reason an error response carries, left on the response for the delegated-call audit layer to read.
#[derive(Debug, Clone)]
pub struct DeniedBecause(pub String);

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        ApiError(error)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        ApiError(error.into())
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

/// A refused sign-in grant in RFC 6749 form; an internal failure is logged, and only its kind goes to the client.
impl From<deputy_signin::SignInError> for OAuthError {
    fn from(error: deputy_signin::SignInError) -> OAuthError {
        match error {
            deputy_signin::SignInError::Internal(cause) => OAuthError::server_error(cause),
            refused => OAuthError::new(refused.oauth_error_code(), refused.to_string()),
        }
    }
}

/// A refused federated exchange in RFC 6749 form, as for sign-in grants.
impl From<deputy_oidc::FederationError> for OAuthError {
    fn from(error: deputy_oidc::FederationError) -> OAuthError {
        match error {
            deputy_oidc::FederationError::Internal(cause) => OAuthError::server_error(cause),
            refused => OAuthError::new(refused.oauth_error_code(), refused.to_string()),
        }
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
