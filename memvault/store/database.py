"""The narrow interface the SQL store needs from a database driver.

`SqlStore` speaks portable SQL with `?` placeholders through these two protocols, so SQLite and
PostgreSQL differ only in how connections, transactions, placeholders and types are handled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

Row = dict[str, Any]


class ChangeSet(NamedTuple):
    """What a per-user cache must apply to catch up; see `Store.changes_since`."""

    revision: int
    reset: bool
    turns: list[Row]
    memories: list[Row]
    tombstones: list[Row]


# One `append_turns` call: (user_id, session_id, new_session, turn rows, now).
TurnGroup = tuple[str, str, Row, Sequence[Row], str]


@dataclass(frozen=True)
class Dialect:
    """What differs in the DDL between backends."""

    name: str
    blob: str
    real: str
    bigint: str

    def ddl(self, statement: str) -> str:
        return statement.format(blob=self.blob, real=self.real, bigint=self.bigint)


class Transaction(Protocol):
    """One open transaction. Duplicate keys surface as `memvault.errors.Conflict`."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; return the number of rows it changed."""
        ...

    def executemany(self, sql: str, params: Iterable[Sequence[Any]]) -> None: ...
    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...
    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...


class Database(Protocol):
    dialect: Dialect

    def write(self) -> AbstractContextManager[Transaction]:
        """A write transaction, serialised with every other writer (in and across processes)."""
        ...

    def read(self) -> AbstractContextManager[Transaction]:
        """A consistent read-only snapshot that never waits for writers."""
        ...

    def backup(self, label: str) -> str | None:
        """Copy the database aside before a schema change; return where, or None if not done."""
        ...

    def ping(self) -> None: ...
    def close(self) -> None: ...
