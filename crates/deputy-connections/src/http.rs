//! HTTP connections (Unity Catalog connections of type `HTTP`) and the outbound calls that
//! `POST /api/2.0/external-function` makes through them.
//!
//! A connection fixes where a call may go: `host` (`http://name` or a bare name), `port` and `base_path`; the caller
//! adds only a path below `base_path`, query parameters, headers and a JSON body. [`HttpConnection::url`] builds the
//! URL from parts it validated itself, then parses the result and checks scheme, host, port, userinfo and path prefix
//! again, so that no spelling of `path` (`//host`, an absolute URL, `..`, backslashes, `@`, control characters or
//! their percent-encoded forms) leaves the connection's origin or its base path.
//!
//! The credential is either a static `bearer_token` or OAuth client credentials (`client_id`, `client_secret`,
//! `token_endpoint`, optional `oauth_scope`), whose access token is fetched and cached until a minute before it
//! expires. `https://` upstreams and token endpoints are verified with the system's roots and the operator's CA bundle
//! (`deputy-outbound`).
//!
//! **Invariant:** a connection's credential only ever goes to the connection's own origin (and the client secret to
//! its token endpoint); redirects are never followed, no proxy is used, and no credential is logged, rendered or shown
//! by `Debug`.

use deputy_models::SecretString;
use reqwest::Url;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest an upstream call may take, from connecting to the last byte of the body.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upstream bodies above this size are refused (502), so one call cannot exhaust the server's memory.
pub const MAX_UPSTREAM_RESPONSE_BYTES: usize = 10 * 1024 * 1024;
/// A token endpoint's answer is a small JSON object.
const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;
/// A cached OAuth token is replaced this long before it expires, so that it never expires in flight.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Response headers passed back to the caller besides the status and body: the SDK copies `mcp-session-id`.
const FORWARDED_RESPONSE_HEADERS: &[&str] = &["content-type", "mcp-session-id"];
/// Request headers a caller may not set: the credential and the routing are the connection's, and the framing is
/// the HTTP client's.
const RESERVED_REQUEST_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
];

/// Why a connection or a call through it is refused before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The connection's options are unusable; its owner must change them.
    #[error("{0}")]
    Options(String),
    /// The caller's request is refused.
    #[error("{0}")]
    Request(String),
}

fn options_error(message: impl Into<String>) -> ConnectionError {
    ConnectionError::Options(message.into())
}

fn request_error(message: impl Into<String>) -> ConnectionError {
    ConnectionError::Request(message.into())
}

/// An HTTP connection's options, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConnection {
    /// `https://` (else `http://`).
    tls: bool,
    /// A lowercase DNS name, a dotted IPv4 address, or a bracketed IPv6 address.
    host: String,
    host_is_name: bool,
    port: u16,
    /// Empty, or `/a/b` without a trailing slash.
    base_path: String,
    pub credential: UpstreamCredential,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamCredential {
    None,
    Bearer(SecretString),
    OAuth(OAuthClient),
}

/// OAuth 2.0 client credentials (RFC 6749 §4.4) for a token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthClient {
    client_id: String,
    client_secret: SecretString,
    token_endpoint: Url,
    scope: Option<String>,
}

impl HttpConnection {
    /// Reads an `HTTP` connection's options: `host` (required), `port` (default 80, or the port in `host`),
    /// `base_path`, and at most one credential: `bearer_token`, or `client_id` + `client_secret` +
    /// `token_endpoint` (+ `oauth_scope`).
    pub fn from_options(
        options: &BTreeMap<String, String>,
    ) -> Result<HttpConnection, ConnectionError> {
        let option = |key: &str| {
            options
                .get(key)
                .map(|value| value.trim())
                .filter(|value| !value.is_empty())
        };
        let host_option = option("host")
            .ok_or_else(|| options_error("an HTTP connection needs the option `host`"))?;
        let (tls, host, host_is_name, host_port) = parse_origin(host_option)?;
        let port = match (option("port"), host_port) {
            (Some(text), in_host) => {
                let port = text
                    .parse::<u16>()
                    .ok()
                    .filter(|port| *port != 0)
                    .ok_or_else(|| {
                        options_error(format!("option `port` must be a port number, not `{text}`"))
                    })?;
                if in_host.is_some_and(|in_host| in_host != port) {
                    return Err(options_error(
                        "options `host` and `port` name different ports",
                    ));
                }
                port
            }
            (None, in_host) => in_host.unwrap_or(if tls { 443 } else { 80 }),
        };
        let base_path = match option("base_path").map(|path| path.trim_matches('/')) {
            None | Some("") => String::new(),
            Some(path) => {
                checked_path(path)
                    .map_err(|error| options_error(format!("option `base_path`: {error}")))?;
                format!("/{path}")
            }
        };
        let oauth_keys = ["client_id", "client_secret", "token_endpoint"];
        let given: Vec<&str> = oauth_keys
            .into_iter()
            .filter(|key| option(key).is_some())
            .collect();
        let credential = match (option("bearer_token"), given.len()) {
            (Some(_), 1..) => {
                return Err(options_error(
                    "give either `bearer_token` or OAuth client credentials, not both",
                ));
            }
            (Some(token), 0) => UpstreamCredential::Bearer(SecretString::new(token)),
            (None, 0) => UpstreamCredential::None,
            (None, 3) => UpstreamCredential::OAuth(OAuthClient {
                client_id: option("client_id").unwrap_or_default().to_owned(),
                client_secret: SecretString::new(option("client_secret").unwrap_or_default()),
                token_endpoint: token_endpoint(option("token_endpoint").unwrap_or_default())?,
                scope: option("oauth_scope").map(str::to_owned),
            }),
            (None, _) => {
                let missing: Vec<&str> = oauth_keys
                    .into_iter()
                    .filter(|key| !given.contains(key))
                    .collect();
                return Err(options_error(format!(
                    "OAuth client credentials also need {}",
                    missing
                        .iter()
                        .map(|key| format!("`{key}`"))
                        .collect::<Vec<_>>()
                        .join(" and ")
                )));
            }
        };
        Ok(HttpConnection {
            tls,
            host,
            host_is_name,
            port,
            base_path,
            credential,
        })
    }

    /// The URL of a call: the connection's origin (with `sub_domain.` before the host), its base path, the caller's
    /// relative `path`, and `params` as the query string.
    pub fn url(
        &self,
        sub_domain: Option<&str>,
        path: &str,
        params: &[(String, String)],
    ) -> Result<Url, ConnectionError> {
        let host = match sub_domain.filter(|label| !label.is_empty()) {
            None => self.host.clone(),
            Some(label) => {
                if !self.host_is_name {
                    return Err(request_error(
                        "`sub_domain` needs a connection whose host is a name, not an IP address",
                    ));
                }
                if !is_dns_label(label) {
                    return Err(request_error(format!(
                        "`sub_domain` must be a single DNS label (letters, digits, inner hyphens), not `{}`",
                        label.escape_debug()
                    )));
                }
                format!("{}.{}", label.to_ascii_lowercase(), self.host)
            }
        };
        let relative = relative_path(path)?;
        let scheme = if self.tls { "https" } else { "http" };
        let text = format!(
            "{scheme}://{host}:{}{}/{relative}",
            self.port, self.base_path
        );
        let mut url = Url::parse(&text)
            .map_err(|error| request_error(format!("`path` does not make a URL: {error}")))?;
        // The URL parser has the last word on what the URL means; check that its reading is the one intended.
        let prefix = format!("{}/", self.base_path);
        let same_origin = url.scheme() == scheme
            && url.host_str() == Some(host.as_str())
            && url.port_or_known_default() == Some(self.port)
            && url.username().is_empty()
            && url.password().is_none();
        if !same_origin
            || !url.path().starts_with(&prefix)
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(request_error(
                "`path` must stay below the connection's base path",
            ));
        }
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        Ok(url)
    }

    /// The connection's origin and base path exactly (`/` when there is none): where an MCP server behind it
    /// answers.
    pub fn base_url(&self) -> Result<Url, ConnectionError> {
        let scheme = if self.tls { "https" } else { "http" };
        let path = if self.base_path.is_empty() {
            "/"
        } else {
            &self.base_path
        };
        Url::parse(&format!("{scheme}://{}:{}{path}", self.host, self.port))
            .map_err(|error| options_error(format!("the connection makes no URL: {error}")))
    }

    /// `METHOD origin/base_path/...` without the query string (which may carry the caller's secrets), for the audit.
    pub fn describe(url: &Url, method: &reqwest::Method) -> String {
        format!(
            "{method} {}{}",
            url.origin().ascii_serialization(),
            url.path()
        )
    }
}

/// `http(s)://host[:port]`, or a bare `host[:port]`, as the connection's `host` option gives it: whether it is
/// `https`, the host, whether the host is a name (not an address), and the port if given.
fn parse_origin(text: &str) -> Result<(bool, String, bool, Option<u16>), ConnectionError> {
    let lower = text.to_ascii_lowercase();
    let (tls, rest) = if let Some(rest) = lower.strip_prefix("http://") {
        (false, rest)
    } else if let Some(rest) = lower.strip_prefix("https://") {
        (true, rest)
    } else if lower.contains("://") {
        return Err(options_error(format!(
            "option `host` must be an `http://` or `https://` URL, not `{text}`"
        )));
    } else {
        (false, lower.as_str())
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty()
        || rest.contains(['/', '@', '?', '#', '\\', '%'])
        || rest.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(options_error(format!(
            "option `host` must be a host name with an optional port (paths go in `base_path`), not `{}`",
            text.escape_debug()
        )));
    }
    let (host, port) = match rest.strip_prefix('[') {
        Some(bracketed) => {
            let (address, after) = bracketed
                .split_once(']')
                .ok_or_else(|| options_error("option `host`: unterminated IPv6 address"))?;
            address.parse::<Ipv6Addr>().map_err(|_| {
                options_error(format!("option `host`: `{address}` is not an IPv6 address"))
            })?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').unwrap_or("x")),
            };
            (format!("[{address}]"), port)
        }
        None => match rest.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (rest.to_owned(), None),
        },
    };
    let port = port
        .map(|port| {
            port.parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| {
                    options_error(format!("option `host`: `{port}` is not a port number"))
                })
        })
        .transpose()?;
    if host.starts_with('[') || host.parse::<Ipv4Addr>().is_ok() {
        return Ok((tls, host, false, port));
    }
    let labels: Vec<&str> = host.split('.').collect();
    // A name whose last label is numeric is read as an IPv4 address by URL parsers (`127.1`): refuse the ambiguity.
    let numeric_tail = labels
        .last()
        .is_some_and(|label| label.chars().all(|c| c.is_ascii_digit()));
    if host.len() > 253 || numeric_tail || !labels.iter().all(|label| is_dns_label(label)) {
        return Err(options_error(format!(
            "option `host`: `{host}` is not a host name or IP address"
        )));
    }
    Ok((tls, host, true, port))
}

/// A DNS label as RFC 1123 allows it: 1 to 63 letters, digits and inner hyphens.
fn is_dns_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn token_endpoint(text: &str) -> Result<Url, ConnectionError> {
    let url = Url::parse(text)
        .map_err(|_| options_error(format!("option `token_endpoint` is not a URL: `{text}`")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(options_error(
            "option `token_endpoint` must be an `http://` or `https://` URL",
        ));
    }
    if url.host_str().is_none()
        || !url.username().is_empty()
        || url.password().is_some()
        || url.fragment().is_some()
    {
        return Err(options_error(
            "option `token_endpoint` must be a URL without user information or fragment",
        ));
    }
    Ok(url)
}

/// The caller's `path` below the base path, without its optional leading `/`.
///
/// Refused: `//` at the start (a network-path reference names another host), absolute URLs, `?`/`#` (query
/// parameters go in `params`), backslashes, `@`, whitespace, control and non-ASCII characters, empty inner segments,
/// `.` and `..` segments, and percent-escapes that decode to any of those or to `/` or `%`.
fn relative_path(path: &str) -> Result<&str, ConnectionError> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    if rest.starts_with('/') {
        return Err(request_error(
            "`path` must be relative to the connection's base path: `//` would name another host",
        ));
    }
    checked_path(rest).map_err(|error| request_error(format!("`path`: {error}")))?;
    Ok(rest)
}

/// Checks a path written without its leading `/`; the message says what is wrong.
fn checked_path(path: &str) -> Result<(), String> {
    if let Some(bad) = path.chars().find(|c| !is_path_character(*c)) {
        return Err(match bad {
            '?' => "query parameters go in `params`, not in the path".into(),
            '#' => "a fragment is never sent to the server".into(),
            '\\' => "backslashes are not allowed".into(),
            '@' => "`@` is not allowed (it could be read as user information)".into(),
            c if !c.is_ascii() => "non-ASCII characters must be percent-encoded".into(),
            c => format!("the character `{}` is not allowed", c.escape_debug()),
        });
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.first().is_some_and(|first| first.contains(':')) {
        return Err("an absolute URL is not a path (its first segment has a scheme)".into());
    }
    let last = segments.len().saturating_sub(1);
    for (position, segment) in segments.iter().enumerate() {
        if segment.is_empty() && position != last {
            return Err("empty path segments (`//`) are not allowed".into());
        }
        let decoded = percent_decoded(segment)?;
        if decoded == b"." || decoded == b".." {
            return Err("`.` and `..` segments are not allowed".into());
        }
        if decoded
            .iter()
            .any(|byte| matches!(byte, b'/' | b'\\' | b'%' | b'@') || byte.is_ascii_control())
        {
            return Err(
                "a percent-escape encodes a separator, `%`, `@` or a control character".into(),
            );
        }
    }
    Ok(())
}

/// RFC 3986 `pchar` (unreserved, sub-delimiters, `:`, percent-escapes) plus `/`; `@` is deliberately left out.
fn is_path_character(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:%/".contains(c)
}

fn percent_decoded(segment: &str) -> Result<Vec<u8>, String> {
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while let Some(&byte) = bytes.get(index) {
        if byte == b'%' {
            let escape = bytes
                .get(index + 1..index + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| "a `%` must start a two-digit hexadecimal escape".to_owned())?;
            decoded.push(escape);
            index += 3;
        } else {
            decoded.push(byte);
            index += 1;
        }
    }
    Ok(decoded)
}

/// The caller's `headers`, refusing the ones that belong to the connection or to the HTTP client.
pub fn request_headers(headers: &BTreeMap<String, String>) -> Result<HeaderMap, ConnectionError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if RESERVED_REQUEST_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
            return Err(request_error(format!(
                "the header `{name}` is set by the connection and cannot be given in `headers`"
            )));
        }
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            request_error(format!(
                "`{}` is not a valid header name",
                name.escape_debug()
            ))
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            request_error(format!(
                "the value of header `{name}` is not a valid header value"
            ))
        })?;
        map.append(name, value);
    }
    Ok(map)
}

/// One call to make: everything is validated, only the credential is still to be added.
#[derive(Debug)]
pub struct UpstreamRequest {
    pub method: reqwest::Method,
    pub url: Url,
    pub headers: HeaderMap,
    /// A JSON body, sent with `Content-Type: application/json` unless the caller set another.
    pub json: Option<String>,
}

/// What the upstream answered, within the limits.
#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: reqwest::StatusCode,
    /// The response headers the caller gets back (see `FORWARDED_RESPONSE_HEADERS`).
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Why no upstream answer can be given: the client sees 502 with this message, which never contains a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamError(pub String);

/// The outbound HTTP client and the cache of OAuth tokens, shared by every call.
pub struct Upstreams {
    client: reqwest::Client,
    /// By connection securable id; an entry counts only for the same client credentials, so changing a
    /// connection's options never reuses a token fetched with the old ones.
    tokens: Mutex<HashMap<i64, CachedToken>>,
}

struct CachedToken {
    client: OAuthClient,
    token: SecretString,
    refresh_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

impl Upstreams {
    pub fn new() -> Result<Upstreams, deputy_outbound::OutboundError> {
        let client = deputy_outbound::client_builder()?
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(UPSTREAM_TIMEOUT)
            .build()?;
        Ok(Upstreams {
            client,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `request` with the connection's credential and reads the answer, whatever its status. With OAuth, an
    /// upstream 401 drops the cached token and the call is tried once more with a fresh one.
    pub async fn call(
        &self,
        connection_id: i64,
        connection: &HttpConnection,
        request: &UpstreamRequest,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let response = self.send(connection_id, connection, request, false).await?;
        if response.status == reqwest::StatusCode::UNAUTHORIZED
            && matches!(connection.credential, UpstreamCredential::OAuth(_))
        {
            return self.send(connection_id, connection, request, true).await;
        }
        Ok(response)
    }

    async fn send(
        &self,
        connection_id: i64,
        connection: &HttpConnection,
        request: &UpstreamRequest,
        fresh_token: bool,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let mut builder = self
            .client
            .request(request.method.clone(), request.url.clone())
            .headers(request.headers.clone());
        builder = match &connection.credential {
            UpstreamCredential::None => builder,
            UpstreamCredential::Bearer(token) => builder.bearer_auth(token.expose()),
            UpstreamCredential::OAuth(client) => {
                let token = self.oauth_token(connection_id, client, fresh_token).await?;
                builder.bearer_auth(token.expose())
            }
        };
        if let Some(json) = &request.json {
            if !request.headers.contains_key(CONTENT_TYPE) {
                builder = builder.header(CONTENT_TYPE, "application/json");
            }
            builder = builder.body(json.clone());
        }
        let response = builder
            .send()
            .await
            .map_err(|error| transport_failure("the upstream", &error))?;
        let status = response.status();
        let mut headers = HeaderMap::new();
        for name in FORWARDED_RESPONSE_HEADERS {
            if let Some(value) = response.headers().get(*name) {
                headers.insert(*name, value.clone());
            }
        }
        let body = read_limited(response, MAX_UPSTREAM_RESPONSE_BYTES, "the upstream").await?;
        Ok(UpstreamResponse {
            status,
            headers,
            body,
        })
    }

    /// A cached token for these client credentials, or a new one from the token endpoint.
    async fn oauth_token(
        &self,
        connection_id: i64,
        client: &OAuthClient,
        fresh: bool,
    ) -> Result<SecretString, UpstreamError> {
        if !fresh {
            let tokens = self
                .tokens
                .lock()
                .map_err(|_| UpstreamError("token cache unavailable".into()))?;
            if let Some(cached) = tokens.get(&connection_id)
                && cached.client == *client
                && Instant::now() < cached.refresh_at
            {
                return Ok(cached.token.clone());
            }
        }
        let mut form = vec![("grant_type", "client_credentials")];
        if let Some(scope) = &client.scope {
            form.push(("scope", scope.as_str()));
        }
        let response = self
            .client
            .post(client.token_endpoint.clone())
            .basic_auth(&client.client_id, Some(client.client_secret.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|error| transport_failure("the token endpoint", &error))?;
        let status = response.status();
        if !status.is_success() {
            // The body is not repeated: a token endpoint's error may echo the credentials it refused.
            return Err(UpstreamError(format!(
                "the connection's token endpoint refused its client credentials (HTTP {})",
                status.as_u16()
            )));
        }
        let body = read_limited(response, MAX_TOKEN_RESPONSE_BYTES, "the token endpoint").await?;
        let answer: TokenResponse = serde_json::from_slice(&body)
            .ok()
            .filter(|answer: &TokenResponse| !answer.access_token.is_empty())
            .ok_or_else(|| {
                UpstreamError(
                    "the connection's token endpoint did not answer with an access token".into(),
                )
            })?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(3600).min(24 * 3600));
        let token = SecretString::new(answer.access_token);
        let cached = CachedToken {
            client: client.clone(),
            token: token.clone(),
            refresh_at: Instant::now() + lifetime.saturating_sub(TOKEN_REFRESH_MARGIN),
        };
        self.tokens
            .lock()
            .map_err(|_| UpstreamError("token cache unavailable".into()))?
            .insert(connection_id, cached);
        Ok(token)
    }
}

/// A transport failure, described without the URL (its query string is the caller's and may hold secrets).
fn transport_failure(what: &str, error: &reqwest::Error) -> UpstreamError {
    let how = if error.is_timeout() {
        format!("did not answer within {} s", UPSTREAM_TIMEOUT.as_secs())
    } else if error.is_connect() {
        "could not be reached".to_owned()
    } else {
        "failed to answer".to_owned()
    };
    UpstreamError(format!("{what} {how}"))
}

/// The body, refused once it grows past `limit` bytes.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>, UpstreamError> {
    let too_large = || UpstreamError(format!("{what} answered with more than {limit} bytes"));
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| transport_failure(what, &error))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::AUTHORIZATION;

    fn connection(options: &[(&str, &str)]) -> Result<HttpConnection, ConnectionError> {
        let options = options
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        HttpConnection::from_options(&options)
    }

    fn api() -> HttpConnection {
        connection(&[
            ("host", "http://api.example.com"),
            ("port", "8080"),
            ("base_path", "/v1/"),
            ("bearer_token", "tok-3141"),
        ])
        .unwrap()
    }

    #[test]
    fn options_are_read_and_checked() {
        let c = api();
        assert_eq!(
            (c.host.as_str(), c.port, c.base_path.as_str()),
            ("api.example.com", 8080, "/v1")
        );
        assert!(matches!(c.credential, UpstreamCredential::Bearer(_)));
        let bare = connection(&[("host", "127.0.0.1:9000")]).unwrap();
        assert_eq!(
            (bare.port, bare.base_path.as_str(), bare.credential),
            (9000, "", UpstreamCredential::None)
        );
        let oauth = connection(&[
            ("host", "api.example.com"),
            ("client_id", "id"),
            ("client_secret", "s"),
            ("token_endpoint", "http://idp.example.com/token"),
        ])
        .unwrap();
        assert!(matches!(oauth.credential, UpstreamCredential::OAuth(_)));
        assert_eq!(oauth.port, 80);
        for (options, phrase) in [
            (vec![], "needs the option `host`"),
            (
                vec![("host", "ftp://api.example.com")],
                "must be an `http://` or `https://` URL",
            ),
            (
                vec![("host", "http://api.example.com/v1")],
                "paths go in `base_path`",
            ),
            (
                vec![("host", "http://user@api.example.com")],
                "paths go in `base_path`",
            ),
            (
                vec![("host", "api.example.com"), ("port", "0")],
                "port number",
            ),
            (
                vec![("host", "api.example.com:80"), ("port", "81")],
                "different ports",
            ),
            (vec![("host", "127.1")], "not a host name"),
            (vec![("host", "-bad.example.com")], "not a host name"),
            (
                vec![("host", "a.example.com"), ("base_path", "/v1/../admin")],
                "`..` segments",
            ),
            (
                vec![
                    ("host", "a.example.com"),
                    ("bearer_token", "t"),
                    ("client_id", "i"),
                ],
                "not both",
            ),
            (
                vec![("host", "a.example.com"), ("client_id", "i")],
                "`client_secret` and `token_endpoint`",
            ),
        ] {
            let error = connection(&options).unwrap_err();
            assert!(matches!(error, ConnectionError::Options(_)), "{options:?}");
            assert!(error.to_string().contains(phrase), "{options:?}: {error}");
        }
    }

    #[test]
    fn the_url_is_the_connections_origin_and_base_path_plus_the_relative_path() {
        let c = api();
        let params = vec![("q".to_owned(), "a b&c".to_owned())];
        for (path, expected) in [
            ("/users/1", "http://api.example.com:8080/v1/users/1"),
            ("users/1", "http://api.example.com:8080/v1/users/1"),
            ("", "http://api.example.com:8080/v1/"),
            (
                "/x/a:b/c%20d/",
                "http://api.example.com:8080/v1/x/a:b/c%20d/",
            ),
        ] {
            assert_eq!(c.url(None, path, &[]).unwrap().as_str(), expected, "{path}");
        }
        assert_eq!(
            c.url(Some("EU"), "/x", &params).unwrap().as_str(),
            "http://eu.api.example.com:8080/v1/x?q=a+b%26c"
        );
    }

    #[test]
    fn no_path_leaves_the_origin_or_the_base_path() {
        let c = api();
        for path in [
            "//evil.example/x",
            "///evil.example/x",
            "http://evil.example/x",
            "HTTP://evil.example/x",
            "evil.example:80/x",
            "/../admin",
            "../admin",
            "a/../../admin",
            "a/./b",
            "%2e%2e/admin",
            "%2E%2E/admin",
            ".%2e/admin",
            "a%2f..%2f..%2fadmin",
            "a%5c..%5cadmin",
            "\\\\evil.example/x",
            "/\\evil.example/x",
            "@evil.example/x",
            "a@evil.example",
            "%40evil.example",
            "a%252e%252e/x",
            "a\r\nHost: evil.example",
            "a%0d%0aHost:%20evil",
            "a%00b",
            "a b",
            "a\tb",
            "a//b",
            "a?x=1",
            "a#frag",
            "caf\u{e9}",
            "%zz",
            "a%2",
        ] {
            let error = c.url(None, path, &[]).unwrap_err();
            assert!(
                matches!(error, ConnectionError::Request(_)),
                "{path:?} -> {error:?}"
            );
        }
        for label in [
            "evil.example",
            "a/b",
            "a@b",
            "-a",
            "a-",
            "",
            "x".repeat(64).as_str(),
            "a:1",
            "a%2eb",
        ] {
            if label.is_empty() {
                // An empty sub_domain is no sub_domain.
                assert!(c.url(Some(label), "/x", &[]).is_ok());
                continue;
            }
            assert!(c.url(Some(label), "/x", &[]).is_err(), "{label:?}");
        }
        let by_address = connection(&[("host", "127.0.0.1")]).unwrap();
        assert!(by_address.url(Some("a"), "/x", &[]).is_err());
    }

    #[test]
    fn https_connections_are_called_over_https_on_their_own_origin() {
        let secure = connection(&[("host", "https://api.example.com")]).unwrap();
        assert_eq!(secure.port, 443);
        let url = secure.url(None, "/x", &[]).unwrap();
        assert_eq!(url.as_str(), "https://api.example.com/x");
        assert!(secure.url(None, "//evil.example.com/x", &[]).is_err());
        let plain = connection(&[("host", "http://api.example.com")]).unwrap();
        assert_eq!(plain.url(None, "/x", &[]).unwrap().scheme(), "http");
    }

    #[test]
    fn reserved_headers_cannot_be_set_by_the_caller() {
        let headers = |pairs: &[(&str, &str)]| {
            request_headers(
                &pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        let ok = headers(&[("X-Trace", "1"), ("Accept", "text/plain")]).unwrap();
        assert_eq!(ok.len(), 2);
        assert!(!ok.contains_key(AUTHORIZATION));
        for name in [
            "Authorization",
            "authorization",
            "HOST",
            "Proxy-Authorization",
            "Proxy-Foo",
            "Content-Length",
            "Transfer-Encoding",
        ] {
            assert!(headers(&[(name, "x")]).is_err(), "{name}");
        }
        assert!(headers(&[("X-A", "a\r\nAuthorization: b")]).is_err());
        assert!(headers(&[("Bad Name", "x")]).is_err());
    }

    #[test]
    fn debug_never_shows_a_credential() {
        let c = connection(&[
            ("host", "api.example.com"),
            ("client_id", "id"),
            ("client_secret", "very-secret"),
            ("token_endpoint", "http://idp.example.com/token"),
        ])
        .unwrap();
        assert!(!format!("{c:?}").contains("very-secret"));
        assert!(!format!("{:?}", api()).contains("tok-3141"));
    }
}
