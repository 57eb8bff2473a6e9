//! Browser sign-in for command-line clients, and the token cache that keeps its result between runs.
//!
//! Why: a person at a terminal should not have to mint a personal access token and paste it into an environment
//! variable. `deputy login` runs the OAuth 2.0 authorization code flow for native apps (RFC 8252) as the
//! pre-registered public client `databricks-cli`: having no secret, it proves that the code is its own with PKCE S256
//! (RFC 7636); the browser brings the code back to a one-shot listener on the loopback interface, which checks
//! `state` (the redirect answers this sign-in, not a forged or stale one) and `iss` against the discovered issuer
//! (RFC 9207: a code from another authorization server is never redeemed here).
//!
//! The tokens go to a per-user JSON file keyed by host ([`TokenCache`]), written atomically with mode 0600, and
//! [`crate::Config::from_environment`] falls back to it when no token or client secret is configured. Refresh tokens
//! rotate on every use and the server revokes the whole family when a spent one comes back, so a refresh writes the
//! new refresh token to the cache before its access token is used, under a lock file that keeps two processes from
//! refreshing with the same token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The public client the Databricks CLI uses, which Deputy registers for every loopback redirect URI.
pub const DEFAULT_CLIENT_ID: &str = "databricks-cli";
/// Every API, and a refresh token so that a sign-in outlives its first access token.
pub const DEFAULT_SCOPES: &str = "all-apis offline_access";
/// An access token this close to its expiry is refreshed before use, so that it never expires in flight.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// How long one browser connection may take to send its request head.
const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head the listener reads; a redirect with a code and state is far smaller.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// How long a process waits for another's lock on the cache, and after how long a lock is taken to be left over
/// from a process that died holding it (a refresh is one HTTP call with a 30 s timeout).
const LOCK_WAIT: Duration = Duration::from_secs(75);
const LOCK_STALE: Duration = Duration::from_secs(60);
const CACHE_VERSION: u32 = 1;

/// Why a sign-in, a refresh or the token cache failed; every message says what to do when there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("could not reach the server: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("{url} did not answer with OAuth authorization server metadata: {reason}")]
    Discovery { url: String, reason: String },
    /// An RFC 6749 error answer (`error`, `error_description`) from the token or revocation endpoint.
    #[error("the server refused ({status}): {error}{}", detail(.description))]
    Token {
        status: u16,
        error: String,
        description: String,
    },
    #[error("the token endpoint's answer is unusable: {0}")]
    BadTokenResponse(String),
    #[error("sign-in failed: {error}{}", detail(.description))]
    Authorization { error: String, description: String },
    #[error(
        "the browser's redirect does not carry this sign-in's state (a stale tab or a forged request); start again"
    )]
    StateMismatch,
    #[error(
        "the redirect names issuer `{got}`, not `{expected}`: its code is not from this server (RFC 9207), so it is not redeemed"
    )]
    IssuerMismatch { expected: String, got: String },
    #[error("the browser's redirect is malformed: {0}")]
    BadRedirect(String),
    #[error("the loopback listener failed: {0}")]
    Listener(std::io::Error),
    #[error("no sign-in arrived within {0} s")]
    TimedOut(u64),
    #[error("no place for the token cache: set HOME or DEPUTY_TOKEN_CACHE")]
    NoCachePath,
    #[error("token cache {path}: {source}")]
    CacheIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token cache {path} is unreadable ({source}); remove it and sign in again")]
    CacheFormat {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("the token cache is locked by another deputy process; if none is running, remove {0}")]
    CacheLocked(PathBuf),
    #[error("not signed in to {host}: run `deputy login --host {host}`")]
    NotSignedIn { host: String },
    #[error("the sign-in to {host} has expired{}: run `deputy login --host {host}` again", detail(.reason))]
    SessionExpired { host: String, reason: String },
    #[error("the operating system's random number generator is unavailable")]
    Randomness,
}

fn detail(text: &str) -> String {
    match text.is_empty() {
        true => String::new(),
        false => format!(" ({text})"),
    }
}

/// A host as the cache keys it: `https://` when no scheme is given, scheme and authority in lower case, no trailing
/// slash.
pub fn normalize_host(host: &str) -> String {
    let host = host.trim().trim_end_matches('/');
    let host = match host.contains("://") {
        true => host.to_owned(),
        false => format!("https://{host}"),
    };
    let (scheme, rest) = host.split_once("://").unwrap_or(("https", &host));
    let (authority, path) = match rest.find('/') {
        Some(index) => rest.split_at(index),
        None => (rest, ""),
    };
    format!(
        "{}://{}{path}",
        scheme.to_ascii_lowercase(),
        authority.to_ascii_lowercase()
    )
}

/// An HTTP client for the sign-in endpoints: bounded, and following no redirects, so that a code, verifier or
/// refresh token is only ever sent to the endpoint it was meant for.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

fn random_text<const N: usize>() -> Result<String, LoginError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|_| LoginError::Randomness)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A fresh `state` for one authorization request: 256 random bits, base64url.
pub fn random_state() -> Result<String, LoginError> {
    random_text::<32>()
}

/// A PKCE verifier and its S256 challenge (RFC 7636).
pub struct Pkce {
    verifier: String,
    challenge: String,
}

impl Pkce {
    /// A verifier of 256 random bits (43 base64url characters, the RFC's recommendation).
    pub fn generate() -> Result<Pkce, LoginError> {
        Ok(Pkce::from_verifier(random_text::<32>()?))
    }

    pub fn from_verifier(verifier: impl Into<String>) -> Pkce {
        let verifier = verifier.into();
        let challenge = s256_challenge(&verifier);
        Pkce {
            verifier,
            challenge,
        }
    }

    pub fn verifier(&self) -> &str {
        &self.verifier
    }

    pub fn challenge(&self) -> &str {
        &self.challenge
    }
}

impl std::fmt::Debug for Pkce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkce")
            .field("verifier", &"<redacted>")
            .field("challenge", &self.challenge)
            .finish()
    }
}

/// `BASE64URL(SHA256(ASCII(verifier)))` without padding.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 8414 authorization server metadata, as far as sign-in needs it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ServerMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
}

impl ServerMetadata {
    /// The metadata at `{host}/oidc/.well-known/oauth-authorization-server`.
    pub async fn discover(
        http: &reqwest::Client,
        host: &str,
    ) -> Result<ServerMetadata, LoginError> {
        let url = format!(
            "{}/oidc/.well-known/oauth-authorization-server",
            normalize_host(host)
        );
        let failed = |reason: String| LoginError::Discovery {
            url: url.clone(),
            reason,
        };
        let response = http.get(&url).send().await?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!("status {status}")));
        }
        let text = response.text().await?;
        let metadata: ServerMetadata =
            serde_json::from_str(&text).map_err(|error| failed(error.to_string()))?;
        for (name, value) in [
            ("issuer", &metadata.issuer),
            ("authorization_endpoint", &metadata.authorization_endpoint),
            ("token_endpoint", &metadata.token_endpoint),
        ] {
            if !(value.starts_with("https://") || value.starts_with("http://")) {
                return Err(failed(format!("`{name}` is not an http(s) URL")));
            }
        }
        Ok(metadata)
    }

    /// The URL that starts a sign-in in the browser: an authorization code request with PKCE S256.
    pub fn authorize_url(
        &self,
        client_id: &str,
        redirect_uri: &str,
        scope: &str,
        state: &str,
        pkce: &Pkce,
    ) -> String {
        let query = [
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", redirect_uri),
            ("scope", scope),
            ("state", state),
            ("code_challenge", pkce.challenge()),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(name, value)| format!("{name}={}", percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&");
        let separator = match self.authorization_endpoint.contains('?') {
            true => '&',
            false => '?',
        };
        format!("{}{separator}{query}", self.authorization_endpoint)
    }
}

/// Percent-encodes all but RFC 3986's unreserved characters (so a space is `%20`, never `+`).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// A token endpoint's successful answer.
#[derive(Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Redeems an authorization code (with the PKCE verifier that goes with its challenge).
pub async fn exchange_code(
    http: &reqwest::Client,
    token_endpoint: &str,
    client_id: &str,
    code: &str,
    redirect_uri: &str,
    pkce: &Pkce,
) -> Result<TokenResponse, LoginError> {
    token_request(
        http,
        token_endpoint,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("client_id", client_id),
            ("code_verifier", pkce.verifier()),
        ],
    )
    .await
}

/// Trades a refresh token for a new access token and, as the server rotates them, a new refresh token: the one
/// presented is spent whether or not the answer arrives.
pub async fn refresh(
    http: &reqwest::Client,
    token_endpoint: &str,
    client_id: &str,
    refresh_token: &str,
) -> Result<TokenResponse, LoginError> {
    token_request(
        http,
        token_endpoint,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
        ],
    )
    .await
}

async fn token_request(
    http: &reqwest::Client,
    token_endpoint: &str,
    form: &[(&str, &str)],
) -> Result<TokenResponse, LoginError> {
    let response = http
        .post(token_endpoint)
        .header(reqwest::header::ACCEPT, "application/json")
        .form(form)
        .send()
        .await?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let field = |name: &str| body[name].as_str().unwrap_or_default().to_owned();
        let error = match field("error") {
            error if error.is_empty() => format!("HTTP {status}"),
            error => error,
        };
        return Err(LoginError::Token {
            status: status.as_u16(),
            error,
            description: field("error_description"),
        });
    }
    let tokens: TokenResponse = serde_json::from_str(&text)
        .map_err(|error| LoginError::BadTokenResponse(error.to_string()))?;
    if tokens.access_token.is_empty() {
        return Err(LoginError::BadTokenResponse("no access_token".into()));
    }
    if let Some(kind) = &tokens.token_type
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(LoginError::BadTokenResponse(format!(
            "token_type `{kind}`, not Bearer"
        )));
    }
    Ok(tokens)
}

/// RFC 7009 revocation: presenting the token is the authority to revoke it.
pub async fn revoke(
    http: &reqwest::Client,
    revocation_endpoint: &str,
    token: &str,
    token_type_hint: &str,
) -> Result<(), LoginError> {
    let response = http
        .post(revocation_endpoint)
        .form(&[("token", token), ("token_type_hint", token_type_hint)])
        .send()
        .await?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    Err(LoginError::Token {
        status: status.as_u16(),
        error: body["error"].as_str().unwrap_or("revocation failed").into(),
        description: body["error_description"]
            .as_str()
            .unwrap_or_default()
            .into(),
    })
}

/// A listener on the loopback interface for the one redirect that ends a browser sign-in (RFC 8252 §7.3).
pub struct LoopbackListener {
    listener: TcpListener,
    redirect_uri: String,
}

/// What the listener checks the redirect against.
struct Expected {
    state: String,
    issuer: String,
}

impl LoopbackListener {
    /// Listens on `127.0.0.1:port` (0: a free port the system picks); the redirect URI is `http://127.0.0.1:<port>/`.
    pub async fn bind(port: u16) -> Result<LoopbackListener, LoginError> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(LoginError::Listener)?;
        let port = listener.local_addr().map_err(LoginError::Listener)?.port();
        Ok(LoopbackListener {
            listener,
            redirect_uri: format!("http://127.0.0.1:{port}/"),
        })
    }

    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits (at most `limit`) for the browser's redirect and checks it: `state` must be the one sent, and `iss`,
    /// when present, the discovered `issuer`. A redirect that fails a check, or carries an OAuth error, ends the wait
    /// with that error after the browser is shown it. Requests for other paths (a favicon) and connections that send
    /// nothing (a browser's pre-connect) are answered or dropped without ending the wait.
    pub async fn wait(
        self,
        state: &str,
        issuer: &str,
        limit: Duration,
    ) -> Result<Callback, LoginError> {
        let expected = std::sync::Arc::new(Expected {
            state: state.to_owned(),
            issuer: issuer.to_owned(),
        });
        // Dropping the set when the wait ends aborts the handlers of connections still sending.
        let mut handlers = tokio::task::JoinSet::new();
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, _) = accepted.map_err(LoginError::Listener)?;
                    handlers.spawn(handle_connection(stream, expected.clone()));
                }
                Some(joined) = handlers.join_next(), if !handlers.is_empty() => {
                    if let Ok(Some(outcome)) = joined {
                        return outcome;
                    }
                }
                () = &mut deadline => return Err(LoginError::TimedOut(limit.as_secs())),
            }
        }
    }
}

/// A redirect that passed the checks: its authorization code, and the browser waiting for the page that says how
/// the sign-in ended.
pub struct Callback {
    code: String,
    browser: TcpStream,
}

impl Callback {
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Tells the browser that the sign-in succeeded; `who` names the account.
    pub async fn signed_in(mut self, who: &str) {
        let message = format!("You are signed in to Deputy as {who}. You may close this tab.");
        respond(&mut self.browser, "200 OK", "Signed in", &message).await;
    }

    /// Tells the browser that the sign-in failed, and why.
    pub async fn failed(mut self, message: &str) {
        respond(
            &mut self.browser,
            "400 Bad Request",
            "Sign-in failed",
            message,
        )
        .await;
    }
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callback { code: <redacted>, .. }")
    }
}

/// `None` when the connection is not the redirect (another path, nothing sent); else how the sign-in ended.
async fn handle_connection(
    mut stream: TcpStream,
    expected: std::sync::Arc<Expected>,
) -> Option<Result<Callback, LoginError>> {
    let head = tokio::time::timeout(REQUEST_HEAD_TIMEOUT, read_request_head(&mut stream))
        .await
        .ok()??;
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target) = (parts.next().unwrap_or_default(), parts.next()?);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" || path != "/" {
        respond(
            &mut stream,
            "404 Not Found",
            "Not found",
            "This address only receives the sign-in redirect.",
        )
        .await;
        return None;
    }
    let parameters: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let is_redirect = ["code", "error", "state"]
        .iter()
        .any(|name| parameters.iter().any(|(key, _)| key == name));
    if !is_redirect {
        respond(
            &mut stream,
            "400 Bad Request",
            "Waiting for sign-in",
            "This address only receives the sign-in redirect.",
        )
        .await;
        return None;
    }
    match check_redirect(&parameters, &expected) {
        Ok(code) => Some(Ok(Callback {
            code,
            browser: stream,
        })),
        Err(error) => {
            respond(
                &mut stream,
                "400 Bad Request",
                "Sign-in failed",
                &error.to_string(),
            )
            .await;
            Some(Err(error))
        }
    }
}

/// The code of a redirect that carries this sign-in's state and issuer; the checks come before the code or error
/// is looked at, since a redirect that fails them does not answer this sign-in.
fn check_redirect(
    parameters: &[(String, String)],
    expected: &Expected,
) -> Result<String, LoginError> {
    let single = |name: &str| -> Result<Option<&str>, LoginError> {
        let mut values = parameters
            .iter()
            .filter(|(key, _)| key == name)
            .map(|(_, value)| value.as_str());
        let first = values.next();
        match values.next() {
            Some(_) => Err(LoginError::BadRedirect(format!("`{name}` appears twice"))),
            None => Ok(first),
        }
    };
    if single("state")? != Some(expected.state.as_str()) {
        return Err(LoginError::StateMismatch);
    }
    if let Some(issuer) = single("iss")?
        && issuer != expected.issuer
    {
        return Err(LoginError::IssuerMismatch {
            expected: expected.issuer.clone(),
            got: issuer.to_owned(),
        });
    }
    if let Some(error) = single("error")? {
        return Err(LoginError::Authorization {
            error: error.to_owned(),
            description: single("error_description")?.unwrap_or_default().to_owned(),
        });
    }
    match single("code")? {
        Some(code) if !code.is_empty() => Ok(code.to_owned()),
        _ => Err(LoginError::BadRedirect(
            "neither a code nor an error".into(),
        )),
    }
}

/// Reads up to the blank line that ends a request head (a GET has no body), so that closing the connection after
/// answering does not reset it with unread data. `None` if the head is cut short or too large.
async fn read_request_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 2048];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        let read = stream.read(&mut buffer).await.ok()?;
        if read == 0 || head.len() + read > MAX_REQUEST_HEAD {
            return None;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    String::from_utf8(head).ok()
}

async fn respond(stream: &mut TcpStream, status: &str, title: &str, message: &str) {
    let body = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family: sans-serif; margin: 3em\"><h1>{title}</h1><p>{}</p></body></html>\n",
        html_escape(message)
    );
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nReferrer-Policy: no-referrer\r\nX-Frame-Options: DENY\r\n\
         Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    // The browser may be gone; the terminal reports the outcome either way.
    let _ = tokio::time::timeout(Duration::from_secs(5), write).await;
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// One host's tokens in the cache.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedLogin {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// When the access token expires, in seconds since the Unix epoch.
    pub expiry: u64,
    pub client_id: String,
    pub scope: String,
}

impl CachedLogin {
    /// The cache entry for a token answer. A refresh answer without a refresh token keeps `previous_refresh_token`
    /// (RFC 6749 §6 lets a server keep the old one); one without `scope` keeps `scope`, what was asked for.
    pub fn from_response(
        tokens: &TokenResponse,
        client_id: &str,
        scope: &str,
        previous_refresh_token: Option<&str>,
    ) -> CachedLogin {
        CachedLogin {
            access_token: tokens.access_token.clone(),
            refresh_token: tokens
                .refresh_token
                .clone()
                .or_else(|| previous_refresh_token.map(str::to_owned)),
            expiry: now_seconds().saturating_add(tokens.expires_in.unwrap_or(0)),
            client_id: client_id.to_owned(),
            scope: tokens.scope.clone().unwrap_or_else(|| scope.to_owned()),
        }
    }

    /// Whether the access token expires within `margin` from now (or already has).
    pub fn expires_within(&self, margin: Duration) -> bool {
        self.expiry <= now_seconds().saturating_add(margin.as_secs())
    }
}

impl std::fmt::Debug for CachedLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedLogin")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expiry", &self.expiry)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .finish()
    }
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// The file's layout: `{"version": 1, "tokens": {"<host>": {...}}}`.
#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    #[serde(default)]
    tokens: BTreeMap<String, CachedLogin>,
}

/// The signed-in hosts' tokens, in one JSON file only its owner can read (`$DEPUTY_TOKEN_CACHE`, else
/// `$HOME/.deputy/token-cache.json`). Writes go to a temporary file in the same directory, created with mode 0600,
/// which is then renamed over the cache, so readers never see half a file; writers take a lock file first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCache {
    path: PathBuf,
}

impl TokenCache {
    pub fn new(path: impl Into<PathBuf>) -> TokenCache {
        TokenCache { path: path.into() }
    }

    /// The cache at `$DEPUTY_TOKEN_CACHE`, else `$HOME/.deputy/token-cache.json`.
    pub fn from_environment() -> Result<TokenCache, LoginError> {
        let nonempty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        if let Some(path) = nonempty("DEPUTY_TOKEN_CACHE") {
            return Ok(TokenCache::new(path));
        }
        let home = nonempty("HOME").ok_or(LoginError::NoCachePath)?;
        Ok(TokenCache::new(
            PathBuf::from(home).join(".deputy").join("token-cache.json"),
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tokens for `host` (normalised), if it is signed in.
    pub fn get(&self, host: &str) -> Result<Option<CachedLogin>, LoginError> {
        Ok(self.read()?.tokens.remove(&normalize_host(host)))
    }

    /// Stores (replaces) the tokens for `host`.
    pub async fn put(&self, host: &str, login: CachedLogin) -> Result<(), LoginError> {
        let _lock = self.lock().await?;
        self.put_locked(host, login)
    }

    /// Forgets `host`; returns the tokens it had, so that they can be revoked.
    pub async fn remove(&self, host: &str) -> Result<Option<CachedLogin>, LoginError> {
        let _lock = self.lock().await?;
        let mut file = self.read()?;
        let removed = file.tokens.remove(&normalize_host(host));
        if removed.is_some() {
            self.write(&file)?;
        }
        Ok(removed)
    }

    fn put_locked(&self, host: &str, login: CachedLogin) -> Result<(), LoginError> {
        let mut file = self.read()?;
        file.tokens.insert(normalize_host(host), login);
        self.write(&file)
    }

    fn io_error(&self, path: &Path) -> impl FnOnce(std::io::Error) -> LoginError {
        let path = path.to_owned();
        move |source| LoginError::CacheIo { path, source }
    }

    fn read(&self) -> Result<CacheFile, LoginError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(CacheFile::default());
            }
            Err(source) => return Err(self.io_error(&self.path)(source)),
        };
        let file: CacheFile =
            serde_json::from_str(&text).map_err(|source| LoginError::CacheFormat {
                path: self.path.clone(),
                source,
            })?;
        if file.version != CACHE_VERSION {
            return Err(LoginError::CacheFormat {
                path: self.path.clone(),
                source: serde::de::Error::custom(format!(
                    "version {} (this deputy reads version {CACHE_VERSION})",
                    file.version
                )),
            });
        }
        Ok(file)
    }

    fn directory(&self) -> PathBuf {
        match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
            _ => PathBuf::from("."),
        }
    }

    /// Creates the cache's directory (mode 0700) if it is missing.
    fn ensure_directory(&self) -> Result<(), LoginError> {
        let directory = self.directory();
        if directory.is_dir() {
            return Ok(());
        }
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&directory)
            .map_err(self.io_error(&directory))
    }

    fn write(&self, file: &CacheFile) -> Result<(), LoginError> {
        self.ensure_directory()?;
        let file = CacheFile {
            version: CACHE_VERSION,
            tokens: file.tokens.clone(),
        };
        let mut text =
            serde_json::to_vec_pretty(&file).map_err(|source| LoginError::CacheFormat {
                path: self.path.clone(),
                source,
            })?;
        text.push(b'\n');
        let name = self
            .path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "token-cache.json".into());
        // Writers hold the lock, so the process id makes the name unique; a leftover from a crash is replaced.
        let temporary = self
            .directory()
            .join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&temporary);
        let written = private_file(&temporary)
            .and_then(|mut out| {
                out.write_all(&text)?;
                out.sync_all()
            })
            .and_then(|()| std::fs::rename(&temporary, &self.path));
        if let Err(source) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(self.io_error(&self.path)(source));
        }
        Ok(())
    }

    /// Takes the cache's lock file, waiting while another process holds it.
    async fn lock(&self) -> Result<CacheLock, LoginError> {
        self.ensure_directory()?;
        let mut lock_path = self.path.clone().into_os_string();
        lock_path.push(".lock");
        let lock_path = PathBuf::from(lock_path);
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match private_file(&lock_path) {
                Ok(_) => return Ok(CacheLock { path: lock_path }),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A lock older than any refresh takes was left by a process that died holding it.
                    let stale = std::fs::metadata(&lock_path)
                        .and_then(|metadata| metadata.modified())
                        .ok()
                        .and_then(|modified| modified.elapsed().ok())
                        .is_some_and(|age| age > LOCK_STALE);
                    if stale {
                        let _ = std::fs::remove_file(&lock_path);
                        continue;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(LoginError::CacheLocked(lock_path));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(source) => return Err(self.io_error(&lock_path)(source)),
            }
        }
    }
}

/// Creates a new file only its owner can read or write; fails if it exists.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

struct CacheLock {
    path: PathBuf,
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The signed-in access token for `host`, refreshed first when it expires within [`REFRESH_MARGIN`]. The refresh
/// happens under the cache's lock, after reading the cache again (another process may have refreshed already, and
/// its refresh token is then the only one still valid), and the rotated refresh token is written before the access
/// token is returned.
pub async fn signed_in_token(
    http: &reqwest::Client,
    cache: &TokenCache,
    host: &str,
    token_endpoint: &str,
) -> Result<CachedLogin, LoginError> {
    let host = normalize_host(host);
    let not_signed_in = || LoginError::NotSignedIn { host: host.clone() };
    let current = cache.get(&host)?.ok_or_else(not_signed_in)?;
    if !current.expires_within(REFRESH_MARGIN) {
        return Ok(current);
    }
    let _lock = cache.lock().await?;
    let current = cache.get(&host)?.ok_or_else(not_signed_in)?;
    if !current.expires_within(REFRESH_MARGIN) {
        return Ok(current);
    }
    let expired = |reason: &str| LoginError::SessionExpired {
        host: host.clone(),
        reason: reason.to_owned(),
    };
    let Some(refresh_token) = current.refresh_token.as_deref() else {
        return Err(expired("no refresh token was issued"));
    };
    let tokens = match refresh(http, token_endpoint, &current.client_id, refresh_token).await {
        Ok(tokens) => tokens,
        Err(LoginError::Token {
            error, description, ..
        }) if error == "invalid_grant" => {
            return Err(expired(&format!("{error}: {description}")));
        }
        Err(error) => return Err(error),
    };
    let renewed = CachedLogin::from_response(
        &tokens,
        &current.client_id,
        &current.scope,
        Some(refresh_token),
    );
    cache.put_locked(&host, renewed.clone())?;
    Ok(renewed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_pkce_challenge_matches_rfc_7636_appendix_b() {
        // Appendix B: the verifier is the base64url of these 32 octets, and the challenge is fixed by it.
        let octets: [u8; 32] = [
            116, 24, 223, 180, 151, 153, 224, 37, 79, 250, 96, 125, 216, 173, 187, 186, 22, 212,
            37, 77, 105, 214, 191, 240, 91, 88, 5, 88, 83, 132, 141, 121,
        ];
        let verifier = URL_SAFE_NO_PAD.encode(octets);
        assert_eq!(verifier, "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk");
        let pkce = Pkce::from_verifier(verifier);
        assert_eq!(
            pkce.challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        assert!(!format!("{pkce:?}").contains(pkce.verifier()));
    }

    #[test]
    fn login_generated_pkce_is_long_random_and_unreserved() {
        let first = Pkce::generate().unwrap();
        let second = Pkce::generate().unwrap();
        assert_ne!(first.verifier(), second.verifier());
        assert!((43..=128).contains(&first.verifier().len()));
        assert!(
            first
                .verifier()
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-._~".contains(&byte))
        );
        assert_eq!(first.challenge(), s256_challenge(first.verifier()));
        assert_ne!(random_state().unwrap(), random_state().unwrap());
    }

    #[test]
    fn login_authorize_url_carries_the_request() {
        let metadata = ServerMetadata {
            issuer: "http://127.0.0.1:8080/oidc".into(),
            authorization_endpoint: "http://127.0.0.1:8080/oidc/v1/authorize".into(),
            token_endpoint: "http://127.0.0.1:8080/oidc/v1/token".into(),
            revocation_endpoint: None,
        };
        let pkce = Pkce::from_verifier("v".repeat(43));
        let url = metadata.authorize_url(
            DEFAULT_CLIENT_ID,
            "http://127.0.0.1:5000/",
            DEFAULT_SCOPES,
            "st",
            &pkce,
        );
        assert_eq!(
            url,
            format!(
                "http://127.0.0.1:8080/oidc/v1/authorize?response_type=code&client_id=databricks-cli\
                 &redirect_uri=http%3A%2F%2F127.0.0.1%3A5000%2F&scope=all-apis%20offline_access&state=st\
                 &code_challenge={}&code_challenge_method=S256",
                pkce.challenge()
            )
        );
    }

    #[test]
    fn login_hosts_are_normalised() {
        assert_eq!(
            normalize_host("HTTP://LocalHost:8080/"),
            "http://localhost:8080"
        );
        assert_eq!(
            normalize_host("deputy.example.com"),
            "https://deputy.example.com"
        );
        assert_eq!(
            normalize_host(" https://d.example.com/base// "),
            "https://d.example.com/base"
        );
    }

    fn entry(access: &str, refresh: Option<&str>, expiry: u64) -> CachedLogin {
        CachedLogin {
            access_token: access.into(),
            refresh_token: refresh.map(str::to_owned),
            expiry,
            client_id: DEFAULT_CLIENT_ID.into(),
            scope: DEFAULT_SCOPES.into(),
        }
    }

    #[tokio::test]
    async fn login_cache_round_trips_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(dir.path().join("nested").join("token-cache.json"));
        assert_eq!(cache.get("http://a.test").unwrap(), None);
        let first = entry("access-a", Some("refresh-a"), 1_900_000_000);
        cache.put("http://a.test/", first.clone()).await.unwrap();
        cache
            .put("https://b.test", entry("access-b", None, 5))
            .await
            .unwrap();
        assert_eq!(cache.get("HTTP://A.TEST").unwrap(), Some(first.clone()));
        assert_eq!(
            TokenCache::new(cache.path())
                .get("b.test")
                .unwrap()
                .map(|login| login.access_token),
            Some("access-b".into())
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(cache.path()), 0o600);
            assert_eq!(mode(&dir.path().join("nested")), 0o700);
        }
        let text = std::fs::read_to_string(cache.path()).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(
            json["tokens"]["http://a.test"]["refresh_token"],
            "refresh-a"
        );
        assert_eq!(json["tokens"]["http://a.test"]["expiry"], 1_900_000_000u64);
        // Removing returns the entry (for revocation) and leaves the others; no lock or temporary file remains.
        assert_eq!(cache.remove("http://a.test").await.unwrap(), Some(first));
        assert_eq!(cache.remove("http://a.test").await.unwrap(), None);
        assert!(cache.get("https://b.test").unwrap().is_some());
        let names: Vec<String> = std::fs::read_dir(dir.path().join("nested"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["token-cache.json".to_owned()]);
    }

    #[test]
    fn login_debug_output_redacts_tokens() {
        let login = entry("secret-access", Some("secret-refresh"), 1);
        let shown = format!("{login:?}");
        assert!(!shown.contains("secret-access") && !shown.contains("secret-refresh"));
        let tokens: TokenResponse = serde_json::from_str(
            r#"{"access_token":"secret-access","refresh_token":"secret-refresh","expires_in":3600}"#,
        )
        .unwrap();
        let shown = format!("{tokens:?}");
        assert!(!shown.contains("secret-access") && !shown.contains("secret-refresh"));
    }

    #[test]
    fn login_cache_entry_expiry() {
        assert!(entry("a", None, 0).expires_within(REFRESH_MARGIN));
        assert!(entry("a", None, now_seconds() + 30).expires_within(REFRESH_MARGIN));
        assert!(!entry("a", None, now_seconds() + 600).expires_within(REFRESH_MARGIN));
        let tokens: TokenResponse =
            serde_json::from_str(r#"{"access_token":"new","expires_in":600}"#).unwrap();
        let renewed = CachedLogin::from_response(&tokens, "cli", "all-apis", Some("old-refresh"));
        assert_eq!(renewed.refresh_token.as_deref(), Some("old-refresh"));
        assert_eq!(renewed.scope, "all-apis");
        assert!(!renewed.expires_within(REFRESH_MARGIN));
    }

    /// Sends `request` as a browser would and returns the status line and body of the answer.
    async fn browse(port: u16, request: String) -> (String, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    fn get(target: &str) -> String {
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n")
    }

    const ISSUER: &str = "http://127.0.0.1:8080/oidc";

    async fn listen() -> (LoopbackListener, u16) {
        let listener = LoopbackListener::bind(0).await.unwrap();
        let port = listener
            .redirect_uri()
            .trim_start_matches("http://127.0.0.1:")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        assert_eq!(listener.redirect_uri(), format!("http://127.0.0.1:{port}/"));
        (listener, port)
    }

    #[tokio::test]
    async fn login_listener_accepts_the_redirect_and_answers_the_browser() {
        let (listener, port) = listen().await;
        let waiting = tokio::spawn(async move {
            listener
                .wait("the-state", ISSUER, Duration::from_secs(20))
                .await
        });
        // A pre-connect that sends nothing and a favicon request do not end the wait.
        let _idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (status, _) = browse(port, get("/favicon.ico")).await;
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let browser = tokio::spawn(browse(
            port,
            get("/?code=the%2Bcode&state=the-state&iss=http%3A%2F%2F127.0.0.1%3A8080%2Foidc"),
        ));
        let callback = waiting.await.unwrap().unwrap();
        assert_eq!(callback.code(), "the+code");
        assert!(!format!("{callback:?}").contains("the+code"));
        callback.signed_in("alice@example.com").await;
        let (status, body) = browser.await.unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(
            body.contains("signed in to Deputy as alice@example.com"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn login_listener_accepts_a_redirect_without_iss() {
        let (listener, port) = listen().await;
        let waiting =
            tokio::spawn(async move { listener.wait("s", ISSUER, Duration::from_secs(20)).await });
        let browser = tokio::spawn(browse(port, get("/?state=s&code=c")));
        let callback = waiting.await.unwrap().unwrap();
        assert_eq!(callback.code(), "c");
        callback.failed("the exchange <failed>").await;
        let (status, body) = browser.await.unwrap();
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        assert!(body.contains("the exchange &lt;failed&gt;"), "{body}");
    }

    /// Drives the listener with one redirect and returns the wait's error and the page the browser got.
    async fn refused(target: &str) -> (LoginError, String, String) {
        let (listener, port) = listen().await;
        let waiting = tokio::spawn(async move {
            listener
                .wait("the-state", ISSUER, Duration::from_secs(20))
                .await
        });
        let (status, body) = browse(port, get(target)).await;
        let error = waiting.await.unwrap().unwrap_err();
        (error, status, body)
    }

    #[tokio::test]
    async fn login_listener_refuses_a_wrong_state() {
        let (error, status, body) =
            refused("/?code=c&state=another&iss=http%3A%2F%2F127.0.0.1%3A8080%2Foidc").await;
        assert!(matches!(error, LoginError::StateMismatch), "{error:?}");
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        assert!(body.contains("state"), "{body}");
        let (error, _, _) = refused("/?code=c").await;
        assert!(matches!(error, LoginError::StateMismatch), "{error:?}");
        let (error, _, _) = refused("/?code=c&state=the-state&state=the-state").await;
        assert!(matches!(error, LoginError::BadRedirect(_)), "{error:?}");
    }

    #[tokio::test]
    async fn login_listener_refuses_a_wrong_issuer() {
        let (error, status, body) =
            refused("/?code=c&state=the-state&iss=http%3A%2F%2Fevil.test").await;
        assert!(
            matches!(&error, LoginError::IssuerMismatch { got, .. } if got == "http://evil.test"),
            "{error:?}"
        );
        assert_eq!(status, "HTTP/1.1 400 Bad Request");
        assert!(body.contains("http://evil.test"), "{body}");
    }

    #[tokio::test]
    async fn login_listener_reports_the_servers_error() {
        let (error, _, body) = refused(
            "/?error=access_denied&error_description=no%20%3Cb%3Eaccess%3C%2Fb%3E&state=the-state",
        )
        .await;
        assert!(
            matches!(&error, LoginError::Authorization { error, description }
                if error == "access_denied" && description == "no <b>access</b>"),
            "{error:?}"
        );
        assert!(body.contains("no &lt;b&gt;access&lt;/b&gt;"), "{body}");
    }

    #[tokio::test]
    async fn login_listener_times_out() {
        let (listener, _port) = listen().await;
        let error = listener
            .wait("s", ISSUER, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(error, LoginError::TimedOut(_)), "{error:?}");
    }

    /// A token endpoint that rotates refresh tokens as Deputy's does: `r<n>` is good once and yields `a<n+1>` and
    /// `r<n+1>`; anything else is `invalid_grant`. Returns its URL and the form bodies it received.
    async fn rotating_token_endpoint() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let url = format!("http://{}/oidc/v1/token", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let recorded = seen.clone();
        tokio::spawn(async move {
            let mut current = 1u32;
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                let body = loop {
                    let read = stream.read(&mut buffer).await.unwrap();
                    request.extend_from_slice(&buffer[..read]);
                    let text = String::from_utf8_lossy(&request).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let length: usize = head
                            .lines()
                            .find_map(|line| {
                                let (name, value) = line.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= length {
                            break body.to_owned();
                        }
                    }
                };
                recorded.lock().unwrap().push(body.clone());
                let form: Vec<(String, String)> = serde_urlencoded::from_str(&body).unwrap();
                let presented = form.iter().find(|(key, _)| key == "refresh_token");
                let (status, answer) = match presented {
                    Some((_, token)) if *token == format!("r{current}") => {
                        current += 1;
                        (
                            "200 OK",
                            format!(
                                r#"{{"access_token":"a{current}","token_type":"Bearer","expires_in":3600,"refresh_token":"r{current}","scope":"all-apis offline_access"}}"#
                            ),
                        )
                    }
                    _ => (
                        "400 Bad Request",
                        r#"{"error":"invalid_grant","error_description":"the refresh token is spent"}"#.to_owned(),
                    ),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                stream.write_all(response.as_bytes()).await.unwrap();
                let _ = stream.shutdown().await;
            }
        });
        (url, seen)
    }

    #[tokio::test]
    async fn login_refresh_rotates_once_for_concurrent_callers_and_is_cached() {
        let (token_endpoint, seen) = rotating_token_endpoint().await;
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::new(dir.path().join("token-cache.json"));
        const HOST: &str = "http://deputy.test";
        cache.put(HOST, entry("a1", Some("r1"), 0)).await.unwrap();
        let http = http_client();
        let (first, second) = tokio::join!(
            signed_in_token(&http, &cache, HOST, &token_endpoint),
            signed_in_token(&http, &cache, HOST, &token_endpoint),
        );
        let (first, second) = (first.unwrap(), second.unwrap());
        assert_eq!(first.access_token, "a2");
        assert_eq!(second, first);
        // One refresh for both callers (the second found the first's tokens under the lock), and the rotated
        // refresh token is in the cache.
        assert_eq!(seen.lock().unwrap().len(), 1);
        let body = seen.lock().unwrap()[0].clone();
        assert!(
            body.contains("grant_type=refresh_token")
                && body.contains("refresh_token=r1")
                && body.contains("client_id=databricks-cli"),
            "{body}"
        );
        let cached = cache.get(HOST).unwrap().unwrap();
        assert_eq!(cached.refresh_token.as_deref(), Some("r2"));
        assert!(!cached.expires_within(REFRESH_MARGIN));
        // A fresh token is used as is.
        assert_eq!(
            signed_in_token(&http, &cache, HOST, &token_endpoint)
                .await
                .unwrap()
                .access_token,
            "a2"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);

        // A spent refresh token ends the session with a message that says how to sign in again.
        cache.put(HOST, entry("a1", Some("r1"), 0)).await.unwrap();
        let error = signed_in_token(&http, &cache, HOST, &token_endpoint)
            .await
            .unwrap_err();
        assert!(
            matches!(error, LoginError::SessionExpired { .. }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .contains("deputy login --host http://deputy.test"),
            "{error}"
        );
        // Without a refresh token there is nothing to refresh with; a host never signed in says so.
        cache.put(HOST, entry("a1", None, 0)).await.unwrap();
        let error = signed_in_token(&http, &cache, HOST, &token_endpoint)
            .await
            .unwrap_err();
        assert!(
            matches!(error, LoginError::SessionExpired { .. }),
            "{error:?}"
        );
        let error = signed_in_token(&http, &cache, "http://other.test", &token_endpoint)
            .await
            .unwrap_err();
        assert!(matches!(error, LoginError::NotSignedIn { .. }), "{error:?}");
    }
}
