"""The query-independent cues of a turn: salience and the kinds of answer it gives."""

from __future__ import annotations

import pytest

from memvault.retrieval.cues import Answers, answers_given, expected_answer, turn_salience


@pytest.mark.parametrize(
    ("question", "wanted"),
    [
        ("When did Caroline go to the support group?", Answers.TIME),
        ("  when is the dentist appointment", Answers.TIME),
        ("In which month did Jon open his studio?", Answers.TIME),
        ("What year did they move?", Answers.TIME),
        ("How many children does Melanie have?", Answers.QUANTITY),
        ("how long has Nate had his turtles", Answers.QUANTITY),
        ("What did Melanie paint?", Answers.NONE),
        ("Where did I leave the keys? When?", Answers.NONE),  # only the question's opening counts
        ("Whenever I cook, what do I burn?", Answers.NONE),
    ],
)
def test_the_opening_of_a_question_says_what_kind_of_answer_it_wants(
    question: str, wanted: Answers
) -> None:
    assert expected_answer(question) is wanted


def test_a_text_gives_the_kinds_of_answer_it_names() -> None:
    assert answers_given("We went camping last weekend") == Answers.TIME
    assert answers_given("I have three kids") == Answers.QUANTITY
    assert answers_given("Back in 2019 I ran 2 marathons") == Answers.TIME | Answers.QUANTITY
    assert answers_given("That sounds lovely!") == Answers.NONE
    assert answers_given("Lastly, a toast") == Answers.NONE  # words, not prefixes


def test_a_long_statement_of_ones_own_doings_is_more_salient_than_a_short_question() -> None:
    telling = turn_salience(
        "I finally finished the painting of the lake at sunrise that I started in the "
        "spring, and my sister wants to hang it in her new flat next to the window",
        has_image=False,
    )
    asking = turn_salience("How are you?", has_image=False)
    assert 0.0 <= asking < telling <= 1.0
    assert turn_salience("", has_image=False) == pytest.approx(0.25)  # not a question: one cue
    plain = turn_salience("Look at this", has_image=False)
    assert turn_salience("Look at this", has_image=True) == pytest.approx(plain + 0.25)
