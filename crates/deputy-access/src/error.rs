//! The one error type of the domain crates: a Databricks error code and a message safe to show the caller.
//!
//! Domain crates know nothing of HTTP; the server maps each [`ErrorCode`] to its status when it renders the error.
//! An internal failure is logged once, where it is made, and its cause never reaches the caller.

use deputy_store::StoreError;

/// The Databricks `error_code`s Deputy answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidParameterValue,
    MalformedRequest,
    BadRequest,
    InvalidState,
    ResourceDoesNotExist,
    ResourceAlreadyExists,
    PermissionDenied,
    Unauthenticated,
    EndpointNotFound,
    MethodNotAllowed,
    /// Too many requests (429).
    RequestLimitExceeded,
    /// A request body over the size limit (413); Databricks names it like a rate limit.
    RequestTooLarge,
    DeadlineExceeded,
    NotImplemented,
    TemporarilyUnavailable,
    BadGateway,
    InternalError,
}

impl ErrorCode {
    /// The code as it appears in the body's `error_code`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidParameterValue => "INVALID_PARAMETER_VALUE",
            ErrorCode::MalformedRequest => "MALFORMED_REQUEST",
            ErrorCode::BadRequest => "BAD_REQUEST",
            ErrorCode::InvalidState => "INVALID_STATE",
            ErrorCode::ResourceDoesNotExist => "RESOURCE_DOES_NOT_EXIST",
            ErrorCode::ResourceAlreadyExists => "RESOURCE_ALREADY_EXISTS",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            // Databricks answers an unknown path and a known path with the wrong method with the same code.
            ErrorCode::EndpointNotFound | ErrorCode::MethodNotAllowed => "ENDPOINT_NOT_FOUND",
            ErrorCode::RequestLimitExceeded | ErrorCode::RequestTooLarge => {
                "REQUEST_LIMIT_EXCEEDED"
            }
            ErrorCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorCode::NotImplemented => "NOT_IMPLEMENTED",
            ErrorCode::TemporarilyUnavailable => "TEMPORARILY_UNAVAILABLE",
            ErrorCode::BadGateway => "BAD_GATEWAY",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The code an error reported by other code (a model provider, an agent) stands for; unknown codes are internal.
    pub fn from_reported(code: &str) -> ErrorCode {
        match code {
            "INVALID_PARAMETER_VALUE" => ErrorCode::InvalidParameterValue,
            "BAD_REQUEST" => ErrorCode::BadRequest,
            "INVALID_STATE" => ErrorCode::InvalidState,
            "RESOURCE_DOES_NOT_EXIST" => ErrorCode::ResourceDoesNotExist,
            "RESOURCE_ALREADY_EXISTS" => ErrorCode::ResourceAlreadyExists,
            "PERMISSION_DENIED" => ErrorCode::PermissionDenied,
            "UNAUTHENTICATED" => ErrorCode::Unauthenticated,
            "REQUEST_LIMIT_EXCEEDED" => ErrorCode::RequestLimitExceeded,
            "DEADLINE_EXCEEDED" => ErrorCode::DeadlineExceeded,
            "NOT_IMPLEMENTED" => ErrorCode::NotImplemented,
            "TEMPORARILY_UNAVAILABLE" => ErrorCode::TemporarilyUnavailable,
            "BAD_GATEWAY" => ErrorCode::BadGateway,
            _ => ErrorCode::InternalError,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal or failure with the code the caller's client maps to an exception, and a message for the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::InvalidParameterValue, message)
    }

    pub fn malformed_request(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::MalformedRequest, message)
    }

    pub fn invalid_state(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::InvalidState, message)
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::ResourceDoesNotExist, message)
    }

    pub fn already_exists(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::ResourceAlreadyExists, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::PermissionDenied, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::Unauthenticated, message)
    }

    pub fn not_implemented(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::NotImplemented, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::TemporarilyUnavailable, message)
    }

    pub fn bad_gateway(message: impl Into<String>) -> Error {
        Error::new(ErrorCode::BadGateway, message)
    }

    /// A failure the caller cannot fix. The cause goes to the log, not to the caller.
    pub fn internal(cause: impl std::fmt::Display) -> Error {
        tracing::error!(%cause, "internal error");
        Error::new(
            ErrorCode::InternalError,
            "internal error; see the server log",
        )
    }

    /// Whether this is the answer for something the caller may not know exists.
    pub fn is_not_found(&self) -> bool {
        self.code == ErrorCode::ResourceDoesNotExist
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Error {
        match error {
            StoreError::AlreadyExists(what) => {
                Error::already_exists(format!("{what} already exists"))
            }
            StoreError::NotFound(what) => Error::not_found(format!("{what} does not exist")),
            other => Error::internal(other),
        }
    }
}

/// Decodes a spec the server itself stored. A stored spec that does not parse is corrupt data, never a default: the
/// decision that reads it must fail closed, so this is an internal error naming what could not be read.
pub fn decode_stored<T: serde::de::DeserializeOwned>(what: &str, stored: &str) -> Result<T, Error> {
    serde_json::from_str(stored)
        .map_err(|error| Error::internal(format!("the stored {what} does not parse: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_codes_round_trip_and_unknown_ones_are_internal() {
        for code in [
            ErrorCode::InvalidParameterValue,
            ErrorCode::PermissionDenied,
            ErrorCode::ResourceDoesNotExist,
            ErrorCode::TemporarilyUnavailable,
        ] {
            assert_eq!(ErrorCode::from_reported(code.as_str()), code);
        }
        assert_eq!(
            ErrorCode::from_reported("SOMETHING_ELSE"),
            ErrorCode::InternalError
        );
    }

    #[test]
    fn a_stored_spec_that_does_not_parse_is_an_error_not_a_default() {
        let decoded: Result<std::collections::BTreeMap<String, String>, Error> =
            decode_stored("index spec", "{not json");
        let error = decoded.err().map(|error| error.code);
        assert_eq!(error, Some(ErrorCode::InternalError));
    }
}
