"""SQLite against PostgreSQL in the same run, and one `memvault serve` against two.

In process (the library): appends/s with one writer and with 8 writer threads (one user each;
`python -m benchmarks.bench_backends appends` measures only these, and prints them);
search latency on a warm per-user index, then right after a write (the index tops up from the
change feed); and the first search in a fresh process, which builds the user's index from the
database, decrypting every row. Over HTTP: appends/s from 8 client threads against one server,
and spread over two servers sharing the database. Search uses the hashing embedder so the
numbers show the storage path, not the model (MiniLM adds 2-3 ms per query on either backend,
and embedding every turn on a cold build).

PostgreSQL runs in a scratch schema of `MEMVAULT_BENCH_POSTGRES_URL`
(default postgresql://postgres@127.0.0.1:5432/test), dropped afterwards.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import summary_ms, write_results
from memvault.config import Settings
from memvault.crypto import encode_key, generate_key
from memvault.retrieval.embed import HashingEmbedder
from memvault.store.postgres import temporary_schema
from memvault.vault import Vault

POSTGRES_URL = os.environ.get(
    "MEMVAULT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
ROUNDS = 3
SINGLE = 400
THREADS = 8
PER_THREAD = 100
CORPUS = 2000
QUERIES = 300
HTTP_PER_THREAD = 60
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
WORDS = (
    "garden", "violin", "river", "tomato", "heron", "invoice", "meeting", "friday", "train",
    "holiday", "passport", "doctor", "recipe", "birthday", "piano", "football", "museum",
    "budget", "laptop", "coffee",
)  # fmt: skip


def _text(i: int) -> str:
    picked = [WORDS[(i * k + k) % len(WORDS)] for k in (1, 3, 7, 11)]
    return f"note {i}: we talked about the {picked[0]}, the {picked[1]} and the {picked[2]}"


def _rate(count: int, work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return round(count / (time.perf_counter() - start), 1)


def _threads(target: Callable[[int], None], count: int) -> None:
    threads = [threading.Thread(target=target, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _appends(vault: Vault) -> dict[str, Any]:
    """Appends of one turn: one writer (latency), then 8 writer threads with a user each."""
    latencies = []
    for i in range(SINGLE):
        start = time.perf_counter()
        vault.add_turn("solo", "s", "user", _text(i))
        latencies.append(time.perf_counter() - start)

    def writer(n: int) -> None:
        for i in range(PER_THREAD):
            vault.add_turn(f"writer-{n}", "s", "user", _text(i))

    parallel = _rate(THREADS * PER_THREAD, lambda: _threads(writer, THREADS))
    one_writer = {**summary_ms(latencies), "turns_per_s": round(SINGLE / sum(latencies), 1)}
    return {"append_one_writer": one_writer, f"append_{THREADS}_threads_turns_per_s": parallel}


def _library(settings: Settings) -> dict[str, Any]:
    with Vault(settings=settings, embedder=HashingEmbedder()) as vault:
        appended = _appends(vault)
        vault.add_turns(
            "reader", "s", [{"role": "user", "content": _text(i)} for i in range(CORPUS)]
        )
        vault.search("reader", "warm up the index")
        warm = []
        for i in range(QUERIES):
            start = time.perf_counter()
            vault.search("reader", f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]}")
            warm.append(time.perf_counter() - start)
        after_write = []
        for i in range(QUERIES // 3):
            vault.add_turn("reader", "s", "user", _text(CORPUS + i))
            start = time.perf_counter()
            vault.search("reader", WORDS[i % len(WORDS)])
            after_write.append(time.perf_counter() - start)
    with Vault(settings=settings, embedder=HashingEmbedder()) as fresh:  # another process, say
        start = time.perf_counter()
        fresh.search("reader", "garden")
        cold = time.perf_counter() - start
    return {
        **appended,
        f"search_warm_{CORPUS}_turns": summary_ms(warm),
        "search_right_after_a_write": summary_ms(after_write),
        f"search_cold_index_build_{CORPUS + QUERIES // 3}_turns_ms": round(cold * 1000, 1),
    }  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def _server(data: Path, env: dict[str, str]) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "memvault.cli", "serve", "--port", str(port), "--data", str(data)],
        env={**os.environ, "MEMVAULT_RATE_LIMIT_PER_MINUTE": "0", "MEMVAULT_ADMIN_KEY": ADMIN_KEY,
             **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("memvault serve did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _http_appends(urls: list[str]) -> dict[str, Any]:
    latencies: list[float] = []

    def client(n: int) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        with httpx.Client(base_url=urls[n % len(urls)], headers=headers, timeout=60) as http:
            for i in range(HTTP_PER_THREAD):
                start = time.perf_counter()
                answer = http.post(f"/v1/users/http-{n}/sessions/s/turns",
                                   json={"role": "user", "content": _text(i)})  # fmt: skip
                latencies.append(time.perf_counter() - start)
                answer.raise_for_status()

    rate = _rate(THREADS * HTTP_PER_THREAD, lambda: _threads(client, THREADS))
    return {"turns_per_s": rate, **summary_ms(latencies)}


def _servers(folder: Path, env: dict[str, str], count: int) -> dict[str, Any]:
    with _server(folder / "one", env) as first:
        if count == 1:
            return _http_appends([first])
        with _server(folder / "two", env) as second:
            return _http_appends([first, second])


def _median(runs: list[Any]) -> Any:
    """The median of each number across runs of the same shape."""
    if isinstance(runs[0], dict):
        return {key: _median([run[key] for run in runs]) for key in runs[0]}
    return round(statistics.median(runs), 4)


def _one_round(folder: Path, key: str) -> dict[str, Any]:
    """Every measurement once, each backend in turn, so machine noise hits all of them alike."""
    results: dict[str, Any] = {}
    results["library_sqlite"] = _library(Settings(data=folder / "lite", master_key=key))
    with temporary_schema(POSTGRES_URL, "bench") as url:
        pg = Settings(data=folder / "pg", database_url=url, master_key=key)
        results["library_postgres"] = _library(pg)
    lite = {"MEMVAULT_MASTER_KEY": key}
    results["http_sqlite_1_server"] = _servers(folder / "http-lite", lite, 1)
    for count in (1, 2):
        with temporary_schema(POSTGRES_URL, "bench") as url:
            env = {"MEMVAULT_DATABASE_URL": url, "MEMVAULT_MASTER_KEY": key}
            results[f"http_postgres_{count}_servers"] = _servers(
                folder / f"http-{count}", env, count
            )
    return results


def appends_only(rounds: int = ROUNDS) -> dict[str, Any]:
    """Only the library appends, SQLite and PostgreSQL in turn each round: a quick measurement
    of the write path (`python -m benchmarks.bench_backends appends`), printed, not saved."""
    key = encode_key(generate_key())
    runs = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            run = {"sqlite": _vault_appends(Settings(data=Path(tmp) / "lite", master_key=key))}
            with temporary_schema(POSTGRES_URL, "bench") as url:
                pg = Settings(data=Path(tmp) / "pg", database_url=url, master_key=key)
                run["postgres"] = _vault_appends(pg)
        runs.append(run)
    return {"rounds": rounds, "medians": _median(runs)}


def _vault_appends(settings: Settings) -> dict[str, Any]:
    with Vault(settings=settings, embedder=HashingEmbedder()) as vault:
        return _appends(vault)


def main() -> None:
    key = encode_key(generate_key())
    runs = []
    for number in range(ROUNDS):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(_one_round(Path(tmp), key))
        print(f"round {number + 1}/{ROUNDS}:", json.dumps(runs[-1]))
    results = {"cpus": os.cpu_count(), "load_average_at_end": os.getloadavg(),
               "embedder": "hashing", "http_clients": THREADS, "rounds": ROUNDS,
               "medians": _median(runs)}  # fmt: skip
    write_results("backends", results)


if __name__ == "__main__":
    if sys.argv[1:] == ["appends"]:
        print(json.dumps(appends_only()))
    else:
        main()
