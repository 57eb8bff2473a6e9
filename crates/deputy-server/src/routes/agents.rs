//! Deploying agents behind serving endpoints, the on-behalf-of switch, and the audit log.
//!
//! `POST /api/2.0/deputy/agents` takes an agent on the server's disk (an MLflow model directory, a models-from-code
//! Python file, or an executable speaking the worker protocol), records what its author declared, gives the endpoint
//! its own service principal with the declared system resources, starts a worker to prove the agent loads, and only
//! then publishes the endpoint. Only admins deploy (the agent is a program on the server's disk); deploying to an
//! existing agent endpoint replaces its agent (CAN_MANAGE needed too).

use super::serving::{EndpointSpec, endpoint_by_name, render_endpoint, serving_object_type};
use super::{Access, ApiRouter};
use crate::agents::definition::{AgentKind, ResourceKind, SystemResource, read_definition};
use crate::agents::{
    AGENT_PRINCIPAL_PREFIX, CONSENT_SETTING, DeployedAgent, OBO_SETTING, copy_artifact,
};
use crate::credentials::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Query, State};
use deputy_authz::{
    Action, Decision, PermissionLevel, SecurableKind, SecurableRef, WorkspaceObjectKind,
    WorkspaceObjectRef,
};
use deputy_core::ApiScope;
use deputy_store::catalog::{GrantChange, WorkspaceObjectRecord};
use deputy_store::{IdentityKind, NewIdentity, PrincipalId};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;

pub fn routes(router: ApiRouter) -> ApiRouter {
    router
        .post(
            "/api/2.0/deputy/agents",
            Access::Scope(ApiScope::ServingEndpoints),
            deploy,
        )
        .get("/api/2.0/deputy/settings", Access::Authenticated, settings)
        .patch(
            "/api/2.0/deputy/settings",
            Access::Scope(ApiScope::SettingsWorkspaceConf),
            change_settings,
        )
        .get(
            "/api/2.0/deputy/audit",
            Access::Scope(ApiScope::DeputyAudit),
            audit,
        )
}

#[derive(Deserialize)]
struct DeployRequest {
    name: Option<String>,
    /// The agent on the server's disk.
    source_path: Option<PathBuf>,
    #[serde(default)]
    user_scopes: Vec<String>,
    /// `TYPE:NAME` entries.
    #[serde(default)]
    system_resources: Vec<String>,
    workers: Option<usize>,
}

const MAX_WORKERS: usize = 16;

async fn deploy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<DeployRequest>,
) -> Result<Json<Value>, ApiError> {
    // The agent is a program on the server's own disk that the server then runs: choosing it is an admin's call,
    // never a user's (else any user could have the server execute any file it can read).
    caller.require_admin()?;
    let name = super::serving::validate_endpoint_name(request.name)?;
    let source = request
        .source_path
        .ok_or_else(|| ApiError::invalid_parameter("`source_path` is required"))?;
    if !source.is_absolute() {
        return Err(ApiError::invalid_parameter(
            "`source_path` must be an absolute path on the server",
        ));
    }
    let workers = request.workers.unwrap_or(2);
    if !(1..=MAX_WORKERS).contains(&workers) {
        return Err(ApiError::invalid_parameter(format!(
            "`workers` must be between 1 and {MAX_WORKERS}"
        )));
    }
    let definition = read_definition(&source, &request.user_scopes, &request.system_resources)
        .map_err(|error| ApiError::invalid_parameter(error.0))?;

    // Redeploying needs CAN_MANAGE on the existing endpoint, which must be an agent endpoint.
    let existing = match endpoint_by_name(&state, &caller, &name, PermissionLevel::CanManage).await
    {
        Ok((record, EndpointSpec::Agent(agent))) => Some((record, agent)),
        Ok(_) => {
            return Err(ApiError::already_exists(format!(
                "serving endpoint `{name}` exists and does not serve an agent"
            )));
        }
        Err(error) if error.error_code == "RESOURCE_DOES_NOT_EXIST" => None,
        Err(error) => return Err(error),
    };
    for resource in &definition.system_resources {
        check_deployer_holds(&state, &caller, resource).await?;
    }

    let endpoint_id = existing.as_ref().map_or_else(
        || uuid::Uuid::new_v4().simple().to_string(),
        |(record, _)| record.object_id.clone(),
    );
    let principal = match &existing {
        Some((_, agent)) => state
            .directory()
            .find(IdentityKind::ServicePrincipal, &agent.service_principal)
            .cloned()
            .ok_or_else(|| ApiError::internal("the endpoint's service principal is missing"))?,
        None => create_agent_principal(&state, &name).await?,
    };

    let deployment = state.agents().new_deployment_dir(&endpoint_id);
    let file_name = source
        .file_name()
        .map_or_else(|| "agent".into(), |name| name.to_owned());
    let artifact = deployment.join(file_name);
    copy_artifact(&source, &artifact).map_err(|error| {
        ApiError::invalid_parameter(format!("cannot copy `{}`: {error}", source.display()))
    })?;
    let agent = DeployedAgent {
        kind: definition.kind,
        artifact,
        user_scopes: definition.user_scopes.to_string(),
        system_resources: definition.system_resources.clone(),
        service_principal: principal.name.clone(),
        workers,
    };

    let mut granted = Ok(());
    for resource in &definition.system_resources {
        granted = grant_to_agent(&state, principal.id, resource).await;
        if granted.is_err() {
            break;
        }
    }
    state.changes_committed().await?;
    granted?;

    // The new agent must start before it replaces anything: a broken agent fails the deploy, not the endpoint. A
    // declarative agent has no worker; its file was checked when it was read.
    if agent.kind != AgentKind::Declarative {
        let candidate = format!("{endpoint_id}.candidate");
        super::serving::refresh_system_token(&state, &candidate, &agent)?;
        let started = match state.agents().pool(&candidate, &agent) {
            Some((pool, _)) => pool.warm_up().await.map_err(|error| error.to_string()),
            None => Err("the agent has no worker to start".to_owned()),
        };
        state.agents().stop(&candidate);
        if let Err(error) = started {
            let _ = std::fs::remove_dir_all(&deployment);
            return Err(ApiError::invalid_parameter(format!(
                "the agent did not start: {error}"
            )));
        }
    }

    let spec = EndpointSpec::Agent(agent);
    let spec_text = serde_json::to_string(&spec).map_err(ApiError::internal)?;
    let record = match existing {
        Some((mut record, _)) => {
            state
                .store()
                .update_workspace_object_spec(serving_object_type(), &endpoint_id, &spec_text)
                .await?;
            state.changes_committed().await?;
            record.spec = spec_text;
            record
        }
        None => {
            let record = WorkspaceObjectRecord {
                object_type: serving_object_type().into(),
                object_id: endpoint_id.clone(),
                name,
                owner_id: caller.identity.id,
                spec: spec_text,
                created_at: crate::clock::now_millis(),
            };
            state
                .create_workspace_object(record.clone(), "CAN_MANAGE")
                .await?;
            record
        }
    };
    state.agents().stop(&endpoint_id);
    Ok(Json(render_endpoint(&state, &caller, &record, &spec)))
}

async fn create_agent_principal(
    state: &AppState,
    endpoint: &str,
) -> Result<deputy_store::Identity, ApiError> {
    let identity = NewIdentity {
        kind: IdentityKind::ServicePrincipal,
        name: uuid::Uuid::new_v4().to_string(),
        display_name: format!("{AGENT_PRINCIPAL_PREFIX}{endpoint}"),
        given_name: None,
        family_name: None,
        external_id: None,
        active: true,
    };
    let created = state
        .store()
        .create_identity(identity, crate::clock::now_millis())
        .await;
    let joined = match &created {
        Ok(principal) => {
            let users = state
                .directory()
                .find(IdentityKind::Group, crate::bootstrap::USERS_GROUP)
                .map(|group| group.id);
            match users {
                Some(users) => state
                    .store()
                    .add_group_member(users, principal.id)
                    .await
                    .map_err(ApiError::from),
                None => Ok(()),
            }
        }
        Err(_) => Ok(()),
    };
    state.changes_committed().await?;
    joined?;
    Ok(created?)
}

/// What the resource needs, as a decision to ask for the deployer (who must hold it) and as the grant or ACL
/// entry the agent's principal gets.
enum Need {
    Securable {
        securable: SecurableRef,
        action: Action,
        privilege: &'static str,
        scope: ApiScope,
    },
    Object {
        object: WorkspaceObjectRef,
        level: PermissionLevel,
        scope: ApiScope,
    },
}

async fn need_of(state: &AppState, resource: &SystemResource) -> Result<Need, ApiError> {
    let securable = |kind: SecurableKind, action: fn(SecurableRef) -> Action, privilege, scope| {
        let securable = SecurableRef::new(kind, &resource.name);
        Need::Securable {
            action: action(securable.clone()),
            securable,
            privilege,
            scope,
        }
    };
    Ok(match resource.kind {
        ResourceKind::Table => securable(
            SecurableKind::Table,
            Action::ReadTable,
            "SELECT",
            ApiScope::CatalogTables,
        ),
        ResourceKind::VectorSearchIndex => securable(
            SecurableKind::VectorIndex,
            Action::ReadTable,
            "SELECT",
            ApiScope::VectorSearchIndexes,
        ),
        ResourceKind::Function => securable(
            SecurableKind::Function,
            Action::ExecuteFunction,
            "EXECUTE",
            ApiScope::CatalogFunctions,
        ),
        ResourceKind::UcConnection => securable(
            SecurableKind::Connection,
            Action::UseConnection,
            "USE_CONNECTION",
            ApiScope::CatalogConnections,
        ),
        ResourceKind::ServingEndpoint => {
            let id = object_id_by_name(state, WorkspaceObjectKind::ServingEndpoint, &resource.name)
                .await?;
            Need::Object {
                object: WorkspaceObjectRef::new(WorkspaceObjectKind::ServingEndpoint, &id),
                level: PermissionLevel::CanQuery,
                scope: ApiScope::ServingEndpoints,
            }
        }
        ResourceKind::SqlWarehouse => {
            let id =
                object_id_by_name(state, WorkspaceObjectKind::Warehouse, &resource.name).await?;
            Need::Object {
                object: WorkspaceObjectRef::new(WorkspaceObjectKind::Warehouse, &id),
                level: PermissionLevel::CanUse,
                scope: ApiScope::SqlWarehouses,
            }
        }
        ResourceKind::GenieSpace => {
            let id =
                object_id_by_name(state, WorkspaceObjectKind::GenieSpace, &resource.name).await?;
            Need::Object {
                object: WorkspaceObjectRef::new(WorkspaceObjectKind::GenieSpace, &id),
                level: PermissionLevel::CanRun,
                scope: ApiScope::DashboardsGenie,
            }
        }
    })
}

/// A workspace object named by its name or its id.
async fn object_id_by_name(
    state: &AppState,
    kind: WorkspaceObjectKind,
    name: &str,
) -> Result<String, ApiError> {
    let object_type = deputy_catalog::object_type_of(kind);
    state
        .store()
        .list_workspace_objects(object_type)
        .await?
        .into_iter()
        .find(|record| record.name == name || record.object_id == name)
        .map(|record| record.object_id)
        .ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "system resource `{name}`: no {} of that name",
                kind.name()
            ))
        })
}

/// Whether `caller` may use `resource` as an agent needs it, asked under `scope` (the API the use goes through) or
/// else under the scope of the resource's own API; with the scope asked under.
pub(crate) async fn resource_decision(
    state: &AppState,
    caller: &Caller,
    resource: &SystemResource,
    scope: Option<ApiScope>,
) -> Result<(Decision, ApiScope), ApiError> {
    Ok(match need_of(state, resource).await? {
        Need::Securable {
            action, scope: own, ..
        } => {
            let scope = scope.unwrap_or(own);
            (state.decide(caller, scope, action), scope)
        }
        Need::Object {
            object,
            level,
            scope: own,
        } => {
            let scope = scope.unwrap_or(own);
            let action = Action::UseWorkspaceObject { object, level };
            (state.decide(caller, scope, action), scope)
        }
    })
}

/// The deployer hands the agent rights they hold themselves, never more.
async fn check_deployer_holds(
    state: &AppState,
    caller: &Caller,
    resource: &SystemResource,
) -> Result<(), ApiError> {
    let (decision, scope) = resource_decision(state, caller, resource, None).await?;
    if decision.is_allowed() {
        return Ok(());
    }
    Err(ApiError::permission_denied(format!(
        "you cannot give the agent the {} `{}` ({scope}): {}",
        resource.kind.key(),
        resource.name,
        decision
            .reasons
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    )))
}

async fn grant_to_agent(
    state: &AppState,
    principal: PrincipalId,
    resource: &SystemResource,
) -> Result<(), ApiError> {
    match need_of(state, resource).await? {
        Need::Object { object, level, .. } => Ok(state
            .store()
            .set_object_acl(
                deputy_catalog::object_type_of(object.kind()),
                object.id(),
                &[(principal, level.wire_name().into())],
                false,
            )
            .await?),
        Need::Securable {
            securable,
            privilege,
            ..
        } => {
            // The privilege, and the usage chain above it (connections hang off the metastore: no chain).
            let mut grants = vec![(
                securable.kind(),
                securable.full_name().to_owned(),
                privilege,
            )];
            let parts: Vec<&str> = securable.full_name().split('.').collect();
            if parts.len() == 3 {
                grants.push((
                    SecurableKind::Schema,
                    format!("{}.{}", parts[0], parts[1]),
                    "USE_SCHEMA",
                ));
                grants.push((SecurableKind::Catalog, parts[0].to_owned(), "USE_CATALOG"));
            }
            for (kind, full_name, privilege) in grants {
                let record = state
                    .store()
                    .find_securable(deputy_catalog::namespace_of(kind), &full_name)
                    .await?
                    .ok_or_else(|| {
                        ApiError::invalid_parameter(format!(
                            "system resource `{full_name}` does not exist"
                        ))
                    })?;
                let change = GrantChange {
                    principal_id: principal,
                    add: vec![privilege.to_owned()],
                    remove: Vec::new(),
                };
                state.store().change_grants(record.id, &[change]).await?;
            }
            Ok(())
        }
    }
}

async fn settings(State(state): State<AppState>) -> Json<Value> {
    Json(current_settings(&state))
}

fn current_settings(state: &AppState) -> Value {
    json!({
        OBO_SETTING: state.agents().obo_enabled(),
        CONSENT_SETTING: state.agents().consent_required(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsChange {
    #[serde(rename = "obo-enabled")]
    obo_enabled: Option<bool>,
    #[serde(rename = "consent-required")]
    consent_required: Option<bool>,
}

/// Turns on-behalf-of-user access, and the consent it requires, on or off for every agent (admins only).
async fn change_settings(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(change): ApiJson<SettingsChange>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let flag = |on: bool| if on { "true" } else { "false" };
    if let Some(enabled) = change.obo_enabled {
        state
            .store()
            .set_setting(OBO_SETTING, flag(enabled))
            .await?;
        state.agents().set_obo_enabled(enabled);
    }
    if let Some(required) = change.consent_required {
        state
            .store()
            .set_setting(CONSENT_SETTING, flag(required))
            .await?;
        state.agents().set_consent_required(required);
    }
    Ok(Json(current_settings(&state)))
}

#[derive(Deserialize)]
struct AuditQuery {
    after: Option<i64>,
    limit: Option<u32>,
}

/// Audit events after a sequence number, oldest first (admins only).
async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let limit = query.limit.unwrap_or(100).clamp(1, 1000);
    let events = state
        .store()
        .audit_events_after(query.after.unwrap_or(0), limit)
        .await?;
    let next = events.last().map(|event| event.seq);
    Ok(Json(json!({ "events": events, "last_seq": next })))
}
