//! The OAuth challenge of the MCP servers' paths, shared by the authentication layers (which refuse) and the MCP
//! routes: which scopes a server needs, and the `WWW-Authenticate` value that tells a client where its protected
//! resource metadata (RFC 9728) is and, on `insufficient_scope`, what to step up to.

use crate::error::ApiError;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use deputy_access::{Access, Error};
use deputy_core::{MCP_PATH_PREFIX, ScopeSet};
use deputy_mcp::McpServer;

const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

/// The scopes the MCP server at `path` needs, or `None` when the path names no server.
pub(crate) fn required_scopes(path: &str) -> Option<ScopeSet> {
    let server = path.strip_prefix(MCP_PATH_PREFIX)?;
    McpServer::from_path(server).map(|server| server.required_scopes())
}

/// The `WWW-Authenticate` value of a refusal at `path`: the challenge, and where the resource's metadata is.
pub(crate) fn challenge(
    access: &Access,
    path: &str,
    error: Option<(&str, Option<ScopeSet>)>,
) -> HeaderValue {
    let metadata = format!("{}{METADATA_PREFIX}{path}", access.base_url());
    let mut value = format!("Bearer resource_metadata=\"{metadata}\"");
    if let Some((error, scopes)) = error {
        value.push_str(&format!(", error=\"{error}\""));
        if let Some(scopes) = scopes {
            value.push_str(&format!(", scope=\"{scopes}\""));
        }
    }
    // Every part is this server's URL (already a valid header) or a fixed word.
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// An error answer carrying a challenge.
pub(crate) fn refused(error: Error, challenge: HeaderValue) -> Response {
    let mut response = ApiError(error).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, challenge);
    response
}
