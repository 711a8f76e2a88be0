"""SQLite backend: one writer connection, a reader connection per thread, WAL.

Writes are serialised on one connection (and across processes by SQLite's own lock, taken up
front with BEGIN IMMEDIATE so a read-then-write never deadlocks); `synchronous=FULL` makes a
turn durable when the call returns. Readers see committed snapshots and never block the writer.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from memvault.errors import Conflict
from memvault.model import utcnow
from memvault.store.database import Dialect, Row, Statement

SQLITE = Dialect(name="sqlite", blob="BLOB", real="REAL", bigint="INTEGER")
_BUSY_TIMEOUT_MS = 30_000


def _dict_row(cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, values, strict=True)}


class _SqliteTransaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def _run(self, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        try:
            return self._conn.execute(sql, params)
        except sqlite3.IntegrityError as exc:
            raise _conflict(exc) from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._run(sql, params).rowcount

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        try:
            self._conn.executemany(sql, params)
        except sqlite3.IntegrityError as exc:
            raise _conflict(exc) from None

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._run(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._run(sql, params).fetchone()
        return row

    # In process there is no round trip to save: these run each statement at once.

    def ones(self, statements: Sequence[Statement]) -> list[Row | None]:
        return [self.one(sql, params) for sql, params in statements]

    def alls(self, statements: Sequence[Statement]) -> list[list[Row]]:
        return [self.all(sql, params) for sql, params in statements]

    def send(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._run(sql, params)

    def send_many(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        self.executemany(sql, params)


def _conflict(exc: sqlite3.IntegrityError) -> Conflict:
    # The driver's message names tables and columns, never values: safe to keep as detail.
    return Conflict("the write clashes with stored data", details={"reason": str(exc)})


class SqliteDatabase:
    dialect = SQLITE

    def __init__(self, path: Path, *, synchronous: str = "FULL") -> None:
        if synchronous not in {"FULL", "NORMAL"}:
            raise ValueError("synchronous must be FULL or NORMAL")
        self.path = path
        self._synchronous = synchronous
        self._writer = self._connect()
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1e3
        )
        conn.row_factory = _dict_row
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextmanager
    def write(self) -> Iterator[_SqliteTransaction]:
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTransaction(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    @contextmanager
    def read(self) -> Iterator[_SqliteTransaction]:
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            yield _SqliteTransaction(conn)
        finally:
            conn.execute("COMMIT")

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        rows: list[Row] = self._reader().execute(sql, params).fetchall()
        return rows

    def backup(self, label: str) -> str:
        stamp = utcnow().strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.{label}.{stamp}.bak")
        with self._write_lock, sqlite3.connect(target) as dest:
            self._writer.backup(dest)
        dest.close()
        return str(target)

    def ping(self) -> None:
        with self.read() as tx:
            tx.one("SELECT 1 AS ok")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
        with self._write_lock:
            self._writer.close()
