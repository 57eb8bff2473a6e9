//! A client for Deputy's REST API (which is also Databricks' REST API, for the parts Deputy serves).
//!
//! [`WorkspaceClient`] sends JSON requests with a bearer token from a [`Credentials`] strategy and turns error bodies
//! into [`ApiError`]s carrying the Databricks `error_code`. [`Config::from_environment`] reads the same variables and
//! profile file as the Databricks SDKs, so one set of settings serves the Python clients and this one.

pub mod agent;
mod config;
pub mod login;

pub use config::{Config, ConfigError};
pub use login::{CachedLogin, LoginError, TokenCache};

use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a client obtains the bearer token it sends.
pub enum Credentials {
    /// A personal access token (or any bearer token the caller already holds).
    Token(String),
    /// OAuth machine-to-machine: a service principal's client id and secret, exchanged at `/oidc/v1/token` for
    /// access tokens that are cached until shortly before they expire.
    OAuthClientCredentials {
        client_id: String,
        client_secret: String,
        scope: String,
        cache: Mutex<Option<CachedToken>>,
    },
    /// Inside a Deputy (or Databricks) serving worker: the endpoint's own token, read from the file the platform
    /// rewrites before it expires (`$SERVING_CREDENTIALS_DIR/model-dependencies-oauth-token`).
    ServingSystem { token_file: std::path::PathBuf },
    /// A person signed in with `deputy login`: the access token in the [`TokenCache`] entry for `host`, refreshed
    /// through the token endpoint (and the cache rewritten) when it expires within a minute.
    SignedIn {
        host: String,
        cache: TokenCache,
        current: Mutex<Option<CachedLogin>>,
    },
}

impl Credentials {
    /// The serving-system strategy, with the token file where the platform puts it.
    pub fn serving_system() -> Credentials {
        let dir = std::env::var_os("SERVING_CREDENTIALS_DIR").map_or_else(
            || "/var/credentials-secret".into(),
            std::path::PathBuf::from,
        );
        Credentials::ServingSystem {
            token_file: dir.join("model-dependencies-oauth-token"),
        }
    }

    pub fn oauth(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        scope: impl Into<String>,
    ) -> Credentials {
        Credentials::OAuthClientCredentials {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            scope: scope.into(),
            cache: Mutex::new(None),
        }
    }

    /// The signed-in strategy for `host`, with the tokens `deputy login` put in `cache`.
    pub fn signed_in(host: impl Into<String>, cache: TokenCache) -> Credentials {
        Credentials::SignedIn {
            host: login::normalize_host(&host.into()),
            cache,
            current: Mutex::new(None),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Credentials::Token(<redacted>)"),
            Credentials::ServingSystem { token_file } => {
                write!(
                    f,
                    "Credentials::ServingSystem {{ token_file: {token_file:?} }}"
                )
            }
            Credentials::OAuthClientCredentials { client_id, .. } => {
                write!(
                    f,
                    "Credentials::OAuthClientCredentials {{ client_id: {client_id:?}, .. }}"
                )
            }
            Credentials::SignedIn { host, cache, .. } => {
                write!(
                    f,
                    "Credentials::SignedIn {{ host: {host:?}, cache: {:?}, .. }}",
                    cache.path()
                )
            }
        }
    }
}

pub struct CachedToken {
    access_token: String,
    refresh_after: Instant,
}

/// An error answer from the server, or a failure to reach it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{error_code} ({status}): {message}")]
    Api {
        status: u16,
        error_code: String,
        message: String,
    },
    #[error("could not reach the server: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("no usable credentials: {0}")]
    Credentials(String),
}

impl ApiError {
    pub fn error_code(&self) -> Option<&str> {
        match self {
            ApiError::Api { error_code, .. } => Some(error_code),
            ApiError::Transport(_) | ApiError::Credentials(_) => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Api { status, .. } => Some(*status),
            ApiError::Transport(_) | ApiError::Credentials(_) => None,
        }
    }
}

/// The HTTP client [`WorkspaceClient::new`] builds: calls are bounded so a stalled server cannot hang the caller.
pub fn new_http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap_or_default()
}

pub struct WorkspaceClient {
    host: String,
    credentials: Credentials,
    http: reqwest::Client,
}

impl WorkspaceClient {
    pub fn new(host: impl Into<String>, credentials: Credentials) -> WorkspaceClient {
        WorkspaceClient::with_http_client(host, credentials, new_http_client())
    }

    /// A client that shares `http` (its connection pool and TLS roots) with others: building a `reqwest::Client`
    /// reads the system's certificate store, which costs far more than the call an agent makes with it.
    pub fn with_http_client(
        host: impl Into<String>,
        credentials: Credentials,
        http: reqwest::Client,
    ) -> WorkspaceClient {
        WorkspaceClient {
            host: host.into().trim_end_matches('/').to_owned(),
            credentials,
            http,
        }
    }

    pub fn from_config(config: Config) -> WorkspaceClient {
        WorkspaceClient::new(config.host, config.credentials)
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub async fn get(&self, path: &str) -> Result<Value, ApiError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Value, ApiError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn patch<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Value, ApiError> {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn put<B: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<Value, ApiError> {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, ApiError> {
        self.call(Method::DELETE, path, None::<&()>).await
    }

    /// Sends one request; `path` starts with `/` and may carry a query string.
    pub async fn call<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Value, ApiError> {
        let token = self.bearer_token().await?;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.host))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        let body: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(body);
        }
        Err(api_error(status.as_u16(), &body))
    }

    /// RFC 8693 token exchange at `/oidc/v1/token`: trades `subject_token` for a token that holds at most `scope`
    /// (default: all of the subject's scopes) and, with an `actor_token`, names that token's principal as the actor.
    pub async fn exchange_token(
        &self,
        subject_token: &str,
        actor_token: Option<&str>,
        scope: Option<&str>,
    ) -> Result<Value, ApiError> {
        const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
        let mut form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange",
            ),
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN),
        ];
        if let Some(actor_token) = actor_token {
            form.extend([
                ("actor_token", actor_token),
                ("actor_token_type", ACCESS_TOKEN),
            ]);
        }
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        let response = self
            .http
            .post(format!("{}/oidc/v1/token", self.host))
            .form(&form)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await?;
        match status.is_success() {
            true => Ok(body),
            false => Err(api_error(status.as_u16(), &body)),
        }
    }

    /// RFC 7009 revocation at `/oidc/v1/revoke`; presenting the token is the authority to revoke it.
    pub async fn revoke_token(&self, token: &str) -> Result<(), ApiError> {
        let response = self
            .http
            .post(format!("{}/oidc/v1/revoke", self.host))
            .form(&[("token", token)])
            .send()
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Err(api_error(status.as_u16(), &body))
    }

    /// The bearer token this client sends: the configured token, or a (cached) OAuth access token.
    pub async fn access_token(&self) -> Result<String, ApiError> {
        self.bearer_token().await
    }

    async fn bearer_token(&self) -> Result<String, ApiError> {
        match &self.credentials {
            Credentials::Token(token) => Ok(token.clone()),
            // Read on every call: the file is small and the platform rewrites it before the token expires.
            Credentials::ServingSystem { token_file } => {
                let text = tokio::fs::read_to_string(token_file)
                    .await
                    .map_err(|error| {
                        ApiError::Credentials(format!(
                            "cannot read {}: {error}",
                            token_file.display()
                        ))
                    })?;
                let body: Value = serde_json::from_str(&text)
                    .map_err(|error| ApiError::Credentials(format!("bad token file: {error}")))?;
                body["OAUTH_TOKEN"][0]["oauthTokenValue"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::Credentials("the token file holds no token".into()))
            }
            Credentials::OAuthClientCredentials {
                client_id,
                client_secret,
                scope,
                cache,
            } => {
                if let Some(cached) = cache.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
                    && Instant::now() < cached.refresh_after
                {
                    return Ok(cached.access_token.clone());
                }
                let response = self
                    .http
                    .post(format!("{}/oidc/v1/token", self.host))
                    .basic_auth(client_id, Some(client_secret))
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("scope", scope.as_str()),
                    ])
                    .send()
                    .await?;
                let status = response.status();
                let body: Value = response.json().await?;
                if !status.is_success() {
                    return Err(ApiError::Api {
                        status: status.as_u16(),
                        error_code: body["error"]
                            .as_str()
                            .unwrap_or("invalid_client")
                            .to_owned(),
                        message: body["error_description"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                    });
                }
                let access_token = body["access_token"].as_str().unwrap_or_default().to_owned();
                let lifetime = body["expires_in"].as_u64().unwrap_or(0);
                // Refresh a minute early so that a token never expires in flight.
                let refresh_after =
                    Instant::now() + Duration::from_secs(lifetime.saturating_sub(60));
                *cache.lock().unwrap_or_else(|p| p.into_inner()) = Some(CachedToken {
                    access_token: access_token.clone(),
                    refresh_after,
                });
                Ok(access_token)
            }
            Credentials::SignedIn {
                host,
                cache,
                current,
            } => {
                if let Some(cached) = current.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
                    && !cached.expires_within(login::REFRESH_MARGIN)
                {
                    return Ok(cached.access_token.clone());
                }
                // A client that follows no redirects: the refresh token goes to the token endpoint only.
                let token_endpoint = format!("{}/oidc/v1/token", self.host);
                let http = login::http_client();
                let fresh = login::signed_in_token(&http, cache, host, &token_endpoint)
                    .await
                    .map_err(|error| match error {
                        LoginError::Transport(error) => ApiError::Transport(error),
                        other => ApiError::Credentials(other.to_string()),
                    })?;
                let access_token = fresh.access_token.clone();
                *current.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
                Ok(access_token)
            }
        }
    }
}

fn api_error(status: u16, body: &Value) -> ApiError {
    let error_code = body["error_code"]
        .as_str()
        .or_else(|| body["error"].as_str())
        .unwrap_or("UNKNOWN")
        .to_owned();
    let message = body["message"]
        .as_str()
        .or_else(|| body["error_description"].as_str())
        .or_else(|| body["detail"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    ApiError::Api {
        status,
        error_code,
        message,
    }
}
