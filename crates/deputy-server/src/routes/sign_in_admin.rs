//! Sign-in administration over REST:
//! - OAuth apps in the shape of Databricks' custom app integrations,
//!   `/api/2.0/accounts/{account_id}/oauth2/custom-app-integrations[/{integration_id}]` (admins);
//! - upstream identity providers, `/api/2.0/deputy/identity-providers` (admins; the client secret is never shown);
//! - the bootstrap admin's local password, `PUT /api/2.0/deputy/local-password`;
//! - the caller's approvals of apps, `/api/2.0/deputy/app-consents[/{client_id}]` (the user themselves).

use super::{ApiRouter, Requires, check_account, rfc3339};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Authenticated};
use axum::Json;
use axum::extract::{Path, State};
use deputy_access::{Access, Error};
use deputy_core::{ApiScope, ScopeSet};
use deputy_signin::{NewIdentityProvider, NewOAuthApp, SignIn};
use deputy_store::{IdentityProvider, OAuthApp};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

const ADMIN: Requires = Requires::Scope(ApiScope::SettingsTokenManagement);
const APPS: &str = "/api/2.0/accounts/{account_id}/oauth2/custom-app-integrations";
const APP: &str = "/api/2.0/accounts/{account_id}/oauth2/custom-app-integrations/{integration_id}";
const PROVIDERS: &str = "/api/2.0/deputy/identity-providers";

pub fn routes(router: ApiRouter) -> ApiRouter {
    router
        .post(APPS, ADMIN, create_app)
        .get(APPS, ADMIN, list_apps)
        .get(APP, ADMIN, get_app)
        .delete(APP, ADMIN, delete_app)
        .post(PROVIDERS, ADMIN, add_provider)
        .get(PROVIDERS, ADMIN, list_providers)
        .delete(PROVIDERS, ADMIN, remove_provider)
        .put("/api/2.0/deputy/local-password", ADMIN, set_local_password)
        .get(
            "/api/2.0/deputy/app-consents",
            Requires::Authenticated,
            list_app_consents,
        )
        .delete(
            "/api/2.0/deputy/app-consents/{client_id}",
            Requires::Authenticated,
            withdraw_app_consent,
        )
}

#[derive(Deserialize)]
struct AppPath {
    account_id: String,
    integration_id: Option<String>,
}

#[derive(Deserialize, Default)]
struct AppBody {
    name: Option<String>,
    #[serde(default)]
    redirect_urls: Vec<String>,
    confidential: Option<bool>,
    scopes: Option<Vec<String>>,
}

async fn create_app(
    State(access): State<Arc<Access>>,
    State(sign_in): State<Arc<SignIn>>,
    Authenticated(caller): Authenticated,
    Path(path): Path<AppPath>,
    ApiJson(body): ApiJson<AppBody>,
) -> Result<Json<Value>, ApiError> {
    check_account(&access, &path.account_id)?;
    let new = NewOAuthApp {
        name: body.name.unwrap_or_default(),
        redirect_uris: body.redirect_urls,
        scopes: body.scopes.map(|scopes| scopes.join(" ")),
        // Databricks' default: an integration is confidential unless asked otherwise.
        confidential: body.confidential.unwrap_or(true),
    };
    let registered = sign_in.register_app(&caller, new).await?;
    let mut answer = json!({
        "integration_id": registered.app.client_id,
        "client_id": registered.app.client_id,
    });
    if let Some(secret) = &registered.client_secret {
        answer["client_secret"] = json!(secret.expose());
    }
    Ok(Json(answer))
}

async fn list_apps(
    State(access): State<Arc<Access>>,
    State(sign_in): State<Arc<SignIn>>,
    Authenticated(caller): Authenticated,
    Path(path): Path<AppPath>,
) -> Result<Json<Value>, ApiError> {
    check_account(&access, &path.account_id)?;
    let apps: Vec<Value> = sign_in
        .apps(&caller)
        .await?
        .iter()
        .map(render_app)
        .collect();
    Ok(Json(json!({ "apps": apps })))
}

async fn get_app(
    State(access): State<Arc<Access>>,
    State(sign_in): State<Arc<SignIn>>,
    Authenticated(caller): Authenticated,
    Path(path): Path<AppPath>,
) -> Result<Json<Value>, ApiError> {
    check_account(&access, &path.account_id)?;
    let app = sign_in
        .app(&caller, path.integration_id.as_deref().unwrap_or_default())
        .await?;
    Ok(Json(render_app(&app)))
}

async fn delete_app(
    State(access): State<Arc<Access>>,
    State(sign_in): State<Arc<SignIn>>,
    Authenticated(caller): Authenticated,
    Path(path): Path<AppPath>,
) -> Result<Json<Value>, ApiError> {
    check_account(&access, &path.account_id)?;
    sign_in
        .delete_app(&caller, path.integration_id.as_deref().unwrap_or_default())
        .await?;
    Ok(Json(json!({})))
}

fn render_app(app: &OAuthApp) -> Value {
    let scopes: Vec<String> = ScopeSet::parse(&app.scopes)
        .map(|scopes| scopes.iter().map(|scope| scope.name().to_owned()).collect())
        .unwrap_or_default();
    json!({
        "integration_id": app.client_id,
        "client_id": app.client_id,
        "name": app.name,
        "redirect_urls": app.redirect_uris,
        "confidential": app.secret_hash.is_some(),
        "scopes": scopes,
        "create_time": rfc3339(app.created_ms),
    })
}

#[derive(Deserialize, Default)]
struct ProviderBody {
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    groups_claim: Option<String>,
    username_claim: Option<String>,
    #[serde(default)]
    allowed_domains: Vec<String>,
}

async fn add_provider(
    State(sign_in): State<Arc<SignIn>>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<ProviderBody>,
) -> Result<Json<Value>, ApiError> {
    let new = NewIdentityProvider {
        issuer: body
            .issuer
            .ok_or_else(|| Error::invalid_parameter("`issuer` is required"))?,
        client_id: body.client_id.unwrap_or_default(),
        client_secret: body.client_secret.unwrap_or_default(),
        groups_claim: body.groups_claim,
        username_claim: body.username_claim,
        allowed_domains: body.allowed_domains,
    };
    let provider = sign_in.add_identity_provider(&caller, new).await?;
    let mut answer = render_provider(&provider);
    answer["redirect_uri"] = json!(sign_in.callback_url());
    Ok(Json(answer))
}

async fn list_providers(
    State(sign_in): State<Arc<SignIn>>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Value>, ApiError> {
    let providers: Vec<Value> = sign_in
        .identity_providers(&caller)
        .await?
        .iter()
        .map(render_provider)
        .collect();
    Ok(Json(
        json!({ "identity_providers": providers, "redirect_uri": sign_in.callback_url() }),
    ))
}

#[derive(Deserialize)]
struct IssuerQuery {
    issuer: Option<String>,
}

async fn remove_provider(
    State(sign_in): State<Arc<SignIn>>,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<IssuerQuery>,
) -> Result<Json<Value>, ApiError> {
    let issuer = query
        .issuer
        .ok_or_else(|| Error::invalid_parameter("the `issuer` query parameter is required"))?;
    sign_in.remove_identity_provider(&caller, &issuer).await?;
    Ok(Json(json!({})))
}

/// Never the client secret.
fn render_provider(provider: &IdentityProvider) -> Value {
    json!({
        "issuer": provider.issuer,
        "client_id": provider.client_id,
        "groups_claim": provider.groups_claim,
        "username_claim": provider.username_claim,
        "allowed_domains": provider.allowed_domains,
        "create_time": rfc3339(provider.created_ms),
    })
}

#[derive(Deserialize, Default)]
struct PasswordBody {
    password: Option<String>,
    /// Whose password; the caller's own when absent.
    user_name: Option<String>,
}

async fn set_local_password(
    State(sign_in): State<Arc<SignIn>>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<PasswordBody>,
) -> Result<Json<Value>, ApiError> {
    let password = body
        .password
        .ok_or_else(|| Error::invalid_parameter("`password` is required"))?;
    sign_in
        .set_local_password(&caller, body.user_name.as_deref(), &password)
        .await?;
    Ok(Json(json!({})))
}

async fn list_app_consents(
    State(sign_in): State<Arc<SignIn>>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Value>, ApiError> {
    let consents: Vec<Value> = sign_in
        .app_consents(&caller)
        .await?
        .iter()
        .map(|(consent, app)| {
            json!({
                "client_id": consent.client_id,
                "app_name": app.as_ref().map(|app| app.name.clone()),
                "scopes": consent.scopes,
                "granted_time": rfc3339(consent.granted_ms),
            })
        })
        .collect();
    Ok(Json(json!({ "app_consents": consents })))
}

async fn withdraw_app_consent(
    State(sign_in): State<Arc<SignIn>>,
    Authenticated(caller): Authenticated,
    Path(client_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    sign_in.withdraw_app_consent(&caller, &client_id).await?;
    Ok(Json(json!({})))
}
