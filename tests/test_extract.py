"""Fact extraction's rules, as pure functions: what a user's own turns state of them, and what
they must not be taken to state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import plain_turn

from memvault.mind.extract import (
    EXTRACTED_SEQ,
    extract_facts,
    extracted_metadata,
    extraction_metadata,
    statements,
    unread_turns,
)
from memvault.model import Role, Turn

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def read(text: str, name: str | None = None) -> list[tuple[str, str | None]]:
    return [(s.text, s.slot) for s in statements(text, name)]


@pytest.mark.parametrize(
    ("said", "fact", "slot"),
    [
        ("I live in New York", "The user lives in New York", "home"),
        ("I just moved to Boston.", "The user lives in Boston", "home"),
        ("We moved to the Netherlands last year", "The user lives in the Netherlands", "home"),
        ("Hi, I'm Sam and I live in Boston!", "The user lives in Boston", "home"),
        ("i live in Berlin now", "The user lives in Berlin", "home"),
        ("I grew up in Newcastle upon Tyne", "The user grew up in Newcastle upon Tyne", "hometown"),
        ("I'm originally from Portland, Oregon", "The user is originally from Portland, Oregon",
         "origin"),
        ("I was born in Zürich", "The user was born in Zürich", "birthplace"),
        ("I was born in 1990", "The user was born in 1990", "birth year"),
        ("My birthday is on May 3rd", "The user's birthday is May 3rd", "birthday"),
        ("I was born on 3 May 1990", "The user was born on 3 May 1990", "birthday"),
        ("My name is Sam Smith", "The user's name is Sam Smith", "name"),
        ("Call me Ishmael.", "The user's name is Ishmael", "name"),
        ("I'm 34", "The user is 34 years old", "age"),
        ("I just turned 40 today", "The user is 40 years old", "age"),
        ("I work at Google", "The user works at Google", "employer"),
        ("I work for the BBC", "The user works for the BBC", "employer"),
        ("I'm a nurse", "The user is a nurse", "job"),
        ("I work as a graphic designer", "The user works as a graphic designer", "job"),
        ("My favourite colour is green", "The user's favourite colour is green",
         "favourite colour"),
        ("my favorite movie is The Matrix", "The user's favorite movie is The Matrix",
         "favourite movie"),
        ("I'm vegan", "The user is vegan", "diet"),
        ("I'm on a keto diet", "The user is on a keto diet", "diet"),
        ("I'm allergic to peanuts and shellfish", "The user is allergic to peanuts and shellfish",
         None),
        ("I have a peanut allergy", "The user has a peanut allergy", None),
        ("I'm lactose intolerant", "The user is lactose intolerant", None),
        ("I don't eat meat", "The user does not eat meat", None),
        ("I love hiking so much", "The user loves hiking", "feelings about hiking"),
        ("I also like cheese pizza", "The user likes cheese pizza", "feelings about cheese pizza"),
        ("I can't stand Mondays", "The user hates Mondays", "feelings about mondays"),
        ("My wife's name is Sarah", "The user's wife is called Sarah", "spouse"),
        ("My mum is called Jane", "The user's mum is called Jane", "mother"),
        ("My little sister is called Anna", "The user's little sister is called Anna", None),
        ("I have a dog named Max", "The user has a dog called Max", None),
        ("I have two kids", "The user has two kids", "number of kids"),
        ("I\u2019m allergic to cats \U0001f642", "The user is allergic to cats", None),
    ],
)  # fmt: skip
def test_a_first_person_statement_gives_its_fact(said: str, fact: str, slot: str | None) -> None:
    assert read(said) == [(fact, slot)]


def test_a_job_with_its_employer_gives_both() -> None:
    assert read("I'm a software engineer at Initech") == [
        ("The user is a software engineer", "job"),
        ("The user works at Initech", "employer"),
    ]


def test_the_profile_name_is_the_subject() -> None:
    assert read("I live in Boston. My birthday is May 3", "Alice") == [
        ("Alice lives in Boston", "home"),
        ("Alice's birthday is May 3", "birthday"),
    ]


@pytest.mark.parametrize(
    "said",
    [
        "I don't live in Paris any more",  # negated
        "I no longer work at Acme",
        "if I lived in Rome",  # hypothetical
        "I would love to live in Rome",
        "Maybe I live in Oslo",
        "I'm going to move to Oslo",  # planned
        "I think I'm allergic to cats",  # hedged
        "do you live in Oslo?",  # questioned
        "I live in Boston, right?",
        "my sister lives in Lyon",  # someone else
        "My mom thinks I'm 30",  # reported
        "She said I live in Paris",
        '"I live in Paris," he wrote.',  # quoted
        "I live in Boston with my parents",  # the rest of the clause may change it
        "I live in hope",  # not a place
        "I work at a desk",
        "I'm a morning person",  # not an occupation
        "I'm 5 minutes away",
        "My birthday is tomorrow",  # no date
        "Call me tomorrow",
        "I love it",  # points elsewhere
        "I like your idea",
        "I love you",
        "I enjoy the show",
        "I love their work",  # someone else's
        "I like his jokes",
        "Yeah, I love to.",  # the object is elsewhere
        "I lived in Paris for years",  # past
        "",
    ],
)
def test_what_is_not_a_plain_statement_of_the_user_gives_nothing(said: str) -> None:
    assert read(said) == []


def test_a_later_clause_that_starts_again_with_the_user_is_read_alone() -> None:
    assert read("I used to live in Paris but I live in Lyon now") == [
        ("The user lives in Lyon", "home")
    ]
    assert read("I don't like Paris and I live in Lyon") == [("The user lives in Lyon", "home")]


def turn(seq: int, content: str, role: Role = Role.USER, **fields: Any) -> Turn:
    return plain_turn(seq, content, role, first=NOW, **fields)


def test_only_the_users_own_turns_are_read() -> None:
    turns = [
        turn(1, "I live in Boston"),
        turn(2, "I live in Oslo", Role.ASSISTANT),
        turn(3, "I live in Rome", Role.SYSTEM),
        turn(4, "I live in Lyon", speaker="Bob"),  # another person in a group room
        turn(5, "I work at Acme", speaker="alice"),  # the user, named
    ]
    facts = extract_facts(turns, "Alice")
    assert [(f.text, f.turn_id, f.said_at) for f in facts] == [
        ("Alice lives in Boston", "t1", NOW + timedelta(minutes=1)),
        ("Alice works at Acme", "t5", NOW + timedelta(minutes=5)),
    ]
    assert [f.category for f in facts] == ["location", "work"]
    assert extract_facts(turns[3:4], None) == []  # a speaker, and no name to be


def test_the_session_notes_how_far_it_was_read() -> None:
    turns = [turn(1, "a"), turn(2, "b"), turn(3, "c")]
    assert unread_turns(turns, {}) == turns
    noted = extraction_metadata({"topic": "x"}, 2)
    assert noted == {"topic": "x", EXTRACTED_SEQ: 2}
    assert unread_turns(turns, noted) == turns[2:]
    for odd in (True, "2", -1):  # a note the caller spoiled reads as none
        assert unread_turns(turns, {EXTRACTED_SEQ: odd}) == turns


def test_extracted_metadata_marks_the_fact_and_its_slot() -> None:
    assert extracted_metadata("home") == {"extracted": True, "slot": "home"}
    assert extracted_metadata(None) == {"extracted": True}


def test_extraction_is_deterministic() -> None:
    text = "Hi! I'm 34. I live in Boston. I love hiking and I hate running."
    assert (
        read(text)
        == read(text)
        == [
            ("The user is 34 years old", "age"),
            ("The user lives in Boston", "home"),
            ("The user loves hiking", "feelings about hiking"),
            ("The user hates running", "feelings about running"),
        ]
    )
