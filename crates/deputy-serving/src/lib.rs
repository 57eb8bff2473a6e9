//! Model serving: what an endpoint serves ([`EndpointSpec`]), the model backends behind endpoints, finding an endpoint
//! for a caller, consent, and the on-behalf-of token an agent gets for one request.
//!
//! **Invariants**
//! - [`user_token_for_agent`] is the only code that mints a delegated token, and hands it out only after its audit
//!   event is durable: `sub` = the user, `act` = the endpoint's service principal over the caller's chain, scopes =
//!   the caller's ∩ the author's declaration (never wider), and a lifetime no longer than the caller's token.
//! - An endpoint the caller cannot view does not exist for them (404); one they can view but not use at the level
//!   asked is a 403.
//! - A provider key is stored with the endpoint and never returned or logged.

pub mod conversations;

use deputy_access::audit::AuditEntry;
use deputy_access::{Access, Caller, Error, ErrorCode};
use deputy_agents::resources::{ResourceKind, SystemResource};
use deputy_agents::{AgentHost, AgentSettingsChange, DeployedAgent};
use deputy_authz::{
    Action, Decision, PermissionLevel, SecurableKind, SecurableRef, WorkspaceObjectKind,
    WorkspaceObjectRef,
};
use deputy_catalog::object_type_of;
use deputy_core::{ApiScope, ScopeSet};
use deputy_models::types::{ChatCompletionRequest, EmbeddingRequest};
use deputy_models::{
    LocalChatModel, LocalEmbeddingModel, ModelBackend, ModelError, OpenAiCompatible, OpenAiConfig,
    SecretString,
};
use deputy_store::catalog::WorkspaceObjectRecord;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The serving service: the kernel it decides with, the loaded model backends, and the deployed agents' workers.
pub struct Serving {
    access: Arc<Access>,
    backends: ServingBackends,
    agents: AgentHost,
    /// The serving endpoints as read from the store, with the publish generation they were read at, so that finding
    /// an endpoint (every query does) reads the database only after a publish. Every write of an endpoint publishes
    /// before it answers (created and updated with `Access::create_workspace_object` or a spec update and
    /// `publish`, deleted then published).
    endpoints: Mutex<Option<(u64, Arc<[WorkspaceObjectRecord]>)>>,
}

impl Serving {
    pub fn new(access: Arc<Access>, backends: ServingBackends, agents: AgentHost) -> Serving {
        Serving {
            access,
            backends,
            agents,
            endpoints: Mutex::new(None),
        }
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The model backends behind serving endpoints, loaded on first use.
    pub fn backends(&self) -> &ServingBackends {
        &self.backends
    }

    /// Deployed agents' worker processes and the on-behalf-of switch.
    pub fn agents(&self) -> &AgentHost {
        &self.agents
    }
}

pub const BUILTIN_EMBEDDING_ENDPOINT: &str = "deputy-embed-minilm";

pub const BUILTIN_CHAT_ENDPOINT: &str = "deputy-chat-smollm2";

/// What an endpoint serves, as stored in its workspace object's `spec`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "serves", rename_all = "snake_case")]
pub enum EndpointSpec {
    External {
        task: String,
        provider: String,
        model: String,
        base_url: String,
        api_key: Option<String>,
        entity_name: String,
    },
    BuiltinEmbedding,
    BuiltinChat,
    /// An agent deployed with `deputy agents deploy`, run by worker processes.
    Agent(DeployedAgent),
}

impl EndpointSpec {
    pub fn task(&self) -> &str {
        match self {
            EndpointSpec::External { task, .. } => task,
            EndpointSpec::BuiltinEmbedding => "llm/v1/embeddings",
            EndpointSpec::BuiltinChat => "llm/v1/chat",
            EndpointSpec::Agent(_) => "agent/v1/chat",
        }
    }
}

/// Loaded backends by endpoint id, so a model is loaded (or an HTTP client built) once.
#[derive(Default)]
pub struct ServingBackends {
    loaded: Mutex<HashMap<String, Arc<dyn ModelBackend>>>,
    pub models_dir: std::path::PathBuf,
}

impl ServingBackends {
    pub fn new(models_dir: std::path::PathBuf) -> ServingBackends {
        ServingBackends {
            loaded: Mutex::default(),
            models_dir,
        }
    }

    pub fn forget(&self, id: &str) {
        self.loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(id);
    }

    pub async fn backend(
        &self,
        id: &str,
        spec: &EndpointSpec,
    ) -> Result<Arc<dyn ModelBackend>, Error> {
        if let Some(backend) = self
            .loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
        {
            return Ok(backend.clone());
        }
        let backend: Arc<dyn ModelBackend> = match spec {
            EndpointSpec::External {
                model,
                base_url,
                api_key,
                ..
            } => {
                let mut config = OpenAiConfig::new(base_url.clone(), model.clone());
                if let Some(key) = api_key {
                    config = config.with_api_key(SecretString::new(key.clone()));
                }
                Arc::new(OpenAiCompatible::new(config).map_err(model_error)?)
            }
            builtin => {
                let models_dir = self.models_dir.clone();
                let installed = deputy_models::installed_models(&models_dir).ok_or_else(|| {
                    Error::unavailable(
                        "the built-in models are not installed; run `deputy models install`",
                    )
                })?;
                let embedding = matches!(builtin, EndpointSpec::BuiltinEmbedding);
                // Loading parses hundreds of megabytes: keep it off the async workers.
                tokio::task::spawn_blocking(move || -> Result<Arc<dyn ModelBackend>, String> {
                    Ok(match embedding {
                        true => Arc::new(
                            LocalEmbeddingModel::load(&installed.embedding)
                                .map_err(|e| e.to_string())?,
                        ),
                        false => Arc::new(
                            LocalChatModel::load(&installed.chat).map_err(|e| e.to_string())?,
                        ),
                    })
                })
                .await
                .map_err(Error::internal)?
                .map_err(Error::internal)?
            }
        };
        self.loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id.to_owned(), backend.clone());
        Ok(backend)
    }
}

pub fn model_error(error: ModelError) -> Error {
    Error::new(
        ErrorCode::from_reported(error.error_code()),
        error.to_string(),
    )
}

pub fn serving_object_type() -> &'static str {
    object_type_of(WorkspaceObjectKind::ServingEndpoint)
}

pub fn spec_of(record: &WorkspaceObjectRecord) -> Result<EndpointSpec, Error> {
    serde_json::from_str(&record.spec).map_err(Error::internal)
}

/// Registers the built-in model endpoints once, owned by the admin and queryable by the `users` group.
pub async fn ensure_builtin_endpoints(
    store: &dyn deputy_store::Store,
    admin: deputy_store::PrincipalId,
    users: deputy_store::PrincipalId,
) -> Result<(), deputy_store::StoreError> {
    for (name, spec) in [
        (BUILTIN_EMBEDDING_ENDPOINT, EndpointSpec::BuiltinEmbedding),
        (BUILTIN_CHAT_ENDPOINT, EndpointSpec::BuiltinChat),
    ] {
        if store
            .list_workspace_objects(serving_object_type())
            .await?
            .iter()
            .any(|record| record.name == name)
        {
            continue;
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let record = WorkspaceObjectRecord {
            object_type: serving_object_type().into(),
            object_id: id.clone(),
            name: name.into(),
            owner_id: admin,
            spec: serde_json::to_string(&spec)
                .map_err(|error| deputy_store::StoreError::Corrupt(error.to_string()))?,
            created_at: deputy_access::clock::now_millis(),
        };
        store.create_workspace_object(record).await?;
        store
            .set_object_acl(
                serving_object_type(),
                &id,
                &[(users, "CAN_QUERY".into())],
                false,
            )
            .await?;
    }
    Ok(())
}

/// The endpoint named `name` (names are case-insensitive), whoever may see it.
pub async fn endpoint_record(
    state: &Serving,
    name: &str,
) -> Result<Option<WorkspaceObjectRecord>, Error> {
    let records = state.endpoints().await?;
    Ok(records
        .iter()
        .find(|record| record.name.eq_ignore_ascii_case(name))
        .cloned())
}

impl Serving {
    /// Stops the workers of endpoints that no longer exist (deleted through another replica: this one's own
    /// deletions stop them at once), so that they do not idle until this replica restarts.
    pub async fn stop_workers_of_deleted_endpoints(&self) -> Result<(), Error> {
        let generation = self.access.published_generation();
        let records = self.endpoints().await?;
        if self.access.published_generation() != generation {
            // A publish meanwhile may have listed an endpoint `records` lacks, whose workers must stay; that
            // publish's own announcement brings this check again.
            return Ok(());
        }
        let existing = records
            .iter()
            .map(|record| record.object_id.as_str())
            .collect();
        self.agents().stop_all_but(&existing);
        Ok(())
    }

    /// Every serving endpoint, current as of the last publish.
    async fn endpoints(&self) -> Result<Arc<[WorkspaceObjectRecord]>, Error> {
        // Read before the store: a publish after this point makes what is read below stale, and it is read again.
        let generation = self.access.published_generation();
        if let Some((read_at, records)) = &*self.endpoints_cache()
            && *read_at == generation
        {
            return Ok(records.clone());
        }
        let records: Arc<[WorkspaceObjectRecord]> = self
            .access
            .store()
            .list_workspace_objects(serving_object_type())
            .await?
            .into();
        *self.endpoints_cache() = Some((generation, records.clone()));
        Ok(records)
    }

    fn endpoints_cache(
        &self,
    ) -> std::sync::MutexGuard<'_, Option<(u64, Arc<[WorkspaceObjectRecord]>)>> {
        // Only a cache: a panic mid-update leaves at worst a stale generation, which is read again.
        self.endpoints
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The endpoint named `name` if the caller holds at least `level` on it; an endpoint the caller cannot view does not
/// exist for them.
pub async fn endpoint_by_name(
    state: &Serving,
    caller: &Caller,
    name: &str,
    level: PermissionLevel,
) -> Result<(WorkspaceObjectRecord, EndpointSpec), Error> {
    let missing = || Error::not_found(format!("serving endpoint `{name}` does not exist"));
    let record = endpoint_record(state, name).await?.ok_or_else(missing)?;
    state.access().authorize_workspace_object(
        caller,
        ApiScope::ServingEndpoints,
        WorkspaceObjectRef::new(WorkspaceObjectKind::ServingEndpoint, &record.object_id),
        level,
        &format!("serving endpoint `{name}`"),
    )?;
    let spec = spec_of(&record)?;
    Ok((record, spec))
}

/// Endpoint names as Databricks allows them: letters, digits, `-` and `_`, at most 63.
pub fn validate_endpoint_name(name: Option<String>) -> Result<String, Error> {
    let name = name
        .filter(|name| !name.trim().is_empty())
        .ok_or_else(|| Error::invalid_parameter("`name` is required"))?;
    if name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(Error::invalid_parameter(
            "`name` must be at most 63 letters, digits, `-` or `_`",
        ));
    }
    Ok(name)
}

/// How long an agent's on-behalf-of token lives: the longest a request may run. It names the request in its `jti`,
/// so the agent's calls with it are audited under the invocation.
pub const AGENT_USER_TOKEN_SECONDS: i64 = 600;

/// The claims of the invoking user's token for the agent: `sub` = the user, `act` = the endpoint's service principal
/// on top of whatever chain the caller already carries, scopes = the caller's ∩ the author's declaration. An agent
/// that calls another agent with such a token can only hand down fewer scopes.
fn on_behalf_of_claims(
    state: &Serving,
    caller: &Caller,
    agent: &DeployedAgent,
) -> Result<deputy_tokens::AccessClaims, Error> {
    let declared = deputy_core::ScopeSet::parse(&agent.user_scopes).map_err(Error::internal)?;
    let request = deputy_tokens::ExchangeRequest {
        scope: Some(declared),
        // The exchange puts the caller's own chain (if the caller is itself an agent) under this one.
        actor: Some(deputy_tokens::Actor {
            sub: agent.service_principal.clone(),
            act: None,
        }),
        audience: state.access().credentials().audience(),
        client_id: None,
        mode: deputy_tokens::ScopeMode::Intersect,
    };
    let subject = state.access().credentials().subject_claims(caller);
    deputy_tokens::exchange(
        &subject,
        &request,
        deputy_access::clock::now_seconds(),
        AGENT_USER_TOKEN_SECONDS,
    )
    .map_err(|error| Error::permission_denied(format!("cannot act for you: {error}")))
}

/// Writes a fresh system token of the endpoint's service principal for its workers.
pub fn refresh_system_token(
    state: &Serving,
    endpoint_id: &str,
    agent: &DeployedAgent,
) -> Result<(), Error> {
    let token = state.access().credentials().service_principal_token(
        &agent.service_principal,
        deputy_core::ScopeSet::all(),
        deputy_agents::SYSTEM_TOKEN_LIFETIME_SECONDS,
    )?;
    state
        .agents()
        .write_system_token(endpoint_id, &token)
        .map_err(Error::internal)
}

/// Keeps the endpoint's system token fresh for as long as its workers run.
pub fn keep_system_token_fresh(state: &Arc<Serving>, endpoint_id: &str, agent: &DeployedAgent) {
    let (state, endpoint_id, agent) = (state.clone(), endpoint_id.to_owned(), agent.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(deputy_agents::SYSTEM_TOKEN_REFRESH).await;
            if !state.agents().is_running(&endpoint_id) {
                break;
            }
            if let Err(error) = refresh_system_token(&state, &endpoint_id, &agent) {
                tracing::error!(endpoint_id, message = %error.message, "cannot refresh an agent's system token");
            }
        }
    });
}

/// An audit event of `agent` serving `endpoint` for the caller: the agent is the innermost actor, the endpoint
/// the securable.
fn agent_event(caller: &Caller, agent: &DeployedAgent, endpoint: &str, api: &str) -> AuditEntry {
    let mut actors = vec![agent.service_principal.clone()];
    actors.extend(deputy_access::audit::actors_of(caller));
    AuditEntry::new(caller, actors, Some(endpoint.to_owned()), api)
        .securable(format!("serving-endpoints/{endpoint}"))
}

/// An agent's error with the status its code stands for.
pub fn agent_error(error_code: &str, message: String) -> Error {
    let code = match error_code {
        "BAD_REQUEST" | "INVALID_PARAMETER_VALUE" => ErrorCode::BadRequest,
        "PERMISSION_DENIED" => ErrorCode::PermissionDenied,
        "RESOURCE_DOES_NOT_EXIST" => ErrorCode::ResourceDoesNotExist,
        _ => ErrorCode::InternalError,
    };
    Error::new(code, message)
}

/// The spec of an endpoint that serves a chat model (external or built in); anything else is refused, since only a
/// chat model can write SQL for Genie.
pub fn chat_model_spec(record: &WorkspaceObjectRecord) -> Result<EndpointSpec, Error> {
    let spec = spec_of(record)?;
    match spec.task() {
        "llm/v1/chat" => Ok(spec),
        _ => Err(Error::invalid_parameter(format!(
            "serving endpoint `{}` does not serve a chat model",
            record.name
        ))),
    }
}

/// One chat completion on the endpoint's model for a server-side feature (Genie) that has already decided who may
/// use the endpoint.
pub async fn chat_on_endpoint(
    state: &Serving,
    record: &WorkspaceObjectRecord,
    request: ChatCompletionRequest,
) -> Result<deputy_models::types::ChatCompletionResponse, Error> {
    let spec = chat_model_spec(record)?;
    let backend = state.backends().backend(&record.object_id, &spec).await?;
    backend.chat(request).await.map_err(model_error)
}

/// Embeds `texts` with the endpoint's model for the caller, who needs `CAN_QUERY` on it: how vector search turns
/// text into vectors, whichever model (built in or external) is behind the endpoint.
pub async fn embed_texts(
    state: &Serving,
    caller: &Caller,
    endpoint_name: &str,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>, Error> {
    let (record, spec) =
        endpoint_by_name(state, caller, endpoint_name, PermissionLevel::CanQuery).await?;
    if spec.task() != "llm/v1/embeddings" {
        return Err(Error::invalid_parameter(format!(
            "serving endpoint `{endpoint_name}` does not serve embeddings"
        )));
    }
    let count = texts.len();
    let backend = state.backends().backend(&record.object_id, &spec).await?;
    let request = EmbeddingRequest::new(deputy_models::types::EmbeddingInput::Many(texts));
    let mut response = backend.embeddings(request).await.map_err(model_error)?;
    response.data.sort_by_key(|item| item.index);
    if response.data.len() != count {
        return Err(Error::internal(format!(
            "the embedding model answered {} vectors for {count} texts",
            response.data.len()
        )));
    }
    Ok(response
        .data
        .into_iter()
        .map(|item| item.embedding)
        .collect())
}

/// Whether the caller consented to everything the agent declares; the refusal names what is missing and how to
/// consent. Called on the on-behalf-of path only when consent is required.
async fn check_consent(
    state: &Serving,
    caller: &Caller,
    record: &WorkspaceObjectRecord,
    agent: &DeployedAgent,
) -> Result<(), String> {
    let declared = ScopeSet::parse(&agent.user_scopes).map_err(|error| error.to_string())?;
    let consented = state
        .access()
        .store()
        .consent(caller.identity.id, &record.object_id)
        .await
        .map_err(|error| error.to_string())?;
    let how = format!(
        "consent on the console's Access page, with `deputy agents consent {}`, or POST /api/2.0/deputy/consents",
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

/// What the resource needs, as a decision to ask for the deployer (who must hold it) and as the grant or ACL
/// entry the agent's principal gets.
pub enum Need {
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

pub async fn need_of(access: &Access, resource: &SystemResource) -> Result<Need, Error> {
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
            let id =
                object_id_by_name(access, WorkspaceObjectKind::ServingEndpoint, &resource.name)
                    .await?;
            Need::Object {
                object: WorkspaceObjectRef::new(WorkspaceObjectKind::ServingEndpoint, &id),
                level: PermissionLevel::CanQuery,
                scope: ApiScope::ServingEndpoints,
            }
        }
        ResourceKind::SqlWarehouse => {
            let id =
                object_id_by_name(access, WorkspaceObjectKind::Warehouse, &resource.name).await?;
            Need::Object {
                object: WorkspaceObjectRef::new(WorkspaceObjectKind::Warehouse, &id),
                level: PermissionLevel::CanUse,
                scope: ApiScope::SqlWarehouses,
            }
        }
        ResourceKind::GenieSpace => {
            let id =
                object_id_by_name(access, WorkspaceObjectKind::GenieSpace, &resource.name).await?;
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
    access: &Access,
    kind: WorkspaceObjectKind,
    name: &str,
) -> Result<String, Error> {
    let object_type = deputy_catalog::object_type_of(kind);
    access
        .store()
        .list_workspace_objects(object_type)
        .await?
        .into_iter()
        .find(|record| record.name == name || record.object_id == name)
        .map(|record| record.object_id)
        .ok_or_else(|| {
            Error::invalid_parameter(format!(
                "system resource `{name}`: no {} of that name",
                kind.name()
            ))
        })
}

/// Whether `caller` may use `resource` as an agent needs it, asked under `scope` (the API the use goes through) or
/// else under the scope of the resource's own API; with the scope asked under.
pub async fn resource_decision(
    access: &Access,
    caller: &Caller,
    resource: &SystemResource,
    scope: Option<ApiScope>,
) -> Result<(Decision, ApiScope), Error> {
    Ok(match need_of(access, resource).await? {
        Need::Securable {
            action, scope: own, ..
        } => {
            let scope = scope.unwrap_or(own);
            (access.decide(caller, scope, action), scope)
        }
        Need::Object {
            object,
            level,
            scope: own,
        } => {
            let scope = scope.unwrap_or(own);
            let action = Action::UseWorkspaceObject { object, level };
            (access.decide(caller, scope, action), scope)
        }
    })
}

/// The audit API of a change to the on-behalf-of switches.
pub const SETTINGS_AUDIT_API: &str = "serving.settings";

/// Sets the on-behalf-of switches `change` names: admins only. Each attempt is audited before anything is written,
/// so a change that cannot be audited is not made.
pub async fn change_agent_settings(
    state: &Serving,
    caller: &Caller,
    change: AgentSettingsChange,
) -> Result<(), Error> {
    let changes: Vec<String> = change
        .switches()
        .map(|(key, on)| format!("{key} = {on}"))
        .collect();
    let entry = state
        .access()
        .audit_entry(caller, SETTINGS_AUDIT_API)
        .securable("settings");
    if let Err(refused) = caller.require_admin() {
        state
            .access()
            .record(&[entry.denied(refused.message.clone())])
            .await?;
        return Err(refused);
    }
    let reason = match changes.is_empty() {
        true => "no switch named".to_owned(),
        false => changes.join(", "),
    };
    state.access().record(&[entry.allowed(reason)]).await?;
    state
        .agents()
        .change_settings(state.access().store(), change)
        .await?;
    Ok(())
}

/// The token an agent gets for one request of `caller`, with the request's id: with on-behalf-of access on, the
/// caller's downscoped token (after their consent, when required), its minting audited; otherwise none, as on
/// Databricks when the author declared no user scopes.
pub async fn user_token_for_agent(
    state: &Serving,
    caller: &Caller,
    record: &WorkspaceObjectRecord,
    agent: &DeployedAgent,
) -> Result<(Option<String>, String), Error> {
    Ok(if state.agents().obo_enabled() {
        if state.agents().consent_required()
            && let Err(reason) = check_consent(state, caller, record, agent).await
        {
            let event =
                agent_event(caller, agent, &record.name, "serving.consent").denied(reason.clone());
            state.access().record(&[event]).await?;
            return Err(Error::permission_denied(reason));
        }
        let claims = on_behalf_of_claims(state, caller, agent)?;
        let reason = format!(
            "{} may query `{}`; the agent acts with scopes [{}] (the caller's ∩ the declared [{}])",
            caller.identity.name, record.name, claims.scope, agent.user_scopes
        );
        let event = agent_event(caller, agent, &record.name, "serving.on-behalf-of-token")
            .request_id(claims.jti.clone())
            .scope_named(Some(claims.scope.to_string()))
            .allowed(reason);
        // The audit commit (its fsync) and the signature run at once: `join!` starts the commit, then signs on this
        // thread while the database's thread writes. The token leaves here only once both are done.
        let events = [event];
        let (recorded, signed) = tokio::join!(state.access().record(&events), async {
            state.access().credentials().sign(&claims)
        });
        recorded?;
        let token = signed.map_err(Error::internal)?;
        (Some(token), claims.jti)
    } else {
        (None, uuid::Uuid::new_v4().to_string())
    })
}
