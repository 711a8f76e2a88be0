"""Move a deployment from a SQLite data folder to PostgreSQL, as stored: nothing is decrypted.

Rows are copied byte for byte (ciphertexts stay ciphertexts) and the wrapped data keys go to the
target keyring unchanged, so the same master key opens the result. The copy goes user by user, each
user in one target transaction, after that user's key: a run that stops halfway is resumed by
running it again, which skips the users already in the target whose rows match the source, and
refuses to touch a user whose rows differ. At the end every table's row count and checksum is
compared between source and target. A dry run reads both sides and writes nothing.

Whatever can refuse the copy is asked before the target is written: every URL answers, the
source's schema is this version's, and the target keyring, if it has a check, has the source's.

Checksums are order-independent sums of per-row SHA-256 digests over a canonical encoding of
the values, so they do not depend on either database's collation or row order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memvault.crypto import KeyStore, SqliteKeyStore
from memvault.errors import Conflict, Invalid
from memvault.store import DATABASE_FILE, KEYRING_FILE
from memvault.store.database import Database, Row, Transaction
from memvault.store.migrations import MIGRATIONS, migrate
from memvault.store.pgkeys import PostgresKeyStore
from memvault.store.pgurl import check_url
from memvault.store.postgres import PostgresDatabase
from memvault.store.sqlite import SqliteDatabase

SQLITE_PREFIX = "sqlite://"
# Tables holding one user's rows, parents first (foreign keys); `users` is keyed by `id`.
USER_TABLES = (
    "users", "agents", "sessions", "turns", "memories", "tombstones", "daily_activity",
    "embeddings",
)  # fmt: skip
_NOT_COPIED = frozenset({"schema_migrations"})
_MODULUS = 2**256

Progress = Callable[[str], None]


@dataclass
class Digest:
    """Row count and an order-independent checksum of a set of rows."""

    rows: int = 0
    total: int = 0

    def add(self, rows: Iterable[Row]) -> Digest:
        for row in rows:
            encoded = json.dumps(
                [[k, _plain(row[k])] for k in sorted(row)], separators=(",", ":")
            ).encode()
            self.total = (self.total + int.from_bytes(hashlib.sha256(encoded).digest())) % _MODULUS
            self.rows += 1
        return self

    def merge(self, other: Digest) -> None:
        self.rows += other.rows
        self.total = (self.total + other.total) % _MODULUS

    @property
    def checksum(self) -> str:
        return f"{self.total:064x}"


def _plain(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": bytes(value).hex()}
    return value


@dataclass
class TableCheck:
    source: Digest = field(default_factory=Digest)
    target: Digest = field(default_factory=Digest)

    @property
    def ok(self) -> bool:
        return self.source == self.target

    def to_dict(self) -> dict[str, Any]:
        return {"source_rows": self.source.rows, "target_rows": self.target.rows,
                "source_checksum": self.source.checksum,
                "target_checksum": self.target.checksum, "ok": self.ok}  # fmt: skip


@dataclass
class Report:
    dry_run: bool
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    tables: dict[str, TableCheck] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.tables.values())

    def to_dict(self) -> dict[str, Any]:
        verb = "to_copy" if self.dry_run else "copied"
        return {
            "dry_run": self.dry_run,
            f"users_{verb}": len(self.copied),
            "users_already_there": len(self.skipped),
            "ok": self.ok,
            "tables": {name: check.to_dict() for name, check in self.tables.items()},
        }


def source_folder(url: str) -> Path:
    """`sqlite:///path/to/data-folder` (or the path of its database file) to the folder."""
    if not url.startswith(SQLITE_PREFIX):
        raise Invalid("from", "must be sqlite:///path/to/data-folder")
    path = Path(url.removeprefix(SQLITE_PREFIX))
    folder = path.parent if path.name == DATABASE_FILE else path
    for name in (DATABASE_FILE, KEYRING_FILE):
        if not (folder / name).is_file():
            raise Invalid("from", f"no {name} in that folder")
    return folder


class _Side:
    """One database and its keyring, with what the copy needs to ask of them."""

    def __init__(self, db: Database, keys: KeyStore | None) -> None:
        self.db = db
        self.keys = keys
        self.primary_keys: dict[str, tuple[str, ...]] = {}

    def user_rows(self, tx: Transaction, table: str, user_id: str) -> list[Row]:
        column = "id" if table == "users" else "user_id"
        return tx.all(f"SELECT * FROM {table} WHERE {column} = ?", (user_id,))

    def dump(self, user_id: str) -> dict[str, list[Row]]:
        with self.db.read() as tx:
            return {table: self.user_rows(tx, table, user_id) for table in USER_TABLES}

    def close(self) -> None:
        self.db.close()
        if self.keys is not None:
            self.keys.close()


def _open_source(folder: Path) -> tuple[_Side, list[str]]:
    """The source, read as it is (never migrated), and its tables beyond the per-user ones."""
    db = SqliteDatabase(folder / DATABASE_FILE)
    side = _Side(db, None)
    try:
        with db.read() as tx:
            versions = {int(r["version"]) for r in tx.all("SELECT version FROM schema_migrations")}
            tables = [r["name"] for r in tx.all(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite_%' ORDER BY rowid")]  # fmt: skip
            for table in tables:
                columns = tx.all(f"SELECT name, pk FROM pragma_table_info('{table}') WHERE pk > 0")
                ordered = sorted(columns, key=lambda c: int(c["pk"]))
                side.primary_keys[table] = tuple(c["name"] for c in ordered)
        if versions != {m.version for m in MIGRATIONS}:
            raise Invalid("from", "open it once with this memvault version first (schema differs)")
        side.keys = SqliteKeyStore(folder / KEYRING_FILE)
    except BaseException:
        side.close()
        raise
    shared = [t for t in tables if t not in USER_TABLES and t not in _NOT_COPIED]
    return side, shared


def _open_target(url: str, keyring_url: str | None, check: bytes, *, dry_run: bool) -> _Side:
    """The target, ready to be written: its keyring, if it has one, is the source's (found
    out before anything is written there)."""
    keys_field = "to" if keyring_url is None else "keyring_to"
    db = PostgresDatabase(url, field="to", pool_size=2)
    try:
        if dry_run:
            return _Side(db, None)
        if _keyring_check(keyring_url or url, keys_field) not in (None, check):
            raise Conflict(
                "the target keyring was created separately; migrate into a fresh keyring"
            )
        with db.exclusive():
            migrate(db)
        return _Side(db, PostgresKeyStore(keyring_url or url, field=keys_field))
    except BaseException:
        db.close()
        raise


def _keyring_check(url: str, field: str) -> bytes | None:
    """The check of the keyring at `url`, read without creating its tables (None: none yet)."""
    db = PostgresDatabase(url, field=field, pool_size=2)
    try:
        with db.read() as tx:
            present = tx.one("SELECT to_regclass('keyring_meta') IS NOT NULL AS present")
            if not (present and present["present"]):
                return None
            row = tx.one("SELECT value FROM keyring_meta WHERE name = 'check'")
    finally:
        db.close()
    return None if row is None else bytes(row["value"])


def _target_has_schema(target: _Side) -> bool:
    with target.db.read() as tx:
        row = tx.one("SELECT to_regclass('users') IS NOT NULL AS present")
    return bool(row and row["present"])


def _digests(dump: dict[str, list[Row]]) -> dict[str, Digest]:
    return {table: Digest().add(rows) for table, rows in dump.items()}


def _source_check(source: _Side) -> bytes:
    assert source.keys is not None
    check = source.keys.get_check()
    if check is None:
        raise Invalid("from", "the source keyring was never initialised")
    return check


def _copy_keyring_check(check: bytes, target: KeyStore) -> None:
    """The source's check into the target keyring (`_open_target` refused any other)."""
    if target.get_check() is None:
        target.set_check(check)


def _copy_user(source: _Side, target: _Side, user_id: str, dump: dict[str, list[Row]]) -> None:
    assert source.keys is not None and target.keys is not None
    wrapped, check = source.keys.get_wrapped(user_id), source.keys.get_check()
    assert check is not None  # `_copy_keyring_check` refused a source without one
    if wrapped is not None and target.keys.add_wrapped(user_id, wrapped, check) != wrapped:
        raise Conflict("the target holds another data key for a user", details={"user": user_id})
    with target.db.write() as tx:
        for table in USER_TABLES:
            rows = dump[table]
            if rows:
                columns = list(rows[0])
                tx.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' for _ in columns)})",
                    [[row[c] for c in columns] for row in rows],
                )


def _copy_shared(source: _Side, target: _Side, table: str) -> list[Row]:
    """Copy a deployment-wide table, keeping rows the target already has; return the source's."""
    with source.db.read() as tx:
        rows = tx.all(f"SELECT * FROM {table}")
    if rows:
        columns = list(rows[0])
        with target.db.write() as tx:
            tx.executemany(
                f"INSERT INTO {table} ({', '.join(columns)}) "
                f"VALUES ({', '.join('?' for _ in columns)}) ON CONFLICT DO NOTHING",
                [[row[c] for c in columns] for row in rows],
            )
    return rows


def _target_rows_like(
    target: _Side, table: str, keys: tuple[str, ...], rows: list[Row]
) -> list[Row]:
    """The target's rows with the same primary keys as `rows` (it may hold others of its own)."""
    wanted = {tuple(row[k] for k in keys) for row in rows}
    with target.db.read() as tx:
        found = tx.all(f"SELECT * FROM {table}")
    return [row for row in found if tuple(row[k] for k in keys) in wanted]


def migrate_to_postgres(
    source_url: str,
    target_url: str,
    *,
    keyring_url: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> Report:
    """Copy a SQLite data folder into PostgreSQL (see the module docstring); return the report."""
    say = progress or (lambda _: None)
    check_url(target_url, "to")  # every URL answers before anything is opened on it
    if keyring_url is not None:
        check_url(keyring_url, "keyring_to")
    source, shared = _open_source(source_folder(source_url))
    try:
        check = _source_check(source)
        target = _open_target(target_url, keyring_url, check, dry_run=dry_run)
    except BaseException:
        source.close()
        raise
    try:
        report = Report(dry_run=dry_run)
        report.tables = {t: TableCheck() for t in (*USER_TABLES, *shared)}
        fresh_target = dry_run and not _target_has_schema(target)
        if target.keys is not None:
            _copy_keyring_check(check, target.keys)
        with source.db.read() as tx:
            user_ids = [r["id"] for r in tx.all("SELECT id FROM users ORDER BY id")]
        for number, user_id in enumerate(user_ids, 1):
            dump = source.dump(user_id)
            wanted = _digests(dump)
            there = {} if fresh_target else _digests(target.dump(user_id))
            if there and there["users"].rows:
                if there != wanted:
                    raise Conflict("a user in the target differs from the source; not overwritten",
                                   details={"user": user_id})  # fmt: skip
                report.skipped.append(user_id)
            else:
                if not dry_run:
                    _copy_user(source, target, user_id, dump)
                    there = _digests(target.dump(user_id))
                report.copied.append(user_id)
            for table in USER_TABLES:
                report.tables[table].source.merge(wanted[table])
                report.tables[table].target.merge(there.get(table) or Digest())
            if number % 100 == 0 or number == len(user_ids):
                say(f"users: {number}/{len(user_ids)}")
        for table in shared:
            if dry_run:
                with source.db.read() as tx:
                    rows = tx.all(f"SELECT * FROM {table}")
            else:
                rows = _copy_shared(source, target, table)
            report.tables[table].source.add(rows)
            if not fresh_target:
                keys = source.primary_keys[table]
                report.tables[table].target.add(_target_rows_like(target, table, keys, rows))
        return report
    finally:
        target.close()
        source.close()
