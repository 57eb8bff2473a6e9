//! The browser's side of sign-in: `/oidc/v1/authorize` (OAuth 2.1 authorization code with PKCE), the upstream
//! provider's callback, the local password form, the provider chooser and the consent page. Pages are
//! plain server-rendered HTML (maud escapes every value) under a no-script Content-Security-Policy.
//!
//! The cookie set by `/authorize` binds the sign-in to the browser that started it; it is `HttpOnly` and
//! `SameSite=Lax`, so a cross-site form cannot submit the consent or password forms with it (no CSRF).

use super::{ApiRouter, Requires};
use crate::extract::parse_form;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use deputy_access::Access;
use deputy_signin::flow::AuthorizationFailure;
use deputy_signin::{
    AuthorizationParams, CallbackParams, Consent, NextStep, SignIn, SignInError, Step,
};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;
use std::sync::Arc;

const COOKIE: &str = "deputy_sign_in";
const LOGIN_PATH: &str = "/oidc/v1/login";
const CONSENT_PATH: &str = "/oidc/v1/consent";
const CHOOSE_PATH: &str = "/oidc/v1/login/provider";

pub fn routes(router: ApiRouter) -> ApiRouter {
    router
        .get("/oidc/v1/authorize", Requires::Public, authorize)
        .get("/oidc/v1/callback", Requires::Public, callback)
        .get(CHOOSE_PATH, Requires::Public, choose_provider)
        .post(LOGIN_PATH, Requires::Public, local_login)
        .post(CONSENT_PATH, Requires::Public, consent)
}

#[derive(Deserialize, Default)]
struct AuthorizeQuery {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    resource: Option<String>,
}

/// A query or form that does not parse is shown as a page: nothing in it can be trusted as a redirect target.
fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, SignInError> {
    parse_form(bytes).map_err(SignInError::InvalidRequest)
}

async fn authorize(
    State(sign_in): State<Arc<SignIn>>,
    State(access): State<Arc<Access>>,
    RawQuery(query): RawQuery,
) -> Response {
    let query: AuthorizeQuery = match parse(query.unwrap_or_default().as_bytes()) {
        Ok(query) => query,
        Err(error) => return error_page(&error),
    };
    let params = AuthorizationParams {
        response_type: query.response_type,
        client_id: query.client_id,
        redirect_uri: query.redirect_uri,
        scope: query.scope,
        state: query.state,
        code_challenge: query.code_challenge,
        code_challenge_method: query.code_challenge_method,
        resource: query.resource,
    };
    let started = match sign_in.start(params).await {
        Ok(started) => started,
        Err(failure) => return failure_response(failure),
    };
    let mut response = match &started.next {
        NextStep::Upstream(url) => redirect(url),
        NextStep::LocalPassword => page(
            StatusCode::OK,
            "Sign in",
            password_form(&started.request_id, None),
        ),
        NextStep::ChooseProvider(issuers) => page(
            StatusCode::OK,
            "Sign in",
            provider_list(&started.request_id, issuers),
        ),
    };
    let secure = access.base_url().starts_with("https://");
    let cookie = format!(
        "{COOKIE}={}; Path=/oidc/v1; HttpOnly; SameSite=Lax; Max-Age={}{}",
        started.browser_secret.expose(),
        deputy_signin::SIGN_IN_LIFETIME_MS / 1000,
        if secure { "; Secure" } else { "" }
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

#[derive(Deserialize, Default)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    iss: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(sign_in): State<Arc<SignIn>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query: CallbackQuery = match parse(query.unwrap_or_default().as_bytes()) {
        Ok(query) => query,
        Err(error) => return error_page(&error),
    };
    let callback = CallbackParams {
        state: query.state,
        code: query.code,
        iss: query.iss,
        error: query.error,
        error_description: query.error_description,
    };
    step_response(
        sign_in
            .finish_upstream(callback, browser_secret(&headers).as_deref())
            .await,
    )
}

#[derive(Deserialize, Default)]
struct ChooseQuery {
    request: Option<String>,
    issuer: Option<String>,
}

async fn choose_provider(
    State(sign_in): State<Arc<SignIn>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query: ChooseQuery = match parse(query.unwrap_or_default().as_bytes()) {
        Ok(query) => query,
        Err(error) => return error_page(&error),
    };
    let chosen = sign_in
        .choose_provider(
            query.request.as_deref().unwrap_or_default(),
            browser_secret(&headers).as_deref(),
            query.issuer.as_deref().unwrap_or_default(),
        )
        .await;
    match chosen {
        Ok(url) => redirect(&url),
        Err(failure) => failure_response(failure),
    }
}

#[derive(Deserialize, Default)]
struct LoginForm {
    request: Option<String>,
    user_name: Option<String>,
    password: Option<String>,
}

async fn local_login(
    State(sign_in): State<Arc<SignIn>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: LoginForm = match parse(&body) {
        Ok(form) => form,
        Err(error) => return error_page(&error),
    };
    let request_id = form.request.unwrap_or_default();
    let finished = sign_in
        .finish_local(
            &request_id,
            browser_secret(&headers).as_deref(),
            form.user_name.as_deref().unwrap_or_default(),
            form.password.as_deref().unwrap_or_default(),
        )
        .await;
    match finished {
        Err(AuthorizationFailure::Retry(reason)) => page(
            StatusCode::UNAUTHORIZED,
            "Sign in",
            password_form(&request_id, Some(&reason)),
        ),
        other => step_response(other),
    }
}

#[derive(Deserialize, Default)]
struct ConsentForm {
    request: Option<String>,
    decision: Option<String>,
}

async fn consent(State(sign_in): State<Arc<SignIn>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: ConsentForm = match parse(&body) {
        Ok(form) => form,
        Err(error) => return error_page(&error),
    };
    let decided = sign_in
        .decide_consent(
            form.request.as_deref().unwrap_or_default(),
            browser_secret(&headers).as_deref(),
            form.decision.as_deref() == Some("approve"),
        )
        .await;
    match decided {
        Ok(url) => redirect(&url),
        Err(failure) => failure_response(failure),
    }
}

/// The sign-in cookie's value, if the browser sent one.
fn browser_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

fn step_response(step: Result<Step, AuthorizationFailure>) -> Response {
    match step {
        Ok(Step::Redirect(url)) => redirect(&url),
        Ok(Step::Consent(consent)) => {
            page(StatusCode::OK, "Approve access", consent_form(&consent))
        }
        Err(failure) => failure_response(failure),
    }
}

fn failure_response(failure: AuthorizationFailure) -> Response {
    match failure {
        AuthorizationFailure::Redirect(url) => redirect(&url),
        AuthorizationFailure::Page(error) => error_page(&error),
        // Only the password form asks again; it handles this itself.
        AuthorizationFailure::Retry(reason) => error_page(&SignInError::AccessDenied(reason)),
    }
}

fn redirect(url: &str) -> Response {
    match HeaderValue::from_str(url) {
        Ok(location) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            response.headers_mut().insert(header::LOCATION, location);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(_) => error_page(&SignInError::InvalidRequest(
            "the redirect URI cannot be sent as a header".into(),
        )),
    }
}

fn error_page(error: &SignInError) -> Response {
    let (status, description) = match error {
        SignInError::Internal(cause) => {
            tracing::error!(%cause, "internal error in sign-in");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; see the server log".to_owned(),
            )
        }
        refused => (StatusCode::BAD_REQUEST, refused.to_string()),
    };
    let body = html! {
        h1 { "Sign-in failed" }
        p { "The app's request could not be completed, and you were not sent back to it." }
        dl {
            dt { "Error" } dd #error { (error.oauth_error_code()) }
            dt { "Why" } dd #error_description { (description) }
        }
    };
    page(status, "Sign-in failed", body)
}

fn page(status: StatusCode, title: &str, body: Markup) -> Response {
    let document = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Deputy" }
                style { (STYLE) }
            }
            body { main { (body) } }
        }
    };
    let mut response = (status, Html(document.into_string())).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;\
color:#1a1a1a}label{display:block;margin:.8rem 0}input{display:block;width:100%;padding:.4rem;font-size:1rem}\
button{margin:.8rem .6rem 0 0;padding:.5rem 1rem;font-size:1rem}.error{color:#a00000}li{margin:.3rem 0}";

fn password_form(request_id: &str, error: Option<&str>) -> Markup {
    html! {
        h1 { "Sign in to Deputy" }
        p { "This workspace has no identity provider yet: sign in with the password an admin gave you." }
        @if let Some(error) = error { p.error role="alert" { (error) } }
        form method="post" action=(LOGIN_PATH) {
            input type="hidden" name="request" value=(request_id);
            label { "User name" input type="text" name="user_name" autocomplete="username" required autofocus; }
            label { "Password" input type="password" name="password" autocomplete="current-password" required; }
            button type="submit" { "Sign in" }
        }
    }
}

fn provider_list(request_id: &str, issuers: &[String]) -> Markup {
    html! {
        h1 { "Sign in to Deputy" }
        p { "Choose your organisation's sign-in:" }
        ul {
            @for issuer in issuers {
                li {
                    a href=(format!("{CHOOSE_PATH}?{}", serde_urlencoded::to_string([("request", request_id), ("issuer", issuer)]).unwrap_or_default())) {
                        (issuer)
                    }
                }
            }
        }
    }
}

fn consent_form(consent: &Consent) -> Markup {
    html! {
        h1 { "Allow " (consent.app_name) " to act for you?" }
        p { "The app " strong { (consent.app_name) } " (client id " code { (consent.client_id) } ") asks to:" }
        ul #scopes {
            @for scope in &consent.scopes {
                li { (scope.plain_words()) " " small { "(" code { (scope.name()) } ")" } }
            }
            @if consent.offline { li { "keep this access after you close the app, until you withdraw it" } }
        }
        p { "It will only ever see what you yourself may see. You can withdraw this approval at any time." }
        form method="post" action=(CONSENT_PATH) {
            input type="hidden" name="request" value=(consent.request_id);
            button type="submit" name="decision" value="approve" { "Allow" }
            button type="submit" name="decision" value="deny" { "Deny" }
        }
    }
}
