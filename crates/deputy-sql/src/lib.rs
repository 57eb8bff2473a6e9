//! Deputy's SQL warehouse engine: each statement runs in an Apache DataFusion session built for its caller.
//!
//! **Architecture invariant:** the engine knows nothing about HTTP, tokens or statement ids. It takes a [`Session`]
//! (principal, end user, scopes, authorization snapshot) and SQL text, and returns Arrow batches or a [`SqlError`].
//! The REST layer owns warehouses, statement state, polling and rendering to the wire.
//!
//! **Architecture invariant:** what a principal may not use does not exist for it. The session's catalog holds
//! only the catalogs, schemas, tables, views and functions `deputy_authz::decide` allows, so a hidden object fails
//! exactly like a missing one (one exception, as in Databricks: calling a function in a schema the caller can see is
//! refused naming `EXECUTE`).
//!
//! **Architecture invariant:** row filters and column masks are applied inside the scan of the table
//! ([`table`](crate::table) module), below every user expression, so no query shape can read around them. DELETE
//! and UPDATE read through the same guarded scans: they change only rows the row filter shows the caller, and see
//! masked values (`engine::dml`).
//!
//! **Architecture invariant:** a table's files change atomically: appends publish a complete file by renaming it,
//! rewrites publish a complete new version by replacing a pointer file ([`storage`](crate::storage) module).
//!
//! **Architecture invariant:** the engine never mutates the shared authorization state. DDL writes the catalog
//! store and reports [`CatalogChange`]s; the caller publishes them (see [`apply_catalog_changes`]).

mod catalog;
mod engine;
mod error;
mod functions;
mod parse;
mod result;
mod routines;
mod session;
mod single_row;
mod snapshot;
mod storage;
mod table;
mod types;

pub use engine::{SqlEngine, StatementParameter};
pub use error::SqlError;
pub use parse::{is_read_only_query, query_tables};
pub use result::{CatalogChange, ColumnInfo, StatementResult, apply_catalog_changes};
pub use session::Session;
pub use tokio_util::sync::CancellationToken;
pub use types::{arrow_type, type_name, type_text};
