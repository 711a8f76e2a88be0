"""One user's search index: lexical, dense and session-level keys over their turns and memories.

Items live in append-only slots shared by the BM25 index, the vector index and the metadata
arrays, so every signal of a candidate is one array lookup. New rows are appended as the user's
revision moves; removed or rewritten rows leave a dead slot, and the index is compacted (rebuilt
from its live items and their vectors, without re-embedding) once dead slots pile up.

A turn's lexical document is the turn itself (counted twice), the two turns before it and the one
after it in the same session: answers lean on the question or remark they reply to, and a remark
is often explained by its reply. The reply arrives later, so appending a turn extends its
predecessor's document in place rather than rebuilding anything. Sessions are also indexed as
whole documents, so a turn in a conversation that is about the query's topic ranks above a lone
chance match elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from memvault.retrieval.dense import DEFAULT_ANN_THRESHOLD, DenseIndex, Slots, Vectors
from memvault.retrieval.embed import Embedder
from memvault.retrieval.items import MEMORY, TURN, Item
from memvault.retrieval.lexical import BM25Index, Scores
from memvault.retrieval.text import terms, words

CONTEXT_TURNS = 2
OWN_WEIGHT = 2


@dataclass(frozen=True, slots=True)
class Filters:
    """Which items a search may return. None means "any"."""

    types: frozenset[str] = frozenset((TURN, MEMORY))
    kinds: frozenset[str] | None = None
    tiers: frozenset[str] | None = None
    session_id: str | None = None
    agent_id: str | None = None
    channel: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    tags: frozenset[str] | None = None
    now: datetime | None = None  # hides memories expired at this moment
    # as this agent sees the user: every turn, but only the agent's own memories
    seen_by_agent: str | None = None


class _SessionDocs:
    """BM25 over whole sessions, re-indexing a session when it grows.

    A grown session is re-added under a new slot; the old slot is masked and the whole index is
    rebuilt once dead slots outnumber live ones, which keeps the cost of a turn-by-turn
    conversation linear.
    """

    def __init__(self) -> None:
        # space-joined: a string holds no references for the garbage collector to walk, where
        # lists of terms made every full collection visit each term of every session
        self._terms: dict[str, str] = {}
        self._slot: dict[str, int] = {}
        self._bm25 = BM25Index()
        self._dead = 0
        self._term_count = 0

    def extend(self, new_terms: dict[str, list[str]]) -> None:
        """Add terms to sessions (one batch of turns), re-indexing each grown session once."""
        for session_id, more in new_terms.items():
            known = self._terms.get(session_id)
            added = " ".join(more)
            self._terms[session_id] = f"{known} {added}" if known else added
            self._term_count += len(more)
            if session_id in self._slot:
                self._bm25.remove(self._slot.pop(session_id))
                self._dead += 1
        if self._dead > len(self._terms) + 16:
            self._rebuild()
            return
        for session_id in new_terms:
            self._add(session_id)

    def drop(self, session_id: str) -> None:
        self._term_count -= len(self._terms.pop(session_id, "").split())
        slot = self._slot.pop(session_id, None)
        if slot is not None:
            self._bm25.remove(slot)
            self._dead += 1

    def _add(self, session_id: str) -> None:
        slot = len(self._bm25)
        self._bm25.add(slot, self._terms[session_id].split())
        self._slot[session_id] = slot

    def _rebuild(self) -> None:
        self._bm25 = BM25Index()
        self._slot = {}
        self._dead = 0
        for session_id in self._terms:
            self._add(session_id)

    def scores(self, query_terms: Sequence[str], session_ids: Sequence[str | None]) -> Scores:
        """Each given session's BM25 score, scaled so the best session overall scores 1."""
        raw = self._bm25.scores(query_terms)
        top = float(raw.max()) if len(raw) else 0.0
        if top <= 0:
            return np.zeros(len(session_ids), dtype=np.float32)
        slots = [self._slot.get(sid, -1) if sid is not None else -1 for sid in session_ids]
        picked = np.where(np.asarray(slots) >= 0, raw[slots], 0.0)
        scaled: Scores = (picked / top).astype(np.float32)
        return scaled

    def nbytes(self) -> int:
        return self._bm25.nbytes() + self._term_count * 60


class _Column:
    """A categorical attribute per slot, stored as integer codes so filters are vectorised."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.values = np.zeros(0, dtype=np.int32)

    def set(self, slot: int, value: str | None) -> None:
        if slot >= len(self.values):
            self.values = np.resize(self.values, max(slot + 1, 2 * len(self.values), 1024))
        self.values[slot] = -1 if value is None else self.codes.setdefault(value, len(self.codes))

    def matches(self, size: int, wanted: Iterable[str]) -> npt.NDArray[np.bool_]:
        codes = [self.codes[w] for w in wanted if w in self.codes]
        return np.isin(self.values[:size], codes)

    def nbytes(self) -> int:
        return int(self.values.nbytes) + 80 * len(self.codes)


_COLUMNS = ("type", "session_id", "channel", "agent_id", "kind", "tier", "speaker")


class UserIndex:
    """Everything needed to rank one user's items for a query, held in memory."""

    def __init__(self, embedder: Embedder, *, ann_threshold: int = DEFAULT_ANN_THRESHOLD) -> None:
        self.embedder = embedder
        self.revision = 0
        self._ann_threshold = ann_threshold
        self._items: list[Item | None] = []
        self._slot: dict[tuple[str, str], int] = {}
        self._bm25 = BM25Index()
        self._dense = DenseIndex(embedder.dim, ann_threshold=ann_threshold)
        self._sessions = _SessionDocs()
        self._session_tail: dict[str, list[list[str]]] = {}
        self._session_last: dict[str, int] = {}
        self._columns = {name: _Column() for name in _COLUMNS}
        self._speaker_by_word: dict[str, set[str]] = {}
        self._created = np.zeros(0, dtype=np.float64)
        self._expires = np.zeros(0, dtype=np.float64)
        self._superseded = np.zeros(0, dtype=bool)
        self._alive = np.zeros(0, dtype=bool)
        self._dead = 0
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._slot)

    @property
    def dead(self) -> int:
        return self._dead

    # -- writing ---------------------------------------------------------------------------

    def add(self, items: Sequence[Item], vectors: Vectors | None = None) -> None:
        """Append items (turns of a session in `seq` order), embedding them unless given."""
        fresh = [item for item in items if (item.type, item.id) not in self._slot]
        if len(fresh) != len(items):
            self.remove((i.type, i.id) for i in items if (i.type, i.id) in self._slot)
        if vectors is None:
            vectors = self.embedder.embed([item.key for item in items])
        first = len(self._items)
        self._grow(first + len(items))
        session_terms: dict[str, list[str]] = {}
        for offset, item in enumerate(items):
            self._add_one(first + offset, item, session_terms)
        self._sessions.extend(session_terms)
        self._dense.add(first, vectors)

    def _grow(self, size: int) -> None:
        if size <= len(self._created):
            return
        capacity = max(size, 2 * len(self._created), 1024)
        self._created = np.resize(self._created, capacity)
        self._expires = np.resize(self._expires, capacity)
        self._superseded = np.resize(self._superseded, capacity)
        alive = np.zeros(capacity, dtype=bool)
        alive[: len(self._alive)] = self._alive
        self._alive = alive

    def _add_one(self, slot: int, item: Item, session_terms: dict[str, list[str]]) -> None:
        own = terms(item.key)
        document = own * OWN_WEIGHT
        if item.type == TURN and item.session_id is not None:
            tail = self._session_tail.setdefault(item.session_id, [])
            for previous in tail:
                document.extend(previous)
            tail.append(own)
            del tail[:-CONTEXT_TURNS]
            previous_slot = self._session_last.get(item.session_id)
            if previous_slot is not None and self._alive[previous_slot]:
                self._bm25.extend(previous_slot, own)
                self._bytes += 24 * len(own)
            self._session_last[item.session_id] = slot
            session_terms.setdefault(item.session_id, []).extend(own)
        self._bm25.add(slot, document)
        self._items.append(item)
        self._slot[(item.type, item.id)] = slot
        self._created[slot] = item.created_at.timestamp()
        self._expires[slot] = np.inf if item.expires_at is None else item.expires_at.timestamp()
        self._superseded[slot] = item.superseded
        self._alive[slot] = True
        speaker = item.speaker.lower() if item.speaker else None
        for name in _COLUMNS:
            self._columns[name].set(slot, speaker if name == "speaker" else getattr(item, name))
        for word in words(speaker or ""):
            self._speaker_by_word.setdefault(word, set()).add(speaker or "")
        self._bytes += item.nbytes() + 24 * len(document)

    def remove(self, keys: Iterable[tuple[str, str]]) -> None:
        """Drop items by (type, id); unknown keys are ignored (a tombstone may be older)."""
        for key in keys:
            slot = self._slot.pop(key, None)
            if slot is None:
                continue
            self._bm25.remove(slot)
            self._dense.remove(slot)
            self._alive[slot] = False
            item = self._items[slot]
            if item is not None and item.session_id is not None:
                self.drop_session(item.session_id)  # its remaining turns regain it at compaction
            self._items[slot] = None
            self._dead += 1

    def drop_session(self, session_id: str) -> None:
        self._sessions.drop(session_id)
        self._session_tail.pop(session_id, None)
        self._session_last.pop(session_id, None)

    def compacted(self) -> UserIndex:
        """A fresh index of the live items, reusing their vectors (no model call)."""
        index = UserIndex(self.embedder, ann_threshold=self._ann_threshold)
        live = np.flatnonzero(self._alive[: len(self._items)])
        items = [self.item(int(slot)) for slot in live]
        order = sorted(
            range(len(items)),
            key=lambda i: (items[i].created_at, items[i].session_id or "", items[i].seq),
        )
        index.add([items[i] for i in order], self._dense.vectors(live[order]))
        index.revision = self.revision
        return index

    def nbytes(self) -> int:
        arrays = self._created.nbytes * 2 + self._alive.nbytes * 2
        arrays += sum(c.nbytes() for c in self._columns.values())
        return (
            self._bytes
            + arrays
            + self._bm25.nbytes()
            + self._dense.nbytes()
            + self._sessions.nbytes()
        )

    # -- reading ---------------------------------------------------------------------------

    def item(self, slot: int) -> Item:
        item = self._items[slot]
        if item is None:
            raise KeyError(slot)
        return item

    def allowed(self, filters: Filters) -> npt.NDArray[np.bool_] | None:
        """Mask of slots that pass the filters; None when every live slot passes."""
        size = len(self._items)
        mask = self._alive[:size] & ~self._superseded[:size]
        column = self._columns
        if filters.now is not None:
            mask &= self._expires[:size] > filters.now.timestamp()
        if filters.since is not None:
            mask &= self._created[:size] >= filters.since.timestamp()
        if filters.until is not None:
            mask &= self._created[:size] < filters.until.timestamp()
        if filters.types != frozenset((TURN, MEMORY)):
            mask &= column["type"].matches(size, filters.types)
        for name, wanted in (
            ("session_id", filters.session_id),
            ("channel", filters.channel),
            ("agent_id", filters.agent_id),
        ):
            if wanted is not None:
                mask &= column[name].matches(size, (wanted,))
        for name, choices in (("kind", filters.kinds), ("tier", filters.tiers)):
            if choices is not None:
                mask &= column[name].matches(size, choices)
        if filters.seen_by_agent is not None:
            own = column["agent_id"].matches(size, (filters.seen_by_agent,))
            mask &= ~column["type"].matches(size, (MEMORY,)) | own
        if filters.tags is not None:
            for slot in np.flatnonzero(mask):
                item = self._items[slot]
                mask[slot] = item is not None and filters.tags <= set(item.tags)
        return None if mask.sum() == len(self._slot) else mask

    def bm25(self, query_terms: Sequence[str] | Mapping[str, float]) -> Scores:
        """BM25 of every slot, for query terms or for terms with weights."""
        if isinstance(query_terms, Mapping):
            return self._bm25.weighted_scores(query_terms)
        return self._bm25.scores(query_terms)

    def session_scores(self, query_terms: Sequence[str], slots: Slots) -> Scores:
        """How well each slot's whole session matches the query (0 for memories)."""
        session_ids = [self.item(int(s)).session_id for s in slots]
        return self._sessions.scores(query_terms, session_ids)

    def nearest(self, query: Vectors, k: int, mask: npt.NDArray[np.bool_] | None) -> Slots:
        """Best `k` slots by cosine among those the mask allows."""
        if mask is None:
            return self._dense.nearest(query, k)
        allowed = np.flatnonzero(mask)
        if len(allowed) >= self._ann_threshold:
            found = self._dense.nearest(query, 4 * k)
            kept = found[mask[found]]
            if len(kept) >= k:
                return kept[:k]
        scores = self._dense.similarity(query, allowed)
        top = np.argsort(-scores)[:k]
        return allowed[top]

    def cosine(self, query: Vectors, slots: Slots) -> Vectors:
        return self._dense.similarity(query, slots)

    def created(self, slots: Slots) -> npt.NDArray[np.float64]:
        return self._created[slots]

    def speakers_named(self, query: str, slots: Slots) -> npt.NDArray[np.float32]:
        """1.0 where the query names the slot's speaker ("When did Caroline ..."), else 0."""
        named = set().union(*(self._speaker_by_word.get(w, set()) for w in words(query)))
        if not named:
            return np.zeros(len(slots), dtype=np.float32)
        speaker = self._columns["speaker"]
        codes = [speaker.codes[name] for name in named]
        return np.isin(speaker.values[slots], codes).astype(np.float32)
