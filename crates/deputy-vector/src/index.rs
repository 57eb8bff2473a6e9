//! The index: rows by primary key, the HNSW graph over their vectors (usearch), the BM25 index over their text, and
//! the operation log that makes writes durable.

use crate::VectorError;
use crate::filter::Filter;
use crate::log::{
    CONFIG_FILE, CatchUp, LockMode, Operation, OperationLog, delete_locked, lock, write_atomically,
};
use crate::text::TextIndex;
use numkong::{Angular, Euclidean};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

/// An allow-set at most this large is searched exactly (a scan of its members), which is both faster than a
/// filtered graph walk through a mostly-forbidden graph and exact.
const EXACT_SEARCH_LIMIT: usize = 2_048;
/// A filtered graph walk is widened up to this many times the results wanted before an exact scan replaces it.
const FILTERED_WIDENING_LIMIT: usize = 256;
/// The graph keeps its vectors as bfloat16: half the memory read per distance of f32, and the AVX-512 BF16 kernels
/// where the CPU has them. It is only the map: candidates are re-ranked with the rows' exact f32 vectors, so the
/// hits and scores returned are exact among the candidates.
const GRAPH_SCALAR: usearch::ScalarKind = usearch::ScalarKind::BF16;
/// The graph is asked for this many times the hits wanted, so that bfloat16's near-ties cannot push a true
/// neighbour out before the exact re-ranking.
const RERANK_FACTOR: usize = 2;
/// A query restricted to a share `s` of the rows may instead walk the graph unfiltered for `OVERFETCH_FACTOR *
/// wanted / s` candidates and keep the allowed ones (about `OVERFETCH_FACTOR * wanted` of them), when that is at
/// most `OVERFETCH_LIMIT` candidates. That is cheaper than usearch's filtered walk, which keeps `ef` *allowed*
/// candidates and so explores about `ef / s` nodes (3x cheaper at s = 10%; see BENCHMARKS.md). Too few allowed
/// candidates (rare with a factor of 1.5) fall back to the filtered walk.
const OVERFETCH_FACTOR: f64 = 1.5;
const OVERFETCH_LIMIT: f64 = 512.0;
/// A batch at least this large is added to the HNSW graph from several threads.
const PARALLEL_BATCH: usize = 1_024;
/// Search contexts usearch keeps, i.e. how many queries may walk the graph at once.
const SEARCH_CONTEXTS: usize = 16;
/// Reciprocal-rank fusion's damping constant, as in the original paper (Cormack et al., 2009).
const RRF_K: f32 = 60.0;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Squared Euclidean distance `d`, reported as the similarity `1 / (1 + d)`, as Databricks does.
    #[default]
    L2,
    /// Cosine distance `d = 1 - cos`, reported as the cosine similarity `1 - d`.
    Cosine,
}

/// HNSW construction and search parameters (hnswlib's `M`, `ef_construction`, `ef`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnParams {
    pub connectivity: usize,
    pub expansion_add: usize,
    pub expansion_search: usize,
}

impl Default for AnnParams {
    fn default() -> Self {
        AnnParams {
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorConfig {
    /// The column holding the embedding, a JSON array of numbers.
    pub column: String,
    pub dimension: usize,
    #[serde(default)]
    pub metric: Metric,
    #[serde(default)]
    pub ann: AnnParams,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexConfig {
    pub primary_key: String,
    /// Absent for a full-text-only index.
    #[serde(default)]
    pub vector: Option<VectorConfig>,
    /// Columns whose text is searched by full-text and hybrid queries.
    #[serde(default)]
    pub text_columns: Vec<String>,
    /// The columns filters may name; empty accepts any column.
    #[serde(default)]
    pub columns: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Ann,
    FullText,
    Hybrid,
}

/// The rows a query may return (row-level security), as a bitmap over the index's internal row ids. Built once per
/// query from primary keys by [`VectorIndex::allow_set`], it answers "may this graph node be returned?" with one
/// bit test while the search walks the graph (a set of key strings cost a hash of the key per node). It describes
/// the index as it was when built: a query after a later write refuses it rather than trust ids that may have moved.
#[derive(Debug, Clone)]
pub struct AllowSet {
    bits: Vec<u64>,
    members: usize,
    version: u64,
}

impl AllowSet {
    /// How many of the index's rows are allowed.
    pub fn len(&self) -> usize {
        self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members == 0
    }

    fn contains(&self, id: u64) -> bool {
        usize::try_from(id / 64)
            .ok()
            .and_then(|word| self.bits.get(word))
            .is_some_and(|word| word & (1 << (id % 64)) != 0)
    }

    /// The allowed ids, ascending.
    fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.bits
            .iter()
            .zip(0u64..)
            .flat_map(|(&word, word_index)| {
                // Each step clears the lowest set bit, so a word yields one id per member.
                std::iter::successors(Some(word), |rest| Some(rest & rest.wrapping_sub(1)))
                    .take_while(|rest| *rest != 0)
                    .map(move |rest| word_index * 64 + u64::from(rest.trailing_zeros()))
            })
    }
}

/// One query. `offset` skips the first hits (paging): the result is hits `offset..offset + num_results`.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub kind: QueryKind,
    pub vector: Option<&'a [f32]>,
    pub text: Option<&'a str>,
    pub filter: &'a Filter,
    /// Only the rows in the set may be returned.
    pub allow: Option<&'a AllowSet>,
    pub num_results: usize,
    pub offset: usize,
    /// Hits scoring below this are dropped.
    pub score_threshold: Option<f32>,
}

/// A result: the row's primary key (as text) and its score, higher is better.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub key: String,
    pub score: f32,
}

/// The outcome of an upsert or delete: how many rows were written and the primary keys of rows refused.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteOutcome {
    pub success: usize,
    pub failed: Vec<Value>,
}

struct Entry {
    /// The key of the row in the HNSW graph and the full-text index; a new one for each version of a row.
    id: u64,
    /// The columns except the vector.
    row: Map<String, Value>,
}

/// A row version by its internal id: its primary key and its vector, so that a graph hit or an exact scan reaches
/// both with one integer lookup.
struct Slot {
    key: String,
    vector: Option<Vec<f32>>,
}

pub struct VectorIndex {
    config: IndexConfig,
    rows: BTreeMap<String, Entry>,
    slots: HashMap<u64, Slot>,
    next_id: u64,
    /// Changes with every write, so that an [`AllowSet`] built before a write is refused after it.
    version: u64,
    ann: Option<usearch::Index>,
    /// Vectors removed from the graph but still occupying slots; the graph is rebuilt when they outnumber the rows.
    removed: usize,
    text: Option<Mutex<TextIndex>>,
    log: Option<OperationLog>,
}

fn engine(error: impl std::fmt::Display) -> VectorError {
    VectorError::Engine(error.to_string())
}

/// The text form of a primary key: strings as they are, numbers in their JSON spelling.
pub fn key_of(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if !text.is_empty() => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn new_graph(config: &VectorConfig, capacity: usize) -> Result<usearch::Index, VectorError> {
    let options = usearch::IndexOptions {
        dimensions: config.dimension,
        metric: match config.metric {
            Metric::L2 => usearch::MetricKind::L2sq,
            // Vectors enter the graph normalised (see `graph_vector`), so the inner product is the cosine and the
            // graph skips computing two norms per distance.
            Metric::Cosine => usearch::MetricKind::IP,
        },
        quantization: GRAPH_SCALAR,
        connectivity: config.ann.connectivity,
        expansion_add: config.ann.expansion_add,
        expansion_search: config.ann.expansion_search,
        multi: false,
    };
    let graph = usearch::Index::new(&options).map_err(engine)?;
    graph
        .reserve_capacity_and_threads(capacity.max(64), SEARCH_CONTEXTS)
        .map_err(engine)?;
    Ok(graph)
}

/// The distance the graph would report, computed by NumKong's SIMD kernels (the ones usearch uses), for exact
/// scans. Vectors of different lengths are infinitely far apart (the index never stores such a pair).
fn distance(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    let distance = match metric {
        Metric::L2 => f32::sqeuclidean(a, b),
        Metric::Cosine => f32::angular(a, b),
    };
    distance.map_or(f32::INFINITY, |distance| distance as f32)
}

/// The vector as the graph stores it: unit length for cosine (the graph uses the inner product), as is for L2.
fn graph_vector(metric: Metric, vector: &[f32]) -> Vec<f32> {
    match metric {
        Metric::L2 => vector.to_vec(),
        Metric::Cosine => {
            let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            match norm > 0.0 {
                true => vector.iter().map(|x| x / norm).collect(),
                false => vector.to_vec(),
            }
        }
    }
}

fn score(metric: Metric, distance: f32) -> f32 {
    match metric {
        Metric::L2 => 1.0 / (1.0 + distance.max(0.0)),
        Metric::Cosine => 1.0 - distance,
    }
}

/// A vector as JSON numbers in their shortest spelling (`0.1`, not `0.10000000149011612`).
fn vector_json(vector: &[f32]) -> Value {
    Value::Array(
        vector
            .iter()
            .map(|x| {
                format!("{x}")
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Value::Null, Value::Number)
            })
            .collect(),
    )
}

impl VectorIndex {
    /// A new durable index in `dir` (created if missing, and expected to be empty).
    pub fn create(dir: &Path, config: IndexConfig) -> Result<VectorIndex, VectorError> {
        validate_config(&config)?;
        std::fs::create_dir_all(dir).map_err(|source| VectorError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let bytes = serde_json::to_vec_pretty(&config).map_err(engine)?;
        write_atomically(dir, CONFIG_FILE, &bytes)?;
        VectorIndex::open(dir)
    }

    /// Deletes the durable index in `dir` once no process is writing it; processes that had it open then find it
    /// deleted ([`VectorError::Deleted`]). Deleting what is already gone succeeds.
    pub fn delete_files(dir: &Path) -> Result<(), VectorError> {
        delete_locked(dir)
    }

    /// Opens the durable index in `dir`, replaying its snapshot and log; the HNSW graph is rebuilt.
    pub fn open(dir: &Path) -> Result<VectorIndex, VectorError> {
        let _lock = lock(dir, LockMode::Exclusive)?;
        VectorIndex::load(dir, true)
    }

    /// Loads the index in `dir`, whose lock the caller holds (`repair`: exclusively).
    fn load(dir: &Path, repair: bool) -> Result<VectorIndex, VectorError> {
        let config_path = dir.join(CONFIG_FILE);
        let bytes = std::fs::read(&config_path).map_err(|source| VectorError::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: IndexConfig =
            serde_json::from_slice(&bytes).map_err(|error| VectorError::Corrupt {
                path: config_path,
                detail: error.to_string(),
            })?;
        let (log, recovered) = OperationLog::open(dir, repair)?;
        let mut index = VectorIndex::in_memory(config)?;
        index.apply_upsert(recovered.rows)?;
        index.apply_all(recovered.operations)?;
        index.log = Some(log);
        Ok(index)
    }

    fn apply_all(&mut self, operations: Vec<Operation>) -> Result<(), VectorError> {
        for operation in operations {
            match operation {
                Operation::Upsert { rows } => self.apply_upsert(rows)?,
                Operation::Delete { keys } => self.apply_delete(&keys)?,
            }
        }
        Ok(())
    }

    /// Whether this index holds every write made to its directory, by this process or another sharing the
    /// storage. Costs a shared file lock, a `stat` and a read of the log's first bytes. An in-memory index is
    /// always current; a deleted one is [`VectorError::Deleted`].
    pub fn is_current(&self) -> Result<bool, VectorError> {
        let Some(log) = &self.log else {
            return Ok(true);
        };
        let _lock = lock(log.dir(), LockMode::Shared)?;
        log.is_current()
    }

    /// Applies the writes other processes made to this index's directory since this one last looked: the new
    /// records of the log, or, when another process compacted the log past what was applied here, everything
    /// again from the snapshot (the graph rebuilt). Returns whether anything changed; allow-sets built before a
    /// change are refused after it.
    pub fn catch_up(&mut self) -> Result<bool, VectorError> {
        let Some(log) = &self.log else {
            return Ok(false);
        };
        let _lock = lock(log.dir(), LockMode::Shared)?;
        self.catch_up_locked(false)
    }

    /// [`catch_up`](VectorIndex::catch_up) with the lock held (`repair`: exclusively).
    fn catch_up_locked(&mut self, repair: bool) -> Result<bool, VectorError> {
        let Some(log) = &mut self.log else {
            return Ok(false);
        };
        match log.catch_up(repair)? {
            CatchUp::Apply(operations) if operations.is_empty() => Ok(false),
            CatchUp::Apply(operations) => {
                self.apply_all(operations)?;
                Ok(true)
            }
            CatchUp::Reload => {
                let dir = log.dir().to_owned();
                let mut fresh = VectorIndex::load(&dir, repair)?;
                // Past every version handed out before, so no allow-set built on the old ids is trusted.
                fresh.version = fresh.version.saturating_add(self.version).saturating_add(1);
                *self = fresh;
                Ok(true)
            }
        }
    }

    /// Before a write: the exclusive lock of a durable index, with the index caught up under it, so the write's
    /// sequence number follows every other process's and it sees their rows. `None` for an in-memory index.
    fn lock_for_write(&mut self) -> Result<Option<std::fs::File>, VectorError> {
        let Some(log) = &self.log else {
            return Ok(None);
        };
        let lock = lock(log.dir(), LockMode::Exclusive)?;
        self.catch_up_locked(true)?;
        Ok(Some(lock))
    }

    /// An index that lives only in memory (benchmarks, tests).
    pub fn in_memory(config: IndexConfig) -> Result<VectorIndex, VectorError> {
        validate_config(&config)?;
        let ann = match &config.vector {
            Some(vector) => Some(new_graph(vector, 0)?),
            None => None,
        };
        let text = match config.text_columns.is_empty() {
            true => None,
            false => Some(Mutex::new(TextIndex::new()?)),
        };
        Ok(VectorIndex {
            config,
            rows: BTreeMap::new(),
            slots: HashMap::new(),
            next_id: 1,
            version: 0,
            ann,
            removed: 0,
            text,
            log: None,
        })
    }

    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// The SIMD instruction set the HNSW distance kernels run on here (benchmark reports), if there is a graph.
    pub fn ann_kernel(&self) -> Option<String> {
        self.ann.as_ref().map(usearch::Index::hardware_acceleration)
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether filters may name `column`.
    pub fn has_column(&self, column: &str) -> bool {
        self.config.columns.is_empty()
            || self.config.columns.iter().any(|known| known == column)
            || column == self.config.primary_key
    }

    /// The allow-set of the rows with these primary keys (keys of absent rows are ignored), for queries until the
    /// next write.
    pub fn allow_set<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> AllowSet {
        let words = usize::try_from(self.next_id / 64 + 1).unwrap_or(usize::MAX);
        let mut bits = vec![0u64; words];
        let mut members = 0;
        for entry in keys.into_iter().filter_map(|key| self.rows.get(key)) {
            let Some(word) = usize::try_from(entry.id / 64)
                .ok()
                .and_then(|word| bits.get_mut(word))
            else {
                continue;
            };
            let bit = 1 << (entry.id % 64);
            if *word & bit == 0 {
                *word |= bit;
                members += 1;
            }
        }
        AllowSet {
            bits,
            members,
            version: self.version,
        }
    }

    /// Parses a `filters_json` string against this index's columns.
    pub fn parse_filter(&self, text: &str) -> Result<Filter, VectorError> {
        Filter::parse(text, &|column| self.has_column(column))
    }

    /// Inserts or replaces rows by primary key. Rows without a usable primary key or vector are refused (listed in
    /// the outcome); the others are durable when this returns.
    pub fn upsert(&mut self, rows: Vec<Value>) -> Result<WriteOutcome, VectorError> {
        let _lock = self.lock_for_write()?;
        self.upsert_locked(rows)
    }

    fn upsert_locked(&mut self, rows: Vec<Value>) -> Result<WriteOutcome, VectorError> {
        let mut outcome = WriteOutcome::default();
        let mut valid = Vec::with_capacity(rows.len());
        for row in rows {
            match self.check_row(row) {
                Ok(row) => valid.push(row),
                Err(key) => outcome.failed.push(key),
            }
        }
        outcome.success = valid.len();
        if valid.is_empty() {
            return Ok(outcome);
        }
        if let Some(log) = &mut self.log {
            log.append(Operation::Upsert {
                rows: valid.clone(),
            })?;
        }
        self.apply_upsert(valid)?;
        self.maybe_compact()?;
        Ok(outcome)
    }

    /// Deletes rows by primary key; absent keys are not an error (deleting is idempotent).
    pub fn delete(&mut self, keys: &[Value]) -> Result<WriteOutcome, VectorError> {
        let _lock = self.lock_for_write()?;
        self.delete_locked(keys)
    }

    fn delete_locked(&mut self, keys: &[Value]) -> Result<WriteOutcome, VectorError> {
        let mut outcome = WriteOutcome::default();
        let mut valid = Vec::with_capacity(keys.len());
        for key in keys {
            match key_of(key) {
                Some(text) => valid.push(text),
                None => outcome.failed.push(key.clone()),
            }
        }
        outcome.success = valid.len();
        let present: Vec<String> = valid
            .into_iter()
            .filter(|key| self.rows.contains_key(key))
            .collect();
        if present.is_empty() {
            return Ok(outcome);
        }
        if let Some(log) = &mut self.log {
            log.append(Operation::Delete {
                keys: present.clone(),
            })?;
        }
        self.apply_delete(&present)?;
        self.maybe_compact()?;
        Ok(outcome)
    }

    /// Makes the index hold exactly `rows` (a re-read source table): deletes the rows absent from it and upserts
    /// the rows that are new or changed.
    pub fn replace_all(&mut self, rows: Vec<Value>) -> Result<WriteOutcome, VectorError> {
        // One lock for both halves: what is stale is decided on the rows as they are.
        let _lock = self.lock_for_write()?;
        let incoming: HashSet<String> = rows
            .iter()
            .filter_map(|row| row.get(&self.config.primary_key).and_then(key_of))
            .collect();
        let stale: Vec<Value> = self
            .rows
            .keys()
            .filter(|key| !incoming.contains(*key))
            .map(|key| Value::String(key.clone()))
            .collect();
        self.delete_locked(&stale)?;
        let changed: Vec<Value> = rows
            .into_iter()
            .filter(|row| {
                let current = row
                    .get(&self.config.primary_key)
                    .and_then(key_of)
                    .and_then(|key| self.row(&key));
                current.as_ref() != row.as_object()
            })
            .collect();
        let mut outcome = self.upsert_locked(changed)?;
        outcome.success = incoming.len();
        Ok(outcome)
    }

    /// The whole row (vector included) of a primary key.
    pub fn row(&self, key: &str) -> Option<Map<String, Value>> {
        self.rows.get(key).map(|entry| self.full_row(entry))
    }

    /// Up to `limit` whole rows in primary-key order, after `last_key` when given.
    pub fn scan(&self, last_key: Option<&str>, limit: usize) -> Vec<Map<String, Value>> {
        let start = match last_key {
            Some(key) => Bound::Excluded(key.to_owned()),
            None => Bound::Unbounded,
        };
        self.rows
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(_, entry)| self.full_row(entry))
            .collect()
    }

    /// Runs a query. Every hit satisfies the filter and the allow-set; there are `num_results` of them unless fewer
    /// rows qualify.
    pub fn query(&self, query: &Query<'_>) -> Result<Vec<Hit>, VectorError> {
        if query
            .allow
            .is_some_and(|allow| allow.version != self.version)
        {
            return Err(VectorError::StaleAllowSet);
        }
        let wanted = query.offset.saturating_add(query.num_results);
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let allowed = |id: u64| -> bool {
            if let Some(allow) = query.allow {
                // The set holds only ids that were live when it was built, and the version check above
                // guarantees nothing was written since.
                if !allow.contains(id) {
                    return false;
                }
                if query.filter.is_empty() {
                    return true;
                }
            }
            self.slots
                .get(&id)
                .and_then(|slot| self.rows.get(&slot.key))
                .is_some_and(|entry| query.filter.matches(&entry.row))
        };
        let restricted = query.allow.is_some() || !query.filter.is_empty();
        let mut ranked: Vec<(u64, f32)> = match query.kind {
            QueryKind::Ann => {
                let vector = query_vector(query)?;
                self.nearest(
                    vector,
                    wanted,
                    restricted.then_some(&allowed as _),
                    query.allow,
                )?
            }
            QueryKind::FullText => self.full_text(query_text(query)?, wanted, &allowed)?,
            QueryKind::Hybrid => {
                let candidates = wanted.saturating_mul(2).max(50);
                let vector = query_vector(query)?;
                let text = query_text(query)?;
                let nearest = self.nearest(
                    vector,
                    candidates,
                    restricted.then_some(&allowed as _),
                    query.allow,
                )?;
                let matching = self.full_text(text, candidates, &allowed)?;
                reciprocal_rank_fusion(&[nearest, matching])
            }
        };
        if let Some(threshold) = query.score_threshold {
            ranked.retain(|(_, score)| *score >= threshold);
        }
        Ok(ranked
            .into_iter()
            .skip(query.offset)
            .take(query.num_results)
            .filter_map(|(id, score)| {
                self.slots.get(&id).map(|slot| Hit {
                    key: slot.key.clone(),
                    score,
                })
            })
            .collect())
    }

    // ---- internals ----------------------------------------------------------------------------------------------

    /// A row as stored, or the primary key (for the failure list) of a row that cannot be.
    fn check_row(&self, row: Value) -> Result<Map<String, Value>, Value> {
        let Value::Object(row) = row else {
            return Err(Value::Null);
        };
        let key = row
            .get(&self.config.primary_key)
            .cloned()
            .unwrap_or(Value::Null);
        if key_of(&key).is_none() {
            return Err(key);
        }
        if let Some(vector) = &self.config.vector {
            match row.get(&vector.column).and_then(parse_vector) {
                Some(values) if values.len() == vector.dimension => {}
                _ => return Err(key),
            }
        }
        Ok(row)
    }

    fn full_row(&self, entry: &Entry) -> Map<String, Value> {
        let mut row = entry.row.clone();
        let vector = self
            .slots
            .get(&entry.id)
            .and_then(|slot| slot.vector.as_ref());
        if let (Some(config), Some(vector)) = (&self.config.vector, vector) {
            row.insert(config.column.clone(), vector_json(vector));
        }
        row
    }

    fn apply_upsert(&mut self, rows: Vec<Map<String, Value>>) -> Result<(), VectorError> {
        let mut added = Vec::with_capacity(rows.len());
        for mut row in rows {
            let Some(key) = row.get(&self.config.primary_key).and_then(key_of) else {
                continue;
            };
            let vector = match &self.config.vector {
                Some(config) => match row.remove(&config.column).as_ref().and_then(parse_vector) {
                    Some(vector) if vector.len() == config.dimension => Some(vector),
                    _ => continue,
                },
                None => None,
            };
            self.remove_entry(&key)?;
            let id = self.next_id;
            self.next_id += 1;
            self.slots.insert(
                id,
                Slot {
                    key: key.clone(),
                    vector,
                },
            );
            added.push(id);
            self.rows.insert(key, Entry { id, row });
        }
        self.version += 1;
        self.add_to_graph(&added)?;
        if let Some(text) = &self.text {
            let mut text = text
                .lock()
                .map_err(|_| engine("full-text index lock poisoned"))?;
            for id in &added {
                if let Some(entry) = self.slots.get(id).and_then(|slot| self.rows.get(&slot.key)) {
                    text.add(*id, &self.text_of(&entry.row))?;
                }
            }
        }
        Ok(())
    }

    fn apply_delete(&mut self, keys: &[String]) -> Result<(), VectorError> {
        for key in keys {
            self.remove_entry(key)?;
        }
        self.version += 1;
        self.rebuild_graph_if_sparse()
    }

    fn remove_entry(&mut self, key: &str) -> Result<(), VectorError> {
        let Some(entry) = self.rows.remove(key) else {
            return Ok(());
        };
        self.slots.remove(&entry.id);
        if let Some(graph) = &self.ann {
            graph.remove(entry.id).map_err(engine)?;
            self.removed += 1;
        }
        if let Some(text) = &self.text {
            text.lock()
                .map_err(|_| engine("full-text index lock poisoned"))?
                .remove(entry.id);
        }
        Ok(())
    }

    fn text_of(&self, row: &Map<String, Value>) -> String {
        let mut text = String::new();
        for column in &self.config.text_columns {
            match row.get(column) {
                Some(Value::String(value)) => text.push_str(value),
                Some(Value::Number(value)) => text.push_str(&value.to_string()),
                _ => continue,
            }
            text.push('\n');
        }
        text
    }

    /// Adds the vectors of `ids` to the graph, from several threads for large batches (usearch's insertion is
    /// thread-safe once capacity is reserved).
    fn add_to_graph(&mut self, ids: &[u64]) -> Result<(), VectorError> {
        let (Some(graph), Some(config)) = (&self.ann, &self.config.vector) else {
            return Ok(());
        };
        let metric = config.metric;
        let needed = graph.size() + self.removed + ids.len();
        if needed > graph.capacity() {
            graph
                .reserve_capacity_and_threads(needed.max(graph.capacity() * 2), SEARCH_CONTEXTS)
                .map_err(engine)?;
        }
        let vectors: Vec<(u64, &[f32])> = ids
            .iter()
            .filter_map(|id| Some((*id, self.slots.get(id)?.vector.as_deref()?)))
            .collect();
        let threads = match vectors.len() >= PARALLEL_BATCH {
            true => std::thread::available_parallelism().map_or(1, |n| n.get()),
            false => 1,
        };
        let chunk = vectors.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = vectors
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter().try_for_each(|(id, vector)| {
                            graph
                                .add(*id, &graph_vector(metric, vector))
                                .map_err(engine)
                        })
                    })
                })
                .collect();
            workers.into_iter().try_for_each(|worker| {
                worker
                    .join()
                    .map_err(|_| engine("an HNSW insertion thread panicked"))?
            })
        })
    }

    /// Deleted vectors still cost search time; once they outnumber the live ones the graph is rebuilt.
    fn rebuild_graph_if_sparse(&mut self) -> Result<(), VectorError> {
        let Some(config) = &self.config.vector else {
            return Ok(());
        };
        if self.removed <= self.rows.len().max(1_024) {
            return Ok(());
        }
        self.ann = Some(new_graph(config, self.rows.len())?);
        self.removed = 0;
        let ids: Vec<u64> = self.rows.values().map(|entry| entry.id).collect();
        self.add_to_graph(&ids)
    }

    fn maybe_compact(&mut self) -> Result<(), VectorError> {
        if !self
            .log
            .as_ref()
            .is_some_and(OperationLog::wants_compaction)
        {
            return Ok(());
        }
        let rows = self
            .rows
            .values()
            .map(|entry| self.full_row(entry))
            .collect();
        match &mut self.log {
            Some(log) => log.compact(rows),
            None => Ok(()),
        }
    }

    /// The `wanted` nearest allowed rows as `(id, score)`, best first, by the cheapest of four plans: an unfiltered
    /// walk; for a small allow-set, an exact scan of its members; for an allow-set of a large enough share of the
    /// rows, an unfiltered walk over-fetched by the inverse of that share, then filtered; otherwise a filtered walk
    /// (usearch skips forbidden rows as it goes), widened, then an exact scan when the walk still finds fewer rows
    /// than wanted (a very selective filter). Graph candidates are re-ranked exactly (see [`GRAPH_SCALAR`]).
    fn nearest(
        &self,
        vector: &[f32],
        wanted: usize,
        restriction: Option<&dyn Fn(u64) -> bool>,
        allow: Option<&AllowSet>,
    ) -> Result<Vec<(u64, f32)>, VectorError> {
        let (Some(graph), Some(config)) = (&self.ann, &self.config.vector) else {
            return Err(VectorError::InvalidRequest(
                "this index has no embedding vectors; use a full-text query".into(),
            ));
        };
        if vector.len() != config.dimension {
            return Err(VectorError::InvalidRequest(format!(
                "the query vector has {} dimensions, the index {}",
                vector.len(),
                config.dimension
            )));
        }
        let query = graph_vector(config.metric, vector);
        let candidates = wanted.saturating_mul(RERANK_FACTOR);
        let rerank =
            |ids: &mut dyn Iterator<Item = u64>| self.exact(config.metric, vector, wanted, ids);
        let Some(restriction) = restriction else {
            let matches = graph.search(&query, candidates).map_err(engine)?;
            return Ok(rerank(&mut matches.keys.into_iter()));
        };
        if let Some(allow) = allow {
            if allow.len() <= EXACT_SEARCH_LIMIT {
                return Ok(rerank(&mut allow.ids().filter(|id| restriction(*id))));
            }
            let share = allow.len() as f64 / self.rows.len().max(1) as f64;
            let overfetch = (wanted as f64 * OVERFETCH_FACTOR / share).ceil();
            if overfetch <= OVERFETCH_LIMIT {
                let matches = graph.search(&query, overfetch as usize).map_err(engine)?;
                let allowed: Vec<u64> = matches
                    .keys
                    .into_iter()
                    .filter(|id| restriction(*id))
                    .collect();
                if allowed.len() >= wanted {
                    return Ok(rerank(&mut allowed.into_iter()));
                }
            }
        }
        // usearch keeps at most `count` allowed candidates, so a walk through a graph where few rows are allowed can
        // stop short; each retry asks for four times more before an exact scan replaces the walk.
        let enough = wanted.min(self.rows.len());
        let mut count = candidates.min(self.rows.len().max(wanted));
        while count <= wanted.saturating_mul(FILTERED_WIDENING_LIMIT) {
            let matches = graph
                .filtered_search(&query, count, restriction)
                .map_err(engine)?;
            if matches.keys.len() >= enough {
                return Ok(rerank(&mut matches.keys.into_iter()));
            }
            if count >= self.rows.len() {
                break;
            }
            count = count.saturating_mul(4).min(self.rows.len());
        }
        let mut members: Box<dyn Iterator<Item = u64>> = match allow {
            Some(allow) => Box::new(allow.ids()),
            None => Box::new(self.slots.keys().copied()),
        };
        Ok(rerank(&mut members.by_ref().filter(|id| restriction(*id))))
    }

    /// The `wanted` nearest of `ids` by computing every distance.
    fn exact(
        &self,
        metric: Metric,
        vector: &[f32],
        wanted: usize,
        ids: impl Iterator<Item = u64>,
    ) -> Vec<(u64, f32)> {
        let mut scored: Vec<(u64, f32)> = ids
            .filter_map(|id| {
                let stored = self.slots.get(&id)?.vector.as_deref()?;
                Some((id, distance(metric, vector, stored)))
            })
            .collect();
        let closer = |a: &(u64, f32), b: &(u64, f32)| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0));
        if scored.len() > wanted {
            scored.select_nth_unstable_by(wanted, closer);
            scored.truncate(wanted);
        }
        scored.sort_by(closer);
        scored
            .into_iter()
            .map(|(id, distance)| (id, score(metric, distance)))
            .collect()
    }

    fn full_text(
        &self,
        text: &str,
        wanted: usize,
        allowed: &dyn Fn(u64) -> bool,
    ) -> Result<Vec<(u64, f32)>, VectorError> {
        let Some(index) = &self.text else {
            return Err(VectorError::InvalidRequest(
                "this index has no text columns for full-text search".into(),
            ));
        };
        index
            .lock()
            .map_err(|_| engine("full-text index lock poisoned"))?
            .search(text, wanted, allowed)
    }
}

fn validate_config(config: &IndexConfig) -> Result<(), VectorError> {
    if config.primary_key.is_empty() {
        return Err(VectorError::InvalidRequest(
            "a primary key column is required".into(),
        ));
    }
    if let Some(vector) = &config.vector {
        if vector.dimension == 0 || vector.dimension > 4_096 {
            return Err(VectorError::InvalidRequest(format!(
                "embedding dimension {} is outside 1..=4096",
                vector.dimension
            )));
        }
        if vector.column == config.primary_key {
            return Err(VectorError::InvalidRequest(
                "the embedding column cannot be the primary key".into(),
            ));
        }
    }
    if config.vector.is_none() && config.text_columns.is_empty() {
        return Err(VectorError::InvalidRequest(
            "an index needs an embedding vector column or text columns".into(),
        ));
    }
    Ok(())
}

/// A JSON array of finite numbers as `f32`s; a JSON string holding such an array is accepted too, since SQL tables
/// may store embeddings as text.
fn parse_vector(value: &Value) -> Option<Vec<f32>> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let number = item.as_f64()? as f32;
                number.is_finite().then_some(number)
            })
            .collect(),
        Value::String(text) => parse_vector(&serde_json::from_str(text).ok()?),
        _ => None,
    }
}

fn query_vector<'q>(query: &Query<'q>) -> Result<&'q [f32], VectorError> {
    query
        .vector
        .ok_or_else(|| VectorError::InvalidRequest("this query needs a query vector".into()))
}

fn query_text<'q>(query: &Query<'q>) -> Result<&'q str, VectorError> {
    query
        .text
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| VectorError::InvalidRequest("this query needs query text".into()))
}

/// Fuses rankings by reciprocal rank: each list gives its `r`-th item (from 1) `1 / (RRF_K + r)`.
fn reciprocal_rank_fusion(rankings: &[Vec<(u64, f32)>]) -> Vec<(u64, f32)> {
    let mut fused: HashMap<u64, f32> = HashMap::new();
    for ranking in rankings {
        for (rank, (id, _)) in ranking.iter().enumerate() {
            *fused.entry(*id).or_default() += 1.0 / (RRF_K + rank as f32 + 1.0);
        }
    }
    let mut fused: Vec<(u64, f32)> = fused.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused
}
