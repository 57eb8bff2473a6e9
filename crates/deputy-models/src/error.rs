//! The one error type of every backend, and its mapping to the Databricks error body.

use std::time::Duration;

/// Why a model call failed. Each variant maps to a Databricks `error_code` and HTTP status through
/// [`ModelError::error_code`] and [`ModelError::http_status`], so the serving layer never inspects messages.
///
/// INVARIANT: no message contains a provider API key. Upstream messages pass through
/// [`crate::secret::SecretString::redact_from`] before they are stored here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The request cannot be served as given (empty messages, prompt too long, unknown parameter value).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The backend does not offer this task, e.g. chat on an embedding model.
    #[error("this model does not support {0}")]
    Unsupported(&'static str),
    /// The upstream provider answered with an error status after any retries.
    #[error("upstream provider returned HTTP {status}: {message}")]
    Upstream { status: u16, message: String },
    /// The upstream provider could not be reached or sent something unreadable.
    #[error("upstream provider unavailable: {0}")]
    Unavailable(String),
    /// No answer within the configured timeout.
    #[error("model call timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// A local model failed while running; a bug or broken model files rather than the caller's fault.
    #[error("local inference failed: {0}")]
    Inference(String),
}

impl ModelError {
    /// The Databricks `error_code` of the error body.
    pub fn error_code(&self) -> &'static str {
        match self {
            ModelError::InvalidRequest(_) | ModelError::Unsupported(_) => "BAD_REQUEST",
            ModelError::Upstream { status, .. } => match status {
                429 => "REQUEST_LIMIT_EXCEEDED",
                // The configured key was refused: the endpoint's owner must fix it, the caller cannot.
                401 | 403 => "PERMISSION_DENIED",
                400..=499 => "BAD_REQUEST",
                _ => "TEMPORARILY_UNAVAILABLE",
            },
            ModelError::Unavailable(_) => "TEMPORARILY_UNAVAILABLE",
            ModelError::Timeout(_) => "DEADLINE_EXCEEDED",
            ModelError::Inference(_) => "INTERNAL_ERROR",
        }
    }

    /// The HTTP status Databricks uses for [`ModelError::error_code`].
    pub fn http_status(&self) -> u16 {
        match self.error_code() {
            "BAD_REQUEST" => 400,
            "PERMISSION_DENIED" => 403,
            "REQUEST_LIMIT_EXCEEDED" => 429,
            "TEMPORARILY_UNAVAILABLE" => 503,
            "DEADLINE_EXCEEDED" => 504,
            _ => 500,
        }
    }

    /// The upstream status, when the provider answered at all; Databricks reports it for external models.
    pub fn upstream_status(&self) -> Option<u16> {
        match self {
            ModelError::Upstream { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub(crate) fn inference(error: impl std::fmt::Display) -> ModelError {
        ModelError::Inference(error.to_string())
    }
}

/// A local model's files could not be turned into a runnable model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot load the model from `{}`: {detail}", path.display())]
pub struct LoadError {
    pub path: std::path::PathBuf,
    pub detail: String,
}

impl LoadError {
    pub(crate) fn new(path: &std::path::Path, detail: impl std::fmt::Display) -> LoadError {
        LoadError {
            path: path.to_owned(),
            detail: detail.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses() {
        let upstream = |status| ModelError::Upstream {
            status,
            message: String::new(),
        };
        let cases = [
            (ModelError::InvalidRequest("x".into()), "BAD_REQUEST", 400),
            (ModelError::Unsupported("chat"), "BAD_REQUEST", 400),
            (upstream(429), "REQUEST_LIMIT_EXCEEDED", 429),
            (upstream(401), "PERMISSION_DENIED", 403),
            (upstream(422), "BAD_REQUEST", 400),
            (upstream(500), "TEMPORARILY_UNAVAILABLE", 503),
            (
                ModelError::Unavailable("x".into()),
                "TEMPORARILY_UNAVAILABLE",
                503,
            ),
            (
                ModelError::Timeout(Duration::from_secs(1)),
                "DEADLINE_EXCEEDED",
                504,
            ),
            (ModelError::Inference("x".into()), "INTERNAL_ERROR", 500),
        ];
        for (error, code, status) in cases {
            assert_eq!(
                (error.error_code(), error.http_status()),
                (code, status),
                "{error}"
            );
        }
    }
}
