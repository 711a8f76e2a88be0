"""Storage backends behind one `Store` protocol. SQLite by default, PostgreSQL by URL.

The choice of backend is made here and nowhere else: `MEMVAULT_DATABASE_URL=postgresql://...`
selects PostgreSQL for the content and (unless `MEMVAULT_KEYRING_URL` says otherwise) for the
keyring; unset, both live as SQLite files in the data folder.
"""

from __future__ import annotations

from pathlib import Path

from memvault.config import Settings
from memvault.crypto import Keyring, KeyStore, SqliteKeyStore
from memvault.errors import Conflict, Invalid
from memvault.store.database import Database
from memvault.store.pgkeys import PostgresKeyStore
from memvault.store.pgurl import check_url, is_postgres_url
from memvault.store.postgres import PostgresDatabase
from memvault.store.protocol import Store
from memvault.store.sql import SqlStore
from memvault.store.sqlite import SqliteDatabase

DATABASE_FILE = "memvault.db"
KEYRING_FILE = "keyring.db"


def check_database_urls(settings: Settings) -> None:
    """Connect once to each PostgreSQL URL configured (`check_url`), before either is opened:
    a keyring that works beside a database that does not (or the other way round) would
    otherwise be written to, or have a master key made for it, before the other fails."""
    for field in ("database_url", "keyring_url"):
        url = getattr(settings, field)
        if url is not None:
            check_url(url, field)


def open_database(settings: Settings, data_dir: Path) -> Database:
    """The configured database, unmigrated (`open_store` migrates it)."""
    url = settings.database_url
    if url is None:
        return SqliteDatabase(data_dir / DATABASE_FILE, synchronous=settings.sqlite_synchronous)
    if not is_postgres_url(url):
        raise Invalid("database_url", "must start with postgresql:// (or be unset for SQLite)")
    return PostgresDatabase(url, field="database_url", pool_size=settings.database_pool_size)


def open_store(settings: Settings, data_dir: Path) -> SqlStore:
    """The configured store, migrated to the current schema.

    On PostgreSQL the migration runs under a database-wide lock, so several servers starting
    at once apply each migration exactly once.
    """
    db = open_database(settings, data_dir)
    try:
        if isinstance(db, PostgresDatabase):
            with db.exclusive():
                return SqlStore(db)
        return SqlStore(db)
    except BaseException:
        db.close()
        raise


def open_key_store(settings: Settings, data_dir: Path) -> KeyStore:
    field = "database_url" if settings.keyring_url is None else "keyring_url"
    url = getattr(settings, field)
    if url is None:
        return SqliteKeyStore(data_dir / KEYRING_FILE)
    if not is_postgres_url(url):
        raise Invalid(field, "must start with postgresql:// (or be unset)")
    return PostgresKeyStore(url, field=field)


def open_keyring(settings: Settings, data_dir: Path) -> Keyring:
    """The keyring, with the master key from `MEMVAULT_MASTER_KEY` or the data folder's key file.

    When two processes create a shared (PostgreSQL) keyring at the same moment, the one that
    loses opens it again, now as an existing keyring that its master key must open.
    """
    keys = open_key_store(settings, data_dir)
    try:
        try:
            return Keyring.open(keys, data_dir, settings.master_key)
        except Conflict:
            return Keyring.open(keys, data_dir, settings.master_key)
    except BaseException:
        keys.close()
        raise


__all__ = [
    "DATABASE_FILE",
    "KEYRING_FILE",
    "SqlStore",
    "Store",
    "check_database_urls",
    "open_database",
    "open_keyring",
    "open_store",
]
