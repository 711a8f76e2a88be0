"""Index terms: the stemmer joins the forms of a word that people use for the same thing."""

from __future__ import annotations

import threading

from memvault.retrieval.text import stem, terms, without_words


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


def test_without_words_drops_names_and_their_possessives_only() -> None:
    names = frozenset({"nate", "joanna"})
    assert without_words("What is Nate's dog called?", names) == "What is dog called?"
    assert without_words("Did Joanna and Nate\u2019s sister meet?", names) == "Did and sister meet?"
    assert without_words("What did Natalie paint?", names) == "What did Natalie paint?"
    assert without_words("Where did you go, Nate?", names) == "Where did you go,?"
    assert without_words("What did Nate paint?", frozenset()) == "What did Nate paint?"
