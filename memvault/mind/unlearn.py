"""What memvault unlearns when turns are deleted: the facts it read from them.

Consolidation reads facts from what users say (`memvault.mind.extract`); everything derived from
turns can be made again from them, so a deleted conversation takes what was learned only from
it. Pure functions of plain values, as `memvault.mind.consolidate`'s are: `Vault.delete_session`
and `Vault.clear` read the user's facts and where their source turns are, ask `plan_unlearning`,
and have the store apply the plan in the transaction that deletes the turns.

1. An extracted fact (metadata `extracted` true) goes when the deletion takes one of its source
   turns and leaves none: what it says was said nowhere else. One with a source left stays, and
   so does any fact a caller wrote, whatever its sources: it is theirs to keep or delete.
2. The facts of a slot stay one chain, oldest to newest, as consolidation left it. The extracted
   fact of the slot that a deleted fact had superseded takes its place: superseded by the next
   fact that stays, closed where that one starts, or current again when none follows ("I live
   in New York", then "I moved to Boston": without the Boston conversation, New York stands).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass
from datetime import datetime

from memvault.mind.consolidate import holds_from, slot_of
from memvault.mind.extract import EXTRACTED
from memvault.model import Memory


@dataclass(frozen=True, slots=True)
class Relink:
    """A fact put back in its slot's chain: superseded by `superseded_by` until `valid_to`, or
    current again (both None)."""

    memory_id: str
    superseded_by: str | None
    valid_to: datetime | None


@dataclass(frozen=True, slots=True)
class UnlearningPlan:
    """The facts a deletion of turns takes (`deleted`) and those that take their place."""

    deleted: tuple[str, ...] = ()
    relinked: tuple[Relink, ...] = ()


def is_extracted(memory: Memory) -> bool:
    """Whether consolidation read the memory from turns (a caller's memories never are)."""
    return memory.metadata.get(EXTRACTED) is True


def extracted_sources(memories: Iterable[Memory]) -> set[str]:
    """The turns the extracted facts among `memories` were read from: the only turns whose
    deletion can take a fact, so the only ones to look for."""
    return {turn for m in memories if is_extracted(m) for turn in m.source_turn_ids}


def orphaned(memory: Memory, removed: Set[str], kept: Set[str]) -> bool:
    """Whether a deletion that takes the turns `removed` and leaves `kept` takes `memory`: an
    extracted fact with a source among the removed and none among the kept. A source in
    neither was gone before: the fact stayed then, and it is this deletion that leaves it
    nothing."""
    sources = memory.source_turn_ids
    return is_extracted(memory) and kept.isdisjoint(sources) and not removed.isdisjoint(sources)


def plan_unlearning(
    memories: Iterable[Memory], removed: Set[str], kept: Set[str]
) -> UnlearningPlan:
    """What deleting the turns `removed` does to `memories` (the user's facts, history
    included), `kept` being the facts' other source turns that stay."""
    by_id = {m.id: m for m in memories}
    deleted = {m.id for m in by_id.values() if orphaned(m, removed, kept)}
    relinked = [
        _relink(memory, _next_kept(by_id, memory, deleted), by_id)
        for memory in by_id.values()
        if memory.id not in deleted and _gave_way_to_deleted(memory, by_id, deleted)
    ]
    return UnlearningPlan(
        tuple(sorted(deleted)), tuple(sorted(relinked, key=lambda r: r.memory_id))
    )


def _gave_way_to_deleted(memory: Memory, by_id: Mapping[str, Memory], deleted: Set[str]) -> bool:
    """Whether `memory` is an extracted fact superseded by a deleted one of its slot and owner."""
    successor = by_id.get(memory.superseded_by or "")
    return (
        successor is not None
        and successor.id in deleted
        and is_extracted(memory)
        and slot_of(memory) is not None
        and (slot_of(memory), memory.agent_id) == (slot_of(successor), successor.agent_id)
    )


def _next_kept(by_id: Mapping[str, Memory], memory: Memory, deleted: Set[str]) -> str | None:
    """The first memory after `memory` along `superseded_by` that stays, or None."""
    seen: set[str] = set()
    current = memory.superseded_by
    while current is not None and current in deleted and current not in seen:
        seen.add(current)  # a loop someone wrote ends here
        current = by_id[current].superseded_by
    return None if current in deleted else current


def _relink(memory: Memory, successor_id: str | None, by_id: Mapping[str, Memory]) -> Relink:
    """`memory` current again, or superseded by `successor_id`, closed where that one starts
    (never before `memory` itself starts; as it was when the successor is not a fact read)."""
    if successor_id is None:
        return Relink(memory.id, None, None)
    successor = by_id.get(successor_id)
    if successor is None:
        return Relink(memory.id, successor_id, memory.valid_to)
    ends = holds_from(successor)
    if memory.valid_from is not None and memory.valid_from > ends:
        ends = memory.valid_from
    return Relink(memory.id, successor_id, ends)
