"""PostgreSQL failures the database causes on its own, provoked for real: a deadlock is run
again and lands once; a connection the server ended is replaced; no free connection, or a
write that keeps losing its connection, answers 503 with Retry-After and nothing written."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from api_support import ADMIN, ADMIN_KEY
from loopback import serve_in_thread

from memvault import Vault
from memvault.config import Settings
from memvault.errors import Unavailable
from memvault.model import Turn
from memvault.store.database import RETRY_ATTEMPTS
from memvault.store.migrations import migrate
from memvault.store.postgres import PostgresDatabase

SECRET_TEXT = "my-very-private-diary-entry"


@pytest.fixture
def vault(tmp_path: Path, postgres_url: str) -> Iterator[Vault]:
    opened = Vault(settings=Settings(data=tmp_path, database_url=postgres_url, admin_key=ADMIN_KEY))
    yield opened
    opened.close()


@pytest.fixture
def blocker(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection of the test's own, to hold locks the vault's writes must wait for."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        yield conn


def waiting_on(blocker: psycopg.Connection[Any], timeout: float = 10.0) -> int:
    """The pid of the backend waiting for a lock `blocker` holds (the vault's, mid-write)."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(blocker.info.dsn, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT pid FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                (blocker.info.backend_pid,),
            ).fetchone()
            if row is not None:
                return int(row[0])
            time.sleep(0.02)
    raise AssertionError("no backend came to wait for the blocker's lock")


def lock_user(blocker: psycopg.Connection[Any], user_id: str) -> None:
    blocker.execute("UPDATE users SET updated_at = updated_at WHERE id = %s", (user_id,))


def in_thread(work: Callable[[], Any]) -> Future[Any]:
    executor = ThreadPoolExecutor(max_workers=1)
    future = executor.submit(work)
    executor.shutdown(wait=False)
    return future


def test_a_deadlocked_write_runs_again_and_lands_once(
    vault: Vault, blocker: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The vault's write locks ann, then waits for bea; the blocker holds bea and asks for ann.
    PostgreSQL ends the vault's transaction (its deadlock check fires first); the store runs
    it again once the blocker commits, and each turn is stored exactly once."""
    for user in ("ann", "bea"):
        vault.put_user(user)
    blocker.execute("BEGIN")
    blocker.execute("SET LOCAL deadlock_timeout = '60s'")  # the vault's backend is the victim
    lock_user(blocker, "bea")
    groups = [(u, "s", [{"role": "user", "content": f"hi from {u}"}]) for u in ("ann", "bea")]
    with caplog.at_level(logging.WARNING, logger="memvault.store.database"):
        written = in_thread(lambda: vault.add_turn_groups(groups))
        waiting_on(blocker)
        lock_user(blocker, "ann")  # closes the cycle; returns once the vault's write is undone
        blocker.execute("COMMIT")
        results = written.result(timeout=30)
    assert [[t.seq for t in r] for r in results if isinstance(r, list)] == [[1], [1]]
    for user in ("ann", "bea"):
        turns: list[Turn] = vault.session_turns(user, "s")
        assert [t.content for t in turns] == [f"hi from {user}"]
    retries = [r.getMessage() for r in caplog.records if "rolled back" in r.getMessage()]
    assert len(retries) == 1 and "DeadlockDetected" in retries[0]


def test_a_connection_ended_while_idle_is_replaced_unnoticed(
    postgres_url: str, blocker: psycopg.Connection[Any]
) -> None:
    db = PostgresDatabase(postgres_url, pool_size=2)
    try:
        with db.connection() as conn:
            pid = conn.execute("SELECT pg_backend_pid() AS pid").fetchone()
        assert pid is not None
        blocker.execute("SELECT pg_terminate_backend(%s, 5000)", (pid["pid"],))
        db.ping()
        with db.write() as tx:
            assert tx.one("SELECT 1 AS one") == {"one": 1}
    finally:
        db.close()


def test_a_connection_lost_with_the_commit_in_flight_is_not_run_again(
    postgres_url: str, blocker: psycopg.Connection[Any]
) -> None:
    """A statement held back for the commit goes out with it; if the connection is lost then,
    nobody knows whether the commit landed, so the write is `Unavailable` with an unknown
    outcome, never retried. (Here it waits on the blocker's insert of the same key, so it
    did not land.)"""
    db = PostgresDatabase(postgres_url, pool_size=2)
    migrate(db)
    blocker.execute("BEGIN")
    blocker.execute("INSERT INTO global_context (key, text, updated_at) VALUES ('k', 'b', 't')")

    def write() -> None:
        with db.write() as tx:
            tx.send("INSERT INTO global_context (key, text, updated_at) VALUES ('k', 'v', 't')")

    try:
        written = in_thread(write)
        blocker.execute("SELECT pg_terminate_backend(%s, 5000)", (waiting_on(blocker),))
        with pytest.raises(Unavailable) as raised:
            written.result(timeout=30)
        assert raised.value.details == {"retry_after": 1, "outcome": "unknown"}
        blocker.execute("ROLLBACK")
        with db.read() as tx:
            assert tx.all("SELECT key FROM global_context") == []
    finally:
        db.close()


def test_no_free_connection_in_time_is_unavailable(postgres_url: str) -> None:
    db = PostgresDatabase(postgres_url, pool_size=2, connect_timeout=0.5)
    try:
        with db.connection(), db.connection():
            started = time.monotonic()
            with pytest.raises(Unavailable) as raised:
                db.ping()
            assert time.monotonic() - started < 5
        assert raised.value.details == {"retry_after": 1}
        assert "postgres" not in raised.value.message
        db.ping()  # with a connection back in the pool, the next one goes through
    finally:
        db.close()


def test_a_write_that_keeps_losing_its_connection_answers_503_then_succeeds(
    vault: Vault, blocker: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Over a real server: each run of the write waits on the blocker's lock and has its
    backend ended under it. After RETRY_ATTEMPTS runs the client gets the standard envelope
    with 503 and Retry-After, nothing of it is stored, and the same request then succeeds."""
    vault.put_user("alice")
    blocker.execute("BEGIN")
    lock_user(blocker, "alice")
    path = "/v1/users/alice/memories"
    with (
        serve_in_thread(vault) as url,
        httpx.Client(base_url=url, headers=ADMIN, timeout=60) as http,
        caplog.at_level(logging.INFO),
    ):
        answer = in_thread(lambda: http.post(path, json={"text": SECRET_TEXT}))
        for _ in range(RETRY_ATTEMPTS):
            assert not answer.done()
            blocker.execute("SELECT pg_terminate_backend(%s, 5000)", (waiting_on(blocker),))
        refused: httpx.Response = answer.result(timeout=30)
        blocker.execute("ROLLBACK")
        assert refused.status_code == 503, refused.text
        assert refused.json() == {"error": {
            "code": "unavailable", "message": "the database rolled the transaction back; try again",
            "details": {"retry_after": 1, "reason": "ConnectionLost"},
        }}  # fmt: skip
        assert refused.headers["retry-after"] == "1"
        assert http.get(path).json()["items"] == []
        assert http.post(path, json={"text": SECRET_TEXT}).status_code == 201
        assert [m["text"] for m in http.get(path).json()["items"]] == [SECRET_TEXT]
    assert SECRET_TEXT not in caplog.text and "Traceback" not in caplog.text
