//! Signing in to the console and out of it. The console is an OAuth client of Deputy like any other app: it sends
//! the browser to `/oidc/v1/authorize` (PKCE S256, `state` bound to a login cookie), and redeems the code at the
//! token endpoint. Signing out revokes the sign-in's refresh token, which revokes every token of the sign-in.

use crate::api::{encode, post_form};
use crate::layout::{document, error_page};
use crate::session::{self, CONSOLE_CLIENT_ID, cookie, pkce_pair, random_token};
use crate::{ConsoleError, ConsoleState, SignedIn, checked_form};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

/// Everything the console does: the person's own API, as the console's app may ask for it, kept across access
/// tokens by a refresh token.
const SCOPE: &str = "all-apis offline_access";

fn with_cookies(response: impl IntoResponse, cookies: &[String]) -> Response {
    let mut response = response.into_response();
    for value in cookies {
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

pub async fn start_page(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    let console = &state.console;
    if session::cookie(&headers, console.cookies.session)
        .and_then(|id| console.sessions.find(id))
        .is_some()
    {
        return Redirect::to("/console/agents").into_response();
    }
    let body = html! {
        main.sign-in {
            h1 { "Deputy" }
            p { "See the agents you may use, talk to them as yourself, and control what they may do for you." }
            p { a #sign-in .button href="/console/login" { "Sign in" } }
        }
    };
    document(StatusCode::OK, "Sign in", body)
}

pub async fn login(State(state): State<ConsoleState>) -> Result<Response, ConsoleError> {
    let console = &state.console;
    let binding = random_token()?;
    let login_state = random_token()?;
    let (verifier, challenge) = pkce_pair()?;
    console
        .sessions
        .start_login(&binding, login_state.clone(), verifier);
    let location = format!(
        "/oidc/v1/authorize?response_type=code&client_id={}&redirect_uri={}&scope={}&state={}\
         &code_challenge={}&code_challenge_method=S256",
        CONSOLE_CLIENT_ID,
        encode(&console.callback_url()),
        encode(SCOPE),
        login_state,
        challenge,
    );
    Ok(with_cookies(
        Redirect::to(&location),
        &[console.cookies.set(console.cookies.login, &binding)],
    ))
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub async fn callback(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let console = &state.console;
    let clear_login = console.cookies.clear(console.cookies.login);
    let login = cookie(&headers, console.cookies.login).and_then(|binding| {
        console
            .sessions
            .finish_login(binding, query.state.as_deref().unwrap_or(""))
    });
    let Some(login) = login else {
        return with_cookies(
            error_page(
                StatusCode::BAD_REQUEST,
                "this sign-in was not started in this browser, was already used, or took too long: sign in again",
            ),
            &[clear_login],
        );
    };
    if let Some(error) = query.error {
        let message = query.error_description.unwrap_or(error);
        return with_cookies(
            error_page(
                StatusCode::FORBIDDEN,
                &format!("sign-in refused: {message}"),
            ),
            &[clear_login],
        );
    }
    let code = query.code.unwrap_or_default();
    let redirect_uri = console.callback_url();
    let redeemed = post_form(
        state.api.as_ref(),
        "/oidc/v1/token",
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("client_id", CONSOLE_CLIENT_ID),
            ("code_verifier", &login.verifier),
        ],
    )
    .await;
    let session = redeemed.and_then(|tokens| console.sessions.create(&tokens));
    match session {
        Ok(id) => with_cookies(
            Redirect::to("/console/agents"),
            &[
                console.cookies.set(console.cookies.session, &id),
                clear_login,
            ],
        ),
        Err(failure) => with_cookies(ConsoleError::Api(failure), &[clear_login]),
    }
}

pub async fn logout(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let console = &state.console;
    checked_form(console, &signed_in, &headers, &body)?;
    let id = cookie(&headers, console.cookies.session).unwrap_or_default();
    if let Some(refresh) = console.sessions.end(id).await {
        let revoked = post_form(
            state.api.as_ref(),
            "/oidc/v1/revoke",
            &[("token", &refresh), ("client_id", CONSOLE_CLIENT_ID)],
        )
        .await;
        if let Err(failure) = revoked {
            tracing::warn!(error = %failure.message, "revoking a console sign-in failed");
        }
    }
    Ok(with_cookies(
        Redirect::to("/console/"),
        &[console.cookies.clear(console.cookies.session)],
    ))
}
