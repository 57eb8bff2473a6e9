//! Other issuers' signing keys: found through the issuer's OpenID discovery document, fetched over verified TLS (plain
//! HTTP only on loopback), and cached with bounded staleness.

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A key set older than this is fetched again before it is used: a key the issuer withdrew stops being accepted
/// within this bound.
pub const MAX_KEY_SET_AGE: Duration = Duration::from_secs(600);
/// A token naming a key the cached set lacks causes a fetch (the issuer may have rotated), at most this often per
/// issuer, so that tokens with made-up key ids cannot make Deputy hammer the issuer.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the issuer's keys could not be fetched: {0}")]
    Fetch(String),
    #[error("the issuer's discovery document names issuer `{found}`, not `{expected}`")]
    IssuerMismatch { expected: String, found: String },
    #[error("no key of the issuer matches the token's key id and algorithm")]
    UnknownKey,
    #[error("the token names no key id and the issuer has several keys for its algorithm")]
    AmbiguousKey,
}

struct FetchedKeys {
    keys: JwkSet,
    fetched_at: Instant,
}

/// The cache of issuers' key sets, shared by every exchange.
pub struct IssuerKeys {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Arc<FetchedKeys>>>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
}

/// Where a person signs in at an issuer, from its discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInEndpoints {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
}

impl IssuerKeys {
    pub fn new() -> Result<IssuerKeys, deputy_outbound::OutboundError> {
        let http = deputy_outbound::client_builder()?
            // A redirect could lead the fetch somewhere the issuer's URL does not name.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(FETCH_TIMEOUT)
            .build()?;
        Ok(IssuerKeys {
            http,
            cache: Mutex::default(),
        })
    }

    /// The key of `issuer` that verifies a token with header `kid` and `alg`.
    pub async fn key(
        &self,
        issuer: &str,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Jwk, KeyError> {
        if let Some(cached) = self.cached(issuer)
            && cached.fetched_at.elapsed() < MAX_KEY_SET_AGE
        {
            match select(&cached.keys, kid, alg) {
                Err(KeyError::UnknownKey)
                    if cached.fetched_at.elapsed() >= MIN_REFETCH_INTERVAL => {}
                found => return found,
            }
        }
        let fetched = Arc::new(FetchedKeys {
            keys: self.fetch(issuer).await?,
            fetched_at: Instant::now(),
        });
        self.lock_cache().insert(issuer.to_owned(), fetched.clone());
        select(&fetched.keys, kid, alg)
    }

    fn cached(&self, issuer: &str) -> Option<Arc<FetchedKeys>> {
        self.lock_cache().get(issuer).cloned()
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<FetchedKeys>>> {
        // A panic while holding the lock leaves a plain map behind; it is still consistent.
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn fetch(&self, issuer: &str) -> Result<JwkSet, KeyError> {
        let discovery = self.discover(issuer).await?;
        check_fetchable(&discovery.jwks_uri).map_err(KeyError::Fetch)?;
        self.get_json(&discovery.jwks_uri).await
    }

    /// The issuer's authorization and token endpoints, read fresh from its discovery document (sign-ins are rare
    /// enough not to need a cache, and a fresh read follows the provider's changes at once).
    pub async fn sign_in_endpoints(&self, issuer: &str) -> Result<SignInEndpoints, KeyError> {
        let discovery = self.discover(issuer).await?;
        let endpoint = |url: Option<String>, name: &str| {
            let url = url.ok_or_else(|| {
                KeyError::Fetch(format!(
                    "the discovery document of `{issuer}` has no {name}"
                ))
            })?;
            check_fetchable(&url).map_err(KeyError::Fetch)?;
            Ok(url)
        };
        Ok(SignInEndpoints {
            authorization_endpoint: endpoint(
                discovery.authorization_endpoint,
                "authorization_endpoint",
            )?,
            token_endpoint: endpoint(discovery.token_endpoint, "token_endpoint")?,
        })
    }

    async fn discover(&self, issuer: &str) -> Result<Discovery, KeyError> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.get_json(&discovery_url).await?;
        // OpenID Connect Discovery §4.3: the document must name the issuer it was fetched for.
        if discovery.issuer != issuer {
            return Err(KeyError::IssuerMismatch {
                expected: issuer.to_owned(),
                found: discovery.issuer,
            });
        }
        Ok(discovery)
    }

    /// The HTTP client key sets are fetched with: verified TLS, no redirects, a short timeout.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, KeyError> {
        let fail = |error: reqwest::Error| KeyError::Fetch(format!("{url}: {error}"));
        self.http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(fail)?
            .json()
            .await
            .map_err(fail)
    }
}

/// Issuers and key-set URLs are `https://`, except on a loopback host, where plain HTTP cannot be intercepted.
pub fn check_fetchable(url: &str) -> Result<(), String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|error| format!("`{url}` is not a URL: {error}"))?;
    let loopback = parsed.host_str().is_some_and(|host| {
        host.eq_ignore_ascii_case("localhost")
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|address| address.is_loopback())
    });
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(format!(
            "`{url}` must be an https:// URL (plain http:// only on a loopback host)"
        )),
    }
}

/// The one key that verifies a token signed with `alg` under key id `kid`: a key of the algorithm's family, meant
/// for signatures, whose declared algorithm (if any) is `alg`.
fn select(keys: &JwkSet, kid: Option<&str>, alg: Algorithm) -> Result<Jwk, KeyError> {
    let usable: Vec<&Jwk> = keys
        .keys
        .iter()
        .filter(|key| kid.is_none() || key.common.key_id.as_deref() == kid)
        .filter(|key| fits(key, alg))
        .collect();
    match usable.as_slice() {
        [] => Err(KeyError::UnknownKey),
        [key] => Ok((*key).clone()),
        [first, ..] if kid.is_some() => Ok((*first).clone()),
        _ => Err(KeyError::AmbiguousKey),
    }
}

fn fits(key: &Jwk, alg: Algorithm) -> bool {
    use Algorithm::*;
    let for_signatures = !matches!(key.common.public_key_use, Some(PublicKeyUse::Encryption));
    let declared_alg = key
        .common
        .key_algorithm
        .is_none_or(|declared| declared == KeyAlgorithm::from(alg));
    let family = match &key.algorithm {
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::EllipticCurve(_) => matches!(alg, ES256 | ES384),
        AlgorithmParameters::OctetKeyPair(_) => alg == EdDSA,
        // Shared-secret keys never verify another issuer's tokens, nor do kinds this build does not know.
        _ => false,
    };
    for_signatures && declared_alg && family
}
