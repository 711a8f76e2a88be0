"""A user's statistics: totals, time span, daily activity and streaks, from the store's counts.

Days are UTC days: a streak does not depend on where the server or the caller is.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any

from memvault.model import DailyActivity
from memvault.rows import optional_time
from memvault.store.database import Row


def user_stats(counts: Row, today: date) -> dict[str, Any]:
    """`Vault.stats` from `Store.counts`, with streaks counted up to `today`."""
    days = [
        DailyActivity(date.fromisoformat(r["day"]), int(r["turns"]), int(r["memories"]))
        for r in counts["daily_activity"]
    ]
    current, longest = streaks([d.day for d in days], today)
    return {
        "sessions": counts["sessions"],
        "turns": counts["turns"],
        "memories": counts["memories"],
        "first_at": optional_time(counts["first_at"]),
        "last_at": optional_time(counts["last_at"]),
        "by_channel": counts["by_channel"],
        "daily_activity": days,
        "current_streak": current,
        "longest_streak": longest,
    }


def streaks(days: Iterable[date], today: date) -> tuple[int, int]:
    """(current, longest) runs of consecutive active days; the current run may end yesterday."""
    longest = run = current = 0
    previous: date | None = None
    for day in sorted(set(days)):
        run = run + 1 if previous is not None and day - previous == timedelta(days=1) else 1
        longest = max(longest, run)
        if day <= today:
            current = run if (today - day).days <= 1 else 0
        previous = day
    return current, longest
