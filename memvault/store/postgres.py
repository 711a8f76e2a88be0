"""PostgreSQL backend: a connection pool, READ COMMITTED writes, snapshot reads.

Writers do not take one global lock as on SQLite. Every `SqlStore` write to a user's data starts by
bumping that user's revision (`UPDATE users ... RETURNING`), which row-locks the user until
commit, so writes to one user are serialised exactly as under SQLite's single writer, while
different users write in parallel. Reads run at REPEATABLE READ, READ ONLY: one snapshot per
call, never waiting for writers. Backups are the operator's (pg_dump, base backups, PITR), so
`backup()` does nothing.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.sql import SQL, Identifier
from psycopg_pool import ConnectionPool

from memvault.errors import Conflict
from memvault.store.database import Dialect, Row

POSTGRES = Dialect(name="postgresql", blob="BYTEA", real="DOUBLE PRECISION", bigint="BIGINT")
URL_SCHEMES = ("postgresql://", "postgres://")
_MIGRATION_LOCK_KEY = 0x6D656D7661756C74  # "memvault": one schema change at a time, per database

Connection = psycopg.Connection[Row]


def is_postgres_url(url: str | None) -> bool:
    return url is not None and url.startswith(URL_SCHEMES)


def schema_url(url: str, schema: str) -> str:
    """`url` with its connections confined to `schema` (a keyring apart, a test's own tables)."""
    joiner = "&" if "?" in url else "?"
    return f"{url}{joiner}options=-csearch_path%3D{schema}"


@contextmanager
def temporary_schema(url: str, prefix: str = "tmp") -> Iterator[str]:
    """A new, uniquely named schema in `url`'s database, dropped with all it holds on exit.

    Yields the URL confined to it: for tests, benchmarks and trial migrations, which may run
    side by side in one database.
    """
    name = f"{prefix}_{uuid.uuid4().hex}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(name)))
    try:
        yield schema_url(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(SQL("DROP SCHEMA {} CASCADE").format(Identifier(name)))


@functools.lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """Portable `?` placeholders to psycopg's `%s` (a literal `%` must be doubled first)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _conflict(exc: psycopg.errors.IntegrityError) -> Conflict:
    # The primary message names the constraint, never the values (those are in DETAIL).
    reason = exc.diag.message_primary or type(exc).__name__
    return Conflict("the write clashes with stored data", details={"reason": reason})


class _PostgresTransaction:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def _run(self, sql: str, params: Sequence[Any]) -> psycopg.Cursor[Row]:
        try:
            return self._conn.execute(to_pyformat(sql), params)
        except psycopg.errors.IntegrityError as exc:
            raise _conflict(exc) from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._run(sql, params).rowcount

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        try:
            with self._conn.cursor() as cur:
                cur.executemany(to_pyformat(sql), params)
        except psycopg.errors.IntegrityError as exc:
            raise _conflict(exc) from None

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._run(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self._run(sql, params).fetchone()


class PostgresDatabase:
    """A `Database` on a psycopg pool; safe to share between threads and with other processes."""

    dialect = POSTGRES

    def __init__(self, url: str, *, pool_size: int = 8, connect_timeout: float = 10.0) -> None:
        self.url = url
        self._pool: ConnectionPool[Connection] = ConnectionPool(
            url,
            min_size=1,
            max_size=max(2, pool_size),
            kwargs={"autocommit": True, "row_factory": dict_row},
            timeout=connect_timeout,
            open=False,
            name="memvault",
        )
        self._pool.open(wait=True, timeout=connect_timeout)

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[_PostgresTransaction]:
        with self._pool.connection() as conn:
            conn.execute(begin)
            try:
                yield _PostgresTransaction(conn)
            except BaseException:
                if not conn.broken:  # a lost connection has nothing to roll back; the pool drops it
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def write(self) -> Iterator[_PostgresTransaction]:
        with self._transaction("BEGIN ISOLATION LEVEL READ COMMITTED") as tx:
            yield tx

    @contextmanager
    def read(self) -> Iterator[_PostgresTransaction]:
        with self._transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") as tx:
            yield tx

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold the database-wide schema lock: servers starting together migrate one at a time."""
        with self._pool.connection() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
            try:
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK_KEY,))

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A pooled autocommit connection, for work outside transactions (NOTIFY, for one)."""
        with self._pool.connection() as conn:
            yield conn

    def backup(self, label: str) -> None:
        return None

    def ping(self) -> None:
        with self.read() as tx:
            tx.one("SELECT 1 AS ok")

    def close(self) -> None:
        self._pool.close()
