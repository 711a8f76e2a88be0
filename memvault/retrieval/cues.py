"""Cues in a turn's own words that tell whether it is the kind of turn people later ask about.

Two kinds, both read from the text alone, once, when the item enters the index:

- Salience, whatever the question. In LoCoMo a quarter of all turns are the evidence of some
  question, but not evenly: turns of 40 words or more are evidence half the time and turns
  under 8 words one time in twenty; a turn where the speaker tells of their own doings ("I
  went", "my sister") 45% against 14%; a shared image 43% against 19%; a turn that ends with a
  question mark 14% against 28%. Memories were saved to be recalled and count as fully salient.
- The answer a question expects. A "when" question is answered by a turn that says when (90%
  of such evidence turns name a time, against 21% of all turns); "how many" by one with a
  number.

Search uses both as weak signals beside the text match (`Weights.salience`, `Weights.answer`):
they order turns that match the question, and never make a turn match on their own.
"""

from __future__ import annotations

import itertools
import math
import re
from enum import IntFlag

import numpy as np
import numpy.typing as npt

from memvault.retrieval.items import TURN, Item, grown
from memvault.retrieval.text import words

SALIENT_WORDS = 40  # the length from which a turn counts as fully informative

# Matched against a text's lower-cased words (`text.words`): set lookups cost about a tenth of
# what the same alternations did as regular expressions, and every item added pays them.
_FIRST_PERSON = frozenset({"i", "we"})
_TOLD_VERBS = frozenset({"went", "got", "made", "took", "saw", "did", "had", "started", "just"})
_POSSESSIVES = frozenset({"my", "our"})
_TIME_WORDS = frozenset(
    """yesterday today tonight tomorrow last next ago week weeks weekend month months year years
    summer winter spring fall autumn morning evening night recently lately since monday tuesday
    wednesday thursday friday saturday sunday january february march april may june july august
    september october november december""".split()  # noqa: SIM905 (reads better as prose)
)
_NUMBER_WORDS = frozenset(
    """one two three four five six seven eight nine ten eleven twelve twenty thirty hundred dozen
    couple few several once twice""".split()  # noqa: SIM905
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
    return _answers(words(text))


def _answers(text_words: list[str]) -> Answers:
    present = {w.removesuffix("'s") for w in text_words}  # "tomorrow's", "one's"
    numbers = [w for w in present if w.isdigit()]
    given = Answers.NONE
    if not present.isdisjoint(_TIME_WORDS) or any(len(w) == 4 for w in numbers):
        given |= Answers.TIME
    if numbers or not present.isdisjoint(_NUMBER_WORDS):
        given |= Answers.QUANTITY
    return given


def turn_salience(text: str, *, has_image: bool) -> float:
    """In [0, 1]: the mean of four cues, each measured above (length counted in words, on a
    log scale up to `SALIENT_WORDS`)."""
    return _salience(text, words(text), has_image=has_image)


def _salience(text: str, text_words: list[str], *, has_image: bool) -> float:
    length = min(math.log1p(len(text.split())) / math.log1p(SALIENT_WORDS), 1.0)
    cues = (
        length,
        1.0 if _tells_own_doings(text_words) else 0.0,
        0.0 if text.rstrip().endswith("?") else 1.0,
        1.0 if has_image else 0.0,
    )
    return sum(cues) / len(cues)


def _tells_own_doings(text_words: list[str]) -> bool:
    """ "I went", "we adopted", "my sister": the speaker tells of themselves."""
    if not _POSSESSIVES.isdisjoint(text_words):
        return True
    pairs = itertools.pairwise(text_words)
    return any(
        first in _FIRST_PERSON and (verb in _TOLD_VERBS or verb.endswith("ed"))
        for first, verb in pairs
    )


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
        text_words = words(item.text)
        if item.type == TURN:
            caption = item.metadata.get("image_caption")
            has_image = isinstance(caption, str)
            self._salience[slot] = _salience(item.text, text_words, has_image=has_image)
        else:
            self._salience[slot] = 1.0
        self._answers[slot] = _answers(text_words)

    def compacted(self, keep: npt.NDArray[np.int64]) -> CueColumns:
        """The cues of slots `keep`, now at slots 0, 1, ... (read from the text once only)."""
        columns = CueColumns()
        columns._salience = self._salience[keep]
        columns._answers = self._answers[keep]
        return columns

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
