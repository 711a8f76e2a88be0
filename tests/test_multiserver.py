"""Two real `memvault serve` processes on one PostgreSQL database behave as one service."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypedDict

import httpx
import pytest
from api_support import ADMIN, ADMIN_KEY, Server, start_server
from conftest import postgres_schema
from websockets.sync.client import connect

from memvault.crypto import encode_key, generate_key

WRITERS = 8
PER_WRITER = 25


class SharedEnvironment(TypedDict):
    """What both servers are started with: one database, one master key, one admin key."""

    MEMVAULT_DATABASE_URL: str
    MEMVAULT_MASTER_KEY: str
    MEMVAULT_ADMIN_KEY: str


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Two servers with their own data folders, sharing a database and a master key."""
    with postgres_schema() as url:
        env = SharedEnvironment(
            MEMVAULT_DATABASE_URL=url,
            MEMVAULT_MASTER_KEY=encode_key(generate_key()),
            MEMVAULT_ADMIN_KEY=ADMIN_KEY,
        )
        root = tmp_path_factory.mktemp("multiserver")
        first = start_server(root / "one", **env)
        try:
            second = start_server(root / "two", **env)
        except BaseException:
            first.stop()
            raise
        yield first, second
        second.stop()
        first.stop()


def _client(server: Server) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers=ADMIN, timeout=30)


def test_a_turn_written_on_one_server_is_read_and_found_on_the_other(
    servers: tuple[Server, Server],
) -> None:
    one, two = servers
    with _client(one) as writer, _client(two) as reader:
        writer.post("/v1/users/ann/sessions/s/turns", json={"role": "user", "content": "hello"})
        assert reader.post("/v1/users/ann/search", json={"query": "hello"}).json()["items"]
        answer = writer.post(
            "/v1/users/ann/sessions/s/turns",
            json={"role": "user", "content": "the heron nests by the mill pond"},
        )
        assert answer.status_code == 201
        turns = reader.get("/v1/users/ann/sessions/s/turns").json()["items"]
        assert [t["content"] for t in turns][-1] == "the heron nests by the mill pond"
        hits = reader.post("/v1/users/ann/search", json={"query": "heron mill pond"})
        assert hits.json()["items"][0]["id"] == answer.json()["id"]


def _receive(ws: Any, wanted: str, deadline: float) -> dict[str, Any]:
    while True:
        message: dict[str, Any] = json.loads(ws.recv(timeout=max(0.0, deadline - time.time())))
        if message["type"] == wanted:
            return message


def test_a_websocket_on_one_server_hears_a_write_on_the_other(
    servers: tuple[Server, Server],
) -> None:
    one, two = servers
    with connect(two.url.replace("http", "ws") + "/v1/ws") as ws:
        ws.send(json.dumps({"type": "auth", "token": ADMIN_KEY}))
        deadline = time.time() + 10
        _receive(ws, "ready", deadline)
        ws.send(json.dumps({"type": "join", "room": "session:live", "user_id": "bea"}))
        _receive(ws, "joined", deadline)
        with _client(one) as writer:
            turn = writer.post(
                "/v1/users/bea/sessions/live/turns", json={"role": "user", "content": "secret"}
            ).json()
        event = _receive(ws, "turn.added", deadline)
    assert (event["user_id"], event["turn_id"], event["session_id"]) == ("bea", turn["id"], "live")
    assert "secret" not in json.dumps(event)


def test_a_key_revoked_on_one_server_is_refused_by_the_other_at_once(
    servers: tuple[Server, Server],
) -> None:
    """The other server remembers a checked key for 5 s; the revocation reaches it sooner."""
    one, two = servers
    with _client(one) as admin_one, httpx.Client(base_url=two.url, timeout=30) as http:
        created = admin_one.post("/v1/keys", json={"scope": "user", "user_id": "cal"}).json()
        caller = {"Authorization": f"Bearer {created['key']}"}
        assert http.get("/v1/users/cal/sessions", headers=caller).status_code == 200  # cached
        assert admin_one.delete(f"/v1/keys/{created['id']}").status_code == 204
        revoked_at = time.monotonic()
        status = 200
        while status == 200 and time.monotonic() - revoked_at < 3:
            status = http.get("/v1/users/cal/sessions", headers=caller).status_code
            time.sleep(0.02)
    assert status == 401


Targets = Callable[[int, int], list[tuple[str, str]]]  # (writer, i) to (user, session)s


def _write_concurrently(servers: tuple[Server, Server], targets: Targets) -> list[int]:
    """WRITERS threads, alternating between the servers, each appending `w<writer>:<i>` to
    its targets for i in order; returns the statuses of the appends that failed."""
    failures: list[int] = []

    def write(number: int) -> None:
        with _client(servers[number % 2]) as http:
            for i in range(PER_WRITER):
                body = {"role": "user", "content": f"w{number}:{i}"}
                for user, session in targets(number, i):
                    answer = http.post(f"/v1/users/{user}/sessions/{session}/turns", json=body)
                    if answer.status_code != 201:
                        failures.append(answer.status_code)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def test_eight_writers_across_both_servers_lose_nothing_and_keep_order(
    servers: tuple[Server, Server],
) -> None:
    failures = _write_concurrently(servers, lambda n, i: [("cid", "shared"), ("cid", f"own-{n}")])
    assert failures == []
    with _client(servers[0]) as http:
        shared = _all_turns(http, "shared")
        assert [t["seq"] for t in shared] == list(range(1, WRITERS * PER_WRITER + 1))
        for number in range(WRITERS):
            mine = [t["content"] for t in shared if t["content"].startswith(f"w{number}:")]
            assert mine == [f"w{number}:{i}" for i in range(PER_WRITER)]
            own = [t["content"] for t in _all_turns(http, f"own-{number}")]
            assert own == [f"w{number}:{i}" for i in range(PER_WRITER)]


def _all_turns(http: httpx.Client, session: str) -> list[dict[str, Any]]:
    turns: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, int | str] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = http.get(f"/v1/users/cid/sessions/{session}/turns", params=params).json()
        turns.extend(page["items"])
        cursor = page["next"]
        if not cursor:
            return turns


def test_grouped_appends_for_many_users_on_both_servers_never_deadlock(
    servers: tuple[Server, Server],
) -> None:
    """Each server commits concurrent appends together; two such groups naming the same users
    in opposite orders must still both commit."""
    users = [f"many-{n}" for n in range(4)]
    orders = (users, users[::-1])
    failures = _write_concurrently(servers, lambda n, i: [(orders[n % 2][i % len(users)], "s")])
    assert failures == []
    with _client(servers[1]) as http:
        counts = [http.get(f"/v1/users/{u}/stats").json()["turns"] for u in users]
    assert sum(counts) == WRITERS * PER_WRITER
