"""PostgreSQL backend: a connection pool, READ COMMITTED writes, snapshot reads.

Writers do not take one global lock as on SQLite. Every `SqlStore` write to a user's data starts by
bumping that user's revision (`UPDATE users ... RETURNING`), which row-locks the user until
commit, so writes to one user are serialised exactly as under SQLite's single writer, while
different users write in parallel. Reads run at REPEATABLE READ, READ ONLY: one snapshot per
call, never waiting for writers. Backups are the operator's (pg_dump, base backups, PITR), so
`backup()` does nothing.

Failures the database causes on its own are translated, never passed up as driver errors: a
deadlock, a serialization failure or a connection lost before the commit is `RolledBack`
(the store runs such a unit of work again); no free connection in time, or a connection lost
during the commit itself, is `Unavailable`. A pooled connection the server ended while it sat
idle (a restart, `pg_terminate_backend`) is replaced before the transaction starts on it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.sql import SQL, Identifier
from psycopg_pool import ConnectionPool, PoolTimeout

from memvault.errors import Conflict, Unavailable
from memvault.store.database import RETRY_AFTER_SECONDS, Dialect, RolledBack, Row

log = logging.getLogger(__name__)
# Errors after which the server has undone the whole transaction (psycopg does not make the
# two specific ones subclasses of the general one).
ROLLED_BACK = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.TransactionRollback,
)

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


def _unavailable(message: str, **details: Any) -> Unavailable:
    return Unavailable(message, details={"retry_after": RETRY_AFTER_SECONDS, **details})


def _translated(exc: psycopg.Error, conn: Connection) -> Exception:
    """What a statement's failure inside a transaction means to the store. A lost connection
    is a rollback: the server ends a transaction whose client is gone without committing it."""
    if isinstance(exc, psycopg.errors.IntegrityError):
        return _conflict(exc)
    if isinstance(exc, ROLLED_BACK) or conn.broken:
        return RolledBack(type(exc).__name__)
    return exc


class _PostgresTransaction:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def _run(self, sql: str, params: Sequence[Any]) -> psycopg.Cursor[Row]:
        try:
            return self._conn.execute(to_pyformat(sql), params)
        except psycopg.Error as exc:
            raise _translated(exc, self._conn) from None

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._run(sql, params).rowcount

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        try:
            with self._conn.cursor() as cur:
                cur.executemany(to_pyformat(sql), params)
        except psycopg.Error as exc:
            raise _translated(exc, self._conn) from None

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._run(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self._run(sql, params).fetchone()


def _roll_back(conn: Connection) -> None:
    """Roll back after a failure, keeping that failure the one raised. A lost connection has
    nothing to roll back; one that fails to roll back is left to the pool, which discards it."""
    if not conn.broken:
        with contextlib.suppress(psycopg.Error):
            conn.execute("ROLLBACK")


def _commit(conn: Connection) -> None:
    """Commit. A commit the server refused rolled everything back; a connection lost during
    the commit leaves the outcome unknown, so that one is not run again."""
    try:
        conn.execute("COMMIT")
    except ROLLED_BACK as exc:
        raise RolledBack(type(exc).__name__) from None
    except psycopg.OperationalError:
        if not conn.broken:
            raise
        raise _unavailable(
            "the database connection was lost while committing", outcome="unknown"
        ) from None


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
        conn = self._begin(begin)
        try:
            try:
                yield _PostgresTransaction(conn)
            except BaseException:
                _roll_back(conn)
                raise
            _commit(conn)
        finally:
            self._pool.putconn(conn)  # a broken connection is closed and replaced by the pool

    def _begin(self, begin: str) -> Connection:
        """A pooled connection with a transaction begun on it.

        A connection the server ended while it sat in the pool fails here, before anything
        was done on it: the pool then checks all its idle connections (after a restart they
        are all dead) and the transaction begins on a fresh one.
        """
        for _ in range(2):
            conn = self._getconn()
            try:
                conn.execute(begin)
            except psycopg.Error as exc:
                self._pool.putconn(conn)
                if not conn.broken:
                    raise
                log.warning(
                    "a pooled connection was dead (%s); checking the pool", type(exc).__name__
                )
                self._pool.check()
                continue
            return conn
        raise _unavailable("the database is unavailable")

    def _getconn(self) -> Connection:
        try:
            return self._pool.getconn()
        except PoolTimeout:  # every connection busy, or the server does not answer
            raise _unavailable("no database connection became available in time") from None

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
