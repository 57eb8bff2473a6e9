"""The reference side of `benches/ann.rs`: FAISS's HNSW on the vectors the Rust benchmark wrote.

Usage: ann_reference.py DIR N DIM QUERIES M EF_CONSTRUCTION EF_SEARCH. Reads DIR/base.f32, queries.f32, truth.u32 and
truth_filtered.u32 (the allow-set is every id with id % 10 == 3, as in the Rust side) and prints one JSON object.
Queries run one at a time on one thread, like Deputy's, so both sides pay per-query overhead.
FAISS's filtered walk stops as early as its unfiltered one and so loses recall; the filtered run is repeated with a
larger efSearch until recall@10 reaches 0.95, so that the two engines are also compared at equal recall.
"""

import json
import sys
import time

import faiss
import numpy as np

K = 10


def main() -> None:
    directory = sys.argv[1]
    n, dim, query_count, m, ef_construction, ef_search = (int(value) for value in sys.argv[2:8])
    base = np.fromfile(f"{directory}/base.f32", dtype="<f4").reshape(n, dim)
    queries = np.fromfile(f"{directory}/queries.f32", dtype="<f4").reshape(query_count, dim)
    truth = np.fromfile(f"{directory}/truth.u32", dtype="<u4").reshape(query_count, K)
    truth_filtered = np.fromfile(f"{directory}/truth_filtered.u32", dtype="<u4").reshape(query_count, K)

    index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_construction
    started = time.perf_counter()
    index.add(base)
    build_seconds = time.perf_counter() - started

    faiss.omp_set_num_threads(1)
    plain = faiss.SearchParametersHNSW(efSearch=ef_search)
    allowed = np.arange(3, n, 10, dtype="int64")
    selector = faiss.IDSelectorBatch(allowed)

    def filtered(ef):
        return faiss.SearchParametersHNSW(efSearch=ef, sel=selector)

    def run(params, expected):
        found = np.empty((query_count, K), dtype="int64")
        started = time.perf_counter()
        for row in range(query_count):
            _, ids = index.search(queries[row : row + 1], K, params=params)
            found[row] = ids[0]
        seconds = time.perf_counter() - started
        hits = sum(len(set(found[row]) & set(expected[row])) for row in range(query_count))
        return query_count / seconds, hits / (query_count * K)

    qps, recall = run(plain, truth)
    filtered_qps, filtered_recall = run(filtered(ef_search), truth_filtered)
    equal_ef, equal_qps, equal_recall = ef_search, filtered_qps, filtered_recall
    while equal_recall < 0.95 and equal_ef < 16 * ef_search:
        equal_ef = equal_ef * 3 // 2
        equal_qps, equal_recall = run(filtered(equal_ef), truth_filtered)
    print(json.dumps({
        "version": faiss.__version__,
        "build_seconds": build_seconds,
        "qps": qps,
        "recall": recall,
        "filtered_qps": filtered_qps,
        "filtered_recall": filtered_recall,
        "filtered_equal_recall_ef": equal_ef,
        "filtered_equal_recall_qps": equal_qps,
        "filtered_equal_recall": equal_recall,
    }))


if __name__ == "__main__":
    main()
