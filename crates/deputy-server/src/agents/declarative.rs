//! Declarative agents: a YAML file names a chat model endpoint, instructions and tools (vector indexes, SQL over
//! listed tables, Unity Catalog functions, other serving endpoints), and Deputy runs the tool-calling loop itself.
//!
//! Per request the agent acts with the invocation's on-behalf-of token (the caller's scopes ∩ `user_scopes`, the
//! endpoint's service principal as the actor), or, when on-behalf-of access is off, with its service principal's
//! own token narrowed to `user_scopes`, as other agents' system clients do. It first decides whether that credential
//! may use each tool (the decisions the APIs themselves will make), skipping or refusing what it may not
//! (`on_missing_access`). Then it calls the model endpoint as its service principal (the deploy granted it
//! `CAN_QUERY`, as a declared system resource) with the conversation and the tools' OpenAI definitions, and runs
//! the tool calls the model asks for through this server's own REST API, in process: the same router,
//! authentication, scope check, authorization and audit as any client's request, so there is one enforcement path.

use crate::agents::DeployedAgent;
use crate::agents::definition::{DefinitionError, ResourceKind, SystemResource};
use crate::agents::worker::WorkerEvent;
use crate::credentials::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use axum::body::Body;
use axum::http::{Method, Request, header};
use deputy_core::{ApiScope, ScopeSet};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::sync::mpsc;
use tower::ServiceExt;

/// A declarative agent as its author writes it (see the README for the format).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclarativeAgent {
    /// The chat serving endpoint (OpenAI-compatible, with tool calls) the agent thinks with.
    pub model: String,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub on_missing_access: OnMissingAccess,
    /// How many times the model may be called for one request.
    #[serde(default = "default_max_steps")]
    pub max_steps: u32,
    pub user_scopes: Vec<String>,
    /// Each tool is a one-key map (`- sql: {...}`), not the YAML tag (`- !sql {...}`) serde's YAML reads by default.
    #[serde(default, with = "serde_norway::with::singleton_map_recursive")]
    pub tools: Vec<ToolSpec>,
}

/// What to do when the request's credential cannot use one of the tools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissingAccess {
    /// Run without the tool; the response's `custom_outputs.skipped_tools` says which and why.
    Skip,
    /// Refuse the request with 403, naming what is missing. The default: a missing grant shows up at once rather
    /// than as a quietly weaker agent.
    #[default]
    Fail,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolSpec {
    VectorIndex(VectorIndexTool),
    Sql(SqlTool),
    Function(FunctionTool),
    Endpoint(EndpointTool),
}

/// Searches a vector index with the model's query text.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorIndexTool {
    pub name: String,
    pub description: String,
    /// The columns returned for each hit; the primary key when empty.
    #[serde(default)]
    pub columns: Vec<String>,
    #[serde(default = "default_num_results")]
    pub num_results: u32,
    /// `ANN`, `HYBRID` or `FULL_TEXT`; the index's own default when absent.
    #[serde(default)]
    pub query_type: Option<String>,
    #[serde(default)]
    pub tool_name: Option<String>,
}

/// Runs the model's read-only SQL query on a warehouse, over the listed tables only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlTool {
    pub warehouse_id: String,
    pub tables: Vec<String>,
    pub description: String,
    #[serde(default = "default_max_rows")]
    pub max_rows: u32,
    #[serde(default)]
    pub tool_name: Option<String>,
}

/// Calls a Unity Catalog SQL function on a warehouse, with the model's arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionTool {
    pub name: String,
    pub warehouse_id: String,
    pub description: String,
    #[serde(default)]
    pub tool_name: Option<String>,
}

/// Asks another serving endpoint (a model or an agent) one question.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointTool {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub tool_name: Option<String>,
}

fn default_max_steps() -> u32 {
    5
}

fn default_num_results() -> u32 {
    5
}

fn default_max_rows() -> u32 {
    50
}

const MAX_STEPS: u32 = 20;
const MAX_NUM_RESULTS: u32 = 100;
const MAX_ROWS: u32 = 1000;
/// A tool's output is cut to this many characters before the model sees it, so one large result cannot crowd the
/// conversation out of the model's context.
const MAX_TOOL_OUTPUT_CHARS: usize = 20_000;
/// One request's whole loop may run this long; the tokens it runs with live as long (the on-behalf-of token's
/// lifetime is the same, see `routes::serving`).
const REQUEST_TIMEOUT_SECONDS: i64 = 600;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(REQUEST_TIMEOUT_SECONDS as u64);

impl ToolSpec {
    /// The name the model calls the tool by: `tool_name`, else derived from the resource as the Databricks tool
    /// kits do (dots become `__`).
    pub fn tool_name(&self) -> String {
        let (explicit, derived) = match self {
            ToolSpec::VectorIndex(tool) => (&tool.tool_name, tool.name.replace('.', "__")),
            ToolSpec::Sql(tool) => (&tool.tool_name, "query_sql".to_owned()),
            ToolSpec::Function(tool) => (&tool.tool_name, tool.name.replace('.', "__")),
            ToolSpec::Endpoint(tool) => (&tool.tool_name, format!("ask_{}", tool.name)),
        };
        explicit.clone().unwrap_or(derived)
    }

    fn description(&self) -> &str {
        match self {
            ToolSpec::VectorIndex(tool) => &tool.description,
            ToolSpec::Sql(tool) => &tool.description,
            ToolSpec::Function(tool) => &tool.description,
            ToolSpec::Endpoint(tool) => &tool.description,
        }
    }

    /// The user API scope of the API the tool calls.
    pub fn scope(&self) -> ApiScope {
        match self {
            ToolSpec::VectorIndex(_) => ApiScope::VectorSearchIndexes,
            ToolSpec::Sql(_) | ToolSpec::Function(_) => ApiScope::SqlStatementExecution,
            ToolSpec::Endpoint(_) => ApiScope::ServingEndpoints,
        }
    }

    /// What the tool's user must be allowed to use: SELECT on the index; CAN_USE on the warehouse and SELECT on
    /// each table; EXECUTE on the function and CAN_USE on its warehouse; CAN_QUERY on the endpoint.
    fn resources(&self) -> Vec<SystemResource> {
        let resource = |kind, name: &str| SystemResource {
            kind,
            name: name.to_owned(),
        };
        match self {
            ToolSpec::VectorIndex(tool) => {
                vec![resource(ResourceKind::VectorSearchIndex, &tool.name)]
            }
            ToolSpec::Sql(tool) => {
                std::iter::once(resource(ResourceKind::SqlWarehouse, &tool.warehouse_id))
                    .chain(
                        tool.tables
                            .iter()
                            .map(|table| resource(ResourceKind::Table, table)),
                    )
                    .collect()
            }
            ToolSpec::Function(tool) => vec![
                resource(ResourceKind::Function, &tool.name),
                resource(ResourceKind::SqlWarehouse, &tool.warehouse_id),
            ],
            ToolSpec::Endpoint(tool) => vec![resource(ResourceKind::ServingEndpoint, &tool.name)],
        }
    }
}

/// Reads and checks a declarative agent: known keys only, known scopes, the scopes its tools need among them, valid
/// and distinct tool names, three-part Unity Catalog names.
pub fn parse(text: &str) -> Result<(DeclarativeAgent, ScopeSet), DefinitionError> {
    let agent: DeclarativeAgent = serde_norway::from_str(text)
        .map_err(|error| DefinitionError(format!("the agent file is not valid: {error}")))?;
    let invalid = |message: String| Err(DefinitionError(message));
    if agent.model.trim().is_empty() {
        return invalid("`model` must name a chat serving endpoint".into());
    }
    if !(1..=MAX_STEPS).contains(&agent.max_steps) {
        return invalid(format!("`max_steps` must be between 1 and {MAX_STEPS}"));
    }
    let scopes = ScopeSet::parse(&agent.user_scopes.join(" "))
        .map_err(|error| DefinitionError(format!("invalid entry in `user_scopes`: {error}")))?;
    let mut names = BTreeSet::new();
    for tool in &agent.tools {
        let name = tool.tool_name();
        if !names.insert(name.clone()) {
            return invalid(format!(
                "two tools are named `{name}`; give one a distinct `tool_name`"
            ));
        }
        if tool.description().trim().is_empty() {
            return invalid(format!("tool `{name}` needs a `description`"));
        }
        if !scopes.contains(tool.scope()) {
            return invalid(format!(
                "tool `{name}` needs the user API scope `{}`; add it to `user_scopes`",
                tool.scope()
            ));
        }
        match tool {
            ToolSpec::VectorIndex(vector) => {
                three_part_name(&name, "index", &vector.name)?;
                if !(1..=MAX_NUM_RESULTS).contains(&vector.num_results) {
                    return invalid(format!(
                        "tool `{name}`: `num_results` must be between 1 and {MAX_NUM_RESULTS}"
                    ));
                }
            }
            ToolSpec::Sql(sql) => {
                if sql.tables.is_empty() {
                    return invalid(format!(
                        "tool `{name}`: `tables` must list the tables its queries may read"
                    ));
                }
                for table in &sql.tables {
                    three_part_name(&name, "table", table)?;
                }
                if !(1..=MAX_ROWS).contains(&sql.max_rows) {
                    return invalid(format!(
                        "tool `{name}`: `max_rows` must be between 1 and {MAX_ROWS}"
                    ));
                }
            }
            ToolSpec::Function(function) => three_part_name(&name, "function", &function.name)?,
            ToolSpec::Endpoint(endpoint) => {
                if endpoint.name.trim().is_empty() {
                    return invalid(format!(
                        "tool `{name}`: `name` must name a serving endpoint"
                    ));
                }
            }
        }
        // After the resource names, which a derived tool name is made of, were checked.
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return invalid(format!(
                "tool name `{name}` must be 1 to 64 letters, digits, `_` or `-`; set `tool_name`"
            ));
        }
    }
    Ok((agent, scopes))
}

/// A `catalog.schema.name` of plain identifiers (a function's is spliced into the SQL that calls it).
fn three_part_name(tool: &str, what: &str, name: &str) -> Result<(), DefinitionError> {
    let parts: Vec<&str> = name.split('.').collect();
    let identifier = |part: &&str| {
        part.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if parts.len() == 3 && parts.iter().all(identifier) {
        return Ok(());
    }
    Err(DefinitionError(format!(
        "tool `{tool}`: `{name}` is not a {what} name of the form catalog.schema.name"
    )))
}

/// The system resources a declarative agent's service principal needs: its model endpoint.
pub fn system_resources(agent: &DeclarativeAgent) -> Vec<SystemResource> {
    vec![SystemResource {
        kind: ResourceKind::ServingEndpoint,
        name: agent.model.clone(),
    }]
}

/// Runs one request of the declarative agent deployed as `endpoint`. `user_token` is the request's on-behalf-of
/// token (`None` when on-behalf-of access is off). A tool the credential cannot use fails the request here, before
/// any answer starts, when the agent says `fail`; the loop then runs in the background and reports as a worker does.
pub async fn invoke(
    state: &AppState,
    endpoint: &str,
    agent: &DeployedAgent,
    user_token: Option<String>,
    body: &Value,
    stream: bool,
) -> Result<mpsc::Receiver<WorkerEvent>, ApiError> {
    let text = std::fs::read_to_string(&agent.artifact).map_err(ApiError::internal)?;
    let (definition, declared) = parse(&text).map_err(|error| ApiError::internal(error.0))?;
    let conversation = conversation(&definition, body)?;
    let tool_token = match user_token {
        Some(token) => token,
        None => super::service_principal_token(
            state,
            &agent.service_principal,
            declared,
            REQUEST_TIMEOUT_SECONDS,
        )?,
    };
    let acting = state
        .credentials()
        .authenticate(&tool_token)
        .await
        .map_err(|error| ApiError::internal(error.to_string()))?;
    let (tools, skipped) = usable_tools(state, endpoint, &acting, &definition).await?;
    if definition.on_missing_access == OnMissingAccess::Fail && !skipped.is_empty() {
        let missing: Vec<String> = skipped
            .iter()
            .map(|skip| format!("tool `{}`: {}", skip.tool, skip.reason))
            .collect();
        return Err(ApiError::permission_denied(format!(
            "the agent `{endpoint}` cannot run for {}: {}",
            acting.identity.name,
            missing.join("; ")
        )));
    }
    let model_token = super::service_principal_token(
        state,
        &agent.service_principal,
        ScopeSet::from(ApiScope::ServingEndpoints),
        REQUEST_TIMEOUT_SECONDS,
    )?;
    let run = Run {
        state: state.clone(),
        endpoint: endpoint.to_owned(),
        acting,
        model: definition.model.clone(),
        max_steps: definition.max_steps,
        tools,
        skipped: skipped.iter().map(Skipped::to_json).collect(),
        tool_token,
        model_token,
    };
    let (events, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let finished =
            tokio::time::timeout(REQUEST_TIMEOUT, run.run(conversation, stream, &events)).await;
        if finished.is_err() {
            let _ = events
                .send(WorkerEvent::Error {
                    error_code: "INTERNAL_ERROR".into(),
                    message: format!(
                        "the agent gave no answer within {} s",
                        REQUEST_TIMEOUT.as_secs()
                    ),
                })
                .await;
        }
    });
    Ok(receiver)
}

/// The request's messages, after the agent's instructions, with only the fields a chat model reads (ChatAgent
/// messages also carry ids and attachments that OpenAI-compatible servers may refuse).
fn conversation(agent: &DeclarativeAgent, body: &Value) -> Result<Vec<Value>, ApiError> {
    let messages = body["messages"]
        .as_array()
        .filter(|messages| !messages.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_parameter("`messages` must be a non-empty list of chat messages")
        })?;
    let mut conversation = Vec::with_capacity(messages.len() + 1);
    if let Some(instructions) = agent
        .instructions
        .as_deref()
        .filter(|text| !text.is_empty())
    {
        conversation.push(json!({ "role": "system", "content": instructions }));
    }
    for message in messages {
        let role = message["role"]
            .as_str()
            .filter(|role| matches!(*role, "system" | "user" | "assistant" | "tool"));
        let Some(role) = role else {
            return Err(ApiError::invalid_parameter(
                "every message needs a `role` of system, user, assistant or tool",
            ));
        };
        let mut kept = Map::new();
        kept.insert("role".into(), json!(role));
        for field in ["content", "tool_calls", "tool_call_id", "name"] {
            if let Some(value) = message.get(field).filter(|value| !value.is_null()) {
                kept.insert(field.into(), value.clone());
            }
        }
        conversation.push(Value::Object(kept));
    }
    Ok(conversation)
}

/// A tool left out of a request, and why.
struct Skipped {
    tool: String,
    reason: String,
}

impl Skipped {
    fn to_json(&self) -> Value {
        json!({ "tool": self.tool, "reason": self.reason })
    }
}

/// Splits the agent's tools into those `acting` may use and those it may not, and audits every decision.
async fn usable_tools(
    state: &AppState,
    endpoint: &str,
    acting: &Caller,
    agent: &DeclarativeAgent,
) -> Result<(Vec<ToolSpec>, Vec<Skipped>), ApiError> {
    let (mut usable, mut skipped, mut events) = (Vec::new(), Vec::new(), Vec::new());
    for tool in &agent.tools {
        let mut missing = Vec::new();
        for resource in tool.resources() {
            let reason = match crate::routes::agents::resource_decision(
                state,
                acting,
                &resource,
                Some(tool.scope()),
            )
            .await
            {
                Ok((decision, _)) if decision.is_allowed() => None,
                Ok((decision, _)) => Some(
                    decision
                        .reasons
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                // A resource that cannot be found (a deleted warehouse or endpoint) is as unusable as a forbidden one.
                Err(error) => Some(error.message),
            };
            if let Some(reason) = reason {
                missing.push(format!(
                    "{} `{}`: {reason}",
                    resource.kind.key(),
                    resource.name
                ));
            }
        }
        let name = tool.tool_name();
        let allowed = missing.is_empty();
        let reason = match allowed {
            true => format!("{} may use tool `{name}`", acting.identity.name),
            false => missing.join("; "),
        };
        events.push(audit_event(
            endpoint,
            acting,
            "agent.tool-access",
            allowed,
            &reason,
            tool,
        ));
        match allowed {
            true => usable.push(tool.clone()),
            false => skipped.push(Skipped { tool: name, reason }),
        }
    }
    crate::audit::record(state, &events).await?;
    Ok((usable, skipped))
}

fn audit_event(
    endpoint: &str,
    acting: &Caller,
    api: &str,
    allowed: bool,
    reason: &str,
    tool: &ToolSpec,
) -> deputy_store::AuditEvent {
    let actors = crate::audit::actors_of(acting);
    let mut event = crate::audit::now_event(
        acting,
        actors,
        Some(endpoint.to_owned()),
        api.to_owned(),
        allowed,
        reason.to_owned(),
    );
    event.scope = Some(tool.scope().to_string());
    event.securable = Some(
        tool.resources()
            .iter()
            .map(|resource| format!("{}:{}", resource.kind.key(), resource.name))
            .collect::<Vec<_>>()
            .join(" "),
    );
    event
}

/// One request's loop and what it runs with.
struct Run {
    state: AppState,
    endpoint: String,
    /// Whom the tools act as: the end user (on behalf of) or the service principal.
    acting: Caller,
    model: String,
    max_steps: u32,
    tools: Vec<ToolSpec>,
    skipped: Vec<Value>,
    tool_token: String,
    model_token: String,
}

/// An error answer of this server's API, as a tool reports it to the model.
#[derive(Debug)]
struct CallError {
    error_code: String,
    message: String,
}

impl Run {
    /// Calls the model until it answers without tool calls or `max_steps` is reached, sending every new message as
    /// a chunk (streaming) or all of them as one ChatAgent response.
    async fn run(
        self,
        mut conversation: Vec<Value>,
        stream: bool,
        events: &mpsc::Sender<WorkerEvent>,
    ) {
        let mut definitions = Vec::with_capacity(self.tools.len());
        for tool in &self.tools {
            match self.definition(tool).await {
                Ok(definition) => definitions.push(definition),
                Err(error) => {
                    let _ = events
                        .send(WorkerEvent::Error {
                            error_code: error.error_code,
                            message: format!("tool `{}`: {}", tool.tool_name(), error.message),
                        })
                        .await;
                    return;
                }
            }
        }
        let mut produced = Vec::new();
        let mut finished = false;
        for _ in 0..self.max_steps {
            let mut request = json!({ "model": self.model, "messages": conversation });
            if !definitions.is_empty() {
                request["tools"] = json!(definitions);
                request["tool_choice"] = json!("auto");
            }
            let answer = match call_api(
                &self.state,
                &self.model_token,
                Method::POST,
                "/serving-endpoints/chat/completions",
                &request,
            )
            .await
            {
                Ok(answer) => answer,
                Err(error) => {
                    let _ = events
                        .send(WorkerEvent::Error {
                            error_code: error.error_code,
                            message: format!(
                                "the model endpoint `{}` failed: {}",
                                self.model, error.message
                            ),
                        })
                        .await;
                    return;
                }
            };
            let message = &answer["choices"][0]["message"];
            let calls: Vec<Value> = message["tool_calls"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let content = message["content"].as_str().unwrap_or_default();
            let mut assistant = json!({ "role": "assistant", "content": content });
            if !calls.is_empty() {
                assistant["tool_calls"] = json!(calls);
            }
            conversation.push(assistant.clone());
            self.emit(&mut produced, assistant, stream, events).await;
            if calls.is_empty() {
                finished = true;
                break;
            }
            for call in &calls {
                let result = self.run_tool_call(call).await;
                let reply = json!({
                    "role": "tool",
                    "tool_call_id": call["id"],
                    "name": call["function"]["name"],
                    "content": result,
                });
                conversation.push(reply.clone());
                self.emit(&mut produced, reply, stream, events).await;
            }
        }
        let mut custom_outputs = json!({
            "tools": self.tools.iter().map(ToolSpec::tool_name).collect::<Vec<_>>(),
            "skipped_tools": self.skipped,
        });
        if !finished {
            custom_outputs["stopped"] = json!(format!(
                "no final answer within max_steps = {}",
                self.max_steps
            ));
            let note = json!({
                "role": "assistant",
                "content": format!("I could not finish within {} steps.", self.max_steps),
            });
            self.emit(&mut produced, note, stream, events).await;
        }
        let last = WorkerEvent::Result(match stream {
            true => {
                json!({ "delta": { "role": "assistant", "content": "", "id": new_id() }, "finish_reason": "stop", "custom_outputs": custom_outputs })
            }
            false => {
                json!({ "messages": produced, "finish_reason": "stop", "custom_outputs": custom_outputs })
            }
        });
        let _ = events.send(last).await;
    }

    /// Adds an id (ChatAgent response messages need unique ones) and sends or keeps the message.
    async fn emit(
        &self,
        produced: &mut Vec<Value>,
        mut message: Value,
        stream: bool,
        events: &mpsc::Sender<WorkerEvent>,
    ) {
        message["id"] = json!(new_id());
        match stream {
            true => {
                let _ = events
                    .send(WorkerEvent::Chunk(json!({ "delta": message })))
                    .await;
            }
            false => produced.push(message),
        }
    }

    /// The tool in OpenAI's `tools` format.
    async fn definition(&self, tool: &ToolSpec) -> Result<Value, CallError> {
        let text = |description: &str| json!({ "type": "string", "description": description });
        let parameters = match tool {
            ToolSpec::VectorIndex(_) => json!({
                "type": "object",
                "properties": { "query": text("what to search for") },
                "required": ["query"],
            }),
            ToolSpec::Sql(sql) => json!({
                "type": "object",
                "properties": { "statement": text(&format!(
                    "one read-only SQL query (Databricks SQL) over the tables {}",
                    sql.tables.join(", ")
                )) },
                "required": ["statement"],
            }),
            ToolSpec::Endpoint(_) => json!({
                "type": "object",
                "properties": { "query": text("the question to ask") },
                "required": ["query"],
            }),
            ToolSpec::Function(function) => {
                function_parameters(&function_spec(&self.state, &function.name).await?)
            }
        };
        Ok(json!({
            "type": "function",
            "function": { "name": tool.tool_name(), "description": tool.description(), "parameters": parameters },
        }))
    }

    /// Runs one tool call the model asked for; whatever happens becomes the tool's output, so the model can answer
    /// with it (an error included).
    async fn run_tool_call(&self, call: &Value) -> String {
        let name = call["function"]["name"].as_str().unwrap_or_default();
        let Some(tool) = self.tools.iter().find(|tool| tool.tool_name() == name) else {
            // A tool the agent does not have, or one skipped for this user: never run, and audited as refused.
            let reason =
                format!("the model asked for tool `{name}`, which this agent does not offer here");
            let mut event = crate::audit::now_event(
                &self.acting,
                crate::audit::actors_of(&self.acting),
                Some(self.endpoint.clone()),
                "agent.tool-call".into(),
                false,
                reason.clone(),
            );
            event.securable = Some(format!("tool:{name}"));
            if let Err(error) = crate::audit::record(&self.state, &[event]).await {
                return format!("error: {}", error.message);
            }
            return format!("error: {reason}");
        };
        // Arguments are a JSON object serialised as a string in OpenAI's format; some servers send the object.
        let arguments = match &call["function"]["arguments"] {
            Value::String(text) => serde_json::from_str(text).unwrap_or(Value::Null),
            other => other.clone(),
        };
        let output = match self.execute(tool, &arguments).await {
            Ok(output) => output,
            Err(error) => format!("error: {}: {}", error.error_code, error.message),
        };
        truncate(output)
    }

    async fn execute(&self, tool: &ToolSpec, arguments: &Value) -> Result<String, CallError> {
        let argument = |key: &str| {
            arguments[key]
                .as_str()
                .filter(|value| !value.trim().is_empty())
                .map(str::to_owned)
                .ok_or_else(|| CallError {
                    error_code: "INVALID_PARAMETER_VALUE".into(),
                    message: format!("the argument `{key}` is required"),
                })
        };
        match tool {
            ToolSpec::VectorIndex(vector) => {
                let mut request = json!({
                    "query_text": argument("query")?,
                    "columns": vector.columns,
                    "num_results": vector.num_results,
                });
                if let Some(query_type) = &vector.query_type {
                    request["query_type"] = json!(query_type);
                }
                let path = format!("/api/2.0/vector-search/indexes/{}/query", vector.name);
                let answer = self.call(Method::POST, &path, &request).await?;
                Ok(vector_hits(&answer).to_string())
            }
            ToolSpec::Sql(sql) => {
                let statement = argument("statement")?;
                check_tables(&statement, &sql.tables)?;
                self.statement(&sql.warehouse_id, &statement, Vec::new(), sql.max_rows)
                    .await
            }
            ToolSpec::Function(function) => {
                let (statement, parameters) =
                    function_call(&self.state, &function.name, arguments).await?;
                self.statement(&function.warehouse_id, &statement, parameters, 1)
                    .await
            }
            ToolSpec::Endpoint(target) => {
                let request =
                    json!({ "messages": [{ "role": "user", "content": argument("query")? }] });
                let path = format!("/serving-endpoints/{}/invocations", target.name);
                let answer = self.call(Method::POST, &path, &request).await?;
                let text = answer["choices"][0]["message"]["content"]
                    .as_str()
                    .or_else(|| {
                        answer["messages"]
                            .as_array()
                            .and_then(|messages| messages.last())
                            .and_then(|message| message["content"].as_str())
                    })
                    .map(str::to_owned)
                    .unwrap_or_else(|| answer.to_string());
                Ok(text)
            }
        }
    }

    /// Runs SQL through the statement-execution API and renders the rows for the model.
    async fn statement(
        &self,
        warehouse_id: &str,
        statement: &str,
        parameters: Vec<Value>,
        max_rows: u32,
    ) -> Result<String, CallError> {
        let request = json!({
            "statement": statement,
            "warehouse_id": warehouse_id,
            "parameters": parameters,
            "wait_timeout": "50s",
            "on_wait_timeout": "CANCEL",
            "row_limit": max_rows,
        });
        let answer = self
            .call(Method::POST, "/api/2.0/sql/statements", &request)
            .await?;
        match answer["status"]["state"].as_str() {
            Some("SUCCEEDED") => {
                let columns: Vec<Value> = answer["manifest"]["schema"]["columns"]
                    .as_array()
                    .map(|columns| {
                        columns
                            .iter()
                            .map(|column| column["name"].clone())
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(json!({
                    "columns": columns,
                    "rows": answer["result"]["data_array"],
                    "truncated": answer["manifest"]["truncated"],
                })
                .to_string())
            }
            state => Err(CallError {
                error_code: answer["status"]["error"]["error_code"]
                    .as_str()
                    .unwrap_or("STATEMENT_FAILED")
                    .to_owned(),
                message: answer["status"]["error"]["message"].as_str().map_or_else(
                    || format!("the statement ended {}", state.unwrap_or("unknown")),
                    str::to_owned,
                ),
            }),
        }
    }

    async fn call(&self, method: Method, path: &str, body: &Value) -> Result<Value, CallError> {
        call_api(&self.state, &self.tool_token, method, path, body).await
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn truncate(mut output: String) -> String {
    if let Some((cut, _)) = output.char_indices().nth(MAX_TOOL_OUTPUT_CHARS) {
        output.truncate(cut);
        output.push_str(" …(cut)");
    }
    output
}

/// Sends one request to this server's own API, in process, through the whole application (router, `authorize`
/// with its scope check and audit, handler), exactly as a client's request over HTTP would go.
async fn call_api(
    state: &AppState,
    token: &str,
    method: Method,
    path: &str,
    body: &Value,
) -> Result<Value, CallError> {
    let internal = |message: String| CallError {
        error_code: "INTERNAL_ERROR".into(),
        message,
    };
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .map_err(|error| internal(error.to_string()))?;
    let response = crate::app(state.clone())
        .oneshot(request)
        .await
        .map_err(|error| internal(error.to_string()))?;
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), crate::MAX_BODY_BYTES)
        .await
        .map_err(|error| internal(error.to_string()))?;
    let answer: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(answer);
    }
    Err(CallError {
        error_code: answer["error_code"]
            .as_str()
            .unwrap_or("INTERNAL_ERROR")
            .to_owned(),
        message: answer["message"]
            .as_str()
            .map_or_else(|| format!("HTTP {}", status.as_u16()), str::to_owned),
    })
}

/// A vector-search answer as a list of hits, each an object of the requested columns and the score.
fn vector_hits(answer: &Value) -> Value {
    let names: Vec<&str> = answer["manifest"]["columns"]
        .as_array()
        .map(|columns| {
            columns
                .iter()
                .filter_map(|column| column["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let rows = answer["result"]["data_array"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    Value::Array(
        rows.iter()
            .map(|row| {
                let cells = row.as_array().cloned().unwrap_or_default();
                Value::Object(
                    names
                        .iter()
                        .zip(cells)
                        .map(|(name, cell)| ((*name).to_owned(), cell))
                        .collect(),
                )
            })
            .collect(),
    )
}

/// The author listed the tables the agent's queries may read: a query that is not read-only, or reads anything
/// else, is refused before it runs (the user's own rights then decide what the query sees).
fn check_tables(statement: &str, tables: &[String]) -> Result<(), CallError> {
    let read = deputy_sql::query_tables(statement).map_err(|error| CallError {
        error_code: error.error_code().to_owned(),
        message: error.to_string(),
    })?;
    let outside: Vec<&String> = read
        .iter()
        .filter(|table| {
            !tables
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(table))
        })
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    Err(CallError {
        error_code: "PERMISSION_DENIED".into(),
        message: format!(
            "this tool may read only {}, not {}",
            tables.join(", "),
            outside
                .iter()
                .map(|table| table.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// The function's Unity Catalog definition. Read only for a tool found usable, that is once the acting principal
/// was found to hold EXECUTE on it.
async fn function_spec(
    state: &AppState,
    name: &str,
) -> Result<deputy_store::specs::FunctionSpec, CallError> {
    let missing = || CallError {
        error_code: "RESOURCE_DOES_NOT_EXIST".into(),
        message: format!("function `{name}` does not exist"),
    };
    let namespace = deputy_catalog::namespace_of(deputy_authz::SecurableKind::Function);
    let record = state
        .store()
        .find_securable(namespace, name)
        .await
        .map_err(|error| CallError {
            error_code: "INTERNAL_ERROR".into(),
            message: error.to_string(),
        })?
        .ok_or_else(missing)?;
    serde_json::from_str(&record.spec).map_err(|_| missing())
}

/// The function's parameters as a JSON schema.
fn function_parameters(spec: &deputy_store::specs::FunctionSpec) -> Value {
    let properties: Map<String, Value> = spec
        .input_params
        .iter()
        .map(|parameter| {
            let kind = match parameter.type_name.to_ascii_uppercase().as_str() {
                "INT" | "LONG" | "SHORT" | "BYTE" => "integer",
                "FLOAT" | "DOUBLE" | "DECIMAL" => "number",
                "BOOLEAN" => "boolean",
                _ => "string",
            };
            let mut schema = json!({ "type": kind });
            if let Some(comment) = &parameter.comment {
                schema["description"] = json!(comment);
            }
            (parameter.name.clone(), schema)
        })
        .collect();
    let required: Vec<&str> = spec
        .input_params
        .iter()
        .map(|parameter| parameter.name.as_str())
        .collect();
    json!({ "type": "object", "properties": properties, "required": required })
}

/// `SELECT catalog.schema.fn(:a, :b) AS result` and its named parameters, typed as the function declares them, from
/// the model's arguments (a missing one is NULL).
async fn function_call(
    state: &AppState,
    name: &str,
    arguments: &Value,
) -> Result<(String, Vec<Value>), CallError> {
    let spec = function_spec(state, name).await?;
    let mut placeholders = Vec::new();
    let mut parameters = Vec::new();
    for parameter in &spec.input_params {
        placeholders.push(format!(":{}", parameter.name));
        let value = match &arguments[&parameter.name] {
            Value::Null => Value::Null,
            Value::String(text) => json!(text),
            other => json!(other.to_string()),
        };
        parameters
            .push(json!({ "name": parameter.name, "value": value, "type": parameter.type_text }));
    }
    // INVARIANT: `name` was checked to be three plain identifiers when the agent was deployed.
    let statement = format!("SELECT {name}({}) AS result", placeholders.join(", "));
    Ok((statement, parameters))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AGENT: &str = r#"
model: deputy-chat-smollm2
instructions: You answer questions about our documents.
on_missing_access: skip
max_steps: 4
user_scopes: [vectorsearch.vector-search-indexes, sql, serving.serving-endpoints]
tools:
  - vector_index: {name: main.docs.chunks_index, columns: [id, body], num_results: 3, description: Searches the docs.}
  - sql: {warehouse_id: abc, tables: [main.sales.orders], description: Reads orders.}
  - function: {name: main.tools.lookup, warehouse_id: abc, description: Looks a customer up.}
  - endpoint: {name: other-agent, description: Asks the other agent.}
"#;

    fn error(text: &str) -> String {
        parse(text).unwrap_err().0
    }

    #[test]
    fn a_full_agent_parses_with_derived_tool_names_and_scopes() {
        let (agent, scopes) = parse(AGENT).unwrap();
        assert_eq!(agent.on_missing_access, OnMissingAccess::Skip);
        assert_eq!(agent.max_steps, 4);
        let names: Vec<String> = agent.tools.iter().map(ToolSpec::tool_name).collect();
        assert_eq!(
            names,
            [
                "main__docs__chunks_index",
                "query_sql",
                "main__tools__lookup",
                "ask_other-agent"
            ]
        );
        assert!(scopes.contains(ApiScope::SqlStatementExecution));
        assert_eq!(system_resources(&agent)[0].name, "deputy-chat-smollm2");
        let minimal = parse("model: m\nuser_scopes: []\n").unwrap().0;
        assert_eq!(minimal.on_missing_access, OnMissingAccess::Fail);
        assert_eq!(minimal.max_steps, 5);
    }

    #[test]
    fn unknown_keys_missing_fields_and_unknown_scopes_are_refused() {
        assert!(
            error(&format!("{AGENT}temperature: 0.1\n")).contains("unknown field `temperature`")
        );
        assert!(
            error(&AGENT.replace("num_results: 3", "num_results: 3, k: 2"))
                .contains("unknown field `k`")
        );
        assert!(
            error(&AGENT.replace("vector_index:", "genie:")).contains("unknown variant `genie`")
        );
        assert!(error("user_scopes: []\n").contains("missing field `model`"));
        assert!(error("model: m\n").contains("missing field `user_scopes`"));
        assert!(
            error(&AGENT.replace(", description: Asks the other agent.", ""))
                .contains("missing field `description`")
        );
        assert!(error(&AGENT.replace("sql,", "sql.everything,")).contains("sql.everything"));
        assert!(error(&AGENT.replace("skip", "ignore")).contains("unknown variant `ignore`"));
        assert!(error(&AGENT.replace("max_steps: 4", "max_steps: 0")).contains("max_steps"));
    }

    #[test]
    fn tools_need_their_scopes_distinct_names_and_full_names() {
        let without_vector = AGENT.replace("vectorsearch.vector-search-indexes, ", "");
        assert!(
            error(&without_vector).contains(
                "tool `main__docs__chunks_index` needs the user API scope `vectorsearch.vector-search-indexes`"
            )
        );
        let twice = format!(
            "{AGENT}  - sql: {{warehouse_id: x, tables: [main.a.b], description: again}}\n"
        );
        assert!(error(&twice).contains("two tools are named `query_sql`"));
        assert!(
            error(&AGENT.replace("main.sales.orders", "orders")).contains("catalog.schema.name")
        );
        assert!(error(&AGENT.replace("[main.sales.orders]", "[]")).contains("`tables`"));
        assert!(
            error(&AGENT.replace("main.tools.lookup", "main.tools.x; DROP TABLE y"))
                .contains("catalog.schema.name")
        );
        assert!(
            error(&AGENT.replace("name: other-agent,", "name: other-agent, tool_name: 'a b',"))
                .contains("tool name `a b`")
        );
    }

    #[test]
    fn queries_are_held_to_the_listed_tables() {
        let tables = ["main.sales.orders".to_owned()];
        assert!(check_tables("SELECT count(*) FROM main.sales.orders", &tables).is_ok());
        let outside = check_tables(
            "SELECT * FROM main.sales.orders o JOIN main.hr.salaries s ON o.id = s.id",
            &tables,
        )
        .unwrap_err();
        assert_eq!(outside.error_code, "PERMISSION_DENIED");
        assert!(outside.message.contains("main.hr.salaries"));
        assert!(check_tables("DELETE FROM main.sales.orders", &tables).is_err());
    }

    #[test]
    fn conversations_keep_what_a_chat_model_reads() {
        let (agent, _) = parse(AGENT).unwrap();
        let body = json!({ "messages": [{ "role": "user", "content": "hi", "id": "m1", "attachments": {} }] });
        let kept = conversation(&agent, &body).unwrap();
        assert_eq!(kept[0]["role"], "system");
        assert_eq!(kept[1], json!({ "role": "user", "content": "hi" }));
        assert!(conversation(&agent, &json!({ "messages": [] })).is_err());
        assert!(
            conversation(
                &agent,
                &json!({ "messages": [{ "role": "root", "content": "x" }] })
            )
            .is_err()
        );
        assert_eq!(
            truncate("é".repeat(MAX_TOOL_OUTPUT_CHARS + 5))
                .chars()
                .count(),
            MAX_TOOL_OUTPUT_CHARS + 7
        );
    }
}
