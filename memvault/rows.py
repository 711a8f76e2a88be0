"""Store rows and domain objects, converted both ways.

The store deals only in rows (sealed on the way in, still sealed on the way out); callers deal
only in `memvault.model` objects. The mapping between the two lives here, once, so the write
path, the read path and export/import cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from memvault.model import (
    Agent,
    Channel,
    Memory,
    MemoryKind,
    Modality,
    Role,
    Session,
    SessionKind,
    Tier,
    Turn,
    User,
    format_ts,
    parse_ts,
)
from memvault.sealing import Sealer
from memvault.store.database import Row


def optional_time(text: str | None) -> datetime | None:
    """A nullable timestamp column as a datetime."""
    return None if text is None else parse_ts(text)


def _opened(sealer: Sealer, table: str, row: Row) -> Row:
    """A user-owned row with its content columns opened under its owner's key."""
    return sealer.open(table, row["user_id"], row["id"], row)


def open_user(sealer: Sealer, row: Row) -> User:
    opened = sealer.open("users", row["id"], row["id"], row)
    return User(
        id=row["id"],
        created_at=parse_ts(row["created_at"]),
        updated_at=parse_ts(row["updated_at"]),
        profile=opened["profile"] or {},
    )


def open_agent(sealer: Sealer, row: Row) -> Agent:
    o = _opened(sealer, "agents", row)
    return Agent(o["id"], o["user_id"], o["name"], o["description"], parse_ts(o["created_at"]))


def turn_row(turn: Turn) -> Row:
    """The columns of a turn as stored (before sealing), less its user and session."""
    return {
        "id": turn.id, "seq": turn.seq, "role": turn.role.value, "channel": turn.channel.value,
        "modality": turn.modality.value, "speaker": turn.speaker, "content": turn.content,
        "audio_ref": turn.audio_ref, "audio_duration": turn.audio_duration,
        "tool_calls": turn.tool_calls, "tool_result": turn.tool_result, "intent": turn.intent,
        "confidence": turn.confidence, "entities": turn.entities,
        "metadata": turn.metadata or None, "agent_id": turn.agent_id,
        "created_at": format_ts(turn.created_at),
    }  # fmt: skip


def open_turn(sealer: Sealer, row: Row) -> Turn:
    o = _opened(sealer, "turns", row)
    return Turn(
        id=o["id"], user_id=o["user_id"], session_id=o["session_id"], seq=int(o["seq"]),
        role=Role(o["role"]), content=o["content"], created_at=parse_ts(o["created_at"]),
        speaker=o["speaker"], channel=Channel(o["channel"]), modality=Modality(o["modality"]),
        audio_ref=o["audio_ref"], audio_duration=o["audio_duration"],
        tool_calls=o["tool_calls"], tool_result=o["tool_result"], intent=o["intent"],
        confidence=o["confidence"], entities=o["entities"], metadata=o["metadata"] or {},
        agent_id=o["agent_id"],
    )  # fmt: skip


def open_session(sealer: Sealer, row: Row, turns: Iterable[Turn] | None = None) -> Session:
    """The session; `turns` only when the caller asked for them (lists leave them out)."""
    o = _opened(sealer, "sessions", row)
    return Session(
        id=o["id"], user_id=o["user_id"], kind=SessionKind(o["kind"]),
        created_at=parse_ts(o["created_at"]), updated_at=parse_ts(o["updated_at"]),
        turn_count=int(o["turn_count"]), last_turn_at=optional_time(o["last_turn_at"]),
        title=o["title"], summary=o["summary"], intent=o["intent"],
        confidence=o["confidence"], entities=o["entities"], metadata=o["metadata"] or {},
        agent_id=o["agent_id"], turns=None if turns is None else tuple(turns),
    )  # fmt: skip


def open_memory(sealer: Sealer, row: Row) -> Memory:
    return memory_from_row(_opened(sealer, "memories", row))


def memory_from_row(o: Row) -> Memory:
    """A memory from its plain columns: opened, or as just written.

    Nullable columns may be left out, as a new row leaves them, so `add_memory` answers with
    the row it wrote instead of reading it back.
    """
    return Memory(
        id=o["id"], user_id=o["user_id"], kind=MemoryKind(o["kind"]), tier=Tier(o["tier"]),
        text=o["text"], created_at=parse_ts(o["created_at"]),
        updated_at=parse_ts(o["updated_at"]), category=o.get("category"),
        importance=float(o["importance"]), valence=float(o["valence"]),
        tags=tuple(o.get("tags") or ()), source_turn_ids=tuple(o.get("source_turn_ids") or ()),
        valid_from=optional_time(o.get("valid_from")), valid_to=optional_time(o.get("valid_to")),
        superseded_by=o.get("superseded_by"), pinned=bool(o["pinned"]),
        access_count=int(o["access_count"]),
        last_accessed_at=optional_time(o.get("last_accessed_at")),
        expires_at=optional_time(o.get("expires_at")), agent_id=o.get("agent_id"),
        metadata=o.get("metadata") or {},
    )  # fmt: skip
