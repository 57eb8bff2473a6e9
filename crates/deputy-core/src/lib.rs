//! The vocabulary every Deputy crate shares and nothing more: API scopes, the kinds of principal, and where the MCP
//! servers live.
//!
//! This crate knows nothing about HTTP, storage, or token formats. It is pure data and set algebra.

pub mod principal;
pub mod scopes;

pub use principal::PrincipalKind;
pub use scopes::{ApiScope, ScopeError, ScopeSet};

/// Where the managed MCP servers live (`/api/2.0/mcp/sql`, `/api/2.0/mcp/genie/{space}`, …): the only paths that
/// accept a token bound to one resource (RFC 8707), and the only resources sign-in binds tokens to.
pub const MCP_PATH_PREFIX: &str = "/api/2.0/mcp/";

/// The `mcp.*` scope of the MCP server at `path` (below [`MCP_PATH_PREFIX`]), named by its first segment.
pub fn mcp_scope_of(path: &str) -> Option<ApiScope> {
    match path.split('/').next()? {
        "sql" => Some(ApiScope::McpSql),
        "vector-search" | "ai-search" => Some(ApiScope::McpVectorSearch),
        "functions" => Some(ApiScope::McpFunctions),
        "genie" => Some(ApiScope::McpGenie),
        "external" => Some(ApiScope::McpExternal),
        _ => None,
    }
}
