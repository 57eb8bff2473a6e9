//! MCP servers over Deputy's resources, for one caller at a time.
//!
//! `protocol` answers one Streamable-HTTP message of either protocol era (the `initialize` handshake, or the
//! per-request envelope of 2026-07-28) with a [`tools::ToolServer`]'s tools; `managed` has Databricks' managed
//! servers (`/api/2.0/mcp/sql`, `vector-search/{catalog}/{schema}[/{index}]`, `genie/{space}`,
//! `functions/{catalog}/{schema}[/{function}]`), whose tools run through the public API with the caller's token.
//! The server crate authenticates, checks the audience and scopes, and translates HTTP.
//!
//! **Invariants:** a tool is listed only for a caller who may use it, and decided again when called; a tool reaches
//! data only through the public API with the caller's own token (so grants, row filters, masks and audit hold as for
//! any REST call); no session state: each message is answered on its own.

pub mod external;
pub mod managed;
pub mod protocol;
pub mod tools;

pub use managed::{Managed, ManagedServer};
pub use protocol::{McpHeaders, Reply, ServerInfo, handle};
pub use tools::{Tool, ToolError, ToolServer};

use deputy_core::{ApiScope, ScopeSet};

/// The MCP server a path below `deputy_core::MCP_PATH_PREFIX` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McpServer {
    Managed(ManagedServer),
    /// `external/{connection}`: an external server behind a Unity Catalog connection ([`external::External`]).
    External {
        connection: String,
    },
}

impl McpServer {
    pub fn from_path(path: &str) -> Option<McpServer> {
        match path.split_once('/') {
            Some(("external", connection))
                if !connection.is_empty() && !connection.contains('/') =>
            {
                Some(McpServer::External {
                    connection: connection.to_owned(),
                })
            }
            _ => ManagedServer::from_path(path).map(McpServer::Managed),
        }
    }

    /// Every scope the server's tools need (see [`ManagedServer::required_scopes`]).
    pub fn required_scopes(&self) -> ScopeSet {
        match self {
            McpServer::Managed(server) => server.required_scopes(),
            McpServer::External { .. } => [ApiScope::McpExternal, ApiScope::CatalogConnections]
                .into_iter()
                .collect(),
        }
    }

    pub fn info(&self) -> ServerInfo {
        match self {
            McpServer::Managed(server) => server.info(),
            McpServer::External { connection } => ServerInfo {
                name: format!("deputy-external-{connection}"),
                version: env!("CARGO_PKG_VERSION"),
                instructions: format!(
                    "The tools of the external MCP server behind the connection `{connection}`, used as the signed-in user."
                ),
            },
        }
    }
}
