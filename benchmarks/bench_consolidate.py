"""What a consolidation run costs, on SQLite and on PostgreSQL, and what it costs a writer.

One user with a realistic history: `SESSIONS` sessions of `TURNS` chat turns, idle for days
(about one user turn in six states something of the user amid ordinary chat text: "I live in
...", "I just moved to ...", "my favourite ... is ...", "I work at ..."), and `MEMORIES`
memories, written over three years: exact duplicates (100 texts written three times, in other
case and punctuation), working memories 3 to 60 days old (a tenth important enough to be
promoted, a few recalled three times, the rest never recalled), long-term ones from a day to
three years old, and facts of one slot (an employer) written every five days. Timed, on a fresh
copy of that user, each run as of the same moment:

- `first`: the first run (every session summarised and read for facts, the memories merged,
  superseded, promoted, archived);
- `idle`: a second run right after: nothing to do, what the background check costs;
- `incremental`: a run after one more session of `TURNS` turns was written (idle an hour);
- `first` over the sessions alone and over the memories alone, on copies that hold only
  those: a session's and a memory's share of a first run.

On another fresh copy, a writer appends turns one at a time (`PACE` apart) to a session of the
same user while the first run goes on, and `BASELINE_APPENDS` the same way with no run, on the
same `Vault` as a server would share it between its upkeep thread and its requests; the ratio
of their median append latencies is what a run costs the user's writes. Rounds alternate the
order of the copies, and of the baseline and the run.

The hashing embedder: consolidation embeds nothing (each run counts the embedder's calls, and
the results say how many there were), and index warming is off, so the times are the run's own.
On a server, the warmer then tops up the user's index for the memories the run added or changed.

PostgreSQL runs in a scratch schema of `MEMVAULT_BENCH_POSTGRES_URL`
(default postgresql://postgres@127.0.0.1:5432/test), dropped afterwards; its copies are written
afresh each time, SQLite's are copies of one data folder.

Run: `python -m benchmarks consolidate` (about two minutes on 2 cores).
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchmarks.bench_backends import POSTGRES_URL
from benchmarks.bench_warm import sentence
from benchmarks.common import ratio, summary_ms, write_results
from memvault.config import Settings
from memvault.crypto import encode_key, generate_key
from memvault.model import format_ts
from memvault.retrieval.embed import HashingEmbedder, Vectors
from memvault.store.postgres import temporary_schema
from memvault.vault import Vault

ROUNDS = 5
SESSIONS = 100
TURNS = 20
MEMORIES = 1_000
PACE = 0.005  # seconds between a writer's appends
BASELINE_APPENDS = 200
USER = "ann"
# what each copy holds: (sessions, memories)
HISTORIES = {"full": (True, True), "sessions_only": (True, False), "memories_only": (False, True)}
CITIES = ("Boston", "Denver", "Lisbon", "Austin", "Leeds", "Porto", "Seattle", "Lyon")
EMPLOYERS = ("Acme", "Initech", "Globex", "Umbrella", "Hooli")
COLOURS = ("green", "blue", "red", "yellow")
HOBBIES = ("hiking", "chess", "baking", "swimming")
FOODS = ("peanuts", "shellfish", "sushi", "pasta")
STATEMENTS = (
    "I live in {city}.", "I just moved to {city}.", "My favourite colour is {colour}.",
    "I work at {employer}.", "I love {hobby}.", "I'm allergic to {food}.",
    "My favourite food is {food}.",
)  # fmt: skip


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, counting the texts it is asked to embed."""

    def __init__(self) -> None:
        super().__init__()
        self.texts = 0

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.texts += len(texts)
        return super().embed(texts)

    def embed_query(self, text: str) -> Vectors:
        self.texts += 1
        return super().embed_query(text)


def _statement(rng: random.Random) -> str:
    return rng.choice(STATEMENTS).format(
        city=rng.choice(CITIES), colour=rng.choice(COLOURS), employer=rng.choice(EMPLOYERS),
        hobby=rng.choice(HOBBIES), food=rng.choice(FOODS),
    )  # fmt: skip


def session_turns(
    rng: random.Random, started: datetime, statement: str | None = None
) -> list[dict[str, Any]]:
    """A chat of `TURNS` turns a minute apart; some user turns state something of the user
    (`statement`, if given, in the second user turn)."""
    turns = []
    for n in range(TURNS):
        role = ("user", "assistant")[n % 2]
        content = sentence(rng)
        said = statement if n == 2 else None
        if said is None and role == "user" and rng.random() < 1 / 6:
            said = _statement(rng)
        if said is not None:
            content = f"{sentence(rng)} {said} {sentence(rng)}"
        turns.append(
            {"role": role, "content": content, "created_at": started + timedelta(minutes=n)}
        )
    return turns


def _memories(rng: random.Random, base: datetime) -> list[dict[str, Any]]:
    """`MEMORIES` memories to write, oldest first."""
    day = timedelta(days=1)
    found: list[dict[str, Any]] = []
    for n in range(100):  # 100 texts written three times each: 200 duplicates
        text = f"Ann's {rng.choice(HOBBIES)} club meets on the {n}th"
        ages = sorted((rng.uniform(1, 400) for _ in range(3)), reverse=True)
        for shown, age in zip((text, text.upper(), text + "."), ages, strict=True):
            found.append({"text": shown, "kind": "episodic", "created_at": base - age * day})
    for n in range(300):  # working memories, 3 to 60 days old; a tenth important
        found.append({"text": f"{sentence(rng)} ({n})", "kind": "episodic", "tier": "working",
                      "importance": 0.8 if n % 10 == 0 else 0.5,
                      "created_at": base - rng.uniform(3, 60) * day})  # fmt: skip
    for n in range(380):  # long-term, a day to three years old
        found.append({"text": f"{sentence(rng)} [{n}]", "kind": rng.choice(("episodic", "fact")),
                      "importance": rng.uniform(0.1, 0.9),
                      "created_at": base - rng.uniform(1, 1100) * day})  # fmt: skip
    employers = MEMORIES - len(found)
    for n in range(employers):  # a new employer every five days: only the last one stands
        found.append({"text": f"Ann works at {EMPLOYERS[n % len(EMPLOYERS)]} ({n})",
                      "kind": "fact", "category": "work", "metadata": {"slot": "employer"},
                      "created_at": base - (employers - n) * 5 * day})  # fmt: skip
    return sorted(found, key=lambda m: m["created_at"])


def write_history(vault: Vault, base: datetime, *, sessions: bool, memories: bool) -> None:
    """The user's sessions (idle for days) and memories, all written before `base`."""
    rng = random.Random(0)
    vault.put_user(USER, {"name": "Ann"})
    if sessions:
        for n in range(SESSIONS):
            started = base - timedelta(days=SESSIONS - n, hours=rng.uniform(0, 12))
            vault.add_turns(USER, f"s{n:03d}", session_turns(rng, started))
    if memories:
        written = [vault.add_memory(USER, **fields) for fields in _memories(rng, base)]
        recalled = [m.id for m in written if m.tier.value == "working"][::25]
        for _ in range(3):  # recalled three times: promoted
            vault.store.record_access(USER, recalled, format_ts(base))


def _open(settings: Settings, embedder: HashingEmbedder | None = None) -> Vault:
    return Vault(settings=settings, embedder=embedder or CountingEmbedder())


def _timed_runs(settings: Settings, base: datetime, *, first_only: bool) -> dict[str, Any]:
    """The first run over a fresh copy of the user; then a second, and one after a session."""
    embedder = CountingEmbedder()
    timed: dict[str, Any] = {}
    with _open(settings, embedder) as vault:
        for name in ("first",) if first_only else ("first", "idle", "incremental"):
            if name == "incremental":
                started = base - timedelta(hours=1)
                vault.add_turns(USER, "one-more", session_turns(
                    random.Random(1), started, "I just moved to Ghent."
                ))  # fmt: skip
            embedder.texts = 0
            begun = time.perf_counter()
            report = vault.consolidate(USER, now=base)
            timed[name] = {"seconds": time.perf_counter() - begun, "counts": report.counts,
                           "embedded_texts": embedder.texts}  # fmt: skip
    return timed


def _appends(vault: Vault, count: int | None, until: threading.Event | None) -> list[float]:
    """Latencies of appends of one turn, `PACE` apart: `count` of them, or until `until`."""
    rng = random.Random(2)
    latencies: list[float] = []
    while (count is None or len(latencies) < count) and not (until and until.is_set()):
        content = sentence(rng)
        begun = time.perf_counter()
        vault.add_turn(USER, "live", "user", content)
        latencies.append(time.perf_counter() - begun)
        time.sleep(PACE)
    return latencies


def _during_run(vault: Vault, base: datetime) -> tuple[list[float], float]:
    """A writer's append latencies while a run goes on, and the run's seconds."""
    done = threading.Event()
    during: list[float] = []
    writer = threading.Thread(target=lambda: during.extend(_appends(vault, None, done)))
    writer.start()
    begun = time.perf_counter()
    try:
        vault.consolidate(USER, now=base)
    finally:
        seconds = time.perf_counter() - begun
        done.set()
        writer.join()
    return during, seconds


def _writer(settings: Settings, base: datetime, baseline_first: bool) -> dict[str, Any]:
    """A writer's append latencies with no run and while the first run goes on."""
    found: dict[str, Any] = {}
    with _open(settings) as vault:
        _appends(vault, 20, None)  # the live session exists, the connections are warm
        for mode in ("none", "run") if baseline_first else ("run", "none"):
            if mode == "none":
                found["none"] = _appends(vault, BASELINE_APPENDS, None)
            else:
                found["run"], found["run_seconds"] = _during_run(vault, base)
    return found


class Copies:
    """Fresh copies of each history: SQLite's copied from a folder written once, PostgreSQL's
    written afresh in a scratch schema."""

    def __init__(self, root: Path, key: str, base: datetime) -> None:
        self.root, self.key, self.base = root, key, base
        self.made = 0
        for name, (sessions, memories) in HISTORIES.items():
            with _open(self._settings(root / "prepared" / name)) as vault:
                write_history(vault, base, sessions=sessions, memories=memories)

    def _settings(self, folder: Path, url: str | None = None) -> Settings:
        return Settings(data=folder, database_url=url, master_key=self.key, warm_indexes=False)

    @contextmanager
    def fresh(self, backend: str, history: str) -> Iterator[Settings]:
        self.made += 1
        folder = self.root / f"copy-{self.made}"
        try:
            if backend == "sqlite":
                shutil.copytree(self.root / "prepared" / history, folder)
                yield self._settings(folder)
            else:
                with temporary_schema(POSTGRES_URL, "bench") as url:
                    settings = self._settings(folder, url)
                    sessions, memories = HISTORIES[history]
                    with _open(settings) as vault:
                        write_history(vault, self.base, sessions=sessions, memories=memories)
                    yield settings
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _round(copies: Copies, backend: str, number: int) -> dict[str, Any]:
    """Every measurement of one backend once, in this round's order."""
    base = copies.base
    found: dict[str, Any] = {}
    steps = ["runs", "sessions_only", "memories_only", "writer"]
    for step in steps if number % 2 == 0 else steps[::-1]:
        history = step if step.endswith("_only") else "full"
        with copies.fresh(backend, history) as settings:
            if step == "runs":
                found.update(_timed_runs(settings, base, first_only=False))
            elif step == "writer":
                found["writer"] = _writer(settings, base, baseline_first=number % 2 == 0)
            else:
                found[step] = _timed_runs(settings, base, first_only=True)["first"]
    return found


def _median_seconds(rounds: list[dict[str, Any]], name: str) -> float:
    seconds: list[float] = [r[name]["seconds"] for r in rounds]
    return round(statistics.median(seconds), 4)


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of the runs' seconds, pooled percentiles of the appends, ratios."""
    seconds = {
        name: _median_seconds(rounds, name)
        for name in ("first", "idle", "incremental", "sessions_only", "memories_only")
    }
    none = [s for r in rounds for s in r["writer"]["none"]]
    during = [s for r in rounds for s in r["writer"]["run"]]
    appends = {"no_run": summary_ms(none), "during_first_run": summary_ms(during)}
    return {
        "seconds": seconds,
        "idle_over_first": round(seconds["idle"] / seconds["first"], 4),
        "incremental_over_first": round(seconds["incremental"] / seconds["first"], 4),
        "first_ms_a_session": round(seconds["sessions_only"] / SESSIONS * 1000, 3),
        "first_ms_a_memory": round(seconds["memories_only"] / MEMORIES * 1000, 3),
        "first_over_sum_of_parts": round(
            seconds["first"] / (seconds["sessions_only"] + seconds["memories_only"]), 3
        ),
        "idle_ms_a_memory_stored": round(
            seconds["idle"] / (MEMORIES + rounds[0]["first"]["counts"]["extracted"]) * 1000, 4
        ),
        "counts": {name: rounds[0][name]["counts"] for name in
                   ("first", "idle", "incremental", "sessions_only", "memories_only")},
        "texts_embedded_by_runs": max(
            r[name]["embedded_texts"] for r in rounds
            for name in ("first", "idle", "incremental", "sessions_only", "memories_only")
        ),
        "writer_appends": appends,
        "writer_append_p50_run_over_none":
            ratio(appends["during_first_run"], appends["no_run"], "p50_ms"),
        "writer_append_p95_run_over_none":
            ratio(appends["during_first_run"], appends["no_run"], "p95_ms"),
        "writer_appends_during_first_run": len(during),
        "first_run_seconds_beside_writer": round(
            statistics.median(r["writer"]["run_seconds"] for r in rounds), 4
        ),
    }  # fmt: skip


def main() -> None:
    key = encode_key(generate_key())
    base = datetime.now(UTC).replace(microsecond=0)
    runs: dict[str, list[dict[str, Any]]] = {"sqlite": [], "postgres": []}
    with tempfile.TemporaryDirectory(prefix="memvault-bench-consolidate-") as root:
        copies = Copies(Path(root), key, base)
        for number in range(ROUNDS):
            for backend in ("sqlite", "postgres") if number % 2 == 0 else ("postgres", "sqlite"):
                runs[backend].append(_round(copies, backend, number))
                first = runs[backend][-1]["first"]["seconds"]
                print(f"round {number + 1}/{ROUNDS} {backend}: first run {first:.2f} s")
    results: dict[str, Any] = {
        "load_average_at_end": os.getloadavg(),
        "embedder": "hashing",
        "index_warming": False,
        "rounds": ROUNDS,
        "history": {
            "sessions": SESSIONS,
            "turns_a_session": TURNS,
            "memories": MEMORIES,
            "incremental": f"one more session of {TURNS} turns",
        },
        "writer_pace_seconds": PACE,
        **{backend: _summary(rounds) for backend, rounds in runs.items()},
    }
    write_results("consolidate", results)
    print(results)


if __name__ == "__main__":
    main()
