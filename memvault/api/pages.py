"""The one shape of every list answer: `{"items": [...], "next": cursor-or-null}`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class _Item(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


def page(items: Sequence[_Item], limit: int | None, last: str | None) -> dict[str, Any]:
    """`next` is the cursor after `last` when the page came back full, so more may follow."""
    full = limit is not None and len(items) >= limit
    return {"items": [item.to_dict() for item in items], "next": last if full else None}
