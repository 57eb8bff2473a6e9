//! OAuth apps: the clients people sign in to. The public client `databricks-cli` (what the Databricks SDKs and CLI
//! use by default) is preregistered by the store's migration; admins register others, in the shape of Databricks'
//! custom app integrations; MCP clients register themselves (RFC 7591), as untrusted apps that every person
//! approves at sign-in.

use crate::{SignIn, SignInError};
use deputy_access::Error;
use deputy_access::clock::now_millis;
use deputy_access::credentials::Caller;
use deputy_core::ScopeSet;
use deputy_store::OAuthApp;
use deputy_tokens::{Secret, SecretHash};
use serde::Deserialize;

/// An app as an admin registers it.
#[derive(Debug, Clone, Default)]
pub struct NewOAuthApp {
    pub name: String,
    pub redirect_uris: Vec<String>,
    /// `None`: every API scope.
    pub scopes: Option<String>,
    pub confidential: bool,
}

/// A registered app, and its client secret when it is confidential (shown once).
#[derive(Debug)]
pub struct RegisteredApp {
    pub app: OAuthApp,
    pub client_secret: Option<Secret>,
}

/// Whether `presented` is one of the app's redirect URIs: compared exactly, except that a registered loopback URI
/// (`http://localhost`, `http://127.0.0.1`, `http://[::1]`) matches the same URI on any port, because native apps
/// listen on whatever port is free (RFC 8252 §7.3). Userinfo and fragments never match.
pub fn redirect_allowed(app: &OAuthApp, presented: &str) -> bool {
    if app
        .redirect_uris
        .iter()
        .any(|registered| registered == presented)
    {
        return true;
    }
    let Ok(presented) = reqwest::Url::parse(presented) else {
        return false;
    };
    if presented.scheme() != "http"
        || !presented.username().is_empty()
        || presented.password().is_some()
        || presented.fragment().is_some()
        || !is_loopback(&presented)
    {
        return false;
    }
    app.redirect_uris.iter().any(|registered| {
        reqwest::Url::parse(registered).is_ok_and(|registered| {
            registered.scheme() == "http"
                && is_loopback(&registered)
                && registered.host_str() == presented.host_str()
                && registered.path() == presented.path()
                && registered.query() == presented.query()
        })
    })
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    }
}

fn check_redirect_uri(uri: &str) -> Result<(), Error> {
    let url = reqwest::Url::parse(uri)
        .map_err(|error| Error::invalid_parameter(format!("`{uri}` is not a URL: {error}")))?;
    let acceptable = match url.scheme() {
        "https" => true,
        "http" => is_loopback(&url),
        // Private-use schemes of native apps (RFC 8252 §7.1) name the app in reverse-domain form.
        scheme => scheme.contains('.'),
    };
    let userinfo = !url.username().is_empty() || url.password().is_some();
    if !acceptable || url.fragment().is_some() || userinfo {
        return Err(Error::invalid_parameter(format!(
            "redirect URL `{uri}` must be https://, http:// on a loopback host, or a private-use scheme, without a \
             fragment or userinfo"
        )));
    }
    Ok(())
}

/// What a client sends to register itself (RFC 7591 §2), as far as Deputy reads it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientMetadata {
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub client_name: Option<String>,
    /// `none` makes a public client; `client_secret_basic` (the default) or `client_secret_post` a confidential one.
    pub token_endpoint_auth_method: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
}

/// The grants a self-registered client may use: the browser's code, and refreshing what it got.
const REGISTRABLE_GRANTS: [&str; 2] = ["authorization_code", "refresh_token"];

/// The most a client's metadata document may weigh.
const MAX_METADATA_DOCUMENT_BYTES: usize = 64 * 1024;

/// An error with the errors that caused it (a TLS failure under a request error, say).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(&format!(": {inner}"));
        cause = inner.source();
    }
    text
}

/// What a client that registers itself may ask for, whichever way it registers (RFC 7591 or a metadata document):
/// redirect URIs on https or loopback http only, and only the browser's grants.
fn check_self_registered(metadata: &ClientMetadata) -> Result<(), SignInError> {
    if metadata.redirect_uris.is_empty() {
        return Err(SignInError::InvalidRedirectUri(
            "at least one redirect URI is required".into(),
        ));
    }
    for uri in &metadata.redirect_uris {
        let web_or_loopback =
            reqwest::Url::parse(uri).is_ok_and(|url| url.scheme() == "https" || is_loopback(&url));
        if !web_or_loopback {
            return Err(SignInError::InvalidRedirectUri(format!(
                "`{uri}` must be an https:// URL or http:// on a loopback host"
            )));
        }
        check_redirect_uri(uri).map_err(|error| SignInError::InvalidRedirectUri(error.message))?;
    }
    let unsupported = |what: &str, values: &Option<Vec<String>>, allowed: &[&str]| {
        let odd: Vec<&String> = values
            .iter()
            .flatten()
            .filter(|value| !allowed.contains(&value.as_str()))
            .collect();
        match odd.is_empty() {
            true => Ok(()),
            false => Err(SignInError::InvalidClientMetadata(format!(
                "unsupported {what}: {odd:?} (supported: {allowed:?})"
            ))),
        }
    };
    unsupported("grant_types", &metadata.grant_types, &REGISTRABLE_GRANTS)?;
    unsupported("response_types", &metadata.response_types, &["code"])
}

/// Whether a client id is the URL of a Client ID Metadata Document: https, a path, nothing the URL parser would
/// rewrite (dot segments), no query, fragment or userinfo.
pub fn is_metadata_document_url(client_id: &str) -> bool {
    reqwest::Url::parse(client_id).is_ok_and(|url| {
        url.scheme() == "https"
            && url.as_str() == client_id
            && url.path() != "/"
            && url.query().is_none()
            && url.fragment().is_none()
            && url.username().is_empty()
            && url.password().is_none()
    })
}

/// A Client ID Metadata Document as Deputy reads it: the registration fields, and the two that decide whether it
/// describes a public client.
#[derive(Debug, Deserialize)]
struct MetadataDocument {
    client_id: String,
    #[serde(flatten)]
    metadata: ClientMetadata,
    client_secret: Option<String>,
}

impl SignIn {
    /// Registers the server's own web console: a trusted public app (people sign in to Deputy itself, so there is
    /// nothing to consent to; PKCE is its proof) whose one redirect URI is the console's callback at this server's
    /// public URL. Called at every start, so a changed public URL replaces the old redirect URI.
    pub async fn ensure_console_app(
        &self,
        client_id: &str,
        redirect_uri: &str,
    ) -> Result<(), SignInError> {
        let store = self.access.store();
        let wanted = OAuthApp {
            client_id: client_id.to_owned(),
            name: "Deputy console".into(),
            redirect_uris: vec![redirect_uri.to_owned()],
            scopes: ScopeSet::all().to_string(),
            secret_hash: None,
            trusted: true,
            created_ms: now_millis(),
        };
        if let Some(existing) = store.oauth_app(client_id).await? {
            let same = OAuthApp {
                created_ms: existing.created_ms,
                ..wanted.clone()
            };
            if existing == same {
                return Ok(());
            }
            store.delete_oauth_app(client_id).await?;
        }
        store.insert_oauth_app(&wanted).await?;
        Ok(())
    }

    /// Registers a client that asked for itself (RFC 7591), with no credential: it is never trusted, so a person
    /// approves every scope it asks for on the consent page, and it may ask for any scope (a step-up asks for more
    /// than the first sign-in did). Redirect URIs are https or loopback http only.
    pub async fn register_client(
        &self,
        metadata: ClientMetadata,
    ) -> Result<RegisteredApp, SignInError> {
        check_self_registered(&metadata)?;
        let confidential = match metadata.token_endpoint_auth_method.as_deref() {
            Some("none") => false,
            None | Some("client_secret_basic" | "client_secret_post") => true,
            Some(other) => {
                return Err(SignInError::InvalidClientMetadata(format!(
                    "token_endpoint_auth_method `{other}` is not supported (none, client_secret_basic, \
                     client_secret_post)"
                )));
            }
        };
        let name = metadata
            .client_name
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| "an unnamed MCP client".into());
        let (client_secret, secret_hash) = match confidential {
            true => {
                let (secret, hash) =
                    deputy_tokens::generate_client_secret().map_err(SignInError::internal)?;
                (Some(secret), Some(hash.to_hex()))
            }
            false => (None, None),
        };
        let app = OAuthApp {
            client_id: uuid::Uuid::new_v4().to_string(),
            // The consent page shows this name; it says who chose it.
            name: format!("{name} (self-registered)"),
            redirect_uris: metadata.redirect_uris,
            scopes: ScopeSet::all().to_string(),
            secret_hash,
            trusted: false,
            created_ms: now_millis(),
        };
        self.access.store().insert_oauth_app(&app).await?;
        Ok(RegisteredApp { app, client_secret })
    }

    /// The app a Client ID Metadata Document describes, read afresh from its URL at every sign-in (the client's
    /// current document is the truth) and kept as an untrusted public app: a person approves every scope it asks
    /// for. A document that changed replaces the stored app, and with it the consents given to the old one.
    pub async fn client_from_metadata_document(&self, url: &str) -> Result<OAuthApp, SignInError> {
        let refused = |why: String| {
            SignInError::InvalidClient(format!("the client metadata document `{url}`: {why}"))
        };
        let mut response = self
            .keys
            .http()
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|error| refused(format!("cannot be fetched: {}", with_causes(&error))))?;
        if !response.status().is_success() {
            return Err(refused(format!(
                "its server answered HTTP {}",
                response.status().as_u16()
            )));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| refused(format!("cannot be read: {error}")))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_METADATA_DOCUMENT_BYTES {
                return Err(refused(format!(
                    "it is over {MAX_METADATA_DOCUMENT_BYTES} bytes"
                )));
            }
        }
        let document: MetadataDocument = serde_json::from_slice(&body)
            .map_err(|error| refused(format!("it is not client metadata: {error}")))?;
        if document.client_id != url {
            return Err(refused(format!(
                "it names another client id, `{}`",
                document.client_id
            )));
        }
        let public = matches!(
            document.metadata.token_endpoint_auth_method.as_deref(),
            None | Some("none")
        );
        if document.client_secret.is_some() || !public {
            return Err(refused(
                "it must describe a public client (`token_endpoint_auth_method` none, no secret)"
                    .into(),
            ));
        }
        check_self_registered(&document.metadata).map_err(|error| refused(error.to_string()))?;
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|parsed| parsed.host_str().map(str::to_owned))
            .unwrap_or_default();
        let name = document
            .metadata
            .client_name
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| "an unnamed client".into());
        let app = OAuthApp {
            client_id: url.to_owned(),
            // The consent page shows this name; the host says who vouches for it.
            name: format!("{name} (from {host})"),
            redirect_uris: document.metadata.redirect_uris,
            scopes: ScopeSet::all().to_string(),
            secret_hash: None,
            trusted: false,
            created_ms: now_millis(),
        };
        let store = self.access.store();
        match store.oauth_app(url).await? {
            Some(stored)
                if stored.name == app.name && stored.redirect_uris == app.redirect_uris =>
            {
                Ok(stored)
            }
            stored => {
                if stored.is_some() {
                    store.delete_oauth_app(url).await?;
                }
                store.insert_oauth_app(&app).await?;
                Ok(app)
            }
        }
    }

    pub async fn register_app(
        &self,
        caller: &Caller,
        new: NewOAuthApp,
    ) -> Result<RegisteredApp, Error> {
        caller.require_admin()?;
        if new.name.trim().is_empty() {
            return Err(Error::invalid_parameter("`name` is required"));
        }
        if new.redirect_uris.is_empty() {
            return Err(Error::invalid_parameter(
                "at least one redirect URL is required",
            ));
        }
        for uri in &new.redirect_uris {
            check_redirect_uri(uri)?;
        }
        let scopes = match &new.scopes {
            None => ScopeSet::all(),
            Some(text) => ScopeSet::parse(text)
                .map_err(|error| Error::invalid_parameter(format!("invalid scopes: {error}")))?,
        };
        let (client_secret, secret_hash) = match new.confidential {
            true => {
                let (secret, hash) =
                    deputy_tokens::generate_client_secret().map_err(Error::internal)?;
                (Some(secret), Some(hash.to_hex()))
            }
            false => (None, None),
        };
        let app = OAuthApp {
            client_id: uuid::Uuid::new_v4().to_string(),
            name: new.name,
            redirect_uris: new.redirect_uris,
            scopes: scopes.to_string(),
            secret_hash,
            trusted: false,
            created_ms: now_millis(),
        };
        self.access.store().insert_oauth_app(&app).await?;
        Ok(RegisteredApp { app, client_secret })
    }

    pub async fn apps(&self, caller: &Caller) -> Result<Vec<OAuthApp>, Error> {
        caller.require_admin()?;
        Ok(self.access.store().oauth_apps().await?)
    }

    pub async fn app(&self, caller: &Caller, client_id: &str) -> Result<OAuthApp, Error> {
        caller.require_admin()?;
        self.access
            .store()
            .oauth_app(client_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("OAuth app `{client_id}` does not exist")))
    }

    pub async fn delete_app(&self, caller: &Caller, client_id: &str) -> Result<(), Error> {
        caller.require_admin()?;
        match self.access.store().delete_oauth_app(client_id).await? {
            true => Ok(()),
            false => Err(Error::not_found(format!(
                "OAuth app `{client_id}` does not exist"
            ))),
        }
    }

    /// The app making a token request: it must exist, and a confidential app must prove its secret. A public app
    /// has no secret; PKCE proves it is the app that started the sign-in.
    pub(crate) async fn authenticate_app(
        &self,
        client_id: Option<&str>,
        secret: Option<&str>,
    ) -> Result<OAuthApp, SignInError> {
        let refused = || SignInError::InvalidClient("client authentication failed".into());
        let client_id = client_id
            .ok_or_else(|| SignInError::InvalidClient("`client_id` is required".into()))?;
        let app = self
            .access
            .store()
            .oauth_app(client_id)
            .await?
            .ok_or_else(refused)?;
        if let Some(stored) = &app.secret_hash {
            let hash = SecretHash::from_hex(stored).map_err(SignInError::internal)?;
            if !secret.is_some_and(|secret| hash.matches(secret)) {
                return Err(refused());
            }
        }
        Ok(app)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(uris: &[&str]) -> OAuthApp {
        OAuthApp {
            client_id: "c".into(),
            name: "c".into(),
            redirect_uris: uris.iter().map(|uri| uri.to_string()).collect(),
            scopes: "all-apis".into(),
            secret_hash: None,
            trusted: false,
            created_ms: 0,
        }
    }

    #[test]
    fn loopback_redirects_match_on_any_port() {
        let cli = app(&["http://localhost:8020", "http://127.0.0.1/"]);
        assert!(redirect_allowed(&cli, "http://localhost:8020"));
        assert!(redirect_allowed(&cli, "http://localhost:53117/"));
        assert!(redirect_allowed(&cli, "http://127.0.0.1:40000/"));
        // Another path, host, scheme, userinfo or a fragment is not the registered URI.
        assert!(!redirect_allowed(&cli, "http://localhost:8020/other"));
        assert!(!redirect_allowed(&cli, "http://127.0.0.2:8020/"));
        assert!(!redirect_allowed(&cli, "https://localhost:8020/"));
        assert!(!redirect_allowed(&cli, "http://evil@localhost:8020/"));
        assert!(!redirect_allowed(&cli, "http://localhost:8020/#fragment"));
        assert!(!redirect_allowed(
            &cli,
            "http://localhost.evil.example:8020/"
        ));
    }

    #[test]
    fn other_redirects_match_exactly() {
        let web = app(&["https://app.example.com/callback"]);
        assert!(redirect_allowed(&web, "https://app.example.com/callback"));
        assert!(!redirect_allowed(
            &web,
            "https://app.example.com/callback/extra"
        ));
        assert!(!redirect_allowed(
            &web,
            "https://app.example.com:8443/callback"
        ));
        assert!(!redirect_allowed(
            &web,
            "https://app.example.com/callback?next=https://evil.example"
        ));
        assert!(!redirect_allowed(
            &web,
            "https://app.example.com.evil.example/callback"
        ));
    }

    #[test]
    fn only_plain_https_urls_with_a_path_are_metadata_document_client_ids() {
        assert!(is_metadata_document_url(
            "https://app.example/oauth/client.json"
        ));
        for id in [
            "databricks-cli",
            "https://app.example",
            "https://app.example/",
            "http://app.example/client.json",
            "https://app.example/client.json?v=1",
            "https://app.example/client.json#x",
            "https://user@app.example/client.json",
            "https://app.example/a/../client.json",
            "https://APP.example/client.json",
        ] {
            assert!(!is_metadata_document_url(id), "{id}");
        }
    }

    #[test]
    fn registered_redirect_urls_must_be_safe() {
        assert!(check_redirect_uri("https://app.example.com/cb").is_ok());
        assert!(check_redirect_uri("http://127.0.0.1/cb").is_ok());
        assert!(check_redirect_uri("com.example.app:/cb").is_ok());
        assert!(check_redirect_uri("http://app.example.com/cb").is_err());
        assert!(check_redirect_uri("https://app.example.com/cb#frag").is_err());
        assert!(check_redirect_uri("javascript:alert(1)").is_err());
    }
}
