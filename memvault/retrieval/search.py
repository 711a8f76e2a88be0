"""Hybrid search inside one user's index: candidates, signals, fusion, hits.

Candidates are the union of the best BM25 and the nearest dense slots that pass the filters;
every signal is then computed exactly for those candidates only, so the cost of a query grows
with the candidate count, not with the user's history (beyond the BM25 postings walk and the
approximate nearest-neighbour lookup).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from memvault import validate as v
from memvault.errors import Invalid
from memvault.retrieval.cues import expected_answer
from memvault.retrieval.dense import Slots, Vectors
from memvault.retrieval.embed import relevance_floor
from memvault.retrieval.fusion import Signal, Weights, fuse, scale_to_max
from memvault.retrieval.index import Filters, Named, UserIndex
from memvault.retrieval.items import Item
from memvault.retrieval.lexical import Scores
from memvault.retrieval.text import terms, without_names
from memvault.retrieval.thesaurus import shipped_thesaurus
from memvault.retrieval.timeexpr import TimeWindow, resolve_time

MAX_QUERY_CHARS = 4096
MAX_LIMIT = 200
# Candidates per signal: the best 50 BM25 and the nearest 50 vectors, or 4 per result asked for
# when more are asked (context assembly asks for 50). Against 100 and 2 per result: LoCoMo R@10
# and R@20 unchanged (+0.1, -0.0 points), context recall at 2,000 tokens +1.0, and the index's
# share of a search at 100k items down by a third.
CANDIDATES = 50
CANDIDATES_PER_RESULT = 4
# and, for a query that names a time ("last week", "in May"), the best 20 of each from inside
# that window, whatever their rank overall: LoCoMo temporal R@10 +1.1 points
WINDOW_CANDIDATES = 20
_DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result. `signals` (with `explain=True`) gives each signal's scaled value."""

    type: str
    id: str
    score: float
    text: str
    session_id: str | None
    role: str | None
    speaker: str | None
    created_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)
    signals: dict[str, float] | None = None
    item: Item | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Query:
    """A validated search request."""

    text: str
    limit: int
    filters: Filters
    now: datetime
    min_score: float | None = None
    explain: bool = False
    asked_by: str | None = None  # who asks, a role's word or a speaker's name: whom "I", "you" mean


def check_query(text: object) -> str:
    if not isinstance(text, str):
        raise Invalid("query", f"must be a string, not {type(text).__name__}")
    if not text.strip():
        raise Invalid("query", "must not be empty")
    if len(text) > MAX_QUERY_CHARS:
        raise Invalid("query", f"longer than {MAX_QUERY_CHARS} characters")
    v.utf8_size("query", text)
    return text


def check_search_limit(limit: object) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise Invalid("limit", f"must be an integer between 1 and {MAX_LIMIT}")
    return limit


def dense_query_text(text: str, speaker_words: frozenset[str]) -> str:
    """The query as the dense model is asked it: without the names of the user's speakers.

    People ask about a participant by name ("What activities does Melanie partake in?"), but
    that participant's own turns say "I" and name the one they talk to ("Hey Caroline! I'm off
    to go swimming with the kids"). Left in, the name pulls the query's vector towards the turns
    addressed to that person rather than those they told; who spoke is the speaker signal's
    business. On LoCoMo, MiniLM alone finds 0.60 of the evidence in its top 10 with the names
    left out, against 0.44 with them. A name that is also a stop word is taken out only where it
    is one ("What did Will say?", not "Will I need a visa?"; `text.names_in`). A query left with
    nothing but stop words ("What did Nate do?") is kept whole: the name is then all it says.
    """
    stripped = without_names(text, speaker_words)
    return stripped if terms(stripped) else text


def search_index(
    index: UserIndex,
    query: Query,
    weights: Weights,
    *,
    query_vector: Callable[[], Vectors] | None = None,
) -> list[Hit]:
    """Rank the user's items for the query; best first, at most `query.limit`.

    `query_vector`, when given, supplies the query's embedding (one row) instead of embedding
    `dense_query_text` here, so a caller can compute it ahead, beside the lexical work, or
    reuse it.
    """
    if len(index) == 0:
        return []
    mask = index.allowed(query.filters)
    if mask is not None and not mask.any():
        return []
    window = resolve_time(query.text, query.now, names=index.speaker_words)
    # the time phrase's words stay in the text match: a question often repeats the words of
    # the turn it asks about ("What did Evan start one year ago?": "I started lifting weights
    # one year ago"), said at another date than the question's (LoCoMo temporal R@10 +0.3)
    query_terms = terms(query.text)
    pool = max(CANDIDATES, CANDIDATES_PER_RESULT * query.limit)

    bm25_all = _bm25(index, query.text, query_terms, weights) if weights.bm25 > 0 else None
    if bm25_all is not None and mask is not None:
        bm25_all[~mask] = 0.0
    parts = [] if bm25_all is None else [_best_matches(bm25_all, None, pool)]  # mask applied
    inside = None  # the slots created in the time the query names, if it names one
    if window is not None and weights.time > 0:
        inside = index.created_within(window.start, window.end, mask)
    window_holds_any = inside is not None and bool(inside.any())
    if bm25_all is not None and window_holds_any:
        parts.append(_best_matches(bm25_all, inside, WINDOW_CANDIDATES))
    session_match = index.session_match(query_terms) if weights.session > 0 else None
    # named outside the time phrase: "in June" is a month even where someone is called June
    untimed = query.text.replace(window.phrase, " ") if window else query.text
    named = index.named_speakers(untimed, query.asked_by) if weights.speaker > 0 else None

    # everything above needs no query vector: a caller's embedding of the query ran meanwhile
    embed = query_vector or (
        lambda: index.embedder.embed_query(dense_query_text(query.text, index.speaker_words))
    )
    vector = embed()[0] if weights.dense > 0 else None
    if vector is not None:
        parts.append(index.nearest(vector, pool, mask))
        if window_holds_any:
            parts.append(index.nearest(vector, WINDOW_CANDIDATES, inside))
    if not parts:
        return []
    slots = np.unique(np.concatenate(parts)).astype(np.int64)
    if len(slots) == 0:
        return []

    signals: dict[str, Signal] = {}
    if bm25_all is not None:
        top = float(bm25_all.max())
        signals["bm25"] = (
            bm25_all[slots] / top if top > 0 else np.zeros(len(slots), dtype=np.float32)
        )
    cosines = index.cosine(vector, slots) if vector is not None else None
    if cosines is not None:
        signals["dense"] = scale_to_max(cosines)
    signals.update(
        _context_signals(
            index, slots=slots, query=query, weights=weights, window=window,
            session_match=session_match, named=named,
        )
    )  # fmt: skip
    scores = fuse(signals, weights)
    in_window = inside[slots] if inside is not None else None
    relevance = relevance_floor(index.embedder)
    scores[~_matched(len(slots), signals, cosines, relevance, in_window)] = 0.0
    order = np.argsort(-scores, kind="stable")
    floor = query.min_score
    chosen = [
        int(p)
        for p in order[: query.limit]
        # against the score as a hit shows it (rounded), so a hit's own score passes as a floor
        if scores[p] > 0 and (floor is None or _shown(scores[p]) >= floor)
    ]
    items = index.items([int(slots[p]) for p in chosen])
    hits = []
    for position, item in zip(chosen, items, strict=True):
        explained = (
            {name: round(float(v[position]), 4) for name, v in signals.items()}
            if query.explain
            else None
        )
        hits.append(_hit(item, _shown(scores[position]), explained))
    return hits


def _matched(
    count: int,
    signals: dict[str, Signal],
    cosines: Signal | None,
    floor: float,
    in_window: npt.NDArray[np.bool_] | None,
) -> npt.NDArray[np.bool_]:
    """Which candidates match the query at all: a query term (or a related word) in the key, or
    a positive cosine at the embedder's relevance floor or above.

    Recency, importance or salience alone never make an item relevant; nor does being the
    nearest vector when nothing is near. The dense signal is scaled to the best candidate, so
    in a small history, or for a question the history has nothing on, an unrelated item would
    otherwise score as the best match ("explain quantum entanglement" against "Ann is allergic
    to peanuts", cosine 0.14) and be padded into the LLM's context. Inside the time the query
    names (`in_window`), any positive cosine will do: "what did we talk about in November?"
    asks for November, whatever was said.
    """
    matched = np.zeros(count, dtype=bool)
    if "bm25" in signals:
        matched |= signals["bm25"] > 0
    if cosines is not None:
        near = cosines >= floor
        if in_window is not None:
            near |= in_window
        matched |= (cosines > 0) & near
    return matched


def _best_matches(bm25_all: Scores, mask: npt.NDArray[np.bool_] | None, k: int) -> Slots:
    """The best `k` slots by BM25 among those with a match that the mask allows."""
    positive = bm25_all > 0  # a bool mask: nonzero of floats is 9x slower
    matched = np.flatnonzero(positive if mask is None else positive & mask)
    if len(matched) > k:
        matched = matched[np.argpartition(-bm25_all[matched], k - 1)[:k]]
    return matched


def _bm25(index: UserIndex, text: str, query_terms: list[str], weights: Weights) -> Scores:
    """BM25 of the query's own terms plus, at `weights.expansion`, of their related words, in
    one pass over the postings."""
    term_weights: dict[str, float] = dict(Counter(query_terms))
    if weights.expansion > 0:
        for term in shipped_thesaurus().expansion_terms(text, query_terms):
            term_weights[term] = weights.expansion  # never one of the query's own terms
    return index.bm25(term_weights)


def _context_signals(
    index: UserIndex,
    *,
    slots: np.ndarray[Any, np.dtype[np.int64]],
    query: Query,
    weights: Weights,
    window: TimeWindow | None,
    session_match: Scores | None,
    named: Named | None,
) -> dict[str, Signal]:
    """Signals beyond the text match: session topic, speaker, time, the kind of answer asked
    for, salience, recency, use. The session and speaker signals come from what the search
    worked out before the query's vector (`session_match`, `named`), for these slots."""
    signals: dict[str, Signal] = {}
    if session_match is not None:
        signals["session"] = index.session_scores(session_match, slots)
    if named is not None:
        signals["speaker"] = index.speakers_named(named, slots)
    created = index.created(slots)
    if weights.time > 0 and window is not None:
        start, end = window.start.timestamp(), window.end.timestamp()
        width = max(end - start, _DAY)
        distance = np.maximum(start - created, 0) + np.maximum(created - end, 0)
        signals["time"] = np.exp(-distance / width).astype(np.float32)
    wanted = expected_answer(query.text) if weights.answer > 0 else None
    if wanted:
        signals["answer"] = index.gives_answer(wanted, slots)
    if weights.salience > 0:
        signals["salience"] = index.salience(slots)
    if weights.recency > 0:
        age_days = np.maximum(query.now.timestamp() - created, 0) / _DAY
        half_life = weights.recency_half_life_days
        signals["recency"] = np.power(0.5, age_days / half_life).astype(np.float32)
    if weights.importance > 0:
        signals["importance"] = index.importance(slots).astype(np.float32)
    if weights.access > 0:
        uses = np.log1p(index.access_counts(slots)) / math.log1p(100)
        signals["access"] = np.minimum(uses, 1.0).astype(np.float32)
    return signals


def _shown(score: np.float32) -> float:
    return round(float(score), 6)


def _hit(item: Item, score: float, signals: dict[str, float] | None) -> Hit:
    return Hit(
        type=item.type,
        id=item.id,
        score=score,
        text=item.text,
        session_id=item.session_id,
        role=item.role,
        speaker=item.speaker,
        created_at=item.created_at,
        metadata=item.metadata,
        signals=signals,
        item=item,
    )
