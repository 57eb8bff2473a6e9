//! Deploying agents behind serving endpoints, the on-behalf-of switch, and the audit log and its retention.
//!
//! `POST /api/2.0/deputy/agents` takes an agent on the server's disk (an MLflow model directory, a models-from-code
//! Python file, or an executable speaking the worker protocol), records what its author declared, gives the endpoint
//! its own service principal with the declared system resources, starts a worker to prove the agent loads, and only
//! then publishes the endpoint. Only admins deploy (the agent is a program on the server's disk); deploying to an
//! existing agent endpoint replaces its agent (CAN_MANAGE needed too).

use super::{ApiRouter, Requires};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Authenticated};
use axum::Json;
use axum::extract::State;
use deputy_access::Access;
use deputy_access::Error;
use deputy_access::audit_retention::AuditRetention;
use deputy_access::credentials::Caller;
use deputy_agents::definition::{AgentKind, read_definition};
use deputy_agents::resources::SystemResource;
use deputy_agents::{
    AGENT_PRINCIPAL_PREFIX, CONSENT_SETTING, DeployedAgent, OBO_SETTING, copy_artifact,
};
use deputy_authz::{PermissionLevel, SecurableKind};
use deputy_core::ApiScope;
use deputy_serving::Serving;
use deputy_store::catalog::{GrantChange, WorkspaceObjectRecord};
use deputy_store::{AuditFilter, IdentityKind, NewIdentity, PrincipalId};
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::Arc;

pub fn routes(router: ApiRouter) -> ApiRouter {
    router
        .post(
            "/api/2.0/deputy/agents",
            Requires::Scope(ApiScope::ServingEndpoints),
            deploy,
        )
        .get(
            "/api/2.0/deputy/settings",
            Requires::Authenticated,
            settings,
        )
        .patch(
            "/api/2.0/deputy/settings",
            Requires::Scope(ApiScope::SettingsWorkspaceConf),
            change_settings,
        )
        .get(
            "/api/2.0/deputy/audit",
            Requires::Scope(ApiScope::DeputyAudit),
            audit,
        )
        .get(
            "/api/2.0/deputy/audit/retention",
            Requires::Scope(ApiScope::DeputyAudit),
            audit_retention,
        )
        .put(
            "/api/2.0/deputy/audit/retention",
            Requires::Scope(ApiScope::SettingsWorkspaceConf),
            change_audit_retention,
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
    State(access): State<Arc<Access>>,
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    ApiJson(request): ApiJson<DeployRequest>,
) -> Result<Json<Value>, ApiError> {
    // The agent is a program on the server's own disk that the server then runs: choosing it is an admin's call,
    // never a user's (else any user could have the server execute any file it can read).
    caller.require_admin()?;
    let name = deputy_serving::validate_endpoint_name(request.name)?;
    let (source, workers) = source_and_workers(request.source_path, request.workers)?;
    let definition = read_definition(&source, &request.user_scopes, &request.system_resources)
        .map_err(|error| Error::invalid_parameter(error.0))?;

    let existing = existing_agent_endpoint(&serving, &caller, &name).await?;
    for resource in &definition.system_resources {
        check_deployer_holds(&access, &caller, resource).await?;
    }

    let endpoint_id = existing.as_ref().map_or_else(
        || uuid::Uuid::new_v4().simple().to_string(),
        |(record, _)| record.object_id.clone(),
    );
    let principal = match &existing {
        Some((_, agent)) => access
            .directory()
            .find(IdentityKind::ServicePrincipal, &agent.service_principal)
            .cloned()
            .ok_or_else(|| Error::internal("the endpoint's service principal is missing"))?,
        None => create_agent_principal(&access, &name).await?,
    };

    let deployment = serving.agents().new_deployment_dir(&endpoint_id);
    let file_name = source
        .file_name()
        .map_or_else(|| "agent".into(), |name| name.to_owned());
    let artifact = deployment.join(file_name);
    copy_artifact(&source, &artifact).map_err(|error| {
        Error::invalid_parameter(format!("cannot copy `{}`: {error}", source.display()))
    })?;
    let agent = DeployedAgent {
        kind: definition.kind,
        artifact: serving.agents().recorded_artifact(&artifact),
        user_scopes: definition.user_scopes.to_string(),
        system_resources: definition.system_resources.clone(),
        service_principal: principal.name.clone(),
        workers,
    };

    let mut granted = Ok(());
    for resource in &definition.system_resources {
        granted = grant_to_agent(&access, principal.id, resource).await;
        if granted.is_err() {
            break;
        }
    }
    access.publish().await?;
    granted?;

    prove_it_starts(&serving, &endpoint_id, &agent, &deployment).await?;

    let spec = deputy_serving::EndpointSpec::Agent(agent);
    let record = publish_endpoint(
        &access,
        &caller,
        existing.map(|(record, _)| record),
        &name,
        &endpoint_id,
        &spec,
    )
    .await?;
    serving.agents().stop(&endpoint_id);
    Ok(Json(super::serving::render_endpoint(
        &access, &serving, &caller, &record, &spec,
    )))
}

/// The agent's path on the server (absolute) and its worker count (default 2, at most `MAX_WORKERS`).
fn source_and_workers(
    source: Option<PathBuf>,
    workers: Option<usize>,
) -> Result<(PathBuf, usize), Error> {
    let source = source.ok_or_else(|| Error::invalid_parameter("`source_path` is required"))?;
    if !source.is_absolute() {
        return Err(Error::invalid_parameter(
            "`source_path` must be an absolute path on the server",
        ));
    }
    let workers = workers.unwrap_or(2);
    if !(1..=MAX_WORKERS).contains(&workers) {
        return Err(Error::invalid_parameter(format!(
            "`workers` must be between 1 and {MAX_WORKERS}"
        )));
    }
    Ok((source, workers))
}

/// The agent endpoint a redeploy replaces, if `name` exists: redeploying needs CAN_MANAGE on it, and it must serve
/// an agent.
async fn existing_agent_endpoint(
    serving: &Arc<Serving>,
    caller: &Caller,
    name: &str,
) -> Result<Option<(WorkspaceObjectRecord, DeployedAgent)>, Error> {
    let found =
        deputy_serving::endpoint_by_name(serving, caller, name, PermissionLevel::CanManage).await;
    match found {
        Ok((record, deputy_serving::EndpointSpec::Agent(agent))) => Ok(Some((record, agent))),
        Ok(_) => Err(Error::already_exists(format!(
            "serving endpoint `{name}` exists and does not serve an agent"
        ))),
        Err(error) if error.is_not_found() => Ok(None),
        Err(error) => Err(error),
    }
}

/// The new agent must start before it replaces anything: a broken agent fails the deploy, not the endpoint. A
/// declarative agent has no worker; its file was checked when it was read.
async fn prove_it_starts(
    serving: &Arc<Serving>,
    endpoint_id: &str,
    agent: &DeployedAgent,
    deployment: &std::path::Path,
) -> Result<(), Error> {
    if agent.kind == AgentKind::Declarative {
        return Ok(());
    }
    let candidate = format!("{endpoint_id}.candidate");
    deputy_serving::refresh_system_token(serving, &candidate, agent)?;
    let started = match serving.agents().pool(&candidate, agent) {
        Some((pool, _)) => pool.warm_up().await.map_err(|error| error.to_string()),
        None => Err("the agent has no worker to start".to_owned()),
    };
    serving.agents().stop(&candidate);
    if let Err(error) = started {
        let _ = std::fs::remove_dir_all(deployment);
        return Err(Error::invalid_parameter(format!(
            "the agent did not start: {error}"
        )));
    }
    Ok(())
}

/// Stores the endpoint's new spec (replacing the agent of an existing endpoint, or creating the endpoint with the
/// deployer as its manager) and publishes it.
async fn publish_endpoint(
    access: &Arc<Access>,
    caller: &Caller,
    existing: Option<WorkspaceObjectRecord>,
    name: &str,
    endpoint_id: &str,
    spec: &deputy_serving::EndpointSpec,
) -> Result<WorkspaceObjectRecord, Error> {
    let spec_text = serde_json::to_string(spec).map_err(Error::internal)?;
    Ok(match existing {
        Some(mut record) => {
            access
                .store()
                .update_workspace_object_spec(
                    deputy_serving::serving_object_type(),
                    endpoint_id,
                    &spec_text,
                )
                .await?;
            access.publish().await?;
            record.spec = spec_text;
            record
        }
        None => {
            let record = WorkspaceObjectRecord {
                object_type: deputy_serving::serving_object_type().into(),
                object_id: endpoint_id.to_owned(),
                name: name.to_owned(),
                owner_id: caller.identity.id,
                spec: spec_text,
                created_at: deputy_access::clock::now_millis(),
            };
            access
                .create_workspace_object(record.clone(), PermissionLevel::CanManage)
                .await?;
            record
        }
    })
}

async fn create_agent_principal(
    access: &Arc<Access>,
    endpoint: &str,
) -> Result<deputy_store::Identity, Error> {
    let identity = NewIdentity {
        kind: IdentityKind::ServicePrincipal,
        name: uuid::Uuid::new_v4().to_string(),
        display_name: format!("{AGENT_PRINCIPAL_PREFIX}{endpoint}"),
        given_name: None,
        family_name: None,
        external_id: None,
        active: true,
    };
    let created = access
        .store()
        .create_identity(identity, deputy_access::clock::now_millis())
        .await;
    let joined = match &created {
        Ok(principal) => {
            let users = access
                .directory()
                .find(IdentityKind::Group, deputy_access::directory::USERS_GROUP)
                .map(|group| group.id);
            match users {
                Some(users) => access
                    .store()
                    .add_group_member(users, principal.id)
                    .await
                    .map_err(Error::from),
                None => Ok(()),
            }
        }
        Err(_) => Ok(()),
    };
    access.publish().await?;
    joined?;
    Ok(created?)
}

/// The deployer hands the agent rights they hold themselves, never more.
async fn check_deployer_holds(
    access: &Arc<Access>,
    caller: &Caller,
    resource: &SystemResource,
) -> Result<(), Error> {
    let (decision, scope) =
        deputy_serving::resource_decision(access, caller, resource, None).await?;
    if decision.is_allowed() {
        return Ok(());
    }
    Err(Error::permission_denied(format!(
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
    access: &Arc<Access>,
    principal: PrincipalId,
    resource: &SystemResource,
) -> Result<(), Error> {
    match deputy_serving::need_of(access, resource).await? {
        deputy_serving::Need::Object { object, level, .. } => Ok(access
            .store()
            .set_object_acl(
                deputy_catalog::object_type_of(object.kind()),
                object.id(),
                &[(principal, level.wire_name().into())],
                false,
            )
            .await?),
        deputy_serving::Need::Securable {
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
                let record = access
                    .store()
                    .find_securable(deputy_catalog::namespace_of(kind), &full_name)
                    .await?
                    .ok_or_else(|| {
                        Error::invalid_parameter(format!(
                            "system resource `{full_name}` does not exist"
                        ))
                    })?;
                let change = GrantChange {
                    principal_id: principal,
                    add: vec![privilege.to_owned()],
                    remove: Vec::new(),
                };
                access.store().change_grants(record.id, &[change]).await?;
            }
            Ok(())
        }
    }
}

async fn settings(State(serving): State<Arc<Serving>>) -> Json<Value> {
    Json(current_settings(&serving))
}

fn current_settings(serving: &Arc<Serving>) -> Value {
    json!({
        OBO_SETTING: serving.agents().obo_enabled(),
        CONSENT_SETTING: serving.agents().consent_required(),
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
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    ApiJson(change): ApiJson<SettingsChange>,
) -> Result<Json<Value>, ApiError> {
    let change = deputy_agents::AgentSettingsChange {
        obo_enabled: change.obo_enabled,
        consent_required: change.consent_required,
    };
    deputy_serving::change_agent_settings(&serving, &caller, change).await?;
    Ok(Json(current_settings(&serving)))
}

#[derive(Deserialize)]
struct AuditQuery {
    after: Option<i64>,
    before: Option<i64>,
    limit: Option<u32>,
    user_name: Option<String>,
    endpoint: Option<String>,
    allowed: Option<bool>,
    request_id: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    contains: Option<String>,
    #[serde(default)]
    order: AuditOrder,
}

#[derive(Deserialize, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
enum AuditOrder {
    #[default]
    Asc,
    Desc,
}

/// Audit events in `seq` order (`order=desc`: newest first), at most `limit` (default 100, at most 1000), matching
/// every parameter given: `user_name`, `endpoint`, `allowed`, `request_id` exactly; `since_ms` (inclusive) and
/// `until_ms` (exclusive) on the event's time; `contains` in the API, securable, reason, endpoint or an actor
/// (ignoring ASCII case); `after`/`before` on `seq`. `last_seq` is the last event's `seq`: the next page's `after`,
/// or `before` when newest first. An empty text parameter is no filter. Admins read every event, anyone else their
/// own (see `Access::read_audit`).
async fn audit(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let text = |value: Option<String>| value.filter(|value| !value.is_empty());
    let filter = AuditFilter {
        user_name: text(query.user_name),
        endpoint: text(query.endpoint),
        allowed: query.allowed,
        request_id: text(query.request_id),
        since_ms: query.since_ms,
        until_ms: query.until_ms,
        contains: text(query.contains),
        after: query.after,
        before: query.before,
        descending: query.order == AuditOrder::Desc,
        limit: query.limit.unwrap_or(100).clamp(1, 1000),
    };
    let events = access.read_audit(&caller, filter).await?;
    let next = events.last().map(|event| event.seq);
    Ok(Json(json!({ "events": events, "last_seq": next })))
}

/// How long audit events are kept (admins only): `{"retention_days": N}`, or `{}` when they are kept forever.
async fn audit_retention(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(render_retention(
        access.audit_retention(&caller).await?,
    )))
}

/// Sets how long audit events are kept (admins only): `{"retention_days": N}` with N whole days from 1 to 36500, or
/// `{"retention_days": null}` to keep them forever. Answers as `GET` does. Events older than that are purged soon
/// after, and every hour (see `deputy_access::audit_retention`).
async fn change_audit_retention(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<Value>, ApiError> {
    let days = retention_days(&body)?;
    Ok(Json(render_retention(
        access.set_audit_retention(&caller, days).await?,
    )))
}

/// `retention_days` off the wire: a JSON integer, or null for forever; anything else is refused here, the range by
/// `AuditRetention::from_days`.
fn retention_days(body: &Value) -> Result<Option<i64>, Error> {
    let invalid = |message: &str| Error::invalid_parameter(message);
    let object = body
        .as_object()
        .ok_or_else(|| invalid("the body must be a JSON object with `retention_days`"))?;
    if let Some(unknown) = object.keys().find(|key| *key != "retention_days") {
        return Err(Error::invalid_parameter(format!(
            "unknown field `{unknown}`; the only field is `retention_days`"
        )));
    }
    match object.get("retention_days") {
        None => Err(invalid(
            "`retention_days` is required: a number of days, or null to keep audit events forever",
        )),
        Some(Value::Null) => Ok(None),
        Some(days) => days.as_i64().map(Some).ok_or_else(|| {
            Error::invalid_parameter(format!(
                "`retention_days` must be a whole number of days or null, not `{days}`"
            ))
        }),
    }
}

fn render_retention(retention: AuditRetention) -> Value {
    match retention {
        AuditRetention::Forever => json!({}),
        AuditRetention::Days(days) => json!({ "retention_days": days }),
    }
}
