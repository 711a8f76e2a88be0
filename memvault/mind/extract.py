"""Fact extraction: what a user says of themself, read from their own turns by rules.

Pure functions, like consolidation's rules: turns in, facts out, nothing read from or written to
the store, the same turns always giving the same facts. `Vault.consolidate` applies them.

Only the user's own turns are read (role `user`, spoken by the user rather than by someone else
in a group room), and in them only first-person statements in English of a few well-worn forms:
"I live in Boston", "I just moved to Boston", "I work at Acme", "I'm a nurse", "I'm 34", "my
birthday is May 3", "my favourite colour is green", "I'm allergic to peanuts", "I'm vegan",
"I love hiking", "my sister is called Anna". Each statement must be the whole clause: "I live in
Boston with my parents" says nothing here, because the rules cannot tell what the rest changes.

Precision comes before coverage, since a wrong fact put before an LLM as known is worse than a
missing one. So a sentence is passed over whole when it is a question, quotes someone, is
hypothetical, hedged, planned or reported ("if", "would", "maybe", "going to", "said", ...), and
a clause when it is negated ("I don't live in Paris any more"); a statement that does not start
with the user ("my sister lives in Lyon", "he thinks I'm 30") matches nothing. Places, employers
and names must be written with a capital letter, which keeps "I live in hope" out.

A fact of which a person has one at a time (a home, an employer, an age, a favourite colour, a
name, how they feel about coffee) carries a `slot`; consolidation lets only the newest fact of a
slot stand, superseding the others. Facts that accumulate (allergies, family members, pets) have
none.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from memvault.model import Role, Turn

EXTRACTED_SEQ = "extracted_seq"  # session metadata: the last turn (`seq`) extraction has read
EXTRACTED = "extracted"  # memory metadata: true on a fact extraction wrote
SLOT = "slot"  # memory metadata: what the fact is the one value of, for any writer
EXTRACTED_BY = "model"  # memory metadata: the LLM that read an extracted fact (none: the rules)


@dataclass(frozen=True, slots=True)
class Statement:
    """What one clause says of the user, written to read well in an LLM's context."""

    text: str
    category: str
    slot: str | None  # None: facts of this kind accumulate


@dataclass(frozen=True, slots=True)
class ExtractedFact:
    """A statement, the turn it was read from, and when it became true (when it was said).

    An LLM may read a fact from several turns: `turn_id` is the last, when it was said in
    full, and `earlier_turn_ids` the others; `model` names the LLM (None: the rules here)."""

    text: str
    category: str
    slot: str | None
    turn_id: str
    said_at: datetime
    earlier_turn_ids: tuple[str, ...] = ()
    model: str | None = None

    @property
    def source_turn_ids(self) -> list[str]:
        return [*self.earlier_turn_ids, self.turn_id]


@dataclass(frozen=True, slots=True)
class _Subject:
    """Who the facts are about: the user's name when the profile gives one."""

    name: str

    @property
    def possessive(self) -> str:
        return f"{self.name}'s"


# -- what passes a sentence or a clause over -------------------------------------------------

# hypothetical, hedged, planned, wished or reported: the sentence is not a plain statement
_NOT_PLAIN = re.compile(
    r"\b(?:if|unless|when|whenever|once|would|could|might|should|maybe|perhaps|probably|"
    r"possibly|wish|wished|hope|hoping|suppose|imagine|pretend|assume|will|gonna|going to|"
    r"plan|plans|planning|thinking|want|wanna|someday|one day|dream|said|say|says|told|tell|"
    r"tells|think|thinks|believe|believes|heard|claims|apparently|supposedly|lol|jk|kidding)\b"
    r"|'d\b|'ll\b",
    re.IGNORECASE,
)
_NEGATED = re.compile(
    r"\b(?:not|no|never|nobody|nothing|neither|nor|none|without|anymore|any more)\b|n't\b",
    re.IGNORECASE,
)
_QUOTES = re.compile(r"[\"“”«»]")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")
# "Hi, I'm Sam and I live in Boston": clauses that start again with the user
_CLAUSE_BREAK = re.compile(r",?\s+(?:and|but)\s+(?=(?:I|i|my|My)\b)")
_OPENING = re.compile(
    r"^(?:(?i:hi|hello|hey|well|oh|so|ok|okay|yes|yeah|yep|actually|also|and|anyway|btw|"
    r"by the way|fyi|for the record|just so you know|in fact|now|great|cool|thanks|"
    r"thank you)\b[,!]?\s+)+"
)
_TRAILING = re.compile(r"[\W_]+$")

# -- the pieces of a statement ---------------------------------------------------------------

_CAP = r"[A-ZÀ-ÖØ-Þ][\w'&.-]*"  # a word written with a capital
_PLACE = (
    rf"(?:the\s+)?{_CAP}(?:\s+(?:(?:of|upon|on|de|del|la|le|am|sur)\s+)?{_CAP})*"
    rf"(?:,\s*{_CAP}(?:\s+{_CAP})*)?"
)
_ORG = rf"(?:the\s+)?{_CAP}(?:\s+(?:(?:of|for|and|&|de)\s+)?{_CAP})*"
_NAME = r"[A-ZÀ-ÖØ-Þ][\w'-]*(?:\s+[A-ZÀ-ÖØ-Þ][\w'-]*){0,2}"
_I = r"(?:I|i)"
_IM = r"(?:I|i)(?:'m|\s+am)"
_WE = r"(?:I|i|[Ww]e)"
_MY = r"[Mm]y"
_NOW = r"(?:\s+(?i:now|right now|these days|at the moment|currently|nowadays|at present))?"
_LATELY = (
    r"(?:\s+(?i:recently|yesterday|last (?:week|weekend|month|year|spring|summer|autumn|fall|"
    r"winter)|this (?:week|month|year)|(?:a|one|two|three|four|five|six|a few|a couple of|"
    r"several) (?:days|weeks|months) ago))?"
)
_MONTH = (
    r"(?i:january|february|march|april|may|june|july|august|september|october|november|"
    r"december|jan|feb|mar|apr|jun|jul|aug|sept|sep|oct|nov|dec)"
)
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?i:st|nd|rd|th)?"
_DATE = rf"(?:{_MONTH}\s+{_DAY}|{_DAY}\s+(?:of\s+)?{_MONTH})(?:,?\s+(?:19|20)\d\d)?"
_WORDS = r"[\w'-]+(?:\s+[\w'-]+){0,5}"  # up to six words, any
_JOB_WORD = r"(?!(?i:at|for|in|with|and|but)\b)[A-Za-z-]+"
_JOB = rf"{_JOB_WORD}(?:\s+{_JOB_WORD}){{0,3}}"
_NUMBER = r"(?:\d{1,2}|(?i:two|three|four|five|six|seven|eight|nine|ten))"
_RELATIVE = (
    r"(?:(?i:older|younger|little|big|eldest|oldest|youngest|baby|twin)\s+)?"
    r"(?i:wife|husband|spouse|partner|boyfriend|girlfriend|fianc[ée]e?|mother|mom|mum|father|"
    r"dad|son|daughter|brother|sister|kid|child|cousin|niece|nephew|aunt|uncle|grandmother|"
    r"grandfather|grandma|grandpa|best friend|dog|cat|puppy|kitten|pet)"
)

# one of each at a time: the slot of a relative is the relation, whatever word names it
_ONLY_ONE = {
    "wife": "spouse", "husband": "spouse", "spouse": "spouse", "partner": "partner",
    "boyfriend": "partner", "girlfriend": "partner", "fiance": "partner", "fiancee": "partner",
    "fiancé": "partner", "fiancée": "partner", "mother": "mother", "mom": "mother",
    "mum": "mother", "father": "father", "dad": "father",
}  # fmt: skip
_PETS = frozenset({"dog", "cat", "puppy", "kitten", "pet"})
# "I'm a ..." says what one does for a living only when it ends in one of these
_OCCUPATIONS = frozenset({
    "accountant", "actor", "actress", "analyst", "architect", "artist", "baker", "barista",
    "carpenter", "cashier", "chef", "cleaner", "consultant", "cook", "dentist", "designer",
    "developer", "doctor", "driver", "economist", "editor", "electrician", "engineer", "farmer",
    "firefighter", "journalist", "lawyer", "lecturer", "librarian", "manager", "mechanic",
    "musician", "nurse", "painter", "paramedic", "pharmacist", "photographer", "physician",
    "physicist", "pilot", "plumber", "professor", "programmer", "psychologist", "researcher",
    "scientist", "student", "surgeon", "teacher", "therapist", "translator", "vet",
    "veterinarian", "waiter", "waitress", "writer",
})  # fmt: skip
_DIETS = r"(?i:vegetarian|vegan|pescatarian|pescetarian)"
_DIET_PLANS = r"(?i:keto|paleo|low-carb|low carb|gluten-free|dairy-free|mediterranean)"
# a liking says nothing standing when its object points elsewhere ("I love it", "I like that")
_POINTING = frozenset({
    "it", "that", "this", "these", "those", "you", "your", "yours", "him", "her", "them", "me",
    "my", "mine", "myself", "we", "us", "our", "what", "how", "when", "where", "why", "who",
    "the", "a", "an", "some", "any", "he", "she", "they", "his", "its", "their", "theirs",
    "there", "here",
})  # fmt: skip
# words a liked thing cannot end on: the clause stops before its object ("Yeah, I love to.")
_DANGLING = frozenset({"to", "and", "or", "of", "with", "about", "for", "in", "on", "at"})
_NOT_NAMES = frozenset({
    "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday", "tomorrow",
    "today", "tonight", "later", "back", "anytime",
})  # fmt: skip
_FEELINGS = {
    "love": "loves", "like": "likes", "enjoy": "enjoys", "adore": "adores", "hate": "hates",
    "dislike": "dislikes", "detest": "detests", "loathe": "loathes",
}  # fmt: skip
_INTENSIFIERS = re.compile(r"\s+(?i:so much|a lot|very much|too)$")
_LEADING_ADVERBS = re.compile(r"^(?i:also|really|just|still|even|totally|absolutely)\s+")

Build = Callable[[Mapping[str, Any], _Subject], list[Statement]]


def _one(text: str, category: str, slot: str | None) -> list[Statement]:
    return [Statement(text, category, slot)]


def _said(
    template: str, category: str, slot: str | None, *, lowered: tuple[str, ...] = ()
) -> Build:
    """A rule whose statement is `template` filled in with the subject (`{name}`,
    `{possessive}`) and the clause's named groups, those in `lowered` in lower case; the
    others keep the user's own spelling (a place's capital letters)."""

    def build(m: Mapping[str, Any], who: _Subject) -> list[Statement]:
        groups = {k: v.lower() if k in lowered else v for k, v in m.items() if v is not None}
        text = template.format(name=who.name, possessive=who.possessive, **groups)
        return _one(text, category, slot)

    return build


_HOME = _said("{name} lives in {place}", "location", "home")
_HOMETOWN = _said("{name} grew up in {place}", "location", "hometown")
_ORIGIN = _said("{name} is originally from {place}", "location", "origin")
_BIRTHPLACE = _said("{name} was born in {place}", "personal", "birthplace")
_BIRTH_YEAR = _said("{name} was born in {year}", "personal", "birth year")
_BIRTHDAY = _said("{possessive} birthday is {date}", "personal", "birthday")
_BORN_ON = _said("{name} was born on {date}", "personal", "birthday")
_ALLERGY = _said("{name} is allergic to {what}", "health", None)
_ALLERGY_NAMED = _said("{name} has {art} {what} allergy", "health", None, lowered=("art",))
_INTOLERANCE = _said("{name} is {what} intolerant", "health", None, lowered=("what",))
_DIET = _said("{name} is {diet}", "diet", "diet", lowered=("diet",))
_DIET_PLAN = _said("{name} is on a {diet} diet", "diet", "diet", lowered=("diet",))


def _name(m: Mapping[str, Any], who: _Subject) -> list[Statement]:
    if any(word.casefold() in _NOT_NAMES for word in m["name"].split()):
        return []  # "call me tomorrow"
    return _one(f"The user's name is {m['name']}", "personal", "name")


def _age(m: Mapping[str, Any], who: _Subject) -> list[Statement]:
    age = int(m["age"] or m["turned"])
    return _one(f"{who.name} is {age} years old", "personal", "age") if 0 < age < 120 else []


def _employer(m: Mapping[str, Any], who: _Subject) -> list[Statement]:
    preposition = (m.get("prep") or "at").lower()
    return _one(f"{who.name} works {preposition} {m['org']}", "work", "employer")


def _job(m: Mapping[str, Any], who: _Subject, verb: str) -> list[Statement]:
    facts = _one(f"{who.name} {verb} {m['art'].lower()} {m['job']}", "work", "job")
    return facts + (_employer(m, who) if m.get("org") else [])


def _works_as(m: Mapping[str, Any], who: _Subject) -> list[Statement]:
    return _job(m, who, "works as")


def _is_a(m: Mapping[str, Any], who: _Subject) -> list[Statement]:
    if m["job"].split()[-1].lower() not in _OCCUPATIONS:
        return []  # "I'm a morning person"
    return _job(m, who, "is")


def _favourite(m: Mapping[str, Any], who: _Subject) -> list[Statement]:
    thing = " ".join(m["thing"].split())
    slot = "favourite " + thing.lower()
    text = f"{who.possessive} {m['fav'].lower()} {thing} {m['verb'].lower()} {m['value']}"
    return _one(text, "preferences", slot)


def _feeling(m: Mapping[str, Any], who: _Subject) -> list[Statement]:
    what = _LEADING_ADVERBS.sub("", _INTENSIFIERS.sub("", m["what"]))
    words = what.split()
    if not words or words[-1].casefold() in _DANGLING:
        return []
    if any(word.casefold() in _POINTING for word in words):
        return []  # "I love it", "I like your idea", "I enjoy the show", "I love their work"
    verb = _FEELINGS[m["verb"].lower()]
    # one feeling at a time about one thing: "I hate coffee" replaces "I love coffee"
    return _one(f"{who.name} {verb} {what}", "preferences", f"feelings about {what.lower()}")


def _cannot_stand(m: Mapping[str, Any], who: _Subject) -> list[Statement]:
    return _feeling({"verb": "hate", "what": m["what"]}, who)


def _does_not_eat(m: Mapping[str, Any], who: _Subject) -> list[Statement]:
    if _NEGATED.search(m["what"]) or m["what"].split()[0].casefold() in _POINTING:
        return []
    verb = "cannot" if m["verb"].lower().startswith("ca") else "does not"
    return _one(f"{who.name} {verb} eat {m['what']}", "diet", None)


def _relative_called(m: Mapping[str, Any], who: _Subject) -> list[Statement]:
    relation = " ".join(m["rel"].lower().split())
    kind = relation.split()[-1]
    category = "pets" if kind in _PETS else "family"
    slot = _ONLY_ONE.get(relation)  # "older sister": one of possibly several
    return _one(f"{who.possessive} {relation} is called {m['name']}", category, slot)


def _has_relative(m: Mapping[str, Any], who: _Subject) -> list[Statement]:
    relation = " ".join(m["rel"].lower().split())
    category = "pets" if relation.split()[-1] in _PETS else "family"
    text = f"{who.name} has {m['art'].lower()} {relation} called {m['name']}"
    return _one(text, category, _ONLY_ONE.get(relation))


def _married(m: Mapping[str, Any], who: _Subject) -> list[Statement]:
    return _one(f"{who.name} is married to {m['name']}", "family", "spouse")


def _how_many(m: Mapping[str, Any], who: _Subject) -> list[Statement]:
    noun = m["noun"].lower()
    return _one(f"{who.name} has {m['n'].lower()} {noun}", "family", f"number of {noun}")


# Each form must match a whole clause (`fullmatch`). Order matters only where two forms could
# read one clause; the first that matches and builds a statement wins.
_RULES: tuple[tuple[re.Pattern[str], Build], ...] = tuple(
    (re.compile(pattern), build)
    for pattern, build in (
        (
            rf"(?:{_WE}\s+(?:(?i:just|now|currently|still|also|actually)\s+)?(?i:live|reside)"
            rf"|(?:{_IM}|[Ww]e(?:'re|\s+are))\s+(?:(?i:now|currently|still)\s+)?"
            rf"(?i:living|based))\s+in\s+(?P<place>{_PLACE}){_NOW}",
            _HOME,
        ),
        (
            rf"{_WE}(?:'ve|\s+have)?\s+(?:(?i:just|recently|finally|now)\s+)?"
            rf"(?i:moved|relocated)\s+to\s+(?P<place>{_PLACE}){_LATELY}",
            _HOME,
        ),
        (rf"{_I}\s+grew\s+up\s+in\s+(?P<place>{_PLACE})", _HOMETOWN),
        (rf"{_IM}\s+originally\s+from\s+(?P<place>{_PLACE})", _ORIGIN),
        (rf"{_I}\s+was\s+born\s+in\s+(?P<year>(?:19|20)\d\d)", _BIRTH_YEAR),
        (rf"{_I}\s+was\s+born\s+in\s+(?P<place>{_PLACE})", _BIRTHPLACE),
        (rf"{_I}\s+was\s+born\s+on\s+(?P<date>{_DATE})", _BORN_ON),
        (rf"{_MY}\s+birthday(?:\s+is|'s)\s+(?:on\s+)?(?P<date>{_DATE})", _BIRTHDAY),
        (
            rf"(?:{_MY}\s+name(?:\s+is|'s)|{_IM}\s+called|[Cc]all\s+me|{_I}\s+go\s+by)"
            rf"\s+(?P<name>{_NAME})",
            _name,
        ),
        (
            rf"{_IM}\s+(?P<age>\d{{1,3}})(?:\s+(?i:years?\s+old|yrs?\s+old|y/?o))?"
            rf"|{_I}\s+(?:(?i:just)\s+)?turned\s+(?P<turned>\d{{1,3}})"
            rf"(?:\s+(?i:today|yesterday|last\s+week|last\s+month))?",
            _age,
        ),
        (
            rf"(?:{_I}\s+(?:(?i:now|currently|still|also)\s+)?work|{_IM}\s+working)\s+as\s+"
            rf"(?P<art>an?)\s+(?P<job>{_JOB})(?:\s+(?P<prep>at|for)\s+(?P<org>{_ORG}))?",
            _works_as,
        ),
        (
            rf"{_IM}\s+(?:(?i:now|currently|still|also)\s+)?(?P<art>an?)\s+(?P<job>{_JOB})"
            rf"(?:\s+(?P<prep>at|for)\s+(?P<org>{_ORG}))?",
            _is_a,
        ),
        (
            rf"(?:{_I}\s+(?:(?i:now|currently|still|also)\s+)?work|{_IM}\s+working"
            rf"|{_I}\s+(?:(?i:just)\s+)?(?:started\s+(?:a\s+new\s+job|working)|got\s+a\s+"
            rf"(?:new\s+)?job))\s+(?P<prep>at|for)\s+(?P<org>{_ORG})",
            _employer,
        ),
        (
            rf"{_MY}\s+(?P<fav>(?i:favou?rite))\s+(?P<thing>[a-z]+(?:\s+[a-z]+){{0,2}})\s+"
            rf"(?P<verb>is|are)\s+(?P<value>{_WORDS})",
            _favourite,
        ),
        (
            rf"{_IM}\s+(?:(?i:also|severely|very|really|seriously|deathly)\s+)?allergic\s+to\s+"
            rf"(?P<what>{_WORDS})",
            _ALLERGY,
        ),
        (
            rf"{_I}\s+(?:also\s+)?have\s+(?P<art>an?)\s+(?P<what>[\w-]+(?:\s+[\w-]+)?)"
            rf"\s+allergy",
            _ALLERGY_NAMED,
        ),
        (rf"{_IM}\s+(?:also\s+)?(?P<what>[A-Za-z-]+)\s+intolerant", _INTOLERANCE),
        (rf"{_IM}\s+(?:(?i:now|also)\s+)?(?:an?\s+)?(?P<diet>{_DIETS})", _DIET),
        (rf"{_IM}\s+(?:(?i:now|also)\s+)?on\s+an?\s+(?P<diet>{_DIET_PLANS})\s+diet", _DIET_PLAN),
        (
            rf"{_I}\s+(?:(?i:really|also|just|absolutely|totally|truly)\s+)?"
            rf"(?P<verb>(?i:love|like|enjoy|adore|hate|dislike|detest|loathe))\s+"
            rf"(?P<what>{_WORDS})",
            _feeling,
        ),
        (
            rf"{_MY}\s+(?P<rel>{_RELATIVE})(?:'s\s+name\s+is|'s\s+called|\s+is\s+(?:called|named))"
            rf"\s+(?P<name>{_NAME})",
            _relative_called,
        ),
        (
            rf"{_I}\s+have\s+(?P<art>an?)\s+(?P<rel>{_RELATIVE})\s+(?:called|named)\s+"
            rf"(?P<name>{_NAME})",
            _has_relative,
        ),
        (rf"{_IM}\s+married\s+to\s+(?P<name>{_NAME})", _married),
        (
            rf"{_I}\s+have\s+(?P<n>{_NUMBER})\s+(?P<noun>(?i:kids|children|sons|daughters|"
            rf"brothers|sisters|siblings|cats|dogs|pets|grandchildren))",
            _how_many,
        ),
    )
)
# negated forms that state a fact: read before the negation check passes the clause over
_NEGATED_RULES: tuple[tuple[re.Pattern[str], Build], ...] = (
    (
        re.compile(rf"{_I}\s+(?i:can't|cannot|can\s+not)\s+stand\s+(?P<what>{_WORDS})"),
        _cannot_stand,
    ),
    (
        re.compile(
            rf"{_I}\s+(?:(?i:also|just)\s+)?(?P<verb>(?i:don't|do\s+not|can't|cannot))\s+eat\s+"
            rf"(?P<what>{_WORDS})"
        ),
        _does_not_eat,
    ),
)


# -- reading a turn --------------------------------------------------------------------------


def plain(text: str) -> str:
    """The text with compatibility forms folded (NFKC) and typographic apostrophes made plain
    (U+2018, U+2019), so a phone's "I'm" reads as a keyboard's."""
    folded = unicodedata.normalize("NFKC", text)
    return folded.replace("\u2019", "'").replace("\u2018", "'")


def clauses(text: str) -> list[str]:
    """The clauses of the plain statements in `text`: sentences that are questions, quote
    someone or are not plain statements (`_NOT_PLAIN`) are left out whole."""
    found = []
    for raw in _SENTENCE_END.split(plain(text)):
        sentence = " ".join(raw.split())
        if not sentence or "?" in sentence or _QUOTES.search(sentence):
            continue
        if _NOT_PLAIN.search(sentence):
            continue
        for part in _CLAUSE_BREAK.split(sentence):
            clause = _OPENING.sub("", _TRAILING.sub("", part), count=1)
            if clause:
                found.append(clause)
    return found


def statements(text: str, user_name: str | None = None) -> list[Statement]:
    """What the user says of themself in `text`, in the order said, each statement once.

    `user_name` (the profile's name) is the subject of the facts when given: "Alice lives in
    Boston" reads better among other people's names than "The user lives in Boston"."""
    who = _Subject(user_name or "The user")
    found: list[Statement] = []
    for clause in clauses(text):
        for statement in _read(clause, who):
            if statement not in found:
                found.append(statement)
    return found


def _read(clause: str, who: _Subject) -> list[Statement]:
    negated = _NEGATED.search(clause) is not None
    for pattern, build in _NEGATED_RULES if negated else _RULES:
        match = pattern.fullmatch(clause)
        if match is not None:
            built = build(match.groupdict(), who)
            if built:
                return built
    return []


def spoken_by_user(turn: Turn, user_name: str | None) -> bool:
    """A turn in which the user speaks: role `user`, and no other speaker named (in a group
    room, a user turn may be another person's words)."""
    if turn.role is not Role.USER:
        return False
    if turn.speaker is None:
        return True
    return user_name is not None and turn.speaker.casefold() == user_name.casefold()


def extract_facts(turns: Iterable[Turn], user_name: str | None = None) -> list[ExtractedFact]:
    """The facts the user states of themself in `turns`, in the order of the turns given."""
    return [
        ExtractedFact(s.text, s.category, s.slot, turn.id, turn.created_at)
        for turn in turns
        if spoken_by_user(turn, user_name)
        for s in statements(turn.content, user_name)
    ]


# -- how far a session has been read ---------------------------------------------------------


def extracted_through(metadata: Mapping[str, Any]) -> int:
    """The `seq` of the last turn of the session extraction has read; 0 for none."""
    seq = metadata.get(EXTRACTED_SEQ)
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq > 0 else 0


def unread_turns(turns: Iterable[Turn], metadata: Mapping[str, Any]) -> list[Turn]:
    """The session's turns extraction has not read yet (by `seq`, which only grows)."""
    done = extracted_through(metadata)
    return [t for t in turns if t.seq > done]


def extraction_metadata(metadata: Mapping[str, Any], last_seq: int) -> dict[str, Any]:
    """The session's metadata noting that extraction has read its turns up to `last_seq`."""
    return {**metadata, EXTRACTED_SEQ: last_seq}


def extracted_metadata(slot: str | None, model: str | None = None) -> dict[str, Any]:
    """The metadata of a fact extraction writes: marked as extracted, with its slot if any,
    and the LLM that read it if one did."""
    metadata: dict[str, Any] = {EXTRACTED: True}
    if slot is not None:
        metadata[SLOT] = slot
    if model is not None:
        metadata[EXTRACTED_BY] = model
    return metadata
