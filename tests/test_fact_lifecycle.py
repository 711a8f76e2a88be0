"""Facts follow their turns: a deleted session or a clear takes the facts read from those turns
alone and puts back what they had superseded. The plan as a pure function, then `Vault` on
real stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from memvault import Vault
from memvault.events import Event
from memvault.mind.unlearn import Relink, UnlearningPlan, plan_unlearning
from memvault.model import Memory, MemoryKind, Tier, format_ts
from memvault.store.database import PlanOutdated, Unlearning

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
EXTRACTED = {"extracted": True, "slot": "home"}


def fact(
    id: str, sources: tuple[str, ...], starts: datetime, metadata: dict[str, Any] | None = None,
    **fields: Any,
) -> Memory:  # fmt: skip
    return Memory(
        id=id, user_id="u", kind=MemoryKind.FACT, tier=Tier.LONG_TERM, text=f"fact {id}",
        created_at=starts, updated_at=starts, source_turn_ids=sources, valid_from=starts,
        metadata=EXTRACTED if metadata is None else metadata, **fields,
    )  # fmt: skip


# -- the plan --------------------------------------------------------------------------------


def test_a_deleted_current_fact_puts_the_one_it_superseded_back() -> None:
    new_york = fact("ny", ("t1",), NOW - 30 * DAY, superseded_by="bos", valid_to=NOW - DAY)
    boston = fact("bos", ("t2",), NOW - DAY)
    plan = plan_unlearning([new_york, boston], removed={"t2"}, kept={"t1"})
    assert plan == UnlearningPlan(("bos",), (Relink("ny", None, None),))
    assert plan_unlearning([new_york, boston], removed={"t1"}, kept={"t2"}) == UnlearningPlan(
        ("ny",)
    )  # the newer fact stands as it did


def test_a_deleted_fact_in_the_middle_joins_its_neighbours() -> None:
    said = [NOW - 60 * DAY, NOW - 30 * DAY, NOW - DAY, NOW]
    chain = [
        fact("a", ("t0",), said[0], superseded_by="b", valid_to=said[1]),
        fact("b", ("t1",), said[1], superseded_by="c", valid_to=said[2]),
        fact("c", ("t2",), said[2], superseded_by="d", valid_to=said[3]),
        fact("d", ("t3",), said[3]),
    ]
    kept = {"t0", "t2", "t3"}
    plan = plan_unlearning(chain, removed={"t1"}, kept=kept)
    assert plan == UnlearningPlan(("b",), (Relink("a", "c", said[2]),))
    two = plan_unlearning(chain, removed={"t1", "t2"}, kept={"t0", "t3"})
    assert two == UnlearningPlan(("b", "c"), (Relink("a", "d", said[3]),))
    tail = plan_unlearning(chain, removed={"t2", "t3"}, kept={"t0", "t1"})
    assert tail == UnlearningPlan(("c", "d"), (Relink("b", None, None),))


def test_a_relinked_fact_never_ends_before_it_starts() -> None:
    early = fact("a", ("t0",), NOW, superseded_by="b", valid_to=NOW)
    gone = fact("b", ("t1",), NOW - DAY, superseded_by="c", valid_to=NOW - DAY)
    after = fact("c", ("t2",), NOW - 2 * DAY)
    plan = plan_unlearning([early, gone, after], removed={"t1"}, kept={"t0", "t2"})
    assert plan.relinked == (Relink("a", "c", NOW),)


def test_only_extracted_facts_with_no_source_left_go() -> None:
    both = fact("both", ("t1", "t2"), NOW)
    earlier = fact("earlier", ("t0", "t1"), NOW)  # t0 was deleted before: t1 was its last
    untouched = fact("other", ("t0",), NOW)  # its source went before this deletion
    callers = fact("callers", ("t1",), NOW, {"slot": "home"})
    unsourced = fact("unsourced", (), NOW)
    plan = plan_unlearning(
        [both, earlier, untouched, callers, unsourced], removed={"t1"}, kept={"t2"}
    )
    assert plan == UnlearningPlan(("earlier",))


def test_a_callers_fact_or_another_slots_keeps_its_supersession() -> None:
    callers = fact("acme", (), NOW - 9 * DAY, {"slot": "home"}, superseded_by="x", valid_to=NOW)
    other_slot = fact("job", ("t0",), NOW - 9 * DAY, {"extracted": True, "slot": "employer"},
                      superseded_by="x", valid_to=NOW)  # fmt: skip
    unslotted = fact("pet", ("t0",), NOW - 9 * DAY, {"extracted": True},
                     superseded_by="x", valid_to=NOW)  # fmt: skip
    gone = fact("x", ("t1",), NOW)
    plan = plan_unlearning([callers, other_slot, unslotted, gone], removed={"t1"}, kept={"t0"})
    assert plan == UnlearningPlan(("x",))


# -- the Vault -------------------------------------------------------------------------------


def facts_of(vault: Vault) -> dict[str, Memory]:
    return {m.id: m for m in vault.list_memories("u", kinds=["fact"], include_expired=True)}


def said_in(vault: Vault, session_id: str, text: str, at: datetime, **fields: Any) -> str:
    """Say `text` as the user in a session of its own, consolidate, and answer the fact read."""
    vault.add_turn("u", session_id, "user", text, created_at=at, **fields)
    (found,) = vault.consolidate("u", now=at + timedelta(hours=1)).extracted
    return found


def test_deleting_the_move_leaves_the_old_home_current(vault: Vault) -> None:
    new_york = said_in(vault, "spring", "Hello! I live in New York.", NOW - 30 * DAY)
    boston = said_in(vault, "summer", "I just moved to Boston", NOW - DAY)
    assert facts_of(vault)[new_york].superseded_by == boston
    events: list[Event] = []
    vault.events.subscribe(events.append)

    vault.delete_session("u", "summer")
    (left,) = facts_of(vault).values()
    assert (left.id, left.superseded_by, left.valid_to) == (new_york, None, None)
    assert left.valid_from == NOW - 30 * DAY
    assert [(e.type, e.ids.get("memory_id")) for e in events] == [
        ("session.deleted", None), ("memory.deleted", boston), ("memory.updated", new_york),
    ]  # fmt: skip
    assert not vault.consolidate("u", now=NOW).changed  # nothing is read back from what is left
    context = vault.context("u", "where do I live?", now=NOW)
    assert [i.text for i in context.items if i.source == "fact"] == [
        "location: The user lives in New York"
    ]


def test_a_fact_with_a_source_in_another_session_survives(vault: Vault) -> None:
    vault.add_turn("u", "a", "user", "I live in Oslo", created_at=NOW - 2 * DAY)
    vault.add_turn("u", "b", "user", "I live in Oslo, as I said", created_at=NOW - DAY)
    sources = [t.id for s in ("a", "b") for t in vault.get_session("u", s).turns or ()]
    both = vault.add_memory("u", "The user lives in Oslo", metadata=EXTRACTED,
                            source_turn_ids=sources)  # fmt: skip
    vault.delete_session("u", "a")
    assert facts_of(vault)[both.id].source_turn_ids == tuple(sources)
    vault.delete_session("u", "b")
    assert facts_of(vault) == {}


def test_a_callers_fact_with_a_slot_is_untouched(vault: Vault) -> None:
    vault.add_turn("u", "s", "user", "Some news: I left Acme", created_at=NOW - DAY)
    (turn,) = vault.get_session("u", "s").turns or ()
    written = vault.add_memory("u", "Works at Initech", metadata={"slot": "employer"},
                               source_turn_ids=[turn.id])  # fmt: skip
    before = vault.get_memory("u", written.id)
    vault.delete_session("u", "s")
    assert facts_of(vault) == {written.id: before}


def test_clearing_a_channel_takes_the_facts_read_from_it(vault: Vault) -> None:
    vault.add_turn("u", "s", "user", "I live in Lisbon", created_at=NOW - 3 * DAY)
    vault.add_turn("u", "s", "user", "I work at Initech", channel="general",
                   created_at=NOW - 2 * DAY)  # fmt: skip
    found = vault.consolidate("u", now=NOW).extracted
    assert len(found) == 2
    assert vault.clear("u", channel="general") == 1
    assert [m.text for m in facts_of(vault).values()] == ["The user lives in Lisbon"]
    assert vault.clear("u") == 1
    assert facts_of(vault) == {}


def test_a_return_keeps_its_chain_when_the_middle_session_goes(vault: Vault) -> None:
    said = [NOW - 60 * DAY, NOW - 30 * DAY, NOW - DAY]
    cities = zip(("Boston", "Denver", "Boston"), said, strict=True)
    ids = [said_in(vault, f"s{n}", f"I just moved to {city}", at)
           for n, (city, at) in enumerate(cities)]  # fmt: skip
    vault.delete_session("u", "s1")
    left = facts_of(vault)
    assert sorted(left) == sorted([ids[0], ids[2]])
    first, last = left[ids[0]], left[ids[2]]
    assert (first.superseded_by, first.valid_from, first.valid_to) == (ids[2], said[0], said[2])
    assert (last.superseded_by, last.valid_to) == (None, None)
    assert not vault.consolidate("u", now=NOW).changed


def test_search_no_longer_finds_a_deleted_fact(recall_vault: Vault) -> None:
    vault = recall_vault
    said_in(vault, "spring", "I live in Reykjavik", NOW - 30 * DAY)
    boston = said_in(vault, "summer", "I just moved to Boston", NOW - DAY)
    assert boston in {h.id for h in vault.search("u", "Boston", now=NOW)}
    vault.delete_session("u", "summer")
    hits = vault.search("u", "lives in Boston Reykjavik", now=NOW)
    assert boston not in {h.id for h in hits}
    assert [h.text for h in hits if h.type == "memory"] == ["The user lives in Reykjavik"]


def test_a_plan_made_over_facts_changed_since_writes_nothing(vault: Vault) -> None:
    """The store checks, in the deletion's transaction, what the plan was made over; the
    Vault then plans again (another writer's change between its reads and its write)."""
    boston = said_in(vault, "summer", "I just moved to Boston", NOW - DAY)
    (turn,) = vault.get_session("u", "summer").turns or ()
    rows = vault.store.list_memories("u", kinds=["fact"])
    read = (len(rows), max(int(r["rev"]) for r in rows))
    stale = [
        Unlearning((read[0], read[1] - 1), (turn.id,), (boston,), ()),  # a fact written since
        Unlearning(read, (turn.id, "t-gone"), (boston,), ()),  # a source deleted since
    ]
    for unlearning in stale:
        with pytest.raises(PlanOutdated):
            vault.store.delete_session("u", "summer", format_ts(NOW), unlearning=unlearning)
        assert vault.get_session("u", "summer").turn_count == 1 and boston in facts_of(vault)
    vault.delete_session("u", "summer")
    assert facts_of(vault) == {}
