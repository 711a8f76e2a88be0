"""Text analysis for the lexical index: words, stop words and the Snowball English stemmer.

Conversation text is short and informal; matching "painting" to "paint", "dance" to "dancing"
and "dogs" to "dog" matters more than linguistic precision. Stems come from Snowball (PyStemmer,
compiled, about 0.2 us a word). A hand-written suffix list came first; it left "dance" and
"dancing" apart, and "adoption" and "adopt". Terms are then cut to their first six letters,
which joins derivations the stemmer keeps apart ("mentorship" and "mentored") at the price of
rare collisions; on LoCoMo it added half a point of recall.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Set
from functools import lru_cache

import Stemmer

from memvault.model import Role

# The roles a chat's turns give, as words: an agent asks its memory "What does the user like?"
# as often as "What does Alice like?". They name their turns in any case, unlike names, but
# only after "the" (`_names`).
ROLE_WORDS = frozenset({Role.USER.value, Role.ASSISTANT.value})
# The persons a question names its asker and the one it asks by ("What did I tell you about my
# sister?"), when a question says who asks it (`persons_in`).
FIRST_PERSON = frozenset(["i", "i'm", "i've", "i'd", "i'll", "me", "my", "mine", "myself"])
SECOND_PERSON = frozenset(
    ["you", "you're", "you've", "you'd", "you'll", "your", "yours", "yourself", "yourselves"]
)
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)

STOP_WORDS = frozenset(
    """
    a about above after again against all am an and any are aren't as at be because been before
    being below between both but by can can't cannot could couldn't did didn't do does doesn't
    doing don't down during each few for from further had hadn't has hasn't have haven't having
    he he'd he'll he's her here here's hers herself him himself his how how's i i'd i'll i'm i've
    if in into is isn't it it's its itself let's me more most mustn't my myself no nor not of off
    on once only or other ought our ours ourselves out over own same shan't she she'd she'll
    she's should shouldn't so some such than that that's the their theirs them themselves then
    there there's these they they'd they'll they're they've this those through to too under
    until up very was wasn't we we'd we'll we're we've were weren't what what's when when's where
    where's which while who who's whom why why's with won't would wouldn't you you'd you'll
    you're you've your yours yourself yourselves also just really oh yeah yes hey hi wow ok okay
    s t will get got like
    """.split()  # noqa: SIM905 (a word list reads better as prose)
)

_stemmers = threading.local()  # a PyStemmer object must not be shared between threads


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball English stem of a lower-case word ("dancing" and "dance" give "danc",
    "adoption" and "adopted" give "adopt"); words with digits or marks are kept whole."""
    if not word.isalpha():
        return word
    stemmer = getattr(_stemmers, "english", None)
    if stemmer is None:
        stemmer = _stemmers.english = Stemmer.Stemmer("english")
    stemmed: str = stemmer.stemWord(word)
    return stemmed


def words(text: str) -> list[str]:
    """Lower-cased words with apostrophe contractions kept whole ("don't")."""
    return _WORD.findall(_straight_quotes(text.lower()))


TERM_CHARS = 6


def terms(text: str) -> list[str]:
    """Index terms of `text`: words minus stop words, stemmed, cut to `TERM_CHARS` letters.
    Used for documents and queries alike."""
    return [stem(w.removesuffix("'s"))[:TERM_CHARS] for w in words(text) if w not in STOP_WORDS]


_SPACE_BEFORE_MARK = re.compile(r"\s+([?!.,;:])")
_AFTER_THE = re.compile(r"\bthe\s+$", re.IGNORECASE)
_SENTENCE_STARTS = frozenset(".!?\"'(\u201c\u2018")


def _names(text: str, names: Set[str]) -> Iterator[tuple[re.Match[str], str]]:
    """Each word of `text` that uses one of `names` (lower-case words) as a name, with that
    name. A text that uses capitals at all writes its names with one: a user called Hope is
    named by "What does Hope like?", not by "What do I hope for?"; a text all in lower case
    ("what did nate say") may name anyone. A name that is also a stop word ("Will", "May") is
    one only when written with a capital and not first in its sentence: "What did Will say?"
    names Will, while "Will I need a visa?" and "I will go" do not. A role's word
    (`ROLE_WORDS`) names in any case, after "the": "the user" is how an agent names the one it
    serves, while "add a user" or "user accounts" name nobody."""
    cased = text != text.lower()
    for match in _WORD.finditer(text):
        name = match.group(0).lower().removesuffix("'s")
        if name not in names:
            continue
        if name in ROLE_WORDS:
            if _AFTER_THE.search(text, 0, match.start()):
                yield match, name
        elif name in STOP_WORDS:
            if _capitalised_mid_sentence(text, match):
                yield match, name
        elif not cased or match.group(0)[0].isupper():
            yield match, name


def _capitalised_mid_sentence(text: str, match: re.Match[str]) -> bool:
    """Capitalised, and not after a sentence's end or an opening quote or bracket (which start
    a sentence of their own)."""
    before = text[: match.start()].rstrip()
    return match.group(0)[0].isupper() and bool(before) and before[-1] not in _SENTENCE_STARTS


def names_in(text: str, names: Set[str]) -> set[str]:
    """The `names` (lower-case words) that `text` names someone by ("What is Nate's dog
    called?" names "nate")."""
    return {name for _, name in _names(_straight_quotes(text), names)}


def persons_in(text: str) -> tuple[bool, bool]:
    """Whether `text` speaks in the first person ("I", "my") and in the second ("you"): whom
    they name depends on who asks (`UserIndex.named_speakers`)."""
    said = set(words(text))
    return bool(said & FIRST_PERSON), bool(said & SECOND_PERSON)


def without_names(text: str, names: Set[str]) -> str:
    """`text` less every word that names someone by one of `names`, a possessive "'s" with it
    ("What is Nate's dog called?" less {"nate"} is "What is dog called?")."""
    straight = _straight_quotes(text)
    named = {match.start() for match, _ in _names(straight, names)}
    if not named:
        return text
    left = _WORD.sub(lambda match: "" if match.start() in named else match.group(0), straight)
    return _SPACE_BEFORE_MARK.sub(r"\1", " ".join(left.split()))


def _straight_quotes(text: str) -> str:
    return text.replace("\u2019", "'")
