"""A real `memvault serve` process on a free loopback port: start, write, kill, restart, and
everything written before the kill is still there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from api_support import ADMIN, ADMIN_KEY, start_server


def test_history_survives_a_killed_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data, MEMVAULT_ADMIN_KEY=ADMIN_KEY)
    try:
        key = httpx.post(f"{server.url}/v1/keys", json={"scope": "user", "user_id": "alice"},
                         headers=ADMIN).json()["key"]  # fmt: skip
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.url, headers=headers) as http:
            for i in range(20):
                answer = http.post("/v1/users/alice/sessions/s1/turns",
                                   json={"role": "user", "content": f"turn {i}"})  # fmt: skip
                assert answer.status_code == 201
        asyncio.run(append_concurrently(server.url, headers, 60))  # group-committed
    finally:
        server.stop(kill=True)  # SIGKILL right after the last answer: no clean shutdown
    restarted = start_server(data, port=server.port, MEMVAULT_ADMIN_KEY=ADMIN_KEY)
    try:
        with httpx.Client(base_url=restarted.url, headers=headers) as http:
            turns = http.get("/v1/users/alice/sessions/s1/turns").json()["items"]
            assert http.get("/readyz").json() == {"status": "ready"}
            parallel = http.get("/v1/users/alice/sessions/s2/turns").json()["items"]
        assert [t["content"] for t in turns] == [f"turn {i}" for i in range(20)]
        assert sorted(t["content"] for t in parallel) == sorted(f"p{i}" for i in range(60))
    finally:
        output = restarted.stop()
    assert f"127.0.0.1:{server.port}" in output
    assert key not in output and ADMIN_KEY not in output and "turn 1" not in output


async def append_concurrently(url: str, headers: dict[str, str], count: int) -> None:
    path = "/v1/users/alice/sessions/s2/turns"
    async with httpx.AsyncClient(base_url=url, headers=headers) as http:
        calls = [http.post(path, json={"role": "user", "content": f"p{i}"}) for i in range(count)]
        answers = await asyncio.gather(*calls)
    assert {a.status_code for a in answers} == {201}


def test_first_start_prints_a_working_admin_key_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data, flags=False)  # MEMVAULT_PORT and MEMVAULT_DATA this time
    try:
        admin = httpx.get(f"{server.url}/healthz")
    finally:
        first = server.stop()
    assert admin.status_code == 200
    lines = [line.strip() for line in first.splitlines()]
    secret = next(line for line in lines if line.startswith("mvk_"))
    again = start_server(data)
    assert (data / "memvault.db").exists()
    try:
        keys = httpx.get(f"{again.url}/v1/keys", headers={"Authorization": f"Bearer {secret}"})
        assert keys.status_code == 200
    finally:
        second = again.stop()
    assert "mvk_" not in second
