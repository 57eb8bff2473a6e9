//! Personal access tokens (`/api/2.0/token/...`, one's own), token management (`/api/2.0/token-management/...`,
//! admins, including tokens issued on behalf of another principal) and signing-key rotation.
//!
//! A new token never holds a scope its creator's token lacks, and a delegated token (one with an `act` chain) cannot
//! mint personal access tokens at all: an agent must not turn a short-lived, narrowed token into a long-lived one.

use super::{ApiRouter, Requires};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Authenticated};
use axum::Json;
use axum::extract::{Path, State};
use deputy_access::Access;
use deputy_access::Error;
use deputy_access::credentials::{
    Caller, Credential, IssuedPersonalAccessToken, issue_personal_access_token,
};
use deputy_core::{ApiScope, ScopeSet};
use deputy_store::{Identity, IdentityKind, PersonalAccessToken, PrincipalId};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

const OWN: Requires = Requires::Scope(ApiScope::SettingsTokens);
const MANAGE: Requires = Requires::Scope(ApiScope::SettingsTokenManagement);

pub fn routes(router: ApiRouter) -> ApiRouter {
    router
        .post("/api/2.0/token/create", OWN, create_own)
        .get("/api/2.0/token/list", OWN, list_own)
        .post("/api/2.0/token/delete", OWN, delete_own)
        .get("/api/2.0/token-management/tokens", MANAGE, list_all)
        .get(
            "/api/2.0/token-management/tokens/{token_id}",
            MANAGE,
            get_any,
        )
        .delete(
            "/api/2.0/token-management/tokens/{token_id}",
            MANAGE,
            delete_any,
        )
        .post(
            "/api/2.0/token-management/on-behalf-of/tokens",
            MANAGE,
            create_on_behalf_of,
        )
        .post("/api/2.0/deputy/keys/rotate", MANAGE, rotate_signing_key)
        .get(
            "/api/2.0/deputy/token-info",
            Requires::Authenticated,
            describe_caller_token,
        )
}

/// What the presented token is: whose, which scopes, which actors. Lets an agent (or its author) see exactly what
/// an on-behalf-of token allows, without decoding it; it reads nothing beyond what authentication already loaded.
async fn describe_caller_token(Authenticated(caller): Authenticated) -> Json<Value> {
    let (kind, actors, expires_at) = match &caller.credential {
        Credential::AccessToken {
            actor, expires_at, ..
        } => {
            let chain: Vec<String> = actor
                .as_ref()
                .map(|actor| actor.chain().into_iter().map(str::to_owned).collect())
                .unwrap_or_default();
            ("access_token", chain, Some(*expires_at))
        }
        Credential::PersonalAccessToken { expires_at, .. } => {
            ("personal_access_token", Vec::new(), *expires_at)
        }
    };
    Json(json!({
        "principal": caller.subject(),
        "principal_id": caller.identity.id.0,
        "token_type": kind,
        "scopes": caller.scopes.iter().map(ApiScope::name).collect::<Vec<_>>(),
        "actor_chain": actors,
        "expires_at": expires_at,
        "groups": caller.groups.iter().map(|group| group.name.clone()).collect::<Vec<_>>(),
    }))
}

fn token_info(token: &PersonalAccessToken) -> Value {
    let scopes: Vec<String> = ScopeSet::parse(&token.scopes)
        .map(|set| {
            if set == ScopeSet::all() {
                vec!["all-apis".into()]
            } else {
                set.iter().map(|s| s.name().into()).collect()
            }
        })
        .unwrap_or_default();
    json!({
        "token_id": token.token_id,
        "creation_time": token.created_at,
        "expiry_time": token.expires_at,
        "comment": token.comment,
        "scopes": scopes,
    })
}

async fn managed_token_info(
    access: &Arc<Access>,
    token: &PersonalAccessToken,
) -> Result<Value, Error> {
    let mut info = token_info(token);
    let creator = access.store().get_identity(token.created_by).await?;
    info["created_by_id"] = json!(token.created_by.0);
    info["created_by_username"] = json!(creator.map(|creator| creator.name));
    info["owner_id"] = json!(token.owner_id.0);
    Ok(info)
}

#[derive(Deserialize)]
struct CreateRequest {
    lifetime_seconds: Option<i64>,
    comment: Option<String>,
    scopes: Option<Vec<String>>,
    application_id: Option<String>,
}

/// The scopes a new token gets: those asked for (default: all of the creator's), refused if wider than the
/// creator's own token.
fn scopes_for_new_token(caller: &Caller, requested: Option<&[String]>) -> Result<ScopeSet, Error> {
    if caller.is_delegated() {
        return Err(Error::permission_denied(
            "personal access tokens cannot be created with a delegated (on-behalf-of) token",
        ));
    }
    let Some(requested) = requested else {
        return Ok(caller.scopes);
    };
    let scopes = ScopeSet::parse(&requested.join(" "))
        .map_err(|error| Error::invalid_parameter(error.to_string()))?;
    if scopes.is_empty() {
        return Err(Error::invalid_parameter(
            "`scopes` must name at least one API scope",
        ));
    }
    let missing = ScopeSet::from_iter(
        scopes
            .iter()
            .filter(|scope| !caller.scopes.contains(*scope)),
    );
    if !missing.is_empty() {
        return Err(Error::permission_denied(format!(
            "a new token cannot hold scopes your token lacks: {missing}"
        )));
    }
    Ok(scopes)
}

fn created(issued: IssuedPersonalAccessToken) -> Json<Value> {
    Json(json!({ "token_value": issued.value.expose(), "token_info": token_info(&issued.record) }))
}

async fn create_own(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiJson(request): ApiJson<CreateRequest>,
) -> Result<Json<Value>, ApiError> {
    let scopes = scopes_for_new_token(&caller, request.scopes.as_deref())?;
    let comment = request.comment.unwrap_or_default();
    let owner = caller.identity.id;
    let issued = issue_personal_access_token(
        access.store(),
        owner,
        owner,
        request.lifetime_seconds,
        comment,
        scopes,
    )
    .await?;
    Ok(created(issued))
}

async fn list_own(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Value>, ApiError> {
    let tokens = access
        .store()
        .list_personal_access_tokens(Some(caller.identity.id))
        .await?;
    Ok(Json(
        json!({ "token_infos": tokens.iter().map(token_info).collect::<Vec<_>>() }),
    ))
}

#[derive(Deserialize)]
struct DeleteRequest {
    token_id: Option<String>,
}

async fn delete_own(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiJson(request): ApiJson<DeleteRequest>,
) -> Result<Json<Value>, ApiError> {
    let token_id = request
        .token_id
        .ok_or_else(|| Error::invalid_parameter("`token_id` is required"))?;
    // Someone else's token reads as missing, so ids cannot be probed.
    let owned = access
        .store()
        .get_personal_access_token(&token_id)
        .await?
        .filter(|t| t.owner_id == caller.identity.id);
    if owned.is_none()
        || !access
            .credentials()
            .delete_personal_access_token(&token_id)
            .await?
    {
        return Err(ApiError(Error::not_found(format!(
            "token `{token_id}` does not exist"
        ))));
    }
    Ok(Json(json!({})))
}

#[derive(Deserialize)]
struct ListAllQuery {
    created_by_id: Option<i64>,
    created_by_username: Option<String>,
}

async fn list_all(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<ListAllQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let creator = match &query.created_by_username {
        Some(name) => Some(
            access
                .store()
                .find_identity(IdentityKind::User, name)
                .await?
                .map(|user| user.id),
        ),
        None => query.created_by_id.map(|id| Some(PrincipalId(id))),
    };
    let mut infos = Vec::new();
    for token in access.store().list_personal_access_tokens(None).await? {
        if creator.is_none_or(|creator| creator == Some(token.created_by)) {
            infos.push(managed_token_info(&access, &token).await?);
        }
    }
    Ok(Json(json!({ "token_infos": infos })))
}

async fn find_token(access: &Arc<Access>, token_id: &str) -> Result<PersonalAccessToken, Error> {
    access
        .store()
        .get_personal_access_token(token_id)
        .await?
        .ok_or_else(|| Error::not_found(format!("token `{token_id}` does not exist")))
}

async fn get_any(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(token_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let token = find_token(&access, &token_id).await?;
    Ok(Json(
        json!({ "token_info": managed_token_info(&access, &token).await? }),
    ))
}

async fn delete_any(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(token_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    find_token(&access, &token_id).await?;
    access
        .credentials()
        .delete_personal_access_token(&token_id)
        .await?;
    Ok(Json(json!({})))
}

/// The principal an on-behalf-of token is for: a service principal's application id, or any principal's SCIM id.
async fn token_owner(access: &Arc<Access>, application_id: &str) -> Result<Identity, Error> {
    if let Some(found) = access
        .store()
        .find_identity(IdentityKind::ServicePrincipal, application_id)
        .await?
    {
        return Ok(found);
    }
    let by_id = match application_id.parse::<i64>() {
        Ok(id) => access.store().get_identity(PrincipalId(id)).await?,
        Err(_) => None,
    };
    by_id
        .filter(|found| found.kind != IdentityKind::Group)
        .ok_or_else(|| {
            Error::not_found(format!(
                "no service principal or user with id `{application_id}`"
            ))
        })
}

async fn create_on_behalf_of(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiJson(request): ApiJson<CreateRequest>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let application_id = request
        .application_id
        .as_deref()
        .ok_or_else(|| Error::invalid_parameter("`application_id` is required"))?;
    let owner = token_owner(&access, application_id).await?;
    let scopes = scopes_for_new_token(&caller, request.scopes.as_deref())?;
    let comment = request.comment.unwrap_or_default();
    let issued = issue_personal_access_token(
        access.store(),
        owner.id,
        caller.identity.id,
        request.lifetime_seconds,
        comment,
        scopes,
    )
    .await?;
    Ok(created(issued))
}

async fn rotate_signing_key(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let kid = access.credentials().rotate_signing_key().await?;
    Ok(Json(json!({ "kid": kid })))
}
