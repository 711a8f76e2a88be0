"""Context assembly: section order, the token budget, relevance, per-channel limits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from memvault import Vault
from memvault.errors import Invalid
from memvault.mind.context import Sources, build_context
from memvault.retrieval.search import Hit
from memvault.retrieval.tokens import count_tokens

NOW = datetime(2024, 3, 20, 12, 0, tzinfo=UTC)


def _fill(vault: Vault) -> None:
    vault.set_global_context("house-rules", "Answer in British English.")
    vault.add_memory("u", "Always greet Ann by name", pinned=True, kind="procedural")
    vault.add_memory("u", "Ann is vegetarian", category="diet")
    vault.add_turn("u", "old", "user", "We booked a cabin in Norway for the summer", speaker="Ann")
    for i in range(30):
        vault.add_turn("u", "now", "user", f"chat message {i}", speaker="Ann")
    for i in range(15):
        vault.add_turn("u", "now", "user", f"group remark {i}", channel="general", speaker="Bo")


def test_sections_come_in_order_and_each_item_once(recall_vault: Vault) -> None:
    _fill(recall_vault)
    context = recall_vault.context("u", "cabin in Norway", session_id="now", token_budget=4000)
    text = context.text
    order = [
        text.index("Answer in British English."),
        text.index("Always greet Ann by name"),
        text.index("diet: Ann is vegetarian"),
        text.index("cabin in Norway"),
        text.index("chat message 29"),
    ]
    assert order == sorted(order)
    sources = [item.source for item in context.items]
    assert sources[:3] == ["global", "pinned", "fact"]
    keys = [(item.type, item.id) for item in context.items]
    assert len(keys) == len(set(keys))


def test_an_agents_context_holds_only_its_own_memories(recall_vault: Vault) -> None:
    vault = recall_vault
    scout = vault.register_agent("u", "scout").id
    other = vault.register_agent("u", "planner").id
    vault.add_memory("u", "Scout note: Norway cabin has no wifi", kind="fact", agent_id=scout)
    vault.add_memory("u", "Planner note: Norway cabin costs 900", kind="fact", agent_id=other)
    vault.add_memory("u", "Norway cabin trip is in July", pinned=True)
    vault.add_turn("u", "s", "user", "We booked a cabin in Norway", speaker="Ann")
    seen = vault.context("u", "Norway cabin", agent_id=scout, token_budget=4000)
    everything = vault.context("u", "Norway cabin", token_budget=4000)
    assert "no wifi" in seen.text and "We booked a cabin" in seen.text
    hidden = [line for line in ("costs 900", "trip is in July") if line in seen.text]
    assert hidden == []
    assert not any("costs 900" in item.text for item in seen.dropped)
    assert all(line in everything.text for line in ("no wifi", "costs 900", "trip is in July"))


def test_a_contexts_recent_turns_are_the_stores_newest_of_each_channel(recall_vault: Vault) -> None:
    """Read from the search index, they are what the store lists: after turns of a channel are
    cleared from a session that mixes channels, and after the session grows again."""
    vault = recall_vault
    for i in range(12):
        vault.add_turn("u", "now", "user", f"chat {i}", channel="general" if i % 3 else "ai")
    vault.add_turn("u", "other", "user", "another session's turn")
    limits = {"ai": 2, "general": 3}

    def from_index() -> list[tuple[str, int, str]]:
        _, standing = vault.recall.for_context(
            "u", "chat", limit=10, now=NOW, min_score=None, session_id="now", channel_limits=limits
        )
        return [(t.id, t.seq, t.text) for t in standing.recent]

    def from_store() -> list[tuple[str, int, str]]:
        turns = [
            t for channel, limit in limits.items()
            for t in vault.recent_turns("u", session_id="now", channel=channel, limit=limit)
        ]  # fmt: skip
        return [(t.id, t.seq, t.content) for t in sorted(turns, key=lambda t: t.seq)]

    assert from_index() == from_store()
    newest = ["chat 6", "chat 8", "chat 9", "chat 10", "chat 11"]  # ai: 6, 9; general: 8, 10, 11
    assert [text for _, _, text in from_index()] == newest
    vault.clear("u", channel="general")
    vault.add_turn("u", "now", "user", "chat 12", channel="general")
    assert from_index() == from_store()
    assert [text for _, _, text in from_index()] == ["chat 6", "chat 9", "chat 12"]
    _, elsewhere = vault.recall.for_context(
        "u", "chat", limit=10, now=NOW, min_score=None, session_id="none such"
    )
    assert elsewhere.recent == []


def test_recent_turns_follow_channel_limits_oldest_first(recall_vault: Vault) -> None:
    _fill(recall_vault)
    context = recall_vault.context(
        "u", "cabin", session_id="now", token_budget=4000, channel_limits={"general": 3}
    )
    recent = [item.text for item in context.items if item.source == "recent"]
    assert sum("group remark" in line for line in recent) == 3
    assert sum("chat message" in line for line in recent) == 20
    assert "chat message 9" not in " ".join(recent)  # only the newest 20 of 30
    assert context.text.index("chat message 10") < context.text.index("chat message 29")


def test_the_budget_holds_and_what_does_not_fit_is_reported(recall_vault: Vault) -> None:
    _fill(recall_vault)
    context = recall_vault.context("u", "cabin in Norway", session_id="now", token_budget=80)
    assert context.tokens <= 80
    assert count_tokens(context.text) <= 80
    assert context.dropped
    assert context.items[0].source == "global"  # the first sections win a tight budget
    kept = {(i.type, i.id) for i in context.items}
    assert not kept & {(i.type, i.id) for i in context.dropped}


def test_many_facts_crowd_out_neither_the_conversation_nor_the_fact_asked_about(
    recall_vault: Vault,
) -> None:
    """Filled in order alone, a hundred facts took the whole budget: the conversation under way
    was dropped from the context, and which facts got in was down to their age."""
    vault = recall_vault
    for i in range(100):
        if i == 50:
            allergy = vault.add_memory("u", "Ann is allergic to penicillin", kind="fact")
        vault.add_memory("u", f"Ann rates restaurant number {i} highly", kind="fact")
    for i in range(6):
        vault.add_turn("u", "now", "user", f"chat message {i} about the weekend", speaker="Ann")
    context = vault.context("u", "is Ann allergic to anything?", session_id="now", token_budget=600)
    assert context.tokens <= 600 and context.dropped
    assert sum(item.source == "recent" for item in context.items) == 6
    facts = [item for item in context.items if item.source == "fact"]
    assert facts[0].id == allergy.id and facts[0].score is not None  # the one asked about first
    roomy = vault.context("u", "is Ann allergic to anything?", session_id="now", token_budget=9000)
    assert not roomy.dropped  # with room for everything, everything is in


def test_nothing_irrelevant_is_padded_in(recall_vault: Vault) -> None:
    recall_vault.add_turn("u", "s", "user", "The dentist appointment is on Friday")
    context = recall_vault.context("u", "quantum chromodynamics lecture")
    assert context.items == [] and context.text == ""
    relevant = recall_vault.context("u", "when is the dentist appointment")
    assert [i.source for i in relevant.items] == ["turn"]
    assert relevant.items[0].score is not None


def _hit(number: int, score: float) -> Hit:
    return Hit(type="turn", id=f"t{number}", score=score, text=f"line {number}", session_id="s",
               role="user", speaker="Ann", created_at=NOW)  # fmt: skip


def test_turns_the_caller_holds_already_are_left_out(recall_vault: Vault) -> None:
    sent = recall_vault.add_turn("u", "s", "user", "Book the dentist for Friday")
    other = recall_vault.add_turn("u", "old", "user", "The dentist is on Elm Street")
    context = recall_vault.context("u", "which dentist?", leave_out=[sent.id])
    assert [i.id for i in context.items] == [other.id]
    assert context.dropped == []  # left out, not dropped for the budget


def test_a_relevant_line_scores_at_least_a_share_of_the_best_ones() -> None:
    """Fused scores lift a poor match to about half the best one's, so a context used to fill
    its budget whatever the question; lines under the share are left out, and are not reported
    as dropped for want of room."""
    sources = Sources(hits=[_hit(1, 0.9), _hit(2, 0.46), _hit(3, 0.44), _hit(4, 0.2)])

    def kept(**options: float) -> list[str]:
        context = build_context(sources, token_budget=2000, **options)
        assert context.dropped == []
        return [item.id for item in context.items]

    assert kept() == ["t1", "t2"]  # the default share is a half: 0.45
    assert kept(min_relative_score=0.0) == ["t1", "t2", "t3", "t4"]
    assert kept(min_relative_score=1.0) == ["t1"]
    assert build_context(Sources(), token_budget=100).items == []


def test_a_callers_share_of_the_best_score_is_checked_and_applied(recall_vault: Vault) -> None:
    vault = recall_vault
    vault.add_turn("u", "s", "user", "The dentist appointment is on Friday at noon")
    vault.add_turn("u", "s", "user", "Friday is a good day for the market")
    both = vault.context("u", "when is the dentist appointment on Friday", min_relative_score=0)
    assert len(both.items) == 2
    best = max(item.score or 0.0 for item in both.items)
    only = vault.context("u", "when is the dentist appointment on Friday", min_relative_score=1)
    assert [item.score for item in only.items] == [best]
    with pytest.raises(Invalid) as error:
        vault.context("u", "dentist", min_relative_score=1.5)
    assert error.value.field == "min_relative_score"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"token_budget": 0}, "token_budget"),
        ({"token_budget": "lots"}, "token_budget"),
        ({"channel_limits": {"sms": 3}}, "channel_limits"),
        ({"channel_limits": {"ai": -1}}, "channel_limits"),
        ({"leave_out": "one-turn-id"}, "leave_out"),
    ],
)
def test_bad_input_names_the_field(
    recall_vault: Vault, options: dict[str, object], field: str
) -> None:
    with pytest.raises(Invalid) as error:
        recall_vault.context("u", "anything", **options)  # type: ignore[arg-type]
    assert error.value.field == field


def test_standing_memories_come_from_the_index_as_the_store_lists_them(
    recall_vault: Vault,
) -> None:
    """A context reads pinned memories and facts from the user's search index, not from the
    store. Both must give the same list: newest first (ties by id), at most 100, without
    superseded or expired ones, one agent's alone when asked, rewrites and removals seen."""
    vault = recall_vault
    base = datetime(2026, 1, 1, tzinfo=UTC)
    now = base + timedelta(days=30)
    scout = vault.register_agent("u", "scout").id
    made = [
        vault.add_memory("u", f"fact {i}", created_at=base + timedelta(minutes=i // 2))
        for i in range(104)  # pairs share a creation time
    ]
    vault.add_memory("u", "gone by now", created_at=now, expires_at=now - timedelta(hours=1))
    vault.add_memory(
        "u",
        "not yet gone",
        created_at=now - timedelta(minutes=2),
        expires_at=now + timedelta(hours=1),
    )
    vault.add_memory(
        "u", "the scout's", agent_id=scout, created_at=now - timedelta(minutes=1), category="trips"
    )  # newer than the one before: ids made in the same millisecond are in no set order
    vault.add_memory("u", "pinned rule", pinned=True, kind="procedural", created_at=base)
    vault.add_memory("u", "pinned fact", pinned=True, created_at=now)
    vault.add_memory("u", "not a fact", kind="episodic", created_at=now)
    vault.search("u", "fact")  # the index is built here; what follows is a top-up
    vault.supersede_memory("u", made[103].id, "fact 103, corrected", created_at=now)
    vault.update_memory(
        "u", made[98].id, text="fact 98, rewritten", category="edited"
    )  # a new slot
    vault.delete_memory("u", made[101].id)

    def listed(**options: Any) -> list[tuple[str, str, str | None]]:
        found = vault.list_memories("u", include_superseded=False, now=now, **options)
        return [(m.id, m.text, m.category) for m in found]

    def standing(agent_id: str | None = None) -> tuple[list[tuple[str, str, str | None]], ...]:
        _, lists = vault.recall.for_context(
            "u", "fact", limit=10, now=now, min_score=None, agent_id=agent_id
        )
        return tuple([(m.id, m.text, m.category) for m in items] for items in lists)

    pinned, facts, recent = standing()
    assert recent == []  # no session asked for
    assert pinned == listed(pinned=True)
    assert facts == listed(pinned=False, kinds=["fact"])
    assert len(facts) == 100
    texts = [text for _, text, _ in facts]
    assert texts[:3] == ["fact 103, corrected", "the scout's", "not yet gone"]
    assert "gone by now" not in texts and "fact 101" not in texts and "not a fact" not in texts
    assert ("fact 98, rewritten", "edited") in [(t, c) for _, t, c in facts]
    assert [text for _, text, _ in pinned] == ["pinned fact", "pinned rule"]
    assert standing(scout) == ([], listed(pinned=False, kinds=["fact"], agent_id=scout), [])
    assert [text for _, text, _ in standing(scout)[1]] == ["the scout's"]
    assert standing("nobody-like-this") == ([], [], [])
