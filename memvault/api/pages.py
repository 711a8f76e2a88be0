"""The one shape of every list answer: `{"items": [...], "next": cursor-or-null}`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from memvault.errors import Invalid
from memvault.model import format_ts
from memvault.validate import check_id, check_time

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


def time_id_cursor(cursor: str | None) -> tuple[datetime | None, str | None]:
    """The time and id a keyset cursor (`time_id_next`) stands for; a bare time, as cursors
    were before they carried the id, stands for the time alone. An id holds no "/", so the
    first one ends the time."""
    if cursor is None:
        return None, None
    moment, slash, item_id = cursor.partition("/")
    when = check_time("cursor", moment)
    if not slash:
        return when, None
    try:
        return when, check_id("cursor", item_id)
    except Invalid:
        raise Invalid("cursor", "is not a cursor from this list") from None


def time_id_next(moment: datetime, item_id: str) -> str:
    """The cursor after an item of a list ordered by time, then id: both, so that items of the
    same time are neither skipped nor repeated between pages."""
    return f"{format_ts(moment)}/{item_id}"
