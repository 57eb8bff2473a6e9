//! The index as the server uses it: writes, scans, the three query kinds, filters, allow-sets and durability.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

use deputy_vector::{
    Filter, IndexConfig, Metric, Query, QueryKind, VectorConfig, VectorError, VectorIndex,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::collections::HashSet;

fn config(dimension: usize, metric: Metric) -> IndexConfig {
    IndexConfig {
        primary_key: "id".into(),
        vector: Some(VectorConfig {
            column: "vec".into(),
            dimension,
            metric,
            ann: Default::default(),
        }),
        text_columns: vec!["text".into()],
        columns: vec!["id".into(), "vec".into(), "text".into(), "group".into()],
    }
}

fn random_vector(rng: &mut StdRng, dimension: usize) -> Vec<f32> {
    let vector: Vec<f32> = (0..dimension)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    vector.into_iter().map(|x| x / norm).collect()
}

fn query<'a>(vector: &'a [f32], filter: &'a Filter, num_results: usize) -> Query<'a> {
    Query {
        kind: QueryKind::Ann,
        vector: Some(vector),
        text: None,
        filter,
        allow: None,
        num_results,
        offset: 0,
        score_threshold: None,
    }
}

fn keys(hits: &[deputy_vector::Hit]) -> Vec<String> {
    hits.iter().map(|hit| hit.key.clone()).collect()
}

/// Rows `0..n` with random unit vectors, `group` = id mod 10, and text naming the group.
fn filled(n: usize, dimension: usize) -> (VectorIndex, Vec<Vec<f32>>) {
    let mut rng = StdRng::seed_from_u64(7);
    let mut index = VectorIndex::in_memory(config(dimension, Metric::Cosine)).unwrap();
    let vectors: Vec<Vec<f32>> = (0..n).map(|_| random_vector(&mut rng, dimension)).collect();
    let rows = vectors
        .iter()
        .enumerate()
        .map(|(id, vector)| {
            json!({ "id": id, "vec": vector, "group": id % 10, "text": format!("document in group g{}", id % 10) })
        })
        .collect();
    let outcome = index.upsert(rows).unwrap();
    assert_eq!(outcome.success, n);
    (index, vectors)
}

fn brute_force(
    vectors: &[Vec<f32>],
    query: &[f32],
    k: usize,
    keep: impl Fn(usize) -> bool,
) -> Vec<String> {
    let mut scored: Vec<(usize, f32)> = vectors
        .iter()
        .enumerate()
        .filter(|(id, _)| keep(*id))
        .map(|(id, vector)| {
            (
                id,
                vector.iter().zip(query).map(|(a, b)| a * b).sum::<f32>(),
            )
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored
        .into_iter()
        .take(k)
        .map(|(id, _)| id.to_string())
        .collect()
}

#[test]
fn ann_finds_the_true_neighbours_and_scores_them_higher_first() {
    let (index, vectors) = filled(2_000, 32);
    let none = Filter::default();
    let mut found = 0;
    let mut found_itself_first = 0;
    for probe in 0..20 {
        let hits = index.query(&query(&vectors[probe], &none, 10)).unwrap();
        assert_eq!(hits.len(), 10);
        // The graph is approximate (and built by parallel insertions, so not the same twice): a vector is its own
        // nearest neighbour nearly always, not always.
        if hits[0].key == probe.to_string() {
            found_itself_first += 1;
            assert!(
                (hits[0].score - 1.0).abs() < 1e-4,
                "cosine similarity of a vector with itself"
            );
        }
        assert!(hits.windows(2).all(|pair| pair[0].score >= pair[1].score));
        let truth: HashSet<String> = brute_force(&vectors, &vectors[probe], 10, |_| true)
            .into_iter()
            .collect();
        found += keys(&hits)
            .iter()
            .filter(|key| truth.contains(*key))
            .count();
    }
    assert!(found as f32 / 200.0 >= 0.95, "recall@10 {found}/200");
    assert!(
        found_itself_first >= 19,
        "a vector is its own nearest neighbour in {found_itself_first} of 20 probes"
    );
}

#[test]
fn an_allow_set_still_yields_num_results_and_only_allowed_rows() {
    let (index, vectors) = filled(3_000, 16);
    let none = Filter::default();
    for modulus in [3usize, 50, 1_000] {
        let allowed: HashSet<String> = (0..3_000)
            .filter(|id| id % modulus == 0)
            .map(|id| id.to_string())
            .collect();
        let allow = index.allow_set(allowed.iter().map(String::as_str));
        assert_eq!(allow.len(), allowed.len());
        let mut restricted = query(&vectors[1], &none, 10);
        restricted.allow = Some(&allow);
        let hits = index.query(&restricted).unwrap();
        assert_eq!(hits.len(), 10.min(allowed.len()), "modulus {modulus}");
        assert!(hits.iter().all(|hit| allowed.contains(&hit.key)));
        let truth = brute_force(&vectors, &vectors[1], 10, |id| id % modulus == 0);
        let overlap = keys(&hits).iter().filter(|key| truth.contains(key)).count();
        assert!(
            overlap >= 8.min(truth.len()),
            "modulus {modulus}: {overlap} of {} true neighbours",
            truth.len()
        );
    }
}

#[test]
fn an_allow_set_is_bound_to_the_index_state_it_was_built_from() {
    let (mut index, vectors) = filled(200, 8);
    let none = Filter::default();
    let allow = index.allow_set(["3", "7", "no-such-row"]);
    assert_eq!(allow.len(), 2, "keys of absent rows are not members");
    let mut restricted = query(&vectors[0], &none, 10);
    restricted.allow = Some(&allow);
    let mut found = keys(&index.query(&restricted).unwrap());
    found.sort();
    assert_eq!(found, ["3", "7"]);

    let empty = index.allow_set([]);
    restricted.allow = Some(&empty);
    assert!(index.query(&restricted).unwrap().is_empty());

    // Re-upserting row 3 gives it a new internal id: the old set must not be trusted any more.
    index
        .upsert(vec![json!({ "id": 3, "group": 0, "vec": vectors[3] })])
        .unwrap();
    restricted.allow = Some(&allow);
    assert!(matches!(
        index.query(&restricted),
        Err(VectorError::StaleAllowSet)
    ));
    let rebuilt = index.allow_set(["3", "7"]);
    restricted.allow = Some(&rebuilt);
    assert_eq!(index.query(&restricted).unwrap().len(), 2);
}

#[test]
fn filters_restrict_every_query_kind() {
    let (index, vectors) = filled(500, 8);
    let filter = index
        .parse_filter(r#"{"group": [2, 3], "id >=": 100}"#)
        .unwrap();
    let hits = index.query(&query(&vectors[0], &filter, 20)).unwrap();
    assert_eq!(hits.len(), 20);
    for hit in &hits {
        let row = index.row(&hit.key).unwrap();
        assert!([json!(2), json!(3)].contains(&row["group"]), "{row:?}");
        assert!(row["id"].as_u64().unwrap() >= 100);
    }
    let mut text = query(&vectors[0], &filter, 5);
    text.kind = QueryKind::FullText;
    text.text = Some("g3");
    let hits = index.query(&text).unwrap();
    assert_eq!(hits.len(), 5);
    assert!(
        hits.iter()
            .all(|hit| index.row(&hit.key).unwrap()["group"] == json!(3))
    );
    text.kind = QueryKind::Hybrid;
    let hits = index.query(&text).unwrap();
    assert_eq!(hits.len(), 5);
    assert!(
        hits.iter()
            .all(|hit| index.row(&hit.key).unwrap()["group"] == json!(3)),
        "hybrid ranks g3 rows first"
    );

    assert!(matches!(
        index.parse_filter(r#"{"colour": 1}"#),
        Err(VectorError::InvalidFilter(_))
    ));
}

#[test]
fn full_text_ranks_by_bm25_and_respects_updates() {
    let config = IndexConfig {
        primary_key: "id".into(),
        vector: None,
        text_columns: vec!["body".into()],
        columns: vec![],
    };
    let mut index = VectorIndex::in_memory(config).unwrap();
    index
        .upsert(vec![
            json!({ "id": "a", "body": "the quick brown fox" }),
            json!({ "id": "b", "body": "fox fox fox jumps" }),
            json!({ "id": "c", "body": "lazy dog" }),
        ])
        .unwrap();
    let none = Filter::default();
    let mut text = Query {
        kind: QueryKind::FullText,
        vector: None,
        text: Some("fox"),
        filter: &none,
        allow: None,
        num_results: 10,
        offset: 0,
        score_threshold: None,
    };
    assert_eq!(keys(&index.query(&text).unwrap()), vec!["b", "a"]);
    index
        .upsert(vec![json!({ "id": "b", "body": "no animals" })])
        .unwrap();
    assert_eq!(keys(&index.query(&text).unwrap()), vec!["a"]);
    index.delete(&[json!("a")]).unwrap();
    assert!(index.query(&text).unwrap().is_empty());
    text.kind = QueryKind::Ann;
    assert!(matches!(
        index.query(&text),
        Err(VectorError::InvalidRequest(_))
    ));
}

#[test]
fn paging_offsets_and_score_thresholds() {
    let (index, vectors) = filled(300, 8);
    let none = Filter::default();
    let all = index.query(&query(&vectors[5], &none, 12)).unwrap();
    let mut second = query(&vectors[5], &none, 6);
    second.offset = 6;
    assert_eq!(keys(&index.query(&second).unwrap()), keys(&all[6..]));
    let mut strict = query(&vectors[5], &none, 12);
    strict.score_threshold = Some(all[3].score);
    let hits = index.query(&strict).unwrap();
    assert!(hits.len() >= 4 && hits.iter().all(|hit| hit.score >= all[3].score));
}

#[test]
fn invalid_rows_are_reported_and_scan_pages_in_key_order() {
    let mut index = VectorIndex::in_memory(config(2, Metric::L2)).unwrap();
    let outcome = index
        .upsert(vec![
            json!({ "id": "b", "vec": [0.0, 1.0] }),
            json!({ "id": "a", "vec": [1.0, 0.0], "text": "hi" }),
            json!({ "id": "c", "vec": [1.0] }),
            json!({ "vec": [1.0, 1.0] }),
            json!("not a row"),
        ])
        .unwrap();
    assert_eq!(outcome.success, 2);
    assert_eq!(outcome.failed, vec![json!("c"), Value::Null, Value::Null]);
    let first = index.scan(None, 1);
    assert_eq!(
        first,
        vec![
            json!({ "id": "a", "vec": [1.0, 0.0], "text": "hi" })
                .as_object()
                .cloned()
                .unwrap()
        ]
    );
    let rest = index.scan(Some("a"), 10);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["id"], "b");
    let none = Filter::default();
    let hits = index.query(&query(&[1.0, 0.0], &none, 2)).unwrap();
    assert_eq!(keys(&hits), vec!["a", "b"]);
    assert!(
        (hits[0].score - 1.0).abs() < 1e-6,
        "L2: distance 0 scores 1"
    );
    assert!(
        (hits[1].score - 1.0 / 3.0).abs() < 1e-6,
        "L2: squared distance 2 scores 1/3"
    );
}

#[test]
fn acknowledged_writes_survive_reopening_and_replace_all_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    {
        let mut index = VectorIndex::create(&path, config(2, Metric::L2)).unwrap();
        index
            .upsert(vec![
                json!({ "id": 1, "vec": [0.1, 0.2], "text": "one" }),
                json!({ "id": 2, "vec": [0.3, 0.4], "text": "two" }),
                json!({ "id": 3, "vec": [0.5, 0.6], "text": "three" }),
            ])
            .unwrap();
        index.delete(&[json!(2)]).unwrap();
        index
            .upsert(vec![json!({ "id": 3, "vec": [0.7, 0.8], "text": "THREE" })])
            .unwrap();
    }
    let mut index = VectorIndex::open(&path).unwrap();
    assert_eq!(index.len(), 2);
    assert_eq!(index.row("3").unwrap()["text"], "THREE");
    assert_eq!(index.row("3").unwrap()["vec"], json!([0.7, 0.8]));
    assert!(index.row("2").is_none());
    let none = Filter::default();
    let hits = index.query(&query(&[0.7, 0.8], &none, 1)).unwrap();
    assert_eq!(
        hits[0].key, "3",
        "the rebuilt graph holds the recovered vectors"
    );

    let outcome = index
        .replace_all(vec![
            json!({ "id": 3, "vec": [0.7, 0.8], "text": "THREE" }),
            json!({ "id": 4, "vec": [0.9, 1.0], "text": "four" }),
        ])
        .unwrap();
    assert_eq!(outcome.success, 2);
    drop(index);
    let index = VectorIndex::open(&path).unwrap();
    let keys: Vec<Value> = index
        .scan(None, 10)
        .into_iter()
        .map(|row| row["id"].clone())
        .collect();
    assert_eq!(keys, vec![json!(3), json!(4)]);
}

/// Two opens of one directory stand for two processes sharing the storage (replicas): each sees the other's writes
/// once it catches up, writes never reuse a sequence number, and a deleted directory is reported as such.
#[test]
fn two_opens_of_one_directory_follow_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    let mut a = VectorIndex::create(&path, config(2, Metric::L2)).unwrap();
    let mut b = VectorIndex::open(&path).unwrap();
    assert!(b.is_current().unwrap());

    a.upsert(vec![json!({ "id": 1, "vec": [0.1, 0.2], "text": "one" })])
        .unwrap();
    assert!(!b.is_current().unwrap(), "B must notice A's write");
    let stale = b.allow_set(["1"]);
    assert!(b.catch_up().unwrap());
    assert!(b.is_current().unwrap());
    assert!(!b.catch_up().unwrap(), "nothing new the second time");
    assert_eq!(b.row("1").unwrap()["text"], "one");
    let none = Filter::default();
    let mut restricted = query(&[0.1, 0.2], &none, 1);
    restricted.allow = Some(&stale);
    assert!(
        matches!(b.query(&restricted), Err(VectorError::StaleAllowSet)),
        "an allow-set from before a catch-up is refused"
    );

    // B writes without having caught up with A's latest: its write applies A's first, then follows it.
    a.upsert(vec![json!({ "id": 2, "vec": [0.3, 0.4], "text": "two" })])
        .unwrap();
    b.delete(&[json!(1)]).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b.row("2").unwrap()["text"], "two");
    // replace_all on A decides what is stale on the rows as B left them.
    a.replace_all(vec![
        json!({ "id": 2, "vec": [0.3, 0.4], "text": "two" }),
        json!({ "id": 3, "vec": [0.5, 0.6], "text": "three" }),
    ])
    .unwrap();
    assert!(a.row("1").is_none());
    b.catch_up().unwrap();
    let reopened = VectorIndex::open(&path).unwrap();
    for index in [&a, &b, &reopened] {
        let ids: Vec<Value> = index
            .scan(None, 10)
            .into_iter()
            .map(|row| row["id"].clone())
            .collect();
        assert_eq!(ids, vec![json!(2), json!(3)]);
    }

    // Deleted by A's process: B's next look says so.
    drop(a);
    std::fs::remove_dir_all(&path).unwrap();
    assert!(matches!(b.is_current(), Err(VectorError::Deleted { .. })));
    assert!(matches!(b.catch_up(), Err(VectorError::Deleted { .. })));
    assert!(matches!(
        b.upsert(vec![json!({ "id": 4, "vec": [0.5, 0.6] })]),
        Err(VectorError::Deleted { .. })
    ));
}

/// Appends from several threads through separate opens (the lock a file lock, not a mutex of this process) neither
/// interleave nor lose a write.
#[test]
fn concurrent_writers_through_separate_opens_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index");
    drop(VectorIndex::create(&path, config(2, Metric::L2)).unwrap());
    let writers: Vec<_> = (0..4)
        .map(|writer| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut index = VectorIndex::open(&path).unwrap();
                for row in 0..25 {
                    let id = writer * 100 + row;
                    index
                        .upsert(vec![json!({ "id": id, "vec": [0.1, 0.2] })])
                        .unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let index = VectorIndex::open(&path).unwrap();
    assert_eq!(index.len(), 100);
}
