//! Vector search: endpoints (workspace objects with ACLs) and indexes (Unity Catalog securables named
//! `catalog.schema.index`), their data, queries, writes and delta sync. The answers are the bodies of the
//! `/api/2.0/vector-search` API; the server only moves them on and off the wire.
//!
//! Indexes are [`deputy_vector::VectorIndex`]es under `STORAGE/vector-search/<securable id>/`, opened at startup
//! or on first use ([`VectorIndexes`]); replicas sharing the storage directory share them, and each read first
//! applies what another replica wrote (a write does so under the index's file lock). Reading needs `SELECT` on the
//! index (plus `USE_CATALOG`/`USE_SCHEMA`), writing `MODIFY`, creating `CREATE_TABLE` on the schema. Embeddings come
//! from serving endpoints through an [`Embedder`], which decides as the caller like any other query.
//!
//! **Invariants**
//! - An index in a schema the caller may not see into does not exist for the caller (404); otherwise a refusal names
//!   the missing privilege.
//! - Beyond Databricks: a DELTA_SYNC index over a table with a row filter or column masks answers each user only
//!   with rows the filter admits for them and values as the masks show them (see [`ReaderView`]); a masked value
//!   hidden from the user can be neither filtered on nor searched by; when the source table or its stored spec is
//!   missing or unreadable, the index refuses to answer rather than skip the policy.
//! - An index's securable is never left without its data: a failed creation deletes the securable again.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deputy_access::clock::now_millis;
use deputy_access::error::decode_stored;
use deputy_access::{Access, Caller, Error};
use deputy_authz::{
    Action, PermissionLevel, SecurableKind, SecurableRef, WorkspaceObjectKind, WorkspaceObjectRef,
};
use deputy_catalog::{namespace_of, object_type_of, principal_id, securable_ref};
use deputy_core::{ApiScope, ScopeSet};
use deputy_sql::Session;
use deputy_store::catalog::{NewSecurable, SecurableRecord, WorkspaceObjectRecord};
use deputy_store::specs::TableSpec;
use deputy_store::{Identity, PrincipalId, Store};
use deputy_vector::{
    Filter, IndexConfig, Query, QueryKind, VectorConfig, VectorError, VectorIndex, WriteOutcome,
    key_of,
};
use deputy_warehouse::Warehouse;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Turns texts into vectors with the model behind a serving endpoint, deciding as `caller` (who must be allowed to
/// query the endpoint). The server implements it with its serving backends.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    async fn embed(
        &self,
        caller: &Caller,
        endpoint_name: &str,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, Error>;
}

/// The vector-search service: the kernel it decides with, the engine delta sync reads tables with, the open indexes.
pub struct VectorSearch {
    access: Arc<Access>,
    warehouse: Arc<Warehouse>,
    indexes: VectorIndexes,
}

impl VectorSearch {
    pub fn new(
        access: Arc<Access>,
        warehouse: Arc<Warehouse>,
        indexes: VectorIndexes,
    ) -> VectorSearch {
        VectorSearch {
            access,
            warehouse,
            indexes,
        }
    }

    fn access(&self) -> &Access {
        &self.access
    }

    fn warehouse(&self) -> &Warehouse {
        &self.warehouse
    }

    fn vector_indexes(&self) -> &VectorIndexes {
        &self.indexes
    }
}

/// Query results are split into pages of at most this many rows (`next_page_token`); the clients follow the
/// tokens, so asking for fewer results than this always gives one page.
const PAGE_ROWS: usize = 1_000;
const DEFAULT_NUM_RESULTS: usize = 10;
const MAX_NUM_RESULTS: usize = 10_000;

// ---- the index registry -----------------------------------------------------------------------------------------

type SharedIndex = Arc<RwLock<VectorIndex>>;

/// The open indexes, by securable id. Their directories may be shared with other replicas: an index is opened on
/// first use when it was created elsewhere, caught up before each read, and forgotten once its directory is gone.
pub struct VectorIndexes {
    root: PathBuf,
    open: RwLock<HashMap<i64, SharedIndex>>,
}

impl VectorIndexes {
    /// Opens every index the catalog holds under `root`. An index whose files cannot be read is logged and left
    /// closed: its queries fail, the server and the other indexes work.
    pub async fn load(root: PathBuf, store: &dyn Store) -> Result<VectorIndexes, std::io::Error> {
        std::fs::create_dir_all(&root)?;
        let mut open = HashMap::new();
        let securables = store
            .all_securables()
            .await
            .map_err(std::io::Error::other)?;
        for record in securables
            .iter()
            .filter(|record| record.kind == SecurableKind::VectorIndex.name())
        {
            let dir = root.join(record.id.0.to_string());
            match VectorIndex::open(&dir) {
                Ok(index) => {
                    open.insert(record.id.0, Arc::new(RwLock::new(index)));
                }
                Err(error) => {
                    tracing::error!(index = %record.full_name, %error, "cannot open vector index")
                }
            }
        }
        Ok(VectorIndexes {
            root,
            open: RwLock::new(open),
        })
    }

    fn dir_of(&self, id: i64) -> PathBuf {
        self.root.join(id.to_string())
    }

    /// The index's data, opened from its directory when this process has none yet: an index another replica
    /// sharing the storage created, or one that could not be opened at start.
    async fn opened(&self, record: &SecurableRecord) -> Result<SharedIndex, Error> {
        let id = record.id.0;
        let known = self
            .open
            .read()
            .map_err(|_| Error::internal("index registry lock poisoned"))?
            .get(&id)
            .cloned();
        if let Some(index) = known {
            return Ok(index);
        }
        let dir = self.dir_of(id);
        let opened = tokio::task::spawn_blocking(move || VectorIndex::open(&dir))
            .await
            .map_err(Error::internal)?;
        match opened {
            Ok(index) => Ok(self
                .open
                .write()
                .map_err(|_| Error::internal("index registry lock poisoned"))?
                .entry(id)
                .or_insert_with(|| Arc::new(RwLock::new(index)))
                .clone()),
            Err(error @ VectorError::Deleted { .. }) => Err(self.failed(record, error)),
            Err(error) => {
                tracing::error!(index = %record.full_name, %error, "cannot open vector index");
                Err(Error::internal(format!(
                    "vector index `{}` has no open data",
                    record.full_name
                )))
            }
        }
    }

    /// The index's data holding every write made to it so far, by this replica or by another sharing the storage:
    /// what a read starts from. When another process wrote, its new log records are applied first (see
    /// `deputy_vector::VectorIndex::catch_up`); otherwise the check costs a shared file lock, a `stat` and a small
    /// read.
    async fn current(&self, record: &SecurableRecord) -> Result<SharedIndex, Error> {
        let index = self.opened(record).await?;
        let shared = index.clone();
        let caught_up = tokio::task::spawn_blocking(move || {
            let is_current = shared
                .read()
                .map_err(|_| Error::internal("vector index lock poisoned"))?
                .is_current();
            Ok::<_, Error>(match is_current {
                Ok(true) => Ok(()),
                Ok(false) => shared
                    .write()
                    .map_err(|_| Error::internal("vector index lock poisoned"))?
                    .catch_up()
                    .map(|_| ()),
                Err(error) => Err(error),
            })
        })
        .await
        .map_err(Error::internal)??;
        caught_up.map_err(|error| self.failed(record, error))?;
        Ok(index)
    }

    /// Runs a write (fsync included) off the async workers; it catches up with other processes' writes under the
    /// index's exclusive lock itself.
    async fn write<T: Send + 'static>(
        &self,
        record: &SecurableRecord,
        work: impl FnOnce(&mut VectorIndex) -> Result<T, VectorError> + Send + 'static,
    ) -> Result<T, Error> {
        let index = self.opened(record).await?;
        let written = tokio::task::spawn_blocking(move || {
            let mut index = index
                .write()
                .map_err(|_| Error::internal("vector index lock poisoned"))?;
            Ok::<_, Error>(work(&mut index))
        })
        .await
        .map_err(Error::internal)??;
        written.map_err(|error| self.failed(record, error))
    }

    /// The error of an index's data; an index deleted by another replica is forgotten here, and not found.
    fn failed(&self, record: &SecurableRecord, error: VectorError) -> Error {
        if matches!(error, VectorError::Deleted { .. }) {
            if let Ok(mut open) = self.open.write() {
                open.remove(&record.id.0);
            }
            return index_missing(&record.full_name);
        }
        vector_error(error)
    }

    fn insert(&self, id: i64, index: VectorIndex) -> Result<SharedIndex, Error> {
        let shared = Arc::new(RwLock::new(index));
        self.open
            .write()
            .map_err(|_| Error::internal("index registry lock poisoned"))?
            .insert(id, shared.clone());
        Ok(shared)
    }

    /// Forgets the index and deletes its files once no process is writing it (waiting off the async workers).
    async fn remove(&self, id: i64) -> Result<(), Error> {
        self.open
            .write()
            .map_err(|_| Error::internal("index registry lock poisoned"))?
            .remove(&id);
        let dir = self.dir_of(id);
        tokio::task::spawn_blocking(move || VectorIndex::delete_files(&dir))
            .await
            .map_err(Error::internal)?
            .map_err(vector_error)
    }
}

fn vector_error(error: VectorError) -> Error {
    match error {
        VectorError::Deleted { .. } => Error::not_found("the vector index was deleted"),
        error if error.is_client_error() => Error::invalid_parameter(error.to_string()),
        error => Error::internal(error),
    }
}

fn read(index: &SharedIndex) -> Result<std::sync::RwLockReadGuard<'_, VectorIndex>, Error> {
    index
        .read()
        .map_err(|_| Error::internal("vector index lock poisoned"))
}

/// Runs a write (fsync included) off the async workers.
async fn write<T: Send + 'static>(
    index: &SharedIndex,
    work: impl FnOnce(&mut VectorIndex) -> Result<T, VectorError> + Send + 'static,
) -> Result<T, Error> {
    let index = index.clone();
    tokio::task::spawn_blocking(move || {
        let mut index = index
            .write()
            .map_err(|_| Error::internal("vector index lock poisoned"))?;
        work(&mut index).map_err(vector_error)
    })
    .await
    .map_err(Error::internal)?
}

// ---- endpoints --------------------------------------------------------------------------------------------------

fn endpoint_object_type() -> &'static str {
    object_type_of(WorkspaceObjectKind::VectorSearchEndpoint)
}

fn endpoint_ref(record: &WorkspaceObjectRecord) -> WorkspaceObjectRef {
    WorkspaceObjectRef::new(WorkspaceObjectKind::VectorSearchEndpoint, &record.object_id)
}

fn may_use_endpoint(
    state: &VectorSearch,
    caller: &Caller,
    record: &WorkspaceObjectRecord,
    level: PermissionLevel,
) -> bool {
    let action = Action::UseWorkspaceObject {
        object: endpoint_ref(record),
        level,
    };
    state
        .access()
        .decide(caller, ApiScope::VectorSearchEndpoints, action)
        .is_allowed()
}

async fn find_endpoint(
    state: &VectorSearch,
    name: &str,
) -> Result<Option<WorkspaceObjectRecord>, Error> {
    Ok(state
        .access()
        .store()
        .list_workspace_objects(endpoint_object_type())
        .await?
        .into_iter()
        .find(|record| record.name == name))
}

/// The endpoint named `name` if the caller may use it, after checking `level`; an endpoint the caller may not use
/// reads as not found.
async fn authorized_endpoint(
    state: &VectorSearch,
    caller: &Caller,
    name: &str,
    level: PermissionLevel,
) -> Result<WorkspaceObjectRecord, Error> {
    let what = format!("vector search endpoint `{name}`");
    let missing = || Error::not_found(format!("{what} does not exist"));
    let record = find_endpoint(state, name).await?.ok_or_else(missing)?;
    // An endpoint is visible to whoever may use it (there is no CAN_VIEW on vector-search endpoints).
    let usable = Action::UseWorkspaceObject {
        object: endpoint_ref(&record),
        level: PermissionLevel::CanUse,
    };
    let action = Action::UseWorkspaceObject {
        object: endpoint_ref(&record),
        level,
    };
    let scope = ApiScope::VectorSearchEndpoints;
    state
        .access()
        .authorize_object(caller, scope, &[usable], action, &what)?;
    Ok(record)
}

async fn render_endpoint(
    state: &VectorSearch,
    record: &WorkspaceObjectRecord,
) -> Result<Value, Error> {
    let spec: Map<String, Value> = decode_stored("vector search endpoint spec", &record.spec)?;
    let setting = |key: &str, default: Value| spec.get(key).cloned().unwrap_or(default);
    let num_indexes = index_records(state)
        .await?
        .iter()
        .filter(|(_, spec)| spec.endpoint_name == record.name)
        .count();
    let creator = state
        .access()
        .directory()
        .get(record.owner_id)
        .map(|owner| owner.name.clone());
    Ok(json!({
        "id": record.object_id,
        "name": record.name,
        "endpoint_type": setting("endpoint_type", json!("STANDARD")),
        "endpoint_status": { "state": setting("state", json!("ONLINE")), "message": "" },
        "num_indexes": num_indexes,
        "creator": creator,
        "creation_timestamp": record.created_at,
        "last_updated_timestamp": setting("last_updated_timestamp", json!(record.created_at)),
        "last_updated_user": setting("last_updated_user", json!(creator)),
        "custom_tags": setting("custom_tags", json!([])),
    }))
}

#[derive(Deserialize)]
pub struct CreateEndpoint {
    name: Option<String>,
    endpoint_type: Option<String>,
    custom_tags: Option<Value>,
}

pub async fn create_endpoint(
    state: &VectorSearch,
    caller: &Caller,
    body: CreateEndpoint,
) -> Result<Value, Error> {
    state.access().authorize(
        caller,
        ApiScope::VectorSearchEndpoints,
        Action::CreateVectorSearchEndpoint,
    )?;
    let name = body
        .name
        .filter(|name| !name.trim().is_empty() && name.len() <= 100)
        .ok_or_else(|| Error::invalid_parameter("`name` is required (at most 100 characters)"))?;
    let endpoint_type = body
        .endpoint_type
        .unwrap_or_else(|| "STANDARD".into())
        .to_ascii_uppercase();
    if !["STANDARD", "STORAGE_OPTIMIZED"].contains(&endpoint_type.as_str()) {
        return Err(Error::invalid_parameter(format!(
            "unknown `endpoint_type` `{endpoint_type}`"
        )));
    }
    if find_endpoint(state, &name).await?.is_some() {
        return Err(Error::already_exists(format!(
            "vector search endpoint `{name}` already exists"
        )));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let spec = json!({
        "endpoint_type": endpoint_type,
        "state": "ONLINE",
        "custom_tags": body.custom_tags.unwrap_or_else(|| json!([])),
    });
    let record = WorkspaceObjectRecord {
        object_type: endpoint_object_type().to_owned(),
        object_id: id.clone(),
        name,
        owner_id: caller.identity.id,
        spec: spec.to_string(),
        created_at: now_millis(),
    };
    state
        .access()
        .create_workspace_object(record.clone(), PermissionLevel::CanManage)
        .await?;
    render_endpoint(state, &record).await
}

pub async fn list_endpoints(state: &VectorSearch, caller: &Caller) -> Result<Value, Error> {
    let mut endpoints = Vec::new();
    for record in state
        .access()
        .store()
        .list_workspace_objects(endpoint_object_type())
        .await?
    {
        if may_use_endpoint(state, caller, &record, PermissionLevel::CanUse) {
            endpoints.push(render_endpoint(state, &record).await?);
        }
    }
    Ok(json!({ "endpoints": endpoints, "next_page_token": "" }))
}

pub async fn get_endpoint(
    state: &VectorSearch,
    caller: &Caller,
    name: String,
) -> Result<Value, Error> {
    let record = authorized_endpoint(state, caller, &name, PermissionLevel::CanUse).await?;
    render_endpoint(state, &record).await
}

pub async fn delete_endpoint(
    state: &VectorSearch,
    caller: &Caller,
    name: String,
) -> Result<Value, Error> {
    let record = authorized_endpoint(state, caller, &name, PermissionLevel::CanManage).await?;
    if index_records(state)
        .await?
        .iter()
        .any(|(_, spec)| spec.endpoint_name == name)
    {
        return Err(Error::invalid_state(format!(
            "vector search endpoint `{name}` still serves indexes; delete them first"
        )));
    }
    let deleted = state
        .access()
        .store()
        .delete_workspace_object(endpoint_object_type(), &record.object_id)
        .await;
    state.access().publish().await?;
    deleted?;
    Ok(json!({}))
}

pub async fn set_endpoint_state(
    state: &VectorSearch,
    caller: &Caller,
    name: String,
    endpoint_state: &'static str,
) -> Result<Value, Error> {
    let record = authorized_endpoint(state, caller, &name, PermissionLevel::CanManage).await?;
    let mut spec: Map<String, Value> = decode_stored("vector search endpoint spec", &record.spec)?;
    spec.insert("state".into(), json!(endpoint_state));
    spec.insert("last_updated_timestamp".into(), json!(now_millis()));
    spec.insert("last_updated_user".into(), json!(caller.identity.name));
    let spec = Value::Object(spec).to_string();
    state
        .access()
        .store()
        .update_workspace_object_spec(endpoint_object_type(), &record.object_id, &spec)
        .await?;
    let record = WorkspaceObjectRecord { spec, ..record };
    render_endpoint(state, &record).await
}

// ---- index metadata ---------------------------------------------------------------------------------------------

/// The stored `spec` of a vector-index securable. `table_type` keeps the Unity Catalog tables API's rendering of the
/// securable meaningful (it reads the spec as a table's).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexSpec {
    table_type: String,
    endpoint_name: String,
    index_type: String,
    index_subtype: String,
    primary_key: String,
    #[serde(default)]
    delta_sync_index_spec: Option<Value>,
    #[serde(default)]
    direct_access_index_spec: Option<Value>,
    config: IndexConfig,
    /// Embeddings computed from a text column by a model endpoint, stored in `config.vector.column`.
    #[serde(default)]
    embedding: Option<EmbeddingSource>,
    #[serde(default)]
    source_table: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct EmbeddingSource {
    column: String,
    endpoint: String,
}

impl IndexSpec {
    fn is_delta_sync(&self) -> bool {
        self.index_type == "DELTA_SYNC"
    }
}

fn parse_spec(record: &SecurableRecord) -> Result<IndexSpec, Error> {
    serde_json::from_str(&record.spec).map_err(|error| {
        Error::internal(format!(
            "vector index `{}` has an unreadable spec: {error}",
            record.full_name
        ))
    })
}

async fn index_records(state: &VectorSearch) -> Result<Vec<(SecurableRecord, IndexSpec)>, Error> {
    let mut records = Vec::new();
    for record in state.access().store().all_securables().await? {
        if record.kind == SecurableKind::VectorIndex.name() {
            let spec = parse_spec(&record)?;
            records.push((record, spec));
        }
    }
    Ok(records)
}

fn index_missing(name: &str) -> Error {
    Error::not_found(format!("vector index `{name}` does not exist"))
}

/// The index named `name` after checking `action` on it: an index in a schema the caller may not see into is not
/// found; otherwise a refusal is a 403 naming the missing privilege.
async fn authorized_index(
    state: &VectorSearch,
    caller: &Caller,
    name: &str,
    action: fn(SecurableRef) -> Action,
) -> Result<(SecurableRecord, IndexSpec), Error> {
    let record = state
        .access()
        .store()
        .find_securable(namespace_of(SecurableKind::VectorIndex), name)
        .await?
        .filter(|record| record.kind == SecurableKind::VectorIndex.name())
        .ok_or_else(|| index_missing(name))?;
    let reference = securable_ref(&record).map_err(Error::internal)?;
    // Whoever may see into the schema learns why it may not use the index; others learn nothing.
    let schema = name.rsplit_once('.').map_or(name, |(schema, _)| schema);
    let visible_through = [
        Action::ReadMetadata(reference.clone()),
        Action::ReadMetadata(SecurableRef::new(SecurableKind::Schema, schema)),
    ];
    state.access().authorize_object(
        caller,
        ApiScope::VectorSearchIndexes,
        &visible_through,
        action(reference),
        &format!("vector index `{name}`"),
    )?;
    let spec = parse_spec(&record)?;
    Ok((record, spec))
}

fn render_index(
    state: &VectorSearch,
    record: &SecurableRecord,
    spec: &IndexSpec,
    rows: usize,
) -> Value {
    let creator = state
        .access()
        .directory()
        .get(record.created_by)
        .map(|creator| creator.name.clone());
    let detailed_state = match spec.is_delta_sync() {
        true => "ONLINE_NO_PENDING_UPDATE",
        false => "ONLINE_DIRECT_ACCESS",
    };
    let mut body = json!({
        "name": record.full_name,
        "endpoint_name": spec.endpoint_name,
        "primary_key": spec.primary_key,
        "index_type": spec.index_type,
        "index_subtype": spec.index_subtype,
        "creator": creator,
        "status": {
            "ready": true,
            "indexed_row_count": rows,
            "message": "",
            "detailed_state": detailed_state,
            "index_url": format!("{}/api/2.0/vector-search/indexes/{}", state.access().base_url(), record.full_name),
        },
    });
    if let Some(delta) = &spec.delta_sync_index_spec {
        body["delta_sync_index_spec"] = delta.clone();
    }
    if let Some(direct) = &spec.direct_access_index_spec {
        body["direct_access_index_spec"] = direct.clone();
    }
    body
}

pub async fn get_index(
    state: &VectorSearch,
    caller: &Caller,
    name: String,
) -> Result<Value, Error> {
    let (record, spec) = authorized_index(state, caller, &name, Action::ReadMetadata).await?;
    let rows = read(&state.vector_indexes().current(&record).await?)?.len();
    Ok(render_index(state, &record, &spec, rows))
}

#[derive(Deserialize)]
pub struct ListIndexes {
    endpoint_name: Option<String>,
}

pub async fn list_indexes(
    state: &VectorSearch,
    caller: &Caller,
    query: ListIndexes,
    endpoint: Option<String>,
) -> Result<Value, Error> {
    let endpoint = endpoint
        .or(query.endpoint_name)
        .filter(|name| !name.is_empty());
    let mut indexes = Vec::new();
    for (record, spec) in index_records(state).await? {
        if endpoint
            .as_ref()
            .is_some_and(|endpoint| *endpoint != spec.endpoint_name)
        {
            continue;
        }
        let reference = securable_ref(&record).map_err(Error::internal)?;
        if state
            .access()
            .decide(
                caller,
                ApiScope::VectorSearchIndexes,
                Action::ReadMetadata(reference),
            )
            .is_allowed()
        {
            let creator = state
                .access()
                .directory()
                .get(record.created_by)
                .map(|c| c.name.clone());
            indexes.push(json!({
                "name": record.full_name,
                "endpoint_name": spec.endpoint_name,
                "primary_key": spec.primary_key,
                "index_type": spec.index_type,
                "index_subtype": spec.index_subtype,
                "creator": creator,
            }));
        }
    }
    Ok(json!({ "vector_indexes": indexes, "next_page_token": "" }))
}

pub async fn delete_index(
    state: &VectorSearch,
    caller: &Caller,
    name: String,
) -> Result<Value, Error> {
    let (record, _) = authorized_index(state, caller, &name, Action::Manage).await?;
    let deleted = state.access().store().delete_securable(record.id).await;
    state.access().publish().await?;
    deleted?;
    state.vector_indexes().remove(record.id.0).await?;
    Ok(json!({}))
}

// ---- index creation ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct CreateIndex {
    name: Option<String>,
    endpoint_name: Option<String>,
    primary_key: Option<String>,
    index_type: Option<String>,
    index_subtype: Option<String>,
    delta_sync_index_spec: Option<Value>,
    direct_access_index_spec: Option<Value>,
}

#[derive(Deserialize, Default)]
struct ColumnsSpec {
    #[serde(default)]
    embedding_vector_columns: Vec<VectorColumn>,
    #[serde(default)]
    embedding_source_columns: Vec<SourceColumn>,
    schema_json: Option<String>,
    source_table: Option<String>,
    #[serde(default)]
    columns_to_sync: Vec<String>,
}

#[derive(Deserialize)]
struct VectorColumn {
    name: String,
    embedding_dimension: Option<usize>,
}

#[derive(Deserialize)]
struct SourceColumn {
    name: String,
    embedding_model_endpoint_name: Option<String>,
}

/// A source table's columns as `(name, Databricks type name)`.
fn table_columns(spec: &TableSpec) -> Vec<(String, String)> {
    spec.columns
        .iter()
        .map(|column| (column.name.clone(), column.type_name.to_ascii_uppercase()))
        .collect()
}

pub async fn create_index(
    state: &VectorSearch,
    caller: &Caller,
    endpoint: Option<String>,
    body: CreateIndex,
    embedder: &dyn Embedder,
) -> Result<Value, Error> {
    let name = body
        .name
        .filter(|name| !name.is_empty())
        .ok_or_else(|| Error::invalid_parameter("`name` is required"))?;
    let endpoint_name = endpoint
        .or(body.endpoint_name)
        .filter(|name| !name.is_empty())
        .ok_or_else(|| Error::invalid_parameter("`endpoint_name` is required"))?;
    let primary_key = body
        .primary_key
        .filter(|key| !key.is_empty())
        .ok_or_else(|| Error::invalid_parameter("`primary_key` is required"))?;
    authorized_endpoint(state, caller, &endpoint_name, PermissionLevel::CanUse).await?;
    let segments: Vec<&str> = name.split('.').collect();
    let [catalog, schema, _] = segments[..] else {
        return Err(Error::invalid_parameter(format!(
            "an index name has three dot-separated parts (catalog.schema.index), `{name}` has {}",
            segments.len()
        )));
    };
    let schema_name = format!("{catalog}.{schema}");
    let parent = existing(state, SecurableKind::Schema, &schema_name).await?;
    let parent_ref = securable_ref(&parent).map_err(Error::internal)?;
    state.access().authorize(
        caller,
        ApiScope::VectorSearchIndexes,
        Action::CreateIn {
            parent: parent_ref,
            kind: SecurableKind::VectorIndex,
        },
    )?;
    for segment in &segments {
        deputy_authz::validate_name(segment).map_err(|error| {
            Error::invalid_parameter(format!("invalid index name `{name}`: {error}"))
        })?;
    }

    let index_type = body
        .index_type
        .unwrap_or_else(|| "DIRECT_ACCESS".into())
        .to_ascii_uppercase();
    let index_subtype = body
        .index_subtype
        .unwrap_or_else(|| "VECTOR".into())
        .to_ascii_uppercase();
    if !["VECTOR", "HYBRID", "FULL_TEXT"].contains(&index_subtype.as_str()) {
        return Err(Error::invalid_parameter(format!(
            "unknown `index_subtype` `{index_subtype}`"
        )));
    }
    let is_delta = index_type == "DELTA_SYNC";
    let (raw_spec, columns_spec) = match index_type.as_str() {
        "DELTA_SYNC" => body.delta_sync_index_spec.clone(),
        "DIRECT_ACCESS" => body.direct_access_index_spec.clone(),
        other => {
            return Err(Error::invalid_parameter(format!(
                "unknown `index_type` `{other}`"
            )));
        }
    }
    .map(|raw| {
        let parsed: ColumnsSpec = serde_json::from_value(raw.clone()).map_err(|error| {
            Error::invalid_parameter(format!(
                "invalid {} spec: {error}",
                index_type.to_ascii_lowercase()
            ))
        })?;
        Ok::<_, Error>((raw, parsed))
    })
    .transpose()?
    .ok_or_else(|| {
        Error::invalid_parameter(format!(
            "`{}_index_spec` is required",
            index_type.to_ascii_lowercase()
        ))
    })?;

    // The columns the index knows, with their types.
    let columns: Vec<(String, String)> = match is_delta {
        true => {
            let table = columns_spec.source_table.clone().ok_or_else(|| {
                Error::invalid_parameter("`delta_sync_index_spec.source_table` is required")
            })?;
            let record = existing(state, SecurableKind::Table, &table).await?;
            let reference = securable_ref(&record).map_err(Error::internal)?;
            // The index owner reads the table on every sync: it must be allowed to.
            state.access().authorize(
                caller,
                ApiScope::VectorSearchIndexes,
                Action::ReadTable(reference),
            )?;
            let table_spec: TableSpec = decode_stored("table spec", &record.spec)?;
            let all = table_columns(&table_spec);
            match columns_spec.columns_to_sync.is_empty() {
                true => all,
                false => all
                    .into_iter()
                    .filter(|(name, _)| {
                        name == &primary_key || columns_spec.columns_to_sync.contains(name)
                    })
                    .collect(),
            }
        }
        false => match &columns_spec.schema_json {
            Some(text) => serde_json::from_str::<Map<String, Value>>(text)
                .map_err(|error| {
                    Error::invalid_parameter(format!("`schema_json` is not a JSON object: {error}"))
                })?
                .into_iter()
                .map(|(name, kind)| (name, kind.as_str().unwrap_or_default().to_ascii_uppercase()))
                .collect(),
            None => Vec::new(),
        },
    };
    if !columns.is_empty() && !columns.iter().any(|(name, _)| *name == primary_key) {
        return Err(Error::invalid_parameter(format!(
            "primary key `{primary_key}` is not a column"
        )));
    }

    let embedding = match columns_spec.embedding_source_columns.first() {
        Some(source) => Some(EmbeddingSource {
            column: source.name.clone(),
            endpoint: source
                .embedding_model_endpoint_name
                .clone()
                .filter(|name| !name.is_empty())
                .ok_or_else(|| {
                    Error::invalid_parameter("`embedding_model_endpoint_name` is required")
                })?,
        }),
        None => None,
    };
    let vector = match (&embedding, columns_spec.embedding_vector_columns.first()) {
        _ if index_subtype == "FULL_TEXT" => None,
        (Some(source), _) => {
            let probe = embedder
                .embed(caller, &source.endpoint, vec![source.column.clone()])
                .await?;
            Some(VectorConfig {
                column: format!("__{}_embedding", source.column),
                dimension: probe.first().map_or(0, Vec::len),
                metric: Default::default(),
                ann: Default::default(),
            })
        }
        (None, Some(column)) => Some(VectorConfig {
            column: column.name.clone(),
            dimension: column
                .embedding_dimension
                .ok_or_else(|| Error::invalid_parameter("`embedding_dimension` is required"))?,
            metric: Default::default(),
            ann: Default::default(),
        }),
        (None, None) => {
            return Err(Error::invalid_parameter(
                "an index needs `embedding_source_columns` or `embedding_vector_columns`",
            ));
        }
    };
    let text_columns: Vec<String> = match &embedding {
        Some(source) => vec![source.column.clone()],
        None => columns
            .iter()
            .filter(|(name, kind)| kind == "STRING" && *name != primary_key)
            .map(|(name, _)| name.clone())
            .collect(),
    };
    let mut known: Vec<String> = columns.iter().map(|(name, _)| name.clone()).collect();
    if let Some(vector) = &vector
        && !known.contains(&vector.column)
        && !known.is_empty()
    {
        known.push(vector.column.clone());
    }
    let config = IndexConfig {
        primary_key: primary_key.clone(),
        vector,
        text_columns,
        columns: known,
    };
    let spec = IndexSpec {
        table_type: "VECTOR_INDEX".into(),
        endpoint_name,
        index_type,
        index_subtype,
        primary_key,
        delta_sync_index_spec: is_delta.then(|| raw_spec.clone()),
        direct_access_index_spec: (!is_delta).then_some(raw_spec),
        config: config.clone(),
        embedding,
        source_table: columns_spec.source_table.filter(|_| is_delta),
    };
    // Rows first: a source table that cannot be read, or an embedding that fails, creates nothing.
    let initial = match spec.is_delta_sync() {
        true => Some(read_source(state, caller, &spec, caller.identity.id, embedder).await?),
        false => None,
    };

    let record = state
        .access()
        .store()
        .create_securable(
            NewSecurable {
                kind: SecurableKind::VectorIndex.name().into(),
                namespace: namespace_of(SecurableKind::VectorIndex).into(),
                full_name: name,
                parent_id: Some(parent.id),
                owner_id: caller.identity.id,
                comment: None,
                properties: "{}".into(),
                spec: serde_json::to_string(&spec).map_err(Error::internal)?,
                created_by: caller.identity.id,
            },
            now_millis(),
        )
        .await;
    state.access().publish().await?;
    let record = record?;
    let registry = state.vector_indexes();
    let dir = registry.dir_of(record.id.0);
    let created = tokio::task::spawn_blocking(move || VectorIndex::create(&dir, config))
        .await
        .map_err(Error::internal)?;
    let index = match created {
        Ok(index) => registry.insert(record.id.0, index)?,
        Err(error) => {
            // The securable without its data would be an index that fails every call.
            let _ = state.access().store().delete_securable(record.id).await;
            state.access().publish().await?;
            return Err(vector_error(error));
        }
    };
    let mut rows = 0;
    if let Some(initial) = initial {
        rows = write(&index, move |index| index.replace_all(initial))
            .await?
            .success;
    }
    Ok(render_index(state, &record, &spec, rows))
}

/// The securable of `kind` named `name`, or "`kind` `name` does not exist".
async fn existing(
    state: &VectorSearch,
    kind: SecurableKind,
    name: &str,
) -> Result<SecurableRecord, Error> {
    state
        .access()
        .store()
        .find_securable(namespace_of(kind), name)
        .await?
        .ok_or_else(|| Error::not_found(format!("{} `{name}` does not exist", kind.name())))
}

// ---- delta sync: reading the source table -----------------------------------------------------------------------

/// A SQL session with `owner`'s privileges in which `current_user()` and `is_account_group_member()` see `user`
/// and its `groups`: definer's rights for the data, the user for the policies.
fn owner_session(
    state: &VectorSearch,
    owner: PrincipalId,
    user: &Identity,
    groups: &[Identity],
) -> Session {
    Session {
        principal: principal_id(owner),
        user_name: user.name.clone(),
        groups: groups.iter().map(|group| group.name.clone()).collect(),
        // The caller's token was checked for this API; what the owner may read is a Unity Catalog question.
        scopes: ScopeSet::all(),
        snapshot: state.access().snapshot(),
        default_catalog: None,
        default_schema: None,
    }
}

/// Runs `sql` in `session` and returns its rows as JSON objects with native cells.
/// The source table's rows, read as the index owner, with embeddings computed for a source column.
async fn read_source(
    state: &VectorSearch,
    caller: &Caller,
    spec: &IndexSpec,
    owner: PrincipalId,
    embedder: &dyn Embedder,
) -> Result<Vec<Value>, Error> {
    let table = spec.source_table.as_deref().unwrap_or_default();
    let directory = state.access().directory();
    let identity = directory
        .get(owner)
        .ok_or_else(|| Error::invalid_state("the index owner no longer exists"))?;
    let session = owner_session(state, owner, identity, &directory.groups_of(owner));
    // The embedding column is computed here, not read.
    let generated = spec
        .embedding
        .as_ref()
        .and(spec.config.vector.as_ref())
        .map(|vector| vector.column.as_str());
    let columns: Vec<&str> = spec
        .config
        .columns
        .iter()
        .map(String::as_str)
        .filter(|column| Some(*column) != generated)
        .collect();
    let mut rows: Vec<Value> = state
        .warehouse()
        .scan(&session, table, &columns)
        .await?
        .into_iter()
        .map(Value::Object)
        .collect();
    if let (Some(source), Some(vector)) = (&spec.embedding, &spec.config.vector) {
        let texts: Vec<String> = rows
            .iter()
            .map(|row| match &row[&source.column] {
                Value::String(text) => text.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            })
            .collect();
        let vectors = embedder.embed(caller, &source.endpoint, texts).await?;
        for (row, embedding) in rows.iter_mut().zip(vectors) {
            if let Value::Object(row) = row {
                row.insert(vector.column.clone(), json!(embedding));
            }
        }
    }
    Ok(rows)
}

/// What a DELTA_SYNC index's source-table policies let one reader see: the rows its row filter admits for them
/// (`None`: every row), and the values of its masked columns as the masks show them to the reader, by primary key.
/// The table is read with the index owner's privileges (the caller needs none on the table), but the policies'
/// `current_user()` and `is_account_group_member()` see the caller; so an index never shows a user a row or a value
/// the table's policy hides from them.
#[derive(Default)]
struct ReaderView {
    allowed: Option<HashSet<String>>,
    /// The source table's masked columns.
    masked_columns: Vec<String>,
    masked: HashMap<String, Map<String, Value>>,
    /// Masked columns whose values differ, for this reader, from those the index holds: they may be neither filtered
    /// on nor searched by.
    hidden: Vec<String>,
}

impl ReaderView {
    fn admits(&self, key: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|allowed| allowed.contains(key))
    }

    /// `column` of the row with primary key `key`, as this reader may see it.
    fn value(&self, key: &str, column: &str, stored: Option<&Value>) -> Value {
        match self.masked.get(key) {
            Some(masked) if masked.contains_key(column) => masked[column].clone(),
            // A masked column of a row the scan did not return (written since): nothing is shown, fail closed.
            None if self.is_masked(column) => Value::Null,
            _ => stored.cloned().unwrap_or(Value::Null),
        }
    }

    fn is_masked(&self, column: &str) -> bool {
        self.masked_columns.iter().any(|masked| masked == column)
    }

    /// Refuses a query that would rank or filter by a value hidden from the reader.
    fn check_query(
        &self,
        spec: &IndexSpec,
        kind: QueryKind,
        filters: Option<&Value>,
    ) -> Result<(), Error> {
        // Embeddings are computed from the true text, so every query ranks by their source; full text ranks by the
        // text columns.
        let text_columns = match kind {
            QueryKind::Ann => &[][..],
            QueryKind::FullText | QueryKind::Hybrid => &spec.config.text_columns[..],
        };
        let ranked: Vec<&String> = text_columns
            .iter()
            .chain(spec.embedding.as_ref().map(|source| &source.column))
            .collect();
        if let Some(column) = self.hidden.iter().find(|hidden| ranked.contains(hidden)) {
            return Err(Error::permission_denied(format!(
                "the column `{column}` this index searches by is masked for you, so the index cannot be queried by you"
            )));
        }
        let named: Vec<String> = match filters {
            Some(Value::String(text)) => serde_json::from_str::<Map<String, Value>>(text)
                .map(|object| object.keys().cloned().collect())
                .unwrap_or_default(),
            Some(Value::Object(object)) => object.keys().cloned().collect(),
            _ => Vec::new(),
        };
        // A filter key is a column, optionally followed by an operator (`price <`, `title LIKE`).
        for key in &named {
            let column = key.split_whitespace().next().unwrap_or_default();
            if self.hidden.iter().any(|hidden| hidden == column) {
                return Err(Error::permission_denied(format!(
                    "the column `{column}` is masked for you and cannot be filtered on"
                )));
            }
        }
        Ok(())
    }
}

async fn reader_view(
    state: &VectorSearch,
    caller: &Caller,
    record: &SecurableRecord,
    spec: &IndexSpec,
    index: &SharedIndex,
) -> Result<ReaderView, Error> {
    let Some(table) = spec
        .source_table
        .as_deref()
        .filter(|_| spec.is_delta_sync())
    else {
        return Ok(ReaderView::default());
    };
    // Fail closed: without its source table's stored policy, the index cannot know what that policy hides.
    let source = state
        .access()
        .store()
        .find_securable(namespace_of(SecurableKind::Table), table)
        .await?
        .ok_or_else(|| {
            Error::invalid_state(format!(
                "the source table `{table}` of this index no longer exists, so its row filter and column masks \
                 cannot be applied; the index cannot be queried"
            ))
        })?;
    let table_spec = decode_stored::<TableSpec>("table spec", &source.spec)?;
    let masked_columns: Vec<&str> = table_spec
        .columns
        .iter()
        .filter(|column| column.mask.is_some())
        .map(|column| column.name.as_str())
        .collect();
    let has_filter = table_spec.row_filter.is_some();
    if !has_filter && masked_columns.is_empty() {
        return Ok(ReaderView::default());
    }
    let session = owner_session(state, record.owner_id, &caller.identity, &caller.groups);
    let mut wanted: Vec<&str> = vec![spec.primary_key.as_str()];
    wanted.extend(
        masked_columns
            .iter()
            .filter(|column| **column != spec.primary_key),
    );
    let rows = state.warehouse().scan(&session, table, &wanted).await?;
    // A filter that admits no row admits none: the allow-set exists, empty, before any row is read.
    let mut view = ReaderView {
        allowed: has_filter.then(HashSet::new),
        masked_columns: masked_columns
            .iter()
            .map(|column| (*column).to_owned())
            .collect(),
        ..ReaderView::default()
    };
    let index = read(index)?;
    for mut row in rows {
        let Some(key) = row.remove(&spec.primary_key).as_ref().and_then(key_of) else {
            continue;
        };
        if !masked_columns.is_empty() {
            let stored = index.row(&key).unwrap_or_default();
            for (column, shown) in &row {
                let differs = stored
                    .get(column)
                    .is_some_and(|value| !same_value(value, shown));
                if differs && !view.hidden.contains(column) {
                    view.hidden.push(column.clone());
                }
            }
            view.masked.insert(key.clone(), row);
        }
        if let Some(allowed) = view.allowed.as_mut() {
            allowed.insert(key);
        }
    }
    // With no row to compare, nothing shows the masks leave the values alone for this reader: all count as hidden.
    if view.masked.is_empty() {
        view.hidden = view.masked_columns.clone();
    }
    Ok(view)
}

/// Whether a value read back from the table is the one the index holds (numbers may come back as text).
fn same_value(stored: &Value, shown: &Value) -> bool {
    stored == shown
        || key_of(stored).is_some_and(|stored| key_of(shown).as_deref() == Some(stored.as_str()))
}

pub async fn sync(
    state: &VectorSearch,
    caller: &Caller,
    name: String,
    embedder: &dyn Embedder,
) -> Result<Value, Error> {
    let (record, spec) = authorized_index(state, caller, &name, Action::WriteTable).await?;
    if !spec.is_delta_sync() {
        return Err(Error::invalid_state(format!(
            "`{name}` is a DIRECT_ACCESS index; only DELTA_SYNC indexes sync"
        )));
    }
    let rows = read_source(state, caller, &spec, record.owner_id, embedder).await?;
    state
        .vector_indexes()
        .write(&record, move |index| index.replace_all(rows))
        .await?;
    Ok(json!({}))
}

// ---- data: upsert, delete, scan ---------------------------------------------------------------------------------

fn write_response(outcome: WriteOutcome) -> Value {
    let status = match (outcome.success, outcome.failed.len()) {
        (_, 0) => "SUCCESS",
        (0, _) => "FAILURE",
        _ => "PARTIAL_SUCCESS",
    };
    json!({
        "status": status,
        "result": { "success_row_count": outcome.success, "failed_primary_keys": outcome.failed },
    })
}

fn direct_access_only(name: &str, spec: &IndexSpec) -> Result<(), Error> {
    match spec.is_delta_sync() {
        true => Err(Error::invalid_state(format!(
            "`{name}` is a DELTA_SYNC index: its rows come from its source table; use `sync`"
        ))),
        false => Ok(()),
    }
}

#[derive(Deserialize)]
pub struct UpsertData {
    inputs_json: Option<String>,
}

pub async fn upsert_data(
    state: &VectorSearch,
    caller: &Caller,
    name: String,
    body: UpsertData,
    embedder: &dyn Embedder,
) -> Result<Value, Error> {
    let (record, spec) = authorized_index(state, caller, &name, Action::WriteTable).await?;
    direct_access_only(&name, &spec)?;
    let text = body
        .inputs_json
        .ok_or_else(|| Error::invalid_parameter("`inputs_json` is required"))?;
    let mut rows: Vec<Value> = serde_json::from_str(&text).map_err(|error| {
        Error::invalid_parameter(format!("`inputs_json` is not a JSON list of rows: {error}"))
    })?;
    if let (Some(source), Some(vector)) = (&spec.embedding, &spec.config.vector) {
        let texts = rows
            .iter()
            .map(|row| row[&source.column].as_str().unwrap_or_default().to_owned())
            .collect();
        let vectors = embedder.embed(caller, &source.endpoint, texts).await?;
        for (row, embedding) in rows.iter_mut().zip(vectors) {
            if let Value::Object(row) = row {
                row.insert(vector.column.clone(), json!(embedding));
            }
        }
    }
    let outcome = state
        .vector_indexes()
        .write(&record, move |index| index.upsert(rows))
        .await?;
    Ok(write_response(outcome))
}

#[derive(Deserialize, Default)]
pub struct DeleteData {
    #[serde(default)]
    primary_keys: Vec<Value>,
}

/// `primary_keys` from the JSON body (vector-search client) or repeated query parameters (SDK).
pub async fn delete_data(
    state: &VectorSearch,
    caller: &Caller,
    name: String,
    raw_query: Option<String>,
    body: DeleteData,
) -> Result<Value, Error> {
    let (record, spec) = authorized_index(state, caller, &name, Action::WriteTable).await?;
    direct_access_only(&name, &spec)?;
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(raw_query.as_deref().unwrap_or_default()).map_err(|error| {
            Error::invalid_parameter(format!("invalid query parameters: {error}"))
        })?;
    let mut keys = body.primary_keys;
    keys.extend(
        pairs
            .into_iter()
            .filter(|(key, _)| key == "primary_keys")
            .map(|(_, value)| Value::String(value)),
    );
    let outcome = state
        .vector_indexes()
        .write(&record, move |index| index.delete(&keys))
        .await?;
    Ok(write_response(outcome))
}

#[derive(Deserialize, Default)]
pub struct ScanRequest {
    num_results: Option<usize>,
    last_primary_key: Option<Value>,
}

/// A JSON value as a protobuf `Value` (the shape `ScanVectorIndexResponse` rows use).
fn proto_value(value: &Value) -> Value {
    match value {
        Value::Null => json!({ "null_value": "NULL_VALUE" }),
        Value::Bool(flag) => json!({ "bool_value": flag }),
        Value::Number(number) => json!({ "number_value": number }),
        Value::String(text) => json!({ "string_value": text }),
        Value::Array(items) => {
            json!({ "list_value": { "values": items.iter().map(proto_value).collect::<Vec<_>>() } })
        }
        Value::Object(map) => {
            json!({ "struct_value": { "fields": map.iter().map(|(key, value)| json!({ "key": key, "value": proto_value(value) })).collect::<Vec<_>>() } })
        }
    }
}

pub async fn scan(
    state: &VectorSearch,
    caller: &Caller,
    name: String,
    body: ScanRequest,
) -> Result<Value, Error> {
    let (record, spec) = authorized_index(state, caller, &name, Action::ReadTable).await?;
    let limit = body.num_results.unwrap_or(100).clamp(1, MAX_NUM_RESULTS);
    let last = body.last_primary_key.as_ref().and_then(key_of);
    let index = state.vector_indexes().current(&record).await?;
    let view = reader_view(state, caller, &record, &spec, &index).await?;
    let index = read(&index)?;
    let mut rows = Vec::with_capacity(limit);
    let mut after = last;
    // Rows the caller may not see are skipped, so pages stay full.
    while rows.len() < limit {
        let batch = index.scan(after.as_deref(), limit);
        let Some(last_row) = batch.last() else { break };
        after = last_row.get(&spec.primary_key).and_then(key_of);
        rows.extend(batch.into_iter().filter_map(|row| {
            let key = row.get(&spec.primary_key).and_then(key_of)?;
            view.admits(&key).then(|| {
                row.iter()
                    .map(|(column, stored)| {
                        (column.clone(), view.value(&key, column, Some(stored)))
                    })
                    .collect::<Map<String, Value>>()
            })
        }));
    }
    rows.truncate(limit);
    let last_primary_key = rows
        .last()
        .and_then(|row| row.get(&spec.primary_key))
        .and_then(key_of);
    let data: Vec<Value> = rows
        .iter()
        .map(|row| json!({ "fields": row.iter().map(|(key, value)| json!({ "key": key, "value": proto_value(value) })).collect::<Vec<_>>() }))
        .collect();
    Ok(json!({ "last_primary_key": last_primary_key, "data": data }))
}

// ---- queries ----------------------------------------------------------------------------------------------------

/// A query as both clients send it. It is also the content of a page token, so the next page re-runs it (with the
/// caller's rights at that time).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct QueryRequest {
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    query_vector: Option<Vec<f32>>,
    #[serde(default)]
    query_text: Option<String>,
    #[serde(default)]
    query_type: Option<String>,
    #[serde(default)]
    num_results: Option<usize>,
    /// A JSON object serialised as a string (the SDK), or the object itself.
    #[serde(default)]
    filters_json: Option<Value>,
    #[serde(default)]
    score_threshold: Option<f32>,
    #[serde(default)]
    offset: usize,
}

pub async fn query(
    state: &VectorSearch,
    caller: &Caller,
    name: String,
    request: QueryRequest,
    embedder: &dyn Embedder,
) -> Result<Value, Error> {
    let request = QueryRequest {
        offset: 0,
        ..request
    };
    run_query(state, caller, &name, request, embedder).await
}

#[derive(Deserialize)]
pub struct NextPage {
    page_token: Option<String>,
}

pub async fn query_next_page(
    state: &VectorSearch,
    caller: &Caller,
    name: String,
    body: NextPage,
    embedder: &dyn Embedder,
) -> Result<Value, Error> {
    let token = body
        .page_token
        .filter(|token| !token.is_empty())
        .ok_or_else(|| Error::invalid_parameter("`page_token` is required"))?;
    let request: QueryRequest = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| {
            Error::invalid_parameter("`page_token` is not a token this server issued")
        })?;
    run_query(state, caller, &name, request, embedder).await
}

async fn run_query(
    state: &VectorSearch,
    caller: &Caller,
    name: &str,
    request: QueryRequest,
    embedder: &dyn Embedder,
) -> Result<Value, Error> {
    let (record, spec) = authorized_index(state, caller, name, Action::ReadTable).await?;
    let num_results = request.num_results.unwrap_or(DEFAULT_NUM_RESULTS);
    if num_results == 0 || num_results > MAX_NUM_RESULTS {
        return Err(Error::invalid_parameter(format!(
            "`num_results` must be between 1 and {MAX_NUM_RESULTS}"
        )));
    }
    let text = request
        .query_text
        .as_deref()
        .filter(|text| !text.trim().is_empty());
    let kind = match request
        .query_type
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("ANN") => {
            if request.query_vector.is_none() && spec.embedding.is_none() && text.is_some() {
                QueryKind::FullText
            } else {
                QueryKind::Ann
            }
        }
        Some("HYBRID") => QueryKind::Hybrid,
        Some("FULL_TEXT") => QueryKind::FullText,
        Some(other) => {
            return Err(Error::invalid_parameter(format!(
                "unknown `query_type` `{other}`"
            )));
        }
    };
    let vector = match (&request.query_vector, text, &spec.embedding) {
        (Some(vector), _, _) => Some(vector.clone()),
        (None, Some(text), Some(source)) if kind != QueryKind::FullText => embedder
            .embed(caller, &source.endpoint, vec![text.to_owned()])
            .await?
            .into_iter()
            .next(),
        _ => None,
    };
    if kind != QueryKind::FullText && vector.is_none() {
        return Err(Error::invalid_parameter(
            "give `query_vector`, or `query_text` for an index that computes its embeddings",
        ));
    }
    let index = state.vector_indexes().current(&record).await?;
    let view = reader_view(state, caller, &record, &spec, &index).await?;
    view.check_query(&spec, kind, request.filters_json.as_ref())?;
    let index = read(&index)?;
    // Built under the same read lock as the query, so no write can come between.
    let allow = view
        .allowed
        .as_ref()
        .map(|keys| index.allow_set(keys.iter().map(String::as_str)));
    let filter = match &request.filters_json {
        None | Some(Value::Null) => Filter::default(),
        Some(Value::String(text)) => index.parse_filter(text).map_err(vector_error)?,
        Some(Value::Object(map)) => {
            Filter::from_object(map, &|column| index.has_column(column)).map_err(vector_error)?
        }
        Some(_) => {
            return Err(Error::invalid_parameter(
                "invalid filter: `filters_json` must be a JSON object",
            ));
        }
    };
    let page = num_results.saturating_sub(request.offset).min(PAGE_ROWS);
    let hits = index
        .query(&Query {
            kind,
            vector: vector.as_deref(),
            text,
            filter: &filter,
            allow: allow.as_ref(),
            num_results: page,
            offset: request.offset,
            score_threshold: request.score_threshold,
        })
        .map_err(vector_error)?;
    // Databricks requires `columns`; without them Deputy answers every column but the embedding vector, which is
    // what a tool (an MCP search, say) wants to show.
    let vector_column = spec
        .config
        .vector
        .as_ref()
        .map(|vector| vector.column.as_str());
    let columns = match request.columns.is_empty() {
        true => spec
            .config
            .columns
            .iter()
            .filter(|column| Some(column.as_str()) != vector_column)
            .cloned()
            .collect(),
        false => request.columns.clone(),
    };
    let columns = match columns.is_empty() {
        true => vec![spec.primary_key.clone()],
        false => columns,
    };
    let data: Vec<Value> = hits
        .iter()
        .map(|hit| {
            let row = index.row(&hit.key).unwrap_or_default();
            let mut cells: Vec<Value> = columns
                .iter()
                .map(|column| view.value(&hit.key, column, row.get(column)))
                .collect();
            cells.push(json!(hit.score));
            Value::Array(cells)
        })
        .collect();
    let next_offset = request.offset + hits.len();
    let next_page_token = match hits.len() == page && next_offset < num_results {
        true => {
            let next = QueryRequest {
                offset: next_offset,
                ..request
            };
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&next).map_err(Error::internal)?)
        }
        false => String::new(),
    };
    let mut manifest: Vec<Value> = columns
        .iter()
        .map(|column| json!({ "name": column }))
        .collect();
    manifest.push(json!({ "name": "score" }));
    Ok(json!({
        "manifest": { "column_count": manifest.len(), "columns": manifest },
        "result": { "row_count": data.len(), "data_array": data },
        "next_page_token": next_page_token,
    }))
}
