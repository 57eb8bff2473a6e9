//! End-user consent (beyond Databricks, whose beta has none): with `consent-required` on, an agent endpoint may act
//! for a user only after that user consented to the scopes the endpoint declares. A consent records the scopes as
//! they were; an agent redeployed with more scopes needs a new consent.
//!
//! `POST /api/2.0/deputy/consents {endpoint_name}` consents (the caller needs `CAN_QUERY` on the endpoint), `GET`
//! lists the caller's consents, `DELETE .../{endpoint_name}` withdraws one. **Only the user themselves can consent:**
//! a delegated token (one that names an actor) is refused, so an agent can never consent for its user.

use super::serving::{EndpointSpec, endpoint_by_name, endpoint_record};
use super::{Access, ApiRouter};
use crate::agents::DeployedAgent;
use crate::credentials::{Caller, Credential};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use deputy_authz::PermissionLevel;
use deputy_core::{ApiScope, ScopeSet};
use deputy_store::Consent;
use deputy_store::catalog::WorkspaceObjectRecord;
use serde::Deserialize;
use serde_json::{Value, json};

pub fn routes(router: ApiRouter) -> ApiRouter {
    let serving = Access::Scope(ApiScope::ServingEndpoints);
    router
        .post("/api/2.0/deputy/consents", serving, give)
        .get("/api/2.0/deputy/consents", serving, list)
        .delete(
            "/api/2.0/deputy/consents/{endpoint_name}",
            serving,
            withdraw,
        )
}

#[derive(Deserialize)]
struct ConsentRequest {
    endpoint_name: Option<String>,
}

fn refuse_delegated(caller: &Caller) -> Result<(), ApiError> {
    if let Credential::AccessToken { actor: Some(_), .. } = &caller.credential {
        return Err(ApiError::permission_denied(
            "consent must be given by the user, not by an agent acting for them (this token names an actor)",
        ));
    }
    Ok(())
}

async fn give(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<ConsentRequest>,
) -> Result<Json<Value>, ApiError> {
    refuse_delegated(&caller)?;
    let name = request
        .endpoint_name
        .ok_or_else(|| ApiError::invalid_parameter("`endpoint_name` is required"))?;
    let (record, spec) =
        endpoint_by_name(&state, &caller, &name, PermissionLevel::CanQuery).await?;
    let EndpointSpec::Agent(agent) = spec else {
        return Err(ApiError::invalid_parameter(format!(
            "`{name}` is not an agent: only agents act on behalf of users"
        )));
    };
    let consent = Consent {
        user_id: caller.identity.id,
        endpoint_id: record.object_id.clone(),
        scopes: agent.user_scopes.clone(),
        granted_ms: crate::clock::now_millis(),
    };
    state.store().put_consent(&consent).await?;
    Ok(Json(render(&record.name, &consent)))
}

async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let consents = state.store().consents_of(caller.identity.id).await?;
    let endpoints = state
        .store()
        .list_workspace_objects(super::serving::serving_object_type())
        .await?;
    let rendered: Vec<Value> = consents
        .iter()
        .filter_map(|consent| {
            let endpoint = endpoints
                .iter()
                .find(|record| record.object_id == consent.endpoint_id)?;
            Some(render(&endpoint.name, consent))
        })
        .collect();
    Ok(Json(json!({ "consents": rendered })))
}

async fn withdraw(
    State(state): State<AppState>,
    caller: Caller,
    Path(endpoint_name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    refuse_delegated(&caller)?;
    // Withdrawing needs no right on the endpoint: a user may always take back what they gave.
    let withdrawn = match endpoint_record(&state, &endpoint_name).await? {
        Some(record) => {
            state
                .store()
                .delete_consent(caller.identity.id, &record.object_id)
                .await?
        }
        None => false,
    };
    if !withdrawn {
        return Err(ApiError::not_found(format!(
            "you have not consented to `{endpoint_name}`"
        )));
    }
    Ok(Json(json!({})))
}

fn render(endpoint_name: &str, consent: &Consent) -> Value {
    json!({
        "endpoint_name": endpoint_name,
        "scopes": consent.scopes.split_whitespace().collect::<Vec<_>>(),
        "granted_timestamp": consent.granted_ms,
    })
}

/// Whether the caller consented to everything the agent declares; the refusal names what is missing and how to
/// consent. Called on the on-behalf-of path only when consent is required.
pub async fn check_consent(
    state: &AppState,
    caller: &Caller,
    record: &WorkspaceObjectRecord,
    agent: &DeployedAgent,
) -> Result<(), String> {
    let declared = ScopeSet::parse(&agent.user_scopes).map_err(|error| error.to_string())?;
    let consented = state
        .store()
        .consent(caller.identity.id, &record.object_id)
        .await
        .map_err(|error| error.to_string())?;
    let how = format!(
        "consent with `deputy agents consent {}` (POST /api/2.0/deputy/consents)",
        record.name
    );
    match consented {
        None => Err(format!(
            "`{}` has not consented to `{}` acting on their behalf with scopes [{declared}]; {how}",
            caller.identity.name, record.name
        )),
        Some(consent) => {
            let given = ScopeSet::parse(&consent.scopes).map_err(|error| error.to_string())?;
            if declared.is_subset_of(given) {
                return Ok(());
            }
            Err(format!(
                "`{}` consented to `{}` with scopes [{given}], but it now declares [{declared}]; {how}",
                caller.identity.name, record.name
            ))
        }
    }
}
