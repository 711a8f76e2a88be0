"""Two servers on one PostgreSQL database: a search on one after a burst written on the other.

A reader `Vault` holds the index of a user with `HISTORY` turns (their vectors stored). Each of
`BURSTS` times, a writer `Vault` on the same database appends `BURST` turns for that user, and
the reader searches (timed) `PAUSE` later. With the reader's warming on, the writer's events,
relayed over PostgreSQL, have the reader top the index up in the background beforehand
(`Recall.written_elsewhere`); with it off (the baseline, in alternating rounds), the search
does that itself: it reads the new rows, opens them and loads the vectors the writer stored.

Both vaults run in this one process (on a scratch schema of `MEMVAULT_BENCH_POSTGRES_URL`,
default postgresql://postgres@127.0.0.1:5432/test), where two servers would be two processes
or machines: the writer's own top-up shares the CPU with the reader here, before the pause ends.

Run: `python -m benchmarks relay` (about two minutes on 2 cores).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_warm import QUERIES, chat_turns, sentence
from benchmarks.common import ratio, summary_ms, write_results
from memvault.config import Settings
from memvault.crypto import encode_key, generate_key
from memvault.retrieval.embed import MiniLMEmbedder, default_embedder
from memvault.store.postgres import temporary_schema
from memvault.vault import Vault

POSTGRES_URL = os.environ.get(
    "MEMVAULT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ROUNDS = 4
HISTORY = 1_000
BURSTS = 15
BURST = 5
PAUSE = 1.0  # seconds from a burst's write to the reader's search: past `REMOTE_QUIET`
USER = "ann"


def _run(
    folder: Path, url: str, key: str, embedder: MiniLMEmbedder, *, warm: bool, seed: int
) -> list[float]:
    rng = random.Random(seed)

    def server(name: str, **overrides: Any) -> Vault:
        settings = Settings(data=folder / name, database_url=url, master_key=key, **overrides)
        return Vault(settings=settings, embedder=embedder)

    with server("writer") as writer, server("reader", warm_indexes=warm) as reader:
        for first in range(0, HISTORY, 100):
            writer.add_turns(USER, f"old{first}", chat_turns(rng, 100))
        assert writer.recall.warmer is not None
        writer.recall.warmer.settle()
        reader.search(USER, QUERIES[0])  # the index built, as on a server in use
        timed = []
        for _ in range(BURSTS):
            writer.add_turns(USER, "today", chat_turns(rng, BURST))
            written = time.perf_counter()
            time.sleep(max(0.0, written + PAUSE - time.perf_counter()))
            started = time.perf_counter()
            reader.search(USER, sentence(rng))
            timed.append(time.perf_counter() - started)
    return timed


def main() -> None:
    embedder = default_embedder()
    embedder.embed_query("warm the query model up")
    key = encode_key(generate_key())
    searches: dict[str, list[float]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="memvault-bench-relay-") as root:
        for round_ in range(ROUNDS):
            for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
                with temporary_schema(POSTGRES_URL, "bench") as url:
                    folder = Path(root) / f"{round_}-{mode}"
                    searches[mode].extend(
                        _run(folder, url, key, embedder, warm=mode == "on", seed=round_)
                    )
                print(f"round {round_ + 1} {mode}: done")
    summaries = {mode: summary_ms(values) for mode, values in searches.items()}
    results: dict[str, Any] = {
        "history_turns": HISTORY,
        "bursts": BURSTS * ROUNDS,
        "turns_a_burst": BURST,
        "search_after_seconds": PAUSE,
        "reader_search_warming": summaries,
        "reader_search_p50_on_over_off": ratio(summaries["on"], summaries["off"], "p50_ms"),
        "reader_search_p95_on_over_off": ratio(summaries["on"], summaries["off"], "p95_ms"),
    }
    write_results("relay", results)
    print(results)


if __name__ == "__main__":
    main()
