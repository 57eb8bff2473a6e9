//! The Model Context Protocol over Streamable HTTP, server side, for one POSTed JSON-RPC message: the handshake era
//! (revisions 2024-11-05 to 2025-11-25: `initialize`, then requests) and the stateless era (2026-07-28: every request
//! carries its protocol version and client capabilities in `params._meta`, mirrored in HTTP headers, and
//! `server/discover` replaces the handshake). This server keeps no session: every request stands alone, so both eras
//! are answered the same way and a client never has to resume anything.

use crate::tools::{ToolError, ToolServer};
use serde_json::{Map, Value, json};

/// Revisions reached through the `initialize` handshake, oldest first.
pub const HANDSHAKE_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// Revisions that use the per-request envelope.
pub const STATELESS_VERSIONS: [&str; 1] = ["2026-07-28"];

const PROTOCOL_VERSION_KEY: &str = "io.modelcontextprotocol/protocolVersion";
const CLIENT_CAPABILITIES_KEY: &str = "io.modelcontextprotocol/clientCapabilities";
const SERVER_INFO_KEY: &str = "io.modelcontextprotocol/serverInfo";

// JSON-RPC and MCP error codes.
const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;
const INTERNAL_ERROR: i64 = -32603;
const HEADER_MISMATCH: i64 = -32020;
const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// The MCP headers of the HTTP request, as sent (the transport reads them; this module compares them).
#[derive(Debug, Default, Clone)]
pub struct McpHeaders {
    pub protocol_version: Option<String>,
    pub method: Option<String>,
    pub name: Option<String>,
}

/// What to answer over HTTP.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// A JSON-RPC response with this HTTP status.
    Json { status: u16, body: Value },
    /// A notification or a client's response was received: `202 Accepted`, no body.
    Accepted,
}

/// Who this server is, for `initialize` and `server/discover`.
pub struct ServerInfo {
    pub name: String,
    pub version: &'static str,
    pub instructions: String,
}

impl ServerInfo {
    fn to_json(&self) -> Value {
        json!({ "name": self.name, "version": self.version })
    }
}

/// Answers one POSTed message with `server`'s tools.
pub async fn handle(
    server: &dyn ToolServer,
    info: &ServerInfo,
    headers: &McpHeaders,
    body: &[u8],
) -> Reply {
    let Ok(message) = serde_json::from_slice::<Value>(body) else {
        return error(Value::Null, PARSE_ERROR, "the body is not JSON", None);
    };
    let Some(object) = message.as_object() else {
        // Batches were dropped from the protocol in 2025-06-18; this server never took them.
        return error(
            Value::Null,
            INVALID_REQUEST,
            "send one JSON-RPC message per request",
            None,
        );
    };
    let id = object.get("id").cloned();
    let Some(method) = object.get("method").and_then(Value::as_str) else {
        // A client's response to a request of ours (this server sends none): nothing to answer.
        if object.contains_key("result") || object.contains_key("error") {
            return Reply::Accepted;
        }
        return error(
            id.unwrap_or(Value::Null),
            INVALID_REQUEST,
            "a request needs a `method`",
            None,
        );
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return error(
            id.unwrap_or(Value::Null),
            INVALID_REQUEST,
            "`jsonrpc` must be \"2.0\"",
            None,
        );
    }
    let Some(id) = id else {
        // A notification (`notifications/initialized`, `notifications/cancelled`, ...): nothing to do for a server
        // without sessions or long-running work.
        return Reply::Accepted;
    };
    let params = object.get("params").cloned().unwrap_or(json!({}));
    let era = match era_of(method, &params, headers) {
        Ok(era) => era,
        Err((code, message, data)) => return stateless_error(id, code, &message, data),
    };
    let result = match (method, &era) {
        ("initialize", Era::Handshake) => Ok(initialize(info, &params)),
        ("server/discover", Era::Stateless) => Ok(discover(info)),
        // 2026-07-28 removed `ping` with the session it kept alive.
        ("ping", Era::Handshake) => Ok(json!({})),
        ("tools/list", _) => list_tools(server, &era).await,
        ("tools/call", _) => call_tool(server, &params).await,
        _ => Err((
            METHOD_NOT_FOUND,
            format!("method `{method}` is not offered by this server"),
        )),
    };
    match result {
        Ok(mut result) => {
            if let Era::Stateless = era {
                result["resultType"] = json!("complete");
                result["_meta"] = json!({ SERVER_INFO_KEY: info.to_json() });
            }
            Reply::Json {
                status: 200,
                body: json!({ "jsonrpc": "2.0", "id": id, "result": result }),
            }
        }
        Err((code, message)) => match era {
            Era::Stateless => stateless_error(id, code, &message, None),
            // Handshake-era clients read an HTTP error status as a broken transport (a 404 as a lost session), so a
            // JSON-RPC error travels in a 200.
            Era::Handshake => Reply::Json {
                status: 200,
                body: error_body(id, code, &message, None),
            },
        },
    }
}

/// How the client speaks: through the handshake, or with a per-request envelope naming this revision.
enum Era {
    Handshake,
    Stateless,
}

type Refusal = (i64, String, Option<Value>);

/// Tells the eras apart and runs the stateless era's checks: the envelope is complete, the headers agree with the
/// body, the revision is one this server speaks.
fn era_of(method: &str, params: &Value, headers: &McpHeaders) -> Result<Era, Refusal> {
    let meta = params.get("_meta");
    let enveloped = meta.is_some_and(|meta| meta.get(PROTOCOL_VERSION_KEY).is_some());
    let header_is_stateless = headers
        .protocol_version
        .as_deref()
        .is_some_and(|version| !HANDSHAKE_VERSIONS.contains(&version));
    if !enveloped && !header_is_stateless && method != "server/discover" {
        return Ok(Era::Handshake);
    }
    let invalid = |message: &str| (INVALID_PARAMS, message.to_owned(), None);
    let Some(meta) = meta.and_then(Value::as_object) else {
        return Err(invalid(
            "params._meta must carry the protocol version and the client capabilities",
        ));
    };
    let missing: Vec<&str> = [PROTOCOL_VERSION_KEY, CLIENT_CAPABILITIES_KEY]
        .into_iter()
        .filter(|key| !meta.contains_key(*key))
        .collect();
    if !missing.is_empty() {
        return Err(invalid(&format!(
            "params._meta is missing {}",
            missing.join(", ")
        )));
    }
    let version = &meta[PROTOCOL_VERSION_KEY];
    let mismatch = |what: &str| {
        (
            HEADER_MISMATCH,
            format!("the {what} header does not match the request body"),
            None,
        )
    };
    if headers.protocol_version.as_deref() != version.as_str() || headers.protocol_version.is_none()
    {
        return Err(mismatch("MCP-Protocol-Version"));
    }
    if headers.method.as_deref() != Some(method) {
        return Err(mismatch("Mcp-Method"));
    }
    if method == "tools/call"
        && let Some(name) = params.get("name").and_then(Value::as_str)
        && headers.name.as_deref() != Some(name)
    {
        return Err(mismatch("Mcp-Name"));
    }
    let Some(version) = version.as_str() else {
        return Err(invalid("the protocol version must be a string"));
    };
    if !STATELESS_VERSIONS.contains(&version) {
        let supported: Vec<&str> = STATELESS_VERSIONS
            .iter()
            .chain(&HANDSHAKE_VERSIONS)
            .copied()
            .collect();
        return Err((
            UNSUPPORTED_PROTOCOL_VERSION,
            format!("protocol version `{version}` is not supported"),
            Some(json!({ "supported": supported, "requested": version })),
        ));
    }
    Ok(Era::Stateless)
}

fn capabilities() -> Value {
    json!({ "tools": { "listChanged": false } })
}

fn initialize(info: &ServerInfo, params: &Value) -> Value {
    let requested = params["protocolVersion"].as_str().unwrap_or_default();
    let version = match HANDSHAKE_VERSIONS.contains(&requested) {
        true => requested,
        false => HANDSHAKE_VERSIONS[HANDSHAKE_VERSIONS.len() - 1],
    };
    json!({
        "protocolVersion": version,
        "capabilities": capabilities(),
        "serverInfo": info.to_json(),
        "instructions": info.instructions,
    })
}

fn discover(info: &ServerInfo) -> Value {
    let supported: Vec<&str> = STATELESS_VERSIONS
        .iter()
        .chain(&HANDSHAKE_VERSIONS)
        .copied()
        .collect();
    json!({
        "supportedVersions": supported,
        "capabilities": capabilities(),
        "instructions": info.instructions,
        // The tools depend on who asks: no shared cache may keep them.
        "cacheScope": "private",
        "ttlMs": 0,
    })
}

async fn list_tools(server: &dyn ToolServer, era: &Era) -> Result<Value, (i64, String)> {
    let tools = server.list_tools().await.map_err(internal)?;
    let tools: Vec<Value> = tools
        .into_iter()
        .map(|tool| json!({ "name": tool.name, "description": tool.description, "inputSchema": tool.input_schema }))
        .collect();
    let mut result = json!({ "tools": tools });
    if let Era::Stateless = era {
        result["cacheScope"] = json!("private");
        result["ttlMs"] = json!(0);
    }
    Ok(result)
}

/// A tool that fails for a reason the caller can act on (refused, bad arguments, a failed query) answers a result
/// with `isError`, as the protocol asks, so the model sees why; only a broken server is a JSON-RPC error.
async fn call_tool(server: &dyn ToolServer, params: &Value) -> Result<Value, (i64, String)> {
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return Err((INVALID_PARAMS, "tools/call needs the tool's `name`".into()));
    };
    let arguments = match params.get("arguments") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(arguments)) => arguments.clone(),
        Some(_) => return Err((INVALID_PARAMS, "`arguments` must be an object".into())),
    };
    match server.call_tool(name, &arguments).await {
        Ok(text) => Ok(json!({ "content": [{ "type": "text", "text": text }], "isError": false })),
        Err(ToolError::Unknown(message)) => Err((INVALID_PARAMS, message)),
        Err(ToolError::Failed(message)) => {
            Ok(json!({ "content": [{ "type": "text", "text": message }], "isError": true }))
        }
        Err(error @ ToolError::Internal(_)) => Err(internal(error)),
    }
}

fn internal(error: ToolError) -> (i64, String) {
    (INTERNAL_ERROR, error.to_string())
}

/// An error about the message itself, before any era is known: `400 Bad Request`.
fn error(id: Value, code: i64, message: &str, data: Option<Value>) -> Reply {
    Reply::Json {
        status: 400,
        body: error_body(id, code, message, data),
    }
}

/// A JSON-RPC error answer with the HTTP status the stateless era gives its code.
fn stateless_error(id: Value, code: i64, message: &str, data: Option<Value>) -> Reply {
    let status = match code {
        PARSE_ERROR
        | INVALID_REQUEST
        | INVALID_PARAMS
        | HEADER_MISMATCH
        | UNSUPPORTED_PROTOCOL_VERSION => 400,
        METHOD_NOT_FOUND => 404,
        _ => 200,
    };
    Reply::Json {
        status,
        body: error_body(id, code, message, data),
    }
}

fn error_body(id: Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}
