"""Export and import: one user's data as a versioned, JSON-ready document, and back.

An export holds opened (plain) values, so it can leave a deployment and come into another, under
another master key or user id; ids, sequence numbers and timestamps travel unchanged. An import
is checked completely before its user gets a data key or anything is written, so a bad document
leaves no trace, not even an unused key.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from datetime import date, datetime
from typing import Any

from memvault import validate as v
from memvault.config import Settings
from memvault.errors import Invalid
from memvault.inputs import build_turn, memory_fields, optional_stamp
from memvault.model import Agent, SessionKind, format_ts, utcnow
from memvault.rows import open_memory, open_session, open_turn, open_user, turn_row
from memvault.sealing import Sealer, UserSealer
from memvault.store.database import Row

EXPORT_FORMAT = "memvault-export"
EXPORT_VERSION = 1
SEALED_PARTS = ("agents", "sessions", "turns", "memories")  # each named as its table


def export_document(sealer: Sealer, dump: Row, agents: Iterable[Agent]) -> dict[str, Any]:
    """The export of one user from their sealed rows (`Store.dump_user`) and their agents."""
    turns_by_session: dict[str, list[dict[str, Any]]] = {}
    for row in dump["turns"]:
        turn = open_turn(sealer, row).to_dict()
        for private in ("user_id", "session_id"):
            turn.pop(private)
        turns_by_session.setdefault(row["session_id"], []).append(turn)
    sessions = []
    for row in dump["sessions"]:
        session = open_session(sealer, row).to_dict()
        session.pop("user_id")
        session["turns"] = turns_by_session.get(row["id"], [])
        sessions.append(session)
    memories = [open_memory(sealer, r).to_dict() for r in dump["memories"]]
    for memory in memories:
        memory.pop("user_id")
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": utcnow().isoformat(),
        "user": open_user(sealer, dump["user"]).to_dict(),
        "agents": [{k: val for k, val in a.to_dict().items() if k != "user_id"} for a in agents],
        "sessions": sessions,
        "memories": memories,
        "daily_activity": [
            {"day": r["day"], "turns": r["turns"], "memories": r["memories"]}
            for r in dump["daily_activity"]
        ],
    }


def read_export(settings: Settings, data: Mapping[str, Any], user_id: str | None) -> Row:
    """An export checked completely, as the plain rows of its user (`user_id`, else its own).

    Sealed by `seal_dump`, this is what `Store.load_user` writes.
    """
    if not isinstance(data, Mapping) or data.get("format") != EXPORT_FORMAT:
        raise Invalid("format", f"not a {EXPORT_FORMAT} document")
    if data.get("version") != EXPORT_VERSION:
        raise Invalid("version", f"unsupported export version; expected {EXPORT_VERSION}")
    for part in ("sessions", "memories", "agents", "daily_activity"):
        if not isinstance(data.get(part, []), list):
            raise Invalid(part, "must be a list")
    user = data.get("user")
    if not isinstance(user, Mapping):
        raise Invalid("user", "must be an object")
    target = v.check_id("user_id", user_id if user_id is not None else user.get("id"))
    profile = v.check_json(
        "user.profile", user.get("profile") or {}, max_bytes=settings.max_json_bytes,
        object_only=True,
    )  # fmt: skip
    now = utcnow()
    sessions, turns, turn_ids = [], [], []
    for i, s in enumerate(data.get("sessions", [])):
        session, session_turns = _session(settings, target, s, f"sessions[{i}]", now)
        sessions.append(session)
        turns += session_turns
        turn_ids += [(f"sessions[{i}].turns[{j}].id", t["id"]) for j, t in enumerate(session_turns)]
    memories = [
        _memory(settings, m, f"memories[{i}]") for i, m in enumerate(data.get("memories", []))
    ]
    agents = [_agent(a, f"agents[{i}]") for i, a in enumerate(data.get("agents", []))]
    activity = [
        _activity(d, f"daily_activity[{i}]") for i, d in enumerate(data.get("daily_activity", []))
    ]
    _check_unique(turn_ids)
    unique = (
        ("sessions", sessions, "id"), ("memories", memories, "id"), ("agents", agents, "id"),
        ("daily_activity", activity, "day"),
    )  # fmt: skip
    for part, rows, key in unique:
        _check_unique((f"{part}[{i}].{key}", row[key]) for i, row in enumerate(rows))
    return {
        "user": {
            "id": target, "profile": profile or None,
            "created_at": format_ts(v.check_time("user.created_at", user.get("created_at"))),
            "updated_at": format_ts(v.check_time("user.updated_at", user.get("updated_at"))),
        },
        "agents": agents, "sessions": sessions, "turns": turns, "memories": memories,
        "daily_activity": activity,
    }  # fmt: skip


def seal_dump(sealer: UserSealer, dump: Row) -> Row:
    """The checked export with its content sealed under its user's key."""
    user = dump["user"]
    sealed = {part: [sealer.seal(part, r["id"], r) for r in dump[part]] for part in SEALED_PARTS}
    return {**dump, "user": sealer.seal("users", user["id"], user), **sealed}


def _session(
    settings: Settings, user_id: str, s: Any, where: str, now: datetime
) -> tuple[Row, list[Row]]:
    """A session of the export and its turns, as rows."""
    if not isinstance(s, Mapping):
        raise Invalid(where, "must be an object")
    session_id = v.check_id(f"{where}.id", s.get("id"))
    listed = s.get("turns") or []
    if not isinstance(listed, list):
        raise Invalid(f"{where}.turns", "must be a list")
    turns = []
    for j, t in enumerate(listed):
        if not isinstance(t, Mapping):
            raise Invalid(f"{where}.turns[{j}]", "must be an object")
        turns.append(
            build_turn(settings, user_id, session_id, dict(t), where=f"{where}.turns[{j}]", now=now)
        )
    _check_unique((f"{where}.turns[{j}].seq", t.seq) for j, t in enumerate(turns))
    row = {
        "id": session_id,
        "kind": v.check_enum(f"{where}.kind", s.get("kind", "chat"), SessionKind).value,
        "agent_id": v.check_optional_id(f"{where}.agent_id", s.get("agent_id")),
        "title": v.check_optional_text(f"{where}.title", s.get("title")),
        "summary": v.check_optional_text(
            f"{where}.summary", s.get("summary"), max_bytes=settings.max_content_bytes
        ),
        "intent": v.check_optional_text(f"{where}.intent", s.get("intent")),
        "confidence": v.check_optional_number(f"{where}.confidence", s.get("confidence"), 0, 1),
        "entities": v.check_json(
            f"{where}.entities", s.get("entities"), max_bytes=settings.max_json_bytes
        ),
        "metadata": v.check_json(
            f"{where}.metadata", s.get("metadata") or {},
            max_bytes=settings.max_json_bytes, object_only=True,
        ) or None,
        "turn_count": len(turns),
        "last_seq": max((t.seq for t in turns), default=0),
        "last_turn_at": optional_stamp(max((t.created_at for t in turns), default=None)),
        "created_at": format_ts(v.check_time(f"{where}.created_at", s.get("created_at"))),
        "updated_at": format_ts(v.check_time(f"{where}.updated_at", s.get("updated_at"))),
    }  # fmt: skip
    return row, [{**turn_row(t), "session_id": session_id} for t in turns]


def _memory(settings: Settings, m: Any, where: str) -> Row:
    """A memory of the export as a row, its use counters kept."""
    if not isinstance(m, Mapping):
        raise Invalid(where, "must be an object")
    memory_id = v.check_id(f"{where}.id", m.get("id"))
    counters = {
        "access_count": int(v.check_number(f"{where}.access_count",
                                           m.get("access_count", 0), 0, 2**62)),
        "last_accessed_at": optional_stamp(v.check_optional_time(f"{where}.last_accessed_at",
                                                                 m.get("last_accessed_at"))),
        "updated_at": format_ts(v.check_time(f"{where}.updated_at", m.get("updated_at"))),
    }  # fmt: skip
    fields = {k: val for k, val in m.items() if k not in {"id", "user_id", *counters}}
    return {"id": memory_id, **memory_fields(settings, fields, f"{where}."), **counters}


def _agent(a: Any, where: str) -> Row:
    if not isinstance(a, Mapping):
        raise Invalid(where, "must be an object")
    agent_id = v.check_id(f"{where}.id", a.get("id"))
    return {
        "id": agent_id,
        "name": v.check_text(f"{where}.name", a.get("name"), max_bytes=256),
        "description": v.check_optional_text(f"{where}.description", a.get("description")),
        "created_at": format_ts(v.check_time(f"{where}.created_at", a.get("created_at"))),
    }


def _activity(d: Any, where: str) -> Row:
    """One day's counts of the export."""
    if not isinstance(d, Mapping):
        raise Invalid(where, "must be an object")
    try:
        day = date.fromisoformat(str(d.get("day"))).isoformat()
    except ValueError:
        raise Invalid(f"{where}.day", "must be a date (YYYY-MM-DD)") from None
    return {
        "day": day,
        "turns": int(v.check_number(f"{where}.turns", d.get("turns", 0), 0, 2**62)),
        "memories": int(v.check_number(f"{where}.memories", d.get("memories", 0), 0, 2**62)),
    }


def _check_unique(placed: Iterable[tuple[str, Hashable]]) -> None:
    """A repeated id (or day, or turn number) would clash in the store after the user's key was
    made: refuse it here, where nothing has been written yet. `placed` pairs each value with
    where it stands in the export, for the error."""
    seen: set[Hashable] = set()
    for place, value in placed:
        if value in seen:
            raise Invalid(place, "repeats one already in the export")
        seen.add(value)
