"""Replay evaluation cases into a fresh vault and measure what search and context bring back.

Each case becomes one user: its sessions are appended in order, every turn dated with its
session's date and carrying its source turn id in metadata. Each question is then asked with
`now` set to its date (or the last session's date when it has none), in three modes (hybrid,
BM25 only, dense only) and through context assembly at two token budgets. No LLM is called.

A session is written in one call by default. `replay="turns"` writes each turn in its own call
and tops the user's index up after every one, as a chat does that recalls on each turn: what
users of a live index get, which must score as the same data written in one go.

Turns are written with their speakers' names by default (`speakers="named"`). An assistant's
chat gives only roles: `speakers="roles"` writes the case's first speaker as the user (role
"user", no speaker), named by their profile, and the other as an agent of theirs (role
"assistant", the agent's id), named by the agent's name, so that a question about either by
name still finds their turns (`retrieval.index.People`); `"unnamed"` is the same without the
names, the baseline for it.

Questions name the speakers as the dataset writes them (`asked="names"`). An agent asks its
memory about "the user" as often as about Alice: `asked="roles"` asks each question with the
first speaker's name as "the user" and the others' as "the assistant". A chat's user asks in
the first person: `asked="user"` asks it as the first speaker would ("What did I research?",
"When did you paint a sunrise?"), and says so (`asked_by="user"`); `asked="assistant"` as the
other would, as an agent writes its own query. Where the turns name their speakers, the asker
is said by name (`asked_by="Caroline"`), as in a group chat, whose humans all give the role
"user".
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tqdm import tqdm

from memvault.config import Settings
from memvault.errors import Invalid
from memvault.evals.dataset import Case
from memvault.evals.metrics import Tally, percentiles_ms
from memvault.retrieval.embed import Embedder
from memvault.retrieval.fusion import MODES, Weights
from memvault.vault import Vault

SOURCE_ID = "source_turn_id"
CONTEXT_BUDGETS = (1000, 2000)
SEARCH_LIMIT = 20
REPLAYS = ("sessions", "turns")
SPEAKERS = ("named", "roles", "unnamed")


@dataclass
class Run:
    """Accumulates one evaluation run across cases."""

    tallies: dict[str, Tally] = field(default_factory=lambda: {m: Tally() for m in MODES})
    latencies: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in MODES})
    context_latencies: list[float] = field(default_factory=list)
    build_seconds: list[float] = field(default_factory=list)
    turns: int = 0

    def report(self) -> dict[str, Any]:
        return {
            "modes": {mode: tally.summary() for mode, tally in self.tallies.items()},
            "latency_ms": {mode: percentiles_ms(v) for mode, v in self.latencies.items()},
            "context_latency_ms": percentiles_ms(self.context_latencies),
            "index_build_seconds": round(sum(self.build_seconds), 2),
            "turns": self.turns,
        }


def replay_case(
    vault: Vault, user_id: str, case: Case, *, by_turn: bool = False, speakers: str = "named"
) -> dict[str, str]:
    """Append the case's sessions to `user_id`, a session a call or (`by_turn`) a turn a call
    with the index topped up after each, the speakers as `speakers` says (see the module's
    doc); return vault turn id -> source turn id."""
    source_of: dict[str, str] = {}
    who = _speakers(vault, user_id, _speaker_names(case), speakers)
    for session in case.sessions:
        rows = [
            {
                **who[turn.speaker],
                "content": turn.text,
                "channel": "general",
                "created_at": session.date,
                "metadata": {SOURCE_ID: turn.turn_id}
                | ({"image_caption": turn.image_caption} if turn.image_caption else {}),
            }
            for turn in session.turns
        ]
        try:
            for batch in [[row] for row in rows] if by_turn else [rows]:
                stored = vault.add_turns(user_id, session.session_id, batch)
                source_of |= {turn.id: turn_source(turn.metadata) for turn in stored}
                if by_turn:
                    vault.recall.cache.get(user_id, vault.store.revision(user_id))
        except Invalid as exc:  # a limit of the store's: say where in the dataset it was met
            where = f"case {case.case_id!r}, session {session.session_id!r}"
            raise Invalid("dataset", f"{where}: {exc}") from None
    return source_of


def _speaker_names(case: Case) -> list[str]:
    """The case's speakers in the order they first speak: the first is taken as the user."""
    return list(dict.fromkeys(turn.speaker for s in case.sessions for turn in s.turns))


def _speakers(
    vault: Vault, user_id: str, names: list[str], speakers: str
) -> dict[str, dict[str, str]]:
    """By speaker's name, who their turns say spoke, as `speakers` says (see the module doc);
    with `"roles"`, the user's profile and the agents that name them are written first."""
    if speakers == "named":
        return {name: {"role": "user", "speaker": name} for name in names}
    if not names:
        return {}
    user, others = names[0], names[1:]
    who = {user: {"role": "user"}} | {name: {"role": "assistant"} for name in others}
    if speakers == "roles":
        vault.put_user(user_id, {"name": user})
        for name in others:
            who[name]["agent_id"] = vault.register_agent(user_id, name).id
    return who


def turn_source(metadata: dict[str, Any]) -> str:
    return str(metadata.get(SOURCE_ID, ""))


def _as_roles(names: list[str]) -> Callable[[str], str]:
    """A question with the first speaker's name as "the user" and the others' as "the
    assistant" (possessives kept: "Nate's" is "the assistant's")."""
    roles = {name: "the user" if n == 0 else "the assistant" for n, name in enumerate(names)}
    pattern = _naming(names)
    return lambda text: pattern.sub(
        lambda match: roles[match.group(1)] + (match.group(2) or ""), text
    )


# after these a name is its clause's subject ("What did Caroline ...", "When Caroline ...")
_BEFORE_SUBJECT = frozenset(
    """did does do is was has have had will would can could should might when where why how
    what who which and""".split()  # noqa: SIM905 (a word list reads better as prose)
)
_AGREEMENT = [
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"\b([Dd])oes (I|you)\b", r"\1o \2"),
        (r"\b([Hh])as (I|you)\b", r"\1ave \2"),
        (r"\b(I|you) has\b", r"\1 have"),
        (r"\bis I\b", "am I"),
        (r"\bIs I\b", "Am I"),
        (r"\bI is\b", "I am"),
        (r"\bis you\b", "are you"),
        (r"\bIs you\b", "Are you"),
        (r"\byou is\b", "you are"),
        (r"\bwas you\b", "were you"),
        (r"\bWas you\b", "Were you"),
        (r"\byou was\b", "you were"),
    )
]


def _in_person(names: list[str], askers: list[str]) -> Callable[[str], str]:
    """A question as one side asks it: the names of `askers` as "I", "me" or "my", the other
    `names` as "you" or "your", the verb agreeing (asked by Caroline, "What does Caroline like?"
    is "What do I like?" and "What did Melanie tell Caroline?" is "What did you tell me?")."""
    pattern = _naming(names)

    def person(match: re.Match[str]) -> str:
        mine = match.group(1) in askers
        if match.group(2):
            return "my" if mine else "your"
        if not mine:
            return "you"
        before = match.string[: match.start()].split()
        return "I" if not before or before[-1].lower() in _BEFORE_SUBJECT else "me"

    def asked(text: str) -> str:
        text = pattern.sub(person, text)
        for agreement, replacement in _AGREEMENT:
            text = agreement.sub(replacement, text)
        return text

    return asked


def _naming(names: list[str]) -> re.Pattern[str]:
    """Any of `names` as a whole word (group 1), with its possessive "'s" if it has one (group
    2); with no names, a pattern that matches nothing."""
    if not names:
        return re.compile(r"(?!)()()")
    return re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")(['\u2019]s)?\b")


# how each `asked` value words a case's questions, given its speakers' names
_ASKING: dict[str, Callable[[list[str]], Callable[[str], str]]] = {
    "names": lambda names: str,
    "roles": _as_roles,
    # as the user (the first speaker) asks, or the assistant (the others)
    "user": lambda names: _in_person(names, names[:1]),
    "assistant": lambda names: _in_person(names, names[1:]),
}


def _asker(asked: str, speakers: str, names: list[str]) -> str | None:
    """Who asks questions asked in the first person (`asked` "user" or "assistant"), as the
    search is told: the side where the turns give roles, the speaker's name where they name
    their speakers (None when more than one speaker would be asking)."""
    if asked not in ("user", "assistant"):
        return None
    if speakers != "named":
        return asked
    askers = names[:1] if asked == "user" else names[1:]
    return askers[0] if len(askers) == 1 else None


def evaluate_case(
    vault: Vault,
    case: Case,
    run: Run,
    *,
    by_turn: bool = False,
    speakers: str = "named",
    asked: str = "names",
) -> None:
    """Replay one case into its own user and score every recall question against it."""
    user_id = f"eval-{case.case_id}"
    source_of = replay_case(vault, user_id, case, by_turn=by_turn, speakers=speakers)
    run.turns += len(source_of)
    started = time.perf_counter()
    vault.recall.cache.get(user_id, vault.store.revision(user_id))
    run.build_seconds.append(time.perf_counter() - started)
    names = _speaker_names(case)
    as_asked = _ASKING[asked](names)
    asked_by = _asker(asked, speakers, names)
    for question in case.questions:
        if not question.scored:
            continue
        now = question.date or case.last_date
        text = as_asked(question.question)
        for mode in MODES:
            started = time.perf_counter()
            hits = vault.search(
                user_id, text, limit=SEARCH_LIMIT, now=now,
                weights=Weights.for_mode(mode), record_access=False, asked_by=asked_by,
            )  # fmt: skip
            run.latencies[mode].append(time.perf_counter() - started)
            ranked = [source_of.get(h.id, "") for h in hits if h.type == "turn"]
            extra = None
            if mode == "hybrid":
                extra = _context_recall(
                    vault, user_id, text, question.evidence, now=now, source_of=source_of,
                    run=run, asked_by=asked_by,
                )  # fmt: skip
            run.tallies[mode].add(question.category, ranked, question.evidence, extra)


def _context_recall(
    vault: Vault,
    user_id: str,
    text: str,
    evidence: Iterable[str],
    *,
    now: datetime,
    source_of: dict[str, str],
    run: Run,
    asked_by: str | None,
) -> dict[str, float]:
    """Share of the evidence that reaches the assembled context at each token budget, and the
    tokens the context spent of it."""
    scores = {}
    for budget in CONTEXT_BUDGETS:
        started = time.perf_counter()
        context = vault.context(user_id, text, token_budget=budget, now=now, asked_by=asked_by)
        run.context_latencies.append(time.perf_counter() - started)
        included = {source_of.get(i.id, "") for i in context.items if i.type == "turn"}
        wanted = set(evidence)
        scores[f"context_recall@{budget}"] = len(wanted & included) / len(wanted)
        scores[f"context_tokens@{budget}"] = context.tokens
    return scores


def evaluate(
    cases: Iterable[Case],
    *,
    embedder: Embedder | None = None,
    progress: bool = True,
    replay: str = "sessions",
    speakers: str = "named",
    asked: str = "names",
) -> dict[str, Any]:
    """Run the whole evaluation in a temporary vault and return the report. `replay` is how
    turns are written: a session a call (`sessions`) or a turn a call (`turns`); `speakers`
    is how they say who spoke, and `asked` how the questions name them (see the module's
    doc)."""
    if replay not in REPLAYS:
        raise Invalid("replay", f"unknown value; expected one of: {', '.join(REPLAYS)}")
    if speakers not in SPEAKERS:
        raise Invalid("speakers", f"unknown value; expected one of: {', '.join(SPEAKERS)}")
    if asked not in _ASKING:
        raise Invalid("asked", f"unknown value; expected one of: {', '.join(_ASKING)}")
    run = Run()
    case_list = list(cases)  # the whole file is read, and checked, before anything is replayed
    if not any(q.scored for case in case_list for q in case.questions):
        raise Invalid("dataset", "no question to score (categories 1 to 4, with evidence turns)")
    with tempfile.TemporaryDirectory(prefix="memvault-eval-") as folder:
        # no background top-ups: the index build is timed on its own, after each replay, and
        # a case's vectors are embedded in one call whatever the machine's timing
        vault = Vault(folder, settings=Settings(warm_indexes=False), embedder=embedder)
        try:
            for case in tqdm(case_list, desc="cases", unit="case", disable=not progress):
                evaluate_case(
                    vault, case, run, by_turn=replay == "turns", speakers=speakers, asked=asked
                )
        finally:
            vault.close()
    report = run.report()
    report["cases"] = len(case_list)
    report["replay"] = replay
    report["speakers"] = speakers
    report["asked"] = asked
    report["embedder"] = vault.recall.cache.embedder.name
    return report
