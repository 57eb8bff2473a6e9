//! Vector search indexes: rows with a primary key, JSON columns, one embedding vector and optional text columns,
//! queried by approximate nearest neighbours (HNSW), BM25 full text, or both fused (hybrid), under a Databricks
//! `filters_json` filter and an optional allow-set of primary keys.
//!
//! **Architecture invariant:** a pure library. It knows nothing of HTTP, Unity Catalog, tokens or users: the server
//! decides who may query what and hands the index a [`Filter`] and, for row-level security, the set of primary keys
//! the caller may see ([`VectorIndex::allow_set`] turns it into a bitmap over the index's row ids). The allow-set
//! restricts the search itself (an exact scan of a small set, an over-fetched walk for a large one, otherwise a
//! filtered HNSW walk), so a query still returns `num_results` hits when some exist, instead of post-filtering a
//! fixed top k.
//!
//! **Architecture invariant:** an acknowledged write is durable. [`VectorIndex::upsert`] and
//! [`VectorIndex::delete`] return only after the operation is fsynced to the index's log (see the `log` module);
//! the HNSW graph and the full-text index are derived state, rebuilt when an index is opened.
//!
//! **Architecture invariant:** an index directory may be open in several processes at once (replicas sharing one
//! storage directory). Writes are serialised through a file lock and first apply what other processes wrote;
//! [`VectorIndex::is_current`] and [`VectorIndex::catch_up`] bring a reader up to date (see the `log` module).

mod filter;
mod index;
mod log;
mod text;

pub use filter::Filter;
pub use index::{
    AllowSet, AnnParams, Hit, IndexConfig, Metric, Query, QueryKind, VectorConfig, VectorIndex,
    WriteOutcome, key_of,
};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    /// A malformed `filters_json`: the client's mistake.
    #[error("invalid filter: {0}")]
    InvalidFilter(String),
    /// A request the index cannot answer as asked (wrong dimension, missing query text, ...): the client's mistake.
    #[error("{0}")]
    InvalidRequest(String),
    #[error("i/o error at `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("index data at `{}` is unreadable: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    /// The index's directory is gone: another process sharing the storage deleted the index.
    #[error("the index at `{}` was deleted", path.display())]
    Deleted { path: PathBuf },
    /// An allow-set used after a write to the index it was built from (a bug in the caller, not the client's).
    #[error("the allow-set was built before the index's last write; build it again")]
    StaleAllowSet,
    #[error("HNSW engine: {0}")]
    Engine(String),
    #[error("full-text engine: {0}")]
    FullText(String),
}

impl VectorError {
    /// Whether the caller's request, not the server, is at fault (an HTTP 400).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            VectorError::InvalidFilter(_) | VectorError::InvalidRequest(_)
        )
    }
}
