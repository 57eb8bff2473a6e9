//! The public API as the console calls it: one request through the server's whole application (authentication,
//! scope check, audit, handler), carrying the signed-in person's access token, exactly as a client's over HTTP.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, Response, StatusCode, header};
use serde_json::Value;

/// Answers are read whole up to this size; pages never ask for more.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Sends one request to the server's public API, in process. The server implements it; tests may too.
#[async_trait::async_trait]
pub trait Api: Send + Sync {
    async fn send(&self, request: Request<Body>) -> Response<Body>;
}

/// What a refused or failed call answered, in the Databricks error shape (`error_code`, `message`) or RFC 6749's
/// (`error`, `error_description`).
#[derive(Debug, Clone)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub error_code: String,
    pub message: String,
}

impl ApiFailure {
    fn from_answer(status: StatusCode, body: &[u8]) -> ApiFailure {
        let answer: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let text = |keys: [&str; 2]| {
            keys.iter()
                .find_map(|key| answer[*key].as_str())
                .map(str::to_owned)
        };
        ApiFailure {
            status,
            error_code: text(["error_code", "error"]).unwrap_or_else(|| "INTERNAL_ERROR".into()),
            message: text(["message", "error_description"])
                .unwrap_or_else(|| format!("the server answered HTTP {}", status.as_u16())),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> ApiFailure {
        ApiFailure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error_code: "INTERNAL_ERROR".into(),
            message: message.into(),
        }
    }
}

/// A successful answer: its JSON body and headers.
pub(crate) struct Answer {
    pub headers: HeaderMap,
    pub body: Value,
}

/// The API as one person: every call carries their access token.
pub(crate) struct AsPerson<'a> {
    pub api: &'a dyn Api,
    pub token: &'a str,
}

impl AsPerson<'_> {
    pub async fn get(&self, path: &str) -> Result<Value, ApiFailure> {
        Ok(self.call(Method::GET, path, None).await?.body)
    }

    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, ApiFailure> {
        Ok(self.call(Method::POST, path, Some(body)).await?.body)
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, ApiFailure> {
        Ok(self.call(Method::PATCH, path, Some(body)).await?.body)
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ApiFailure> {
        Ok(self.call(Method::DELETE, path, None).await?.body)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Answer, ApiFailure> {
        json_answer(self.send(method, path, body).await?).await
    }

    /// The API's response as it comes, for a caller that reads the body itself (a stream).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response<Body>, ApiFailure> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
            .map_err(|error| ApiFailure::internal(error.to_string()))?;
        Ok(self.api.send(request).await)
    }
}

/// A form POST without a bearer token (the token endpoint authenticates the client itself).
pub(crate) async fn post_form(
    api: &dyn Api,
    path: &str,
    form: &[(&str, &str)],
) -> Result<Value, ApiFailure> {
    let body = serde_urlencoded::to_string(form)
        .map_err(|error| ApiFailure::internal(error.to_string()))?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .map_err(|error| ApiFailure::internal(error.to_string()))?;
    Ok(json_answer(api.send(request).await).await?.body)
}

pub(crate) async fn json_answer(response: Response<Body>) -> Result<Answer, ApiFailure> {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes: Bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER_BYTES)
        .await
        .map_err(|error| ApiFailure::internal(error.to_string()))?;
    if !status.is_success() {
        return Err(ApiFailure::from_answer(status, &bytes));
    }
    let body = match bytes.is_empty() {
        true => Value::Null,
        false => serde_json::from_slice(&bytes)
            .map_err(|error| ApiFailure::internal(format!("the API answered no JSON: {error}")))?,
    };
    Ok(Answer { headers, body })
}

/// `text` as one path segment or query value: every byte but the unreserved ones (RFC 3986) percent-encoded.
pub(crate) fn encode(text: &str) -> String {
    text.bytes()
        .map(
            |byte| match byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                true => char::from(byte).to_string(),
                false => format!("%{byte:02X}"),
            },
        )
        .collect()
}
