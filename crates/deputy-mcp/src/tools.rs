//! What an MCP server offers: tools, listed and called for one caller.

use deputy_access::{Access, Caller};
use serde_json::{Map, Value};

/// A tool as `tools/list` describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: String,
    /// A JSON Schema object for the arguments.
    pub input_schema: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// No tool of that name is offered to this caller (it may exist for others: the answer does not say).
    #[error("{0}")]
    Unknown(String),
    /// The tool ran and failed for a reason its caller can act on: refused, bad arguments, a failed query.
    #[error("{0}")]
    Failed(String),
    /// This server is broken; the message is logged, the caller sees a generic one.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The tools of one MCP server, bound to one caller.
#[async_trait::async_trait]
pub trait ToolServer: Send + Sync {
    /// The tools this caller may use now.
    async fn list_tools(&self) -> Result<Vec<Tool>, ToolError>;

    /// Runs tool `name`, authorized again at call time; its output as text.
    async fn call_tool(
        &self,
        name: &str,
        arguments: &Map<String, Value>,
    ) -> Result<String, ToolError>;
}

/// Audits a tool call, run or refused, and hands its outcome on; an event that cannot be written fails the call.
/// The REST calls a tool makes are audited on their own as well when an agent makes them for a user.
pub(crate) async fn record_call(
    access: &Access,
    caller: &Caller,
    server: &str,
    tool: &str,
    outcome: Result<String, ToolError>,
) -> Result<String, ToolError> {
    let entry = access
        .audit_entry(caller, "mcp tools/call")
        .securable(format!("mcp/{server} tool:{tool}"));
    let event = match &outcome {
        Ok(_) => entry.allowed(format!("{} ran tool `{tool}`", caller.identity.name)),
        Err(error) => entry.denied(error.to_string()),
    };
    access
        .record(&[event])
        .await
        .map_err(|error| ToolError::Internal(error.to_string()))?;
    outcome
}
