//! People signing in. Deputy is the OAuth 2.1 authorization server of its own API: an app (the Databricks CLI and
//! SDKs' `external-browser` login, admin-registered apps, later MCP clients) sends the person's browser to
//! `/oidc/v1/authorize`; the person signs in through the organisation's OpenID Connect provider (or, in a workspace
//! with none yet, with a local password an admin set), approves what the app asks for, and the app redeems
//! the code for an access token and a rotating refresh token.
//!
//! - [`apps`]: OAuth apps, their redirect URIs and client authentication.
//! - [`flow`]: the browser's path from the authorization request to the code (upstream login, local login, consent).
//! - [`providers`]: upstream identity providers, ID-token validation, just-in-time users and IdP-managed groups.
//! - [`grants`]: the token endpoint's `authorization_code` and `refresh_token` grants, and family revocation.
//! - [`password`]: local argon2id passwords, for a workspace without a provider.
//!
//! **Invariants**
//! - A redirect goes only to a URI registered for the app (exact match; a loopback URI with any port, RFC 8252). An
//!   unknown app or unregistered URI gets an error page, never a redirect.
//! - A sign-in finishes only in the browser that started it (a cookie whose hash the request stores), at most once.
//! - A code is redeemed once, within [`CODE_LIFETIME_MS`], by the app it was issued to, with the same redirect URI and
//!   the PKCE verifier of its S256 challenge. A second presentation revokes everything issued from it.
//! - A refresh token is used once. Presenting a spent one revokes its whole family: every refresh token rotated from
//!   the same sign-in, every access token they gave, and every token exchanged from those (their `derived_from`
//!   names the family).
//! - An ID token is accepted only from the configured issuer, signed with an asymmetric key it publishes, for
//!   Deputy's client id, unexpired, carrying the nonce Deputy sent. A user name is a verified email or a configured
//!   claim, never an opaque subject id. Disabled users are refused. Only groups marked IdP-managed are changed.
//! - Every sign-in, refusal and grant is audited. Internal failures are logged; clients learn only that one happened.
//! - At most [`password::MAX_FAILURES`] wrong local passwords per user name (and [`password::MAX_FAILURES_IN_ALL`]
//!   in all) per [`password::FAILURE_WINDOW`] are checked.

pub mod apps;
pub mod flow;
pub mod grants;
pub mod password;
mod pkce;
pub mod providers;

use deputy_access::Access;
use deputy_oidc::keys::IssuerKeys;
use std::sync::Arc;

pub use apps::{NewOAuthApp, RegisteredApp};
pub use flow::CallbackParams;
pub use flow::{AuthorizationFailure, AuthorizationParams, Consent, NextStep, Started, Step};
pub use grants::{CodeRedemption, IssuedTokens, RefreshRequest};
pub use providers::NewIdentityProvider;

/// How long an authorization code may wait to be redeemed.
pub const CODE_LIFETIME_MS: i64 = 60_000;
/// How long a person has from the authorization request to the code (signing in, consenting).
pub const SIGN_IN_LIFETIME_MS: i64 = 600_000;
/// How long a refresh token stays usable if it is not rotated before.
pub const REFRESH_TOKEN_LIFETIME_MS: i64 = 30 * 24 * 3600 * 1000;

/// Why a sign-in step or grant was refused, in RFC 6749 terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidClient(String),
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    InvalidTarget(String),
    #[error("{0}")]
    UnauthorizedClient(String),
    #[error("{0}")]
    UnsupportedResponseType(String),
    #[error("{0}")]
    AccessDenied(String),
    /// Dynamic client registration (RFC 7591): a redirect URI that may not be registered.
    #[error("{0}")]
    InvalidRedirectUri(String),
    /// Dynamic client registration: other metadata that cannot be honoured.
    #[error("{0}")]
    InvalidClientMetadata(String),
    /// Deputy could not decide; the step is refused all the same.
    #[error("{0}")]
    Internal(String),
}

impl SignInError {
    pub fn oauth_error_code(&self) -> &'static str {
        match self {
            SignInError::InvalidRequest(_) => "invalid_request",
            SignInError::InvalidClient(_) => "invalid_client",
            SignInError::InvalidGrant(_) => "invalid_grant",
            SignInError::InvalidScope(_) => "invalid_scope",
            SignInError::InvalidTarget(_) => "invalid_target",
            SignInError::UnauthorizedClient(_) => "unauthorized_client",
            SignInError::UnsupportedResponseType(_) => "unsupported_response_type",
            SignInError::AccessDenied(_) => "access_denied",
            SignInError::InvalidRedirectUri(_) => "invalid_redirect_uri",
            SignInError::InvalidClientMetadata(_) => "invalid_client_metadata",
            SignInError::Internal(_) => "server_error",
        }
    }

    fn internal(cause: impl std::fmt::Display) -> SignInError {
        SignInError::Internal(cause.to_string())
    }
}

impl From<deputy_store::StoreError> for SignInError {
    fn from(error: deputy_store::StoreError) -> SignInError {
        SignInError::internal(error)
    }
}

impl From<deputy_access::Error> for SignInError {
    fn from(error: deputy_access::Error) -> SignInError {
        SignInError::Internal(error.message)
    }
}

/// The sign-in service: one per server.
pub struct SignIn {
    access: Arc<Access>,
    keys: IssuerKeys,
    failed_logins: password::FailedLogins,
}

impl SignIn {
    pub fn new(access: Arc<Access>) -> Result<SignIn, deputy_outbound::OutboundError> {
        Ok(SignIn {
            access,
            keys: IssuerKeys::new()?,
            failed_logins: password::FailedLogins::default(),
        })
    }

    /// The issuer named in authorization responses (`iss`, RFC 9207) and tokens.
    pub fn issuer(&self) -> String {
        self.access.credentials().issuer()
    }

    /// Where upstream providers send the browser back to.
    pub fn callback_url(&self) -> String {
        format!("{}/oidc/v1/callback", self.access.base_url())
    }
}
