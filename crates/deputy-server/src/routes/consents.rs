//! End-user consent (beyond Databricks, whose beta has none): with `consent-required` on, an agent endpoint may act
//! for a user only after that user consented to the scopes the endpoint declares. A consent records the scopes as
//! they were; an agent redeployed with more scopes needs a new consent.
//!
//! `POST /api/2.0/deputy/consents {endpoint_name}` consents (the caller needs `CAN_QUERY` on the endpoint), `GET`
//! lists the caller's consents, `DELETE .../{endpoint_name}` withdraws one. **Only the user themselves can consent:**
//! a delegated token (one that names an actor) is refused, so an agent can never consent for its user.

use super::{ApiRouter, Requires};
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated};
use axum::Json;
use axum::extract::{Path, State};
use deputy_access::Access;
use deputy_access::Error;
use deputy_access::credentials::Caller;
use deputy_authz::PermissionLevel;
use deputy_core::ApiScope;
use deputy_serving::Serving;
use deputy_store::Consent;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

pub fn routes(router: ApiRouter) -> ApiRouter {
    let serving = Requires::Scope(ApiScope::ServingEndpoints);
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

fn refuse_delegated(caller: &Caller) -> Result<(), Error> {
    if caller.is_delegated() {
        return Err(Error::permission_denied(
            "consent must be given by the user, not by an agent acting for them (this token names an actor)",
        ));
    }
    Ok(())
}

async fn give(
    State(access): State<Arc<Access>>,
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    ApiJson(request): ApiJson<ConsentRequest>,
) -> Result<Json<Value>, ApiError> {
    refuse_delegated(&caller)?;
    let name = request
        .endpoint_name
        .ok_or_else(|| Error::invalid_parameter("`endpoint_name` is required"))?;
    let (record, spec) =
        deputy_serving::endpoint_by_name(&serving, &caller, &name, PermissionLevel::CanQuery)
            .await?;
    let deputy_serving::EndpointSpec::Agent(agent) = spec else {
        return Err(ApiError(Error::invalid_parameter(format!(
            "`{name}` is not an agent: only agents act on behalf of users"
        ))));
    };
    let consent = Consent {
        user_id: caller.identity.id,
        endpoint_id: record.object_id.clone(),
        scopes: agent.user_scopes.clone(),
        granted_ms: deputy_access::clock::now_millis(),
    };
    access.store().put_consent(&consent).await?;
    Ok(Json(render(&record.name, &consent)))
}

async fn list(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Value>, ApiError> {
    let consents = access.store().consents_of(caller.identity.id).await?;
    let endpoints = access
        .store()
        .list_workspace_objects(deputy_serving::serving_object_type())
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
    State(access): State<Arc<Access>>,
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    Path(endpoint_name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    refuse_delegated(&caller)?;
    // Withdrawing needs no right on the endpoint: a user may always take back what they gave.
    let withdrawn = match deputy_serving::endpoint_record(&serving, &endpoint_name).await? {
        Some(record) => {
            access
                .store()
                .delete_consent(caller.identity.id, &record.object_id)
                .await?
        }
        None => false,
    };
    if !withdrawn {
        return Err(ApiError(Error::not_found(format!(
            "you have not consented to `{endpoint_name}`"
        ))));
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
