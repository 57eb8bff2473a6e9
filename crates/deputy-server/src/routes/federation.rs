//! Token federation policies, in Databricks' account API shapes: account-wide policies (a trusted issuer's subject
//! claim names a user) at `/api/2.0/accounts/{account_id}/federationPolicies`, and service-principal policies
//! (workload identity federation) at `.../servicePrincipals/{service_principal_id}/federationPolicies`. Deputy's
//! one workspace is its account: `account_id` is the workspace id. Admins only. The exchange itself is on
//! `/oidc/v1/token` (`oauth.rs`).

use super::{ApiRouter, Requires};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Authenticated};
use axum::Json;
use axum::extract::{Path, State};
use deputy_access::{Access, Error};
use deputy_core::ApiScope;
use deputy_oidc::{Federation, NewFederationPolicy};
use deputy_store::{FederationPolicy, PrincipalId};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

const POLICIES: Requires = Requires::Scope(ApiScope::SettingsTokenManagement);
const ACCOUNT: &str = "/api/2.0/accounts/{account_id}/federationPolicies";
const ACCOUNT_ONE: &str = "/api/2.0/accounts/{account_id}/federationPolicies/{policy_id}";
const SERVICE_PRINCIPAL: &str =
    "/api/2.0/accounts/{account_id}/servicePrincipals/{service_principal_id}/federationPolicies";
const SERVICE_PRINCIPAL_ONE: &str = "/api/2.0/accounts/{account_id}/servicePrincipals/{service_principal_id}/federationPolicies/{policy_id}";

pub fn routes(router: ApiRouter) -> ApiRouter {
    router
        .post(ACCOUNT, POLICIES, create)
        .get(ACCOUNT, POLICIES, list)
        .get(ACCOUNT_ONE, POLICIES, get)
        .delete(ACCOUNT_ONE, POLICIES, delete)
        .post(SERVICE_PRINCIPAL, POLICIES, create)
        .get(SERVICE_PRINCIPAL, POLICIES, list)
        .get(SERVICE_PRINCIPAL_ONE, POLICIES, get)
        .delete(SERVICE_PRINCIPAL_ONE, POLICIES, delete)
}

/// The path's owner of the policies: the account (the workspace), and a service principal when the path names one.
#[derive(Deserialize)]
struct Owner {
    account_id: String,
    service_principal_id: Option<String>,
    policy_id: Option<String>,
}

impl Owner {
    /// The service principal the path names (`None`: account-wide), after checking the account is this workspace.
    fn service_principal(&self, access: &Access) -> Result<Option<PrincipalId>, Error> {
        super::check_account(access, &self.account_id)?;
        self.service_principal_id
            .as_deref()
            .map(|id| {
                id.parse::<i64>().map(PrincipalId).map_err(|_| {
                    Error::invalid_parameter(format!("service principal id `{id}` is not numeric"))
                })
            })
            .transpose()
    }

    fn policy_id(&self) -> &str {
        self.policy_id.as_deref().unwrap_or_default()
    }
}

#[derive(Deserialize, Default)]
struct PolicyBody {
    description: Option<String>,
    oidc_policy: Option<OidcPolicy>,
}

#[derive(Deserialize)]
struct OidcPolicy {
    issuer: Option<String>,
    #[serde(default)]
    audiences: Vec<String>,
    subject_claim: Option<String>,
    subject: Option<String>,
}

#[derive(Deserialize)]
struct CreateQuery {
    policy_id: Option<String>,
}

async fn create(
    State(access): State<Arc<Access>>,
    State(federation): State<Arc<Federation>>,
    Authenticated(caller): Authenticated,
    Path(owner): Path<Owner>,
    ApiQuery(query): ApiQuery<CreateQuery>,
    ApiJson(body): ApiJson<PolicyBody>,
) -> Result<Json<Value>, ApiError> {
    let service_principal_id = owner.service_principal(&access)?;
    let oidc = body
        .oidc_policy
        .ok_or_else(|| Error::invalid_parameter("`oidc_policy` is required"))?;
    let new = NewFederationPolicy {
        policy_id: query.policy_id,
        description: body.description,
        issuer: oidc
            .issuer
            .ok_or_else(|| Error::invalid_parameter("`oidc_policy.issuer` is required"))?,
        audiences: oidc.audiences,
        subject_claim: oidc.subject_claim,
        subject: oidc.subject,
        service_principal_id,
    };
    let policy = federation.create_policy(&caller, new).await?;
    Ok(Json(render(&access, &policy)))
}

async fn list(
    State(access): State<Arc<Access>>,
    State(federation): State<Arc<Federation>>,
    Authenticated(caller): Authenticated,
    Path(owner): Path<Owner>,
) -> Result<Json<Value>, ApiError> {
    let policies = federation
        .list_policies(&caller, owner.service_principal(&access)?)
        .await?;
    let rendered: Vec<Value> = policies
        .iter()
        .map(|policy| render(&access, policy))
        .collect();
    Ok(Json(json!({ "policies": rendered })))
}

async fn get(
    State(access): State<Arc<Access>>,
    State(federation): State<Arc<Federation>>,
    Authenticated(caller): Authenticated,
    Path(owner): Path<Owner>,
) -> Result<Json<Value>, ApiError> {
    let policy = federation
        .get_policy(
            &caller,
            owner.service_principal(&access)?,
            owner.policy_id(),
        )
        .await?;
    Ok(Json(render(&access, &policy)))
}

async fn delete(
    State(access): State<Arc<Access>>,
    State(federation): State<Arc<Federation>>,
    Authenticated(caller): Authenticated,
    Path(owner): Path<Owner>,
) -> Result<Json<Value>, ApiError> {
    federation
        .delete_policy(
            &caller,
            owner.service_principal(&access)?,
            owner.policy_id(),
        )
        .await?;
    Ok(Json(json!({})))
}

fn render(access: &Access, policy: &FederationPolicy) -> Value {
    let account = access.workspace_id();
    let name = match policy.service_principal_id {
        Some(sp) => format!(
            "accounts/{account}/servicePrincipals/{}/federationPolicies/{}",
            sp.0, policy.policy_id
        ),
        None => format!("accounts/{account}/federationPolicies/{}", policy.policy_id),
    };
    let created = super::rfc3339(policy.created_ms);
    let mut rendered = json!({
        "name": name,
        "uid": policy.policy_id,
        "policy_id": policy.policy_id,
        "description": policy.description,
        "oidc_policy": {
            "issuer": policy.issuer,
            "audiences": policy.audiences,
            "subject_claim": policy.subject_claim,
        },
        "create_time": created,
        "update_time": created,
    });
    if let Some(subject) = &policy.subject {
        rendered["oidc_policy"]["subject"] = json!(subject);
    }
    if let Some(sp) = policy.service_principal_id {
        rendered["service_principal_id"] = json!(sp.0);
    }
    rendered
}
