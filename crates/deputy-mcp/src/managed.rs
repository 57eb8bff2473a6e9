//! The managed MCP servers, on Databricks' paths: Deputy's resources as tools, for one caller.
//!
//! A tool is listed only when the caller may use it now (`deputy_serving::resource_decision`, the same decision the
//! REST API makes), and a call is decided again before it runs. The tool then runs through the public API
//! ([`PublicApi`]) with the caller's own token, so the REST handlers' authorization, row filters, column masks and
//! audit apply exactly as they do to any client.

use crate::protocol::ServerInfo;
use crate::tools::{Tool, ToolError, ToolServer, record_call};
use deputy_access::{Access, Caller};
use deputy_agents::public_api::{
    CallError, PublicApi, StatementRequest, function_call, function_parameters, run_statement,
    vector_hits,
};
use deputy_agents::resources::{ResourceKind, SystemResource};
use deputy_authz::{SecurableKind, WorkspaceObjectKind};
use deputy_core::{ApiScope, ScopeSet};
use deputy_store::catalog::{SecurablePage, SecurableRecord};
use deputy_store::specs::FunctionSpec;
use serde_json::{Map, Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The most rows a SQL tool hands back; more is cut (and says so with `truncated`).
const MAX_SQL_ROWS: u32 = 1000;
/// The most results a search tool returns, whatever the caller asks.
const MAX_SEARCH_RESULTS: u64 = 50;
/// How long `query_space` waits for Genie's answer before handing back the ids to poll with.
const GENIE_WAIT: Duration = Duration::from_secs(50);
/// Enough for every function or index of a real schema; a tool list is read by a model, so it stays short.
const MAX_TOOLS: i64 = 500;

/// Which managed server a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagedServer {
    Sql,
    VectorSearch {
        catalog: String,
        schema: String,
        index: Option<String>,
    },
    Genie {
        space_id: String,
    },
    Functions {
        catalog: String,
        schema: String,
        function: Option<String>,
    },
}

impl ManagedServer {
    /// The server at `path` (below `deputy_core::MCP_PATH_PREFIX`), if it names one.
    pub fn from_path(path: &str) -> Option<ManagedServer> {
        let segments: Vec<&str> = path.split('/').collect();
        if segments.iter().any(|segment| segment.is_empty()) {
            return None;
        }
        let owned = |segment: &&str| (*segment).to_owned();
        Some(match segments.as_slice() {
            ["sql"] => ManagedServer::Sql,
            ["vector-search" | "ai-search", catalog, schema, rest @ ..] if rest.len() <= 1 => {
                ManagedServer::VectorSearch {
                    catalog: owned(catalog),
                    schema: owned(schema),
                    index: rest.first().map(owned),
                }
            }
            ["genie", space_id] => ManagedServer::Genie {
                space_id: owned(space_id),
            },
            ["functions", catalog, schema, rest @ ..] if rest.len() <= 1 => {
                ManagedServer::Functions {
                    catalog: owned(catalog),
                    schema: owned(schema),
                    function: rest.first().map(owned),
                }
            }
            _ => return None,
        })
    }

    /// Every scope the server's tools need: the MCP server's own, and those of the REST calls its tools make. A token
    /// missing any of them is refused before anything is listed, with all of them named for a step-up.
    pub fn required_scopes(&self) -> ScopeSet {
        let rest: &[ApiScope] = match self {
            ManagedServer::Sql => &[ApiScope::SqlStatementExecution, ApiScope::SqlWarehouses],
            ManagedServer::VectorSearch { .. } => &[ApiScope::VectorSearchIndexes],
            ManagedServer::Genie { .. } => &[ApiScope::DashboardsGenie],
            ManagedServer::Functions { .. } => {
                &[ApiScope::CatalogFunctions, ApiScope::SqlStatementExecution]
            }
        };
        deputy_core::mcp_scope_of(&self.path())
            .into_iter()
            .chain(rest.iter().copied())
            .collect()
    }

    /// The server's path below `deputy_core::MCP_PATH_PREFIX`.
    pub fn path(&self) -> String {
        let below = |catalog: &str, schema: &str, name: &Option<String>| match name {
            Some(name) => format!("{catalog}/{schema}/{name}"),
            None => format!("{catalog}/{schema}"),
        };
        match self {
            ManagedServer::Sql => "sql".to_owned(),
            ManagedServer::VectorSearch {
                catalog,
                schema,
                index,
            } => {
                format!("vector-search/{}", below(catalog, schema, index))
            }
            ManagedServer::Genie { space_id } => format!("genie/{space_id}"),
            ManagedServer::Functions {
                catalog,
                schema,
                function,
            } => {
                format!("functions/{}", below(catalog, schema, function))
            }
        }
    }

    pub fn info(&self) -> ServerInfo {
        let (name, instructions) = match self {
            ManagedServer::Sql => (
                "deputy-sql".to_owned(),
                "Runs read-only SQL on a warehouse as the signed-in user: only their tables, rows and unmasked \
                 columns are visible."
                    .to_owned(),
            ),
            ManagedServer::VectorSearch { catalog, schema, .. } => (
                format!("deputy-vector-search-{catalog}.{schema}"),
                format!("Searches the vector indexes of {catalog}.{schema} the user may read, as the user."),
            ),
            ManagedServer::Genie { space_id } => (
                format!("deputy-genie-{space_id}"),
                "Asks a Genie space a question about the user's data, as the user; poll for the answer when the \
                 question tool says it is still running."
                    .to_owned(),
            ),
            ManagedServer::Functions { catalog, schema, .. } => (
                format!("deputy-functions-{catalog}.{schema}"),
                format!("Runs the Unity Catalog functions of {catalog}.{schema} the user may execute, as the user."),
            ),
        };
        ServerInfo {
            name,
            version: env!("CARGO_PKG_VERSION"),
            instructions,
        }
    }
}

/// A managed server bound to one request's caller.
pub struct Managed {
    pub server: ManagedServer,
    pub access: Arc<Access>,
    pub caller: Caller,
    /// The caller's bearer token, which the tools' REST calls carry.
    pub token: String,
    pub api: Arc<dyn PublicApi>,
}

#[async_trait::async_trait]
impl ToolServer for Managed {
    async fn list_tools(&self) -> Result<Vec<Tool>, ToolError> {
        Ok(self
            .usable()
            .await?
            .into_iter()
            .map(|usable| usable.tool)
            .collect())
    }

    async fn call_tool(
        &self,
        name: &str,
        arguments: &Map<String, Value>,
    ) -> Result<String, ToolError> {
        let outcome = self.run_tool(name, arguments).await;
        record_call(
            &self.access,
            &self.caller,
            &self.server.path(),
            name,
            outcome,
        )
        .await
    }
}

impl Managed {
    async fn run_tool(
        &self,
        name: &str,
        arguments: &Map<String, Value>,
    ) -> Result<String, ToolError> {
        // Listing again decides again: a grant withdrawn since `tools/list` takes effect here.
        let found = self
            .usable()
            .await?
            .into_iter()
            .find(|usable| usable.tool.name == name);
        let Some(usable) = found else {
            return Err(ToolError::Unknown(format!(
                "no tool `{name}` is offered to you here"
            )));
        };
        let result = match usable.target {
            Target::Sql => self.sql(arguments).await,
            Target::VectorIndex(index) => self.search(&index, arguments).await,
            Target::Function(function, spec) => self.function(&function, &spec, arguments).await,
            Target::GenieAsk(space) => self.ask_genie(&space, arguments).await,
            Target::GeniePoll(space) => self.poll_genie(&space, arguments).await,
        };
        result
            .map_err(|error| ToolError::Failed(format!("{}: {}", error.error_code, error.message)))
    }
}

/// A tool the caller may use, and what it runs.
struct Usable {
    tool: Tool,
    target: Target,
}

enum Target {
    Sql,
    VectorIndex(String),
    Function(String, FunctionSpec),
    GenieAsk(String),
    GeniePoll(String),
}

impl Managed {
    async fn usable(&self) -> Result<Vec<Usable>, ToolError> {
        match &self.server {
            ManagedServer::Sql => Ok(self.sql_tools().await?),
            ManagedServer::VectorSearch {
                catalog,
                schema,
                index,
            } => {
                let records = self
                    .securables_in(
                        SecurableKind::VectorIndex,
                        catalog,
                        schema,
                        index.as_deref(),
                    )
                    .await?;
                let mut usable = Vec::new();
                for record in records {
                    if self
                        .may(ResourceKind::VectorSearchIndex, &record.full_name)
                        .await?
                    {
                        usable.push(Usable {
                            tool: search_tool(&record.full_name, record.comment.as_deref()),
                            target: Target::VectorIndex(record.full_name),
                        });
                    }
                }
                Ok(usable)
            }
            ManagedServer::Functions {
                catalog,
                schema,
                function,
            } => {
                let records = self
                    .securables_in(
                        SecurableKind::Function,
                        catalog,
                        schema,
                        function.as_deref(),
                    )
                    .await?;
                let mut usable = Vec::new();
                for record in records {
                    if !self.may(ResourceKind::Function, &record.full_name).await? {
                        continue;
                    }
                    // A function whose stored spec does not parse is not offered (fail closed), and says so in the log.
                    let Ok(spec) = serde_json::from_str::<FunctionSpec>(&record.spec) else {
                        tracing::warn!(function = %record.full_name, "stored function spec does not parse; not offered as a tool");
                        continue;
                    };
                    let description = record.comment.clone().unwrap_or_else(|| {
                        format!(
                            "Runs the function {} and returns its result.",
                            record.full_name
                        )
                    });
                    usable.push(Usable {
                        tool: Tool {
                            name: tool_name(&record.full_name),
                            description,
                            input_schema: function_parameters(&spec.input_params),
                        },
                        target: Target::Function(record.full_name, spec),
                    });
                }
                Ok(usable)
            }
            ManagedServer::Genie { space_id } => {
                if !self.may(ResourceKind::GenieSpace, space_id).await? {
                    return Ok(Vec::new());
                }
                Ok(genie_tools(space_id))
            }
        }
    }

    /// Whether the caller may use the resource now, as the REST API would decide it.
    async fn may(&self, kind: ResourceKind, name: &str) -> Result<bool, ToolError> {
        let resource = SystemResource {
            kind,
            name: name.to_owned(),
        };
        match deputy_serving::resource_decision(&self.access, &self.caller, &resource, None).await {
            Ok((decision, _)) => Ok(decision.is_allowed()),
            // A resource that cannot be found (deleted meanwhile) is as unusable as a forbidden one.
            Err(error) if error.code != deputy_access::ErrorCode::InternalError => Ok(false),
            Err(error) => Err(internal(error)),
        }
    }

    /// The securables of `kind` in `catalog.schema` (or only `name` there), oldest first.
    async fn securables_in(
        &self,
        kind: SecurableKind,
        catalog: &str,
        schema: &str,
        name: Option<&str>,
    ) -> Result<Vec<SecurableRecord>, ToolError> {
        let store = self.access.store();
        let schema_name = format!("{catalog}.{schema}");
        let schema_namespace = deputy_catalog::namespace_of(SecurableKind::Schema);
        let Some(schema) = store
            .find_securable(schema_namespace, &schema_name)
            .await
            .map_err(internal)?
        else {
            return Ok(Vec::new());
        };
        let page = SecurablePage {
            kind: Some(kind.name().to_owned()),
            parent_id: Some(schema.id),
            after: None,
            limit: MAX_TOOLS,
        };
        let records = store.list_securables(&page).await.map_err(internal)?;
        Ok(records
            .into_iter()
            .filter(|record| {
                name.is_none_or(|name| record.full_name == format!("{schema_name}.{name}"))
            })
            .collect())
    }

    /// The first warehouse the caller may use, or the one they named.
    async fn warehouse(&self, named: Option<&str>) -> Result<Option<String>, ToolError> {
        let object_type = deputy_catalog::object_type_of(WorkspaceObjectKind::Warehouse);
        let warehouses = self
            .access
            .store()
            .list_workspace_objects(object_type)
            .await
            .map_err(internal)?;
        for warehouse in warehouses {
            if named.is_some_and(|named| named != warehouse.object_id) {
                continue;
            }
            if self
                .may(ResourceKind::SqlWarehouse, &warehouse.object_id)
                .await?
            {
                return Ok(Some(warehouse.object_id));
            }
        }
        Ok(None)
    }

    async fn sql_tools(&self) -> Result<Vec<Usable>, ToolError> {
        if self.warehouse(None).await?.is_none() {
            return Ok(Vec::new());
        }
        let tool = Tool {
            name: "execute_sql_read_only".into(),
            description: "Runs one read-only SQL query (Databricks SQL) as the user and returns its columns and \
                          rows. Only the tables, rows and columns the user may read are visible."
                .into(),
            input_schema: json!({
                "type": "object",
                "properties": {
                    "query": { "type": "string", "description": "one SELECT query" },
                    "warehouse_id": { "type": "string", "description": "the warehouse to run on (default: the first the user may use)" },
                },
                "required": ["query"],
            }),
        };
        Ok(vec![Usable {
            tool,
            target: Target::Sql,
        }])
    }

    async fn sql(&self, arguments: &Map<String, Value>) -> Result<String, CallError> {
        let query = text_argument(arguments, "query")?;
        // Only a query: anything that writes or changes the catalog is refused before it runs.
        deputy_sql::query_tables(query).map_err(|error| CallError {
            error_code: error.error_code().to_owned(),
            message: format!("only one read-only query may run here: {error}"),
        })?;
        let named = arguments.get("warehouse_id").and_then(Value::as_str);
        let warehouse = self
            .warehouse(named)
            .await
            .map_err(tool_failure)?
            .ok_or_else(no_warehouse)?;
        let request = StatementRequest {
            warehouse_id: &warehouse,
            statement: query,
            parameters: Vec::new(),
            max_rows: MAX_SQL_ROWS,
        };
        run_statement(self.api.as_ref(), &self.token, &request).await
    }

    async fn search(
        &self,
        index: &str,
        arguments: &Map<String, Value>,
    ) -> Result<String, CallError> {
        let query = text_argument(arguments, "query")?;
        let num_results = arguments
            .get("num_results")
            .and_then(Value::as_u64)
            .unwrap_or(5)
            .clamp(1, MAX_SEARCH_RESULTS);
        let mut request = json!({ "query_text": query, "num_results": num_results });
        if let Some(filters) = arguments
            .get("filters")
            .filter(|filters| !filters.is_null())
        {
            request["filters_json"] = filters.clone();
        }
        let path = format!("/api/2.0/vector-search/indexes/{index}/query");
        let answer = self.api.post(&self.token, &path, &request).await?;
        Ok(vector_hits(&answer).to_string())
    }

    async fn function(
        &self,
        function: &str,
        spec: &FunctionSpec,
        arguments: &Map<String, Value>,
    ) -> Result<String, CallError> {
        let warehouse = self
            .warehouse(None)
            .await
            .map_err(tool_failure)?
            .ok_or_else(no_warehouse)?;
        let (statement, parameters) =
            function_call(spec, function, &Value::Object(arguments.clone()));
        let request = StatementRequest {
            warehouse_id: &warehouse,
            statement: &statement,
            parameters,
            max_rows: MAX_SQL_ROWS,
        };
        run_statement(self.api.as_ref(), &self.token, &request).await
    }

    async fn ask_genie(
        &self,
        space: &str,
        arguments: &Map<String, Value>,
    ) -> Result<String, CallError> {
        let question = text_argument(arguments, "query")?;
        let body = json!({ "content": question });
        let message = match arguments.get("conversation_id").and_then(Value::as_str) {
            Some(conversation) => {
                let path =
                    format!("/api/2.0/genie/spaces/{space}/conversations/{conversation}/messages");
                self.api.post(&self.token, &path, &body).await?
            }
            None => {
                let path = format!("/api/2.0/genie/spaces/{space}/start-conversation");
                let started = self.api.post(&self.token, &path, &body).await?;
                started["message"].clone()
            }
        };
        let conversation = message["conversation_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let message_id = message["message_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let deadline = tokio::time::Instant::now() + GENIE_WAIT;
        loop {
            let answer = self
                .genie_message(space, &conversation, &message_id)
                .await?;
            let finished = matches!(
                answer["status"].as_str(),
                Some("COMPLETED" | "FAILED" | "CANCELLED")
            );
            if finished || tokio::time::Instant::now() >= deadline {
                return Ok(answer.to_string());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn poll_genie(
        &self,
        space: &str,
        arguments: &Map<String, Value>,
    ) -> Result<String, CallError> {
        let conversation = text_argument(arguments, "conversation_id")?;
        let message = text_argument(arguments, "message_id")?;
        Ok(self
            .genie_message(space, conversation, message)
            .await?
            .to_string())
    }

    /// Genie's message as the tools answer it: its status, its text, its query and the query's rows.
    async fn genie_message(
        &self,
        space: &str,
        conversation: &str,
        message: &str,
    ) -> Result<Value, CallError> {
        let path = format!(
            "/api/2.0/genie/spaces/{space}/conversations/{conversation}/messages/{message}"
        );
        let answer = self.api.get(&self.token, &path).await?;
        let mut rendered = json!({
            "conversation_id": conversation,
            "message_id": message,
            "status": answer["status"],
        });
        for attachment in answer["attachments"].as_array().into_iter().flatten() {
            if let Some(text) = attachment["text"]["content"].as_str() {
                rendered["text"] = json!(text);
            }
            if attachment["query"].is_object() {
                rendered["query"] = attachment["query"]["query"].clone();
                rendered["description"] = attachment["query"]["description"].clone();
                if answer["status"] == "COMPLETED" {
                    let id = attachment["attachment_id"].as_str().unwrap_or_default();
                    let result_path = format!("{path}/attachments/{id}/query-result");
                    let result = self.api.get(&self.token, &result_path).await?;
                    let statement = &result["statement_response"];
                    rendered["columns"] = json!(
                        statement["manifest"]["schema"]["columns"]
                            .as_array()
                            .map(|columns| columns
                                .iter()
                                .map(|column| column["name"].clone())
                                .collect::<Vec<_>>())
                    );
                    rendered["rows"] = statement["result"]["data_array"].clone();
                }
            }
        }
        Ok(rendered)
    }
}

/// A Unity Catalog name as a tool name: `catalog__schema__name`, as Databricks' managed servers spell it.
fn tool_name(full_name: &str) -> String {
    full_name.replace('.', "__")
}

fn search_tool(index: &str, comment: Option<&str>) -> Tool {
    Tool {
        name: tool_name(index),
        description: comment.map_or_else(
            || format!("Searches the vector index {index} and returns the closest rows the user may read."),
            str::to_owned,
        ),
        input_schema: json!({
            "type": "object",
            "properties": {
                "query": { "type": "string", "description": "what to search for" },
                "num_results": { "type": "integer", "description": "how many results (default 5)" },
                "filters": { "type": "object", "description": "Databricks vector-search filters, e.g. {\"region\": \"EU\"}" },
            },
            "required": ["query"],
        }),
    }
}

fn genie_tools(space: &str) -> Vec<Usable> {
    let ask = Tool {
        name: format!("query_space_{space}"),
        description: "Asks the Genie space a question about the user's data and waits for the answer (its text, \
                      SQL and rows); a long one answers with the ids to poll."
            .into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "query": { "type": "string", "description": "the question" },
                "conversation_id": { "type": "string", "description": "continue this conversation" },
            },
            "required": ["query"],
        }),
    };
    let poll = Tool {
        name: format!("poll_response_{space}"),
        description: "Reads the answer to a question asked with the query tool.".into(),
        input_schema: json!({
            "type": "object",
            "properties": {
                "conversation_id": { "type": "string" },
                "message_id": { "type": "string" },
            },
            "required": ["conversation_id", "message_id"],
        }),
    };
    vec![
        Usable {
            tool: ask,
            target: Target::GenieAsk(space.to_owned()),
        },
        Usable {
            tool: poll,
            target: Target::GeniePoll(space.to_owned()),
        },
    ]
}

fn text_argument<'a>(arguments: &'a Map<String, Value>, key: &str) -> Result<&'a str, CallError> {
    arguments
        .get(key)
        .and_then(Value::as_str)
        .filter(|value| !value.trim().is_empty())
        .ok_or_else(|| CallError {
            error_code: "INVALID_PARAMETER_VALUE".into(),
            message: format!("the argument `{key}` is required (a string)"),
        })
}

fn no_warehouse() -> CallError {
    CallError {
        error_code: "PERMISSION_DENIED".into(),
        message: "you may use no SQL warehouse (CAN_USE on one is needed)".into(),
    }
}

fn tool_failure(error: ToolError) -> CallError {
    CallError {
        error_code: "INTERNAL_ERROR".into(),
        message: error.to_string(),
    }
}

fn internal(error: impl std::fmt::Display) -> ToolError {
    ToolError::Internal(error.to_string())
}
