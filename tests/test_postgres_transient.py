"""PostgreSQL failures the database causes on its own, provoked for real: a deadlock is run
again and lands once; a connection the server ended is replaced; no free connection, or a
write that keeps losing its connection, answers 503 with Retry-After and nothing written. The
job queue's and the keyring's writes are run again like the store's."""

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
from memvault.jobs import JobKind
from memvault.model import Turn
from memvault.store.database import RETRY_ATTEMPTS
from memvault.store.migrations import migrate
from memvault.store.pgkeys import PostgresKeyStore
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


def retries(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "rolled back" in r.getMessage()]


@pytest.fixture
def keys(postgres_url: str) -> Iterator[PostgresKeyStore]:
    store = PostgresKeyStore(postgres_url)
    yield store
    store.close()


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


def test_a_read_whose_connection_is_lost_runs_again(
    vault: Vault, blocker: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The read waits on the blocker's table lock and has its backend ended under it: the store
    reads again on a fresh connection, and the caller gets the answer, not an error."""
    vault.add_turn("ann", "s", "user", SECRET_TEXT)
    blocker.execute("BEGIN")
    blocker.execute("LOCK TABLE turns IN ACCESS EXCLUSIVE MODE")
    with caplog.at_level(logging.WARNING, logger="memvault.store.database"):
        read = in_thread(lambda: vault.session_turns("ann", "s"))
        blocker.execute("SELECT pg_terminate_backend(%s, 5000)", (waiting_on(blocker),))
        blocker.execute("COMMIT")
        turns = read.result(timeout=30)
    assert [t.content for t in turns] == [SECRET_TEXT]
    assert len(retries(caplog)) == 1 and "ConnectionLost" in retries(caplog)[0]
    assert SECRET_TEXT not in caplog.text


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


def test_a_job_update_whose_connection_is_killed_runs_again(
    vault: Vault, blocker: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Completing a job waits on the blocker's lock of its row and has its backend ended under
    it. The queue runs the update again, which waits anew, then completes the job once."""
    job_id = vault.jobs.enqueue(JobKind.EMBEDDING, "ann")
    job = vault.jobs.claim("w1", lease_seconds=60)
    assert job is not None and job.id == job_id
    blocker.execute("BEGIN")
    blocker.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
    with caplog.at_level(logging.WARNING, logger="memvault.store.database"):
        completed = in_thread(lambda: vault.jobs.complete(job))
        blocker.execute("SELECT pg_terminate_backend(%s, 5000)", (waiting_on(blocker),))
        waiting_on(blocker)  # the second run, on a fresh connection
        blocker.execute("COMMIT")
        assert completed.result(timeout=30) is True
    row = vault.jobs.get(job_id)
    assert row is not None and (row["state"], row["lease_owner"]) == ("done", None)
    assert vault.jobs.complete(job) is False  # done once: the lease is spent
    assert [m.split(" (")[0] for m in retries(caplog)] == ["JobQueue._settle rolled back"]
    assert "ConnectionLost" in retries(caplog)[0]


def test_a_new_key_whose_connection_is_killed_is_stored_once(
    keys: PostgresKeyStore, blocker: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The blocker is inserting a key for the same user, so the keyring's insert waits on it,
    and its backend is ended there. The blocker then gives up; the second run stores the key."""
    keys.set_check(b"check")
    blocker.execute("BEGIN")
    blocker.execute("INSERT INTO user_keys (user_id, wrapped_key) VALUES ('cat', 'other')")
    with caplog.at_level(logging.WARNING, logger="memvault.store.database"):
        added = in_thread(lambda: keys.add_wrapped("cat", b"wrapped-for-cat", b"check"))
        blocker.execute("SELECT pg_terminate_backend(%s, 5000)", (waiting_on(blocker),))
        waiting_on(blocker)
        blocker.execute("ROLLBACK")
        assert added.result(timeout=30) == b"wrapped-for-cat"
    assert keys.all_wrapped() == [("cat", b"wrapped-for-cat")]
    assert [m.split(" (")[0] for m in retries(caplog)] == [
        "PostgresKeyStore.add_wrapped rolled back"
    ]


def test_a_deadlocked_key_rotation_runs_again_and_lands_whole(
    keys: PostgresKeyStore, blocker: psycopg.Connection[Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Re-wrapping locks ann's key, then waits for bea's, which the blocker holds; the blocker
    then asks for ann's. PostgreSQL ends the keyring's transaction; it runs again once the
    blocker commits, reading the keys again."""
    keys.set_check(b"old-check")
    for user in ("ann", "bea"):
        keys.add_wrapped(user, f"old-{user}".encode(), b"old-check")
    blocker.execute("BEGIN")
    blocker.execute("SET LOCAL deadlock_timeout = '60s'")  # the keyring's backend is the victim
    lock_key = "UPDATE user_keys SET wrapped_key = wrapped_key WHERE user_id = %s"
    blocker.execute(lock_key, ("bea",))
    with caplog.at_level(logging.WARNING, logger="memvault.store.database"):
        replaced = in_thread(
            lambda: keys.replace_all(lambda _, old: old.replace(b"old", b"new"), b"new-check")
        )
        waiting_on(blocker)
        blocker.execute(
            lock_key, ("ann",)
        )  # closes the cycle; returns once the keyring's is undone
        blocker.execute("COMMIT")
        replaced.result(timeout=30)
    assert keys.all_wrapped() == [("ann", b"new-ann"), ("bea", b"new-bea")]
    assert keys.get_check() == b"new-check"
    assert len(retries(caplog)) == 1
    assert "PostgresKeyStore.replace_all" in retries(caplog)[0]
    assert "DeadlockDetected" in retries(caplog)[0]
