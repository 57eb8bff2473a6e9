//! The tool-calling loop of declarative agents (their definitions are in [`crate::declarative`]).
//!
//! Per request the agent acts with the invocation's on-behalf-of token (the caller's scopes ∩ `user_scopes`, the
//! endpoint's service principal as the actor), or, when on-behalf-of access is off, with its service principal's
//! own token narrowed to `user_scopes`. The server decides beforehand which tools that credential may use. The loop
//! then calls the model endpoint as the service principal with the conversation and the tools' OpenAI definitions,
//! and runs the tool calls the model asks for.
//!
//! **Invariant:** the loop reaches nothing but the server's public API ([`PublicApi`]): every model and tool call is
//! a request with a token, through the same authentication, scope check, authorization and audit as any client's.
//! This crate has no store handle, so the dependency graph enforces it.

use crate::declarative::{DeclarativeAgent, McpTool, ToolSpec};
pub use crate::public_api::{CallError, PublicApi};
use crate::public_api::{
    StatementRequest, function_call, function_parameters, run_statement, vector_hits,
};
use crate::worker::WorkerEvent;
use deputy_access::{Caller, Error};
use serde_json::{Map, Value, json};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A tool's output is cut to this many characters before the model sees it, so one large result cannot crowd the
/// conversation out of the model's context.
const MAX_TOOL_OUTPUT_CHARS: usize = 20_000;
/// Rows a table-function tool answers with at most (the output is cut to `MAX_TOOL_OUTPUT_CHARS` as well).
const MAX_FUNCTION_ROWS: u32 = 100;

/// The request's messages, after the agent's instructions, with only the fields a chat model reads (ChatAgent
/// messages also carry ids and attachments that OpenAI-compatible servers may refuse).
pub fn conversation(agent: &DeclarativeAgent, body: &Value) -> Result<Vec<Value>, Error> {
    let messages = body["messages"]
        .as_array()
        .filter(|messages| !messages.is_empty())
        .ok_or_else(|| {
            Error::invalid_parameter("`messages` must be a non-empty list of chat messages")
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
            return Err(Error::invalid_parameter(
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

/// One request's loop and what it runs with.
pub struct Run {
    /// The server's own API, which every model and tool call goes through.
    pub api: Arc<dyn PublicApi>,
    pub endpoint: String,
    /// Whom the tools act as: the end user (on behalf of) or the service principal.
    pub acting: Caller,
    pub model: String,
    pub max_steps: u32,
    pub tools: Vec<ToolSpec>,
    pub skipped: Vec<Value>,
    pub tool_token: String,
    pub model_token: String,
}

impl Run {
    /// Calls the model until it answers without tool calls or `max_steps` is reached, sending every new message as
    /// a chunk (streaming) or all of them as one ChatAgent response.
    pub async fn run(
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
            let answer = match self
                .api
                .post(
                    &self.model_token,
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
                function_parameters(&self.api.function_spec(&function.name).await?.input_params)
            }
            ToolSpec::Mcp(mcp) => {
                let listed = self.mcp(mcp, "tools/list", json!({})).await?;
                let found = listed["tools"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|offered| offered["name"] == mcp.tool.as_str());
                let Some(found) = found else {
                    return Err(CallError {
                        error_code: "PERMISSION_DENIED".into(),
                        message: format!(
                            "the MCP server {} offers no tool `{}` to {}",
                            mcp.server, mcp.tool, self.acting.identity.name
                        ),
                    });
                };
                found["inputSchema"].clone()
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
            if let Err(error) = self
                .api
                .refuse_tool(&self.acting, &self.endpoint, name, &reason)
                .await
            {
                return format!("error: {error}");
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
                let answer = self.call(&path, &request).await?;
                Ok(vector_hits(&answer).to_string())
            }
            ToolSpec::Sql(sql) => {
                let statement = argument("statement")?;
                check_tables(&statement, &sql.tables)?;
                self.statement(&sql.warehouse_id, &statement, Vec::new(), sql.max_rows)
                    .await
            }
            ToolSpec::Function(function) => {
                let spec = self.api.function_spec(&function.name).await?;
                let (statement, parameters) = function_call(&spec, &function.name, arguments);
                // A scalar function answers one value; a table function, rows as a SQL tool would.
                let max_rows = if spec.is_table_function() {
                    MAX_FUNCTION_ROWS
                } else {
                    1
                };
                self.statement(&function.warehouse_id, &statement, parameters, max_rows)
                    .await
            }
            ToolSpec::Mcp(mcp) => {
                let params = json!({ "name": mcp.tool, "arguments": arguments });
                let result = self.mcp(mcp, "tools/call", params).await?;
                let text = result["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|block| block["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                match result["isError"].as_bool() {
                    Some(true) => Err(CallError {
                        error_code: "TOOL_FAILED".into(),
                        message: text,
                    }),
                    _ => Ok(text),
                }
            }
            ToolSpec::Endpoint(target) => {
                let request =
                    json!({ "messages": [{ "role": "user", "content": argument("query")? }] });
                let path = format!("/serving-endpoints/{}/invocations", target.name);
                let answer = self.call(&path, &request).await?;
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

    async fn statement(
        &self,
        warehouse_id: &str,
        statement: &str,
        parameters: Vec<Value>,
        max_rows: u32,
    ) -> Result<String, CallError> {
        let request = StatementRequest {
            warehouse_id,
            statement,
            parameters,
            max_rows,
        };
        run_statement(self.api.as_ref(), &self.tool_token, &request).await
    }

    /// One JSON-RPC request to an MCP server of this workspace, as the acting identity; its result.
    async fn mcp(&self, tool: &McpTool, method: &str, params: Value) -> Result<Value, CallError> {
        let message = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
        let answer = self.call(&tool.server, &message).await?;
        match answer.get("error") {
            Some(error) => Err(CallError {
                error_code: "MCP_ERROR".into(),
                message: error["message"].as_str().unwrap_or("no message").to_owned(),
            }),
            None => Ok(answer["result"].clone()),
        }
    }

    async fn call(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        self.api.post(&self.tool_token, path, body).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declarative::parse;

    /// The smallest agent the conversation needs; the definition format itself is tested in `crate::declarative`.
    const AGENT: &str = r#"
model: deputy-chat-smollm2
instructions: You read orders.
user_scopes: [sql]
tools:
  - sql: {warehouse_id: abc, tables: [main.sales.orders], description: Reads orders.}
"#;

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
