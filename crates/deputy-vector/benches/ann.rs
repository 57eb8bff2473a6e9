//! ANN benchmark: recall@10 and single-thread queries per second of `deputy-vector`, side by side with FAISS's HNSW
//! (`faiss-cpu` from PyPI) on the same vectors, the same graph parameters and the same queries, unfiltered and with
//! a 10% allow-set.
//!
//! `cargo bench -p deputy-vector --bench ann -j 1`. Environment: `ANN_N` (rows, default 100000), `ANN_DIM` (384),
//! `ANN_QUERIES` (1000), `ANN_M` (16), `ANN_EF_CONSTRUCTION` (128), `ANN_EF` (64). The data is clustered (1000
//! Gaussian clusters, then normalised), generated from a fixed seed, and written with the exact neighbours to
//! `$TMPDIR/deputy-ann-bench/`; the reference runs in the venv `$HOME/.cache/deputy/bench-venv` (created with
//! `faiss-cpu` and `numpy` when missing; if that fails the reason is printed and only Deputy's figures are shown).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Benchmark code: a panic is a failed run.

use deputy_vector::{
    AllowSet, AnnParams, Filter, IndexConfig, Metric, Query, QueryKind, VectorConfig, VectorIndex,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const K: usize = 10;
const CLUSTERS: usize = 1_000;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// A standard normal sample (Box–Muller), so the data needs no extra crate.
fn gaussian(rng: &mut StdRng) -> f32 {
    let u: f32 = rng.random_range(f32::EPSILON..1.0);
    let v: f32 = rng.random_range(0.0..1.0);
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

fn normalised(mut vector: Vec<f32>) -> Vec<f32> {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    vector.iter_mut().for_each(|x| *x /= norm);
    vector
}

/// `count` points around random cluster centres, flattened row-major.
fn clustered(rng: &mut StdRng, centres: &[Vec<f32>], count: usize) -> Vec<f32> {
    let mut data = Vec::with_capacity(count * centres[0].len());
    for _ in 0..count {
        let centre = &centres[rng.random_range(0..centres.len())];
        let point: Vec<f32> = centre.iter().map(|c| c + 0.35 * gaussian(rng)).collect();
        data.extend(normalised(point));
    }
    data
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The exact `K` nearest (by inner product = cosine on unit vectors) of each query among the rows `keep` accepts.
fn ground_truth(
    base: &[f32],
    queries: &[f32],
    dim: usize,
    keep: &(dyn Fn(usize) -> bool + Sync),
) -> Vec<Vec<u32>> {
    let queries: Vec<&[f32]> = queries.chunks(dim).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = queries.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = queries
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|query| {
                            let mut scored: Vec<(f32, u32)> = base
                                .chunks(dim)
                                .enumerate()
                                .filter(|(id, _)| keep(*id))
                                .map(|(id, row)| (dot(query, row), id as u32))
                                .collect();
                            scored.select_nth_unstable_by(K, |a, b| b.0.total_cmp(&a.0));
                            scored.truncate(K);
                            scored.into_iter().map(|(_, id)| id).collect()
                        })
                        .collect::<Vec<Vec<u32>>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().unwrap())
            .collect()
    })
}

fn write_f32(path: &Path, data: &[f32]) {
    let mut bytes = Vec::with_capacity(data.len() * 4);
    data.iter()
        .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

fn write_ids(path: &Path, truth: &[Vec<u32>]) {
    let mut bytes = Vec::new();
    truth
        .iter()
        .flatten()
        .for_each(|id| bytes.extend_from_slice(&id.to_le_bytes()));
    std::fs::write(path, bytes).unwrap();
}

fn recall(found: &[Vec<u32>], truth: &[Vec<u32>]) -> f64 {
    let hits: usize = found
        .iter()
        .zip(truth)
        .map(|(found, truth)| found.iter().filter(|id| truth.contains(id)).count())
        .sum();
    hits as f64 / (truth.len() * K) as f64
}

struct Measured {
    qps: f64,
    recall: f64,
}

fn measure(
    index: &VectorIndex,
    queries: &[f32],
    dim: usize,
    truth: &[Vec<u32>],
    allow: Option<&AllowSet>,
) -> Measured {
    let none = Filter::default();
    let started = Instant::now();
    let found: Vec<Vec<u32>> = queries
        .chunks(dim)
        .map(|query| {
            let hits = index
                .query(&Query {
                    kind: QueryKind::Ann,
                    vector: Some(query),
                    text: None,
                    filter: &none,
                    allow,
                    num_results: K,
                    offset: 0,
                    score_threshold: None,
                })
                .unwrap();
            hits.iter().map(|hit| hit.key.parse().unwrap()).collect()
        })
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    Measured {
        qps: truth.len() as f64 / seconds,
        recall: recall(&found, truth),
    }
}

/// The reference's venv: reused when present, else created with faiss-cpu and numpy. `Err` says why not.
fn reference_python() -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let venv = PathBuf::from(home).join(".cache/deputy/bench-venv");
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", "import faiss, numpy"])
            .output()
            .is_ok_and(|output| output.status.success())
    };
    if ready(&python) {
        return Ok(python);
    }
    let run = |program: &Path, args: &[&str]| -> Result<(), String> {
        let output = Command::new(program)
            .args(args)
            .output()
            .map_err(|error| format!("{}: {error}", program.display()))?;
        match output.status.success() {
            true => Ok(()),
            false => Err(format!(
                "{} {}: {}",
                program.display(),
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )),
        }
    };
    run(
        Path::new("python3"),
        &["-m", "venv", &venv.to_string_lossy()],
    )?;
    run(
        &python,
        &[
            "-m",
            "pip",
            "install",
            "-q",
            "faiss-cpu==1.15.1",
            "numpy==2.4.6",
        ],
    )?;
    match ready(&python) {
        true => Ok(python),
        false => Err("faiss installed but does not import".into()),
    }
}

fn main() {
    let n = env("ANN_N", 100_000);
    let dim = env("ANN_DIM", 384);
    let query_count = env("ANN_QUERIES", 1_000);
    let params = AnnParams {
        connectivity: env("ANN_M", 16),
        expansion_add: env("ANN_EF_CONSTRUCTION", 128),
        expansion_search: env("ANN_EF", 64),
    };
    let dir = std::env::temp_dir().join("deputy-ann-bench");
    std::fs::create_dir_all(&dir).unwrap();

    let mut rng = StdRng::seed_from_u64(20_261_128);
    let centres: Vec<Vec<f32>> = (0..CLUSTERS)
        .map(|_| (0..dim).map(|_| gaussian(&mut rng)).collect())
        .collect();
    let base = clustered(&mut rng, &centres, n);
    let queries = clustered(&mut rng, &centres, query_count);
    let allowed = |id: usize| id % 10 == 3;
    let started = Instant::now();
    let truth = ground_truth(&base, &queries, dim, &|_| true);
    let truth_filtered = ground_truth(&base, &queries, dim, &allowed);
    println!(
        "data: {n} x {dim} clustered unit vectors, {query_count} queries; exact neighbours in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    write_f32(&dir.join("base.f32"), &base);
    write_f32(&dir.join("queries.f32"), &queries);
    write_ids(&dir.join("truth.u32"), &truth);
    write_ids(&dir.join("truth_filtered.u32"), &truth_filtered);

    let mut index = VectorIndex::in_memory(IndexConfig {
        primary_key: "id".into(),
        vector: Some(VectorConfig {
            column: "vec".into(),
            dimension: dim,
            metric: Metric::Cosine,
            ann: params,
        }),
        text_columns: Vec::new(),
        columns: Vec::new(),
    })
    .unwrap();
    let started = Instant::now();
    for (batch_start, batch) in base
        .chunks(dim * 5_000)
        .enumerate()
        .map(|(i, b)| (i * 5_000, b))
    {
        let rows: Vec<Value> = batch
            .chunks(dim)
            .enumerate()
            .map(|(offset, vector)| json!({ "id": batch_start + offset, "vec": vector }))
            .collect();
        index.upsert(rows).unwrap();
    }
    let build = started.elapsed().as_secs_f64();
    let allowed_keys: Vec<String> = (0..n)
        .filter(|id| allowed(*id))
        .map(|id| id.to_string())
        .collect();
    let started = Instant::now();
    let allow = index.allow_set(allowed_keys.iter().map(String::as_str));
    let allow_set_ms = started.elapsed().as_secs_f64() * 1e3;
    let ours = measure(&index, &queries, dim, &truth, None);
    let ours_filtered = measure(&index, &queries, dim, &truth_filtered, Some(&allow));

    println!(
        "\nHNSW M={} ef_construction={} ef_search={}, k={K}, one query at a time on one thread; usearch kernels: {}",
        params.connectivity,
        params.expansion_add,
        params.expansion_search,
        index.ann_kernel().unwrap_or_default()
    );
    println!(
        "{:<28} {:>10} {:>10} {:>12} {:>12} {:>10}",
        "engine", "build s", "qps", "recall@10", "10% qps", "10% recall"
    );
    let row = |name: &str, build: f64, plain: &Measured, filtered: &Measured| {
        println!(
            "{name:<28} {build:>10.1} {:>10.0} {:>12.4} {:>12.0} {:>10.4}",
            plain.qps, plain.recall, filtered.qps, filtered.recall
        );
    };
    row("deputy-vector (usearch)", build, &ours, &ours_filtered);
    println!(
        "(the allow-set of {} keys took {allow_set_ms:.2} ms to build, once, as FAISS's IDSelectorBatch is built once)",
        allow.len()
    );
    std::io::stdout().flush().unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/ann_reference.py");
    let reference = reference_python().and_then(|python| {
        let output = Command::new(python)
            .arg(&script)
            .arg(&dir)
            .args(
                [
                    n,
                    dim,
                    query_count,
                    params.connectivity,
                    params.expansion_add,
                    params.expansion_search,
                ]
                .map(|v| v.to_string()),
            )
            .output()
            .map_err(|error| error.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        serde_json::from_slice::<Value>(&output.stdout).map_err(|error| error.to_string())
    });
    match reference {
        Ok(faiss) => {
            let number = |key: &str| faiss[key].as_f64().unwrap();
            let plain = Measured {
                qps: number("qps"),
                recall: number("recall"),
            };
            let filtered = Measured {
                qps: number("filtered_qps"),
                recall: number("filtered_recall"),
            };
            let version = faiss["version"].as_str().unwrap_or("?");
            row(
                &format!("faiss-cpu {version} HNSWFlat"),
                number("build_seconds"),
                &plain,
                &filtered,
            );
            let equal_ef = number("filtered_equal_recall_ef");
            println!(
                "faiss, filtered at efSearch={equal_ef:.0} (the first that reaches recall@10 >= 0.95): {:.0} qps, recall@10 {:.4}",
                number("filtered_equal_recall_qps"),
                number("filtered_equal_recall")
            );
            println!(
                "\ndeputy / faiss queries per second: {:.2} unfiltered, {:.2} with a 10% allow-set at the same efSearch, \
                 {:.2} against faiss at recall@10 >= 0.95",
                ours.qps / plain.qps,
                ours_filtered.qps / filtered.qps,
                ours_filtered.qps / number("filtered_equal_recall_qps")
            );
        }
        Err(reason) => println!("\nreference (faiss-cpu) not run: {reason}"),
    }
}
