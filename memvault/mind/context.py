"""Context assembly: what an LLM should know about the user for this turn, inside a budget.

Sections are shown in a fixed order: pinned memories and deployment-wide context, the user's
standing facts (those the query is about first), memories and past turns relevant to the query,
then the current session's recent turns (per-channel limits). Relevant items must clear a score
threshold: when nothing is relevant, nothing is padded in. They must also score at least a share
of the best one's (`MIN_RELATIVE_SCORE`): a question with a clear answer gets a short context, one
with none a long one, instead of every context filling its budget. Items already shown in an
earlier section are not repeated. Whatever does not fit is reported in `dropped`, so a caller
can see what the budget cost.

The budget is not simply filled in that order. The background comes first; then each other
section takes its best lines up to its share of what is left (`SHARES`), and only then is the
remainder given out in order. Filled in order alone, a user with a few hundred facts had the
facts section take the whole budget and the current conversation dropped from every context.
With room for everything, the shares change nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

from memvault import validate as v
from memvault.errors import Invalid
from memvault.model import GlobalContextEntry
from memvault.retrieval.items import Item
from memvault.retrieval.search import Hit
from memvault.retrieval.tokens import count_tokens, count_tokens_of

DEFAULT_CHANNEL_LIMITS: Mapping[str, int] = {"ai": 20, "general": 10}
MAX_TOKEN_BUDGET = 200_000
SECTIONS = (
    ("background", "Background"),
    ("facts", "What you know about the user"),
    ("relevant", "Relevant memories and past conversation"),
    ("recent", "Current conversation (oldest first)"),
)
# what each section may take of the budget the background leaves, before the sections after it
# have had theirs: half for the conversation under way, a quarter each for facts and the rest
SHARES: Mapping[str, float] = {"facts": 0.25, "relevant": 0.25, "recent": 0.5}
# A relevant line scores at least this share of the best relevant line. Scores are fused over
# every signal, and the ones that do not read the content (who spoke, salience, recency) lift a
# poor match to about half the best one's: on LoCoMo, every context filled its budget, 2,000
# tokens holding 39 lines of which 1.2 were evidence. Those under half the best are hardly
# ever evidence: at 2,000 tokens a context keeps 0.920 of the evidence against 0.923 and uses
# 13% fewer tokens; a caller who pays per token may ask for more (`docs/retrieval.md`).
MIN_RELATIVE_SCORE = 0.5
_TITLES = dict(SECTIONS)


@dataclass(frozen=True, slots=True)
class ContextItem:
    """One line of the context and where it came from."""

    source: str  # global, pinned, fact, memory, turn, recent
    type: str  # global, memory, turn
    id: str
    text: str
    tokens: int
    score: float | None = None


@dataclass(frozen=True, slots=True)
class Context:
    text: str
    items: list[ContextItem] = field(default_factory=list)
    dropped: list[ContextItem] = field(default_factory=list)
    tokens: int = 0
    token_budget: int = 0


@dataclass(frozen=True, slots=True)
class Sources:
    """Everything a context may draw on, gathered by `Vault.context`."""

    global_entries: Sequence[GlobalContextEntry] = ()
    pinned: Sequence[Item] = ()  # memories, as the search index holds them
    facts: Sequence[Item] = ()
    hits: Sequence[Hit] = ()
    recent: Sequence[Item] = ()  # turns of the session under way, as the index holds them


def check_budget(token_budget: object) -> int:
    if isinstance(token_budget, bool) or not isinstance(token_budget, int):
        raise Invalid("token_budget", "must be an integer")
    if not 1 <= token_budget <= MAX_TOKEN_BUDGET:
        raise Invalid("token_budget", f"must be between 1 and {MAX_TOKEN_BUDGET}")
    return token_budget


def check_channel_limits(limits: Mapping[str, int] | None) -> dict[str, int]:
    """Per-channel caps on recent turns; unknown channels and negative caps are errors."""
    merged = dict(DEFAULT_CHANNEL_LIMITS)
    for channel, limit in (limits or {}).items():
        if channel not in DEFAULT_CHANNEL_LIMITS:
            raise Invalid("channel_limits", "unknown channel; expected ai or general")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= 1000:
            raise Invalid("channel_limits", "each limit must be an integer from 0 to 1000")
        merged[channel] = limit
    return merged


def _speaker(turn_speaker: str | None, role: str | None) -> str:
    return turn_speaker or role or "someone"


def check_min_relative_score(value: object) -> float:
    return v.check_number("min_relative_score", value, 0, 1)


def _candidates(sources: Sources, min_relative_score: float) -> dict[str, list[ContextItem]]:
    """Every possible line, per section, best first, before the budget is applied; relevant
    lines only from `min_relative_score` times the best one's score."""
    seen: set[tuple[str, str]] = set()

    def fresh(kind: str, item_id: str) -> bool:
        if (kind, item_id) in seen:
            return False
        seen.add((kind, item_id))
        return True

    lines: dict[str, list[tuple[str, str, str, str, float | None]]] = {s: [] for s, _ in SECTIONS}
    for entry in sources.global_entries:
        lines["background"].append(("global", "global", entry.key, entry.text, None))
    for memory in sources.pinned:
        if fresh("memory", memory.id):
            lines["background"].append(("pinned", "memory", memory.id, memory.text, None))
    for memory, score in _facts_best_first(sources):
        if fresh("memory", memory.id):
            label = f"{memory.category}: {memory.text}" if memory.category else memory.text
            lines["facts"].append(("fact", "memory", memory.id, label, score))
    recent_ids = {t.id for t in sources.recent}
    floor = min_relative_score * max((hit.score for hit in sources.hits), default=0.0)
    for hit in sources.hits:
        if hit.score < floor or hit.id in recent_ids or not fresh(hit.type, hit.id):
            continue
        when = hit.created_at.date().isoformat()
        if hit.type == "turn":
            text = f"[{when}] {_speaker(hit.speaker, hit.role)}: {hit.text}"
        else:
            text = f"[{when}] {hit.text}"
        lines["relevant"].append((hit.type, hit.type, hit.id, text, hit.score))
    for turn in reversed(sources.recent):  # newest first, so the budget keeps the latest
        text = f"{_speaker(turn.speaker, turn.role)}: {turn.text}"
        lines["recent"].append(("recent", "turn", turn.id, text, None))
    counts = iter(count_tokens_of([line[3] for section in lines.values() for line in section]))
    return {
        section: [
            ContextItem(source, kind, item_id, text, next(counts), score)
            for source, kind, item_id, text, score in section_lines
        ]
        for section, section_lines in lines.items()
    }


def _facts_best_first(sources: Sources) -> list[tuple[Item, float | None]]:
    """Facts the query is about (found by the search), best match first, then the others by
    importance, newest first among equals (the order they come in): when not all of them fit,
    the ones that matter to this turn do."""
    scores = {hit.id: hit.score for hit in sources.hits if hit.type == "memory"}
    ranked = sorted(
        sources.facts, key=lambda m: (m.id not in scores, -scores.get(m.id, 0.0), -m.importance)
    )
    return [(memory, scores.get(memory.id)) for memory in ranked]


@cache
def _header_tokens(title: str) -> int:
    """Tokens of a section heading and the blank line before it (the same on every call)."""
    return count_tokens(f"## {title}") + 1


def build_context(
    sources: Sources, *, token_budget: int, min_relative_score: float = MIN_RELATIVE_SCORE
) -> Context:
    """Give each section its share of the budget, then the rest in order; report what was left
    out. Within a section, lines are taken best first."""
    budget = check_budget(token_budget)
    candidates = _candidates(sources, check_min_relative_score(min_relative_score))
    chosen: dict[str, list[ContextItem]] = {}
    waiting: dict[str, list[ContextItem]] = {}
    used = 0

    def cost(section: str, item: ContextItem) -> int:
        header = 0 if section in chosen else _header_tokens(_TITLES[section])
        return item.tokens + 2 + header

    def take(section: str, cap: float) -> None:
        """The section's best lines while they fit `cap` and the budget; the others wait."""
        nonlocal used
        taken = 0
        lines = candidates[section]
        for at, item in enumerate(lines):
            price = cost(section, item)
            if taken + price > cap or used + price > budget:
                waiting[section] = lines[at:]
                return
            chosen.setdefault(section, []).append(item)
            taken += price
            used += price

    take("background", budget)
    after_background = budget - used
    for section, share in SHARES.items():  # in the sections' order
        take(section, share * after_background)
    dropped: list[ContextItem] = []
    for section in _TITLES:  # then what is left of the budget, in order
        for item in waiting.get(section, []):
            price = cost(section, item)
            if used + price <= budget:
                chosen.setdefault(section, []).append(item)
                used += price
            else:
                dropped.append(item)
    blocks = []
    for section, title in SECTIONS:
        picked = chosen.get(section, [])
        if section == "recent":
            picked = list(reversed(picked))  # chosen newest first, shown in order
        if picked:
            bullet = "" if section == "recent" else "- "
            blocks.append(f"## {title}\n" + "\n".join(bullet + i.text for i in picked))
    items = [item for section, _ in SECTIONS for item in chosen.get(section, [])]
    return Context(
        text="\n\n".join(blocks), items=items, dropped=dropped, tokens=used, token_budget=budget
    )
