"""Consolidation with an LLM configured: summaries and facts by a real OpenAI-compatible server
on loopback (`fake_llm`), checked, stored with the model that wrote them, and the rules standing
in for every session whose answer fails, on both backends."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import MakeVault
from fake_llm import MODEL, FakeLlm, Reply, fake_llm

from memvault import Vault
from memvault.mind.consolidate import ConsolidationPolicy, extractive_summary
from memvault.mind.llm_reader import MAX_FACT_CHARS, MAX_FACTS, grounded
from memvault.model import Memory

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
ASKED = "asked-model"  # the model consolidation asks for; the fake answers as MODEL
KEY = "sk-consolidation-secret"
TIMEOUT = 1.0
POLICY = ConsolidationPolicy()
LISBON = [
    ("user", "Hi! I live in Lisbon and I work at Feedzai."),
    ("assistant", "Nice to meet you. How do you like the city so far?"),
    ("user", "It is lovely, we walked along the river all weekend."),
    ("assistant", "That sounds like a good weekend."),
]
NURSE = [
    ("user", "I'm a nurse and I love hiking."),
    ("assistant", "Where do you usually hike?"),
    ("user", "Mostly in the hills north of town, on my days off from the ward."),
    ("assistant", "Enjoy the trails."),
]
RULES_LISBON = {"The user lives in Lisbon", "The user works at Feedzai"}
LLM_LISBON: list[dict[str, Any]] = [
    {"text": "The user lives in Lisbon", "category": "location", "slot": "home", "turns": [1]},
    {"text": "The user walked along the river all weekend", "category": "personal",
     "slot": None, "turns": [2]},
]  # fmt: skip
LLM_NURSE: list[dict[str, Any]] = [
    {"text": "The user works as a nurse", "category": "work", "slot": "job", "turns": [1, 2]},
]


@pytest.fixture
def llm() -> Iterator[FakeLlm]:
    with fake_llm() as fake:
        yield fake


def llm_vault(make_vault: MakeVault, url: str, **overrides: Any) -> Vault:
    settings = {"llm_url": url, "llm_model": ASKED, "llm_api_key": KEY, "llm_timeout": TIMEOUT}
    return make_vault(**(settings | overrides))


def said(vault: Vault, user_id: str, session_id: str, turns: list[tuple[str, str]],
         start: datetime = NOW - timedelta(hours=3)) -> None:  # fmt: skip
    vault.add_turns(user_id, session_id, [
        {"role": role, "content": text, "created_at": start + timedelta(minutes=n)}
        for n, (role, text) in enumerate(turns)
    ])  # fmt: skip


def facts_reply(*facts: dict[str, Any]) -> Reply:
    return Reply(content=json.dumps({"facts": list(facts)}))


def facts_of(vault: Vault, user_id: str, ids: tuple[str, ...]) -> dict[str, Memory]:
    return {m.text: m for m in (vault.get_memory(user_id, i) for i in ids)}


def everything(vault: Vault, user_id: str) -> tuple[list[Memory], list[Any]]:
    memories = vault.list_memories(user_id, include_expired=True, include_superseded=True)
    return memories, vault.list_sessions(user_id)


def test_the_llms_summary_and_facts_are_stored_with_the_model_that_wrote_them(
    make_vault: MakeVault, llm: FakeLlm
) -> None:
    vault = llm_vault(make_vault, llm.url)
    said(vault, "u", "trip", LISBON)
    summary = "The user lives in Lisbon, works at Feedzai and walked by the river all weekend."
    llm.script(Reply(content=summary), facts_reply(*LLM_LISBON))

    report = vault.consolidate("u", now=NOW)

    session = vault.get_session("u", "trip")
    assert report.summarised == ("trip",) and session.summary == summary
    assert session.metadata == {"summarised_turns": 4, "summary_model": MODEL, "extracted_seq": 4}
    facts = facts_of(vault, "u", report.extracted)
    assert set(facts) == {f["text"] for f in LLM_LISBON}
    home = facts["The user lives in Lisbon"]
    turns = session.turns or ()
    assert (home.kind.value, home.category, home.tier.value) == ("fact", "location", "long_term")
    assert home.metadata == {"extracted": True, "slot": "home", "model": MODEL}
    assert home.source_turn_ids == (turns[0].id,) and home.valid_from == turns[0].created_at
    walk = facts["The user walked along the river all weekend"]
    assert walk.metadata == {"extracted": True, "model": MODEL}
    assert walk.source_turn_ids == (turns[2].id,)
    # what was asked, and how: the configured model, the key in the header only, JSON asked for
    summary_call, facts_call = llm.chats
    for call in (summary_call, facts_call):
        assert call.body["model"] == ASKED
        assert call.headers["Authorization"] == f"Bearer {KEY}"
        assert KEY not in json.dumps(call.body)
    assert facts_call.body["response_format"] == {"type": "json_object"}
    assert "JSON" in facts_call.body["messages"][0]["content"]
    facts_asked = facts_call.body["messages"][1]["content"]
    assert f"[1] {LISBON[0][1]}" in facts_asked and f"[2] {LISBON[2][1]}" in facts_asked
    assert LISBON[1][1] not in facts_asked  # the assistant's turns state no fact of the user
    summary_asked = summary_call.body["messages"][1]["content"]
    assert all(f"{role}: {text}" in summary_asked for role, text in LISBON)


def test_a_fact_from_several_turns_cites_them_all_and_holds_from_the_last(
    make_vault: MakeVault, llm: FakeLlm
) -> None:
    vault = llm_vault(make_vault, llm.url)
    said(vault, "u", "ward", NURSE)
    llm.script(Reply(content="The user is a nurse who hikes."), facts_reply(*LLM_NURSE))
    report = vault.consolidate("u", now=NOW)
    (nurse,) = facts_of(vault, "u", report.extracted).values()
    turns = vault.get_session("u", "ward").turns or ()
    assert nurse.source_turn_ids == (turns[0].id, turns[2].id)
    assert nurse.valid_from == turns[2].created_at


def test_a_newer_slot_fact_of_the_llm_supersedes_an_older_one(
    make_vault: MakeVault, llm: FakeLlm
) -> None:
    """The older home read by the rules (the LLM off for that run), the newer by the LLM: the
    slot is the same, so the newer stands and the older is history, as with rules alone."""
    vault = llm_vault(make_vault, llm.url)
    spring = NOW - timedelta(days=30)
    said(vault, "u", "spring", [("user", "I live in New York.")], start=spring)
    first = vault.consolidate("u", now=spring + timedelta(hours=1),
                              policy=ConsolidationPolicy(llm=False))  # fmt: skip
    (new_york,) = first.extracted
    assert llm.chats == []
    said(vault, "u", "summer", [("user", "We finally settled in Boston after the move.")])
    llm.script(facts_reply({"text": "The user lives in Boston", "category": "location",
                            "slot": "Home", "turns": [1]}))  # fmt: skip

    report = vault.consolidate("u", now=NOW)

    (boston,) = report.extracted
    assert [(s.newer, s.older) for s in report.superseded] == [(boston, (new_york,))]
    assert vault.get_memory("u", boston).metadata == {"extracted": True, "slot": "home",
                                                      "model": MODEL}  # fmt: skip
    old = vault.get_memory("u", new_york)
    assert old.superseded_by == boston and old.valid_to == NOW - timedelta(hours=3)
    current = vault.list_memories("u", kinds=["fact"], include_superseded=False)
    assert [m.text for m in current] == ["The user lives in Boston"]


def test_a_second_run_sends_nothing_and_changes_nothing(
    make_vault: MakeVault, llm: FakeLlm
) -> None:
    vault = llm_vault(make_vault, llm.url)
    said(vault, "u", "trip", LISBON)
    llm.script(Reply(content="A weekend in Lisbon."), facts_reply(*LLM_LISBON))
    assert vault.consolidate("u", now=NOW).changed
    sent, before = len(llm.received), everything(vault, "u")
    again = vault.consolidate("u", now=NOW)
    assert not again.changed and len(llm.received) == sent and everything(vault, "u") == before


def test_what_the_llm_receives_is_the_sessions_turns_and_nothing_of_other_users(
    make_vault: MakeVault, llm: FakeLlm
) -> None:
    vault = llm_vault(make_vault, llm.url)
    said(vault, "alice", "a", LISBON)
    said(vault, "alice", "b", NURSE)
    bob = "I live in Oslo and my bank PIN is 4321."
    said(vault, "bob", "b", [("user", bob), *NURSE[1:]])
    vault.add_memory("alice", "Alice keeps her spare key under the mat")
    llm.script(Reply(content="Lisbon."), facts_reply(), Reply(content="Hiking."), facts_reply())

    vault.consolidate("alice", now=NOW)

    bodies = [json.dumps(call.body) for call in llm.chats]
    assert len(bodies) == 4  # a summary and a reading of each of alice's sessions
    for body, (mine, other) in zip(bodies, [(LISBON, NURSE)] * 2 + [(NURSE, LISBON)] * 2,
                                   strict=True):  # fmt: skip
        assert any(json.dumps(text)[1:-1] in body for _, text in mine)
        assert not any(json.dumps(text)[1:-1] in body for _, text in other)
        assert "Oslo" not in body and "4321" not in body and "spare key" not in body


def test_only_the_newest_turns_that_fit_the_budget_are_sent(
    make_vault: MakeVault, llm: FakeLlm
) -> None:
    """The older unread turns beyond `llm_input_chars` are read by the rules; the summary
    request carries the newest turns only."""
    vault = llm_vault(make_vault, llm.url)
    old = "I live in Lisbon. " + "We talked about the weather and the trams for hours. " * 3
    new = "These days my evenings go to the pottery class."
    said(vault, "u", "s", [("user", old), ("assistant", "Go on."), ("user", new),
                           ("assistant", "Nice.")])  # fmt: skip
    llm.script(Reply(content="Pottery."), facts_reply())
    policy = ConsolidationPolicy(llm_input_chars=120)

    report = vault.consolidate("u", now=NOW, policy=policy)

    summary_call, facts_call = llm.chats
    summary_asked = summary_call.body["messages"][1]["content"]
    assert new in summary_asked and "Lisbon" not in summary_asked
    facts_asked = facts_call.body["messages"][1]["content"]
    assert f"[1] {new}" in facts_asked and "Lisbon" not in facts_asked
    (lisbon,) = facts_of(vault, "u", report.extracted).values()
    assert lisbon.text == "The user lives in Lisbon" and "model" not in lisbon.metadata


def bad_facts(*changes: dict[str, Any]) -> Reply:
    """The good Lisbon answer with its first fact changed: one bad fact fails the answer."""
    return facts_reply({**LLM_LISBON[0], **changes[0]}, *LLM_LISBON[1:])


SUMMARY_FAILURES = {
    "an error status": Reply(status=500),
    "a body that is not JSON": Reply(status=200, html="<html>gateway</html>"),
    "no answer in time": Reply(content="Too late.", delay=TIMEOUT * 2),
    "an empty answer": Reply(content=""),
    "an over-long answer": Reply(content="The user " + "talked at length. " * 40),
}
FACTS_FAILURES = {
    "an error status": Reply(status=503),
    "no answer in time": Reply(content='{"facts": []}', delay=TIMEOUT * 2),
    "an answer that is not JSON": Reply(content="The user lives in Lisbon."),
    "JSON of another shape": Reply(content=json.dumps(LLM_LISBON)),
    "facts that are not objects": Reply(content='{"facts": ["The user lives in Lisbon"]}'),
    "an unknown turn number": bad_facts({"turns": [3]}),
    "a turn number that is not one": bad_facts({"turns": ["1"]}),
    "no turn cited": bad_facts({"turns": []}),
    "a place the user did not say": bad_facts({"text": "The user lives in Porto"}),
    "a fact of nothing the turn says": bad_facts({"text": "The user enjoys opera"}),
    "a fact not about the user": bad_facts({"text": "Lisbon is lovely"}),
    "an over-long text": bad_facts(
        {"text": "The user lives in Lisbon" + ", in Lisbon" * (MAX_FACT_CHARS // 10)}
    ),
    "an unknown category": bad_facts({"category": "gossip"}),
    "a slot that is not text": bad_facts({"slot": 7}),
    "too many facts": facts_reply(*[LLM_LISBON[0]] * (MAX_FACTS + 1)),
}


@pytest.mark.parametrize("failure", SUMMARY_FAILURES.values(), ids=SUMMARY_FAILURES.keys())
def test_a_summary_that_fails_leaves_the_extractive_one_and_the_run_goes_on(
    make_vault: MakeVault, llm: FakeLlm, failure: Reply
) -> None:
    vault = llm_vault(make_vault, llm.url)
    said(vault, "u", "a", LISBON)
    said(vault, "u", "b", NURSE)
    llm.script(failure, facts_reply(*LLM_LISBON), Reply(content="Hiking."), facts_reply())

    report = vault.consolidate("u", now=NOW)

    assert report.summarised == ("a", "b") and report.skipped_sessions == ()
    a, b = vault.get_session("u", "a"), vault.get_session("u", "b")
    assert a.summary is not None and a.summary == extractive_summary(a.turns or [], POLICY)
    assert "summary_model" not in a.metadata and a.metadata["summarised_turns"] == 4
    assert (b.summary, b.metadata["summary_model"]) == ("Hiking.", MODEL)
    assert set(facts_of(vault, "u", report.extracted)) == {f["text"] for f in LLM_LISBON}
    assert len(llm.chats) == 4


@pytest.mark.parametrize("failure", FACTS_FAILURES.values(), ids=FACTS_FAILURES.keys())
def test_facts_that_fail_their_checks_leave_the_rules_to_read_the_session(
    make_vault: MakeVault, llm: FakeLlm, failure: Reply
) -> None:
    vault = llm_vault(make_vault, llm.url)
    said(vault, "u", "a", LISBON)
    said(vault, "u", "b", NURSE)
    llm.script(Reply(content="Lisbon."), failure, Reply(content="Hiking."),
               facts_reply(*LLM_NURSE))  # fmt: skip

    report = vault.consolidate("u", now=NOW)

    facts = facts_of(vault, "u", report.extracted)
    by_rules = {text for text, m in facts.items() if "model" not in m.metadata}
    assert by_rules == RULES_LISBON
    assert set(facts) - by_rules == {"The user works as a nurse"}
    assert vault.get_session("u", "a").metadata["extracted_seq"] == 4
    assert vault.get_session("u", "a").summary == "Lisbon."
    assert not vault.consolidate("u", now=NOW).changed  # read once, by whichever reader


def test_an_llm_that_cannot_be_reached_leaves_everything_to_the_rules(
    make_vault: MakeVault, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://user:{KEY}@127.0.0.1:{port}/v1"
    vault = llm_vault(make_vault, url)
    said(vault, "u", "a", LISBON)
    with caplog.at_level(logging.WARNING):
        report = vault.consolidate("u", now=NOW)
    assert report.summarised == ("a",)
    assert set(facts_of(vault, "u", report.extracted)) == RULES_LISBON
    session = vault.get_session("u", "a")
    assert session.summary == extractive_summary(session.turns or [], POLICY)
    messages = [r.getMessage() for r in caplog.records if r.name == "memvault.mind.llm_reader"]
    assert messages == [
        "LLM summary not used (no answer): the extractive summary stands",
        "LLM facts not used (no answer): the rules read the session",
    ]


def test_failures_are_logged_by_reason_with_nothing_said(
    make_vault: MakeVault, llm: FakeLlm, caplog: pytest.LogCaptureFixture
) -> None:
    vault = llm_vault(make_vault, llm.url)
    said(vault, "u", "a", LISBON)
    over_long = "The user mentioned Feedzai. " * 40
    llm.script(Reply(content=over_long), bad_facts({"text": "The user lives in Porto"}))
    with caplog.at_level(logging.DEBUG, logger="memvault"):
        vault.consolidate("u", now=NOW)
    logged = caplog.text
    assert "(too long)" in logged and "(not grounded)" in logged
    for secret in ("Lisbon", "Feedzai", "Porto", "river", KEY, llm.url):
        assert secret not in logged


def test_an_endpoint_that_refuses_response_format_is_asked_without_it(
    make_vault: MakeVault, llm: FakeLlm
) -> None:
    vault = llm_vault(make_vault, llm.url)
    said(vault, "u", "a", LISBON[:1])
    said(vault, "u", "b", NURSE[:1])
    refused = {"error": {"message": "response_format is not supported"}}
    llm.script(Reply(status=400, error=refused), facts_reply(LLM_LISBON[0]),
               facts_reply(LLM_NURSE[0] | {"turns": [1]}))  # fmt: skip
    report = vault.consolidate("u", now=NOW)
    assert set(facts_of(vault, "u", report.extracted)) == {
        "The user lives in Lisbon", "The user works as a nurse",
    }  # fmt: skip
    formats = ["response_format" in call.body for call in llm.chats]
    assert formats == [True, False, False]  # once refused, not asked again in the run


@pytest.mark.parametrize(
    ("settings", "policy"),
    [
        ({"llm_model": None}, ConsolidationPolicy()),  # no model named: the LLM is the proxy's
        ({}, ConsolidationPolicy(llm=False)),
    ],
    ids=["no model", "policy off"],
)
def test_without_a_model_or_with_the_policy_off_nothing_is_sent(
    make_vault: MakeVault, llm: FakeLlm, settings: dict[str, Any], policy: ConsolidationPolicy
) -> None:
    vault = llm_vault(make_vault, llm.url, **settings)
    said(vault, "u", "a", LISBON)
    report = vault.consolidate("u", now=NOW, policy=policy)
    assert set(facts_of(vault, "u", report.extracted)) == RULES_LISBON
    assert report.summarised == ("a",) and llm.received == []


def test_a_session_with_nothing_the_user_said_asks_for_no_facts(
    make_vault: MakeVault, llm: FakeLlm
) -> None:
    vault = llm_vault(make_vault, llm.url)
    said(vault, "u", "a", [("assistant", "Welcome back!")])
    vault.consolidate("u", now=NOW)
    assert llm.received == []
    assert vault.get_session("u", "a").metadata == {"extracted_seq": 1}


@pytest.mark.parametrize(
    ("fact", "cited", "ok"),
    [
        (" lives in Lisbon", "I just moved to Lisbon", True),
        (" lives in Porto", "I just moved to Lisbon", False),  # a place not said
        ("'s name is Sam", "call me sam", True),  # names compare without case
        (" is 34 years old", "I turned 34", True),
        (" is 35 years old", "I turned 34", False),  # a number not said
        (" enjoys hiking", "I love hiking in the hills", True),
        (" enjoys opera", "I love hiking in the hills", False),  # no word of the turn
        (" is", "I love hiking", False),  # says nothing
    ],
)
def test_grounded_keeps_facts_to_the_names_numbers_and_words_said(
    fact: str, cited: str, ok: bool
) -> None:
    assert grounded(fact, cited) is ok


def test_clearing_a_channel_takes_the_llms_summary_and_its_note(
    make_vault: MakeVault, llm: FakeLlm
) -> None:
    vault = llm_vault(make_vault, llm.url)
    said(vault, "u", "a", LISBON)
    vault.add_turn("u", "a", "user", "Note this down.", channel="general",
                   created_at=NOW - timedelta(hours=2))  # fmt: skip
    llm.script(Reply(content="Lisbon, and a note."), facts_reply())
    vault.consolidate("u", now=NOW)
    assert vault.get_session("u", "a").metadata["summary_model"] == MODEL
    assert vault.clear("u", channel="general") == 1
    cleared = vault.get_session("u", "a")
    assert (cleared.summary, cleared.metadata) == (None, {"extracted_seq": 5})
