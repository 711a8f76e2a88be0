"""The narrow interface the SQL store needs from a database driver.

`SqlStore` speaks portable SQL with `?` placeholders through these two protocols, so SQLite and
PostgreSQL differ only in how connections, transactions, placeholders and types are handled.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, ParamSpec, Protocol, TypeVar

from memvault.errors import Unavailable

log = logging.getLogger(__name__)

Row = dict[str, Any]
P = ParamSpec("P")
T = TypeVar("T")

RETRY_ATTEMPTS = 3  # in all: a unit of work rolled back twice in a row gets a third run
RETRY_AFTER_SECONDS = 1  # what a client is told to wait when the database is unavailable
_BACKOFF_SECONDS = 0.05  # up to this (times the attempt) before running again, at random


class RolledBack(Unavailable):
    """The database undid the whole transaction before it committed: a deadlock, a
    serialization failure, or its connection lost mid-way. Nothing of it remains, so the same
    unit of work may run again (`retried`); if it is not, the caller hears 503."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            "the database rolled the transaction back; try again",
            details={"retry_after": RETRY_AFTER_SECONDS, "reason": reason},
        )


def retried(method: Callable[P, T]) -> Callable[P, T]:
    """Run `method` again when the database rolls its transaction back, `RETRY_ATTEMPTS`
    times in all, after a short random pause (two writers that deadlocked should not meet
    again at once).

    Only for a method that is exactly one transaction and nothing else: its arguments are
    all it depends on besides the database, and it has no effect outside the transaction.
    Then a rolled-back run left no trace and running it again is the same as running it once.
    """

    @functools.wraps(method)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        for attempt in range(1, RETRY_ATTEMPTS):
            try:
                return method(*args, **kwargs)
            except RolledBack as exc:
                log.warning(
                    "%s rolled back (%s); running it again, attempt %d of %d",
                    method.__qualname__, exc.details.get("reason"), attempt + 1, RETRY_ATTEMPTS,
                )  # fmt: skip
                time.sleep(random.uniform(0, _BACKOFF_SECONDS * attempt))
        return method(*args, **kwargs)

    return run


class ChangeSet(NamedTuple):
    """What a per-user cache must apply to catch up; see `Store.changes_since`."""

    revision: int
    reset: bool
    turns: list[Row]
    memories: list[Row]
    tombstones: list[Row]
    user: Row | None  # the user's row (its profile sealed), None when there is no such user
    agents: list[Row]  # all of the user's agents (their names sealed)
    recalled: list[Row]  # id and access_count of the memories recalled since `accessed`


# One `append_turns` call: (user_id, session_id, new_session, turn rows, now).
TurnGroup = tuple[str, str, Row, Sequence[Row], str]


class Unlearning(NamedTuple):
    """What a deletion of turns takes of the facts read from them, as `Vault` planned it
    (`memvault.mind.unlearn`), with what the plan was made over: the count and highest `rev` of
    the user's memories of kind `fact`, and the source turns it found. The store checks both in
    the deletion's transaction and raises `PlanOutdated` when they changed."""

    facts: tuple[int, int]
    sources: tuple[str, ...]
    deleted: tuple[str, ...]  # memory ids
    relinked: tuple[tuple[str, str | None, str | None], ...]  # id, superseded_by, valid_to


class PlanOutdated(Exception):
    """What a write was planned over changed before it committed; it wrote nothing, and the
    caller plans again."""


@dataclass(frozen=True)
class Dialect:
    """What differs in the DDL between backends."""

    name: str
    blob: str
    real: str
    bigint: str

    def ddl(self, statement: str) -> str:
        return statement.format(blob=self.blob, real=self.real, bigint=self.bigint)


# A statement and its parameters, for `Transaction.ones`.
Statement = tuple[str, Sequence[Any]]


class Transaction(Protocol):
    """One open transaction. Duplicate keys surface as `memvault.errors.Conflict`; a
    transaction the database undid on its own (deadlock, lost connection) as `RolledBack`.

    Statements run in the order they are given. Over a network every answer the caller waits
    for is a round trip, so a backend may hold statements back and send several at once: the
    ones sent with `send`, and the lists given to `ones`.
    """

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None: ...
    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...
    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...

    def ones(self, statements: Sequence[Statement]) -> list[Row | None]:
        """Run statements that need no answer from one another, in order; return the first
        row of each. A backend that pipelines sends them in one round trip."""
        ...

    def alls(self, statements: Sequence[Statement]) -> list[list[Row]]:
        """`ones`, with every row of each."""
        ...

    def send(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement whose answer nobody waits for. A backend may hold it back until
        the next statement that has an answer, or the commit, and send them together: its
        failure (a `Conflict`, say) can then surface there, at the latest when the transaction
        ends, and still undoes the whole transaction."""
        ...

    def send_many(self, sql: str, params: Iterable[Sequence[Any]]) -> None:
        """`executemany`, held back like `send`."""
        ...


class Database(Protocol):
    dialect: Dialect

    def write(self) -> AbstractContextManager[Transaction]:
        """A write transaction, serialised with every other writer (in and across processes).

        A database that cannot be reached raises `memvault.errors.Unavailable`. The body
        cannot be run again from here: a store method that is one whole transaction is
        decorated with `retried` for that.
        """
        ...

    def read(self) -> AbstractContextManager[Transaction]:
        """A consistent read-only snapshot that never waits for writers."""
        ...

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """One read statement on its own, in a snapshot of its own: where a transaction costs
        round trips (BEGIN and COMMIT on PostgreSQL), this costs one. For the reads that every
        search makes."""
        ...

    def backup(self, label: str) -> str | None:
        """Copy the database aside before a schema change; return where, or None if not done."""
        ...

    def ping(self) -> None: ...
    def close(self) -> None: ...
