"""Time expressions in queries ("yesterday", "last week", "in May", "3 days ago") as windows.

People ask a memory about time the way they speak: relative to the moment of asking. Resolving
the phrase against `now` (the question's own date in evaluations) turns it into a half-open
UTC window [start, end) that search uses as a ranking signal, or as a filter when asked.
Only unambiguous phrases are recognised: "may" alone is a verb, "in May" is a month.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

MONTHS = {
    name: number
    for number, names in enumerate(
        (
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ),
        start=1,
    )
    for name in names
}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
UNITS = {"day": 1, "week": 7, "month": 30, "year": 365}
NUMBERS = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "few": 3, "couple of": 2, "several": 4,
}  # fmt: skip

_MONTH_NAMES = "|".join(sorted(MONTHS, key=len, reverse=True))
_NUMBER = r"\d{1,3}|" + "|".join(sorted(NUMBERS, key=len, reverse=True))
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        ("ago", rf"\b(?:(?:a\s+)?({_NUMBER})\s+(day|week|month|year)s?\s+ago)\b"),
        ("past", rf"\b(?:past|last|previous)\s+({_NUMBER})\s+(day|week|month|year)s?\b"),
        ("relative_day", r"\b(today|tonight|this morning|this evening|yesterday)\b"),
        ("weekend", r"\b(last|this|past)\s+weekend\b"),
        ("relative", r"\b(last|this|past|previous)\s+(week|month|year)\b"),
        ("weekday", rf"\b(?:last|on|this|past)\s+({'|'.join(WEEKDAYS)})\b"),
        (
            "month",
            rf"\b(?:(in|during|last|this|early|late|mid)\s+)?({_MONTH_NAMES})\.?"
            rf"(?:,?\s+(\d{{4}}))?\b",
        ),
        ("year", r"\b(?:in|during|of|since)\s+(\d{4})\b"),
    )
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class TimeWindow:
    """A half-open UTC interval, and the words of the query that named it."""

    start: datetime
    end: datetime
    phrase: str


def _day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def _month_window(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _count(word: str) -> int:
    return int(word) if word.isdigit() else NUMBERS[word.lower()]


def _window(kind: str, groups: tuple[str | None, ...], now: datetime) -> tuple[datetime, datetime]:
    """The interval one matched pattern denotes; raises KeyError/ValueError for non-matches."""
    today = _day_start(now)
    if kind == "ago":
        days = _count(groups[0] or "") * UNITS[(groups[1] or "").lower()]
        centre = today - timedelta(days=days)
        slack = timedelta(days=max(1, days // 4))  # "two weeks ago" is not an exact date
        return centre - slack, centre + slack + timedelta(days=1)
    if kind == "past":
        days = _count(groups[0] or "") * UNITS[(groups[1] or "").lower()]
        return today - timedelta(days=days), now + timedelta(seconds=1)
    if kind == "relative_day":
        word = (groups[0] or "").lower()
        start = today - timedelta(days=1) if word == "yesterday" else today
        return start, start + timedelta(days=1)
    if kind == "weekend":
        saturday = today - timedelta(days=(today.weekday() - 5) % 7)
        if (groups[0] or "").lower() != "this" and saturday + timedelta(days=2) > now:
            saturday -= timedelta(days=7)
        return saturday, saturday + timedelta(days=2)
    if kind == "relative":
        which, unit = (groups[0] or "").lower(), (groups[1] or "").lower()
        back = 0 if which == "this" else 1
        if unit == "week":
            monday = today - timedelta(days=today.weekday()) - timedelta(weeks=back)
            return monday, monday + timedelta(weeks=1)
        if unit == "month":
            month_index = now.year * 12 + now.month - 1 - back
            return _month_window(month_index // 12, month_index % 12 + 1)
        first = now.year - back
        return datetime(first, 1, 1, tzinfo=UTC), datetime(first + 1, 1, 1, tzinfo=UTC)
    if kind == "weekday":
        target = WEEKDAYS.index((groups[0] or "").lower())
        back = (today.weekday() - target) % 7 or 7
        day = today - timedelta(days=back)
        return day, day + timedelta(days=1)
    if kind == "month":
        prefix, name, year = groups
        if name is None or (name.lower() == "may" and prefix is None and year is None):
            raise ValueError("the word is a verb, not a month")
        if prefix is None and year is None and len(name) <= 3:
            raise ValueError("a bare abbreviation is too ambiguous")
        month = MONTHS[name.lower().rstrip(".")]
        if year is not None:
            return _month_window(int(year), month)
        latest = now.year if month <= now.month else now.year - 1
        if (prefix or "").lower() == "last" and month == now.month:
            latest -= 1
        return _month_window(latest, month)
    year_start = int(groups[0] or "")
    return datetime(year_start, 1, 1, tzinfo=UTC), datetime(year_start + 1, 1, 1, tzinfo=UTC)


def resolve_time(query: str, now: datetime) -> TimeWindow | None:
    """The first time expression in `query`, resolved against `now` (an aware datetime)."""
    found: list[tuple[int, TimeWindow]] = []
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(query):
            try:
                start, end = _window(kind, match.groups(), now.astimezone(UTC))
            except (KeyError, ValueError):
                continue
            found.append((match.start(), TimeWindow(start, end, match.group(0))))
            break
    if not found:
        return None
    return min(found, key=lambda pair: pair[0])[1]
