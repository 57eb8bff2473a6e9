//! The index: rows by primary key, the HNSW graph over their vectors (usearch), the BM25 index over their text, and
//! the operation log that makes writes durable.

use crate::VectorError;
use crate::filter::Filter;
use crate::log::{CONFIG_FILE, Operation, OperationLog, write_atomically};
use crate::text::TextIndex;
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

/// One query. `offset` skips the first hits (paging): the result is hits `offset..offset + num_results`.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub kind: QueryKind,
    pub vector: Option<&'a [f32]>,
    pub text: Option<&'a str>,
    pub filter: &'a Filter,
    /// Only rows whose primary key is in the set may be returned.
    pub allow: Option<&'a HashSet<String>>,
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
    vector: Option<Vec<f32>>,
}

pub struct VectorIndex {
    config: IndexConfig,
    rows: BTreeMap<String, Entry>,
    keys: HashMap<u64, String>,
    next_id: u64,
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
        quantization: usearch::ScalarKind::F32,
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

fn distance(metric: Metric, a: &[f32], b: &[f32]) -> f32 {
    match metric {
        Metric::L2 => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(),
        Metric::Cosine => {
            let (mut dot, mut norm_a, mut norm_b) = (0.0f32, 0.0f32, 0.0f32);
            for (x, y) in a.iter().zip(b) {
                dot += x * y;
                norm_a += x * x;
                norm_b += y * y;
            }
            let norms = (norm_a * norm_b).sqrt();
            if norms == 0.0 { 1.0 } else { 1.0 - dot / norms }
        }
    }
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

    /// Opens the durable index in `dir`, replaying its snapshot and log; the HNSW graph is rebuilt.
    pub fn open(dir: &Path) -> Result<VectorIndex, VectorError> {
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
        let (log, recovered) = OperationLog::open(dir)?;
        let mut index = VectorIndex::in_memory(config)?;
        index.apply_upsert(recovered.rows)?;
        for operation in recovered.operations {
            match operation {
                Operation::Upsert { rows } => {
                    index.apply_upsert(rows)?;
                }
                Operation::Delete { keys } => index.apply_delete(&keys)?,
            }
        }
        index.log = Some(log);
        Ok(index)
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
            keys: HashMap::new(),
            next_id: 1,
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

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether filters may name `column`.
    pub fn has_column(&self, column: &str) -> bool {
        self.config.columns.is_empty()
            || self.config.columns.iter().any(|known| known == column)
            || column == self.config.primary_key
    }

    /// Parses a `filters_json` string against this index's columns.
    pub fn parse_filter(&self, text: &str) -> Result<Filter, VectorError> {
        Filter::parse(text, &|column| self.has_column(column))
    }

    /// Inserts or replaces rows by primary key. Rows without a usable primary key or vector are refused (listed in
    /// the outcome); the others are durable when this returns.
    pub fn upsert(&mut self, rows: Vec<Value>) -> Result<WriteOutcome, VectorError> {
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
        self.delete(&stale)?;
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
        let mut outcome = self.upsert(changed)?;
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
        let wanted = query.offset.saturating_add(query.num_results);
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let allowed = |id: u64| -> bool {
            let Some(key) = self.keys.get(&id) else {
                return false;
            };
            if query.allow.is_some_and(|allow| !allow.contains(key)) {
                return false;
            }
            query.filter.is_empty()
                || self
                    .rows
                    .get(key)
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
                self.keys.get(&id).map(|key| Hit {
                    key: key.clone(),
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
        if let (Some(config), Some(vector)) = (&self.config.vector, &entry.vector) {
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
            self.keys.insert(id, key.clone());
            added.push(id);
            self.rows.insert(key, Entry { id, row, vector });
        }
        self.add_to_graph(&added)?;
        if let Some(text) = &self.text {
            let mut text = text
                .lock()
                .map_err(|_| engine("full-text index lock poisoned"))?;
            for id in &added {
                if let Some(entry) = self.keys.get(id).and_then(|key| self.rows.get(key)) {
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
        self.rebuild_graph_if_sparse()
    }

    fn remove_entry(&mut self, key: &str) -> Result<(), VectorError> {
        let Some(entry) = self.rows.remove(key) else {
            return Ok(());
        };
        self.keys.remove(&entry.id);
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
            .filter_map(|id| {
                let entry = self.rows.get(self.keys.get(id)?)?;
                Some((*id, entry.vector.as_deref()?))
            })
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

    /// The `wanted` nearest allowed rows as `(id, score)`, best first. With a restriction the graph walk itself
    /// skips forbidden rows (usearch's filtered search); a small allow-set is scanned exactly instead, and so is the
    /// whole index when the walk finds fewer rows than wanted (a very selective filter).
    fn nearest(
        &self,
        vector: &[f32],
        wanted: usize,
        restriction: Option<&dyn Fn(u64) -> bool>,
        allow: Option<&HashSet<String>>,
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
        let Some(restriction) = restriction else {
            let matches = graph.search(&query, wanted).map_err(engine)?;
            return Ok(self.scored(config.metric, matches, wanted));
        };
        let exact = |candidates: &mut dyn Iterator<Item = &Entry>| {
            self.exact(
                config.metric,
                vector,
                wanted,
                candidates.filter(|entry| restriction(entry.id)),
            )
        };
        if let Some(allow) = allow.filter(|allow| allow.len() <= EXACT_SEARCH_LIMIT) {
            return Ok(exact(
                &mut allow.iter().filter_map(|key| self.rows.get(key)),
            ));
        }
        // usearch keeps at most `count` allowed candidates, so a walk asked for `wanted` through a graph where few
        // rows are allowed can stop short; asking for `wanted / selectivity` (the allow-set's, when known), then for
        // four times more, widens the walk before falling back to an exact scan.
        let selectivity = allow.map_or(1.0, |allow| {
            allow.len() as f64 / self.rows.len().max(1) as f64
        });
        let mut count = ((wanted as f64 / selectivity.max(1e-3)).ceil() as usize)
            .clamp(wanted, self.rows.len().max(wanted));
        let enough = wanted.min(self.rows.len());
        while count <= wanted.saturating_mul(FILTERED_WIDENING_LIMIT) {
            let matches = graph
                .filtered_search(&query, count, restriction)
                .map_err(engine)?;
            if matches.keys.len() >= enough {
                return Ok(self.scored(config.metric, matches, wanted));
            }
            if count >= self.rows.len() {
                break;
            }
            count = count.saturating_mul(4).min(self.rows.len());
        }
        match allow {
            Some(allow) => Ok(exact(
                &mut allow.iter().filter_map(|key| self.rows.get(key)),
            )),
            None => Ok(exact(&mut self.rows.values())),
        }
    }

    fn scored(
        &self,
        metric: Metric,
        matches: usearch::ffi::Matches,
        wanted: usize,
    ) -> Vec<(u64, f32)> {
        matches
            .keys
            .into_iter()
            .zip(matches.distances)
            .filter(|(id, _)| self.keys.contains_key(id))
            .take(wanted)
            .map(|(id, distance)| (id, score(metric, distance)))
            .collect()
    }

    fn exact<'e>(
        &self,
        metric: Metric,
        vector: &[f32],
        wanted: usize,
        candidates: impl Iterator<Item = &'e Entry>,
    ) -> Vec<(u64, f32)> {
        let mut scored: Vec<(u64, f32)> = candidates
            .filter_map(|entry| {
                let stored = entry.vector.as_deref()?;
                Some((entry.id, distance(metric, vector, stored)))
            })
            .collect();
        scored.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        scored.truncate(wanted);
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
