"""Warming when the index cache is full: one user searches while others only write.

The cache has room for the reader's index and half of another. Each of `BURSTS` rounds, one of
`WRITERS` users (each with `HISTORY` turns, their vectors stored) writes `BURST` turns; then,
with warming on, the background is let finish (timed: the warmer's work for the burst), and
the reader searches (timed) `PAUSE` after the write. The same with warming off is the baseline,
in alternating rounds.

Both modes search after the same pause because a search after a pause is slower than one
right after other work, whatever the machine does meanwhile: the query's embedding alone takes
2.3 to 2.6 ms back to back and 3.2 to 3.9 ms after 10 to 300 ms of sleep. Searching as soon as
the warmer settled, and right after the write with warming off, charged that to the warmer: off
with a 100 ms sleep before each search was 1.25x slower than off without, and slower than on.

Past the cache's budget the warmer stores the new rows' vectors and builds no index: its work
follows the writes, not the writers' histories, and it never pushes the reader's index out.
Building a writer's whole index after each burst instead would decrypt its history each time
and, the cache being full, evict an index, the reader's among them.

Run: `python -m benchmarks warm_full` (about two minutes on 2 cores).
"""

from __future__ import annotations

import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_warm import QUERIES, chat_turns, open_vault, sentence
from benchmarks.common import ratio, summary_ms, write_results
from memvault.retrieval.embed import MiniLMEmbedder, default_embedder

ROUNDS = 3
WRITERS = 4
HISTORY = 1_000
BURSTS = 24
BURST = 5
PAUSE = 0.3  # seconds from a burst's write to the reader's search: past the warmer's work
READER = "reader"


def _prepared(folder: Path, embedder: MiniLMEmbedder) -> None:
    """Every user's history written and its vectors stored, once for all rounds."""
    rng = random.Random(0)
    with open_vault(folder, embedder, warm=True) as vault:
        for user_id in [READER] + [f"writer-{n}" for n in range(WRITERS)]:
            for first in range(0, HISTORY, 100):
                vault.add_turns(user_id, f"old{first}", chat_turns(rng, 100))
        assert vault.recall.warmer is not None
        vault.recall.warmer.settle()


def _run(folder: Path, embedder: MiniLMEmbedder, warm: bool, seed: int) -> dict[str, list[float]]:
    rng = random.Random(seed)
    timed: dict[str, list[float]] = {"settle": [], "search": []}
    with open_vault(folder, embedder, warm) as vault:
        cache = vault.recall.cache
        vault.search(READER, QUERIES[0])
        cache.max_bytes = int(1.5 * cache.nbytes())  # the reader's index and half another
        for n in range(BURSTS):
            vault.add_turns(f"writer-{n % WRITERS}", "today", chat_turns(rng, BURST))
            written = time.perf_counter()
            if vault.recall.warmer is not None:
                vault.recall.warmer.settle()
                timed["settle"].append(time.perf_counter() - written)
            time.sleep(max(0.0, written + PAUSE - time.perf_counter()))
            started = time.perf_counter()
            vault.search(READER, sentence(rng))
            timed["search"].append(time.perf_counter() - started)
    return timed


def main() -> None:
    embedder = default_embedder()
    embedder.embed_query("warm the query model up")
    root = Path(tempfile.mkdtemp(prefix="memvault-bench-warm-full-"))
    try:
        _prepared(root / "prepared", embedder)
        runs: dict[str, dict[str, list[float]]] = {
            mode: {"settle": [], "search": []} for mode in ("off", "on")
        }
        for round_ in range(ROUNDS):
            for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                copy = root / f"{round_}-{mode}"
                shutil.copytree(root / "prepared", copy)
                for key, values in _run(copy, embedder, mode == "on", seed=round_).items():
                    runs[mode][key].extend(values)
                shutil.rmtree(copy)
                print(f"round {round_ + 1} {mode}: done")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    searches = {mode: summary_ms(timed["search"]) for mode, timed in runs.items()}
    settles = runs["on"]["settle"]
    results: dict[str, Any] = {
        "writers": WRITERS,
        "history_turns": HISTORY,
        "bursts": BURSTS * ROUNDS,
        "turns_a_burst": BURST,
        "search_after_seconds": PAUSE,
        "cache": "room for the reader's index and half another",
        "reader_search": searches,
        "reader_search_p50_on_over_off": ratio(searches["on"], searches["off"], "p50_ms"),
        "reader_search_p95_on_over_off": ratio(searches["on"], searches["off"], "p95_ms"),
        "warmer_after_a_burst": summary_ms(settles),
        "warmer_after_a_burst_median_ms": round(statistics.median(settles) * 1000, 2),
    }
    write_results("warm_full", results)
    print(results)


if __name__ == "__main__":
    main()
