"""Consolidation: each rule's edges as pure functions, then `Vault.consolidate` on real stores,
the CLI command and the REST route."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_support import ADMIN, ADMIN_KEY, start_server
from conftest import MakeVault, plain_turn
from loopback import serve_in_thread

from memvault import Invalid, NotFound, Vault
from memvault.cli import main
from memvault.events import Event
from memvault.mind.consolidate import (
    ConsolidationPolicy,
    ConsolidationReport,
    FactLedger,
    Use,
    decayed_importance,
    duplicate_key,
    extractive_summary,
    find_contradictions,
    find_duplicates,
    merged_end,
    needs_summary,
    next_tier,
    normalised,
    plan_memories,
    shortened,
    summary_metadata,
)
from memvault.mind.extract import ExtractedFact
from memvault.model import Memory, MemoryKind, Role, Session, SessionKind, Tier, Turn, utcnow
from memvault.upkeep import Upkeep

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
POLICY = ConsolidationPolicy()
TICK = timedelta(microseconds=1)
NEVER = Use(0, None)


def memory(
    text: str = "Alice likes tea",
    *,
    id: str = "m1",
    kind: MemoryKind = MemoryKind.EPISODIC,
    tier: Tier = Tier.WORKING,
    age: timedelta = timedelta(days=1),
    **fields: Any,
) -> Memory:
    created = NOW - age
    return Memory(
        id=id,
        user_id="u",
        kind=kind,
        tier=tier,
        text=text,
        created_at=created,
        updated_at=created,
        **fields,
    )


def moved(m: Memory, use: Use = NEVER, now: datetime = NOW) -> tuple[Tier, str] | None:
    move = next_tier(m, use, now, POLICY)
    return None if move is None else (move.tier, move.reason)


# -- duplicates ------------------------------------------------------------------------------


def test_normalised_sets_aside_case_space_and_punctuation_only() -> None:
    assert normalised("  Likes\tTEA. ") == normalised("likes tea") == "likes tea"
    assert (
        normalised("\uff2c\uff49\uff4b\uff45\uff53 tea!") == "likes tea"
    )  # full-width letters (NFKC)
    assert normalised("well-known") == normalised("well known")
    assert normalised("likes tea") != normalised("likes tee")
    assert normalised("e-mail") != normalised("email")


def test_duplicate_key_separates_owners_kinds_and_fact_categories() -> None:
    fact = memory(kind=MemoryKind.FACT, category="food")
    assert duplicate_key(fact) == duplicate_key(
        memory("alice LIKES tea!", kind=MemoryKind.FACT, category="food")
    )
    assert duplicate_key(fact) != duplicate_key(memory(kind=MemoryKind.FACT, category="drinks"))
    assert duplicate_key(fact) != duplicate_key(memory(kind=MemoryKind.REFLECTION))
    assert duplicate_key(fact) != duplicate_key(dataclasses.replace(fact, agent_id="a1"))
    # category matters for facts only
    assert duplicate_key(memory(category="x")) == duplicate_key(memory(category="y"))


def test_find_duplicates_keeps_the_newest_and_skips_history_and_expired() -> None:
    old = memory("Likes tea.", id="a", age=timedelta(days=9))
    mid = memory("likes TEA", id="b", age=timedelta(days=5))
    new = memory("likes tea", id="c", age=timedelta(days=1))
    gone = memory("likes tea", id="d", age=timedelta(days=3), superseded_by="x")
    expired = memory("likes tea", id="e", age=timedelta(hours=1), expires_at=NOW)
    other = memory("likes tee", id="f")
    merges = find_duplicates([new, old, gone, expired, other, mid], NOW)
    assert [(m.survivor, m.merged) for m in merges] == [("c", ("a", "b"))]


def test_a_merged_survivor_takes_the_groups_pin_importance_tier_and_uses() -> None:
    old = memory(
        "likes tea",
        id="a",
        tier=Tier.LONG_TERM,
        age=timedelta(days=30),
        importance=0.6,
        pinned=True,
        access_count=2,
        last_accessed_at=NOW - timedelta(days=2),
    )
    new = memory("Likes tea.", id="b", age=timedelta(days=1), importance=0.4, access_count=1)
    plan = plan_memories([old, new], NOW, POLICY)
    assert [(m.survivor, m.merged) for m in plan.merges] == [("b", ("a",))]
    assert plan.survivor_fields == {
        "b": {"importance": 0.6, "pinned": True, "tier": Tier.LONG_TERM}
    }
    assert plan.moves == ()


def test_a_merged_duplicate_ends_now_but_not_before_it_starts_nor_after_it_ended() -> None:
    assert merged_end(memory(), NOW) == NOW
    assert merged_end(memory(valid_from=NOW - TICK, valid_to=NOW + TICK), NOW) == NOW
    assert merged_end(memory(valid_from=NOW + TICK), NOW) == NOW + TICK
    assert merged_end(memory(valid_to=NOW - TICK), NOW) == NOW - TICK
    assert merged_end(memory(valid_to=NOW), NOW) == NOW


def test_uses_of_earlier_duplicates_count_towards_promotion_but_not_changed_facts() -> None:
    # merged at an earlier run: "a" points to "b"; their recalls together reach three
    a = memory("likes tea", id="a", age=timedelta(days=3), access_count=2, superseded_by="b")
    b = memory("likes tea", id="b", access_count=1)
    plan = plan_memories([a, b], NOW, POLICY)
    assert [(m.memory_id, m.reason) for m in plan.moves] == [("b", "promoted")]
    # a changed statement superseded by "d" was recalled as the old one: it does not count
    c = memory("likes coffee", id="c", age=timedelta(days=3), access_count=2, superseded_by="d")
    d = memory("likes tea", id="d", access_count=1)
    assert plan_memories([c, d], NOW, POLICY).moves == ()


# -- contradictions --------------------------------------------------------------------------


def fact(text: str, slot: str | None, *, id: str, age: timedelta, **fields: Any) -> Memory:
    metadata = {} if slot is None else {"slot": slot}
    return memory(text, id=id, kind=MemoryKind.FACT, age=age, metadata=metadata, **fields)


def test_the_newest_fact_of_a_slot_supersedes_the_others_of_its_owner() -> None:
    day = timedelta(days=1)
    facts = [
        fact("Lives in Paris", "home", id="a", age=9 * day),
        fact("Lives in Rome", "Home ", id="b", age=5 * day),  # one slot, however written
        fact("Lives in Oslo", "home", id="c", age=7 * day, valid_from=NOW - day),  # said later
        fact("Lives in Lyon", "home", id="d", age=3 * day, agent_id="a1"),  # another owner
        fact("Lives in Bonn", "home", id="e", age=2 * day, superseded_by="x"),  # history
        fact("Lives in Kyiv", "home", id="f", age=2 * day, valid_from=NOW + day),  # not yet
        fact("Lives in Riga", "home", id="g", age=2 * day, expires_at=NOW),  # expired
        fact("Likes Lima", None, id="h", age=2 * day),  # accumulates
        memory("Lives in Baku", id="i", metadata={"slot": "home"}),  # not a fact
    ]
    found = find_contradictions(facts, NOW)
    assert [(s.newer, s.older) for s in found] == [("b", ("a",)), ("c", ("b",))]  # in turn
    # applied as any supersede: the plan marks them, and a second plan finds nothing
    plan = plan_memories(facts, NOW, POLICY)
    assert [(s.newer, s.older) for s in plan.supersessions] == [("b", ("a",)), ("c", ("b",))]
    closed = [dataclasses.replace(m, superseded_by="c") if m.id in "ab" else m for m in facts]
    assert plan_memories(closed, NOW, POLICY).supersessions == ()


def said(text: str, slot: str | None, days_ago: int, category: str = "location") -> ExtractedFact:
    return ExtractedFact(text, category, slot, f"t{days_ago}", NOW - timedelta(days=days_ago))


def test_new_facts_leave_out_what_the_user_said_again_but_not_a_return() -> None:
    stored = [
        fact("The user lives in Boston", "home", id="a", age=timedelta(days=30),
             category="location"),
        fact("The user is allergic to cats", None, id="b", age=timedelta(days=30),
             category="health"),
    ]  # fmt: skip
    again = said("The user lives in Boston.", "home", 20)
    cats = said("the user is allergic to CATS", None, 20, "health")
    ledger = FactLedger(stored)
    assert ledger.news([again, cats]) == []
    moved, back = said("The user lives in Denver", "home", 10), said(again.text, "home", 5)
    assert ledger.news([back, moved]) == [moved, back]  # in the order said
    assert ledger.news([back]) == []  # the ledger keeps what it was told
    closed = FactLedger([dataclasses.replace(stored[0], superseded_by="x")])
    assert closed.news([again]) == [again]
    assert FactLedger([dataclasses.replace(stored[0], agent_id="a1")]).news([again]) == [again]


# -- tiers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "promoted"), [(2, False), (3, True), (4, True)])
def test_promotion_by_use(count: int, promoted: bool) -> None:
    expected = (Tier.LONG_TERM, "promoted") if promoted else None
    assert moved(memory(), Use(count, NOW)) == expected


@pytest.mark.parametrize(("importance", "promoted"), [(0.69, False), (0.7, True), (0.71, True)])
def test_promotion_by_importance(importance: float, promoted: bool) -> None:
    expected = (Tier.LONG_TERM, "promoted") if promoted else None
    assert moved(memory(importance=importance)) == expected


def test_promotion_when_pinned() -> None:
    assert moved(memory(pinned=True)) == (Tier.LONG_TERM, "promoted")


@pytest.mark.parametrize(("age", "archived"), [(-TICK, False), (timedelta(0), True), (TICK, True)])
def test_working_memory_never_recalled_is_archived_after_the_retention(
    age: timedelta, archived: bool
) -> None:
    m = memory(age=POLICY.working_retention + age)
    assert moved(m) == ((Tier.ARCHIVE, "unused") if archived else None)
    assert moved(m, Use(1, NOW)) is None  # recalled once: it waits for more


def test_pinned_and_current_facts_are_never_archived_for_want_of_use() -> None:
    old = timedelta(days=3650)
    assert moved(memory(kind=MemoryKind.FACT, age=old)) is None
    assert moved(memory(kind=MemoryKind.FACT, tier=Tier.LONG_TERM, age=old)) is None
    assert moved(memory(pinned=True, tier=Tier.LONG_TERM, age=old)) is None
    assert moved(memory(tier=Tier.LONG_TERM, age=old)) == (Tier.ARCHIVE, "decayed")


def test_decayed_importance_halves_every_half_life_scaled_by_uses() -> None:
    assert decayed_importance(0.8, timedelta(0), 0, POLICY) == 0.8
    assert decayed_importance(0.8, POLICY.half_life, 0, POLICY) == pytest.approx(0.4)
    assert decayed_importance(0.8, 2 * POLICY.half_life, 0, POLICY) == pytest.approx(0.2)
    assert decayed_importance(0.8, 2 * POLICY.half_life, 1, POLICY) == pytest.approx(0.4)
    assert decayed_importance(0.8, -POLICY.half_life, 0, POLICY) == 0.8  # a future time
    # recalled more often than a timedelta can count half-lives: no OverflowError
    assert decayed_importance(0.8, POLICY.half_life, 10**12, POLICY) == pytest.approx(0.8)
    worn = memory(tier=Tier.LONG_TERM, age=timedelta(days=3650), access_count=10**12)
    assert moved(worn, Use(10**12, NOW - timedelta(days=3650))) is None


@pytest.mark.parametrize(
    ("idle", "archived"), [(-TICK, False), (timedelta(0), False), (TICK, True)]
)
def test_decay_archives_below_the_floor(idle: timedelta, archived: bool) -> None:
    # importance 0.1 reaches the floor 0.05 after exactly one half-life; below it, archived
    m = memory(tier=Tier.LONG_TERM, importance=0.1, age=POLICY.half_life + idle)
    assert moved(m) == ((Tier.ARCHIVE, "decayed") if archived else None)
    # the last recall, not creation, starts the clock; and one recall doubles the half-life
    recalled = Use(1, NOW - POLICY.half_life - idle)
    assert moved(dataclasses.replace(m, created_at=NOW - 10 * POLICY.half_life), recalled) is None


@pytest.mark.parametrize(
    ("offset", "expired"), [(-TICK, True), (timedelta(0), True), (TICK, False)]
)
def test_expiry_archives_anything_past_its_time(offset: timedelta, expired: bool) -> None:
    for m in (
        memory(expires_at=NOW + offset, pinned=True),
        memory(expires_at=NOW + offset, kind=MemoryKind.FACT, tier=Tier.LONG_TERM),
    ):
        result = moved(m)
        assert (result == (Tier.ARCHIVE, "expired")) is expired
        if not expired:
            assert result in (None, (Tier.LONG_TERM, "promoted"))


def test_history_and_the_archive_stay_where_they_are() -> None:
    assert moved(memory(superseded_by="x", importance=0.9)) is None
    assert moved(memory(tier=Tier.ARCHIVE, access_count=9), Use(9, NOW)) is None


def test_rules_run_through_in_one_go_so_a_second_pass_moves_nothing() -> None:
    stale = memory(importance=0.8, age=timedelta(days=800))  # important, but untouched for years
    assert moved(stale) == (Tier.ARCHIVE, "decayed")
    kept = memory(importance=0.8, age=timedelta(days=8))
    assert moved(kept) == (Tier.LONG_TERM, "promoted")
    assert moved(dataclasses.replace(kept, tier=Tier.LONG_TERM)) is None


def test_policy_checks_name_the_field() -> None:
    for field, value in (
        ("promote_uses", 0),
        ("decay_floor", 1.5),
        ("half_life", timedelta(0)),
        ("summary_chars", True),
        ("summary_turn_chars", 10**7),
        ("promote_importance", float("nan")),
        ("summary_share", "0.5"),
        ("session_idle", 30),
    ):
        with pytest.raises(Invalid) as err:
            given: dict[str, Any] = {field: value}
            ConsolidationPolicy(**given)
        assert err.value.field == f"policy.{field}"


# -- sessions --------------------------------------------------------------------------------


def session(*, turns: int = 4, idle: timedelta = timedelta(hours=1), **fields: Any) -> Session:
    last = NOW - idle
    values: dict[str, Any] = {"updated_at": last, **fields}
    return Session(
        id="s",
        user_id="u",
        kind=SessionKind.CHAT,
        created_at=last - timedelta(hours=1),
        turn_count=turns,
        last_turn_at=last,
        **values,
    )


def turn(seq: int, content: str, role: Role = Role.USER, **fields: Any) -> Turn:
    return plain_turn(seq, content, role, first=NOW - timedelta(hours=2), **fields)


@pytest.mark.parametrize(("idle", "wanted"), [(-TICK, False), (timedelta(0), True), (TICK, True)])
def test_a_session_is_summarised_once_idle(idle: timedelta, wanted: bool) -> None:
    assert needs_summary(session(idle=POLICY.session_idle + idle), NOW, POLICY) is wanted


@pytest.mark.parametrize(("turns", "wanted"), [(3, False), (4, True), (5, True)])
def test_a_session_needs_a_handful_of_turns(turns: int, wanted: bool) -> None:
    assert needs_summary(session(turns=turns), NOW, POLICY) is wanted


def test_a_summary_written_after_the_last_turn_is_current() -> None:
    last = NOW - timedelta(hours=1)
    assert needs_summary(session(summary="old", updated_at=last), NOW, POLICY)
    assert not needs_summary(session(summary="new", updated_at=last + TICK), NOW, POLICY)
    assert needs_summary(session(summary=None, updated_at=last + TICK), NOW, POLICY)


def test_a_summary_written_here_is_current_while_it_covers_every_turn() -> None:
    last = NOW - timedelta(hours=1)
    ours: dict[str, Any] = {"metadata": {"summarised_turns": 4, "k": "v"}, "summary": "ours"}
    assert not needs_summary(session(turns=4, updated_at=last, **ours), NOW, POLICY)
    assert needs_summary(session(turns=5, updated_at=last + TICK, **ours), NOW, POLICY)
    assert summary_metadata(session(turns=6, metadata={"k": "v"})) == {
        "k": "v",
        "summarised_turns": 6,
    }


def test_shortened_cuts_at_a_word_within_the_limit() -> None:
    assert shortened("  a  short\nline ", 20) == "a short line"
    cut = shortened("the quick brown fox jumps over the lazy dog", 20)
    assert cut == "the quick brown fox…" and len(cut) <= 20


def test_extractive_summary_keeps_the_salient_half_in_order_within_the_budget() -> None:
    turns = [
        turn(1, "Hi, how are you?"),
        turn(
            2,
            "I went hiking with my sister in the Alps last weekend, it was cold and "
            "beautiful and we stayed in a hut.",
            Role.ASSISTANT,
            speaker="Jo",
        ),
        turn(3, "Did you take photos?"),
        turn(4, "We adopted a puppy called Max on Saturday; my kids love him already."),
        turn(5, "system prompt text that is long and tells of what I did yesterday", Role.SYSTEM),
        turn(6, "Nice."),
    ]
    summary = extractive_summary(turns, POLICY)
    assert summary is not None
    lines = summary.split("\n")
    assert lines[0].startswith("Jo: I went hiking") and lines[1].startswith("user: We adopted")
    assert len(lines) == 3  # half of the five spoken turns, rounded up
    assert "system prompt" not in summary and len(summary) <= POLICY.summary_chars
    tight = ConsolidationPolicy(summary_chars=80, summary_turn_chars=60)
    short = extractive_summary(turns, tight)
    assert short is not None and len(short) <= 80 and short.startswith("Jo: I went hiking")
    assert extractive_summary([*turns[:3], turn(7, "  ")], POLICY) is None


# -- the Vault -------------------------------------------------------------------------------


def everything(vault: Vault, user_id: str) -> dict[str, Memory]:
    memories = vault.list_memories(user_id, include_expired=True, limit=1000)
    return {m.id: m for m in memories}


def spoken(n: int, start: datetime) -> list[dict[str, Any]]:
    lines = [
        "Hello there, how was your week?",
        "I went to Lisbon with my brother and we walked all over the old town for three days.",
        "Which places did you like?",
        "My favourite was the castle; we watched the sunset from the walls on Friday.",
        "Sounds lovely.",
        "Thanks.",
    ]
    return [
        {
            "role": ("user", "assistant")[i % 2],
            "content": lines[i % len(lines)],
            "created_at": start + timedelta(minutes=i),
        }
        for i in range(n)
    ]


def test_consolidate_applies_every_rule_and_keeps_history(vault: Vault) -> None:
    day = timedelta(days=1)

    def episode(text: str, tier: str, age: timedelta) -> Memory:
        return vault.add_memory("alice", text, kind="episodic", tier=tier, created_at=NOW - age)

    dup_old = episode("Likes green tea.", "long_term", 20 * day)
    dup_new = episode("likes green TEA", "working", day)
    used = episode("Parks the car on level 3", "working", 2 * day)
    for _ in range(3):
        vault.store.record_access("alice", [used.id], "2025-05-31T00:00:00.000000Z")
    unused = episode("Asked about the weather", "working", 8 * day)
    faded = episode("Once mentioned a film", "long_term", 400 * day)
    expired = vault.add_memory(
        "alice", "Has a dentist appointment", kind="episodic", expires_at=NOW - day, pinned=True
    )
    fact = vault.add_memory(
        "alice", "Alice is vegetarian", category="diet", created_at=NOW - 900 * day
    )
    pinned = vault.add_memory(
        "alice", "Call her Ali", kind="procedural", pinned=True, created_at=NOW - 900 * day
    )
    fresh = episode("Mentioned a new job", "working", day)
    vault.add_turns("alice", "chat", spoken(6, NOW - timedelta(hours=3)))
    vault.add_turns("alice", "short", spoken(3, NOW - timedelta(hours=3)))
    vault.add_turns("alice", "live", spoken(6, NOW - timedelta(minutes=10)))
    bob = vault.add_memory(
        "bob", "Asked about the weather", kind="episodic", tier="working", created_at=NOW - 8 * day
    )
    before = everything(vault, "alice")
    events: list[Event] = []
    vault.events.subscribe(events.append)

    report = vault.consolidate("alice", now=NOW)

    assert [(m.survivor, m.merged) for m in report.merged] == [(dup_new.id, (dup_old.id,))]
    assert report.promoted == (used.id,)
    assert report.archived_unused == (unused.id,)
    assert report.archived_decayed == (faded.id,)
    assert report.archived_expired == (expired.id,)
    assert report.summarised == ("chat",)
    assert report.counts == {
        "merged": 1,
        "promoted": 1,
        "archived_unused": 1,
        "archived_decayed": 1,
        "archived_expired": 1,
        "summarised": 1,
        "extracted": 0,
        "superseded": 0,
    }
    after = everything(vault, "alice")
    assert after.keys() == before.keys()  # nothing deleted
    old = after[dup_old.id]
    assert old.superseded_by == dup_new.id and old.valid_to == NOW and old.text == dup_old.text
    assert after[dup_new.id].tier is Tier.LONG_TERM  # said before in long-term memory
    assert after[used.id].tier is Tier.LONG_TERM and after[used.id].access_count == 3
    for archived in (unused, faded, expired):
        assert after[archived.id].tier is Tier.ARCHIVE
    assert after[expired.id].pinned  # archived, not unpinned
    for kept in (fact, pinned, fresh):
        assert after[kept.id] == before[kept.id]
    summary = vault.get_session("alice", "chat").summary
    assert summary is not None and summary.splitlines()[0].startswith("assistant: I went to Lisbon")
    assert vault.get_session("alice", "short").summary is None
    assert vault.get_session("alice", "live").summary is None
    assert vault.list_memories("bob") == [bob]
    changed = {e.ids.get("memory_id") or e.ids.get("session_id") for e in events}
    assert {dup_old.id, used.id, unused.id, faded.id, expired.id, "chat"} <= changed
    assert all(e.user_id == "alice" for e in events)

    again = vault.consolidate("alice", now=NOW)
    assert not again.changed and again.counts == dict.fromkeys(report.counts, 0)
    assert everything(vault, "alice") == after


def test_duplicates_keep_their_recalls_in_history(vault: Vault) -> None:
    old = vault.add_memory(
        "u", "Has two cats", kind="episodic", tier="working", created_at=NOW - timedelta(days=3)
    )
    new = vault.add_memory(
        "u", "has two cats.", kind="episodic", tier="working", created_at=NOW - timedelta(days=1)
    )
    for _ in range(3):
        vault.store.record_access("u", [old.id], "2025-05-30T00:00:00.000000Z")
    report = vault.consolidate("u", now=NOW)
    assert [m.merged for m in report.merged] == [(old.id,)] and report.promoted == (new.id,)
    kept = vault.get_memory("u", old.id)
    assert kept.access_count == 3 and kept.superseded_by == new.id
    assert vault.get_memory("u", new.id).tier is Tier.LONG_TERM
    assert not vault.consolidate("u", now=NOW).changed


def test_a_duplicate_valid_only_from_later_on_ends_where_it_starts(vault: Vault) -> None:
    later = NOW + timedelta(days=10)
    old = vault.add_memory(
        "u", "Starts at Acme", created_at=NOW - timedelta(days=2), valid_from=later
    )
    new = vault.add_memory("u", "starts at Acme.", created_at=NOW - timedelta(days=1))
    vault.consolidate("u", now=NOW)  # its end may not come before its start
    closed = vault.get_memory("u", old.id)
    assert closed.superseded_by == new.id and closed.valid_to == closed.valid_from == later


def test_a_duplicate_that_had_stopped_holding_keeps_its_end(vault: Vault) -> None:
    ended = NOW - timedelta(days=30)
    old = vault.add_memory("u", "Works at Acme", created_at=NOW - timedelta(days=90),
                           valid_from=NOW - timedelta(days=90), valid_to=ended)  # fmt: skip
    new = vault.add_memory("u", "works at Acme.", created_at=NOW - timedelta(days=1))
    vault.consolidate("u", now=NOW)  # merged, but not made to hold until now
    closed = vault.get_memory("u", old.id)
    assert closed.superseded_by == new.id and closed.valid_to == ended


def consolidated_while(vault: Vault, meanwhile: Callable[[Event], None]) -> ConsolidationReport:
    """User "u" consolidated at NOW, `meanwhile` told of each write the run announces."""
    unsubscribe = vault.events.subscribe(meanwhile)
    try:
        return vault.consolidate("u", now=NOW)
    finally:
        unsubscribe()


def test_a_memory_written_during_a_run_is_left_for_the_next(vault: Vault) -> None:
    """The plan is read once and applied change by change: a memory a caller edits in between
    must not get the change planned for what it was (the caller rates it important: it is no
    longer an unused working memory to archive)."""
    day = timedelta(days=1)
    first = vault.add_memory("u", "Has two cats", kind="episodic", created_at=NOW - 3 * day)
    vault.add_memory("u", "has two cats", kind="episodic", created_at=NOW - 2 * day)
    unused = vault.add_memory(
        "u", "Asked about the weather", kind="episodic", tier="working", created_at=NOW - 8 * day
    )
    edited: list[str] = []

    def meanwhile(event: Event) -> None:  # the run's first write: the duplicate's merge
        if event.type == "memory.updated" and not edited:
            edited.append(unused.id)  # first: the edit announces itself too
            vault.update_memory("u", unused.id, importance=0.9)

    report = consolidated_while(vault, meanwhile)
    assert edited == [unused.id] and [m.merged for m in report.merged] == [(first.id,)]
    assert report.skipped == (unused.id,) and report.archived_unused == ()
    assert vault.get_memory("u", unused.id).tier is Tier.WORKING  # not archived as planned
    assert vault.consolidate("u", now=NOW).promoted == (unused.id,)  # judged again: important


def idle_sessions(vault: Vault, user_id: str, *session_ids: str) -> None:
    """Sessions of four spoken turns, idle long enough at NOW to be summarised."""
    for session_id in session_ids:
        vault.add_turns(user_id, session_id, spoken(4, NOW - timedelta(hours=3)))


def summary_written(event: Event, session_id: str) -> bool:
    return event.type == "session.updated" and event.ids.get("session_id") == session_id


def test_a_session_written_during_a_run_keeps_that_write(make_vault: MakeVault) -> None:
    """Summaries are made over one read of each session, then written: the app's edit of a
    session in between (here through another Vault on the same database, once the run has
    written its first summary) is kept, and that session waits for the next run."""
    vault, app = make_vault(), make_vault()
    idle_sessions(vault, "u", "a", "b")
    edited: list[str] = []

    def meanwhile(event: Event) -> None:
        if summary_written(event, "a") and not edited:
            edited.append("b")
            app.update_session("u", "b", title="Lisbon", metadata={"topic": "trip"})

    report = consolidated_while(vault, meanwhile)
    assert edited == ["b"]
    assert report.summarised == ("a",) and report.skipped_sessions == ("b",)
    kept = vault.get_session("u", "b")
    assert (kept.title, kept.metadata, kept.summary) == ("Lisbon", {"topic": "trip"}, None)
    again = vault.consolidate("u", now=NOW)
    assert again.summarised == ("b",) and again.skipped_sessions == ()
    summarised = vault.get_session("u", "b")
    assert summarised.title == "Lisbon" and summarised.summary is not None
    assert summarised.metadata == {"topic": "trip", "summarised_turns": 4, "extracted_seq": 4}


def test_what_is_deleted_during_a_run_is_skipped_and_the_run_goes_on(
    make_vault: MakeVault,
) -> None:
    vault, app = make_vault(), make_vault()
    day = timedelta(days=1)
    first = vault.add_memory("u", "Has two cats", kind="episodic", created_at=NOW - 3 * day)
    vault.add_memory("u", "has two cats", kind="episodic", created_at=NOW - 2 * day)
    unused = vault.add_memory(
        "u", "Asked about the weather", kind="episodic", tier="working", created_at=NOW - 8 * day
    )
    idle_sessions(vault, "u", "a", "b", "c")
    deleted: list[str] = []

    def meanwhile(event: Event) -> None:  # another writer deletes what the run has yet to write
        if summary_written(event, "a") and "b" not in deleted:  # sessions are written first
            deleted.append("b")
            app.delete_session("u", "b")
        elif event.type == "memory.updated" and unused.id not in deleted:  # then the merge
            deleted.append(unused.id)
            app.delete_memory("u", unused.id)

    report = consolidated_while(vault, meanwhile)
    assert deleted == ["b", unused.id]
    assert [m.merged for m in report.merged] == [(first.id,)]
    assert report.skipped == (unused.id,) and report.archived_unused == ()
    assert report.summarised == ("a", "c") and report.skipped_sessions == ("b",)
    assert [s.id for s in vault.list_sessions("u")] == ["c", "a"]  # "b" not made again
    assert not vault.consolidate("u", now=NOW).changed


def test_a_duplicate_whose_survivor_is_deleted_during_a_run_stays_current(
    make_vault: MakeVault,
) -> None:
    """Two groups of duplicates; once the run has merged one, another writer deletes the newest
    copy of the other. Its older copy must not point to a memory that is gone (it would drop
    out of the current memories for good): it stays as it was, and is listed as skipped."""
    vault, app = make_vault(), make_vault()
    day = timedelta(days=1)
    cats = [vault.add_memory("u", text, kind="episodic", created_at=NOW - age * day)
            for text, age in (("Has two cats", 3), ("has two cats", 2))]  # fmt: skip
    tea = [vault.add_memory("u", text, kind="episodic", created_at=NOW - age * day)
           for text, age in (("Likes green tea", 3), ("likes green tea.", 2))]  # fmt: skip
    deleted: list[Memory] = []

    def meanwhile(event: Event) -> None:  # the run's first write: one group's merge
        if event.type == "memory.updated" and not deleted:
            merged_first = event.ids["memory_id"] in {m.id for m in cats}
            deleted.append((tea if merged_first else cats)[1])
            app.delete_memory("u", deleted[0].id)

    report = consolidated_while(vault, meanwhile)
    assert len(deleted) == 1
    left = tea if deleted[0] in tea else cats
    merged = cats if left is tea else tea
    assert [(m.survivor, m.merged) for m in report.merged] == [(merged[1].id, (merged[0].id,))]
    assert report.skipped == (left[0].id,)
    assert vault.get_memory("u", left[0].id).superseded_by is None
    current = {m.id for m in vault.list_memories("u", include_superseded=False)}
    assert current == {merged[1].id, left[0].id}
    assert not vault.consolidate("u", now=NOW).changed


def test_clearing_a_channel_takes_the_summaries_that_quote_it(vault: Vault) -> None:
    """A summary quoting turns a clear deleted went on showing them: it goes with them, and
    so does the note of the turns it covered; the caller's own metadata stays."""
    start = NOW - timedelta(hours=3)
    vault.add_turns("u", "mixed", spoken(4, start))
    said = "I keep my spare key under the blue flowerpot by the back door, remember that."
    vault.add_turn("u", "mixed", "user", said, channel="general", created_at=start)
    vault.update_session("u", "mixed", metadata={"topic": "trip"})
    idle_sessions(vault, "u", "other")
    assert vault.consolidate("u", now=NOW).summarised == ("mixed", "other")
    assert "flowerpot" in (vault.get_session("u", "mixed").summary or "")
    kept = vault.get_session("u", "other")

    assert vault.clear("u", channel="general") == 1
    cleared = vault.get_session("u", "mixed")
    # the note of the turns read for facts stays: the facts stay too, and `seq` only grows
    assert (cleared.summary, cleared.metadata, cleared.turn_count) == (
        None, {"topic": "trip", "extracted_seq": 5}, 4,
    )  # fmt: skip
    assert vault.get_session("u", "other") == kept  # it lost no turns
    again = vault.consolidate("u", now=NOW)
    assert again.summarised == ("mixed",)
    summary = vault.get_session("u", "mixed").summary
    assert summary is not None and "flowerpot" not in summary


def test_a_summary_over_the_deployments_limits_is_skipped_not_fatal(
    make_vault: MakeVault,
) -> None:
    """A session whose metadata, with the note of the turns its summary covers, would pass
    `max_json_bytes` is left as it is; it does not stop the run for the user's other sessions."""
    vault = make_vault(max_json_bytes=100)
    idle_sessions(vault, "u", "a", "b")
    vault.update_session("u", "a", metadata={"notes": "x" * 80})  # fits, with no room for more
    report = vault.consolidate("u", now=NOW)
    assert report.summarised == ("b",) and report.skipped_sessions == ("a",)
    full = vault.get_session("u", "a")
    assert full.summary is None and full.metadata == {"notes": "x" * 80}


def test_a_new_turn_makes_the_summary_stale(vault: Vault) -> None:
    vault.add_turns("u", "s", spoken(4, NOW - timedelta(hours=2)))
    assert vault.consolidate("u", now=NOW).summarised == ("s",)
    first = vault.get_session("u", "s").summary
    assert not vault.consolidate("u", now=NOW).changed
    vault.add_turn(
        "u",
        "s",
        "user",
        "By the way, I started a pottery class last month and made my first bowl.",
        created_at=NOW - timedelta(hours=1),
    )
    assert vault.consolidate("u", now=NOW).summarised == ("s",)
    second = vault.get_session("u", "s").summary
    assert second != first and second is not None and "pottery" in second


def test_a_move_supersedes_the_old_home_and_keeps_it_in_history(vault: Vault) -> None:
    """Said in one session, then a month later in another: the newer fact stands, the older is
    superseded by it (closed where it starts), and a context about home gives the new one."""
    first, moved = NOW - timedelta(days=30), NOW - timedelta(hours=2)
    vault.add_turns("u", "spring", [
        {"role": "user", "content": "Hello! I live in New York.", "created_at": first},
        {"role": "assistant", "content": "Nice, I live in Oslo.", "created_at": first},
    ])  # fmt: skip
    report = vault.consolidate("u", now=first + timedelta(hours=1))
    (new_york,) = [vault.get_memory("u", i) for i in report.extracted]
    assert new_york.text == "The user lives in New York" and report.superseded == ()
    vault.add_turn("u", "summer", "user", "I just moved to Boston", created_at=moved)

    report = vault.consolidate("u", now=NOW)
    (boston_id,) = report.extracted
    assert [(s.newer, s.older) for s in report.superseded] == [(boston_id, (new_york.id,))]
    assert report.counts["extracted"] == 1 and report.counts["superseded"] == 1
    boston = vault.get_memory("u", boston_id)
    assert (boston.text, boston.kind, boston.category) == (
        "The user lives in Boston", MemoryKind.FACT, "location",
    )  # fmt: skip
    assert boston.agent_id is None and boston.valid_from == moved
    assert boston.metadata == {"extracted": True, "slot": "home"}
    (source,) = boston.source_turn_ids
    assert vault.get_session("u", "summer").turns[0].id == source  # type: ignore[index]
    current = vault.list_memories("u", kinds=["fact"], include_superseded=False)
    assert [m.id for m in current] == [boston_id]
    old = vault.get_memory("u", new_york.id)
    assert old.superseded_by == boston_id and old.valid_to == moved and old.valid_from == first
    assert new_york.id in {m.id for m in vault.list_memories("u", include_superseded=True)}

    before = everything(vault, "u")
    again = vault.consolidate("u", now=NOW)
    assert not again.changed and everything(vault, "u") == before

    context = vault.context("u", "where do I live?", now=NOW)
    facts = [item.text for item in context.items if item.source == "fact"]
    assert facts == ["location: The user lives in Boston"]
    # the superseded fact is in no section; the turns that said both remain past conversation,
    # each with its date
    assert new_york.id not in {item.id for item in context.items}
    known = context.text.split("## ")[1]
    assert known.startswith("What you know") and "Boston" in known and "New York" not in known


def test_a_return_to_an_old_home_is_a_third_spell_not_a_duplicate_of_the_first(
    vault: Vault,
) -> None:
    """Boston, then Denver, then Boston again, all read in one run: each statement holds until
    the next. Merged as duplicates first, the first Boston held until the run, beside Denver."""
    said = [NOW - timedelta(days=days) for days in (60, 30, 1)]
    for n, (city, at) in enumerate(zip(("Boston", "Denver", "Boston"), said, strict=True)):
        vault.add_turn("u", f"s{n}", "user", f"I just moved to {city}", created_at=at)
    report = vault.consolidate("u", now=NOW)
    spells = sorted(
        (vault.get_memory("u", i) for i in report.extracted), key=lambda m: m.valid_from or NOW
    )
    assert [(m.text.split()[-1], m.valid_from, m.valid_to) for m in spells] == [
        ("Boston", said[0], said[1]),
        ("Denver", said[1], said[2]),
        ("Boston", said[2], None),
    ]
    assert [m.superseded_by for m in spells] == [spells[1].id, spells[2].id, None]
    assert report.merged == ()
    assert not vault.consolidate("u", now=NOW).changed


def test_a_callers_fact_with_a_slot_gives_way_to_a_newer_extracted_one(vault: Vault) -> None:
    acme = vault.add_memory("u", "Works at Acme", category="work", metadata={"slot": "employer"},
                            valid_from=NOW - timedelta(days=300))  # fmt: skip
    other = vault.add_memory("u", "Likes green tea", category="food")
    vault.add_turn("u", "s", "user", "I work at Initech", created_at=NOW - timedelta(hours=1))
    report = vault.consolidate("u", now=NOW)
    (initech,) = report.extracted
    assert [(s.newer, s.older) for s in report.superseded] == [(initech, (acme.id,))]
    closed = vault.get_memory("u", acme.id)
    assert closed.superseded_by == initech and closed.valid_to == NOW - timedelta(hours=1)
    assert vault.get_memory("u", other.id).superseded_by is None
    assert not vault.consolidate("u", now=NOW).changed


def test_a_fact_said_again_adds_nothing_and_assistants_add_nothing(vault: Vault) -> None:
    for session_id, hours in (("a", 30), ("b", 3)):
        vault.add_turns("u", session_id, [
            {"role": "user", "content": "I'm allergic to peanuts.",
             "created_at": NOW - timedelta(hours=hours)},
            {"role": "assistant", "content": "I'm allergic to nothing, and I live in Oslo.",
             "created_at": NOW - timedelta(hours=hours)},
            {"role": "assistant", "content": "I work at OpenSky",
             "created_at": NOW - timedelta(hours=hours)},
        ])  # fmt: skip
    report = vault.consolidate("u", now=NOW)
    (allergy,) = [vault.get_memory("u", i) for i in report.extracted]
    assert allergy.text == "The user is allergic to peanuts"
    assert allergy.valid_from == NOW - timedelta(hours=30)  # since it was first said
    assert [m.id for m in vault.list_memories("u")] == [allergy.id]
    assert vault.get_session("u", "b").metadata == {"extracted_seq": 3}
    assert not vault.consolidate("u", now=NOW).changed


def test_extraction_waits_for_the_session_to_be_idle_and_may_be_off(vault: Vault) -> None:
    vault.add_turn("u", "s", "user", "I live in Lisbon", created_at=NOW - timedelta(minutes=5))
    assert vault.consolidate("u", now=NOW).extracted == ()  # a conversation under way
    later = NOW + POLICY.session_idle
    off = ConsolidationPolicy(extract_facts=False)
    assert not vault.consolidate("u", now=later, policy=off).changed
    assert vault.get_session("u", "s").metadata == {}
    assert len(vault.consolidate("u", now=later).extracted) == 1
    with pytest.raises(Invalid) as err:
        ConsolidationPolicy(extract_facts=1)  # type: ignore[arg-type]
    assert err.value.field == "policy.extract_facts"


def test_facts_of_a_session_written_during_a_run_wait_for_the_next(make_vault: MakeVault) -> None:
    """Sessions are read, then written one by one, each on the read its facts came from: one
    a caller writes in between keeps that write, adds no fact, and is read again next time."""
    vault, app = make_vault(), make_vault()
    vault.add_turn("u", "a", "user", "I live in Lisbon", created_at=NOW - timedelta(hours=3))
    vault.add_turn("u", "b", "user", "I work at Initech", created_at=NOW - timedelta(hours=2))
    edited: list[str] = []

    def meanwhile(event: Event) -> None:
        if summary_written(event, "a") and not edited:
            edited.append("b")
            app.update_session("u", "b", title="Work")

    report = consolidated_while(vault, meanwhile)
    assert edited == ["b"] and report.skipped_sessions == ("b",)
    assert [vault.get_memory("u", i).text for i in report.extracted] == ["The user lives in Lisbon"]
    again = vault.consolidate("u", now=NOW)
    assert [vault.get_memory("u", i).text for i in again.extracted] == ["The user works at Initech"]
    assert vault.get_session("u", "b").title == "Work"


def test_bad_input_names_the_field(vault: Vault) -> None:
    vault.add_memory("u", "something")
    for bad in ("yesterday", 5):
        with pytest.raises(Invalid) as err:
            vault.consolidate("u", now=bad)  # type: ignore[arg-type]
        assert err.value.field == "now"
    with pytest.raises(Invalid) as err:
        vault.consolidate("u/../v")
    assert err.value.field == "user_id"
    with pytest.raises(Invalid) as err:
        vault.consolidate("u", policy={"promote_uses": 1})  # type: ignore[arg-type]
    assert err.value.field == "policy"
    with pytest.raises(NotFound):
        vault.consolidate("nobody")


def test_the_cli_prints_the_report(
    make_vault: MakeVault, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with make_vault() as vault:
        unused = vault.add_memory(
            "alice",
            "Asked about trains",
            kind="episodic",
            tier="working",
            created_at=NOW - timedelta(days=30),
        )
        old = vault.add_memory("alice", "Lives in Oslo", metadata={"slot": "home"},
                               created_at=NOW - timedelta(days=30))  # fmt: skip
        vault.add_turn("alice", "s", "user", "I live in Lyon", created_at=NOW - timedelta(days=1))
    code = main(
        ["--data", str(tmp_path / "data"), "consolidate", "alice", "--now", NOW.isoformat()]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["archived_unused"] == [unused.id] and report["counts"]["archived_unused"] == 1
    (lyon,) = report["extracted"]
    assert report["superseded"] == [{"newer": lyon, "older": [old.id]}]
    assert report["counts"]["extracted"] == report["counts"]["superseded"] == 1
    assert report["now"] == NOW.isoformat()
    assert main(["--data", str(tmp_path / "data"), "consolidate", "nobody"]) == 2


def test_the_rest_route_answers_the_report(make_vault: MakeVault) -> None:
    vault = make_vault()
    unused = vault.add_memory(
        "alice",
        "Asked about trains",
        kind="episodic",
        tier="working",
        created_at=NOW - timedelta(days=30),
    )
    _, user_key = vault.keys.create("user", "alice")
    agent = vault.register_agent("alice", "Jarvis")
    _, agent_key = vault.keys.create("agent", "alice", agent.id)
    _, other_key = vault.keys.create("user", "bob")
    with serve_in_thread(vault) as url:
        path = f"{url}/v1/users/alice/consolidate"

        def post(key: str, body: dict[str, Any] | None = None) -> httpx.Response:
            return httpx.post(path, json=body, headers={"Authorization": f"Bearer {key}"})

        assert post(agent_key).status_code == 403
        assert post(other_key).status_code == 404
        bad = post(user_key, {"now": "soon"})
        assert bad.status_code == 422
        answer = post(user_key, {"now": NOW.isoformat()})
        assert answer.status_code == 200
        assert answer.json()["archived_unused"] == [unused.id]
        assert post(user_key).json()["counts"]["archived_unused"] == 0
    assert vault.get_memory("alice", unused.id).tier is Tier.ARCHIVE


# -- in the background -----------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_upkeep_queues_few_jobs_for_many_writes_and_none_for_its_own(vault: Vault) -> None:
    upkeep = Upkeep(vault, delay=0.3, poll_seconds=0.05)
    try:
        unused = vault.add_memory("alice", "Asked about trains", kind="episodic", tier="working",
                                  created_at=utcnow() - timedelta(days=30))  # fmt: skip
        for i in range(5):
            vault.add_turn("alice", "s", "user", f"message {i}")
        wait_for(lambda: vault.get_memory("alice", unused.id).tier is Tier.ARCHIVE)
        # one job, or two when the writes straddled a poll (the later ones wait for the next)
        wait_for(lambda: set(vault.jobs.counts()) == {"done"})
        done = vault.jobs.counts()["done"]
        assert done in (1, 2)
        time.sleep(1.0)  # over twice the delay: the runs' own writes queued nothing
        assert vault.jobs.counts() == {"done": done}
        vault.add_memory("bob", "Asked about buses", kind="episodic", tier="working")
        wait_for(lambda: vault.jobs.counts() == {"done": done + 1})
    finally:
        upkeep.close()


def test_the_facts_a_run_adds_queue_no_run_after_it(vault: Vault) -> None:
    vault.add_turn(
        "alice", "s", "user", "I just moved to Boston", created_at=NOW - timedelta(hours=2)
    )
    upkeep = Upkeep(vault, delay=60, poll_seconds=0.05)  # sees only what comes after
    try:
        assert len(vault.consolidate("alice", now=NOW).extracted) == 1  # a memory added
    finally:
        upkeep.close()  # queues every write it still holds
    assert vault.jobs.counts() == {}


def test_upkeep_queues_the_writes_it_still_holds_when_it_closes(vault: Vault) -> None:
    upkeep = Upkeep(vault, delay=60, poll_seconds=0.05)
    try:
        vault.add_turn("alice", "s", "user", "first")
        wait_for(lambda: vault.jobs.counts() == {"queued": 1})
        vault.add_turn("alice", "s", "user", "second")  # waits for the job queued for the first
        vault.add_turn("bob", "s", "user", "hello")  # maybe not polled yet
    finally:
        upkeep.close()
    assert vault.jobs.counts() == {"queued": 3}


def test_the_server_consolidates_a_user_after_a_write(
    tmp_path: Path, backend_settings: dict[str, Any]
) -> None:
    server = start_server(
        tmp_path / "data", MEMVAULT_ADMIN_KEY=ADMIN_KEY, MEMVAULT_CONSOLIDATION_DELAY="0.2",
        MEMVAULT_EMBEDDER="hashing",
    )  # fmt: skip
    try:
        memories = f"{server.url}/v1/users/alice/memories"
        created = httpx.post(memories, headers=ADMIN, json={
            "text": "Asked about trains", "kind": "episodic", "tier": "working",
            "created_at": (utcnow() - timedelta(days=30)).isoformat()})  # fmt: skip
        assert created.status_code == 201
        path = f"{memories}/{created.json()['id']}"
        wait_for(lambda: httpx.get(path, headers=ADMIN).json()["tier"] == "archive")
    finally:
        server.stop()
