"""What the background top-up after writes (`warm_indexes`) saves a search, and costs a writer,
against leaving all of it to the search (`warm_indexes=false`, how every search worked before),
in the same run.

Three workloads, all with the default MiniLM embedder (it is the embedding a search would wait
for) on SQLite:

- `import`: 3,000 turns written in 30 calls of 100, then the first search. Timed: the writes,
  the first search right after them (the worst case for warming: nothing has caught up yet),
  and, warming on, how long the background takes to catch up and the first search after it.
- `chat`: a user with 1,000 turns and a warm index chats: each exchange writes the user's turn,
  assembles a context for it, waits 50 ms (the LLM's answer), writes the reply and waits 300 ms
  (the user reading it and typing the next message, much shortened). Timed: each context.
- `appends`: 400 turns written one call each, back to back (a logger, or a replay). Timed: each
  write, which the background would slow if it embedded while they come (it waits for a
  pause of 50 ms, or a second).

Rounds alternate off and on; results are medians over rounds (`import`) or percentiles over
every call of every round (`chat`, `appends`), with the ratio on / off.

Run: `python -m benchmarks warm` (about 6 minutes on 2 cores).
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ratio, summary_ms, write_results
from memvault.config import Settings
from memvault.retrieval.embed import MiniLMEmbedder, default_embedder
from memvault.vault import Vault

ROUNDS = 3
IMPORT_CALLS = 30
TURNS_A_CALL = 100
CHAT_HISTORY = 1_000
EXCHANGES = 60
THINK_SECONDS = 0.05
READ_SECONDS = 0.3
APPENDS = 400
WORDS = (
    "garden", "violin", "river", "tomato", "heron", "invoice", "meeting", "friday", "train",
    "holiday", "passport", "doctor", "recipe", "birthday", "piano", "football", "museum",
    "budget", "laptop", "coffee", "sister", "camping", "painting", "school", "adopted", "puppy",
)  # fmt: skip
QUERIES = ("what did my sister say about the puppy", "when is the doctor", "piano and violin")


def sentence(rng: random.Random) -> str:
    """A turn of 12 to 30 words: about the length of a chat message."""
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(12, 30))) + "."


def chat_turns(rng: random.Random, count: int) -> list[dict[str, Any]]:
    return [{"role": ("user", "assistant")[n % 2], "content": sentence(rng)} for n in range(count)]


def open_vault(folder: Path, embedder: MiniLMEmbedder, warm: bool) -> Vault:
    return Vault(settings=Settings(data=folder, warm_indexes=warm), embedder=embedder)


def _import(embedder: MiniLMEmbedder, warm: bool, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    calls = [chat_turns(rng, TURNS_A_CALL) for _ in range(IMPORT_CALLS)]
    timed: dict[str, float] = {}
    for after_catching_up in (False, True) if warm else (False,):
        with (
            tempfile.TemporaryDirectory() as folder,
            open_vault(Path(folder), embedder, warm) as vault,
        ):
            started = time.perf_counter()
            for n, turns in enumerate(calls):
                vault.add_turns("ann", f"s{n}", turns)
            if not after_catching_up:
                timed["writes_s"] = time.perf_counter() - started
            else:
                assert vault.recall.warmer is not None
                caught_up = time.perf_counter()
                vault.recall.warmer.settle()
                timed["catch_up_after_writes_s"] = time.perf_counter() - caught_up
            started = time.perf_counter()
            vault.search("ann", QUERIES[0])
            key = "first_search_after_catch_up_s" if after_catching_up else "first_search_s"
            timed[key] = time.perf_counter() - started
    return timed


def _chat(embedder: MiniLMEmbedder, warm: bool, seed: int) -> list[float]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder, open_vault(Path(folder), embedder, warm) as vault:
        for n in range(0, CHAT_HISTORY, TURNS_A_CALL):
            vault.add_turns("ann", f"old{n}", chat_turns(rng, TURNS_A_CALL))
        vault.search("ann", QUERIES[1])  # the index built and current, as in a running chat
        timings = []
        for n in range(EXCHANGES):
            vault.add_turn("ann", "today", "user", sentence(rng))
            started = time.perf_counter()
            vault.context("ann", QUERIES[n % len(QUERIES)], session_id="today")
            timings.append(time.perf_counter() - started)
            time.sleep(THINK_SECONDS)
            vault.add_turn("ann", "today", "assistant", sentence(rng))
            time.sleep(READ_SECONDS)
    return timings


def _appends(embedder: MiniLMEmbedder, warm: bool, seed: int) -> list[float]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as folder, open_vault(Path(folder), embedder, warm) as vault:
        vault.add_turn("ann", "log", "user", sentence(rng))  # the database made, the user too
        timings = []
        for _ in range(APPENDS):
            text = sentence(rng)
            started = time.perf_counter()
            vault.add_turn("ann", "log", "user", text)
            timings.append(time.perf_counter() - started)
    return timings


def main() -> None:
    embedder = default_embedder()
    embedder.embed_query("warm the query model up")
    imports: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    chats: dict[str, list[float]] = {"off": [], "on": []}
    appends: dict[str, list[float]] = {"off": [], "on": []}
    for round_ in range(ROUNDS):
        for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
            imports[mode].append(_import(embedder, mode == "on", seed=round_))
            chats[mode].extend(_chat(embedder, mode == "on", seed=round_))
            appends[mode].extend(_appends(embedder, mode == "on", seed=round_))
            print(f"round {round_ + 1} {mode}: {imports[mode][-1]}")
    medians = {
        mode: {key: round(statistics.median(r[key] for r in runs), 4) for key in runs[0]}
        for mode, runs in imports.items()
    }
    contexts = {mode: summary_ms(timings) for mode, timings in chats.items()}
    writes = {mode: summary_ms(timings) for mode, timings in appends.items()}
    results = {
        "import": {
            "turns": IMPORT_CALLS * TURNS_A_CALL,
            "rounds": ROUNDS,
            "medians": medians,
            "first_search_on_over_off": round(
                medians["on"]["first_search_s"] / medians["off"]["first_search_s"], 3
            ),
            "first_search_after_catch_up_over_off": round(
                medians["on"]["first_search_after_catch_up_s"] / medians["off"]["first_search_s"],
                4,
            ),
            "writes_on_over_off": round(medians["on"]["writes_s"] / medians["off"]["writes_s"], 3),
        },
        "chat": {
            "history_turns": CHAT_HISTORY,
            "exchanges": EXCHANGES * ROUNDS,
            "think_seconds": THINK_SECONDS,
            "read_seconds": READ_SECONDS,
            "context": contexts,
            "context_p50_on_over_off": ratio(contexts["on"], contexts["off"], "p50_ms"),
        },
        "appends": {
            "turns": APPENDS * ROUNDS,
            "add_turn": writes,
            "p50_on_over_off": ratio(writes["on"], writes["off"], "p50_ms"),
            "p99_on_over_off": ratio(writes["on"], writes["off"], "p99_ms"),
        },
    }
    write_results("warm", results)
    print(results)


if __name__ == "__main__":
    main()
