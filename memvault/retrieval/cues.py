"""Cues in a turn's own words that tell whether it is the kind of turn people later ask about.

Two kinds, both read from the text alone, once, when the item enters the index:

- Salience, whatever the question. In LoCoMo a quarter of all turns are the evidence of some
  question, but not evenly: turns of 40 words or more are evidence half the time and turns
  under 8 words one time in twenty; a turn where the speaker tells of their own doings ("I
  went", "my sister") 57% against 19%; a shared image 43% against 19%; a turn that ends with a
  question mark 14% against 28%. Memories were saved to be recalled and count as fully salient.
- The answer a question expects. A "when" question is answered by a turn that says when (90%
  of such evidence turns name a time, against 21% of all turns); "how many" by one with a
  number.

Search uses both as weak signals beside the text match (`Weights.salience`, `Weights.answer`):
they order turns that match the question, and never make a turn match on their own.
"""

from __future__ import annotations

import math
import re
from enum import IntFlag

import numpy as np
import numpy.typing as npt

from memvault.retrieval.items import TURN, Item, grown

SALIENT_WORDS = 40  # the length from which a turn counts as fully informative

_DISCLOSURE = re.compile(
    r"\b(?:i|we)\s+(?:\w+ed|went|got|made|took|saw|did|had|started|just)\b|\b(?:my|our)\b",
    re.IGNORECASE,
)
_TIME = re.compile(
    r"\b(?:yesterday|today|tonight|tomorrow|last|next|ago|weeks?|weekend|months?|years?"
    r"|summer|winter|spring|fall|autumn|morning|evening|night|recently|lately|since"
    r"|monday|tuesday|wednesday|thursday|friday|saturday|sunday|january|february|march|april"
    r"|may|june|july|august|september|october|november|december|\d{4})\b",
    re.IGNORECASE,
)
_QUANTITY = re.compile(
    r"\b(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty"
    r"|hundred|dozen|couple|few|several|once|twice)\b",
    re.IGNORECASE,
)
_ASKS_TIME = re.compile(
    r"^\W*(?:when|(?:in\s+)?(?:what|which)\s+(?:year|month|day|date|time|week|season))\b",
    re.IGNORECASE,
)
_ASKS_QUANTITY = re.compile(r"^\W*how\s+(?:many|much|long|often|old)\b", re.IGNORECASE)


class Answers(IntFlag):
    """Kinds of answer a text can give; an item keeps the set its text gives as one small int."""

    NONE = 0
    TIME = 1
    QUANTITY = 2


def expected_answer(query: str) -> Answers:
    """What kind of answer the question asks for, or `NONE` when it asks for no particular kind."""
    if _ASKS_TIME.search(query):
        return Answers.TIME
    if _ASKS_QUANTITY.search(query):
        return Answers.QUANTITY
    return Answers.NONE


def answers_given(text: str) -> Answers:
    """The kinds of answer the text could give: it names a time, it has a number."""
    given = Answers.NONE
    if _TIME.search(text):
        given |= Answers.TIME
    if _QUANTITY.search(text):
        given |= Answers.QUANTITY
    return given


def turn_salience(text: str, *, has_image: bool) -> float:
    """In [0, 1]: the mean of four cues, each measured above (length counted in words, on a
    log scale up to `SALIENT_WORDS`)."""
    length = min(math.log1p(len(text.split())) / math.log1p(SALIENT_WORDS), 1.0)
    cues = (
        length,
        1.0 if _DISCLOSURE.search(text) else 0.0,
        0.0 if text.rstrip().endswith("?") else 1.0,
        1.0 if has_image else 0.0,
    )
    return sum(cues) / len(cues)


class CueColumns:
    """Each slot's salience and the kinds of answer it gives, read once when the item is added,
    so that a query only indexes two arrays (5 bytes a slot)."""

    def __init__(self) -> None:
        self._salience = np.zeros(0, dtype=np.float32)
        self._answers = np.zeros(0, dtype=np.uint8)

    def set(self, slot: int, item: Item) -> None:
        if slot >= len(self._salience):
            self._salience = grown(self._salience, slot + 1)
            self._answers = grown(self._answers, slot + 1)
        if item.type == TURN:
            caption = item.metadata.get("image_caption")
            self._salience[slot] = turn_salience(item.text, has_image=isinstance(caption, str))
        else:
            self._salience[slot] = 1.0
        self._answers[slot] = answers_given(item.text)

    def salience(self, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        values: npt.NDArray[np.float32] = self._salience[slots]
        return values

    def gives(self, wanted: Answers, slots: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """1 where the slot's text gives the wanted kind of answer, else 0."""
        given: npt.NDArray[np.float32] = ((self._answers[slots] & int(wanted)) != 0).astype(
            np.float32
        )
        return given

    def nbytes(self) -> int:
        return int(self._salience.nbytes + self._answers.nbytes)
