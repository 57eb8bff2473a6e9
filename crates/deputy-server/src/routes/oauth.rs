//! The OAuth endpoints: token (client credentials, RFC 8693 token exchange, and for signed-in people the
//! authorization code and refresh token grants), revocation (RFC 7009) and introspection (RFC 7662). Errors use the RFC 6749 body, not the Databricks one, because OAuth clients parse that.

use super::{ApiRouter, Requires};
use crate::error::OAuthError;
use crate::extract::{Authenticated, parse_form};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use deputy_access::Access;
use deputy_access::clock::{now_millis, now_seconds};
use deputy_access::credentials::{
    ACCESS_TOKEN_LIFETIME_SECONDS, Caller, Credential, EXCHANGED_TOKEN_LIFETIME_SECONDS,
};
use deputy_core::ScopeSet;
use deputy_oidc::Federation;
use deputy_signin::apps::ClientMetadata;
use deputy_signin::{CodeRedemption, RefreshRequest, SignIn};
use deputy_store::{Identity, IdentityKind};
use deputy_tokens::{AccessClaims, Actor, ExchangeRequest, ScopeMode, SecretHash};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const TOKEN_TYPE_PAT: &str = "urn:databricks:params:oauth:token-type:personal-access-token";

pub fn routes(router: ApiRouter) -> ApiRouter {
    router
        .post("/oidc/v1/token", Requires::Public, token)
        .post("/oidc/v1/revoke", Requires::Public, revoke)
        .post("/oidc/v1/introspect", Requires::Authenticated, introspect)
        .post("/oidc/v1/register", Requires::Public, register)
}

/// Dynamic client registration (RFC 7591), for MCP clients that have no client id here: `201` with the client's
/// id (and its secret, once, for a confidential client), or an RFC 7591 error.
async fn register(State(sign_in): State<Arc<SignIn>>, body: Bytes) -> Result<Response, OAuthError> {
    let metadata: ClientMetadata = serde_json::from_slice(&body).map_err(|error| {
        OAuthError::new(
            "invalid_client_metadata",
            format!("the body is not client metadata (RFC 7591): {error}"),
        )
    })?;
    let registered = sign_in.register_client(metadata).await?;
    let app = &registered.app;
    let mut answer = json!({
        "client_id": app.client_id,
        "client_id_issued_at": app.created_ms / 1000,
        "client_name": app.name,
        "redirect_uris": app.redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": app.scopes,
    });
    if let Some(secret) = &registered.client_secret {
        answer["client_secret"] = json!(secret.expose());
        answer["client_secret_expires_at"] = json!(0);
        answer["token_endpoint_auth_method"] = json!("client_secret_basic");
    }
    let mut response = (axum::http::StatusCode::CREATED, Json(answer)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[derive(Deserialize, Default)]
struct TokenForm {
    grant_type: Option<String>,
    scope: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    subject_token: Option<String>,
    subject_token_type: Option<String>,
    actor_token: Option<String>,
    actor_token_type: Option<String>,
    requested_token_type: Option<String>,
    audience: Option<String>,
    resource: Option<String>,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    refresh_token: Option<String>,
}

/// A form body whose rejections (too large, unreadable) are OAuth error bodies like every other answer here.
struct FormBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for FormBody {
    type Rejection = OAuthError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, OAuthError> {
        Bytes::from_request(request, state)
            .await
            .map(FormBody)
            .map_err(|rejection| OAuthError {
                status: rejection.status(),
                error: "invalid_request",
                description: format!("could not read the request body: {rejection}"),
            })
    }
}

async fn token(
    State(access): State<Arc<Access>>,
    State(federation): State<Arc<Federation>>,
    State(sign_in): State<Arc<SignIn>>,
    headers: HeaderMap,
    FormBody(body): FormBody,
) -> Result<Response, OAuthError> {
    let form: TokenForm =
        parse_form(&body).map_err(|error| OAuthError::new("invalid_request", error))?;
    if let Some(grant @ (GRANT_AUTHORIZATION_CODE | GRANT_REFRESH_TOKEN)) =
        form.grant_type.clone().as_deref()
    {
        return signed_in_grant(&sign_in, grant, &headers, form).await;
    }
    let client = authenticate_client(&access, &headers, &form).await?;
    let claims = match form.grant_type.as_deref() {
        Some(GRANT_CLIENT_CREDENTIALS) => client_credentials(&access, client, &form)?,
        Some(GRANT_TOKEN_EXCHANGE) => token_exchange(&access, &federation, client, &form).await?,
        Some(other) => {
            return Err(OAuthError::new(
                "unsupported_grant_type",
                format!("grant type `{other}` is not supported"),
            ));
        }
        None => return Err(OAuthError::new("invalid_request", "missing `grant_type`")),
    };
    let access_token = access
        .credentials()
        .sign(&claims)
        .map_err(OAuthError::server_error)?;
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": claims.exp - now_seconds(),
        "scope": claims.scope.to_string(),
    });
    if form.grant_type.as_deref() == Some(GRANT_TOKEN_EXCHANGE) {
        body["issued_token_type"] = json!(TOKEN_TYPE_ACCESS_TOKEN);
    }
    Ok(no_store(Json(body)))
}

/// RFC 6749 §5.1: token responses are never cached.
fn no_store(body: Json<Value>) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The grants of signed-in people: the app is an OAuth app (not a service principal), authenticated by its secret
/// if it is confidential and by PKCE if it is public.
async fn signed_in_grant(
    sign_in: &SignIn,
    grant: &str,
    headers: &HeaderMap,
    form: TokenForm,
) -> Result<Response, OAuthError> {
    let (client_id, client_secret) = match basic_credentials(headers)? {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (
            form.client_id,
            form.client_secret.filter(|secret| !secret.is_empty()),
        ),
    };
    let issued = match grant {
        GRANT_AUTHORIZATION_CODE => {
            sign_in
                .redeem_code(CodeRedemption {
                    client_id,
                    client_secret,
                    code: form.code,
                    redirect_uri: form.redirect_uri,
                    code_verifier: form.code_verifier,
                    resource: form.resource,
                })
                .await
        }
        _ => {
            sign_in
                .refresh(RefreshRequest {
                    client_id,
                    client_secret,
                    refresh_token: form.refresh_token,
                    scope: form.scope,
                    resource: form.resource,
                })
                .await
        }
    }
    .map_err(OAuthError::from)?;
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "expires_in": issued.claims.exp - now_seconds(),
        "scope": issued.claims.scope.to_string(),
    });
    if let Some(refresh_token) = &issued.refresh_token {
        body["refresh_token"] = json!(refresh_token.expose());
    }
    Ok(no_store(Json(body)))
}

/// Checks client credentials from HTTP Basic or the form. `None` when the request carries none (allowed for token
/// exchange, where the subject token is the proof); any credentials that are present must be right.
async fn authenticate_client(
    access: &Arc<Access>,
    headers: &HeaderMap,
    form: &TokenForm,
) -> Result<Option<Identity>, OAuthError> {
    let (client_id, secret) = match basic_credentials(headers)? {
        Some(pair) => pair,
        // An empty secret is no secret: the SDK's federation flows send `client_secret=` with a client id that
        // only chooses whose federation policies apply.
        None => match (&form.client_id, &form.client_secret) {
            (Some(id), Some(secret)) if !secret.is_empty() => (id.clone(), secret.clone()),
            _ => return Ok(None),
        },
    };
    let refused = || OAuthError::new("invalid_client", "client authentication failed");
    let principal = access
        .store()
        .find_identity(IdentityKind::ServicePrincipal, &client_id)
        .await?
        .ok_or_else(refused)?;
    if !principal.active {
        return Err(refused());
    }
    let now = now_millis();
    let secrets = access.store().list_client_secrets(principal.id).await?;
    let matches = secrets.iter().any(|stored| {
        (stored.expires_at < 0 || stored.expires_at > now)
            && SecretHash::from_hex(&stored.secret_hash).is_ok_and(|hash| hash.matches(&secret))
    });
    match matches {
        true => Ok(Some(principal)),
        false => Err(refused()),
    }
}

fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || OAuthError::new("invalid_client", "malformed HTTP Basic credentials");
    let value = value.to_str().map_err(|_| malformed())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(malformed());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    // RFC 6749 §2.3.1: both parts are form-urlencoded inside the Basic credentials.
    let decode = |part: &str| -> Result<String, OAuthError> {
        let pairs: Vec<(String, String)> =
            parse_form(format!("v={part}").as_bytes()).map_err(|_| malformed())?;
        Ok(pairs
            .into_iter()
            .next()
            .map(|(_, value)| value)
            .unwrap_or_default())
    };
    Ok(Some((decode(id)?, decode(secret)?)))
}

/// Parses the requested scope. An unknown scope is `invalid_scope` with "Invalid scope" in the text, which is what
/// the vector-search client looks for before trying its next scope list.
fn requested_scopes(form: &TokenForm) -> Result<Option<ScopeSet>, OAuthError> {
    form.scope
        .as_deref()
        .map(ScopeSet::parse)
        .transpose()
        .map_err(|error| OAuthError::new("invalid_scope", format!("Invalid scope: {error}")))
}

fn client_credentials(
    access: &Arc<Access>,
    client: Option<Identity>,
    form: &TokenForm,
) -> Result<AccessClaims, OAuthError> {
    let client = client
        .ok_or_else(|| OAuthError::new("invalid_client", "client authentication is required"))?;
    let scope = requested_scopes(form)?.unwrap_or_else(ScopeSet::all);
    if scope.is_empty() {
        return Err(OAuthError::new(
            "invalid_scope",
            "Invalid scope: no API scope requested",
        ));
    }
    let credentials = access.credentials();
    let mut claims = AccessClaims::issue(
        &credentials.issuer(),
        &credentials.audience(),
        &client.name,
        scope,
        now_seconds(),
        ACCESS_TOKEN_LIFETIME_SECONDS,
    )
    .map_err(OAuthError::server_error)?;
    claims.client_id = Some(client.name);
    Ok(claims)
}

async fn token_exchange(
    access: &Arc<Access>,
    federation: &Federation,
    client: Option<Identity>,
    form: &TokenForm,
) -> Result<AccessClaims, OAuthError> {
    if let Some(requested) = form.requested_token_type.as_deref()
        && requested != TOKEN_TYPE_ACCESS_TOKEN
        && requested != TOKEN_TYPE_JWT
    {
        return Err(OAuthError::new(
            "invalid_request",
            format!("cannot issue tokens of type `{requested}`"),
        ));
    }
    let audience = access.credentials().audience();
    for target in [&form.audience, &form.resource].into_iter().flatten() {
        if target.trim_end_matches('/') != audience && *target != access.workspace_id().to_string()
        {
            return Err(OAuthError::new(
                "invalid_target",
                format!("tokens can only be issued for `{audience}`"),
            ));
        }
    }
    let subject_token = form
        .subject_token
        .as_deref()
        .ok_or_else(|| OAuthError::new("invalid_request", "missing `subject_token`"))?;
    check_token_type(form.subject_token_type.as_deref(), "subject_token_type")?;
    if form.subject_token_type.as_deref() == Some(TOKEN_TYPE_JWT)
        && federation.is_foreign_jwt(subject_token)
    {
        return federated_exchange(federation, client, subject_token, form).await;
    }
    let subject = authenticate_for_exchange(access, subject_token, "subject").await?;

    let actor = match form.actor_token.as_deref() {
        None => None,
        Some(actor_token) => {
            check_token_type(form.actor_token_type.as_deref(), "actor_token_type")?;
            let actor = authenticate_for_exchange(access, actor_token, "actor").await?;
            Some(Actor {
                sub: actor.subject().to_owned(),
                act: actor.actor().map(Box::new),
            })
        }
    };
    let request = ExchangeRequest {
        scope: requested_scopes(form)?,
        actor,
        audience,
        client_id: client.map(|client| client.name),
        mode: ScopeMode::RefuseWider,
    };
    deputy_tokens::exchange(
        &access.credentials().subject_claims(&subject),
        &request,
        now_seconds(),
        EXCHANGED_TOKEN_LIFETIME_SECONDS,
    )
    .map_err(|error| OAuthError::new(error.oauth_error_code(), error.to_string()))
}

/// Another issuer's JWT under a federation policy (the SDK's `env-oidc` and `file-oidc`). The JWT is the proof:
/// `client_id` (authenticated or not) only chooses whose policies apply.
async fn federated_exchange(
    federation: &Federation,
    client: Option<Identity>,
    subject_token: &str,
    form: &TokenForm,
) -> Result<AccessClaims, OAuthError> {
    if form.actor_token.is_some() {
        return Err(OAuthError::new(
            "invalid_request",
            "a federated subject token cannot be exchanged with an actor token",
        ));
    }
    let client_id = client
        .map(|client| client.name)
        .or_else(|| form.client_id.clone());
    federation
        .exchange(subject_token, client_id.as_deref(), requested_scopes(form)?)
        .await
        .map_err(OAuthError::from)
}

fn check_token_type(token_type: Option<&str>, field: &str) -> Result<(), OAuthError> {
    match token_type {
        Some(TOKEN_TYPE_ACCESS_TOKEN | TOKEN_TYPE_JWT | TOKEN_TYPE_PAT) => Ok(()),
        Some(other) => Err(OAuthError::new(
            "invalid_request",
            format!("unsupported `{field}` `{other}`"),
        )),
        None => Err(OAuthError::new(
            "invalid_request",
            format!("missing `{field}`"),
        )),
    }
}

async fn authenticate_for_exchange(
    access: &Arc<Access>,
    token: &str,
    role: &str,
) -> Result<Caller, OAuthError> {
    access
        .credentials()
        .authenticate(token)
        .await
        .map_err(|error| match error {
            deputy_access::credentials::AuthenticationError::Store(cause) => {
                OAuthError::server_error(cause)
            }
            other => OAuthError::new("invalid_grant", format!("{role} token refused: {other}")),
        })
}

#[derive(Deserialize)]
struct RevokeForm {
    token: Option<String>,
}

/// RFC 7009: presenting a token is enough to revoke it. The answer is 200 whether or not the token was valid, so the
/// endpoint tells an attacker nothing.
async fn revoke(
    State(access): State<Arc<Access>>,
    State(sign_in): State<Arc<SignIn>>,
    FormBody(body): FormBody,
) -> Result<Response, OAuthError> {
    let form: RevokeForm =
        parse_form(&body).map_err(|error| OAuthError::new("invalid_request", error))?;
    let token = form
        .token
        .ok_or_else(|| OAuthError::new("invalid_request", "missing `token`"))?;
    let was_refresh_token = sign_in
        .revoke_refresh_token(&token)
        .await
        .map_err(OAuthError::from)?;
    if !was_refresh_token {
        revoke_token(&access, &token).await?;
    }
    Ok(Json(json!({})).into_response())
}

async fn revoke_token(access: &Arc<Access>, token: &str) -> Result<(), OAuthError> {
    let credentials = access.credentials();
    match credentials.authenticate(token).await {
        Ok(caller) => match caller.credential {
            Credential::AccessToken {
                jti, expires_at, ..
            } => {
                credentials.revoke_access_token(&jti, expires_at).await?;
            }
            Credential::PersonalAccessToken { token_id, .. } => {
                credentials.delete_personal_access_token(&token_id).await?;
            }
        },
        Err(deputy_access::credentials::AuthenticationError::Store(cause)) => {
            return Err(OAuthError::server_error(cause));
        }
        Err(_) => {}
    }
    Ok(())
}

#[derive(Deserialize)]
struct IntrospectForm {
    token: Option<String>,
}

/// RFC 7662. Callers may introspect their own tokens; admins any token. Anything else reads as inactive, so the
/// endpoint is no oracle for other principals' tokens.
async fn introspect(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    FormBody(body): FormBody,
) -> Result<Json<Value>, OAuthError> {
    let form: IntrospectForm =
        parse_form(&body).map_err(|error| OAuthError::new("invalid_request", error))?;
    let token = form
        .token
        .ok_or_else(|| OAuthError::new("invalid_request", "missing `token`"))?;
    let inactive = Json(json!({ "active": false }));
    let Ok(subject) = access.credentials().authenticate(&token).await else {
        return Ok(inactive);
    };
    if subject.identity.id != caller.identity.id && !caller.is_admin() {
        return Ok(inactive);
    }
    let mut answer = json!({
        "active": true,
        "sub": subject.subject(),
        "scope": subject.scopes.to_string(),
        "iss": access.credentials().issuer(),
        "aud": access.credentials().audience(),
        "principal_type": match subject.identity.kind {
            IdentityKind::ServicePrincipal => "service_principal",
            _ => "user",
        },
    });
    match &subject.credential {
        Credential::AccessToken {
            jti,
            expires_at,
            actor,
            client_id,
            ..
        } => {
            answer["token_type"] = json!("Bearer");
            answer["jti"] = json!(jti);
            answer["exp"] = json!(expires_at);
            if let Some(actor) = actor {
                answer["act"] = serde_json::to_value(actor).map_err(OAuthError::server_error)?;
            }
            if let Some(client_id) = client_id {
                answer["client_id"] = json!(client_id);
            }
        }
        Credential::PersonalAccessToken { token_id, .. } => {
            answer["token_type"] = json!("personal_access_token");
            answer["token_id"] = json!(token_id);
        }
    }
    Ok(Json(answer))
}
