//! Deputy's web console, served at `/console/` by `deputy serve` itself: people sign in through the workspace's
//! sign-in flow, talk to agents as themselves, see and withdraw what agents and apps may do for them, and read what
//! was done in their name; admins watch and steer the platform.
//!
//! - [`session`]: the console's own sign-in (an OAuth client of Deputy), browser sessions, CSRF tokens.
//! - [`api`]: the public API, called in process as the signed-in person.
//! - [`layout`]: the page shell, the error page, the security headers.
//! - `pages/*`: one module per section (agents and the playground, access, activity, admin).
//!
//! **Invariants**
//! - The console has no data path of its own: every page is built from public API calls carrying the signed-in
//!   person's access token, so it can never show or change more than that person could through the API.
//! - The browser never holds a token: only a random session id, in an `HttpOnly`, `SameSite=Lax` cookie (`Secure`
//!   and `__Host-` behind an https public URL), minted anew at every sign-in.
//! - Every state-changing request is a POST whose form carries the session's CSRF token, from the console's own
//!   origin; anything else is refused before an API call is made.
//! - Every value written into a page is escaped (maud), and the Content-Security-Policy allows only the console's
//!   own script and style.

pub mod api;
pub mod layout;
mod pages;
pub mod session;

use crate::api::{Api, ApiFailure, AsPerson};
use crate::layout::{Viewer, error_page};
use crate::session::{Cookies, Session, Sessions};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::sync::Arc;

/// The console of one server: its public URL and the browser sessions.
pub struct Console {
    public_url: String,
    cookies: Cookies,
    sessions: Sessions,
}

impl Console {
    pub fn new(public_url: &str) -> Console {
        let public_url = public_url.trim_end_matches('/').to_owned();
        Console {
            cookies: Cookies::for_public_url(&public_url),
            public_url,
            sessions: Sessions::default(),
        }
    }

    /// The one redirect URI of the console's OAuth app.
    pub fn callback_url(&self) -> String {
        format!("{}{}", self.public_url, session::CALLBACK_PATH)
    }

    /// The origin (`scheme://host[:port]`) forms must come from.
    fn origin(&self) -> String {
        url::Url::parse(&self.public_url)
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_default()
    }
}

/// What the console's handlers share.
#[derive(Clone)]
pub struct ConsoleState {
    pub console: Arc<Console>,
    pub api: Arc<dyn Api>,
}

impl FromRef<ConsoleState> for Arc<Console> {
    fn from_ref(state: &ConsoleState) -> Arc<Console> {
        state.console.clone()
    }
}

/// The console's routes, with their state; the server merges them beside the API.
pub fn routes(console: Arc<Console>, api: Arc<dyn Api>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        // The server trims a trailing slash before routing, so `/console/` arrives here as `/console`.
        .route("/console", get(pages::sign_in::start_page))
        .route("/console/login", get(pages::sign_in::login))
        .route(session::CALLBACK_PATH, get(pages::sign_in::callback))
        .route("/console/logout", post(pages::sign_in::logout))
        .route("/console/assets/console.css", get(pages::assets::style))
        .route("/console/assets/console.js", get(pages::assets::script))
        .merge(pages::agents::routes())
        .merge(pages::stream::routes())
        .merge(pages::access::routes())
        .merge(pages::activity::routes())
        .merge(pages::admin::routes())
        .with_state(ConsoleState { console, api })
        // Every console response, redirects and errors included, carries the headers that confine a page.
        .layer(axum::middleware::map_response(layout::confine))
}

/// Why a console request was not answered with its page.
#[derive(Debug)]
pub enum ConsoleError {
    /// No session: pages send the browser to sign in; forms are refused. `clear` is the `Set-Cookie` value that
    /// forgets a session the API no longer accepts, so the sign-in page does not send the browser back.
    SignedOut {
        form: bool,
        clear: Option<String>,
    },
    Forbidden(String),
    NotFound(String),
    BadRequest(String),
    Api(ApiFailure),
}

impl From<ApiFailure> for ConsoleError {
    fn from(failure: ApiFailure) -> ConsoleError {
        ConsoleError::Api(failure)
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        match self {
            ConsoleError::SignedOut { form, clear } => {
                let mut response = match form {
                    false => Redirect::to("/console/").into_response(),
                    true => error_page(
                        StatusCode::FORBIDDEN,
                        "you are not signed in (or your session ended): sign in and try again",
                    ),
                };
                if let Some(value) = clear.and_then(|value| HeaderValue::from_str(&value).ok()) {
                    response.headers_mut().insert(header::SET_COOKIE, value);
                }
                response
            }
            ConsoleError::Forbidden(message) => error_page(StatusCode::FORBIDDEN, &message),
            ConsoleError::NotFound(message) => error_page(StatusCode::NOT_FOUND, &message),
            ConsoleError::BadRequest(message) => error_page(StatusCode::BAD_REQUEST, &message),
            ConsoleError::Api(failure) => {
                if failure.status.is_server_error() {
                    tracing::warn!(error = %failure.message, "a console page's API call failed");
                    return error_page(failure.status, "Deputy could not answer; try again");
                }
                error_page(failure.status, &failure.message)
            }
        }
    }
}

/// A signed-in person: their session, a current access token, and who they are (from SCIM `Me`, asked on every
/// request, so a change of name or admin rights shows at once).
pub struct SignedIn {
    pub session: Arc<Session>,
    pub token: String,
    pub user_name: String,
    pub is_admin: bool,
    api: Arc<dyn Api>,
}

impl SignedIn {
    pub(crate) fn api(&self) -> AsPerson<'_> {
        AsPerson {
            api: self.api.as_ref(),
            token: &self.token,
        }
    }

    pub(crate) fn viewer(&self) -> Viewer<'_> {
        Viewer {
            user_name: &self.user_name,
            is_admin: self.is_admin,
            csrf: &self.session.csrf,
        }
    }

    pub(crate) fn require_admin(&self) -> Result<(), ConsoleError> {
        match self.is_admin {
            true => Ok(()),
            false => Err(ConsoleError::Forbidden(
                "only workspace admins see the admin pages".into(),
            )),
        }
    }
}

impl FromRequestParts<ConsoleState> for SignedIn {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<SignedIn, ConsoleError> {
        let form = parts.method != Method::GET && parts.method != Method::HEAD;
        let console = &state.console;
        let id = session::cookie(&parts.headers, console.cookies.session).unwrap_or_default();
        let session = console
            .sessions
            .find(id)
            .ok_or(ConsoleError::SignedOut { form, clear: None })?;
        // A session whose tokens the API no longer accepts (sign-in revoked, user disabled) is forgotten.
        let ended = || async {
            console.sessions.end(id).await;
            ConsoleError::SignedOut {
                form,
                clear: Some(console.cookies.clear(console.cookies.session)),
            }
        };
        let Some(token) = session.access_token(state.api.as_ref()).await else {
            return Err(ended().await);
        };
        let as_person = AsPerson {
            api: state.api.as_ref(),
            token: &token,
        };
        let me = match as_person.get("/api/2.0/preview/scim/v2/Me").await {
            Ok(me) => me,
            Err(failure) if failure.status == StatusCode::UNAUTHORIZED => {
                return Err(ended().await);
            }
            Err(failure) => return Err(failure.into()),
        };
        let user_name = me["userName"].as_str().unwrap_or_default().to_owned();
        let is_admin = me["groups"].as_array().is_some_and(|groups| {
            groups
                .iter()
                .any(|group| group["display"].as_str() == Some("admins"))
        });
        Ok(SignedIn {
            session,
            token,
            user_name,
            is_admin,
            api: state.api.clone(),
        })
    }
}

/// A console form: checked to come from the console's own origin with the session's CSRF token before any field
/// is read. Browsers send `Origin` on every POST and `Sec-Fetch-Site` on every request: another site's origin, or a
/// request the browser calls cross-site, is refused outright. An opaque origin (`Origin: null`, which Chromium sends
/// for a page under a strict referrer policy, and sandboxed frames send anywhere) passes only when the browser says
/// the request is same-origin.
pub(crate) fn checked_form(
    console: &Console,
    signed_in: &SignedIn,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<HashMap<String, String>, ConsoleError> {
    let cross_site = || ConsoleError::Forbidden("this form was not sent from the console".into());
    let fetch_site = headers.get("sec-fetch-site").map(HeaderValue::as_bytes);
    if fetch_site.is_some_and(|site| site != b"same-origin") {
        return Err(cross_site());
    }
    match headers.get(header::ORIGIN).map(HeaderValue::as_bytes) {
        Some(b"null") if fetch_site != Some(b"same-origin") => return Err(cross_site()),
        Some(b"null") | None => {}
        Some(origin) if origin != console.origin().as_bytes() => return Err(cross_site()),
        Some(_) => {}
    }
    let fields: HashMap<String, String> = serde_urlencoded::from_bytes(body)
        .map_err(|error| ConsoleError::BadRequest(format!("the form does not parse: {error}")))?;
    let presented = fields.get("csrf_token").map(String::as_str).unwrap_or("");
    if !signed_in.session.csrf_matches(presented) {
        return Err(ConsoleError::Forbidden(
            "this form's CSRF token is missing or not this session's: reload the page and try again".into(),
        ));
    }
    Ok(fields)
}
