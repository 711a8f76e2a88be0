"""Compaction of a user's index at 100k items against building the same index from scratch.

Once removed slots pass a quarter of an index, the top-up that finds it compacts it: every part
of the index carried over to the live items' new slots, the lexical postings renumbered and the
HNSW graph's keys renamed (`UserIndex.compacted`). The baseline in the same run is what
compaction first did, a build of the live items with their vectors, graph included. The corpus
is the search benchmark's (synthetic turns in sessions of 20, random unit vectors); 30% of it is
removed, whole sessions, before each compaction. The baseline is given the live items and
their vectors read out beforehand (compaction moves the vectors out of the index it compacts).
Both are timed three times, the first of them alternating; the results are medians, with the
search latency of each index (its own share: hashing query vectors) to show what the kept graph
costs a search.

The indexes build their graphs inline here. In a server (`graph_builds`, the default) a
compacted index also asks for a new graph in another process, which replaces the kept one when
it comes; that build is the search benchmark's to measure.

Run: `python -m benchmarks compaction` (about 8 minutes on 2 cores, nearly all of it the builds).
"""

from __future__ import annotations

import os
import statistics
import time

from benchmarks.bench_search import build, latencies, queries
from benchmarks.common import summary_ms, write_results
from memvault.retrieval.embed import HashingEmbedder, Vectors
from memvault.retrieval.fusion import Weights
from memvault.retrieval.index import UserIndex
from memvault.retrieval.items import Item

SIZE = 100_000
REMOVED = 30_000  # the first 1,500 sessions, whole
ROUNDS = 3


def rebuilt(index: UserIndex, items: list[Item], vectors: Vectors) -> UserIndex:
    """The baseline: a new index of the live items and their vectors, graph built anew."""
    fresh = UserIndex(index.embedder)
    fresh.add(items, vectors)
    return fresh


def main() -> None:
    texts = queries()[:100]
    times: dict[str, list[float]] = {"compaction": [], "build_of_the_live_items": []}
    searches: dict[str, list[float]] = {name: [] for name in times}
    load_before = [round(x, 2) for x in os.getloadavg()]
    ways = ["compaction", "build_of_the_live_items"]
    for _ in range(ROUNDS):
        built = build(SIZE, graph_builds=False)  # compaction itself; no graph replaces its own
        recall, index = built.recall, built.index
        index.remove([("turn", f"t{n}") for n in range(REMOVED)])
        live = list(range(REMOVED, SIZE))  # the removed ones are the first slots
        items, vectors = index.items(live), index.vectors(live)  # before compaction moves them
        for name in ways:
            started = time.perf_counter()
            made = index.compacted() if name == "compaction" else rebuilt(index, items, vectors)
            times[name].append(time.perf_counter() - started)
            model, made.embedder = made.embedder, HashingEmbedder(made.embedder.dim)
            searches[name] += latencies(made, texts, Weights())  # the index's share alone
            made.embedder = model
            del made
        ways.reverse()  # the other one first next time
        recall.close()
        del recall, index, built
    results = {
        "items": SIZE,
        "removed": REMOVED,
        "rounds": ROUNDS,
        "seconds_median": {name: round(statistics.median(v), 2) for name, v in times.items()},
        "seconds_each": {name: [round(s, 2) for s in v] for name, v in times.items()},
        "search_after": {name: summary_ms(v) for name, v in searches.items()},
        "load_average": {"start": load_before, "end": [round(x, 2) for x in os.getloadavg()]},
    }
    print(results)
    write_results("compaction", results)


if __name__ == "__main__":
    main()
