"""Domain types: what memvault stores and hands back.

Plain frozen dataclasses, free of storage and encryption concerns: the store deals in sealed rows,
`Vault` turns them into these. `to_dict()` gives the JSON-ready form used by export and the API.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import time
from datetime import UTC, date, datetime
from typing import Any

JSON = Any  # a value that json.dumps accepts: the caller's own structure, returned unchanged


class Role(enum.StrEnum):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


class Channel(enum.StrEnum):
    """`ai`: talking with the assistant; `general`: a room where people talk among themselves."""

    AI = "ai"
    GENERAL = "general"


class Modality(enum.StrEnum):
    TEXT = "text"
    AUDIO = "audio"


class SessionKind(enum.StrEnum):
    CHAT = "chat"
    GROUP = "group"
    VOICE = "voice"
    TASK = "task"


class MemoryKind(enum.StrEnum):
    """What a memory is."""

    EPISODIC = "episodic"
    FACT = "fact"
    PROCEDURAL = "procedural"
    REFLECTION = "reflection"


class Tier(enum.StrEnum):
    """Where a memory is in its life: consolidation moves it along."""

    WORKING = "working"
    LONG_TERM = "long_term"
    ARCHIVE = "archive"


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_ts(moment: datetime) -> str:
    """Fixed-width UTC text: sorts lexicographically in time order in every backend."""
    m = moment if moment.tzinfo is UTC else moment.astimezone(UTC)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T"
        f"{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"
    )


def parse_ts(text: str) -> datetime:
    """A time as `format_ts` stored it. `fromisoformat` reads that form 50 times faster than
    `strptime` (0.24 against 12 us), and every row read has two or three of them."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is not UTC:
        raise ValueError("not a stored UTC time")
    return moment


def new_id() -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so ids sort by creation and index well everywhere."""
    raw = bytearray((time.time_ns() // 1_000_000).to_bytes(6, "big") + os.urandom(10))
    raw[6] = 0x70 | (raw[6] & 0x0F)  # version 7
    raw[8] = 0x80 | (raw[8] & 0x3F)  # RFC variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def to_jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: to_jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


class _Serialisable:
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: datetimes as ISO 8601, enums as their values."""
        result: dict[str, Any] = to_jsonable(self)
        return result


@dataclasses.dataclass(frozen=True, slots=True)
class User(_Serialisable):
    id: str
    created_at: datetime
    updated_at: datetime
    profile: dict[str, JSON] = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str | None:
        """What the user is called: their profile's `name`, when it is text. Search takes it as
        the speaker of their turns that give only a role ("What does Alice like?")."""
        name = self.profile.get("name")
        return (name.strip() or None) if isinstance(name, str) else None


@dataclasses.dataclass(frozen=True, slots=True)
class Agent(_Serialisable):
    """An AI instance working for a user (the multi-AI "handshake"); its memories are the user's."""

    id: str
    user_id: str
    name: str
    description: str | None
    created_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class Turn(_Serialisable):
    id: str
    user_id: str
    session_id: str
    seq: int
    role: Role
    content: str
    created_at: datetime
    speaker: str | None = None
    channel: Channel = Channel.AI
    modality: Modality = Modality.TEXT
    audio_ref: str | None = None
    audio_duration: float | None = None
    tool_calls: JSON = None
    tool_result: JSON = None
    intent: str | None = None
    confidence: float | None = None
    entities: JSON = None
    metadata: dict[str, JSON] = dataclasses.field(default_factory=dict)
    agent_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Session(_Serialisable):
    id: str
    user_id: str
    kind: SessionKind
    created_at: datetime
    updated_at: datetime
    turn_count: int = 0
    last_turn_at: datetime | None = None
    title: str | None = None
    summary: str | None = None
    intent: str | None = None
    confidence: float | None = None
    entities: JSON = None
    metadata: dict[str, JSON] = dataclasses.field(default_factory=dict)
    agent_id: str | None = None
    turns: tuple[Turn, ...] | None = None  # filled by Vault.get_session, absent from lists


@dataclasses.dataclass(frozen=True, slots=True)
class Memory(_Serialisable):
    id: str
    user_id: str
    kind: MemoryKind
    tier: Tier
    text: str
    created_at: datetime
    updated_at: datetime
    category: str | None = None
    importance: float = 0.5
    valence: float = 0.0
    tags: tuple[str, ...] = ()
    source_turn_ids: tuple[str, ...] = ()
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    superseded_by: str | None = None
    pinned: bool = False
    access_count: int = 0
    last_accessed_at: datetime | None = None
    expires_at: datetime | None = None
    agent_id: str | None = None
    metadata: dict[str, JSON] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, slots=True)
class GlobalContextEntry(_Serialisable):
    """Deployment-wide context shared by every user (house rules, product facts)."""

    key: str
    text: str
    updated_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class DailyActivity(_Serialisable):
    day: date
    turns: int
    memories: int
