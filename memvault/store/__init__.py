"""Storage backends behind one `Store` protocol. SQLite by default."""

from __future__ import annotations

from pathlib import Path

from memvault.store.protocol import Store
from memvault.store.sql import SqlStore
from memvault.store.sqlite import SqliteDatabase

DATABASE_FILE = "memvault.db"


def open_sqlite_store(data_dir: Path, *, synchronous: str = "FULL") -> SqlStore:
    return SqlStore(SqliteDatabase(data_dir / DATABASE_FILE, synchronous=synchronous))


__all__ = ["DATABASE_FILE", "SqlStore", "Store", "open_sqlite_store"]
