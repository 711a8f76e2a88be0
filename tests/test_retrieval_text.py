"""Index terms: the stemmer joins the forms of a word that people use for the same thing."""

from __future__ import annotations

import threading

from memvault.retrieval.text import names_in, stem, terms, without_names


def test_inflections_and_derivations_share_a_term() -> None:
    assert terms("dance") == terms("dancing") == terms("dances") == ["danc"]
    assert terms("adoption") == terms("adopted") == terms("adopting") == ["adopt"]
    assert terms("relaxation") == terms("relaxing")
    assert terms("hobbies") == terms("hobby")
    assert terms("painter") != terms("pain")


def test_words_with_digits_or_marks_are_kept_whole() -> None:
    assert stem("covid19") == "covid19"
    assert terms("don't 2023") == ["2023"]  # "don't" is a stop word


def test_threads_stem_alike() -> None:
    words = [f"{root}{ending}" for root in ("walk", "jump", "paint", "cook") for ending in
             ("", "s", "ed", "ing", "er", "ers")] * 50  # fmt: skip
    expected = [stem.__wrapped__(w) for w in words]
    results: list[list[str]] = []

    def run() -> None:
        results.append([stem.__wrapped__(w) for w in words])

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 4


def test_without_names_drops_names_and_their_possessives_only() -> None:
    names = frozenset({"nate", "joanna"})
    assert without_names("What is Nate's dog called?", names) == "What is dog called?"
    assert without_names("Did Joanna and Nate\u2019s sister meet?", names) == "Did and sister meet?"
    assert without_names("What did Natalie paint?", names) == "What did Natalie paint?"
    assert without_names("Where did you go, Nate?", names) == "Where did you go,?"
    assert without_names("What did Nate paint?", frozenset()) == "What did Nate paint?"


def test_a_name_that_is_a_stop_word_names_only_capitalised_within_a_sentence() -> None:
    names = frozenset({"will", "may", "nate"})
    assert names_in("What did Will say to Nate?", names) == {"will", "nate"}
    assert names_in("Will I need a visa?", names) == set()
    assert names_in("Where will we meet in May?", names) == {"may"}
    assert names_in("I will go. Will you?", names) == set()
    assert names_in('Who said "Will is late"?', names) == set()
    assert without_names("What will Will do?", names) == "What will do?"
    assert without_names("Will I need a visa?", names) == "Will I need a visa?"


def test_a_text_that_uses_capitals_names_only_with_a_capital() -> None:
    """A user or agent called Hope, or June: a question written with capitals names them only
    with one; one written all in lower case may still name anyone."""
    names = frozenset({"hope", "june", "nate"})
    assert names_in("What does Hope like?", names) == {"hope"}
    assert names_in("What do I hope for in june?", names) == set()
    assert names_in("what does nate hope for", names) == {"nate", "hope"}
    assert names_in("What did NATE say?", names) == {"nate"}
    assert without_names("What do I hope Nate does?", names) == "What do I hope does?"


def test_a_roles_word_names_in_any_case_after_the() -> None:
    """An agent names the one it serves "the user", written small in a capitalised question;
    the words leave the dense query as a name does. "a user" or "user accounts" is a plain
    word."""
    names = frozenset({"user", "assistant", "hope"})
    assert names_in("What does the user hope for?", names) == {"user"}
    assert names_in("What did the Assistant suggest?", names) == {"assistant"}
    assert without_names("What is the user's dog called?", names) == "What is the dog called?"
    assert names_in("How do I add a user? The users' page", names) == set()
    assert names_in("What did THE USER say of user accounts?", names) == {"user"}
