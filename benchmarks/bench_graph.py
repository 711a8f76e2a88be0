"""How much of the exact top 50 the HNSW graph finds, and how a graph kept through compactions
wears, on MiniLM vectors.

Compaction keeps the graph, its keys renamed (`DenseIndex.compacted`), rather than building it
again; the removed vectors' places stay in it until new ones fill them. This measures the share
of the exact top 50 (by cosine over the live vectors) that the graph returns: for a graph built
on the corpus, then through rounds of 30% removed, compacted and as many added, each against a
graph built anew on the same live vectors in the same run, the kept one searched as a new one is
and as widely as a kept one is (`KEPT_GRAPH_EXPANSION`); and at wider searches
(`expansion_search`) on the graph first built. The corpus is the
search benchmark's texts embedded by MiniLM (random vectors, which the search benchmark uses for
speed, are a case no graph handles well: about 0.1 of their top 50 is found).

Run: `python -m benchmarks graph` (about 3 minutes on 2 cores, most of it embedding).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from benchmarks.bench_search import RNG, sentences
from benchmarks.common import write_results
from memvault.retrieval.dense import KEPT_GRAPH_EXPANSION, DenseIndex, Vectors
from memvault.retrieval.embed import default_embedder

SIZE = 10_000
CHURN = 3_000  # removed, then added, each round
ROUNDS = 3
QUERIES = 200
TOP = 50
DEFAULT = 64  # usearch's, at which a graph built anew is searched
EXPANSIONS = (DEFAULT, KEPT_GRAPH_EXPANSION, 150, 200)


def found_share(dense: DenseIndex, queries: Vectors, expansion: int) -> dict[str, float]:
    """The mean share of each query's exact top `TOP` the graph returns searched at `expansion`,
    and the graph's median search time in ms."""
    dense._ann.expansion_search = expansion
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
    share, ms = statistics.fmean(shares), statistics.median(times) * 1000
    return {"found_share": round(share, 3), "search_ms_p50": round(ms, 3)}


def compared(kept: DenseIndex, queries: Vectors) -> dict[str, dict[str, float]]:
    """The kept graph searched as a new one is and as a kept one is, against a graph built anew
    on the same vectors."""
    anew = graph_of(kept.vectors(np.arange(len(kept))))
    return {
        f"kept_searched_at_{DEFAULT}": found_share(kept, queries, DEFAULT),
        f"kept_searched_at_{KEPT_GRAPH_EXPANSION}": found_share(
            kept, queries, KEPT_GRAPH_EXPANSION
        ),
        f"built_anew_searched_at_{DEFAULT}": found_share(anew, queries, DEFAULT),
    }


def graph_of(vectors: Vectors) -> DenseIndex:
    dense = DenseIndex(vectors.shape[1], ann_threshold=1)
    dense.add(0, vectors)
    return dense


def main() -> None:
    vectors = default_embedder().embed(sentences(SIZE + ROUNDS * CHURN + QUERIES))
    queries, corpus = vectors[-QUERIES:], vectors[:-QUERIES]
    dense = graph_of(corpus[:SIZE])
    expansions = {str(e): found_share(dense, queries, e) for e in EXPANSIONS}
    rounds = []
    added = SIZE
    for _ in range(ROUNDS):
        live = np.flatnonzero(dense._alive[: len(dense)])
        for slot in RNG.choice(live, CHURN, replace=False).tolist():
            dense.remove(slot)
        dense = dense.compacted(np.flatnonzero(dense._alive[: len(dense)]))
        compacted = compared(dense, queries)
        dense.add(len(dense), corpus[added : added + CHURN])
        added += CHURN
        rounds.append({"compacted": compacted, "then_as_many_added": compared(dense, queries)})
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
