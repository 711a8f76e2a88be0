"""Turns, sessions and memories as callers give them, checked completely and built ready to seal.

Adding, updating and importing all go through these, so a field is accepted (and named in an
error) the same way whichever door it comes in by. Nothing here writes: a call that fails leaves
no trace.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from memvault import validate as v
from memvault.config import Settings
from memvault.errors import Invalid
from memvault.model import (
    Channel,
    MemoryKind,
    Modality,
    Role,
    SessionKind,
    Tier,
    Turn,
    format_ts,
    new_id,
)
from memvault.store.database import Row

TURN_FIELDS = (
    "role", "content", "speaker", "channel", "modality", "created_at", "metadata", "tool_calls",
    "tool_result", "intent", "confidence", "entities", "agent_id", "audio_ref", "audio_duration",
)  # fmt: skip
TURN_SLOTS = tuple(f.name for f in dataclasses.fields(Turn))


def optional_stamp(moment: datetime | None) -> str | None:
    """A nullable datetime as its timestamp column."""
    return None if moment is None else format_ts(moment)


def check_validity(valid_from: str | None, valid_to: str | None) -> None:
    """A memory holds from `valid_from` until `valid_to`: an end before the start would hide it
    from every moment. (Timestamp columns share one fixed-width format, so they compare as text.)"""
    if valid_from is not None and valid_to is not None and valid_to < valid_from:
        raise Invalid("valid_to", "is before valid_from")


def build_turn(
    settings: Settings,
    user_id: str,
    session_id: str,
    data: Mapping[str, Any],
    *,
    where: str,
    now: datetime,
) -> Turn:
    """A checked turn; `where` names it in errors (`turns[2]`). Its `seq` is the given one, or 0
    until the store numbers it."""
    v.check_keys(where, data, (*TURN_FIELDS, "id", "seq", "user_id", "session_id"))
    if "role" not in data:
        raise Invalid(f"{where}.role", "is required")
    limit = settings.max_json_bytes
    modality = v.check_enum(f"{where}.modality", data.get("modality", "text"), Modality)
    tool_calls = v.check_json(f"{where}.tool_calls", data.get("tool_calls"), max_bytes=limit)
    tool_result = v.check_json(f"{where}.tool_result", data.get("tool_result"), max_bytes=limit)
    audio_ref = v.check_optional_text(f"{where}.audio_ref", data.get("audio_ref"))
    has_payload = tool_calls is not None or tool_result is not None or audio_ref is not None
    content = v.check_text(
        f"{where}.content", data.get("content", ""),
        max_bytes=settings.max_content_bytes, allow_empty=has_payload,
    )  # fmt: skip
    created = data.get("created_at")
    return Turn(
        id=v.check_id(f"{where}.id", data["id"]) if "id" in data else new_id(),
        user_id=user_id,
        session_id=session_id,
        seq=_seq(f"{where}.seq", data.get("seq", 0)),
        role=v.check_enum(f"{where}.role", data["role"], Role),
        content=content,
        created_at=now if created is None else v.check_time(f"{where}.created_at", created),
        speaker=v.check_optional_text(f"{where}.speaker", data.get("speaker")),
        channel=v.check_enum(f"{where}.channel", data.get("channel", "ai"), Channel),
        modality=modality,
        audio_ref=audio_ref,
        audio_duration=v.check_optional_number(
            f"{where}.audio_duration", data.get("audio_duration"), 0, 86_400
        ),
        tool_calls=tool_calls,
        tool_result=tool_result,
        intent=v.check_optional_text(f"{where}.intent", data.get("intent")),
        confidence=v.check_optional_number(f"{where}.confidence", data.get("confidence"), 0, 1),
        entities=v.check_json(f"{where}.entities", data.get("entities"), max_bytes=limit),
        metadata=v.check_json(
            f"{where}.metadata", data.get("metadata") or {}, max_bytes=limit, object_only=True
        ),
        agent_id=v.check_optional_id(f"{where}.agent_id", data.get("agent_id")),
    )


def new_session(first: Turn, now: str) -> Row:
    """The session row a first turn opens: its kind follows that turn (a room, a call, a chat)."""
    kind = (
        SessionKind.GROUP
        if first.channel is Channel.GENERAL
        else SessionKind.VOICE
        if first.modality is Modality.AUDIO
        else SessionKind.CHAT
    )
    return {"kind": kind.value, "agent_id": first.agent_id, "created_at": now, "updated_at": now}


def session_fields(settings: Settings, given: Mapping[str, Any]) -> Row:
    """The session fields of an update as column values; one given as None is left out (it keeps
    its value)."""
    limit = settings.max_json_bytes
    checks: dict[str, Callable[[str, Any], Any]] = {
        "title": lambda f, x: v.check_text(f, x, max_bytes=1024),
        "summary": lambda f, x: v.check_text(f, x, max_bytes=settings.max_content_bytes),
        "kind": lambda f, x: v.check_enum(f, x, SessionKind).value,
        "intent": lambda f, x: v.check_text(f, x, max_bytes=1024),
        "confidence": lambda f, x: v.check_number(f, x, 0, 1),
        "entities": lambda f, x: v.check_json(f, x, max_bytes=limit),
        "metadata": lambda f, x: v.check_json(f, x, max_bytes=limit, object_only=True),
    }
    return {
        name: check(name, given[name])
        for name, check in checks.items()
        if given.get(name) is not None
    }


def _seq(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(field, "must be a whole number, 0 or more")
    return value


def with_seq(turn: Turn, seq: int) -> Turn:
    """The turn as stored. Cheaper than dataclasses.replace, which re-inspects the fields."""
    fields = {name: getattr(turn, name) for name in TURN_SLOTS}
    fields["seq"] = seq
    return Turn(**fields)


def _as_stored(value: Any) -> Any:
    """A JSON value as it reads back once sealed (tuples as lists, keys as strings): a memory
    built from the row just written then equals the one a read returns."""
    return None if value is None else json.loads(json.dumps(value))


def memory_fields(settings: Settings, data: Mapping[str, Any], where: str = "") -> Row:
    """Validate memory fields given by a caller into storable column values.

    `where` prefixes field names in errors (`memories[3].`) when checking an import.
    """
    max_text, max_json = settings.max_content_bytes, settings.max_json_bytes
    checks: dict[str, Callable[[str, Any], Any]] = {
        "text": lambda f, x: v.check_text(f, x, max_bytes=max_text),
        "kind": lambda f, x: v.check_enum(f, x, MemoryKind).value,
        "tier": lambda f, x: v.check_enum(f, x, Tier).value,
        "category": lambda f, x: v.check_optional_text(f, x, max_bytes=256),
        "importance": lambda f, x: v.check_number(f, x, 0, 1),
        "valence": lambda f, x: v.check_number(f, x, -1, 1),
        "tags": lambda f, x: list(v.check_strings(f, x)) or None,
        "source_turn_ids": lambda f, x: list(v.check_strings(f, x, ids=True)) or None,
        "valid_from": lambda f, x: optional_stamp(v.check_optional_time(f, x)),
        "valid_to": lambda f, x: optional_stamp(v.check_optional_time(f, x)),
        "superseded_by": v.check_optional_id,
        "pinned": lambda f, x: int(v.check_bool(f, x)),
        "expires_at": lambda f, x: optional_stamp(v.check_optional_time(f, x)),
        "agent_id": v.check_optional_id,
        "metadata": lambda f, x: _as_stored(
            v.check_json(f, x, max_bytes=max_json, object_only=True) or None
        ),
        "created_at": lambda f, x: optional_stamp(v.check_optional_time(f, x)),
    }
    v.check_keys(where.rstrip(".") or "memory", data, checks)
    return {name: checks[name](where + name, value) for name, value in data.items()}
