"""The server under sustained load: turn appends and searches over loopback HTTP to a real
`memvault serve` process, against the embedded `Vault` doing the same work in the same run.

The load generator is bounded: 16 concurrent keep-alive connections share a fixed number of
requests, each sent only when the previous answer on its connection has arrived. It speaks
HTTP/1.1 on raw asyncio streams, so that the client costs little of the CPU the server needs
(both share the machine). Each side is timed per request; requests/s is over the whole run.

The server runs with its search indexes topped up after writes (`warm_indexes`, the default)
and without, alternating over `ROUNDS` rounds: the figures are medians over rounds, and
`server_warming_on_over_off` their ratio.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.common import summary_ms, write_results
from memvault.config import Settings
from memvault.vault import Vault

CONCURRENCY = 16
APPENDS = 4000
SEARCHES = 400
USERS = 4
ROUNDS = 4  # of the server with warming on and off, in alternating order
ADMIN_KEY = "bench-admin-key-0123456789abcdef"
CONTENT = "I'd like to book a table for four on Friday at seven, somewhere quiet near the river."
QUERIES = ("table for four", "Friday dinner", "quiet place near the river", "booking at seven")


def _append_body(i: int) -> dict[str, Any]:
    return {"role": "user" if i % 2 else "assistant", "content": f"{CONTENT} #{i}"}


def _target(i: int) -> tuple[str, str]:
    """Request i goes to one of USERS users and one of CONCURRENCY sessions."""
    return f"user-{i % USERS}", f"session-{i % CONCURRENCY}"


# -- the HTTP side --------------------------------------------------------------------------------


class _Connection:
    """One keep-alive HTTP/1.1 connection: send a request, read exactly one answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def post(self, path: str, body: dict[str, Any], token: str) -> tuple[int, bytes]:
        payload = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        )
        self.writer.write(head.encode() + payload)
        status_line, *headers = (await self.reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        length = next(
            int(h.split(b":", 1)[1]) for h in headers if h.lower().startswith(b"content-length:")
        )
        return int(status_line.split()[1]), await self.reader.readexactly(length)


Request = Callable[[int], tuple[str, dict[str, Any], int]]


async def _http_load(
    port: int, count: int, request: Request, tokens: list[str]
) -> tuple[float, list[float]]:
    """Send `count` requests over CONCURRENCY connections; (seconds, per-request latencies)."""
    latencies: list[float] = []
    next_index = iter(range(count))

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        connection = _Connection(reader, writer)
        try:
            for i in next_index:
                path, body, expected = request(i)
                started = time.perf_counter()
                status, answer = await connection.post(path, body, tokens[i % USERS])
                latencies.append(time.perf_counter() - started)
                if status != expected:
                    raise RuntimeError(f"{path} answered {status}: {answer[:200]!r}")
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - started, latencies


def _append_request(i: int) -> tuple[str, dict[str, Any], int]:
    user, session = _target(i)
    return f"/v1/users/{user}/sessions/{session}/turns", _append_body(i), 201


def _search_request(i: int) -> tuple[str, dict[str, Any], int]:
    return f"/v1/users/{_target(i)[0]}/search", {"query": QUERIES[i % len(QUERIES)]}, 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _start_server(data: Path, port: int, warm: bool) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "MEMVAULT_ADMIN_KEY": ADMIN_KEY,
        "MEMVAULT_RATE_LIMIT_PER_MINUTE": "0",
        "MEMVAULT_WARM_INDEXES": "true" if warm else "false",
    }
    command = [sys.executable, "-m", "memvault.cli", "serve", "--port", str(port),
               "--data", str(data)]  # fmt: skip
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("memvault serve did not start")


def _rate(seconds: float, latencies: list[float]) -> dict[str, float]:
    return {"requests_per_s": round(len(latencies) / seconds, 1), **summary_ms(latencies)}


def run_server(data: Path, warm: bool) -> dict[str, Any]:
    port = _free_port()
    process = _start_server(data, port, warm)
    try:
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        tokens = [
            httpx.post(f"http://127.0.0.1:{port}/v1/keys", headers=admin,
                       json={"scope": "user", "user_id": f"user-{u}"}).json()["key"]
            for u in range(USERS)
        ]  # fmt: skip

        async def run() -> dict[str, Any]:
            await _http_load(port, 200, _append_request, tokens)  # warm up
            appends = await _http_load(port, APPENDS, _append_request, tokens)
            await _http_load(port, USERS, _search_request, tokens)  # build the search indexes
            searches = await _http_load(port, SEARCHES, _search_request, tokens)
            return {"appends": _rate(*appends), "searches": _rate(*searches)}

        return asyncio.run(run())
    finally:
        process.terminate()
        process.wait(timeout=30)


# -- the embedded side ----------------------------------------------------------------------------


def _threaded(count: int, call: Callable[[int], object]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    next_index = iter(range(count))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            started = time.perf_counter()
            call(i)
            latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies


def run_embedded(data: Path) -> dict[str, Any]:
    with Vault(settings=Settings(data=data)) as vault:

        def append(i: int) -> None:
            user, session = _target(i)
            vault.add_turns(user, session, [_append_body(i)])

        def search(i: int) -> None:
            vault.search(_target(i)[0], QUERIES[i % len(QUERIES)])

        _threaded(200, append)
        appends = _threaded(APPENDS, append)
        for u in range(USERS):
            search(u)
        searches = _threaded(SEARCHES, search)
    return {"appends": _rate(*appends), "searches": _rate(*searches)}


def _medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds."""
    return {
        kind: {key: round(statistics.median(r[kind][key] for r in runs), 4) for key in figures}
        for kind, figures in runs[0].items()
    }


def main() -> None:
    load_before = os.getloadavg()[0]  # other work on the machine takes CPU from both sides
    folder = Path(tempfile.mkdtemp(prefix="memvault-bench-server-"))
    by_warming: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    try:
        for round_ in range(ROUNDS):  # the server with indexes topped up after writes, and not
            for warm in (True, False) if round_ % 2 == 0 else (False, True):
                by_warming[warm].append(run_server(folder / f"server-{round_}-{warm}", warm))
        embedded = run_embedded(folder / "embedded")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    server, without = _medians(by_warming[True]), _medians(by_warming[False])
    results: dict[str, Any] = {
        "concurrency": CONCURRENCY,
        "appends": APPENDS,
        "searches": SEARCHES,
        "rounds": ROUNDS,
        "transport": "HTTP/1.1 keep-alive over loopback, load generator on the same machine",
        "server": server,
        "server_without_warming": without,
        "server_warming_on_over_off": {
            kind: round(server[kind]["requests_per_s"] / without[kind]["requests_per_s"], 3)
            for kind in server
        },
        "embedded_vault": embedded,
        "target": {"appends_per_s": 1000, "append_p99_ms": 50},
        "load_average_1min": {
            "before": round(load_before, 2),
            "after": round(os.getloadavg()[0], 2),
        },
    }
    for side in ("server", "server_without_warming", "embedded_vault"):
        for kind in ("appends", "searches"):
            r = results[side][kind]
            print(f"{side:>22} {kind:<9} {r['requests_per_s']:>8.1f}/s  p50 {r['p50_ms']:.2f} ms"
                  f"  p99 {r['p99_ms']:.2f} ms")  # fmt: skip
    print("warming on / off, requests per second:", results["server_warming_on_over_off"])
    write_results("server", results)


if __name__ == "__main__":
    main()
