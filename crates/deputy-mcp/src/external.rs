//! External MCP servers behind Unity Catalog HTTP connections (option `is_mcp_connection` = `true`), proxied at
//! `/api/2.0/mcp/external/{connection}`: the caller needs `USE_CONNECTION`; the connection's credential is added on
//! the way out and never shown; requests go to the connection's origin and base path only (`deputy_connections`);
//! an admin may expose a subset of the upstream's tools with the option `mcp_allowed_tools` (comma-separated).

use crate::tools::{Tool, ToolError, ToolServer, record_call};
use deputy_access::error::decode_stored;
use deputy_access::{Access, Caller, Error};
use deputy_authz::{Action, SecurableKind, SecurableRef};
use deputy_connections::http::{HttpConnection, UpstreamRequest, Upstreams};
use deputy_core::ApiScope;
use deputy_store::specs::ConnectionSpec;
use serde_json::{Map, Value, json};
use std::sync::Arc;

/// The protocol revision this proxy speaks upstream: the newest of the handshake era, which every server takes.
const UPSTREAM_VERSION: &str = "2025-06-18";

/// An external MCP server, opened for one caller who may use its connection.
pub struct External {
    access: Arc<Access>,
    upstreams: Arc<Upstreams>,
    caller: Caller,
    name: String,
    connection_id: i64,
    connection: HttpConnection,
    /// `None`: every upstream tool.
    allowed: Option<Vec<String>>,
}

impl External {
    /// The connection `name` as an MCP server for `caller`: hidden or missing is 404, forbidden 403 (naming
    /// `USE_CONNECTION`), and a connection not marked as an MCP server is 404 here.
    pub async fn open(
        access: Arc<Access>,
        upstreams: Arc<Upstreams>,
        caller: Caller,
        name: &str,
    ) -> Result<External, Error> {
        let missing = || Error::not_found(format!("no external MCP server `{name}`"));
        let namespace = deputy_catalog::namespace_of(SecurableKind::Connection);
        let record = access
            .store()
            .find_securable(namespace, name)
            .await?
            .ok_or_else(missing)?;
        access.authorize(
            &caller,
            ApiScope::CatalogConnections,
            Action::UseConnection(SecurableRef::new(SecurableKind::Connection, name)),
        )?;
        let spec: ConnectionSpec = decode_stored("connection spec", &record.spec)?;
        let marked = spec
            .options
            .get("is_mcp_connection")
            .is_some_and(|flag| flag.trim().eq_ignore_ascii_case("true"));
        if !spec.connection_type.eq_ignore_ascii_case("HTTP") || !marked {
            return Err(missing());
        }
        let connection = HttpConnection::from_options(&spec.options).map_err(|error| {
            Error::invalid_state(format!("connection `{name}` cannot be used: {error:?}"))
        })?;
        let allowed = spec.options.get("mcp_allowed_tools").map(|list| {
            list.split(',')
                .map(|tool| tool.trim().to_owned())
                .filter(|tool| !tool.is_empty())
                .collect()
        });
        Ok(External {
            access,
            upstreams,
            caller,
            name: name.to_owned(),
            connection_id: record.id.0,
            connection,
            allowed,
        })
    }

    fn allows(&self, tool: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|name| name == tool))
    }

    /// One request upstream after a fresh handshake (the upstream may keep sessions; this proxy keeps none).
    async fn request(&self, method: &str, params: Value) -> Result<Value, ToolError> {
        let init = json!({
            "protocolVersion": UPSTREAM_VERSION,
            "capabilities": {},
            "clientInfo": { "name": "deputy", "version": env!("CARGO_PKG_VERSION") },
        });
        let (_, session) = self.post(&rpc_message(0, "initialize", init), None).await?;
        let initialized = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        self.post(&initialized, session.as_deref()).await?;
        let (answer, _) = self
            .post(&rpc_message(1, method, params), session.as_deref())
            .await?;
        match answer {
            Some(answer) if answer.get("error").is_some() => Err(ToolError::Failed(format!(
                "the external MCP server refused: {}",
                answer["error"]["message"].as_str().unwrap_or("no message")
            ))),
            Some(answer) => Ok(answer["result"].clone()),
            None => Err(ToolError::Failed(
                "the external MCP server gave no answer".into(),
            )),
        }
    }

    /// Posts one message; the JSON-RPC answer (from a JSON body or the first event of a stream) and the session id.
    async fn post(
        &self,
        message: &Value,
        session: Option<&str>,
    ) -> Result<(Option<Value>, Option<String>), ToolError> {
        let unreachable =
            |message: String| ToolError::Failed(format!("the external MCP server: {message}"));
        let url = self
            .connection
            .base_url()
            .map_err(|error| unreachable(format!("{error:?}")))?;
        let mut headers = deputy_connections::http::request_headers(&Default::default())
            .map_err(|error| unreachable(format!("{error:?}")))?;
        let fixed = |value: &'static str| reqwest::header::HeaderValue::from_static(value);
        headers.insert(
            reqwest::header::ACCEPT,
            fixed("application/json, text/event-stream"),
        );
        headers.insert("mcp-protocol-version", fixed(UPSTREAM_VERSION));
        if let Some(session) = session
            && let Ok(value) = reqwest::header::HeaderValue::from_str(session)
        {
            headers.insert("mcp-session-id", value);
        }
        let request = UpstreamRequest {
            method: reqwest::Method::POST,
            url,
            headers,
            json: Some(message.to_string()),
        };
        let response = self
            .upstreams
            .call(self.connection_id, &self.connection, &request)
            .await
            .map_err(|error| unreachable(error.0))?;
        if !response.status.is_success() {
            return Err(unreachable(format!("HTTP {}", response.status.as_u16())));
        }
        let session = response
            .headers
            .get("mcp-session-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        Ok((json_rpc_answer(&response.body), session))
    }
}

#[async_trait::async_trait]
impl ToolServer for External {
    async fn list_tools(&self) -> Result<Vec<Tool>, ToolError> {
        let result = self.request("tools/list", json!({})).await?;
        Ok(result["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|tool| {
                let name = tool["name"].as_str()?;
                self.allows(name).then(|| Tool {
                    name: name.to_owned(),
                    description: tool["description"].as_str().unwrap_or_default().to_owned(),
                    input_schema: tool["inputSchema"].clone(),
                })
            })
            .collect())
    }

    async fn call_tool(
        &self,
        name: &str,
        arguments: &Map<String, Value>,
    ) -> Result<String, ToolError> {
        let outcome = match self.allows(name) {
            false => Err(ToolError::Unknown(format!(
                "no tool `{name}` is offered to you here"
            ))),
            true => {
                let params = json!({ "name": name, "arguments": arguments });
                self.request("tools/call", params).await.and_then(|result| {
                    let text = text_of(&result);
                    match result["isError"].as_bool() {
                        Some(true) => Err(ToolError::Failed(text)),
                        _ => Ok(text),
                    }
                })
            }
        };
        record_call(
            &self.access,
            &self.caller,
            &format!("external/{}", self.name),
            name,
            outcome,
        )
        .await
    }
}

fn rpc_message(id: u64, method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

/// A JSON body, or the first `data:` event of a server-sent-event stream that parses as JSON.
fn json_rpc_answer(body: &[u8]) -> Option<Value> {
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        return Some(value);
    }
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .find_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
}

/// The text blocks of a tool result, joined; other content kinds are named.
fn text_of(result: &Value) -> String {
    result["content"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|block| match block["text"].as_str() {
            Some(text) => text.to_owned(),
            None => format!("[{} content]", block["type"].as_str().unwrap_or("unknown")),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_as_json_or_as_the_first_event_of_a_stream() {
        let answer = json!({ "jsonrpc": "2.0", "id": 1, "result": {} });
        assert_eq!(
            json_rpc_answer(answer.to_string().as_bytes()),
            Some(answer.clone())
        );
        let stream = format!("event: message\ndata: {answer}\n\n");
        assert_eq!(json_rpc_answer(stream.as_bytes()), Some(answer));
        assert_eq!(json_rpc_answer(b"event: ping\n\n"), None);
    }
}
