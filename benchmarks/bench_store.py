"""Append cost of the encrypted store against raw sqlite3 inserts of the same rows.

Both sides write to real files with the same pragmas (WAL; synchronous FULL, then NORMAL), in
interleaved rounds so that machine noise hits both alike; figures are medians over rounds and the
ratios compare the two sides within the same round.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import summary_ms, write_results
from memvault.config import Settings
from memvault.model import format_ts, new_id, utcnow
from memvault.vault import Vault

ROUNDS = 3
SINGLE = 400
BATCH = 1000
BATCHES = 8
CONTENT = "I'd like to book a table for four on Friday at seven, somewhere quiet near the river."


def _turn(i: int) -> dict[str, Any]:
    return {"role": "user" if i % 2 else "assistant", "content": f"{CONTENT} #{i}",
            "speaker": "Sam", "metadata": {"client": "bench", "n": i}}  # fmt: skip


class RawSqlite:
    """The baseline: plaintext rows into a table shaped like `turns`, nothing else."""

    def __init__(self, path: Path, synchronous: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute(f"PRAGMA synchronous = {synchronous}")
        self.conn.execute(
            "CREATE TABLE turns (user_id TEXT, id TEXT, session_id TEXT, seq INTEGER, role TEXT,"
            " speaker TEXT, content TEXT, metadata TEXT, created_at TEXT,"
            " PRIMARY KEY (user_id, id), UNIQUE (user_id, session_id, seq))"
        )
        self.conn.execute("CREATE INDEX turns_by_time ON turns (user_id, created_at)")
        self.seq = 0

    def append(self, session: str, turns: list[dict[str, Any]]) -> None:
        rows = []
        for t in turns:
            self.seq += 1
            rows.append(("u", new_id(), session, self.seq, t["role"], t["speaker"], t["content"],
                         json.dumps(t["metadata"]), format_ts(utcnow())))  # fmt: skip
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany("INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def _measure(append: Callable[[str, list[dict[str, Any]]], object]) -> dict[str, float]:
    latencies = []
    for i in range(SINGLE):
        start = time.perf_counter()
        append("single", [_turn(i)])
        latencies.append(time.perf_counter() - start)
    batches = [[_turn(b * BATCH + i) for i in range(BATCH)] for b in range(BATCHES)]
    start = time.perf_counter()
    for batch in batches:
        append("batched", batch)
    batched_seconds = time.perf_counter() - start
    return {
        **summary_ms(latencies),
        "single_turns_per_s": round(SINGLE / sum(latencies), 1),
        "batched_turns_per_s": round(BATCH * BATCHES / batched_seconds, 1),
    }


def _round(synchronous: str, folder: Path) -> dict[str, dict[str, float]]:
    settings = Settings(data=folder / "vault", sqlite_synchronous=synchronous)
    with Vault(settings=settings) as vault:
        ours = _measure(lambda session, turns: vault.add_turns("u", session, turns))
    raw = RawSqlite(folder / "raw.db", synchronous)
    try:
        baseline = _measure(raw.append)
    finally:
        raw.close()
    return {"memvault": ours, "raw_sqlite3": baseline}


def _median(rounds: list[dict[str, dict[str, float]]], side: str) -> dict[str, float]:
    keys = rounds[0][side]
    return {k: round(statistics.median(r[side][k] for r in rounds), 4) for k in keys}


def main() -> None:
    results: dict[str, Any] = {"rounds": ROUNDS, "single_appends": SINGLE,
                               "batched": f"{BATCHES} x {BATCH}"}  # fmt: skip
    for synchronous in ("FULL", "NORMAL"):
        rounds = []
        for _ in range(ROUNDS):
            with tempfile.TemporaryDirectory() as folder:
                rounds.append(_round(synchronous, Path(folder)))
        ours, raw = _median(rounds, "memvault"), _median(rounds, "raw_sqlite3")
        ratios = {
            "p50_latency_x_raw": statistics.median(
                r["memvault"]["p50_ms"] / r["raw_sqlite3"]["p50_ms"] for r in rounds
            ),
            "batched_throughput_raw_x_ours": statistics.median(
                r["raw_sqlite3"]["batched_turns_per_s"] / r["memvault"]["batched_turns_per_s"]
                for r in rounds
            ),
        }
        results[f"synchronous_{synchronous}"] = {
            "memvault": ours, "raw_sqlite3": raw,
            "ratios": {k: round(v, 2) for k, v in ratios.items()},
        }  # fmt: skip
        print(f"synchronous={synchronous}:", json.dumps(results[f"synchronous_{synchronous}"]))
    write_results("store", results)


if __name__ == "__main__":
    main()
