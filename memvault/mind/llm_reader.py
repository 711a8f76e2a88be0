"""Reading sessions with an LLM: abstractive summaries and the facts users state, for
consolidation, when an operator configured one (`llm_url` and `llm_model`).

The rules (`RULES`: `extractive_summary`, `extract_facts`) stay the floor. Every answer is
checked before it is used, and any failure (no answer, an error status, a summary empty or
longer than `summary_chars`, facts that are not the JSON asked for, cite turns that were not
shown, say what the cited turns do not, run too long or are too many) leaves that session's
summary or facts to the rules. A fact that fails a check takes the whole answer with it: the
other facts of a reading that went wrong in one place are no safer, and a wrong fact put before
an LLM as known is worse than a missing one. Failures are logged by reason only, never with
anything the user said.

What is sent, and how much: for a summary, the session's user and assistant turns (each cut
to `TURN_CHARS`); for facts, the user's own turns not read yet, numbered, each whole. Either
way only the newest turns that fit `policy.llm_input_chars` go; older unread turns are read by
the rules. Nothing of any other session or user is in a request.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from memvault.config import Settings
from memvault.errors import LlmUnreachable
from memvault.llm import BlockingLlmClient, LlmEndpoint
from memvault.mind.consolidate import (
    RULES,
    ConsolidationPolicy,
    SessionReader,
    Summary,
    shortened,
    slot_key,
)
from memvault.mind.extract import ExtractedFact, extract_facts, plain, spoken_by_user
from memvault.model import Role, Turn

log = logging.getLogger(__name__)

TURN_CHARS = 2_000  # the most of one turn a summary request carries
MAX_FACTS = 20  # an answer with more facts than this is not the reading asked for
MAX_FACT_CHARS = 200
MAX_SLOT = 60  # characters
MAX_MODEL_CHARS = 200  # the longest model name noted in metadata
SUMMARY_TOKENS = 400  # answer budgets: a summary of 600 characters is about 150 tokens
FACTS_TOKENS = 2_000
CATEGORIES = ("personal", "location", "work", "family", "pets", "health", "diet", "preferences",
              "other")  # fmt: skip
# how an endpoint that does not take `response_format` may refuse it
_REFUSED_FORMAT = frozenset({"status 400", "status 422"})
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
_WORD = re.compile(r"\w+")
# words a fact may use that no turn needs to have said
_FILLER = frozenset({
    "the", "a", "an", "is", "are", "was", "were", "be", "has", "have", "had", "of", "in", "at",
    "on", "to", "for", "from", "and", "or", "with", "by", "as", "s", "user", "their", "they",
    "them", "themself", "themselves", "who", "that", "which", "called", "named",
})  # fmt: skip


class Unusable(Exception):
    """The LLM's answer cannot be used; `reason` says why in a few words, for the log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Answer:
    """The text of a chat answer and the model that wrote it."""

    text: str
    model: str


def answer_of(status: int, body: Any, asked: str) -> Answer:
    """The text of an OpenAI-style chat answer, and the model it names (else the one `asked`).
    An answer cut off at its token budget is too long to use."""
    if not 200 <= status < 300:
        raise Unusable(f"status {status}")
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise Unusable("not a chat answer") from None
    if not isinstance(text, str) or not text.strip():
        raise Unusable("empty")
    if isinstance(choice, Mapping) and choice.get("finish_reason") == "length":
        raise Unusable("too long")
    model = body.get("model")
    if not isinstance(model, str) or not 0 < len(model) <= MAX_MODEL_CHARS:
        model = asked
    return Answer(text.strip(), model)


def newest_fitting(lines: Sequence[str], budget: int) -> int:
    """How many of the last `lines` fit in `budget` characters, a newline after each."""
    used, count = 0, 0
    for line in reversed(lines):
        used += len(line) + 1
        if used > budget:
            break
        count += 1
    return count


# -- summaries -------------------------------------------------------------------------------


def summary_request(
    turns: Sequence[Turn], user_name: str | None, policy: ConsolidationPolicy, model: str
) -> dict[str, Any] | None:
    """The chat request for a session's summary: its newest user and assistant turns that fit
    `llm_input_chars`; None when none does. It asks for two thirds of `summary_chars`, so an
    answer a little longer than asked still fits."""
    spoken = [t for t in turns if t.role in (Role.USER, Role.ASSISTANT) and t.content.strip()]
    lines = [f"{t.speaker or t.role.value}: {shortened(t.content, TURN_CHARS)}" for t in spoken]
    shown = newest_fitting(lines, policy.llm_input_chars)
    if shown == 0:
        return None
    subject = user_name or "the user"
    instructions = (
        "You summarise a conversation between a user and an assistant, for the assistant to "
        "recall in later conversations. Write plain text, no lists or headings, in the third "
        f"person (call the user {subject}), at most {policy.summary_chars * 2 // 3} "
        "characters: what was talked about, and what the user said of themself, decided or "
        "asked for. Say nothing the conversation does not say. Answer with the summary only."
    )
    conversation = "The conversation, oldest turn first:\n\n" + "\n".join(lines[-shown:])
    return {
        "model": model,
        "messages": [{"role": "system", "content": instructions},
                     {"role": "user", "content": conversation}],
        "max_tokens": SUMMARY_TOKENS,
        "temperature": 0,
    }  # fmt: skip


def summary_of(answer: Answer, policy: ConsolidationPolicy) -> Summary:
    """The answer as a session summary: not empty, within `summary_chars`."""
    text = answer.text.strip()
    if len(text) > policy.summary_chars:
        raise Unusable("too long")
    return Summary(text, answer.model)


# -- facts -----------------------------------------------------------------------------------


def numbered_lines(turns: Sequence[Turn]) -> list[str]:
    """The turns as the LLM reads them for facts: "[1] ...", each on one line."""
    return [f"[{n}] {' '.join(t.content.split())}" for n, t in enumerate(turns, 1)]


def facts_request(
    turns: Sequence[Turn], user_name: str | None, model: str, *, json_mode: bool
) -> dict[str, Any]:
    """The chat request for the facts the user states in `turns`, numbered from 1. JSON is
    asked for in words; `json_mode` also asks for it as `response_format`, which not every
    endpoint takes."""
    subject = user_name or "The user"
    instructions = (
        "You read what a user said to an assistant and list the facts the user plainly states "
        "about themself that are worth remembering in later conversations: name, home, work, "
        "family, pets, health, diet, likes and dislikes, important dates. Leave out questions, "
        "plans, wishes, hypotheticals, jokes, what is said about other people, and anything "
        "you would have to infer.\n"
        "Answer with JSON only, an object of this shape:\n"
        '{"facts": [{"text": "...", "category": "...", "slot": "..." or null, "turns": [1]}]}\n'
        f'- text: one short sentence in the third person that starts with "{subject}" (e.g. '
        f'"{subject} lives in Boston"), at most {MAX_FACT_CHARS} characters, using the '
        "user's own words for names, places and numbers.\n"
        f"- category: one of {', '.join(CATEGORIES)}.\n"
        "- slot: what the fact is the one value of, when a person has one at a time: name, "
        "home, hometown, birthday, age, employer, job, diet, spouse, partner, mother, father, "
        '"favourite <thing>", "feelings about <thing>"; null for facts that accumulate '
        "(allergies, siblings, children, pets, hobbies).\n"
        "- turns: the numbers of the user's turns the fact comes from.\n"
        f'At most {MAX_FACTS} facts; {{"facts": []}} when there are none.'
    )
    numbered = "\n".join(numbered_lines(turns))
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "system", "content": instructions},
                     {"role": "user", "content": "The user's turns, oldest first:\n\n" + numbered}],
        "max_tokens": FACTS_TOKENS,
        "temperature": 0,
    }  # fmt: skip
    if json_mode:
        body["response_format"] = {"type": "json_object"}
    return body


def facts_of(answer: Answer, turns: Sequence[Turn], user_name: str | None) -> list[ExtractedFact]:
    """The facts of a JSON answer about `turns` (numbered from 1), each checked (`fact_of`);
    any that fails, or an answer of another shape or with more than `MAX_FACTS`, fails it."""
    fenced = _FENCE.fullmatch(answer.text)
    try:
        data = json.loads(fenced.group(1) if fenced else answer.text)
    except ValueError:
        raise Unusable("not JSON") from None
    items = data.get("facts") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise Unusable("not the JSON asked for")
    if len(items) > MAX_FACTS:
        raise Unusable("too many facts")
    return [fact_of(item, turns, user_name, answer.model) for item in items]


def fact_of(item: Any, turns: Sequence[Turn], user_name: str | None, model: str) -> ExtractedFact:
    """One fact of the answer, if it is one: its text a sentence about the user of at most
    `MAX_FACT_CHARS`, a known category, a slot or null, and the turns it cites shown and
    saying what it says (`grounded`)."""
    if not isinstance(item, dict):
        raise Unusable("not the JSON asked for")
    text, category, slot, cited = (item.get(k) for k in ("text", "category", "slot", "turns"))
    if not isinstance(text, str) or not isinstance(category, str):
        raise Unusable("not the JSON asked for")
    text = " ".join(text.split())
    if not text or len(text) > MAX_FACT_CHARS:
        raise Unusable("fact too long")
    if category.strip().lower() not in CATEGORIES:
        raise Unusable("unknown category")
    if slot is not None and not (isinstance(slot, str) and 0 < len(slot_key(slot)) <= MAX_SLOT):
        raise Unusable("bad slot")
    sources = cited_turns(cited, turns)
    rest = after_subject(text, user_name)
    if rest is None:
        raise Unusable("not about the user")
    if not grounded(rest, " ".join(t.content for t in sources)):
        raise Unusable("not grounded")
    *earlier, last = sources
    return ExtractedFact(
        text, category.strip().lower(), None if slot is None else slot_key(slot), last.id,
        last.created_at, tuple(t.id for t in earlier), model,
    )  # fmt: skip


def cited_turns(cited: Any, turns: Sequence[Turn]) -> list[Turn]:
    """The turns a fact cites by number, in their order; a number not shown fails it."""
    if not isinstance(cited, list) or not cited:
        raise Unusable("no turns cited")
    numbers = set()
    for number in cited:
        if isinstance(number, bool) or not isinstance(number, int):
            raise Unusable("unknown turn")
        if not 1 <= number <= len(turns):
            raise Unusable("unknown turn")
        numbers.add(number)
    return [turns[n - 1] for n in sorted(numbers)]


def after_subject(text: str, user_name: str | None) -> str | None:
    """What a fact says after its subject ("The user", or the user's name, possessive or not),
    or None when it does not start with one."""
    folded = text.casefold()
    for subject in filter(None, ("the user", user_name and user_name.casefold())):
        if folded.startswith(subject) and not folded[len(subject) : len(subject) + 1].isalnum():
            return text[len(subject) :]
    return None


def grounded(said_of_user: str, cited: str) -> bool:
    """Whether a fact (as said of the user, its subject set aside) stays within the turns it
    cites: every name and number in it (a word with a capital or a digit) is in them, and at
    least one of its words is, to its first four letters ("lives" meets "live"). Paraphrase
    passes; a place, a person or a number the user did not say does not."""
    said = {w.casefold() for w in _WORD.findall(plain(cited))}
    stems = {w[:4] for w in said}
    words = [w for w in _WORD.findall(plain(said_of_user)) if w.casefold() not in _FILLER]
    if not words:
        return False
    for word in words:
        if (word[0].isupper() or any(c.isdigit() for c in word)) and word.casefold() not in said:
            return False
    return any(w.casefold()[:4] in stems for w in words)


# -- the reader ------------------------------------------------------------------------------


class LlmReader:
    """Summaries and facts by the LLM at one endpoint, for one run; the rules wherever it fails
    (the module's docstring says when). `SessionReader`."""

    def __init__(self, client: BlockingLlmClient, model: str) -> None:
        self.client = client
        self.model = model
        self.json_mode = True  # until the endpoint refuses `response_format`

    def summary(
        self, turns: Sequence[Turn], user_name: str | None, policy: ConsolidationPolicy
    ) -> Summary | None:
        rules = RULES.summary(turns, user_name, policy)
        request = summary_request(turns, user_name, policy, self.model)
        if rules is None or request is None:  # too little to summarise: no request either
            return rules
        try:
            return summary_of(self._ask(request), policy)
        except (Unusable, LlmUnreachable) as exc:
            log.warning("LLM summary not used (%s): the extractive summary stands", reason(exc))
            return rules

    def facts(
        self, turns: Sequence[Turn], user_name: str | None, policy: ConsolidationPolicy
    ) -> list[ExtractedFact]:
        said = [t for t in turns if spoken_by_user(t, user_name) and t.content.strip()]
        shown = newest_fitting(numbered_lines(said), policy.llm_input_chars)
        older, window = said[: len(said) - shown], said[len(said) - shown :]
        facts = extract_facts(older, user_name)
        if not window:
            return facts
        try:
            return facts + self._facts_of(window, user_name)
        except (Unusable, LlmUnreachable) as exc:
            log.warning("LLM facts not used (%s): the rules read the session", reason(exc))
            return facts + extract_facts(window, user_name)

    def _facts_of(self, turns: Sequence[Turn], user_name: str | None) -> list[ExtractedFact]:
        """The LLM's facts; asked again without `response_format` if the endpoint refuses it."""
        request = facts_request(turns, user_name, self.model, json_mode=self.json_mode)
        try:
            return facts_of(self._ask(request), turns, user_name)
        except Unusable as exc:
            if not (self.json_mode and exc.reason in _REFUSED_FORMAT):
                raise
        self.json_mode = False
        request = facts_request(turns, user_name, self.model, json_mode=False)
        return facts_of(self._ask(request), turns, user_name)

    def _ask(self, request: Mapping[str, Any]) -> Answer:
        status, body = self.client.chat(request)
        return answer_of(status, body, self.model)


def reason(exc: Unusable | LlmUnreachable) -> str:
    """Why an answer was not used, in words that hold nothing the user or the LLM said."""
    return exc.reason if isinstance(exc, Unusable) else "no answer"


@contextmanager
def session_reader(settings: Settings, policy: ConsolidationPolicy) -> Iterator[SessionReader]:
    """The reader of one consolidation run: the LLM when the policy allows it and one is
    configured (`llm_url` and `llm_model`), its connections closed at the end; else the rules."""
    endpoint = LlmEndpoint.from_settings(settings)
    if not policy.llm or endpoint is None or settings.llm_model is None:
        yield RULES
        return
    with BlockingLlmClient(endpoint) as client:
        yield LlmReader(client, settings.llm_model)
