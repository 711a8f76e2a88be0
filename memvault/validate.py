"""Input checks shared by every entry point. Each failure is an `Invalid` naming the field.

Messages describe the problem (too long, wrong type), never echo the value: the value may be
user content, and errors reach logs.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from memvault.errors import Invalid

E = TypeVar("E", bound=enum.Enum)
MAX_ID_LENGTH = 128
MAX_SHORT_TEXT = 1024
MAX_TAGS = 64


def check_id(field: str, value: object) -> str:
    """Ids become parts of keys, file names and URLs: printable, no separators, bounded."""
    if not isinstance(value, str):
        raise Invalid(field, f"must be a string, not {type(value).__name__}")
    if not value or not value.strip():
        raise Invalid(field, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise Invalid(field, f"longer than {MAX_ID_LENGTH} characters")
    if value != value.strip():
        raise Invalid(field, "has leading or trailing white space")
    if not value.isprintable():  # control, format, separator (but plain space) characters
        raise Invalid(field, "contains control characters")
    if "/" in value or "\\" in value or value in {".", ".."}:
        raise Invalid(field, "contains a path separator")
    return value


def check_optional_id(field: str, value: object) -> str | None:
    return None if value is None else check_id(field, value)


def check_enum(field: str, value: object, kind: type[E]) -> E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in kind)
        raise Invalid(field, f"unknown value; expected one of: {allowed}") from None


def check_text(field: str, value: object, *, max_bytes: int, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise Invalid(field, f"must be a string, not {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise Invalid(field, "must not be empty")
    if len(value) > max_bytes:  # at least one byte a character: too long whatever it holds
        raise Invalid(field, f"is over the limit of {max_bytes} bytes")
    size = utf8_size(field, value)
    if size > max_bytes:
        raise Invalid(field, f"is {size} bytes, over the limit of {max_bytes}")
    return value


def utf8_size(field: str, value: str) -> int:
    """The bytes `value` takes in UTF-8. A string spelling a lone surrogate ("\\ud800", which JSON
    and Python allow) has none: it cannot be stored, sealed or tokenised, so it is `Invalid`."""
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise Invalid(field, "is not valid Unicode text (lone surrogate)") from None


def check_optional_text(
    field: str, value: object, *, max_bytes: int = MAX_SHORT_TEXT
) -> str | None:
    return None if value is None else check_text(field, value, max_bytes=max_bytes)


def check_number(field: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(field, f"must be a number, not {type(value).__name__}")
    if math.isnan(value) or not low <= value <= high:
        raise Invalid(field, f"must be between {low:g} and {high:g}")
    return float(value)


def check_optional_number(field: str, value: object, low: float, high: float) -> float | None:
    return None if value is None else check_number(field, value, low, high)


def check_bool(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise Invalid(field, f"must be true or false, not {type(value).__name__}")
    return value


def check_json(field: str, value: Any, *, max_bytes: int, object_only: bool = False) -> Any:
    """A caller-owned JSON value: must serialise, and fit the size limit once serialised."""
    if value is None:
        return None
    if object_only and not isinstance(value, dict):
        raise Invalid(field, f"must be a JSON object, not {type(value).__name__}")
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise Invalid(field, "is not JSON-serialisable") from None
    size = utf8_size(field, encoded)  # a lone surrogate in a string or key serialises
    if size > max_bytes:
        raise Invalid(field, f"is over the limit of {max_bytes} bytes once serialised")
    return value


def check_time(field: str, value: object) -> datetime:
    """A datetime or ISO 8601 string; naive values are taken as UTC."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise Invalid(field, "is not an ISO 8601 date-time") from None
    if not isinstance(value, datetime):
        raise Invalid(field, f"must be a date-time, not {type(value).__name__}")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # 9999-12-31T23:00-05:00 is past the last day in UTC
        raise Invalid(field, "is out of range once in UTC") from None


def check_optional_time(field: str, value: object) -> datetime | None:
    return None if value is None else check_time(field, value)


def check_strings(field: str, value: object, *, ids: bool = False) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise Invalid(field, "must be a list of strings")
    items = list(value)
    if len(items) > MAX_TAGS:
        raise Invalid(field, f"has more than {MAX_TAGS} items")
    if ids:
        return tuple(check_id(field, item) for item in items)
    return tuple(check_text(field, item, max_bytes=256) for item in items)


def check_limit(field: str, value: object, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(field, f"must be an integer, not {type(value).__name__}")
    if not 1 <= value <= high:
        raise Invalid(field, f"must be between 1 and {high}")
    return value


def check_keys(field: str, given: Iterable[str], allowed: Iterable[str]) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise Invalid(field, f"unknown field(s): {', '.join(unknown)}")
