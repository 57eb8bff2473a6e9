//! Serving endpoints that run models: external OpenAI-compatible providers and the built-in local models, behind
//! the Databricks serving API (`/api/2.0/serving-endpoints`) and its query routes (`/serving-endpoints/{name}/
//! invocations`, and the OpenAI-compatible `/serving-endpoints/chat/completions`, `/responses` and `/embeddings` with
//! `model` = endpoint name). Streaming answers are server-sent events of `data:` lines only, ending with `data: [DONE]`.
//!
//! Querying needs `CAN_QUERY` on the endpoint and the `serving.serving-endpoints` scope; seeing it `CAN_VIEW`;
//! deleting it `CAN_MANAGE`. A provider key is stored with the endpoint and never returned or logged.

use super::{Access, ApiRouter};
use crate::agents::DeployedAgent;
use crate::agents::worker::{WorkerEvent, WorkerRequest};
use crate::credentials::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use deputy_authz::{Action, PermissionLevel, WorkspaceObjectKind, WorkspaceObjectRef};
use deputy_catalog::object_type_of;
use deputy_core::ApiScope;
use deputy_models::types::{ChatCompletionRequest, EmbeddingRequest};
use deputy_models::{
    LocalChatModel, LocalEmbeddingModel, ModelBackend, ModelError, OpenAiCompatible, OpenAiConfig,
    SecretString,
};
use deputy_store::catalog::WorkspaceObjectRecord;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

const SERVING: Access = Access::Scope(ApiScope::ServingEndpoints);
pub const BUILTIN_EMBEDDING_ENDPOINT: &str = "deputy-embed-minilm";
pub const BUILTIN_CHAT_ENDPOINT: &str = "deputy-chat-smollm2";

pub fn routes(router: ApiRouter) -> ApiRouter {
    router
        .post("/api/2.0/serving-endpoints", SERVING, create)
        .get("/api/2.0/serving-endpoints", SERVING, list)
        .get("/api/2.0/serving-endpoints/{name}", SERVING, get)
        .delete("/api/2.0/serving-endpoints/{name}", SERVING, delete)
        .post(
            "/serving-endpoints/{name}/invocations",
            SERVING,
            invocations,
        )
        .post("/serving-endpoints/chat/completions", SERVING, |s, c, b| {
            by_model(s, c, b, Dialect::Native)
        })
        .post("/serving-endpoints/embeddings", SERVING, |s, c, b| {
            by_model(s, c, b, Dialect::Native)
        })
        .post("/serving-endpoints/responses", SERVING, |s, c, b| {
            by_model(s, c, b, Dialect::Responses)
        })
}

/// How the caller asked: in the endpoint's own shapes (Databricks invocations, OpenAI chat completions and
/// embeddings), or in the OpenAI Responses dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Native,
    Responses,
}

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
    fn task(&self) -> &str {
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

    fn forget(&self, id: &str) {
        self.loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(id);
    }

    async fn backend(
        &self,
        id: &str,
        spec: &EndpointSpec,
    ) -> Result<Arc<dyn ModelBackend>, ApiError> {
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
                    ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "TEMPORARILY_UNAVAILABLE",
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
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?
            }
        };
        self.loaded
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id.to_owned(), backend.clone());
        Ok(backend)
    }
}

fn model_error(error: ModelError) -> ApiError {
    let status =
        StatusCode::from_u16(error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ApiError::new(status, error.error_code(), error.to_string())
}

pub fn serving_object_type() -> &'static str {
    object_type_of(WorkspaceObjectKind::ServingEndpoint)
}

fn spec_of(record: &WorkspaceObjectRecord) -> Result<EndpointSpec, ApiError> {
    serde_json::from_str(&record.spec).map_err(ApiError::internal)
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
            spec: serde_json::to_string(&spec).unwrap_or_default(),
            created_at: crate::clock::now_millis(),
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
    state: &AppState,
    name: &str,
) -> Result<Option<WorkspaceObjectRecord>, ApiError> {
    let records = state
        .store()
        .list_workspace_objects(serving_object_type())
        .await?;
    Ok(records
        .into_iter()
        .find(|record| record.name.eq_ignore_ascii_case(name)))
}

/// The endpoint named `name` if the caller holds at least `level` on it; an endpoint the caller cannot view does not
/// exist for them.
pub async fn endpoint_by_name(
    state: &AppState,
    caller: &Caller,
    name: &str,
    level: PermissionLevel,
) -> Result<(WorkspaceObjectRecord, EndpointSpec), ApiError> {
    let missing = || ApiError::not_found(format!("serving endpoint `{name}` does not exist"));
    let record = endpoint_record(state, name).await?.ok_or_else(missing)?;
    let object = WorkspaceObjectRef::new(WorkspaceObjectKind::ServingEndpoint, &record.object_id);
    let view = Action::UseWorkspaceObject {
        object: object.clone(),
        level: PermissionLevel::CanView,
    };
    if !state
        .decide(caller, ApiScope::ServingEndpoints, view)
        .is_allowed()
    {
        return Err(missing());
    }
    state.authorize(
        caller,
        ApiScope::ServingEndpoints,
        Action::UseWorkspaceObject { object, level },
    )?;
    let spec = spec_of(&record)?;
    Ok((record, spec))
}

pub fn render_endpoint(
    state: &AppState,
    caller: &Caller,
    record: &WorkspaceObjectRecord,
    spec: &EndpointSpec,
) -> Value {
    let installed = match spec {
        EndpointSpec::External { .. } | EndpointSpec::Agent(_) => true,
        _ => deputy_models::installed_models(&state.serving().models_dir).is_some(),
    };
    let entity = match spec {
        EndpointSpec::External {
            provider,
            model,
            task,
            entity_name,
            ..
        } => json!({
            "name": entity_name,
            // The key is stored, never shown.
            "external_model": { "provider": provider, "name": model, "task": task },
            "state": { "deployment": "DEPLOYMENT_READY" },
        }),
        EndpointSpec::BuiltinEmbedding => json!({
            "name": "all-MiniLM-L6-v2",
            "foundation_model": { "name": "all-MiniLM-L6-v2", "display_name": "all-MiniLM-L6-v2 (built in, CPU)" },
            "state": { "deployment": if installed { "DEPLOYMENT_READY" } else { "DEPLOYMENT_CREATING" } },
        }),
        EndpointSpec::BuiltinChat => json!({
            "name": "SmolLM2-135M-Instruct",
            "foundation_model": { "name": "SmolLM2-135M-Instruct", "display_name": "SmolLM2-135M-Instruct (built in, CPU)" },
            "state": { "deployment": if installed { "DEPLOYMENT_READY" } else { "DEPLOYMENT_CREATING" } },
        }),
        EndpointSpec::Agent(agent) => json!({
            "name": record.name,
            "entity_name": agent.artifact.file_name().map(|name| name.to_string_lossy().into_owned()),
            "entity_version": "1",
            "state": { "deployment": "DEPLOYMENT_READY" },
            // Deputy's own fields: what the author declared, for consent and review.
            "deputy_agent": {
                "kind": agent.kind,
                "user_api_scopes": agent.user_scopes.split_whitespace().collect::<Vec<_>>(),
                "system_resources": agent.system_resources.iter().map(|resource| format!("{}:{}", resource.kind.key(), resource.name)).collect::<Vec<_>>(),
                "service_principal": agent.service_principal,
                "workers": agent.workers,
            },
        }),
    };
    let levels = [
        PermissionLevel::CanManage,
        PermissionLevel::CanQuery,
        PermissionLevel::CanView,
    ];
    let object = WorkspaceObjectRef::new(WorkspaceObjectKind::ServingEndpoint, &record.object_id);
    let permission_level = levels
        .into_iter()
        .find(|level| {
            state
                .decide(
                    caller,
                    ApiScope::ServingEndpoints,
                    Action::UseWorkspaceObject {
                        object: object.clone(),
                        level: *level,
                    },
                )
                .is_allowed()
        })
        .map(PermissionLevel::wire_name);
    json!({
        "id": record.object_id,
        "name": record.name,
        "creator": state.directory().get(record.owner_id).map(|owner| owner.name.clone()),
        "creation_timestamp": record.created_at,
        "last_updated_timestamp": record.created_at,
        "state": { "ready": if installed { "READY" } else { "NOT_READY" }, "config_update": "NOT_UPDATING" },
        "config": { "served_entities": [entity], "config_version": 1 },
        "task": spec.task(),
        "permission_level": permission_level,
        "route_optimized": false,
        "tags": [],
    })
}

#[derive(Deserialize)]
struct CreateRequest {
    name: Option<String>,
    config: Option<EndpointConfig>,
}

#[derive(Deserialize)]
struct EndpointConfig {
    #[serde(default)]
    served_entities: Vec<ServedEntityInput>,
}

#[derive(Deserialize)]
struct ServedEntityInput {
    name: Option<String>,
    external_model: Option<ExternalModelInput>,
}

#[derive(Deserialize)]
struct ExternalModelInput {
    provider: Option<String>,
    name: Option<String>,
    task: Option<String>,
    openai_config: Option<OpenAiInput>,
}

#[derive(Deserialize)]
struct OpenAiInput {
    openai_api_base: Option<String>,
    openai_api_key_plaintext: Option<String>,
    /// A secret reference (`{{secrets/scope/key}}`) on Databricks; Deputy has no secret scopes yet, so only a
    /// literal key works here and a reference is refused rather than sent upstream as a key.
    openai_api_key: Option<String>,
}

/// Endpoint names as Databricks allows them: letters, digits, `-` and `_`, at most 63.
pub fn validate_endpoint_name(name: Option<String>) -> Result<String, ApiError> {
    let name = name
        .filter(|name| !name.trim().is_empty())
        .ok_or_else(|| ApiError::invalid_parameter("`name` is required"))?;
    if name.len() > 63
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::invalid_parameter(
            "`name` must be at most 63 letters, digits, `-` or `_`",
        ));
    }
    Ok(name)
}

/// Creates an endpoint serving one external model; the creator gets `CAN_MANAGE`.
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<CreateRequest>,
) -> Result<Json<Value>, ApiError> {
    let name = validate_endpoint_name(request.name)?;
    if endpoint_by_name(&state, &caller, &name, PermissionLevel::CanView)
        .await
        .is_ok()
    {
        return Err(ApiError::already_exists(format!(
            "serving endpoint `{name}` already exists"
        )));
    }
    let mut entities = request
        .config
        .map(|config| config.served_entities)
        .unwrap_or_default();
    if entities.len() != 1 {
        return Err(ApiError::invalid_parameter(
            "`config.served_entities` must hold exactly one entity",
        ));
    }
    let entity = entities.remove(0);
    let external = entity.external_model.ok_or_else(|| {
        ApiError::invalid_parameter("only `external_model` entities can be served this way; agents are deployed with `deputy agents deploy`")
    })?;
    let openai = external
        .openai_config
        .ok_or_else(|| ApiError::invalid_parameter("`external_model.openai_config` is required"))?;
    if openai.openai_api_key.is_some() {
        return Err(ApiError::invalid_parameter(
            "secret references are not supported yet; pass the key as `openai_api_key_plaintext`",
        ));
    }
    let base_url = openai
        .openai_api_base
        .unwrap_or_else(|| "https://api.openai.com/v1".into());
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(ApiError::invalid_parameter(
            "`openai_api_base` must be an http(s) URL",
        ));
    }
    let task = external.task.unwrap_or_else(|| "llm/v1/chat".into());
    if !matches!(task.as_str(), "llm/v1/chat" | "llm/v1/embeddings") {
        return Err(ApiError::invalid_parameter(format!(
            "unsupported task `{task}`: use llm/v1/chat or llm/v1/embeddings"
        )));
    }
    let model = external
        .name
        .ok_or_else(|| ApiError::invalid_parameter("`external_model.name` is required"))?;
    let spec = EndpointSpec::External {
        task,
        provider: external.provider.unwrap_or_else(|| "openai".into()),
        entity_name: entity.name.unwrap_or_else(|| model.clone()),
        model,
        base_url,
        api_key: openai.openai_api_key_plaintext,
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let record = WorkspaceObjectRecord {
        object_type: serving_object_type().into(),
        object_id: id.clone(),
        name,
        owner_id: caller.identity.id,
        spec: serde_json::to_string(&spec).map_err(ApiError::internal)?,
        created_at: crate::clock::now_millis(),
    };
    state
        .create_workspace_object(record.clone(), "CAN_MANAGE")
        .await?;
    Ok(Json(render_endpoint(&state, &caller, &record, &spec)))
}

async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let mut endpoints = Vec::new();
    for record in state
        .store()
        .list_workspace_objects(serving_object_type())
        .await?
    {
        let object =
            WorkspaceObjectRef::new(WorkspaceObjectKind::ServingEndpoint, &record.object_id);
        let view = Action::UseWorkspaceObject {
            object,
            level: PermissionLevel::CanView,
        };
        if state
            .decide(&caller, ApiScope::ServingEndpoints, view)
            .is_allowed()
        {
            endpoints.push(render_endpoint(
                &state,
                &caller,
                &record,
                &spec_of(&record)?,
            ));
        }
    }
    Ok(Json(json!({ "endpoints": endpoints })))
}

async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (record, spec) = endpoint_by_name(&state, &caller, &name, PermissionLevel::CanView).await?;
    Ok(Json(render_endpoint(&state, &caller, &record, &spec)))
}

async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (record, _) = endpoint_by_name(&state, &caller, &name, PermissionLevel::CanManage).await?;
    let deleted = state
        .store()
        .delete_workspace_object(serving_object_type(), &record.object_id)
        .await;
    state.serving().forget(&record.object_id);
    state.agents().stop(&record.object_id);
    state.changes_committed().await?;
    deleted?;
    Ok(Json(json!({})))
}

async fn invocations(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    query(&state, &caller, &name, body, Dialect::Native).await
}

/// The OpenAI-style routes, which name the endpoint in the body's `model`.
async fn by_model(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Value>,
    dialect: Dialect,
) -> Result<Response, ApiError> {
    let name = model_name(&body)?;
    query(&state, &caller, &name, body, dialect).await
}

fn model_name(body: &Value) -> Result<String, ApiError> {
    body["model"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ApiError::invalid_parameter("`model` must name a serving endpoint"))
}

/// Runs one query on the endpoint's model: chat for chat endpoints (streamed as SSE when asked), embeddings for
/// embedding endpoints; agents run in their workers.
async fn query(
    state: &AppState,
    caller: &Caller,
    name: &str,
    body: Value,
    dialect: Dialect,
) -> Result<Response, ApiError> {
    let (record, spec) = endpoint_by_name(state, caller, name, PermissionLevel::CanQuery).await?;
    if let EndpointSpec::Agent(agent) = &spec {
        return invoke_agent(state, caller, &record, agent, body, dialect).await;
    }
    let backend = state.serving().backend(&record.object_id, &spec).await?;
    let embeddings = spec.task() == "llm/v1/embeddings";
    let body = match dialect {
        Dialect::Native => body,
        Dialect::Responses if embeddings => {
            return Err(ApiError::invalid_parameter(format!(
                "`{name}` serves embeddings, which the Responses API does not ask for"
            )));
        }
        Dialect::Responses => super::responses::chat_body(&body)?,
    };
    let mut response = if embeddings {
        let request: EmbeddingRequest = serde_json::from_value(body).map_err(|error| {
            ApiError::invalid_parameter(format!("not an embeddings request: {error}"))
        })?;
        Json(backend.embeddings(request).await.map_err(model_error)?).into_response()
    } else {
        let request: ChatCompletionRequest = serde_json::from_value(body).map_err(|error| {
            ApiError::invalid_parameter(format!("not a chat completions request: {error}"))
        })?;
        if request.stream == Some(true) {
            let chunks = backend.chat_stream(request).await.map_err(model_error)?;
            // An error mid-stream ends it with an error object in the Databricks shape.
            let chunks = chunks.map(|chunk| match chunk {
                Ok(chunk) => serde_json::to_value(&chunk).unwrap_or_default(),
                Err(error) => {
                    json!({ "error_code": error.error_code(), "message": error.to_string() })
                }
            });
            sse_response(in_dialect(chunks, dialect, &record.name))
        } else {
            let answer = backend.chat(request).await.map_err(model_error)?;
            let answer = serde_json::to_value(&answer).map_err(ApiError::internal)?;
            Json(match dialect {
                Dialect::Native => answer,
                Dialect::Responses => super::responses::response_from_chat(answer, &record.name),
            })
            .into_response()
        }
    };
    if let Ok(value) = axum::http::HeaderValue::from_str(&record.name) {
        response.headers_mut().insert("served-model-name", value);
    }
    Ok(response)
}

/// Stream events as the caller asked for them.
fn in_dialect(
    events: impl futures_util::Stream<Item = Value> + Send + 'static,
    dialect: Dialect,
    model: &str,
) -> futures_util::stream::BoxStream<'static, Value> {
    match dialect {
        Dialect::Native => events.boxed(),
        Dialect::Responses => {
            let translator = Arc::new(Mutex::new(super::responses::StreamTranslator::new(model)));
            let closing = Arc::clone(&translator);
            events
                .flat_map(move |chunk| {
                    let mut guard = translator
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    futures_util::stream::iter(guard.events(chunk))
                })
                .chain(
                    futures_util::stream::once(async move {
                        closing
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .finish()
                    })
                    .filter_map(|event| async move { event }),
                )
                .boxed()
        }
    }
}

/// How long an agent's on-behalf-of token lives: the longest a request may run. It names the request in its `jti`,
/// so the agent's calls with it are audited under the invocation.
const AGENT_USER_TOKEN_SECONDS: i64 = 600;

/// The invoking user's token for the agent: `sub` = the user, `act` = the endpoint's service principal on top of
/// whatever chain the caller already carries, scopes = the caller's ∩ the author's declaration. An agent that calls
/// another agent with such a token can only hand down fewer scopes.
fn on_behalf_of_token(
    state: &AppState,
    caller: &Caller,
    agent: &DeployedAgent,
) -> Result<(String, deputy_tokens::AccessClaims), ApiError> {
    let declared = deputy_core::ScopeSet::parse(&agent.user_scopes).map_err(ApiError::internal)?;
    let request = deputy_tokens::ExchangeRequest {
        scope: Some(declared),
        // The exchange puts the caller's own chain (if the caller is itself an agent) under this one.
        actor: Some(deputy_tokens::Actor {
            sub: agent.service_principal.clone(),
            act: None,
        }),
        audience: state.credentials().audience(),
        client_id: None,
        mode: deputy_tokens::ScopeMode::Intersect,
    };
    let subject = super::oauth::subject_claims(state, caller);
    let claims = deputy_tokens::exchange(
        &subject,
        &request,
        crate::clock::now_seconds(),
        AGENT_USER_TOKEN_SECONDS,
    )
    .map_err(|error| ApiError::permission_denied(format!("cannot act for you: {error}")))?;
    let token = state
        .credentials()
        .sign(&claims)
        .map_err(ApiError::internal)?;
    Ok((token, claims))
}

/// Writes a fresh system token of the endpoint's service principal for its workers.
pub fn refresh_system_token(
    state: &AppState,
    endpoint_id: &str,
    agent: &DeployedAgent,
) -> Result<(), ApiError> {
    let token = crate::agents::service_principal_token(
        state,
        &agent.service_principal,
        deputy_core::ScopeSet::all(),
        crate::agents::SYSTEM_TOKEN_LIFETIME_SECONDS,
    )?;
    state
        .agents()
        .write_system_token(endpoint_id, &token)
        .map_err(ApiError::internal)
}

/// Keeps the endpoint's system token fresh for as long as its workers run.
fn keep_system_token_fresh(state: &AppState, endpoint_id: &str, agent: &DeployedAgent) {
    let (state, endpoint_id, agent) = (state.clone(), endpoint_id.to_owned(), agent.clone());
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(crate::agents::SYSTEM_TOKEN_REFRESH).await;
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
fn agent_event(
    caller: &Caller,
    agent: &DeployedAgent,
    endpoint: &str,
    api: &str,
    allowed: bool,
    reason: &str,
) -> deputy_store::AuditEvent {
    let mut actors = vec![agent.service_principal.clone()];
    actors.extend(crate::audit::actors_of(caller));
    let mut event = crate::audit::now_event(
        caller,
        actors,
        Some(endpoint.to_owned()),
        api.to_owned(),
        allowed,
        reason.to_owned(),
    );
    event.securable = Some(format!("serving-endpoints/{endpoint}"));
    event
}

/// Runs one request on the agent's workers for the caller: with the caller's downscoped token when on-behalf-of
/// access is on (audited), with none otherwise.
async fn invoke_agent(
    state: &AppState,
    caller: &Caller,
    record: &WorkspaceObjectRecord,
    agent: &DeployedAgent,
    body: Value,
    dialect: Dialect,
) -> Result<Response, ApiError> {
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let (user_token, request_id) = if state.agents().obo_enabled() {
        if state.agents().consent_required()
            && let Err(reason) = super::consents::check_consent(state, caller, record, agent).await
        {
            let event = agent_event(
                caller,
                agent,
                &record.name,
                "serving.consent",
                false,
                &reason,
            );
            crate::audit::record(state, &[event]).await?;
            return Err(ApiError::permission_denied(reason));
        }
        let (token, claims) = on_behalf_of_token(state, caller, agent)?;
        let reason = format!(
            "{} may query `{}`; the agent acts with scopes [{}] (the caller's ∩ the declared [{}])",
            caller.identity.name, record.name, claims.scope, agent.user_scopes
        );
        let mut event = agent_event(
            caller,
            agent,
            &record.name,
            "serving.on-behalf-of-token",
            true,
            &reason,
        );
        event.request_id = claims.jti.clone();
        event.scope = Some(claims.scope.to_string());
        crate::audit::record(state, &[event]).await?;
        (Some(token), claims.jti)
    } else {
        (None, uuid::Uuid::new_v4().to_string())
    };
    let mut events = match state.agents().pool(&record.object_id, agent) {
        // A declarative agent: Deputy runs its loop itself and reports as a worker does. The loop reads chat
        // messages, so a Responses-style request (`input`) is translated first, as the Python runtime does for
        // ChatAgents.
        None => {
            let body = match body.get("messages").is_none() && body.get("input").is_some() {
                true => super::responses::chat_body(&body)?,
                false => body,
            };
            crate::agents::declarative::invoke(
                state,
                &record.name,
                agent,
                user_token,
                &body,
                stream,
            )
            .await?
        }
        Some((pool, fresh)) => {
            if fresh {
                refresh_system_token(state, &record.object_id, agent)?;
                keep_system_token_fresh(state, &record.object_id, agent);
            }
            let request = WorkerRequest {
                id: request_id,
                stream,
                payload: body,
                user_token,
                user_id: Some(caller.identity.name.clone()),
            };
            pool.invoke(request).await.map_err(|error| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "TEMPORARILY_UNAVAILABLE",
                    error.to_string(),
                )
            })?
        }
    };
    if stream {
        let events =
            futures_util::stream::poll_fn(move |context| events.poll_recv(context)).map(|event| {
                match event {
                    WorkerEvent::Chunk(data) | WorkerEvent::Result(data) => with_openai_delta(data),
                    WorkerEvent::Error {
                        error_code,
                        message,
                    } => json!({ "error_code": error_code, "message": message }),
                }
            });
        return Ok(sse_response(in_dialect(events, dialect, &record.name)));
    }
    match events.recv().await {
        Some(WorkerEvent::Result(data)) => Ok(Json(match dialect {
            Dialect::Native => with_openai_choices(data, &record.name),
            Dialect::Responses => super::responses::response_from_chat(data, &record.name),
        })
        .into_response()),
        Some(WorkerEvent::Error {
            error_code,
            message,
        }) => Err(agent_error(&error_code, message)),
        Some(WorkerEvent::Chunk(_)) | None => {
            Err(ApiError::internal("the agent answered without a result"))
        }
    }
}

/// A ChatAgent answer (`messages`) also as an OpenAI chat completion (`choices`), so the SDK's `query` and the
/// `openai` client read it too; other answers pass unchanged.
fn with_openai_choices(mut data: Value, endpoint: &str) -> Value {
    let last = data["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .cloned();
    if let (Some(message), Some(object)) = (last, data.as_object_mut())
        && !object.contains_key("choices")
    {
        let content = message["content"].clone();
        object.insert("object".into(), json!("chat.completion"));
        object.insert("model".into(), json!(endpoint));
        object.insert(
            "choices".into(),
            json!([{ "index": 0, "message": { "role": "assistant", "content": content }, "finish_reason": "stop" }]),
        );
    }
    data
}

/// A ChatAgent stream chunk (`delta`) also as an OpenAI chunk.
fn with_openai_delta(mut data: Value) -> Value {
    let delta = data.get("delta").cloned();
    if let (Some(delta), Some(object)) = (delta, data.as_object_mut())
        && !object.contains_key("choices")
    {
        object.insert("object".into(), json!("chat.completion.chunk"));
        object.insert(
            "choices".into(),
            json!([{ "index": 0, "delta": { "role": delta["role"], "content": delta["content"] }, "finish_reason": null }]),
        );
    }
    data
}

/// An agent's error with the status its code stands for.
fn agent_error(error_code: &str, message: String) -> ApiError {
    let (status, code) = match error_code {
        "BAD_REQUEST" | "INVALID_PARAMETER_VALUE" => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
        "PERMISSION_DENIED" => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
        "RESOURCE_DOES_NOT_EXIST" => (StatusCode::NOT_FOUND, "RESOURCE_DOES_NOT_EXIST"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
    };
    ApiError::new(status, code, message)
}

/// Server-sent events of JSON objects, `data:` lines only (MLflow's client refuses anything else), ending with
/// `data: [DONE]`.
fn sse_response(events: impl futures_util::Stream<Item = Value> + Send + 'static) -> Response {
    let events = events
        .map(|data| Ok::<Event, std::convert::Infallible>(Event::default().data(data.to_string())))
        .chain(futures_util::stream::once(async {
            Ok(Event::default().data("[DONE]"))
        }));
    Sse::new(events).into_response()
}

/// The spec of an endpoint that serves a chat model (external or built in); anything else is refused, since only a
/// chat model can write SQL for Genie.
pub fn chat_model_spec(record: &WorkspaceObjectRecord) -> Result<EndpointSpec, ApiError> {
    let spec = spec_of(record)?;
    match spec.task() {
        "llm/v1/chat" => Ok(spec),
        _ => Err(ApiError::invalid_parameter(format!(
            "serving endpoint `{}` does not serve a chat model",
            record.name
        ))),
    }
}

/// One chat completion on the endpoint's model for a server-side feature (Genie) that has already decided who may
/// use the endpoint.
pub async fn chat_on_endpoint(
    state: &AppState,
    record: &WorkspaceObjectRecord,
    request: ChatCompletionRequest,
) -> Result<deputy_models::types::ChatCompletionResponse, ApiError> {
    let spec = chat_model_spec(record)?;
    let backend = state.serving().backend(&record.object_id, &spec).await?;
    backend.chat(request).await.map_err(model_error)
}

/// Embeds `texts` with the endpoint's model for the caller, who needs `CAN_QUERY` on it: how vector search turns
/// text into vectors, whichever model (built in or external) is behind the endpoint.
pub async fn embed_texts(
    state: &AppState,
    caller: &Caller,
    endpoint_name: &str,
    texts: Vec<String>,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let (record, spec) =
        endpoint_by_name(state, caller, endpoint_name, PermissionLevel::CanQuery).await?;
    if spec.task() != "llm/v1/embeddings" {
        return Err(ApiError::invalid_parameter(format!(
            "serving endpoint `{endpoint_name}` does not serve embeddings"
        )));
    }
    let count = texts.len();
    let backend = state.serving().backend(&record.object_id, &spec).await?;
    let request = EmbeddingRequest::new(deputy_models::types::EmbeddingInput::Many(texts));
    let mut response = backend.embeddings(request).await.map_err(model_error)?;
    response.data.sort_by_key(|item| item.index);
    if response.data.len() != count {
        return Err(ApiError::internal(format!(
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
