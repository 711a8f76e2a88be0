"""How much of the exact top 50 the HNSW graph finds, and how a graph kept through compactions
wears, on MiniLM vectors.

Compaction keeps the graph, its keys renamed (`DenseIndex.compacted`), rather than building it
again; the removed vectors' places stay in it until new ones fill them. This measures the share
of the exact top 50 (by cosine over the live vectors) that the graph returns: for a graph built
on the corpus, then through rounds of 30% removed, compacted and as many added, each against a
graph built anew on the same live vectors in the same run; and at wider searches
(`expansion_search`) on the graph first built. The corpus is the search benchmark's texts
embedded by MiniLM (random vectors, which the search benchmark uses for speed, are a case no
graph handles well: about 0.1 of their top 50 is found).

Run: `python -m benchmarks graph` (about 3 minutes on 2 cores, most of it embedding).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from benchmarks.bench_search import RNG, sentences
from benchmarks.common import write_results
from memvault.retrieval.dense import DenseIndex, Vectors
from memvault.retrieval.embed import default_embedder

SIZE = 10_000
CHURN = 3_000  # removed, then added, each round
ROUNDS = 3
QUERIES = 200
TOP = 50
EXPANSIONS = (64, 100, 150, 200)  # 64 is usearch's default, the one search uses


def found_share(dense: DenseIndex, queries: Vectors) -> tuple[float, float]:
    """The mean share of each query's exact top `TOP` the graph returns, and the graph's
    median search time in ms."""
    alive = dense._alive[: len(dense)]
    shares, times = [], []
    for query in queries:
        scores = dense.similarity(query)
        scores[~alive] = -np.inf
        exact = set(np.argsort(-scores)[:TOP].tolist())
        started = time.perf_counter()
        found = dense.nearest(query, TOP)
        times.append(time.perf_counter() - started)
        shares.append(len(exact & set(found.tolist())) / TOP)
    return round(statistics.fmean(shares), 3), round(statistics.median(times) * 1000, 3)


def graph_of(vectors: Vectors) -> DenseIndex:
    dense = DenseIndex(vectors.shape[1], ann_threshold=1)
    dense.add(0, vectors)
    return dense


def main() -> None:
    vectors = default_embedder().embed(sentences(SIZE + ROUNDS * CHURN + QUERIES))
    queries, corpus = vectors[-QUERIES:], vectors[:-QUERIES]
    dense = graph_of(corpus[:SIZE])
    expansions = {}
    for expansion in EXPANSIONS:
        dense._ann.expansion_search = expansion
        share, ms = found_share(dense, queries)
        expansions[str(expansion)] = {"found_share": share, "search_ms_p50": ms}
    dense._ann.expansion_search = EXPANSIONS[0]
    rounds = []
    added = SIZE
    for _ in range(ROUNDS):
        live = np.flatnonzero(dense._alive[: len(dense)])
        for slot in RNG.choice(live, CHURN, replace=False).tolist():
            dense.remove(slot)
        dense = dense.compacted(np.flatnonzero(dense._alive[: len(dense)]))
        kept = found_share(dense, queries)
        anew = found_share(graph_of(dense.vectors(np.arange(len(dense)))), queries)
        dense.add(len(dense), corpus[added : added + CHURN])
        added += CHURN
        refilled = found_share(dense, queries)
        refilled_anew = found_share(graph_of(dense.vectors(np.arange(len(dense)))), queries)
        rounds.append(
            {
                "compacted_graph_kept": kept[0],
                "compacted_graph_built_anew": anew[0],
                "then_added_graph_kept": refilled[0],
                "then_added_graph_built_anew": refilled_anew[0],
            }
        )
    results = {
        "vectors": SIZE,
        "queries": QUERIES,
        "top": TOP,
        "share_of_the_exact_top_found_by_expansion": expansions,
        "rounds_of_30_percent_removed_then_added": rounds,
    }
    print(results)
    write_results("graph", results)


if __name__ == "__main__":
    main()
