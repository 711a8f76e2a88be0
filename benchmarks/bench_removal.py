"""Turns removed from sessions, against indexing again the turns those sessions keep.

A turn's lexical document holds its neighbours' words, and its session's document all the
session's words, so a removal must change the turns around it and the session. `UserIndex.remove`
changes them in place (`_close_gaps`); before, it indexed every turn the session kept again,
which the baseline measures in the same run: the kept turns added to an empty index with their
vectors. Two cases, on exact indexes (no HNSW graph: the graph's part is the same either way):

- one turn out of the middle of a session of 20,000 turns, five times (median);
- one turn out of each of 5,000 sessions of 20 at 100k items, as `Vault.clear(channel=...)` does
  to sessions that mix channels.

Run: `python -m benchmarks removal` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial

from benchmarks.bench_search import items, random_vectors
from benchmarks.common import write_results
from memvault.retrieval.embed import HashingEmbedder
from memvault.retrieval.index import UserIndex
from memvault.retrieval.items import Item

EXACT = 1 << 40  # an ANN threshold no index here reaches
LONG_SESSION = 20_000
SESSIONS = 5_000


def indexed(turns: list[Item]) -> UserIndex:
    index = UserIndex(HashingEmbedder(384), ann_threshold=EXACT)
    index.add(turns, random_vectors(len(turns)))
    return index


def seconds(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def one_long_session() -> dict[str, float]:
    turns = [replace(t, session_id="long", seq=n + 1) for n, t in enumerate(items(LONG_SESSION))]
    index = indexed(turns)
    removals = [seconds(partial(index.remove, [("turn", f"t{5_000 + 997 * n}")])) for n in range(5)]
    kept = turns[1:]  # as many as the session keeps after one removal
    baseline = [seconds(lambda: indexed(kept)) for _ in range(3)]
    return {
        "removal_ms_median": round(statistics.median(removals) * 1000, 2),
        "indexing_the_kept_turns_again_ms_median": round(statistics.median(baseline) * 1000, 1),
        "ratio": round(statistics.median(baseline) / statistics.median(removals), 1),
    }


def one_turn_from_each_session() -> dict[str, float]:
    turns = items(SESSIONS * 20)  # sessions of 20
    index = indexed(turns)
    gone = {f"t{s * 20 + 7}" for s in range(SESSIONS)}
    removal = seconds(lambda: index.remove([("turn", turn_id) for turn_id in gone]))
    kept = [turn for turn in turns if turn.id not in gone]
    baseline = seconds(lambda: indexed(kept))
    return {
        "removal_s": round(removal, 2),
        "indexing_the_kept_turns_again_s": round(baseline, 2),
        "ratio": round(baseline / removal, 1),
    }


def main() -> None:
    load_before = [round(x, 2) for x in os.getloadavg()]
    results = {
        "one_turn_out_of_a_session_of_20000": one_long_session(),
        "one_turn_out_of_each_of_5000_sessions_at_100k_items": one_turn_from_each_session(),
        "load_average": {"start": load_before, "end": [round(x, 2) for x in os.getloadavg()]},
    }
    print(results)
    write_results("removal", results)


if __name__ == "__main__":
    main()
