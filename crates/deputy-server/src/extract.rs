//! Request extractors whose rejections use the Databricks error format instead of axum's plain-text ones.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use deputy_access::Caller;
use deputy_access::Error;
use deputy_access::ErrorCode;
use serde::de::DeserializeOwned;

/// A JSON body. Unlike `axum::Json` it ignores the Content-Type header (the Databricks clients are not consistent
/// about it, and some send JSON bodies with GET) and reads an empty body as `{}`, since void calls may send nothing.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(body_rejection)?;
        // serde_json skips the bytes of fields it ignores without checking them; a body must be UTF-8 throughout.
        if let Err(error) = std::str::from_utf8(&bytes) {
            return Err(ApiError(Error::malformed_request(format!(
                "could not parse the request body as JSON: it is not valid UTF-8 ({error})"
            ))));
        }
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(text).map(ApiJson).map_err(|error| {
            ApiError(Error::malformed_request(format!(
                "could not parse the request body as JSON: {error}"
            )))
        })
    }
}

pub(crate) fn body_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError(Error::new(
            ErrorCode::RequestTooLarge,
            "request body is too large",
        ))
    } else {
        ApiError(Error::malformed_request(format!(
            "could not read the request body: {rejection}"
        )))
    }
}

/// Query-string parameters, with errors in the Databricks format.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        serde_urlencoded::from_str(query)
            .map(ApiQuery)
            .map_err(|error| {
                ApiError(Error::invalid_parameter(format!(
                    "invalid query parameters: {error}"
                )))
            })
    }
}

/// A form body (`application/x-www-form-urlencoded`), as OAuth endpoints take.
pub fn parse_form<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    serde_urlencoded::from_bytes(bytes).map_err(|error| error.to_string())
}

/// The authenticated caller, as the authentication layer left it on the request. Handlers take it to state that they
/// need an authenticated principal; a route that reaches a handler without one is refused (fail closed).
pub struct Authenticated(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .map(Authenticated)
            .ok_or_else(|| ApiError(Error::unauthenticated("no credentials")))
    }
}
