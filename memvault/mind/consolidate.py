"""Consolidation: the rules that move a user's memories along their life and summarise sessions.

Every decision here is a pure function of plain values (memories, sessions, turns, a moment and
a `ConsolidationPolicy`): the same input gives the same plan, and nothing here reads or writes
the store. `Vault.consolidate` reads, asks these functions what to do, and applies the answer
through its ordinary operations, so every change is kept in history and announced as any other.

The rules, in the order they are applied to one memory:

1. Duplicates: current memories of one owner (agent), one kind (and one category, for facts)
   whose texts are equal once case, white space and punctuation are set aside are one memory.
   The newest stays; the others are superseded by it (kept, closed, pointing to it). It takes
   the group's highest importance, its pin, and its most settled tier, and its use counts as the
   sum of theirs: the older rows keep their own counts, and `uses` reads them back through
   `superseded_by`, so no recall is lost and a second run decides as the first did.
2. Expiry: a memory past its `expires_at` goes to the archive, whatever else it is: the writer
   said when it stops holding.
3. Promotion: a working memory recalled `promote_uses` times, or of importance at least
   `promote_importance`, or pinned, moves to long term.
4. Unused working memory: one that has waited `working_retention` and was never recalled goes
   to the archive.
5. Decay: a long-term memory's importance, as the rules read it, halves every `half_life` since
   its last recall (or creation), that half-life growing with each recall; under `decay_floor`
   it goes to the archive. The stored importance is not rewritten: a rewritten one would decay
   again from the same last recall at every run, so the result would depend on how often
   consolidation ran.

Before the duplicates, contradictions: among the current facts of one owner that name the same
`slot` in their metadata (what the fact is the one value of: "home", "employer", "age"), taken
in the order they became true (`valid_from`, else creation), each is superseded by the next,
its validity closed where the next starts, so the newest stays and the history reads as it
happened. They come first so that a value said again after another ("Boston", "Denver", then
"Boston") is a return, each statement holding until the next, not a duplicate of the first
held until the run. Extracted facts carry a slot, and so may any a caller writes.

Pinned memories and current facts (kind `fact`, not superseded) are spared by rules 4 and 5: a
fact holds until a newer one supersedes it, however long nobody asks about it. A memory already
in the archive stays there (a recall does not bring it back; a caller may move it). Superseded
memories are history and are not touched.

Sessions: one that has been idle for `session_idle`, with at least `summary_min_turns` turns,
and whose summary is missing or was written before its last turn, gets an extractive summary.
An idle session whose user turns have not all been read gets its facts extracted
(`memvault.mind.extract`); the facts that say something the user's current facts do not
(`FactLedger`) are added as memories of kind `fact`, before the rules above run over them.
Who writes the summary and reads the facts is a `SessionReader`: these rules (`RULES`), or an
LLM that falls back on them (`memvault.mind.llm_reader`), asked before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from typing import Any, Protocol

from memvault import validate as v
from memvault.errors import Invalid
from memvault.mind.extract import (
    SLOT,
    ExtractedFact,
    extract_facts,
    extracted_through,
    extraction_metadata,
    unread_turns,
)
from memvault.model import Memory, MemoryKind, Role, Session, Tier, Turn, to_jsonable
from memvault.retrieval.cues import turn_salience

# how settled each tier is: a merged memory keeps the most settled of its duplicates' tiers
_SETTLED = {Tier.ARCHIVE: 0, Tier.WORKING: 1, Tier.LONG_TERM: 2}
SUMMARISED_TURNS = "summarised_turns"  # session metadata: the turns a summary written here covers
SUMMARY_MODEL = "summary_model"  # session metadata: the LLM that wrote the summary (none: rules)
SUMMARY_NOTES = (SUMMARISED_TURNS, SUMMARY_MODEL)  # what goes when a summary is taken away
_SPOKEN = (Role.USER, Role.ASSISTANT)  # system prompts and tool output are not the conversation
MAX_POLICY_COUNT = 1_000_000  # the most a policy's counts and lengths may be


@dataclass(frozen=True, slots=True)
class ConsolidationPolicy:
    """The thresholds of consolidation. The defaults are meant to be sensible, not tuned:

    - `promote_uses` (3) and `promote_importance` (0.7): a working memory recalled three times,
      or that its writer rated important, has shown it is worth keeping.
    - `working_retention` (7 days): long enough for a memory of this week's conversations to be
      recalled at least once if it ever will be.
    - `half_life` (90 days) and `decay_floor` (0.05): a memory of the default importance 0.5,
      never recalled, reaches the floor after about ten months (log2(10) half-lives); each
      recall adds one more half-life to its span.
    - `session_idle` (30 minutes): a conversation nobody has added to for half an hour is
      probably over, so its summary will not be stale at once.
    - `summary_min_turns` (4), `summary_share` (0.5), `summary_chars` (600),
      `summary_turn_chars` (160): a few turns need no summary; a summary keeps the more salient
      half of the turns at most, as a handful of short lines, cheap in any prompt.
    - `extract_facts` (True): read the facts users state of themselves from their turns. Off,
      no session is read for facts; contradictions among the facts stored are still resolved.
    - `llm` (True): when an LLM is configured (`llm_url` and `llm_model`), it writes the
      summaries and reads the facts, the rules standing in wherever it fails; off, or none
      configured, the rules do it all.
    - `llm_input_chars` (12,000, about 3,000 tokens): the most of a session's text one request
      to the LLM carries, so any model with an 8k context has room for the instructions and
      the answer; the newest turns that fit go, the older ones are left to the rules.
    """

    promote_uses: int = 3
    promote_importance: float = 0.7
    working_retention: timedelta = timedelta(days=7)
    half_life: timedelta = timedelta(days=90)
    decay_floor: float = 0.05
    session_idle: timedelta = timedelta(minutes=30)
    summary_min_turns: int = 4
    summary_share: float = 0.5
    summary_chars: int = 600
    summary_turn_chars: int = 160
    extract_facts: bool = True
    llm: bool = True
    llm_input_chars: int = 12_000

    def __post_init__(self) -> None:
        v.check_bool("policy.extract_facts", self.extract_facts)
        v.check_bool("policy.llm", self.llm)
        for name in ("promote_uses", "summary_min_turns", "summary_chars", "summary_turn_chars",
                     "llm_input_chars"):  # fmt: skip
            v.check_limit(f"policy.{name}", getattr(self, name), MAX_POLICY_COUNT)
        for name in ("promote_importance", "decay_floor", "summary_share"):
            v.check_number(f"policy.{name}", getattr(self, name), 0, 1)
        for name in ("working_retention", "half_life", "session_idle"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value <= timedelta(0):
                raise Invalid(f"policy.{name}", "must be a positive timedelta")


# -- what a run did --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Merge:
    """Duplicates made one: `merged` are superseded by `survivor`, oldest first."""

    survivor: str
    merged: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Supersession:
    """Facts of one slot replaced: `older` are superseded by `newer`, oldest first."""

    newer: str
    older: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TierMove:
    """A memory moved to `tier` for `reason` (promoted, unused, decayed, expired)."""

    memory_id: str
    tier: Tier
    reason: str


@dataclass(frozen=True, slots=True)
class ConsolidationReport:
    """What one run changed, as ids per action. Empty lists: nothing to do."""

    user_id: str
    now: datetime
    merged: tuple[Merge, ...] = ()
    promoted: tuple[str, ...] = ()  # working to long_term
    archived_unused: tuple[str, ...] = ()  # working, never recalled, to archive
    archived_decayed: tuple[str, ...] = ()  # long_term (or promoted) to archive by decay
    archived_expired: tuple[str, ...] = ()  # past expires_at, to archive
    summarised: tuple[str, ...] = ()  # session ids given a new summary
    extracted: tuple[str, ...] = ()  # ids of the facts extracted from turns, added as memories
    superseded: tuple[Supersession, ...] = ()  # facts replaced by a newer one of their slot
    # written or deleted by someone else since the run read them: left for the next run to judge
    skipped: tuple[str, ...] = ()  # memory ids
    # session ids: as `skipped`, or whose summary does not fit this deployment's limits
    # (`max_content_bytes`, or `max_json_bytes` for its metadata with the note of its turns)
    skipped_sessions: tuple[str, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        return {
            "merged": sum(len(m.merged) for m in self.merged),
            "promoted": len(self.promoted),
            "archived_unused": len(self.archived_unused),
            "archived_decayed": len(self.archived_decayed),
            "archived_expired": len(self.archived_expired),
            "summarised": len(self.summarised),
            "extracted": len(self.extracted),
            "superseded": sum(len(s.older) for s in self.superseded),
        }

    @property
    def changed(self) -> bool:
        return any(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601, with `counts` beside the ids."""
        fields = {f.name: to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {**fields, "counts": self.counts}


# -- duplicates ------------------------------------------------------------------------------


def normalised(text: str) -> str:
    """The text with case, white space and punctuation set aside (NFKC first, so full-width
    and composed forms compare equal): "Likes tea." and "likes  TEA" are one text.

    Punctuation becomes a space rather than vanishing, so "well-known" meets "well known" but
    "e-mail" does not meet "email": when unsure, two texts stay two.
    """
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.translate(_PUNCTUATION_AS_SPACE).split())


class _PunctuationAsSpace(dict[int, str]):
    """A `str.translate` table that maps each punctuation character to a space and any other to
    itself, looking each character's Unicode category up once (a run normalises every
    memory's text)."""

    def __missing__(self, code: int) -> str:
        character = chr(code)
        mapped = " " if unicodedata.category(character).startswith("P") else character
        self[code] = mapped
        return mapped


_PUNCTUATION_AS_SPACE = _PunctuationAsSpace()


def duplicate_key(memory: Memory) -> tuple[str | None, str, str | None, str]:
    """What two memories must share to be one: owner, kind, category (for facts), text.

    Exact equality after `normalised`, not a cosine over embeddings. Measured with MiniLM, the
    search's model: "is allergic to peanuts" / "is not allergic to peanuts" 0.983, "moved to
    Austin in 2012" / "... in 2021" 0.964, "has two cats" / "has three cats" 0.960, while the
    true paraphrase "likes tea" / "enjoys tea" is 0.953. Contradictions score above paraphrases,
    so no threshold merges the one and spares the other; a false merge replaces a statement with
    another, a missed one only repeats a line. Only texts equal in every word merge.
    The owner is part of the key because an agent's memories are visible to that agent only.
    """
    category = memory.category if memory.kind is MemoryKind.FACT else None
    return (memory.agent_id, memory.kind.value, category, normalised(memory.text))


def _expired(memory: Memory, now: datetime) -> bool:
    return memory.expires_at is not None and memory.expires_at <= now


def find_duplicates(memories: Iterable[Memory], now: datetime) -> list[Merge]:
    """Groups of current, unexpired memories with one `duplicate_key`: the newest survives
    (by creation, then id, which is time-ordered), the others are merged into it."""
    groups: dict[tuple[str | None, str, str | None, str], list[Memory]] = {}
    for memory in memories:
        if memory.superseded_by is None and not _expired(memory, now):
            groups.setdefault(duplicate_key(memory), []).append(memory)
    merges = []
    for group in groups.values():
        if len(group) > 1:
            group.sort(key=lambda m: (m.created_at, m.id))
            merges.append(Merge(group[-1].id, tuple(m.id for m in group[:-1])))
    merges.sort(key=lambda m: m.survivor)
    return merges


def merged_survivor(survivor: Memory, merged: Sequence[Memory]) -> Memory:
    """The survivor as it stands for the group: the highest importance, pinned if any was, and
    the most settled tier (a long-term memory said again is not new to working memory)."""
    group = [survivor, *merged]
    return dataclasses.replace(
        survivor,
        importance=max(m.importance for m in group),
        pinned=any(m.pinned for m in group),
        tier=max((m.tier for m in group), key=_SETTLED.__getitem__),
    )


def merged_end(memory: Memory, now: datetime) -> datetime:
    """Where the validity of a duplicate merged at `now` ends: now, as a supersede closes it,
    but never before it starts (one valid only from later on ends where it starts), nor after
    an end it already had (a statement that had stopped holding is not made to hold until now).
    """
    if memory.valid_to is not None and memory.valid_to <= now:
        return memory.valid_to
    if memory.valid_from is not None and memory.valid_from > now:
        return memory.valid_from
    return now


@dataclass(frozen=True, slots=True)
class Use:
    """How much a memory was recalled: its own count and those of the duplicates merged into it."""

    count: int
    last: datetime | None


def uses(memory: Memory, by_id: Mapping[str, Memory], merged_into: Mapping[str, list[str]]) -> Use:
    """The recalls of `memory` and of every duplicate that was merged into it, at any depth.

    Only predecessors with the same `duplicate_key` count: a fact superseded because it changed
    ("works at Acme" by "works at Initech") was recalled as the old statement, not this one.
    """
    key = duplicate_key(memory)
    count, last = 0, None
    stack, seen = [memory], {memory.id}
    while stack:
        current = stack.pop()
        count += current.access_count
        if current.last_accessed_at is not None and (
            last is None or current.last_accessed_at > last
        ):
            last = current.last_accessed_at
        for older_id in merged_into.get(current.id, ()):
            older = by_id[older_id]
            if older_id not in seen and duplicate_key(older) == key:
                seen.add(older_id)
                stack.append(older)
    return Use(count, last)


# -- contradictions --------------------------------------------------------------------------


def slot_of(memory: Memory) -> str | None:
    """What a fact is the one value of (its metadata's `slot`, case and spacing set aside), or
    None: not a fact, or one of a kind that accumulates."""
    slot = memory.metadata.get(SLOT)
    if memory.kind is not MemoryKind.FACT or not isinstance(slot, str):
        return None
    return slot_key(slot) or None


def slot_key(slot: str) -> str:
    """A slot as compared: "Home" and "home " are one."""
    return " ".join(slot.casefold().split())


def holds_from(memory: Memory) -> datetime:
    """When a fact became true: its `valid_from`, else when it was written down."""
    return memory.created_at if memory.valid_from is None else memory.valid_from


def find_contradictions(memories: Iterable[Memory], now: datetime) -> list[Supersession]:
    """Current, unexpired facts of one owner with one slot, in the order they became true (by
    `holds_from`, then creation, then id): each is superseded by the next, so the newest stays
    and the history reads as it happened ("Boston", "Denver", then "Boston" again: the first
    holds until Denver, Denver until the return). A fact that holds only from later than `now`
    takes no part yet: the one it will replace still holds until then."""
    groups: dict[tuple[str | None, str], list[Memory]] = {}
    for memory in memories:
        slot = slot_of(memory)
        if (
            slot is not None
            and memory.superseded_by is None
            and not _expired(memory, now)
            and holds_from(memory) <= now
        ):
            groups.setdefault((memory.agent_id, slot), []).append(memory)
    found = []
    for group in groups.values():
        group.sort(key=lambda m: (holds_from(m), m.created_at, m.id))
        found += [Supersession(newer.id, (older.id,)) for older, newer in pairwise(group)]
    found.sort(key=lambda s: s.newer)
    return found


class FactLedger:
    """What the user's current facts say, kept through a run as its sessions' facts are added:
    `news` tells which extracted facts say something new. Built once per run, so the user's
    facts are read (and their texts normalised) once, not once for every session read.

    One said again ("I live in Boston", a week after the same words) adds nothing: the fact
    stands from when it was first said. A slot's value counts as said only while it is the
    slot's newest: "Boston", "Denver", then "Boston" again is three facts. Only the user's own
    facts count (not an agent's): extracted facts are the user's."""

    def __init__(self, memories: Iterable[Memory]) -> None:
        # by slot (or by text, for facts that accumulate): when its newest fact became true,
        # and what that fact says
        self._latest: dict[tuple[str | None, ...], tuple[datetime, tuple[str | None, str]]] = {}
        standing = [
            m for m in memories
            if m.kind is MemoryKind.FACT and m.agent_id is None and m.superseded_by is None
        ]  # fmt: skip
        for memory in sorted(standing, key=lambda m: (holds_from(m), m.created_at, m.id)):
            key = (memory.category, normalised(memory.text))
            self._note(_place(slot_of(memory), key), holds_from(memory), key)

    def news(self, facts: Iterable[ExtractedFact]) -> list[ExtractedFact]:
        """The facts that say something the ledger does not, in the order said; they are in
        the ledger from then on."""
        fresh = []
        for fact in sorted(facts, key=lambda f: f.said_at):
            key = (fact.category, normalised(fact.text))
            if self._note(_place(fact.slot, key), fact.said_at, key):
                fresh.append(fact)
        return fresh

    def _note(
        self, place: tuple[str | None, ...], when: datetime, key: tuple[str | None, str]
    ) -> bool:
        """Record `key` at `place` if it is the newest there; whether it was news."""
        held = self._latest.get(place)
        if held is not None and held[1] == key:
            return False
        if held is None or held[0] <= when:
            self._latest[place] = (when, key)
        return True


def _place(slot: str | None, key: tuple[str | None, str]) -> tuple[str | None, ...]:
    return ("slot", slot_key(slot)) if slot is not None else ("text", *key)


# -- tiers -----------------------------------------------------------------------------------


def decayed_importance(
    importance: float, idle: timedelta, uses: int, policy: ConsolidationPolicy
) -> float:
    """`importance` halved for every half-life of `idle` time, the half-life scaled by
    1 + `uses`: a memory recalled twice fades three times slower than one never recalled.

    Divided as numbers, not by a scaled timedelta: a half-life of 90 days times twelve million
    recalls is past the largest timedelta, and would stop the run with an OverflowError."""
    half_lives = max(idle, timedelta(0)) / policy.half_life / (1 + uses)
    return float(importance * 0.5**half_lives)


def should_promote(memory: Memory, use: Use, policy: ConsolidationPolicy) -> bool:
    return (
        memory.pinned
        or use.count >= policy.promote_uses
        or memory.importance >= policy.promote_importance
    )


def spared(memory: Memory) -> bool:
    """Never archived for want of use: pinned memories and current facts."""
    return memory.pinned or (memory.kind is MemoryKind.FACT and memory.superseded_by is None)


def unused_too_long(memory: Memory, use: Use, now: datetime, policy: ConsolidationPolicy) -> bool:
    """A working memory never recalled in `working_retention` (or more) since it was made."""
    return use.count == 0 and now - memory.created_at >= policy.working_retention


def decayed_away(memory: Memory, use: Use, now: datetime, policy: ConsolidationPolicy) -> bool:
    since = use.last or memory.created_at
    return (
        decayed_importance(memory.importance, now - since, use.count, policy) < policy.decay_floor
    )


def next_tier(
    memory: Memory, use: Use, now: datetime, policy: ConsolidationPolicy
) -> TierMove | None:
    """Where the rules put a current memory now, or None if it stays where it is.

    The rules run through in one go (a working memory promoted may also have decayed away), so
    the answer for the memory once moved is to stay: a second run right after moves nothing.
    """
    if memory.superseded_by is not None or memory.tier is Tier.ARCHIVE:
        return None
    if _expired(memory, now):
        return TierMove(memory.id, Tier.ARCHIVE, "expired")
    tier: Tier = memory.tier
    reason = ""
    if tier is Tier.WORKING:
        if should_promote(memory, use, policy):
            tier, reason = Tier.LONG_TERM, "promoted"
        elif not spared(memory) and unused_too_long(memory, use, now, policy):
            return TierMove(memory.id, Tier.ARCHIVE, "unused")
    if tier is Tier.LONG_TERM and not spared(memory) and decayed_away(memory, use, now, policy):
        tier, reason = Tier.ARCHIVE, "decayed"
    return TierMove(memory.id, tier, reason) if reason else None


# -- the plan for a user's memories ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemoryPlan:
    """What to write: merges, supersessions, the survivors' merged fields, then tier moves."""

    merges: tuple[Merge, ...] = ()
    supersessions: tuple[Supersession, ...] = ()
    survivor_fields: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    moves: tuple[TierMove, ...] = ()


def plan_memories(
    memories: Sequence[Memory], now: datetime, policy: ConsolidationPolicy
) -> MemoryPlan:
    """Every change the rules make to these memories (all of one user's, history included)."""
    by_id = {m.id: m for m in memories}
    merged_into: dict[str, list[str]] = {}
    for memory in memories:
        if memory.superseded_by is not None:
            merged_into.setdefault(memory.superseded_by, []).append(memory.id)
    # a slot's facts first, in the order they became true: a value said again after another
    # ("Boston", "Denver", "Boston") is a return, not a duplicate of the first
    supersessions = find_contradictions(memories, now)
    standing = dict(by_id)
    for supersession in supersessions:
        for old in supersession.older:
            merged_into.setdefault(supersession.newer, []).append(old)
            standing[old] = dataclasses.replace(standing[old], superseded_by=supersession.newer)
    merges = find_duplicates(standing.values(), now)
    survivor_fields: dict[str, dict[str, Any]] = {}
    for merge in merges:
        for old in merge.merged:
            merged_into.setdefault(merge.survivor, []).append(old)
            standing[old] = dataclasses.replace(by_id[old], superseded_by=merge.survivor)
        before = by_id[merge.survivor]
        after = merged_survivor(before, [by_id[old] for old in merge.merged])
        standing[merge.survivor] = after
        survivor_fields[merge.survivor] = {
            name: getattr(after, name)
            for name in ("importance", "pinned", "tier")
            if getattr(after, name) != getattr(before, name)
        }
    moves = []
    for memory in sorted(standing.values(), key=lambda m: m.id):
        move = next_tier(memory, uses(memory, standing, merged_into), now, policy)
        if move is not None:
            moves.append(move)
            survivor_fields.get(memory.id, {}).pop("tier", None)  # one write moves it
    survivor_fields = {k: fields for k, fields in survivor_fields.items() if fields}
    return MemoryPlan(tuple(merges), tuple(supersessions), survivor_fields, tuple(moves))


# -- session summaries -----------------------------------------------------------------------


def needs_summary(session: Session, now: datetime, policy: ConsolidationPolicy) -> bool:
    """Idle for `session_idle`, long enough, and its summary missing or older than its last turn.

    The session row does not stamp when its summary was written, so a summary written here
    notes how many turns it covers in the session's metadata (`SUMMARISED_TURNS`): a turn added
    since, whatever time it gives itself, makes it stale. A summary written by someone else has
    no such note; it is current when the session was updated after its last turn (`updated_at`
    moves to the moment of each append and each update). That errs towards leaving their summary
    alone: turns appended with an earlier time of their own make it look current.
    """
    if session.turn_count < policy.summary_min_turns or session.last_turn_at is None:
        return False
    if now - session.last_turn_at < policy.session_idle:
        return False
    if session.summary is None:
        return True
    covered = session.metadata.get(SUMMARISED_TURNS)
    if isinstance(covered, int) and not isinstance(covered, bool):
        return covered != session.turn_count
    return session.updated_at <= session.last_turn_at


def summary_metadata(session: Session, model: str | None = None) -> dict[str, Any]:
    """The session's metadata with the note of how many turns its new summary covers, and of
    the LLM that wrote it (`model`; None: the rules, and no note of an earlier one stays)."""
    metadata = {k: value for k, value in session.metadata.items() if k != SUMMARY_MODEL}
    metadata[SUMMARISED_TURNS] = session.turn_count
    if model is not None:
        metadata[SUMMARY_MODEL] = model
    return metadata


def needs_extraction(
    session: Session, last_seq: int, now: datetime, policy: ConsolidationPolicy
) -> bool:
    """Extraction on, turns after the last one read (`last_seq` is the session's last turn),
    and the session idle for `session_idle`: a conversation under way is read once it is over,
    as its summary is, and meanwhile its turns are in any context of the session anyway."""
    return (
        policy.extract_facts
        and session.last_turn_at is not None
        and now - session.last_turn_at >= policy.session_idle
        and extracted_through(session.metadata) < last_seq
    )


@dataclass(frozen=True, slots=True)
class Summary:
    """A session's summary and the LLM that wrote it (None: the rules)."""

    text: str
    model: str | None = None


class SessionReader(Protocol):
    """Who summarises a session and reads the user's facts in it: the rules (`RULES`), or an
    LLM (`memvault.mind.llm_reader`). Called while the run plans, before it writes."""

    def summary(
        self, turns: Sequence[Turn], user_name: str | None, policy: ConsolidationPolicy
    ) -> Summary | None:
        """The summary of a session's turns; None when they say too little for one."""
        ...

    def facts(
        self, turns: Sequence[Turn], user_name: str | None, policy: ConsolidationPolicy
    ) -> list[ExtractedFact]:
        """The facts the user states of themself in these turns (those not read yet)."""
        ...


class RuleReader:
    """The rules alone: `extractive_summary` and `extract_facts`. Pure and offline."""

    def summary(
        self, turns: Sequence[Turn], user_name: str | None, policy: ConsolidationPolicy
    ) -> Summary | None:
        text = extractive_summary(turns, policy)
        return None if text is None else Summary(text)

    def facts(
        self, turns: Sequence[Turn], user_name: str | None, policy: ConsolidationPolicy
    ) -> list[ExtractedFact]:
        return extract_facts(turns, user_name)


RULES = RuleReader()


@dataclass(frozen=True, slots=True)
class SessionPlan:
    """What a run writes to one session (a new summary or None, and its metadata with the notes
    of what was read), and the facts extracted from its turns."""

    summary: Summary | None
    metadata: Mapping[str, Any]
    facts: tuple[ExtractedFact, ...]

    def fields(self) -> dict[str, Any]:
        """The session's fields to write."""
        summary = {} if self.summary is None else {"summary": self.summary.text}
        return {**summary, "metadata": dict(self.metadata)}


def plan_session(
    session: Session,
    last_seq: int,
    user_name: str | None,
    now: datetime,
    policy: ConsolidationPolicy,
    *,
    reader: SessionReader = RULES,
) -> SessionPlan | None:
    """What the rules do with a session read with its turns (None: nothing), its summary and
    facts by `reader`. `last_seq` is the `seq` of its last turn; `user_name` the profile's,
    the subject of the facts read."""
    turns = session.turns or ()
    summary = None
    if needs_summary(session, now, policy):
        summary = reader.summary(turns, user_name, policy)
    metadata = session.metadata if summary is None else summary_metadata(session, summary.model)
    facts: list[ExtractedFact] = []
    if needs_extraction(session, last_seq, now, policy):
        facts = reader.facts(unread_turns(turns, session.metadata), user_name, policy)
        metadata = extraction_metadata(metadata, last_seq)
    if summary is None and metadata == session.metadata:
        return None
    return SessionPlan(summary, metadata, tuple(facts))


def shortened(text: str, limit: int) -> str:
    """The text on one line, cut at a word boundary to at most `limit` characters."""
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    space = line.rfind(" ", 0, limit)  # a word that ends right at the limit is kept whole
    cut = line[:space] if space > 0 else line[: limit - 1]
    return cut.rstrip(" ,;:") + "…"


def summary_line(turn: Turn, policy: ConsolidationPolicy) -> str:
    who = turn.speaker or turn.role.value
    return f"{who}: {shortened(turn.content, policy.summary_turn_chars)}"


def extractive_summary(turns: Sequence[Turn], policy: ConsolidationPolicy) -> str | None:
    """The session's most salient turns, in the order they were said, one short line each:
    at most `summary_share` of its turns (rounded up), within `summary_chars`; None when fewer
    than `summary_min_turns` turns have words.

    Salience is the search index's own reading of a turn (`retrieval.cues.turn_salience`: long,
    tells of the speaker's own doings, not a question, shares an image), measured on LoCoMo as
    what people later ask about; ties go to the earlier turn.
    """
    spoken = [t for t in turns if t.role in _SPOKEN and t.content.strip()]
    if len(spoken) < policy.summary_min_turns:
        return None

    def salience(turn: Turn) -> float:
        has_image = isinstance(turn.metadata.get("image_caption"), str)
        return turn_salience(turn.content, has_image=has_image)

    ranked = sorted(spoken, key=lambda t: (-salience(t), t.seq))
    chosen: list[tuple[int, str]] = []
    room, most = policy.summary_chars, math.ceil(len(spoken) * policy.summary_share)
    for turn in ranked:
        if len(chosen) == most:
            break
        line = summary_line(turn, policy)
        cost = len(line) + (1 if chosen else 0)  # the newline before every line but the first
        if cost <= room:
            chosen.append((turn.seq, line))
            room -= cost
    chosen.sort()
    return "\n".join(line for _, line in chosen) or None
