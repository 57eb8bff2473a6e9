//! Serving endpoints that run models: external OpenAI-compatible providers and the built-in local models, behind
//! the Databricks serving API (`/api/2.0/serving-endpoints`) and its query routes (`/serving-endpoints/{name}/
//! invocations`, and the OpenAI-compatible `/serving-endpoints/chat/completions`, `/responses` and `/embeddings` with
//! `model` = endpoint name). Streaming answers are server-sent events of `data:` lines only, ending with `data: [DONE]`.
//!
//! Querying needs `CAN_QUERY` on the endpoint and the `serving.serving-endpoints` scope; seeing it `CAN_VIEW`;
//! deleting it `CAN_MANAGE`. A provider key is stored with the endpoint and never returned or logged.

use super::{ApiRouter, Requires};
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use deputy_access::Access;
use deputy_access::Error;
use deputy_access::credentials::Caller;
use deputy_agents::DeployedAgent;
use deputy_agents::worker::{WorkerEvent, WorkerRequest};
use deputy_authz::{Action, PermissionLevel, WorkspaceObjectKind, WorkspaceObjectRef};
use deputy_core::ApiScope;
use deputy_models::types::{ChatCompletionRequest, EmbeddingRequest};
use deputy_serving::Serving;
use deputy_store::catalog::WorkspaceObjectRecord;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const SERVING: Requires = Requires::Scope(ApiScope::ServingEndpoints);

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

pub fn render_endpoint(
    access: &Arc<Access>,
    serving: &Arc<Serving>,
    caller: &Caller,
    record: &WorkspaceObjectRecord,
    spec: &deputy_serving::EndpointSpec,
) -> Value {
    let installed = match spec {
        deputy_serving::EndpointSpec::External { .. } | deputy_serving::EndpointSpec::Agent(_) => {
            true
        }
        _ => deputy_models::installed_models(&serving.backends().models_dir).is_some(),
    };
    let mut entity = served_entity(record, spec, installed);
    if let deputy_serving::EndpointSpec::Agent(agent) = spec {
        entity["deputy_agent"]["worker_health"] = worker_health(serving, record, agent);
    }
    let levels = [
        PermissionLevel::CanManage,
        PermissionLevel::CanQuery,
        PermissionLevel::CanView,
    ];
    let object = WorkspaceObjectRef::new(WorkspaceObjectKind::ServingEndpoint, &record.object_id);
    let permission_level = levels
        .into_iter()
        .find(|level| {
            access
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
        "creator": access.directory().get(record.owner_id).map(|owner| owner.name.clone()),
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

/// An agent's workers now (Deputy's own field): a declarative agent runs inside the server; workers start on an
/// endpoint's first request after a start.
fn worker_health(
    serving: &Serving,
    record: &WorkspaceObjectRecord,
    agent: &DeployedAgent,
) -> Value {
    if agent.kind == deputy_agents::definition::AgentKind::Declarative {
        return json!({ "state": "IN_SERVER" });
    }
    match serving.agents().health(&record.object_id) {
        None => json!({ "state": "NOT_STARTED", "workers": agent.workers }),
        Some(health) => json!({
            "state": if health.running > 0 { "RUNNING" } else { "IDLE" },
            "workers": health.workers,
            "running": health.running,
            "busy": health.busy,
        }),
    }
}

/// The endpoint's one served entity, as the serving API describes it.
fn served_entity(
    record: &WorkspaceObjectRecord,
    spec: &deputy_serving::EndpointSpec,
    installed: bool,
) -> Value {
    match spec {
        deputy_serving::EndpointSpec::External {
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
        deputy_serving::EndpointSpec::BuiltinEmbedding => json!({
            "name": "all-MiniLM-L6-v2",
            "foundation_model": { "name": "all-MiniLM-L6-v2", "display_name": "all-MiniLM-L6-v2 (built in, CPU)" },
            "state": { "deployment": if installed { "DEPLOYMENT_READY" } else { "DEPLOYMENT_CREATING" } },
        }),
        deputy_serving::EndpointSpec::BuiltinChat => json!({
            "name": "SmolLM2-135M-Instruct",
            "foundation_model": { "name": "SmolLM2-135M-Instruct", "display_name": "SmolLM2-135M-Instruct (built in, CPU)" },
            "state": { "deployment": if installed { "DEPLOYMENT_READY" } else { "DEPLOYMENT_CREATING" } },
        }),
        deputy_serving::EndpointSpec::Agent(agent) => json!({
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
    }
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

/// Creates an endpoint serving one external model; the creator gets `CAN_MANAGE`.
async fn create(
    State(access): State<Arc<Access>>,
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    ApiJson(request): ApiJson<CreateRequest>,
) -> Result<Json<Value>, ApiError> {
    let name = deputy_serving::validate_endpoint_name(request.name)?;
    if deputy_serving::endpoint_by_name(&serving, &caller, &name, PermissionLevel::CanView)
        .await
        .is_ok()
    {
        return Err(ApiError(Error::already_exists(format!(
            "serving endpoint `{name}` already exists"
        ))));
    }
    let mut entities = request
        .config
        .map(|config| config.served_entities)
        .unwrap_or_default();
    if entities.len() != 1 {
        return Err(ApiError(Error::invalid_parameter(
            "`config.served_entities` must hold exactly one entity",
        )));
    }
    let entity = entities.remove(0);
    let external = entity.external_model.ok_or_else(|| {
        Error::invalid_parameter("only `external_model` entities can be served this way; agents are deployed with `deputy agents deploy`")
    })?;
    let openai = external
        .openai_config
        .ok_or_else(|| Error::invalid_parameter("`external_model.openai_config` is required"))?;
    if openai.openai_api_key.is_some() {
        return Err(ApiError(Error::invalid_parameter(
            "secret references are not supported yet; pass the key as `openai_api_key_plaintext`",
        )));
    }
    let base_url = openai
        .openai_api_base
        .unwrap_or_else(|| "https://api.openai.com/v1".into());
    if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
        return Err(ApiError(Error::invalid_parameter(
            "`openai_api_base` must be an http(s) URL",
        )));
    }
    let task = external.task.unwrap_or_else(|| "llm/v1/chat".into());
    if !matches!(task.as_str(), "llm/v1/chat" | "llm/v1/embeddings") {
        return Err(ApiError(Error::invalid_parameter(format!(
            "unsupported task `{task}`: use llm/v1/chat or llm/v1/embeddings"
        ))));
    }
    let model = external
        .name
        .ok_or_else(|| Error::invalid_parameter("`external_model.name` is required"))?;
    let spec = deputy_serving::EndpointSpec::External {
        task,
        provider: external.provider.unwrap_or_else(|| "openai".into()),
        entity_name: entity.name.unwrap_or_else(|| model.clone()),
        model,
        base_url,
        api_key: openai.openai_api_key_plaintext,
    };
    let id = uuid::Uuid::new_v4().simple().to_string();
    let record = WorkspaceObjectRecord {
        object_type: deputy_serving::serving_object_type().into(),
        object_id: id.clone(),
        name,
        owner_id: caller.identity.id,
        spec: serde_json::to_string(&spec).map_err(Error::internal)?,
        created_at: deputy_access::clock::now_millis(),
    };
    access
        .create_workspace_object(record.clone(), PermissionLevel::CanManage)
        .await?;
    Ok(Json(render_endpoint(
        &access, &serving, &caller, &record, &spec,
    )))
}

async fn list(
    State(access): State<Arc<Access>>,
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Value>, ApiError> {
    let mut endpoints = Vec::new();
    for record in access
        .store()
        .list_workspace_objects(deputy_serving::serving_object_type())
        .await?
    {
        let object =
            WorkspaceObjectRef::new(WorkspaceObjectKind::ServingEndpoint, &record.object_id);
        let view = Action::UseWorkspaceObject {
            object,
            level: PermissionLevel::CanView,
        };
        if access
            .decide(&caller, ApiScope::ServingEndpoints, view)
            .is_allowed()
        {
            endpoints.push(render_endpoint(
                &access,
                &serving,
                &caller,
                &record,
                &deputy_serving::spec_of(&record)?,
            ));
        }
    }
    Ok(Json(json!({ "endpoints": endpoints })))
}

async fn get(
    State(access): State<Arc<Access>>,
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (record, spec) =
        deputy_serving::endpoint_by_name(&serving, &caller, &name, PermissionLevel::CanView)
            .await?;
    Ok(Json(render_endpoint(
        &access, &serving, &caller, &record, &spec,
    )))
}

async fn delete(
    State(access): State<Arc<Access>>,
    State(serving): State<Arc<Serving>>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (record, _) =
        deputy_serving::endpoint_by_name(&serving, &caller, &name, PermissionLevel::CanManage)
            .await?;
    let deleted = access
        .store()
        .delete_workspace_object(deputy_serving::serving_object_type(), &record.object_id)
        .await;
    serving.backends().forget(&record.object_id);
    serving.agents().stop(&record.object_id);
    access.publish().await?;
    deleted?;
    Ok(Json(json!({})))
}

async fn invocations(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<Response, ApiError> {
    query(&state, &caller, &name, body, Dialect::Native).await
}

/// The OpenAI-style routes, which name the endpoint in the body's `model`.
async fn by_model(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<Value>,
    dialect: Dialect,
) -> Result<Response, ApiError> {
    let name = model_name(&body)?;
    query(&state, &caller, &name, body, dialect).await
}

fn model_name(body: &Value) -> Result<String, Error> {
    body["model"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::invalid_parameter("`model` must name a serving endpoint"))
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
    let (record, spec) =
        deputy_serving::endpoint_by_name(state.serving(), caller, name, PermissionLevel::CanQuery)
            .await?;
    if let deputy_serving::EndpointSpec::Agent(agent) = &spec {
        return invoke_agent(state, caller, &record, agent, body, dialect).await;
    }
    let backend = state
        .serving()
        .backends()
        .backend(&record.object_id, &spec)
        .await?;
    let embeddings = spec.task() == "llm/v1/embeddings";
    let body = match dialect {
        Dialect::Native => body,
        Dialect::Responses if embeddings => {
            return Err(ApiError(Error::invalid_parameter(format!(
                "`{name}` serves embeddings, which the Responses API does not ask for"
            ))));
        }
        Dialect::Responses => super::responses::chat_body(&body)?,
    };
    let mut response = if embeddings {
        let request: EmbeddingRequest = serde_json::from_value(body).map_err(|error| {
            Error::invalid_parameter(format!("not an embeddings request: {error}"))
        })?;
        Json(
            backend
                .embeddings(request)
                .await
                .map_err(deputy_serving::model_error)?,
        )
        .into_response()
    } else {
        let request: ChatCompletionRequest = serde_json::from_value(body).map_err(|error| {
            Error::invalid_parameter(format!("not a chat completions request: {error}"))
        })?;
        if request.stream == Some(true) {
            let chunks = backend
                .chat_stream(request)
                .await
                .map_err(deputy_serving::model_error)?;
            // An error mid-stream ends it with an error object in the Databricks shape.
            let chunks = chunks.map(|chunk| match chunk {
                Ok(chunk) => serde_json::to_value(&chunk).unwrap_or_default(),
                Err(error) => {
                    json!({ "error_code": error.error_code(), "message": error.to_string() })
                }
            });
            sse_response(in_dialect(chunks, dialect, &record.name))
        } else {
            let answer = backend
                .chat(request)
                .await
                .map_err(deputy_serving::model_error)?;
            let answer = serde_json::to_value(&answer).map_err(Error::internal)?;
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

/// Runs one request on the agent's workers for the caller: with the caller's downscoped token when on-behalf-of
/// access is on (audited), with none otherwise. The answer names the request in `x-request-id`, the id the audit
/// events of the agent's calls carry; a failed answer too, since the calls made before the failure are audited.
async fn invoke_agent(
    state: &AppState,
    caller: &Caller,
    record: &WorkspaceObjectRecord,
    agent: &DeployedAgent,
    body: Value,
    dialect: Dialect,
) -> Result<Response, ApiError> {
    let (user_token, request_id) =
        deputy_serving::user_token_for_agent(state.serving(), caller, record, agent).await?;
    let header = axum::http::HeaderValue::from_str(&request_id).map_err(Error::internal)?;
    let granted = (user_token, request_id);
    let answer = run_agent(state, caller, record, agent, body, dialect, granted).await;
    let mut response = answer.unwrap_or_else(IntoResponse::into_response);
    response.headers_mut().insert("x-request-id", header);
    Ok(response)
}

/// `granted`: the user's token for the agent, if any, and the request's id.
async fn run_agent(
    state: &AppState,
    caller: &Caller,
    record: &WorkspaceObjectRecord,
    agent: &DeployedAgent,
    body: Value,
    dialect: Dialect,
    (user_token, request_id): (Option<String>, String),
) -> Result<Response, ApiError> {
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let mut events = match state.serving().agents().pool(&record.object_id, agent) {
        // A declarative agent: Deputy runs its loop itself and reports as a worker does. The loop reads chat
        // messages, so a Responses-style request (`input`) is translated first, as the Python runtime does for
        // ChatAgents.
        None => {
            let body = match body.get("messages").is_none() && body.get("input").is_some() {
                true => super::responses::chat_body(&body)?,
                false => body,
            };
            crate::declarative_agent::invoke(state, &record.name, agent, user_token, &body, stream)
                .await?
        }
        Some((pool, fresh)) => {
            if fresh {
                deputy_serving::refresh_system_token(state.serving(), &record.object_id, agent)?;
                deputy_serving::keep_system_token_fresh(state.serving(), &record.object_id, agent);
            }
            let request = WorkerRequest {
                id: request_id,
                stream,
                payload: body,
                user_token,
                user_id: Some(caller.identity.name.clone()),
            };
            pool.invoke(request)
                .await
                .map_err(|error| Error::unavailable(error.to_string()))?
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
        }) => Err(ApiError(deputy_serving::agent_error(&error_code, message))),
        Some(WorkerEvent::Chunk(_)) | None => Err(ApiError(Error::internal(
            "the agent answered without a result",
        ))),
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
