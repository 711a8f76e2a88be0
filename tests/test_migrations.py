"""Schema migrations: recorded, applied once, and a backup taken before changing a used file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from conftest import MakeVault

from memvault.store.migrations import MIGRATIONS, Migration, migrate
from memvault.store.sqlite import SqliteDatabase

# These open and back up the SQLite file itself.
SQLITE_FILES = pytest.mark.parametrize("backend", ["sqlite"])
EXTRA = Migration(9999, "test: add a column", ("ALTER TABLE users ADD COLUMN nickname TEXT",))


@SQLITE_FILES
def test_migrations_are_recorded_once(backend: str, make_vault: MakeVault, tmp_path: Path) -> None:
    make_vault(tmp_path / "d").close()
    db = SqliteDatabase(tmp_path / "d" / "memvault.db")
    try:
        assert migrate(db) == []
        with db.read() as tx:
            versions = [r["version"] for r in tx.all("SELECT version FROM schema_migrations")]
        assert versions == sorted(m.version for m in MIGRATIONS)
    finally:
        db.close()


@SQLITE_FILES
def test_backup_before_migrating_a_used_file(
    backend: str, make_vault: MakeVault, tmp_path: Path
) -> None:
    data = tmp_path / "d"
    make_vault(data).add_turn("u", "s", "user", "kept in the backup")
    db = SqliteDatabase(data / "memvault.db")
    try:
        assert migrate(db, (*MIGRATIONS, EXTRA)) == [9999]
        assert migrate(db, (*MIGRATIONS, EXTRA)) == []
    finally:
        db.close()
    (backup,) = data.glob("memvault.db.before-migration-9999.*.bak")
    with sqlite3.connect(backup) as conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(users)")]
        turns = conn.execute("SELECT COUNT(*) FROM turns").fetchone()[0]
    conn.close()
    assert "nickname" not in columns and turns == 1
    assert make_vault(data).recent_turns("u")[0].content == "kept in the backup"


@SQLITE_FILES
def test_a_fresh_database_needs_no_backup(
    backend: str, make_vault: MakeVault, tmp_path: Path
) -> None:
    make_vault(tmp_path / "d")
    assert list((tmp_path / "d").glob("*.bak")) == []


@SQLITE_FILES
def test_the_newest_turns_of_one_channel_are_read_through_their_own_index(
    backend: str, make_vault: MakeVault, tmp_path: Path
) -> None:
    """In a session and across the user's sessions: not by walking turns from the newest until
    enough of the channel turn up, which for a channel seldom used read every turn."""
    vault = make_vault(tmp_path / "d")
    vault.add_turns("u", "s", [{"role": "user", "content": f"t{i}"} for i in range(30)])
    vault.add_turn("u", "s", "user", "the one general turn", channel="general")
    for session in ("s", None):
        turns = vault.recent_turns("u", session_id=session, channel="general")
        assert [t.content for t in turns] == ["the one general turn"]
    vault.close()
    queries = {
        "turns_by_channel": "SELECT * FROM turns WHERE user_id = ? AND session_id = ? "
        "AND channel = ? ORDER BY seq DESC LIMIT ?",
        "turns_by_channel_time": "SELECT * FROM turns WHERE user_id = ? AND channel = ? "
        "ORDER BY created_at DESC, id DESC LIMIT ?",
    }
    with sqlite3.connect(tmp_path / "d" / "memvault.db") as conn:
        for index, query in queries.items():
            plan = conn.execute(f"EXPLAIN QUERY PLAN {query}", [1] * query.count("?")).fetchall()
            steps = " ".join(str(row[-1]) for row in plan)
            assert f"USING INDEX {index} " in steps and "TEMP B-TREE" not in steps, steps
    conn.close()
