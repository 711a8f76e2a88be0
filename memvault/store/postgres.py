"""PostgreSQL backend: a connection pool, READ COMMITTED writes, snapshot reads.

Writers do not take one global lock as on SQLite. Every `SqlStore` write to a user's data starts by
bumping that user's revision (`... RETURNING revision`), which row-locks the user until
commit, so writes to one user are serialised exactly as under SQLite's single writer, while
different users write in parallel. Reads run at REPEATABLE READ, READ ONLY: one snapshot per
call, never waiting for writers. Backups are the operator's (pg_dump, base backups, PITR), so
`backup()` does nothing.

Each round trip to the server costs far more than the statement it carries, so a transaction
sends BEGIN with its first statement, and statements nobody waits on (`Transaction.send`) with
the next one that is waited on, or with COMMIT, in one pipeline.

Failures the database causes on its own are translated, never passed up as driver errors: a
deadlock, a serialization failure or a connection lost before the commit is `RolledBack`
(the store runs such a unit of work again); no free connection in time, or a connection lost
with the commit in flight, is `Unavailable`. A pooled connection the server ended while it sat
idle (a restart, `pg_terminate_backend`) is replaced before the transaction starts on it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import select
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.pq import ConnStatus, TransactionStatus
from psycopg.rows import dict_row
from psycopg.sql import SQL, Identifier
from psycopg_pool import ConnectionPool, PoolTimeout

from memvault.errors import Conflict, Unavailable
from memvault.store.database import RETRY_AFTER_SECONDS, Dialect, RolledBack, Row, Statement
from memvault.store.pgurl import check_url

log = logging.getLogger(__name__)
# Errors after which the server has undone the whole transaction (psycopg does not make the
# two specific ones subclasses of the general one).
ROLLED_BACK = (
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.TransactionRollback,
)

POSTGRES = Dialect(name="postgresql", blob="BYTEA", real="DOUBLE PRECISION", bigint="BIGINT")
_MIGRATION_LOCK_KEY = 0x6D656D7661756C74  # "memvault": one schema change at a time, per database

Connection = psycopg.Connection[Row]
Cursor = psycopg.Cursor[Row]


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
    is a rollback: the server ends a transaction whose client is gone without committing it.
    It is named as such whatever the driver saw (in a pipeline, the server's last words are
    lost with the stream)."""
    if isinstance(exc, psycopg.errors.IntegrityError):
        return _conflict(exc)
    if isinstance(exc, ROLLED_BACK):
        return RolledBack(type(exc).__name__)
    if conn.broken:
        return RolledBack("ConnectionLost")
    return exc


def _translated_commit(exc: psycopg.Error, conn: Connection) -> Exception:
    """As `_translated`, for a batch that ends with COMMIT: a connection lost with the COMMIT
    in flight leaves the outcome unknown, so that write must not run again."""
    if conn.broken:
        return _unavailable("the database connection was lost while committing", outcome="unknown")
    return _translated(exc, conn)


@dataclass(frozen=True)
class _Held:
    """A statement not sent yet: it waits for the next one that needs an answer, or COMMIT."""

    sql: str
    params: Sequence[Any]
    many: bool = False  # then `params` is a list of parameter rows

    def run(self, conn: Connection) -> psycopg.Cursor[Row]:
        cursor = conn.cursor()
        if self.many:
            cursor.executemany(to_pyformat(self.sql), self.params)
        else:
            cursor.execute(to_pyformat(self.sql), self.params)
        return cursor


def _pipeline(conn: Connection, statements: int) -> AbstractContextManager[object]:
    """Pipeline mode for more than one statement, where libpq has it: the batch then costs one
    round trip. Without it, each statement simply runs in turn."""
    if statements > 1 and psycopg.Pipeline.is_supported():
        return conn.pipeline()
    return contextlib.nullcontext()


class _PostgresTransaction:
    """A transaction that waits on the server as rarely as it can.

    BEGIN is not sent on its own: it waits for the first statement. Statements given to `send`
    wait for the next statement whose answer is needed, or for COMMIT. Whatever waited goes out
    with that statement in one pipeline, one round trip; the server still runs everything in
    the order given, so rows are locked in that order, and a failure aborts the rest.
    """

    def __init__(self, conn: Connection, begin: str) -> None:
        self._conn = conn
        self._held = [_Held(begin, ())]
        self._sent = False  # whether anything (BEGIN first) has gone to the server

    def _flush(self, statements: Sequence[_Held], *, commit: bool = False) -> list[Cursor]:
        """Send what was held back, then `statements`; return the cursors of `statements`."""
        batch, self._held = [*self._held, *statements], []
        self._sent = True
        try:
            with _pipeline(self._conn, len(batch)):
                cursors = [statement.run(self._conn) for statement in batch]
        except psycopg.Error as exc:
            translate = _translated_commit if commit else _translated
            raise translate(exc, self._conn) from None
        return cursors[len(batch) - len(statements) :]

    def _run(self, sql: str, params: Sequence[Any]) -> Cursor:
        return self._flush([_Held(sql, params)])[0]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._run(sql, params).rowcount

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        self._flush([_Held(sql, list(params), many=True)])

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self._run(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self._run(sql, params).fetchone()

    def ones(self, statements: Sequence[Statement]) -> list[Row | None]:
        return [rows[0] if rows else None for rows in self.alls(statements)]

    def alls(self, statements: Sequence[Statement]) -> list[list[Row]]:
        cursors = self._flush([_Held(sql, params) for sql, params in statements])
        return [cursor.fetchall() for cursor in cursors]

    def send(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._held.append(_Held(sql, params))

    def send_many(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        rows = list(params)  # taken now: the caller's iterable need not outlive the call
        if rows:
            self._held.append(_Held(sql, rows, many=True))

    def commit(self) -> None:
        """Send what was held back and COMMIT, in one round trip (nothing, if nothing was
        ever asked of this transaction). A held-back statement that fails aborts the batch
        before the COMMIT; a commit the server refuses has rolled everything back itself."""
        if not self._sent and len(self._held) == 1:
            return
        self._flush([_Held("COMMIT", ())], commit=True)

    def roll_back(self) -> None:
        """Roll back after a failure, keeping that failure the one raised. A lost connection
        has nothing to roll back; one that fails to roll back is left to the pool, which
        discards it."""
        self._held = []
        if not self._sent or self._conn.broken:
            return
        if self._conn.info.transaction_status != TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("ROLLBACK")


def _closed_by_server(conn: Connection) -> bool:
    """Whether the server has ended this idle pooled connection (a restart, a failover,
    `pg_terminate_backend`). It said so on the socket before closing it, so finding out costs
    no round trip: nothing else arrives unasked on a connection that does not LISTEN."""
    poller = select.poll()
    poller.register(conn.pgconn.socket, select.POLLIN)
    for _ in range(4):  # its last words (a FATAL error), then the end of the stream
        if conn.pgconn.status == ConnStatus.BAD or not poller.poll(0):
            break
        with contextlib.suppress(psycopg.OperationalError):
            conn.pgconn.consume_input()
    return conn.pgconn.status == ConnStatus.BAD


class PostgresDatabase:
    """A `Database` on a psycopg pool; safe to share between threads and with other processes.

    The URL is checked with one connection before the pool opens (`check_url`): a URL that
    does not work fails at once with an error naming `field`, the setting it came from, and
    leaves no pool or thread behind. `connect_timeout` is how long a call waits for a pooled
    connection."""

    dialect = POSTGRES

    def __init__(
        self,
        url: str,
        *,
        field: str = "database_url",
        pool_size: int = 8,
        connect_timeout: float = 10.0,
    ) -> None:
        check_url(url, field)
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
        conn = self._live_connection()
        tx = _PostgresTransaction(conn, begin)
        try:
            try:
                yield tx
                tx.commit()
            except BaseException:
                tx.roll_back()
                raise
        finally:
            self._pool.putconn(conn)  # a broken connection is closed and replaced by the pool

    def _live_connection(self) -> Connection:
        """A pooled connection the server has not ended while it sat in the pool.

        One it has ended is found out before anything is sent on it: the pool then checks all
        its idle connections (after a restart they are all dead) and the transaction starts on
        a fresh one.
        """
        for _ in range(2):
            conn = self._getconn()
            if not _closed_by_server(conn):
                return conn
            self._pool.putconn(conn)
            log.warning("a pooled connection was closed by the server; checking the pool")
            self._pool.check()
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

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run one statement on its own, outside a transaction block: it sees a snapshot of its
        own and costs one round trip, where a transaction adds BEGIN and COMMIT to it. For
        reads of a single statement; a failure is translated as in a transaction."""
        conn = self._live_connection()
        try:
            return conn.execute(to_pyformat(sql), params).fetchall()
        except psycopg.Error as exc:
            raise _translated(exc, conn) from None
        finally:
            self._pool.putconn(conn)

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

    def backup(self, label: str) -> str | None:
        return None

    def ping(self) -> None:
        with self.read() as tx:
            tx.one("SELECT 1 AS ok")

    def close(self) -> None:
        self._pool.close()
