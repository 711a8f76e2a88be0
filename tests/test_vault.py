"""The Vault facade end to end on real files: fields, sessions, memories, stats, events."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeVault, sessions_of_one_moment

from memvault import Conflict, Invalid, NotFound, Vault
from memvault.events import Event
from memvault.model import (
    Channel,
    MemoryKind,
    Modality,
    Role,
    SessionKind,
    Tier,
    format_ts,
    utcnow,
)
from memvault.stats import streaks
from memvault.store.database import Row

WHEN = datetime(2025, 5, 4, 12, 30, 15, 123456, tzinfo=UTC)


def test_turn_round_trips_every_field(vault: Vault) -> None:
    written = vault.add_turn(
        "alice", "s1", "tool", "looked it up",
        speaker="Weather bot", channel="general", modality="audio", created_at=WHEN,
        metadata={"client": {"version": 3}, "list": [1, 2]},
        tool_calls=[{"name": "weather", "arguments": {"city": "Oslo"}}],
        tool_result={"temp_c": -3.5}, intent="weather_query", confidence=0.87,
        entities={"city": ["Oslo"]}, agent_id="agent-7", audio_ref="s3://bucket/clip.ogg",
        audio_duration=4.25,
    )  # fmt: skip
    (read,) = vault.get_session("alice", "s1").turns or ()
    assert read == written
    assert read.role is Role.TOOL and read.channel is Channel.GENERAL
    assert read.modality is Modality.AUDIO and read.audio_duration == 4.25
    assert read.created_at == WHEN
    assert read.metadata == {"client": {"version": 3}, "list": [1, 2]}
    assert read.tool_calls == [{"name": "weather", "arguments": {"city": "Oslo"}}]
    assert read.tool_result == {"temp_c": -3.5}
    assert (read.intent, read.confidence, read.entities) == (
        "weather_query",
        0.87,
        {"city": ["Oslo"]},
    )
    assert (read.speaker, read.agent_id, read.seq) == ("Weather bot", "agent-7", 1)


def test_session_kind_follows_first_turn_and_updates_round_trip(vault: Vault) -> None:
    vault.add_turn("u", "room", "user", "hi all", channel="general", speaker="Ann")
    vault.add_turn("u", "call", "user", "hello", modality="audio")
    assert vault.get_session("u", "room").kind is SessionKind.GROUP
    assert vault.get_session("u", "call").kind is SessionKind.VOICE
    updated = vault.update_session(
        "u", "call", title="Morning call", intent="planning", confidence=0.5,
        entities=["standup"], metadata={"k": "v"}, summary="We planned the day.",
    )  # fmt: skip
    again = vault.get_session("u", "call")
    assert (again.title, again.intent, again.confidence) == ("Morning call", "planning", 0.5)
    assert (again.entities, again.metadata, again.summary) == (
        ["standup"],
        {"k": "v"},
        "We planned the day.",
    )
    assert updated.title == again.title and again.turn_count == 1


def test_add_turns_is_one_transaction(vault: Vault) -> None:
    vault.add_turn("u", "s", "user", "first")
    bad = [{"role": "user", "content": "ok"}, {"role": "robot", "content": "no"}]
    with pytest.raises(Invalid) as err:
        vault.add_turns("u", "s", bad)
    assert err.value.field == "turns[1].role"
    assert [t.content for t in vault.get_session("u", "s").turns or ()] == ["first"]
    stored = vault.add_turns(
        "u", "s", [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    )
    assert [t.seq for t in stored] == [2, 3]


def test_restart_in_a_new_process_keeps_history(make_vault: MakeVault, tmp_path: Path) -> None:
    data = tmp_path / "data"
    vault = make_vault(data)
    vault.add_turn("alice", "chat", "user", "My favourite colour is blue.")
    vault.close()
    script = textwrap.dedent(f"""
        from memvault import Vault
        with Vault.open({str(data)!r}) as vault:
            vault.add_turn("alice", "chat", "assistant", "I'll remember that.")
    """)
    subprocess.run([sys.executable, "-c", script], check=True)
    reopened = make_vault(data)
    turns = reopened.recent_turns("alice", session_id="chat")
    assert [t.content for t in turns] == ["My favourite colour is blue.", "I'll remember that."]
    assert [t.seq for t in turns] == [1, 2]


def test_recent_turns_filters_and_orders(vault: Vault) -> None:
    base = WHEN
    for i in range(5):
        vault.add_turn("u", "a", "user", f"ai {i}", created_at=base + timedelta(minutes=i))
        vault.add_turn(
            "u",
            "g",
            "user",
            f"room {i}",
            channel="general",
            created_at=base + timedelta(minutes=i, seconds=30),
        )
    newest = vault.recent_turns("u", limit=3)
    assert [t.content for t in newest] == ["room 3", "ai 4", "room 4"]
    assert [t.content for t in vault.recent_turns("u", channel="ai", limit=2)] == ["ai 3", "ai 4"]
    assert [t.content for t in vault.recent_turns("u", session_id="g", limit=2)] == [
        "room 3",
        "room 4",
    ]


def test_list_sessions_newest_first_with_cursor(vault: Vault) -> None:
    for name in ("one", "two", "three"):
        vault.add_turn("u", name, "user", name)
    sessions = vault.list_sessions("u")
    assert [s.id for s in sessions] == ["three", "two", "one"]
    older = vault.list_sessions("u", before=sessions[0].updated_at, limit=1)
    assert [s.id for s in older] == ["two"]
    assert vault.list_sessions("nobody") == []


def test_session_pages_neither_skip_nor_repeat_sessions_of_the_same_moment(vault: Vault) -> None:
    sessions_of_one_moment(vault, "u", 5)
    seen: list[str] = []
    page = vault.list_sessions("u", limit=2)
    while page:
        seen += [s.id for s in page]
        page = vault.list_sessions("u", limit=2, before=page[-1].updated_at, before_id=page[-1].id)
    assert seen == ["s4", "s3", "s2", "s1", "s0"]
    with pytest.raises(Invalid) as refused:
        vault.list_sessions("u", before_id="s2")
    assert refused.value.field == "before_id"


def test_session_turn_pages(vault: Vault) -> None:
    vault.add_turns("u", "s", [{"role": "user", "content": f"t{i}"} for i in range(7)])
    page = vault.session_turns("u", "s", after_seq=3, limit=2)
    assert [t.seq for t in page] == [4, 5]
    with pytest.raises(NotFound):
        vault.session_turns("u", "missing")


def test_delete_session_and_clear_by_channel(vault: Vault) -> None:
    vault.add_turn("u", "a", "user", "ai talk")
    vault.add_turn("u", "g", "user", "room talk", channel="general")
    vault.add_memory("u", "a fact")
    vault.delete_session("u", "a")
    with pytest.raises(NotFound):
        vault.get_session("u", "a")
    with pytest.raises(NotFound):
        vault.delete_session("u", "a")
    vault.add_turn("u", "a2", "user", "more ai talk")
    assert vault.clear("u", channel="general") == 1
    assert [s.id for s in vault.list_sessions("u")] == ["a2"]
    assert vault.clear("u") == 1
    assert vault.list_sessions("u") == [] and len(vault.list_memories("u")) == 1


def test_memory_lifecycle(vault: Vault) -> None:
    memory = vault.add_memory(
        "u", "Lives in Oslo", kind="fact", tier="working", category="location",
        importance=0.9, valence=0.2, tags=["home", "city"], source_turn_ids=["t1"],
        valid_from=WHEN, pinned=True, agent_id="a1", metadata={"src": "chat"},
    )  # fmt: skip
    assert vault.get_memory("u", memory.id) == memory
    assert (memory.kind, memory.tier, memory.tags) == (
        MemoryKind.FACT,
        Tier.WORKING,
        ("home", "city"),
    )
    assert memory.valid_from == WHEN and memory.pinned and memory.source_turn_ids == ("t1",)
    moved = vault.move_memory("u", memory.id, tier="long_term", kind="episodic")
    assert (moved.tier, moved.kind, moved.text) == (
        Tier.LONG_TERM,
        MemoryKind.EPISODIC,
        "Lives in Oslo",
    )
    edited = vault.update_memory("u", memory.id, text="Lives in Bergen", importance=0.4)
    assert (edited.text, edited.importance, edited.category) == ("Lives in Bergen", 0.4, "location")
    vault.delete_memory("u", memory.id)
    with pytest.raises(NotFound):
        vault.get_memory("u", memory.id)


def test_list_memories_filters(vault: Vault) -> None:
    now = datetime.now(UTC)
    old = vault.add_memory("u", "Works at Acme", category="work", tags=["job"])
    new = vault.add_memory("u", "Works at Initech", category="work", tags=["job", "current"])
    vault.update_memory("u", old.id, superseded_by=new.id, valid_to=now)
    vault.add_memory("u", "How to deploy", kind="procedural", tier="working")
    vault.add_memory("u", "Temporary", expires_at=now - timedelta(seconds=1))

    def texts(**filters: Any) -> list[str]:
        return [m.text for m in vault.list_memories("u", **filters)]

    assert texts(kinds=["procedural"]) == ["How to deploy"]
    assert texts(tiers=["working"]) == ["How to deploy"]
    assert texts(category="work") == ["Works at Initech", "Works at Acme"]
    assert texts(category="work", include_superseded=False) == ["Works at Initech"]
    assert texts(tags=["current"]) == ["Works at Initech"]
    assert "Temporary" not in texts() and "Temporary" in texts(include_expired=True)
    assert texts(limit=1, offset=1) == ["Works at Initech"]


def test_users_profiles_and_agents(vault: Vault) -> None:
    user = vault.put_user("u", {"name": "Ann", "tz": "Europe/Oslo"})
    assert vault.get_user("u").profile == {"name": "Ann", "tz": "Europe/Oslo"} == user.profile
    first = vault.register_agent("u", "planner", "plans things")
    again = vault.register_agent("u", "planner")
    other = vault.register_agent("u", "writer")
    assert first.id == again.id != other.id
    assert [a.name for a in vault.list_agents("u")] == ["planner", "writer"]
    with pytest.raises(NotFound):
        vault.get_user("nobody")


def test_global_context(vault: Vault) -> None:
    vault.set_global_context("house-rules", "Be kind.")
    vault.set_global_context("house-rules", "Be kind and brief.")
    vault.set_global_context("product", "memvault 0.1")
    assert [(e.key, e.text) for e in vault.list_global_context()] == [
        ("house-rules", "Be kind and brief."), ("product", "memvault 0.1"),
    ]  # fmt: skip
    vault.delete_global_context("product")
    with pytest.raises(NotFound):
        vault.delete_global_context("product")


def test_stats_counts_and_streaks(vault: Vault) -> None:
    day = datetime(2025, 3, 10, 9, tzinfo=UTC)
    for offset in (0, 1, 2, 5, 6):
        vault.add_turn("u", "s", "user", "hi", created_at=day + timedelta(days=offset))
    vault.add_turn(
        "u", "room", "user", "hey", channel="general", created_at=day + timedelta(days=6)
    )
    vault.add_memory("u", "a fact", created_at=day + timedelta(days=6))
    stats = vault.stats("u", now=day + timedelta(days=7))
    assert (stats["sessions"], stats["turns"], stats["memories"]) == (2, 6, 1)
    assert stats["by_channel"] == {"ai": 5, "general": 1}
    assert stats["first_at"] == day and stats["last_at"] == day + timedelta(days=6)
    assert (stats["current_streak"], stats["longest_streak"]) == (2, 3)
    assert [d.turns for d in stats["daily_activity"]][:3] == [1, 1, 1]
    with pytest.raises(NotFound):
        vault.stats("nobody")


def test_streaks_edge_cases() -> None:
    d = datetime(2025, 1, 1, tzinfo=UTC).date()
    assert streaks([], d) == (0, 0)
    assert streaks([d], d + timedelta(days=2)) == (0, 1)
    assert streaks([d, d + timedelta(days=1)], d + timedelta(days=1)) == (2, 2)
    assert streaks([d, d + timedelta(days=1), d + timedelta(days=9)], d + timedelta(days=2)) == (
        2,
        2,
    )


def test_events_are_published_after_writes(vault: Vault) -> None:
    seen: list[Event] = []
    vault.events.subscribe(seen.append)
    turn = vault.add_turn("u", "s", "user", "secret words")
    memory = vault.add_memory("u", "a fact")
    vault.update_session("u", "s", title="t")
    assert [(e.type, e.user_id) for e in seen] == [
        ("turn.added", "u"), ("memory.added", "u"), ("session.updated", "u"),
    ]  # fmt: skip
    assert seen[0].ids == {"session_id": "s", "turn_id": turn.id}
    assert seen[1].ids == {"memory_id": memory.id, "agent_id": None}
    assert "secret" not in repr(seen)


def test_superseding_a_fact_keeps_the_old_one(vault: Vault) -> None:
    old = vault.add_memory("u", "Works at Acme", category="work", tags=["job"], importance=0.7)
    new = vault.supersede_memory("u", old.id, "Works at Initech", importance=0.8)
    closed = vault.get_memory("u", old.id)
    assert closed.text == "Works at Acme" and closed.superseded_by == new.id
    assert closed.valid_to is not None and new.valid_from is not None
    assert (new.category, new.tags, new.importance) == ("work", ("job",), 0.8)
    current = vault.list_memories("u", include_superseded=False)
    assert [m.text for m in current] == ["Works at Initech"]
    with pytest.raises(Conflict):
        vault.supersede_memory("u", old.id, "Works at Globex")
    with pytest.raises(NotFound):
        vault.add_memory("u", "orphan", supersedes="no-such-memory")
    assert [m.text for m in vault.list_memories("u")] == ["Works at Initech", "Works at Acme"]


def test_add_memory_answers_as_a_read_would_without_reading_it_back(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    read_memory = vault.store.get_memory

    def counted_read(user_id: str, memory_id: str) -> Row | None:
        reads.append(memory_id)
        return read_memory(user_id, memory_id)

    monkeypatch.setattr(vault.store, "get_memory", counted_read)
    written = vault.add_memory(
        "u", "Lives in Oslo", tags=("home",), valid_from=WHEN, expires_at=WHEN + timedelta(days=9),
        metadata={"seen": (1, 2), 3: "three"}, created_at=WHEN.replace(tzinfo=None),
    )  # fmt: skip
    bare = vault.add_memory("u", "a fact")
    assert reads == []
    assert vault.get_memory("u", written.id) == written
    assert vault.get_memory("u", bare.id) == bare
    assert written.metadata == {"seen": [1, 2], "3": "three"}  # as stored, whatever was given


def test_a_memory_cannot_supersede_itself_nor_end_before_it_starts(vault: Vault) -> None:
    start = datetime(2025, 3, 1, tzinfo=UTC)
    memory = vault.add_memory("u", "Works at Acme", valid_from=start)
    with pytest.raises(Invalid) as itself:
        vault.update_memory("u", memory.id, superseded_by=memory.id)
    assert itself.value.field == "superseded_by"
    with pytest.raises(Invalid) as early:  # against the stored start
        vault.update_memory("u", memory.id, valid_to=start - timedelta(days=1))
    assert early.value.field == "valid_to"
    with pytest.raises(Invalid) as given:  # both given at once
        vault.add_memory("u", "Lives in Oslo", valid_from=start, valid_to=start - timedelta(days=1))
    assert given.value.field == "valid_to"
    assert vault.get_memory("u", memory.id) == memory  # nothing written
    assert [m.text for m in vault.list_memories("u")] == ["Works at Acme"]


def test_a_memory_cannot_be_superseded_by_one_that_does_not_exist(vault: Vault) -> None:
    """It would drop out of the current memories, pointing to nothing."""
    memory = vault.add_memory("u", "Works at Acme")
    gone = vault.add_memory("u", "Works at Initech")
    vault.delete_memory("u", gone.id)
    revision = vault.store.revision("u")
    with pytest.raises(NotFound, match=r"^superseded_by: no such memory$"):
        vault.update_memory("u", memory.id, superseded_by=gone.id)
    assert vault.get_memory("u", memory.id) == memory  # nothing written, no revision taken
    assert vault.store.revision("u") == revision


def test_superseding_a_memory_valid_only_from_later_on_ends_it_where_it_starts(
    vault: Vault,
) -> None:
    later = datetime.now(UTC) + timedelta(days=30)
    planned = vault.add_memory("u", "Starts at Acme next month", valid_from=later)
    vault.supersede_memory("u", planned.id, "Stays at Initech after all")
    closed = vault.get_memory("u", planned.id)
    assert closed.valid_to == closed.valid_from == later.replace(tzinfo=UTC)


def test_a_conditional_memory_update_refuses_a_stale_read_and_moves_no_revision(
    vault: Vault,
) -> None:
    memory = vault.add_memory("u", "Prefers tea")
    read = vault.store.get_memory("u", memory.id)
    assert read is not None
    vault.update_memory("u", memory.id, importance=0.9)  # written after that read
    revision = vault.store.revision("u")
    stale = vault.store.update_memory(
        "u", memory.id, {"importance": 0.1}, format_ts(utcnow()), if_updated_at=read["updated_at"]
    )
    assert stale is None and vault.store.revision("u") == revision
    assert vault.get_memory("u", memory.id).importance == 0.9


def test_a_conditional_session_update_refuses_a_stale_read_and_moves_no_revision(
    vault: Vault,
) -> None:
    vault.add_turn("u", "s", "user", "hello")
    read = vault.store.get_session("u", "s")
    assert read is not None
    vault.update_session("u", "s", metadata={"topic": "greetings"})  # written after that read
    revision = vault.store.revision("u")
    sealed = vault.sealer.for_user("u").seal("sessions", "s", {"summary": "user: hello"})
    stale = vault.store.update_session(
        "u", "s", sealed, format_ts(utcnow()), if_updated_at=read["updated_at"]
    )
    assert stale is None and vault.store.revision("u") == revision
    kept = vault.get_session("u", "s")
    assert kept.summary is None and kept.metadata == {"topic": "greetings"}
    current = vault.store.get_session("u", "s")
    assert current is not None
    fresh = vault.store.update_session(
        "u", "s", sealed, format_ts(utcnow()), if_updated_at=current["updated_at"]
    )
    assert fresh is not None and vault.get_session("u", "s").summary == "user: hello"
    assert vault.store.update_session("u", "gone", sealed, format_ts(utcnow())) is None
