"""The one shape of every list answer: `{"items": [...], "next": cursor-or-null}`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from memvault.errors import Invalid

MAX_OFFSET = 2**63 - 1  # the largest integer SQLite and PostgreSQL (bigint) hold


class _Item(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def page(items: Sequence[_Item], limit: int | None, last: str | None) -> dict[str, Any]:
    """`next` is the cursor after `last` when the page came back full, so more may follow."""
    full = limit is not None and len(items) >= limit
    return {"items": [item.to_dict() for item in items], "next": last if full else None}


def offset_cursor(cursor: str | None) -> int:
    """The number a numeric cursor stands for (0 without one). Only ASCII digits, and only what
    the database can compare: "²" is a digit to `str.isdigit` and not to `int`."""
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit()) or int(cursor) > MAX_OFFSET:
        raise Invalid("cursor", "is not a cursor from this list")
    return int(cursor)
