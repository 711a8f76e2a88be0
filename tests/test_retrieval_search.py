"""`Vault.search` end to end on real stores (SQLite and PostgreSQL), hashing embedder."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol

import pytest

from memvault import Vault
from memvault.errors import Invalid
from memvault.retrieval.fusion import Weights
from memvault.retrieval.search import Hit

NOW = datetime(2024, 3, 20, 12, 0, tzinfo=UTC)


def _texts(hits: list[Hit]) -> list[str]:
    return [h.text for h in hits]


def test_a_write_is_visible_to_the_next_search_without_a_rebuild(recall_vault: Vault) -> None:
    vault = recall_vault
    vault.add_turn("u", "s1", "user", "I planted tomatoes in the garden", speaker="Ann")
    assert _texts(vault.search("u", "tomatoes")) == ["I planted tomatoes in the garden"]
    index = vault.recall.cache.get("u", vault.store.revision("u"))
    vault.add_turn("u", "s1", "user", "The tomatoes are ripe now", speaker="Ann")
    hits = vault.search("u", "ripe tomatoes")
    assert hits[0].text == "The tomatoes are ripe now"
    assert vault.recall.cache.get("u", vault.store.revision("u")) is index  # topped up in place


def test_hits_carry_the_turn_fields_and_explain_gives_signals(recall_vault: Vault) -> None:
    vault = recall_vault
    turn = vault.add_turn(
        "u", "s1", "user", "My sister lives in Lisbon", speaker="Ann",
        created_at=NOW - timedelta(days=2), metadata={"source": "chat"},
    )  # fmt: skip
    (hit,) = vault.search("u", "where does my sister live", now=NOW, explain=True, limit=1)
    assert (hit.type, hit.id, hit.session_id, hit.role, hit.speaker) == (
        "turn", turn.id, "s1", "user", "Ann",
    )  # fmt: skip
    assert hit.created_at == turn.created_at and hit.metadata == {"source": "chat"}
    assert hit.signals is not None and hit.signals["bm25"] == 1.0
    assert 0 < hit.score <= 1
    assert vault.search("u", "where does my sister live", now=NOW)[0].signals is None


def test_deleted_sessions_and_memories_leave_the_index(recall_vault: Vault) -> None:
    vault = recall_vault
    vault.add_turn("u", "s1", "user", "the wifi password is on the fridge")
    memory = vault.add_memory("u", "the spare key is under the wifi router")
    assert len(vault.search("u", "wifi")) == 2
    vault.delete_session("u", "s1")
    assert _texts(vault.search("u", "wifi")) == ["the spare key is under the wifi router"]
    vault.delete_memory("u", memory.id)
    assert vault.search("u", "wifi") == []


def test_an_updated_memory_is_found_by_its_new_text_only(recall_vault: Vault) -> None:
    vault = recall_vault
    memory = vault.add_memory("u", "favourite drink is coffee")
    vault.update_memory("u", memory.id, text="favourite drink is green tea")
    assert vault.search("u", "coffee", types=["memory"]) == []
    assert vault.search("u", "green tea")[0].id == memory.id


def test_users_never_see_each_other(recall_vault: Vault) -> None:
    vault = recall_vault
    vault.add_turn("alice", "s", "user", "my locker code is 4711")
    vault.add_turn("bob", "s", "user", "my bike is blue")
    assert "my locker code is 4711" not in _texts(vault.search("bob", "locker code 4711 bike"))
    assert _texts(vault.search("bob", "locker code 4711 bike")) == ["my bike is blue"]
    assert vault.search("nobody", "anything") == []


def test_filters_narrow_the_results(recall_vault: Vault) -> None:
    vault = recall_vault
    vault.add_turn("u", "s1", "user", "trip to Rome", created_at=NOW - timedelta(days=40))
    vault.add_turn("u", "s2", "user", "trip to Oslo", channel="general", created_at=NOW)
    vault.add_memory("u", "trip to Kyoto is planned", kind="episodic", tags=["travel"])
    vault.add_memory("u", "trip budget is 2000", kind="fact", tier="working")

    def texts(**filters: object) -> set[str]:
        return {h.text for h in vault.search("u", "trip", now=NOW, **filters)}

    assert texts(session_id="s1") == {"trip to Rome"}
    assert texts(channel="general") == {"trip to Oslo"}
    assert texts(types=["memory"], kinds=["episodic"]) == {"trip to Kyoto is planned"}
    assert texts(tiers=["working"]) == {"trip budget is 2000"}
    assert texts(tags=["travel"]) == {"trip to Kyoto is planned"}
    assert texts(types=["turn"], until=NOW - timedelta(days=1)) == {"trip to Rome"}
    assert texts(types=["turn"], since=NOW - timedelta(days=1)) == {"trip to Oslo"}


def test_a_time_expression_in_the_query_favours_that_period(recall_vault: Vault) -> None:
    vault = recall_vault
    vault.add_turn("u", "old", "user", "dinner with Sam", created_at=NOW - timedelta(days=60))
    vault.add_turn("u", "new", "user", "dinner with Sam", created_at=NOW - timedelta(days=1))
    assert vault.search("u", "dinner with Sam yesterday", now=NOW)[0].session_id == "new"
    two_months = (NOW - timedelta(days=60)).strftime("%B %Y")
    assert vault.search("u", f"dinner with Sam in {two_months}", now=NOW)[0].session_id == "old"


def test_the_period_a_query_names_is_searched_whatever_ranks_first_overall(
    recall_vault: Vault,
) -> None:
    vault = recall_vault
    older = [
        {"role": "user", "content": f"pasta night {n}: pasta, pasta and more pasta",
         "created_at": NOW - timedelta(days=100 + n)}
        for n in range(80)
    ]  # fmt: skip
    vault.add_turns("u", "old", older)
    told = "after the long walk along the river we cooked some pasta with friends"
    vault.add_turn("u", "new", "user", told, created_at=NOW - timedelta(days=3))
    # 80 better matches elsewhere, so the turn is not among the best 50 of either signal; with
    # the time weighed heavily, it ranks first once it is among the candidates at all
    timely = Weights(time=10.0)
    everywhere = vault.search("u", "what pasta did we have?", now=NOW, limit=5, weights=timely)
    assert told not in [h.text for h in everywhere]
    hits = vault.search("u", "what pasta did we have last week?", now=NOW, limit=5, weights=timely)
    assert hits[0].text == told


def test_a_when_question_favours_the_turn_that_says_when(recall_vault: Vault) -> None:
    vault = recall_vault
    said_when = "We went to the pottery class last Tuesday evening"
    vault.add_turn("u", "s1", "user", "We went to the pottery class", speaker="Ann")
    vault.add_turn("u", "s2", "user", said_when, speaker="Ann")
    question = "When did Ann go to the pottery class?"
    first, second = vault.search("u", question, explain=True)
    assert first.text == said_when
    assert first.signals is not None and second.signals is not None
    assert (first.signals["answer"], second.signals["answer"]) == (1.0, 0.0)
    # the shorter turn matches better on words alone: the answer signal decides
    assert vault.search("u", question, weights=Weights(answer=0))[0].text != said_when
    (hit, _) = vault.search("u", "Did Ann go to the pottery class?", explain=True)
    assert hit.signals is not None and "answer" not in hit.signals  # no kind of answer asked


def test_a_statement_outranks_a_question_with_the_same_words(recall_vault: Vault) -> None:
    vault = recall_vault
    statement = "I adopted the dog from the shelter downtown with my sister"
    vault.add_turn("u", "s1", "user", "Did you adopt the dog from the shelter?", speaker="Bo")
    vault.add_turn("u", "s2", "user", statement, speaker="Ann")
    memory = vault.add_memory("u", "adopted dog from the shelter")
    query = "dog adopted from the shelter"
    hits = vault.search("u", query, explain=True)
    turns = [h.text for h in hits if h.type == "turn"]
    assert turns == [statement, "Did you adopt the dog from the shelter?"]
    salience = {h.text: h.signals["salience"] for h in hits if h.signals is not None}
    assert salience[memory.text] == 1.0  # memories were saved to be recalled
    assert salience[turns[0]] > salience[turns[1]]
    unweighted = vault.search("u", query, weights=Weights(salience=0))
    assert next(h.text for h in unweighted if h.type == "turn") != statement


def test_a_speaker_named_in_the_possessive_counts_as_named(recall_vault: Vault) -> None:
    vault = recall_vault
    vault.add_turn("u", "s1", "user", "I love sci-fi movies", speaker="Nate")
    vault.add_turn("u", "s1", "user", "I love sci-fi movies too", speaker="Joanna")
    for question in ("What movies does Nate love?", "What are Nate's favourite movies?",
                     "What are Nate\u2019s favourite movies?"):  # fmt: skip
        hits = vault.search("u", question, explain=True)
        assert [(h.speaker, h.signals and h.signals["speaker"]) for h in hits] == [
            ("Nate", 1.0), ("Joanna", 0.0),
        ], question  # fmt: skip


def test_a_speaker_whose_name_is_a_stop_word_is_named_only_as_a_name(recall_vault: Vault) -> None:
    vault = recall_vault
    vault.add_turn("u", "s1", "user", "You will need a visa for the trip", speaker="Will")
    vault.add_turn("u", "s1", "user", "A visa takes weeks to come through", speaker="Ann")
    named = {
        question: {h.speaker: h.signals and h.signals["speaker"] for h in
                   vault.search("u", question, explain=True)}
        for question in ("What did Will say about the visa?", "Will I need a visa?",
                         "Do I really need a visa, will it take long?")
    }  # fmt: skip
    assert named["What did Will say about the visa?"] == {"Will": 1.0, "Ann": 0.0}
    assert named["Will I need a visa?"] == {"Will": 0.0, "Ann": 0.0}
    assert named["Do I really need a visa, will it take long?"] == {"Will": 0.0, "Ann": 0.0}


class Named(Protocol):
    """The speaker signal of each hit for a question, by the hit's first word; `asked_by`
    says who asks."""

    def __call__(self, question: str, asked_by: str | None = None) -> dict[str, float | None]: ...


def _chat_of_roles(vault: Vault) -> Named:
    """A chat of the user and the agent Jarvis that gives only roles, another agent's turn and
    one of Nate's; and the speaker signal of each hit for a question, by the hit's first word."""
    jarvis = vault.register_agent("u", "Jarvis")
    vault.add_turns("u", "s1", [
        {"role": "user", "content": "I really like hiking in the hills", "agent_id": jarvis.id},
        {"role": "assistant", "content": "Hiking is a fine way to like the hills",
         "agent_id": jarvis.id},
        {"role": "assistant", "content": "Another assistant likes hiking in the hills"},
        {"role": "user", "content": "Walks and hiking: what Nate likes", "speaker": "Nate"},
    ])  # fmt: skip

    def named(question: str, asked_by: str | None = None) -> dict[str, float | None]:
        hits = vault.search("u", question, explain=True, asked_by=asked_by)
        return {h.text.split()[0]: h.signals["speaker"] if h.signals else None for h in hits}

    return named


def test_the_users_and_agents_names_name_their_turns_that_give_only_a_role(
    recall_vault: Vault,
) -> None:
    """A chat stores roles, not names: "What does Alice like?" finds what the user said once
    their profile says they are Alice, and stops doing so when it says otherwise; an agent's
    name names the assistant turns written as that agent."""
    vault = recall_vault
    named = _chat_of_roles(vault)
    alice, jarvis_says = "What does Alice like about hiking?", "What did Jarvis say of hiking?"
    assert set(named(alice).values()) == {0.0}
    vault.put_user("u", {"name": " Alice Smith "})
    assert vault.get_user("u").name == "Alice Smith"
    assert named(alice) == {"I": 1.0, "Hiking": 0.0, "Another": 0.0, "Walks": 0.0}
    assert vault.search("u", alice)[0].text == "I really like hiking in the hills"
    assert named(jarvis_says) == {"I": 0.0, "Hiking": 1.0, "Another": 0.0, "Walks": 0.0}
    vault.put_user("u", {"name": "Bea"})
    assert set(named(alice).values()) == {0.0}
    vault.put_user("u", {"name": 42})  # not text: no name
    assert vault.get_user("u").name is None and set(named(alice).values()) == {0.0}


def test_the_words_of_the_roles_name_the_turns_that_give_only_that_role(
    recall_vault: Vault,
) -> None:
    """An agent asks about "the user" as often as about Alice: the word names the user's turns
    that give no speaker, with or without a name in the profile; "the assistant" names every
    agent's. Turns that name their speaker keep their own name only."""
    vault = recall_vault
    named = _chat_of_roles(vault)
    user = {"I": 1.0, "Hiking": 0.0, "Another": 0.0, "Walks": 0.0}
    assert named("What does the user like about hiking?") == user
    assert named("What is the User's view of hiking?") == user
    assert vault.search("u", "What does the user like about hiking?")[0].text.startswith("I ")
    assistant = {"I": 0.0, "Hiking": 1.0, "Another": 1.0, "Walks": 0.0}
    assert named("What did the assistant say of hiking?") == assistant
    vault.put_user("u", {"name": "Alice"})
    assert named("What does the user like about hiking?") == user


def test_i_and_you_name_the_side_that_asks_and_the_other_when_the_query_says_who_asks(
    recall_vault: Vault,
) -> None:
    """A user asks "What do I like?" of their own turns and "What did you say?" of the
    assistant's; an agent writing its own query means itself by "I". A query that does not say
    who asks names nobody by its persons: "I" could be either side."""
    vault = recall_vault
    named = _chat_of_roles(vault)
    nobody = {"I": 0.0, "Hiking": 0.0, "Another": 0.0, "Walks": 0.0}
    user = {"I": 1.0, "Hiking": 0.0, "Another": 0.0, "Walks": 0.0}
    assistant = {"I": 0.0, "Hiking": 1.0, "Another": 1.0, "Walks": 0.0}
    assert named("What do I like about hiking?") == nobody
    assert named("What do I like about hiking?", asked_by="user") == user
    assert named("What's my view of hiking?", asked_by="user") == user
    assert named("What did you say of hiking?", asked_by="user") == assistant
    assert named("What did I say of hiking?", asked_by="assistant") == assistant
    assert named("What do you like about hiking?", asked_by="assistant") == user
    both = {"I": 1.0, "Hiking": 1.0, "Another": 1.0, "Walks": 0.0}
    assert named("What did I tell you about hiking?", asked_by="user") == both
    assert named("What did I tell you about hiking?", asked_by=" User") == both  # not a name
    first = vault.search("u", "What do I like about hiking?", asked_by="user")[0]
    assert first.text.startswith("I ")
    context = vault.context("u", "What do I like about hiking?", asked_by="user")
    assert "I really like hiking" in context.text
    for bad in ("", "  ", "?!", 42, "x" * 2000):
        with pytest.raises(Invalid, match="asked_by"):
            vault.search("u", "What do I like?", asked_by=bad)
    with pytest.raises(Invalid, match="asked_by"):
        vault.context("u", "What do I like?", asked_by=" ")


def test_a_speaker_who_asks_by_name_is_i_and_everyone_else_is_you(recall_vault: Vault) -> None:
    """Every human in a group chat gives the role "user": the side cannot tell which of them
    "I" is, the speaker's name can. Bob's "I" names Bob's turns, his "you" everyone else's, the
    assistant's too. The user and an agent ask by their names as well."""
    vault = recall_vault
    vault.add_turns("u", "g1", [
        {"role": "user", "speaker": "Bob", "content": "Bob here: hiking in the hills is my thing"},
        {"role": "user", "speaker": "Ann Lee", "content": "Ann likes hiking by the sea"},
        {"role": "assistant", "content": "Hiking keeps the whole group fit"},
    ])  # fmt: skip

    def named(question: str, asked_by: str) -> dict[str, float | None]:
        hits = vault.search("u", question, explain=True, asked_by=asked_by)
        return {h.text.split()[0]: h.signals["speaker"] if h.signals else None for h in hits}

    mine = "What do I like about hiking?"
    assert named(mine, "user") == {"Bob": 0.0, "Ann": 0.0, "Hiking": 0.0}
    assert named(mine, "Bob") == {"Bob": 1.0, "Ann": 0.0, "Hiking": 0.0}
    assert named(mine, " bob ") == named(mine, "Bob")
    assert named(mine, "ann  LEE") == {"Bob": 0.0, "Ann": 1.0, "Hiking": 0.0}
    assert named("What did you say about hiking?", "Bob") == {"Bob": 0.0, "Ann": 1.0, "Hiking": 1.0}
    assert named(mine, "Carol") == {"Bob": 0.0, "Ann": 0.0, "Hiking": 0.0}  # no turn of hers
    assert vault.search("u", mine, asked_by="Bob")[0].text.startswith("Bob here")
    assert "Bob here" in vault.context("u", mine, asked_by="Bob", token_budget=200).text


def test_the_user_and_an_agent_ask_by_their_names_in_a_chat_of_roles(recall_vault: Vault) -> None:
    """Named in the profile or registered, the user and an agent are speakers whose name may
    say who asks: Jarvis's "I" is his turns, his "you" the user and the speakers he talks with."""
    vault = recall_vault
    named = _chat_of_roles(vault)
    vault.put_user("u", {"name": "Alice"})
    assert named("What do I like about hiking?", asked_by="alice") == {
        "I": 1.0, "Hiking": 0.0, "Another": 0.0, "Walks": 0.0}  # fmt: skip
    assert named("What did I say of hiking?", asked_by="Jarvis") == {
        "I": 0.0, "Hiking": 1.0, "Another": 0.0, "Walks": 0.0}  # fmt: skip
    assert named("What do you like about hiking?", asked_by="Jarvis") == {
        "I": 1.0, "Hiking": 0.0, "Another": 0.0, "Walks": 1.0}  # fmt: skip
    assert named("What do I like about hiking?", asked_by="Nate") == {
        "I": 0.0, "Hiking": 0.0, "Another": 0.0, "Walks": 1.0}  # fmt: skip


def test_a_month_that_is_someones_name_is_a_name_alone_and_a_time_in_a_time_phrase(
    recall_vault: Vault,
) -> None:
    """Someone called June: "What did June say?" asks for her turns, not for last June's, and
    "in June" asks for the month, not for her."""
    vault = recall_vault
    vault.add_turns("u", "s1", [
        {"role": "user", "content": "The trip to the coast was lovely", "speaker": "June",
         "created_at": datetime(2024, 2, 10, tzinfo=UTC)},
        {"role": "user", "content": "The trip went well for me too", "speaker": "Nate",
         "created_at": datetime(2023, 6, 12, tzinfo=UTC)},
    ])  # fmt: skip

    def signals(question: str) -> dict[str, dict[str, float]]:
        hits = vault.search("u", question, now=NOW, explain=True)
        return {h.speaker or "": h.signals or {} for h in hits}

    by_june = signals("What did June say about the trip?")
    assert "time" not in by_june["June"] and by_june["June"]["speaker"] == 1.0
    assert by_june["Nate"]["speaker"] == 0.0
    in_june = signals("What did we say about the trip in June?")
    assert in_june["Nate"]["time"] == 1.0 > in_june["June"]["time"]
    assert in_june["June"]["speaker"] == in_june["Nate"]["speaker"] == 0.0


def test_search_records_memory_access_in_the_background(recall_vault: Vault) -> None:
    vault = recall_vault
    memory = vault.add_memory("u", "allergic to penicillin")
    vault.search("u", "penicillin allergy")
    vault.search("u", "penicillin")
    vault.recall.close()  # waits for the background writes
    assert vault.get_memory("u", memory.id).access_count == 2


def test_the_access_signal_sees_uses_since_the_index_was_built(recall_vault: Vault) -> None:
    """Access counts do not move the revision, so the cached index counts each use itself;
    it used to keep the counts it was built with for as long as it stayed cached."""
    vault = recall_vault
    memory = vault.add_memory("u", "allergic to penicillin")
    for _ in range(3):
        vault.search("u", "penicillin")
    (hit,) = vault.search("u", "penicillin", explain=True, record_access=False)
    assert hit.id == memory.id and hit.signals is not None
    assert hit.signals["access"] == pytest.approx(math.log1p(3) / math.log1p(100), abs=1e-4)


def test_an_agents_view_fills_its_page_and_records_only_what_it_was_shown(
    recall_vault: Vault,
) -> None:
    vault = recall_vault
    scout = vault.register_agent("u", "scout").id
    planner = vault.register_agent("u", "planner").id
    theirs = [vault.add_memory("u", f"penicillin note {i}", agent_id=planner) for i in range(4)]
    users = vault.add_memory("u", "penicillin allergy, said by the user")
    mine = [vault.add_memory("u", f"penicillin dose {i}", agent_id=scout) for i in range(2)]
    turn = vault.add_turn("u", "s", "user", "penicillin made me ill", speaker="Ann")
    hits = vault.search("u", "penicillin", limit=3, seen_by_agent=scout)
    assert {h.id for h in hits} == {m.id for m in mine} | {turn.id}
    vault.recall.close()  # waits for the background access writes
    assert [vault.get_memory("u", m.id).access_count for m in mine] == [1, 1]
    hidden = [*theirs, users]
    assert [vault.get_memory("u", m.id).access_count for m in hidden] == [0] * len(hidden)


def test_min_score_drops_weak_matches(recall_vault: Vault) -> None:
    vault = recall_vault
    vault.add_turn("u", "s", "user", "the red car is parked outside")
    vault.add_turn("u", "s", "user", "a red apple")
    everything = vault.search("u", "red car parked")
    strict = vault.search("u", "red car parked", min_score=everything[0].score)
    assert len(everything) == 2 and _texts(strict) == ["the red car is parked outside"]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "x" * 5000}, "query"),
        ({"query": "tea \ud800"}, "query"),  # a lone surrogate: no text to tokenise
        ({"limit": 0}, "limit"),
        ({"limit": 1000}, "limit"),
        ({"types": ["turns"]}, "types"),
        ({"types": []}, "types"),
        ({"kinds": ["gossip"]}, "kinds"),
        ({"tiers": ["hot"]}, "tiers"),
        ({"channel": "sms"}, "channel"),
        ({"since": NOW, "until": NOW - timedelta(days=1)}, "since"),
        ({"since": "not a date"}, "since"),
        ({"min_score": 2}, "min_score"),
        ({"session_id": "a/b"}, "session_id"),
        ({"seen_by_agent": ""}, "seen_by_agent"),
    ],
)
def test_bad_input_names_the_field(
    recall_vault: Vault, options: dict[str, object], field: str
) -> None:
    recall_vault.add_turn("u", "s", "user", "something")
    options = dict(options)  # the parameter is shared by both backends' runs
    query = options.pop("query", "something")
    assert isinstance(query, str)
    with pytest.raises(Invalid) as error:
        recall_vault.search("u", query, **options)
    assert error.value.field == field


def test_searches_beside_writes_from_other_threads_stay_consistent(recall_vault: Vault) -> None:
    vault = recall_vault
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for i in range(25):
                vault.add_turn("u", f"s{worker}", "user", f"parcel {worker}-{i} arrived")
                vault.search("u", "parcel arrived", limit=5)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(vault.search("u", "parcel arrived", limit=200)) == 100
