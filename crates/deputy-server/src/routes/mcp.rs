//! The managed MCP servers' wire (`/api/2.0/mcp/…`, Streamable HTTP) and their protected-resource metadata
//! (RFC 9728); the challenges the authentication layers add on these paths are `crate::mcp_challenge`'s, the
//! protocol and the tools `deputy_mcp`'s. This module translates HTTP.

use super::{ApiRouter, Requires};
use crate::error::ApiError;
use crate::extract::Authenticated;
use crate::in_process::InProcessApi;
use crate::state::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use deputy_access::{Access, Error, ErrorCode};
use deputy_core::MCP_PATH_PREFIX;
use deputy_mcp::external::External;
use deputy_mcp::{Managed, McpHeaders, McpServer, Reply, ToolServer};
use serde_json::{Value, json};
use std::sync::Arc;

const SERVER: &str = "/api/2.0/mcp/{*server}";

pub fn routes(router: ApiRouter) -> ApiRouter {
    router
        .post(SERVER, Requires::McpServer, serve)
        // No server-initiated stream and no sessions: Streamable HTTP's answer to both is 405.
        .get(SERVER, Requires::McpServer, not_offered)
        .delete(SERVER, Requires::McpServer, not_offered)
        .get(
            "/.well-known/oauth-protected-resource/api/2.0/mcp/{*server}",
            Requires::Public,
            resource_metadata,
        )
}

async fn serve(
    State(state): State<AppState>,
    Path(server): Path<String>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(found) = McpServer::from_path(&server) else {
        return Err(no_server(&server).into());
    };
    let resource = format!("{}{MCP_PATH_PREFIX}{server}", state.access().base_url());
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let mcp_headers = McpHeaders {
        protocol_version: header("mcp-protocol-version"),
        method: header("mcp-method"),
        name: header("mcp-name"),
    };
    let info = found.info();
    let access = state.access().clone();
    let tools: Box<dyn ToolServer> = match found {
        McpServer::Managed(managed) => Box::new(Managed {
            server: managed,
            access,
            token: caller.bearer.0.clone(),
            caller,
            api: Arc::new(InProcessApi::for_resource(state.clone(), resource)),
        }),
        McpServer::External { connection } => {
            Box::new(External::open(access, state.upstreams().clone(), caller, &connection).await?)
        }
    };
    Ok(
        match deputy_mcp::handle(tools.as_ref(), &info, &mcp_headers, &body).await {
            Reply::Accepted => StatusCode::ACCEPTED.into_response(),
            Reply::Json { status, body } => {
                let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
                (status, Json(body)).into_response()
            }
        },
    )
}

async fn not_offered(Path(server): Path<String>) -> Result<Response, ApiError> {
    if McpServer::from_path(&server).is_none() {
        return Err(no_server(&server).into());
    }
    let message = "this MCP server answers POST only: no server-initiated stream, no sessions";
    let mut response = ApiError(Error::new(ErrorCode::MethodNotAllowed, message)).into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    Ok(response)
}

/// RFC 9728 metadata of the MCP server at `/api/2.0/mcp/{server}`: Deputy is its authorization server, and the
/// scopes it needs are all listed, so a client asks for them at once.
async fn resource_metadata(
    State(access): State<Arc<Access>>,
    Path(server): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let Some(found) = McpServer::from_path(&server) else {
        return Err(no_server(&server).into());
    };
    let scopes: Vec<&str> = found
        .required_scopes()
        .iter()
        .map(|scope| scope.name())
        .collect();
    Ok(Json(json!({
        "resource": format!("{}{MCP_PATH_PREFIX}{server}", access.base_url()),
        "resource_name": found.info().name,
        "authorization_servers": [access.credentials().issuer()],
        "scopes_supported": scopes,
        "bearer_methods_supported": ["header"],
    })))
}

fn no_server(server: &str) -> Error {
    Error::not_found(format!(
        "no MCP server at `{MCP_PATH_PREFIX}{server}` (servers: sql, vector-search/{{catalog}}/{{schema}}[/{{index}}], \
         genie/{{space_id}}, functions/{{catalog}}/{{schema}}[/{{function}}], external/{{connection}})"
    ))
}
