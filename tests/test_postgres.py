"""What only the PostgreSQL backend has: placeholders, errors, a shared keyring, servers racing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from api_support import free_port
from conftest import POSTGRES_URL, postgres_schema, require_postgres

from memvault import Conflict, Vault
from memvault.config import Settings
from memvault.crypto import encode_key, generate_key
from memvault.errors import Invalid, MemvaultError, Unavailable
from memvault.store.migrations import MIGRATIONS, migrate
from memvault.store.postgres import PostgresDatabase


@pytest.fixture
def db(postgres_url: str) -> Iterator[PostgresDatabase]:
    database = PostgresDatabase(postgres_url)
    migrate(database)
    yield database
    database.close()


def test_percent_signs_and_placeholders_survive_translation(db: PostgresDatabase) -> None:
    with db.read() as tx:
        row = tx.one("SELECT '100%' AS literal, ? AS param", ("50% ?",))
    assert row == {"literal": "100%", "param": "50% ?"}


def test_duplicate_keys_become_conflict_without_values(db: PostgresDatabase) -> None:
    insert = "INSERT INTO global_context (key, text, updated_at) VALUES (?, ?, ?)"
    with db.write() as tx:
        tx.execute(insert, ("motto", "secret text", "t"))
    with pytest.raises(Conflict) as caught, db.write() as tx:
        tx.execute(insert, ("motto", "secret text", "t"))
    assert "secret" not in str(caught.value.details) and "motto" not in str(caught.value.details)
    with db.read() as tx:  # the failed transaction was rolled back; the pool still works
        assert tx.all("SELECT key FROM global_context") == [{"key": "motto"}]


INSERT_GLOBAL = "INSERT INTO global_context (key, text, updated_at) VALUES (?, ?, ?)"


def test_held_back_statements_run_in_order_before_the_next_answer(db: PostgresDatabase) -> None:
    with db.write() as tx:
        tx.send(INSERT_GLOBAL, ("a", "first", "t"))
        tx.send_many(INSERT_GLOBAL, [("b", "second", "t"), ("c", "third", "t")])
        answers = tx.ones(
            [
                ("UPDATE global_context SET text = 'changed' WHERE key = ? RETURNING text", ("a",)),
                ("SELECT COUNT(*) AS n FROM global_context", ()),
            ]
        )
        assert answers == [{"text": "changed"}, {"n": 3}]
    with db.read() as tx:
        assert [r["text"] for r in tx.all("SELECT text FROM global_context ORDER BY key")] == [
            "changed", "second", "third",
        ]  # fmt: skip


def test_a_held_back_statement_that_fails_at_the_commit_undoes_everything(
    db: PostgresDatabase,
) -> None:
    with db.write() as tx:
        tx.execute(INSERT_GLOBAL, ("a", "kept", "t"))
    with pytest.raises(Conflict), db.write() as tx:
        tx.execute("UPDATE global_context SET text = 'lost' WHERE key = ?", ("a",))
        tx.send(INSERT_GLOBAL, ("b", "lost", "t"))
        tx.send(INSERT_GLOBAL, ("a", "clash", "t"))  # sent with the COMMIT, which never runs
    with db.write():
        pass  # asks nothing of the server, so commits nothing
    with db.read() as tx:
        assert tx.all("SELECT key, text FROM global_context") == [{"key": "a", "text": "kept"}]


def test_migrations_are_recorded_once_and_backup_is_left_to_postgres(
    db: PostgresDatabase,
) -> None:
    assert migrate(db) == []
    assert db.backup("label") is None
    with db.read() as tx:
        versions = [r["version"] for r in tx.all("SELECT version FROM schema_migrations")]
    assert sorted(versions) == sorted(m.version for m in MIGRATIONS)


def opening_fails(settings: Settings) -> MemvaultError:
    """Open a vault that must fail: the error, once it is known to have come within seconds,
    leaving no thread running and no data folder made."""
    threads = set(threading.enumerate())
    started = time.monotonic()
    with pytest.raises(MemvaultError) as raised:
        Vault(settings=settings).close()
    assert time.monotonic() - started < 3
    assert set(threading.enumerate()) <= threads
    assert not Path(settings.data).exists()
    return raised.value


@pytest.mark.parametrize("field", ["database_url", "keyring_url"])
def test_a_closed_port_is_named_at_once_without_the_password(
    field: str, postgres_url: str, tmp_path: Path
) -> None:
    """The pool used to retry for 10 seconds and end in a PoolTimeout that named nothing."""
    port = free_port()
    closed = f"postgresql://memvault:s3cret-pw@127.0.0.1:{port}/memvault"
    urls: dict[str, Any] = {"database_url": postgres_url, field: closed}
    error = opening_fails(Settings(data=tmp_path / "data", **urls))
    assert isinstance(error, Unavailable)
    reached = f"could not reach a PostgreSQL server at 127.0.0.1:{port} (connection refused)"
    assert error.message == f"{field}: {reached}"
    assert error.details == {"field": field}
    with psycopg.connect(postgres_url) as conn:  # the database that does answer: untouched
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
        assert tables.fetchone() == (0,)


def test_a_missing_database_on_the_real_server_is_invalid(tmp_path: Path) -> None:
    require_postgres()
    missing = POSTGRES_URL.rsplit("/", 1)[0] + "/no_such_database"
    error = opening_fails(Settings(data=tmp_path / "data", database_url=missing))
    assert isinstance(error, Invalid) and error.field == "database_url"
    assert error.message.endswith("has no database 'no_such_database'")


def test_a_pool_on_a_closed_port_fails_at_once_naming_its_setting() -> None:
    threads = set(threading.enumerate())
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"^keyring_url: could not reach"):
        PostgresDatabase(f"postgresql://127.0.0.1:{free_port()}/x", field="keyring_url")
    assert time.monotonic() - started < 3
    assert set(threading.enumerate()) <= threads


def test_keyring_in_its_own_schema(postgres_url: str, tmp_path: Path) -> None:
    with postgres_schema() as keyring_url:
        settings = Settings(data=tmp_path, database_url=postgres_url, keyring_url=keyring_url)
        with Vault(settings=settings) as vault:
            vault.add_turn("alice", "s", "user", "kept apart from its key")
            vault.delete_user("alice")
        with psycopg.connect(keyring_url) as conn:
            assert conn.execute("SELECT count(*) FROM user_keys").fetchone() == (0,)
        with psycopg.connect(postgres_url) as conn:
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE "
                                                  "schemaname = current_schema()")}  # fmt: skip
        assert "users" in tables and "user_keys" not in tables


def test_servers_starting_together_share_one_schema_and_keyring(
    postgres_url: str, tmp_path: Path
) -> None:
    """Four processes open an empty database at once: one migration each, one keyring."""
    key = encode_key(generate_key())
    script = textwrap.dedent("""
        import sys
        from memvault import Vault
        with Vault(sys.argv[1]) as vault:
            vault.add_turn("u", sys.argv[2], "user", "written by " + sys.argv[2])
    """)
    env = {"MEMVAULT_DATABASE_URL": postgres_url, "MEMVAULT_MASTER_KEY": key}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / f"d{i}"), f"s{i}"],
            env={**os.environ, **env},
        )
        for i in range(4)
    ]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    settings = Settings(data=tmp_path / "reader", database_url=postgres_url, master_key=key)
    with Vault(settings=settings) as vault:
        assert sorted(t.content for t in vault.recent_turns("u")) == [
            f"written by s{i}" for i in range(4)
        ]


def test_writers_that_lock_in_different_orders_never_deadlock(vault: Vault) -> None:
    """Appends lock the user, then the session; every other write must take them in that order."""
    vault.add_turn("u", "s", "user", "first")
    errors: list[str] = []

    def run(work: Callable[[int], object]) -> None:
        for i in range(40):
            try:
                work(i)
            except Exception as exc:  # collected, so the test reports what went wrong
                errors.append(type(exc).__name__)

    workers = [
        lambda i: vault.add_turn("u", "s", "user", f"turn {i}"),
        lambda i: vault.add_turn("u", "s", "user", f"turn {i}"),
        lambda i: vault.update_session("u", "s", title=f"title {i}"),
        lambda i: vault.update_session("u", "s", title=f"other {i}"),
        lambda i: vault.clear("u", channel="general"),
    ]
    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert vault.get_session("u", "s").turn_count == 81
