//! Browser sessions. A person signs in to the console as to any app: an authorization code with PKCE from Deputy's
//! own `/oidc/v1/authorize`, redeemed for an access token and a rotating refresh token. The tokens stay on the
//! server; the browser holds only a random session id in an `HttpOnly`, `SameSite=Lax` cookie, and each session has
//! its own CSRF token that every form carries.
//!
//! Sessions live in this process's memory: a restart signs everyone out (their next page goes through sign-in
//! again, which the identity provider's own session usually makes one redirect).

use crate::api::{Api, ApiFailure, post_form};
use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The console's OAuth client id: a trusted public app whose only redirect URI is the console's callback.
pub const CONSOLE_CLIENT_ID: &str = "deputy-console";
pub const CALLBACK_PATH: &str = "/console/callback";
/// A session unused for this long is forgotten.
const IDLE_TIMEOUT: Duration = Duration::from_secs(8 * 3600);
/// A sign-in must come back from the identity provider within this time.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(600);
/// Refresh the access token when it has less than this left, so a page's calls never meet an expired one.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// At most this many sign-ins may be pending at once; beyond it the oldest are dropped (memory stays bounded
/// whatever unauthenticated visitors do).
const MAX_PENDING_LOGINS: usize = 10_000;

/// The cookie names, which depend on whether the console is served over https.
#[derive(Debug, Clone)]
pub struct Cookies {
    pub session: &'static str,
    pub login: &'static str,
    secure: bool,
}

impl Cookies {
    pub fn for_public_url(public_url: &str) -> Cookies {
        // Over https the cookies are `Secure` and `__Host-` (no Domain, path `/`, never set by a sibling host).
        match public_url.starts_with("https://") {
            true => Cookies {
                session: "__Host-deputy_console",
                login: "__Host-deputy_console_login",
                secure: true,
            },
            false => Cookies {
                session: "deputy_console",
                login: "deputy_console_login",
                secure: false,
            },
        }
    }

    pub fn set(&self, name: &str, value: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}")
    }

    pub fn clear(&self, name: &str) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!("{name}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{secure}")
    }
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// A random value of 32 bytes, base64url.
pub fn random_token() -> Result<String, ApiFailure> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| ApiFailure::internal(error.to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// Sessions and pending sign-ins are found by the hash of the browser's value, never by the value itself.
fn key(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// A sign-in on its way through the identity provider.
struct PendingLogin {
    state: String,
    verifier: String,
    started: Instant,
}

/// What a sign-in stored: the PKCE verifier to redeem the code with.
pub struct ReturnedLogin {
    pub verifier: String,
}

/// The tokens of one session. Refreshing rotates the refresh token, so refreshes of one session are serialised.
struct Tokens {
    access: String,
    access_expires: Instant,
    refresh: Option<String>,
}

pub struct Session {
    pub csrf: String,
    tokens: tokio::sync::Mutex<Tokens>,
    last_seen: Mutex<Instant>,
}

#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<[u8; 32], Arc<Session>>>,
    pending: Mutex<HashMap<[u8; 32], PendingLogin>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent whatever panicked while holding them.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Sessions {
    /// Records a sign-in about to leave for the authorization endpoint; `binding` is the login cookie's value.
    pub fn start_login(&self, binding: &str, state: String, verifier: String) {
        let mut pending = locked(&self.pending);
        pending.retain(|_, login| login.started.elapsed() < LOGIN_TIMEOUT);
        if pending.len() >= MAX_PENDING_LOGINS
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, login)| login.started)
                .map(|(key, _)| *key)
        {
            pending.remove(&oldest);
        }
        pending.insert(
            key(binding),
            PendingLogin {
                state,
                verifier,
                started: Instant::now(),
            },
        );
    }

    /// The sign-in this browser started, once, if `state` is the one it was sent with and it is recent.
    pub fn finish_login(&self, binding: &str, state: &str) -> Option<ReturnedLogin> {
        let login = locked(&self.pending).remove(&key(binding))?;
        let same_state: bool =
            subtle::ConstantTimeEq::ct_eq(login.state.as_bytes(), state.as_bytes()).into();
        (same_state && login.started.elapsed() < LOGIN_TIMEOUT).then_some(ReturnedLogin {
            verifier: login.verifier,
        })
    }

    /// A new session for redeemed tokens, under a new random id (never one the browser brought: no fixation).
    pub fn create(&self, tokens: &Value) -> Result<String, ApiFailure> {
        let tokens = tokens_of(tokens)?;
        let id = random_token()?;
        let session = Session {
            csrf: random_token()?,
            tokens: tokio::sync::Mutex::new(tokens),
            last_seen: Mutex::new(Instant::now()),
        };
        let mut live = locked(&self.live);
        live.retain(|_, session| locked(&session.last_seen).elapsed() < IDLE_TIMEOUT);
        live.insert(key(&id), Arc::new(session));
        Ok(id)
    }

    pub fn find(&self, id: &str) -> Option<Arc<Session>> {
        let mut live = locked(&self.live);
        let key = key(id);
        let session = live.get(&key)?.clone();
        let mut last_seen = locked(&session.last_seen);
        if last_seen.elapsed() >= IDLE_TIMEOUT {
            drop(last_seen);
            live.remove(&key);
            return None;
        }
        *last_seen = Instant::now();
        drop(last_seen);
        Some(session)
    }

    /// Forgets the session; its refresh token, if any, for the caller to revoke.
    pub async fn end(&self, id: &str) -> Option<String> {
        let session = locked(&self.live).remove(&key(id))?;
        session.tokens.lock().await.refresh.take()
    }
}

impl Session {
    /// A current access token, refreshed first when it is about to expire. `None`: the session cannot go on (the
    /// refresh token was refused, e.g. the sign-in was revoked), and the person must sign in again.
    pub async fn access_token(&self, api: &dyn Api) -> Option<String> {
        let mut tokens = self.tokens.lock().await;
        if tokens
            .access_expires
            .saturating_duration_since(Instant::now())
            > REFRESH_MARGIN
        {
            return Some(tokens.access.clone());
        }
        let refresh = tokens.refresh.clone()?;
        let refreshed = post_form(
            api,
            "/oidc/v1/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", CONSOLE_CLIENT_ID),
            ],
        )
        .await
        .and_then(|answer| tokens_of(&answer));
        match refreshed {
            Ok(fresh) => {
                *tokens = fresh;
                Some(tokens.access.clone())
            }
            Err(failure) => {
                tracing::info!(error = %failure.message, "a console session's refresh was refused");
                None
            }
        }
    }

    /// Whether a form's `csrf_token` is this session's.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        subtle::ConstantTimeEq::ct_eq(self.csrf.as_bytes(), presented.as_bytes()).into()
    }
}

fn tokens_of(answer: &Value) -> Result<Tokens, ApiFailure> {
    let access = answer["access_token"]
        .as_str()
        .ok_or_else(|| ApiFailure::internal("the token endpoint answered no access token"))?;
    let lifetime = answer["expires_in"].as_u64().unwrap_or(0);
    Ok(Tokens {
        access: access.to_owned(),
        access_expires: Instant::now() + Duration::from_secs(lifetime),
        refresh: answer["refresh_token"].as_str().map(str::to_owned),
    })
}

/// PKCE (RFC 7636): a random verifier and its S256 challenge.
pub fn pkce_pair() -> Result<(String, String), ApiFailure> {
    let verifier = random_token()?;
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Ok((verifier, challenge))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookies_over_https_are_secure_host_cookies() {
        let cookies = Cookies::for_public_url("https://deputy.example.com");
        let set = cookies.set(cookies.session, "v");
        assert!(set.starts_with("__Host-deputy_console=v;"), "{set}");
        assert!(
            set.contains("; Secure") && set.contains("HttpOnly") && set.contains("SameSite=Lax")
        );
        let plain = Cookies::for_public_url("http://127.0.0.1:8080");
        assert!(!plain.set(plain.session, "v").contains("Secure"));
    }

    #[test]
    fn a_login_finishes_once_and_only_with_its_state() {
        let sessions = Sessions::default();
        sessions.start_login("binding", "state-1".into(), "verifier".into());
        assert!(sessions.finish_login("other", "state-1").is_none());
        assert!(sessions.finish_login("binding", "state-2").is_none());
        // A wrong state consumed the login: it cannot be retried with the right one either.
        assert!(sessions.finish_login("binding", "state-1").is_none());
        sessions.start_login("binding", "state-1".into(), "verifier".into());
        let returned = sessions.finish_login("binding", "state-1");
        assert_eq!(
            returned.map(|login| login.verifier).as_deref(),
            Some("verifier")
        );
        assert!(sessions.finish_login("binding", "state-1").is_none());
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::COOKIE,
            HeaderValue::from_static("deputy_console_login=a; deputy_console=b"),
        );
        assert_eq!(cookie(&headers, "deputy_console"), Some("b"));
        assert_eq!(cookie(&headers, "deputy_console_login"), Some("a"));
        assert_eq!(cookie(&headers, "deputy"), None);
    }

    #[test]
    fn sessions_are_found_by_their_id_only() {
        let sessions = Sessions::default();
        let answer = serde_json::json!({ "access_token": "t", "expires_in": 3600 });
        let id = sessions.create(&answer).unwrap_or_default();
        assert!(sessions.find(&id).is_some());
        assert!(sessions.find("attacker-chosen").is_none());
    }
}
