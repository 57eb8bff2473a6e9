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

pub mod managed;
pub mod protocol;
pub mod tools;

pub use managed::{Managed, ManagedServer};
pub use protocol::{McpHeaders, Reply, ServerInfo, handle};
pub use tools::{Tool, ToolError, ToolServer};
