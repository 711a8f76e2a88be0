"""Time expressions in queries ("yesterday", "last week", "in May", "3 days ago", "June 5",
"last summer", "between April and June") as windows.

People ask a memory about time the way they speak: relative to the moment of asking. Resolving
the phrase against `now` (the question's own date in evaluations) turns it into a half-open
UTC window [start, end) that search uses as a ranking signal, or as a filter when asked.
Only unambiguous phrases are recognised: "may" alone is a verb, "in May" is a month.
"""

from __future__ import annotations

import re
from collections.abc import Set
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

# what happened on a day is often told in the days after it ("I went to Boston yesterday"):
# the window of a date named in a query runs on for a little while
TOLD_WITHIN = timedelta(days=3)
# meteorological seasons of the northern hemisphere, by their first month; winter runs from
# December into the next year
SEASONS = {"spring": 3, "summer": 6, "autumn": 9, "fall": 9, "winter": 12}

_MONTH_NAMES = "|".join(sorted(MONTHS, key=len, reverse=True))
_NUMBER = r"\d{1,3}|" + "|".join(sorted(NUMBERS, key=len, reverse=True))
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?:,?\s+(\d{4}))?"
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, re.IGNORECASE))
    for name, pattern in (
        ("ago", rf"\b(?:(?:a\s+)?({_NUMBER})\s+(day|week|month|year)s?\s+ago)\b"),
        ("past", rf"\b(?:past|last|previous)\s+({_NUMBER})\s+(day|week|month|year)s?\b"),
        (
            "relative_day",
            r"\b(the day before yesterday|last night|today|tonight|this morning|this evening"
            r"|yesterday)\b",
        ),
        ("iso_date", r"\b(\d{4})-(\d{2})-(\d{2})\b"),
        ("date", rf"\b({_MONTH_NAMES})\.?\s+{_DAY}{_YEAR}\b(?!\s*(?:[:.]\d|am\b|pm\b))"),
        ("day_month", rf"\b{_DAY}\s+(?:of\s+)?({_MONTH_NAMES})\.?{_YEAR}\b"),
        (
            "months",
            rf"\b(?:in|between|from|during)\s+({_MONTH_NAMES})\.?\s+(?:and|to|through|until)"
            rf"\s+({_MONTH_NAMES})\.?{_YEAR}\b",
        ),
        (
            "season",
            r"\b(?:(last|this|past|previous)\s+|((?:in|during|over)\s+(?:the\s+)?))?"
            r"(spring|summer|autumn|fall|winter)(?:\s+(?:of\s+)?(\d{4}))?\b",
        ),
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
        if word == "last night":  # the evening before and the small hours of today
            return today - timedelta(hours=6), today + timedelta(hours=6)
        back = {"yesterday": 1, "the day before yesterday": 2}.get(word, 0)
        start = today - timedelta(days=back)
        return start, start + timedelta(days=1)
    if kind in ("iso_date", "date", "day_month"):
        return _date_window(kind, groups, now)
    if kind == "months":  # "between April and June": the first month to the end of the last
        opening, closing = MONTHS[(groups[0] or "").lower()], MONTHS[(groups[1] or "").lower()]
        start, _ = _month_window(_latest_year(opening, groups[2], now), opening)
        _, end = _month_window(start.year + (closing < opening), closing)
        return start, end
    if kind == "season":
        return _season_window(groups, now)
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
        latest = _latest_year(month, None, now)
        if (prefix or "").lower() == "last" and month == now.month:
            latest -= 1
        return _month_window(latest, month)
    year_start = int(groups[0] or "")
    return datetime(year_start, 1, 1, tzinfo=UTC), datetime(year_start + 1, 1, 1, tzinfo=UTC)


def _latest_year(month: int, year: str | None, now: datetime) -> int:
    """The year given, or the latest year in which `month` has begun by `now`."""
    if year is not None:
        return int(year)
    return now.year if month <= now.month else now.year - 1


def _date_window(
    kind: str, groups: tuple[str | None, ...], now: datetime
) -> tuple[datetime, datetime]:
    """A day and the days it is told in (`TOLD_WITHIN`): "2024-03-05", "June 5", "5th of June
    2024". Without a year, the latest such day up to `now`: people ask a memory about the
    past. A day that does not exist (February 30) raises ValueError, and the words are not
    taken as a date."""
    if kind == "iso_date":
        year, month, day = (int(g or "") for g in groups)
    else:
        name, day_text, year_text = groups if kind == "date" else (groups[1], groups[0], groups[2])
        if name == "may":
            raise ValueError("'may' written small is the verb ('I may 5 times')")
        month, day = MONTHS[(name or "").lower()], int(day_text or "")
        year = int(year_text) if year_text else now.year
        if year_text is None and datetime(year, month, day, tzinfo=UTC) > now:
            year -= 1
    start = datetime(year, month, day, tzinfo=UTC)
    return start, start + TOLD_WITHIN


def _season_window(groups: tuple[str | None, ...], now: datetime) -> tuple[datetime, datetime]:
    """Three months: the season of the year given, else the latest one begun by `now`; with
    "last" or "previous", the one before the season under way; with "this", this year's. A
    season's name counts only with one of those, a year, or "in" or "during" before it."""
    which, preposition, name, year = groups
    if which is None and preposition is None and year is None:
        raise ValueError("alone, the word is a verb, a noun or a name (fall, spring, Summer)")
    first = SEASONS[(name or "").lower()]
    qualifier = (which or "").lower()
    if year is not None:
        begins = int(year)
    elif qualifier == "this":  # this year's, or the winter under way in January and February
        begins = now.year - 1 if first == 12 and now.month < 3 else now.year
    else:
        begins = now.year if now.month >= first else now.year - 1
        if qualifier in ("last", "previous") and (now.month - first) % 12 < 3:
            begins -= 1  # the season under way is not the last one
    start, _ = _month_window(begins, first)
    end_index = begins * 12 + first - 1 + 3
    return start, datetime(end_index // 12, end_index % 12 + 1, 1, tzinfo=UTC)


def resolve_time(query: str, now: datetime, *, names: Set[str] = frozenset()) -> TimeWindow | None:
    """The first time expression in `query`, resolved against `now` (an aware datetime).

    A month's name alone is someone's name when one of `names` (lower-case words) is that:
    "What did June say?" names June, while "in June" and "June 2023" stay times."""
    found: list[tuple[int, TimeWindow]] = []
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(query):
            if match.group(0).lower().rstrip(".") in names:
                continue
            try:
                start, end = _window(kind, match.groups(), now.astimezone(UTC))
            except (KeyError, ValueError, OverflowError):  # no such date, or off the calendar
                continue
            found.append((match.start(), TimeWindow(start, end, match.group(0))))
            break
    if not found:
        return None
    return min(found, key=lambda pair: pair[0])[1]
