//! Declarative agents as their authors write them: a YAML file names a chat model endpoint, instructions and tools
//! (vector indexes, SQL over listed tables, Unity Catalog functions, other serving endpoints). This module parses and
//! validates the definition; the server runs the tool-calling loop (see its `declarative_agent` module).
//!
//! **Invariant:** a definition that parses names every tool's scope among its `user_scopes` and full three-part names
//! for every resource, so the loop never has to guess what a tool may touch.

use crate::resources::{DefinitionError, ResourceKind, SystemResource};
use deputy_core::{ApiScope, MCP_PATH_PREFIX, ScopeSet};
use serde::Deserialize;
use std::collections::BTreeSet;

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
    Mcp(McpTool),
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

/// Calls one tool of an MCP server of this workspace (`/api/2.0/mcp/...`: a managed server or an external one behind
/// a connection); the server lists and decides its tools for the acting identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpTool {
    /// The server's path, `/api/2.0/mcp/functions/main/sales` for instance.
    pub server: String,
    /// The tool's name on that server.
    pub tool: String,
    pub description: String,
    #[serde(default)]
    pub tool_name: Option<String>,
}

impl McpTool {
    /// The server's path below `deputy_core::MCP_PATH_PREFIX`.
    pub fn server_below_prefix(&self) -> Option<&str> {
        self.server.strip_prefix(MCP_PATH_PREFIX)
    }
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

impl ToolSpec {
    /// The name the model calls the tool by: `tool_name`, else derived from the resource as the Databricks tool
    /// kits do (dots become `__`).
    pub fn tool_name(&self) -> String {
        let (explicit, derived) = match self {
            ToolSpec::VectorIndex(tool) => (&tool.tool_name, tool.name.replace('.', "__")),
            ToolSpec::Sql(tool) => (&tool.tool_name, "query_sql".to_owned()),
            ToolSpec::Function(tool) => (&tool.tool_name, tool.name.replace('.', "__")),
            ToolSpec::Endpoint(tool) => (&tool.tool_name, format!("ask_{}", tool.name)),
            ToolSpec::Mcp(tool) => (&tool.tool_name, tool.tool.clone()),
        };
        explicit.clone().unwrap_or(derived)
    }

    pub fn description(&self) -> &str {
        match self {
            ToolSpec::VectorIndex(tool) => &tool.description,
            ToolSpec::Sql(tool) => &tool.description,
            ToolSpec::Function(tool) => &tool.description,
            ToolSpec::Endpoint(tool) => &tool.description,
            ToolSpec::Mcp(tool) => &tool.description,
        }
    }

    /// The user API scope of the API the tool calls.
    pub fn scope(&self) -> ApiScope {
        match self {
            ToolSpec::VectorIndex(_) => ApiScope::VectorSearchIndexes,
            ToolSpec::Sql(_) | ToolSpec::Function(_) => ApiScope::SqlStatementExecution,
            ToolSpec::Endpoint(_) => ApiScope::ServingEndpoints,
            // Checked to be an MCP server's path when the agent was parsed.
            ToolSpec::Mcp(tool) => tool
                .server_below_prefix()
                .and_then(deputy_core::mcp_scope_of)
                .unwrap_or(ApiScope::McpExternal),
        }
    }

    /// What the tool's user must be allowed to use: SELECT on the index; CAN_USE on the warehouse and SELECT on
    /// each table; EXECUTE on the function and CAN_USE on its warehouse; CAN_QUERY on the endpoint.
    pub fn resources(&self) -> Vec<SystemResource> {
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
            // The MCP server decides on its own resources, at listing and at every call.
            ToolSpec::Mcp(_) => Vec::new(),
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
        if let ToolSpec::Mcp(mcp) = tool
            && mcp
                .server_below_prefix()
                .and_then(deputy_core::mcp_scope_of)
                .is_none()
        {
            return invalid(format!(
                "tool `{name}`: `server` must be the path of an MCP server of this workspace ({MCP_PATH_PREFIX}…)"
            ));
        }
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
            ToolSpec::Mcp(_) => {}
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
}
