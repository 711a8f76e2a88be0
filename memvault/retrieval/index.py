"""One user's search index: lexical, dense and session-level keys over their turns and memories.

Items live in append-only slots shared by the BM25 index, the vector index and the metadata
arrays, so every signal of a candidate is one array lookup. New rows are appended as the user's
revision moves; removed or rewritten rows leave a dead slot, and the index is compacted (each
part carried over to the live items' new slots, nothing embedded or tokenised again) once dead
slots pile up.

A turn's lexical document is the turn itself (counted twice), the two turns before it and the one
after it in the same session: answers lean on the question or remark they reply to, and a remark
is often explained by its reply. The reply arrives later, so appending a turn extends its
predecessor's document in place rather than rebuilding anything. Sessions are also indexed as
whole documents, so a turn in a conversation that is about the query's topic ranks above a lone
chance match elsewhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

from memvault.model import Role
from memvault.retrieval.cues import Answers, CueColumns
from memvault.retrieval.dense import DEFAULT_ANN_THRESHOLD, DenseIndex, Slots, Vectors
from memvault.retrieval.embed import Embedder
from memvault.retrieval.graphs import GraphBuilds
from memvault.retrieval.items import MEMORY, TURN, Item, ItemTable, grown
from memvault.retrieval.lexical import BM25Index, Scores
from memvault.retrieval.text import ROLE_WORDS, names_in, persons_in, terms, words

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
    """BM25 over whole sessions. A session's document grows in place as its turns arrive.

    Growing in place keeps every session at one slot: a session re-added under a new slot each
    time it grew left its old slots behind, and with a turn appended at a time (a chat) those
    outnumbered the live sessions between rebuilds. A session that loses turns loses their words
    in place (`retract`); one that loses them all is dropped, and the index is rebuilt once
    dropped slots outnumber live ones.
    """

    def __init__(self) -> None:
        # space-joined: a string holds no references for the garbage collector to walk, where
        # lists of terms made every full collection visit each term of every session
        self._terms: dict[str, str] = {}
        # terms taken out of a session's document (its removed turns') but not yet out of its
        # text: that waits until the text is read again (a rebuild), as rewriting it at each
        # removal cost 60 ms in a session of 20,000 turns
        self._retracted: dict[str, list[str]] = {}
        self._slot: dict[str, int] = {}
        self._bm25 = BM25Index()
        self._dead = 0
        self._term_count = 0

    def extend(self, new_terms: dict[str, list[str]]) -> None:
        """Add terms to sessions (one batch of turns), each session's document grown in place."""
        for session_id, more in new_terms.items():
            known = self._terms.get(session_id)
            added = " ".join(more)
            self._terms[session_id] = f"{known} {added}" if known else added
            self._term_count += len(more)
            slot = self._slot.get(session_id)
            if slot is None:
                self._add(session_id)
            else:
                self._bm25.extend(slot, more)

    def retract(self, session_id: str, gone: list[str]) -> None:
        """Take the terms of a session's removed turns out of its document, in place."""
        self._bm25.retract(self._slot[session_id], gone)
        self._retracted.setdefault(session_id, []).extend(gone)
        self._term_count -= len(gone)

    def drop(self, session_id: str) -> None:
        held = len(self._terms.pop(session_id, "").split())
        self._term_count -= held - len(self._retracted.pop(session_id, ()))
        slot = self._slot.pop(session_id, None)
        if slot is not None:
            self._bm25.remove(slot)
            self._dead += 1
            if self._dead > len(self._terms) + 16:
                self._rebuild()

    def _add(self, session_id: str) -> None:
        gone = self._retracted.pop(session_id, None)
        if gone:
            left = Counter(self._terms[session_id].split())
            left.subtract(gone)
            self._terms[session_id] = " ".join(left.elements())
        slot = len(self._bm25)
        self._bm25.add(slot, self._terms[session_id].split())
        self._slot[session_id] = slot

    def _rebuild(self) -> None:
        self._bm25 = BM25Index()
        self._slot = {}
        self._dead = 0
        for session_id in self._terms:
            self._add(session_id)

    def match(self, query_terms: Sequence[str]) -> Scores:
        """Every session's BM25 score, scaled so the best session scores 1 (all 0 when none
        matches)."""
        raw = self._bm25.scores(query_terms)
        top = float(raw.max()) if len(raw) else 0.0
        scaled: Scores = (raw / top if top > 0 else np.zeros_like(raw)).astype(np.float32)
        return scaled

    def scores(self, match: Scores, session_ids: Sequence[str | None]) -> Scores:
        """The given sessions' scores out of `match` (0 for no session)."""
        if not len(match):
            return np.zeros(len(session_ids), dtype=np.float32)
        slots = [self._slot.get(sid, -1) if sid is not None else -1 for sid in session_ids]
        picked: Scores = np.where(np.asarray(slots) >= 0, match[slots], 0.0).astype(np.float32)
        return picked

    def nbytes(self) -> int:
        return self._bm25.nbytes() + self._term_count * 60


@dataclass(frozen=True, slots=True)
class People:
    """What the user and their agents are called (`User.name`, `Agent.name`). A chat's turns
    give a role, not a speaker; these names are theirs all the same (`UserIndex.name_people`)."""

    user: str | None = None
    agents: Mapping[str, str] = field(default_factory=dict)  # agent id -> name


@dataclass(frozen=True, slots=True)
class Named:
    """Whom a query names (`UserIndex.named_speakers`): speakers by their code, the user, and
    agents by id, or every agent (by the word "assistant")."""

    speakers: frozenset[int] = frozenset()
    user: bool = False
    agents: frozenset[str] = frozenset()
    assistant: bool = False

    def __bool__(self) -> bool:
        return bool(self.speakers or self.user or self.agents or self.assistant)

    def __or__(self, other: Named) -> Named:
        return Named(
            speakers=self.speakers | other.speakers,
            user=self.user or other.user,
            agents=self.agents | other.agents,
            assistant=self.assistant or other.assistant,
        )


class UserIndex:
    """Everything needed to rank one user's items for a query, held in memory."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        graphs: GraphBuilds | None = None,
    ) -> None:
        self.embedder = embedder
        self.revision = 0
        self.accessed = 0  # the user's count of recalls its access counts are current to
        self._ann_threshold = ann_threshold
        self._graphs = graphs  # where HNSW graphs are built (`dense.py`); None: inline
        self._items = ItemTable()
        # slot by item type, then id: the id strings are the table's own, so the map adds no
        # string and no (type, id) tuple per item
        self._slot: dict[str, dict[str, int]] = {}
        self._bm25 = BM25Index()
        self._dense = DenseIndex(embedder.dim, ann_threshold=ann_threshold, graphs=graphs)
        self._sessions = _SessionDocs()
        self._cues = CueColumns()
        self._session_tail: dict[str, list[list[str]]] = {}
        self._session_last: dict[str, int] = {}
        # speaker codes by each word of the speaker's name, lower-cased, and how many live
        # slots each code has: a speaker whose turns are all gone names nobody any more
        self._speaker_by_word: dict[str, set[int]] = {}
        self._speaker_slots: Counter[int] = Counter()
        # what the user and their agents are called (`name_people`), the loader's key for it,
        # and their names' words
        self._people = People()
        self.people_key = b""
        self._user_words: frozenset[str] = frozenset()
        self._agents_by_word: dict[str, frozenset[str]] = {}
        # the words of all of those names and of the roles, replaced whole when one is added:
        # another thread may read it while this index is topped up (IndexCache.speaker_words)
        self.speaker_words: frozenset[str] = ROLE_WORDS
        self._alive = np.zeros(0, dtype=bool)
        self._dead = 0

    def __len__(self) -> int:
        return sum(len(ids) for ids in self._slot.values())

    def _has(self, item_type: str, item_id: str) -> bool:
        return item_id in self._slot.get(item_type, {})

    @property
    def dead(self) -> int:
        return self._dead

    # -- writing ---------------------------------------------------------------------------

    def add(self, items: Sequence[Item], vectors: Vectors | None = None) -> None:
        """Append items (turns of a session in `seq` order), embedding them unless given."""
        fresh = [item for item in items if not self._has(item.type, item.id)]
        if len(fresh) != len(items):
            self.remove((i.type, i.id) for i in items if self._has(i.type, i.id))
        if vectors is None:
            vectors = self.embedder.embed([item.key for item in items])
        self._dense.add(self._append(items), vectors)

    def _append(self, items: Sequence[Item]) -> int:
        """Index items at the next slots, but for their vectors; the first slot is returned."""
        first = len(self._items)
        if first + len(items) > len(self._alive):
            self._alive = grown(self._alive, first + len(items))
        session_terms: dict[str, list[str]] = {}
        for offset, item in enumerate(items):
            self._add_one(first + offset, item, session_terms)
        self._sessions.extend(session_terms)
        return first

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
            self._session_last[item.session_id] = slot
            session_terms.setdefault(item.session_id, []).extend(own)
        self._bm25.add(slot, document)
        self._items.append(item)
        self._cues.set(slot, item)
        self._slot.setdefault(item.type, {})[item.id] = slot
        self._alive[slot] = True
        self._count_speaker(int(self._items.categories["speaker"].codes[slot]), item.speaker)

    def _count_speaker(self, speaker: int, name: str | None, more: int = 1) -> None:
        """Count `more` slots of `speaker` (a code); their name's words now name them."""
        if speaker < 0 or name is None or more == 0:
            return
        self._speaker_slots[speaker] += more
        for word in words(name.lower()):
            codes = self._speaker_by_word.get(word)
            if codes is None:
                codes = self._speaker_by_word[word] = set()
                self.speaker_words = self.speaker_words | {word}
            codes.add(speaker)

    def _forget_speaker(self, speaker: int) -> None:
        """Count one slot of `speaker` gone; with their last one, their name's words go too."""
        if speaker < 0:
            return
        self._speaker_slots[speaker] -= 1
        if self._speaker_slots[speaker]:
            return
        del self._speaker_slots[speaker]
        for word, codes in list(self._speaker_by_word.items()):
            codes.discard(speaker)
            if not codes:
                del self._speaker_by_word[word]
        self._publish_speaker_words()

    def _publish_speaker_words(self) -> None:
        self.speaker_words = (
            frozenset(self._speaker_by_word)
            | self._user_words
            | frozenset(self._agents_by_word)
            | ROLE_WORDS
        )

    def name_people(self, people: People, key: bytes = b"") -> None:
        """What the user and their agents are called now. A turn that gives a role and no
        speaker, as a chat's do, is the user's (role "user") or its agent's (role "assistant"),
        and is named by their name as a speaker's turns are by the speaker's: "What does Alice
        like?" asks about the user Alice's turns, and its dense query leaves "Alice" out
        (`search.dense_query_text`). `key` stands for `people` where they came from, so that
        they are not opened again while it stays the same (`IndexCache`)."""
        self.people_key = key
        if people == self._people:
            return
        self._people = people
        self._user_words = frozenset(words(people.user.lower())) if people.user else frozenset()
        by_word: dict[str, set[str]] = {}
        for agent_id, name in people.agents.items():
            for word in words(name.lower()):
                by_word.setdefault(word, set()).add(agent_id)
        self._agents_by_word = {word: frozenset(ids) for word, ids in by_word.items()}
        self._publish_speaker_words()

    def remove(self, keys: Iterable[tuple[str, str]]) -> None:
        """Drop items by (type, id); unknown keys are ignored (a tombstone may be older).

        What a removed turn lent its session is taken back in place, as an index built now
        would have it: the session's document loses its words, and each turn that had it among
        its neighbours gets its new neighbours' words instead (`_close_gaps`). Nothing else of
        the session is touched: one turn out of a session of 20,000 used to index the other
        19,999 again.
        """
        column = self._items.categories["session_id"]
        gone: dict[int, str | None] = {}
        for item_type, item_id in keys:
            slot = self._slot.get(item_type, {}).pop(item_id, None)
            if slot is not None:
                gone[slot] = column.get(slot)
        touched = {session_id for session_id in gone.values() if session_id is not None}
        sessions = [
            _Gaps.of(column.get(slots[0]), slots.tolist(), gone)
            for slots in self._live_turns_by_session(touched)
        ]
        own = self._own_terms(set().union(*(gaps.slots_read() for gaps in sessions)))
        for gaps in sessions:
            self._close_gaps(gaps, own)
        for slot in gone:
            self._bm25.remove(slot)
            self._dense.remove(slot)
            self._alive[slot] = False
            self._forget_speaker(int(self._items.categories["speaker"].codes[slot]))
            self._items.release(slot)
            self._dead += 1

    def _close_gaps(self, gaps: _Gaps, own: Mapping[int, list[str]]) -> None:
        """Take a session's removed turns out of it (`_Gaps`); its other turns stay at their
        slots, the few whose neighbours changed rewired."""
        session_id = gaps.session_id
        if not gaps.kept:
            self._sessions.drop(session_id)
            self._session_tail.pop(session_id, None)
            self._session_last.pop(session_id, None)
            return
        for slot, lost, gained in gaps.rewired:
            self._bm25.retract(slot, _joined(own, lost))
            self._bm25.extend(slot, _joined(own, gained))
        self._sessions.retract(session_id, _joined(own, gaps.gone))
        if gaps.tail is not None:
            self._session_tail[session_id] = [list(own[slot]) for slot in gaps.tail]
        self._session_last[session_id] = gaps.kept[-1]

    def _own_terms(self, slots: set[int]) -> dict[int, list[str]]:
        """Each slot's own terms, as `_add_one` made them, its items read in one pass (a turn
        at a time cost 0.3 ms each)."""
        ordered = sorted(slots)
        return {
            slot: terms(item.key) for slot, item in zip(ordered, self.items(ordered), strict=True)
        }

    def _live_turns_by_session(self, session_ids: set[str]) -> list[Slots]:
        """The live slots of each of the sessions, in `seq` order: one pass over the index
        for all of them (a channel cleared out of thousands of sessions scanned it once per
        session)."""
        if not session_ids:
            return []
        size = len(self._items)
        column = self._items.categories["session_id"]
        slots = np.flatnonzero(column.matches(size, session_ids) & self._alive[:size])
        codes = column.codes[slots]
        order = np.lexsort((self._items.numbers["seq"][slots], codes))
        starts = np.flatnonzero(np.diff(codes[order], prepend=-2))
        return np.split(slots[order], starts[1:])

    def compaction_due(self) -> bool:
        """Whether dead slots pass a quarter of the index (and 64): then `compacted` is worth
        its cost, about 1 s at 100k items."""
        return self._dead > max(64, len(self) // 4)

    def compacted(self) -> UserIndex:
        """The live items at slots 0, 1, ... of a new index, in the order they had.

        Nothing is made again from the items: each part is carried over renumbered, the lexical
        postings (`BM25Index.compacted`), the item columns, the cues, and the HNSW graph under
        its new keys (`DenseIndex.compacted`). Building the index again from its live items, as
        this did, took 12.5 s at 70k items; the session documents, which hold no slots, go
        along as they are. This index is left to be dropped: its vectors and graph have moved to
        the new one, which shares its session documents and tails.
        """
        size = len(self._items)
        live = np.flatnonzero(self._alive[:size])
        new_slot = np.full(size, -1, dtype=np.int64)
        new_slot[live] = np.arange(len(live))
        renumber = new_slot.tolist()
        index = UserIndex(self.embedder, ann_threshold=self._ann_threshold, graphs=self._graphs)
        index.revision, index.accessed = self.revision, self.accessed
        index._items = self._items.compacted(live)
        index._slot = {
            kind: {item_id: renumber[slot] for item_id, slot in slots.items()}
            for kind, slots in self._slot.items()
        }
        index._bm25 = self._bm25.compacted(live)
        index._dense = self._dense.compacted(live)
        index._sessions = self._sessions
        index._cues = self._cues.compacted(live)
        index._session_tail = self._session_tail  # terms, not slots: they go along as they are
        index._session_last = {
            sid: renumber[slot] for sid, slot in self._session_last.items() if renumber[slot] >= 0
        }
        speakers = index._items.categories["speaker"]
        for code, count in enumerate(np.bincount(speakers.codes[speakers.codes >= 0]).tolist()):
            index._count_speaker(code, speakers.values[code], count)
        index.name_people(self._people, self.people_key)
        index._alive = np.ones(len(live), dtype=bool)
        return index

    def nbytes(self) -> int:
        """Memory held, for the cache's byte budget. It errs high, by about a tenth at 100k
        items against what tracemalloc and the HNSW graph's own figure add up to."""
        return (
            self._items.nbytes()
            + self._alive.nbytes
            + self._bm25.nbytes()
            + self._dense.nbytes()
            + self._sessions.nbytes()
            + self._cues.nbytes()
        )

    # -- reading ---------------------------------------------------------------------------

    def item(self, slot: int) -> Item:
        """The item at a live slot, made anew from the table (equal to the one added)."""
        return self.items([slot])[0]

    def memories(
        self,
        *,
        pinned: bool,
        kinds: frozenset[str] | None,
        agent_id: str | None,
        now: datetime,
        limit: int,
    ) -> list[Item]:
        """Live memories, pinned or not, newest first as the store lists them (by creation,
        then id), at most `limit`: a context's standing knowledge. Read here, it is not
        decrypted from the store again on every call (5.5 of 16 ms with 500 facts). Only the
        memories' own slots are looked at, however many turns the index holds."""
        slots = np.fromiter(self._slot.get(MEMORY, {}).values(), dtype=np.int64)
        numbers, column = self._items.numbers, self._items.categories
        keep = ~numbers["superseded"][slots] & (numbers["pinned"][slots] == pinned)
        keep &= numbers["expires"][slots] > now.timestamp()
        if kinds is not None:
            keep &= column["kind"].matches_at(slots, kinds)
        if agent_id is not None:
            keep &= column["agent_id"].matches_at(slots, (agent_id,))
        picked = slots[keep]
        ids = self._items.ids
        created = numbers["created"][picked].tolist()
        newest = sorted(
            zip(created, (ids[slot] for slot in picked.tolist()), picked.tolist(), strict=True),
            reverse=True,
        )
        return self._items.get_many([slot for _, _, slot in newest[:limit]])

    def recent_turns(self, session_id: str, limits: Mapping[str, int]) -> list[Item]:
        """The session's newest turns, at most `limits[channel]` of each channel, oldest first:
        the conversation under way, for a context. Read here, in the checkout its search
        used, it agrees with the search and is not read and decrypted from the store again."""
        if not any(limits.values()):
            return []
        (slots,) = self._live_turns_by_session({session_id})  # empty for a session it lacks
        channels = self._items.categories["channel"]
        newest = [  # places in `slots`, which are in `seq` order
            np.flatnonzero(channels.matches_at(slots, (channel,)))[-limit:]
            for channel, limit in limits.items()
            if limit
        ]
        return self._items.get_many(slots[np.sort(np.concatenate(newest))].tolist())

    def items(self, slots: Sequence[int]) -> list[Item]:
        """The items at live slots, in order (one read of each column for all of them)."""
        for slot in slots:
            if not (0 <= slot < len(self._items) and self._alive[slot]):
                raise KeyError(slot)
        return self._items.get_many(slots)

    def allowed(self, filters: Filters) -> npt.NDArray[np.bool_] | None:
        """Mask of slots that pass the filters; None when every live slot passes."""
        size = len(self._items)
        numbers = self._items.numbers
        mask = self._alive[:size] & ~numbers["superseded"][:size]
        column = self._items.categories
        if filters.now is not None:
            mask &= numbers["expires"][:size] > filters.now.timestamp()
        if filters.since is not None:
            mask &= numbers["created"][:size] >= filters.since.timestamp()
        if filters.until is not None:
            mask &= numbers["created"][:size] < filters.until.timestamp()
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
            mask &= self._items.tags_cover(size, filters.tags)
        return None if mask.sum() == len(self) else mask

    def created_within(
        self, start: datetime, end: datetime, mask: npt.NDArray[np.bool_] | None
    ) -> npt.NDArray[np.bool_]:
        """Mask of live slots created in [start, end), narrowed by `mask` when given."""
        size = len(self._items)
        created = self._items.numbers["created"][:size]
        inside = (created >= start.timestamp()) & (created < end.timestamp())
        inside &= self._alive[:size] if mask is None else mask
        return inside

    def bm25(self, query_terms: Sequence[str] | Mapping[str, float]) -> Scores:
        """BM25 of every slot, for query terms or for terms with weights."""
        if isinstance(query_terms, Mapping):
            return self._bm25.weighted_scores(query_terms)
        return self._bm25.scores(query_terms)

    def session_match(self, query_terms: Sequence[str]) -> Scores:
        """How well each session as a whole matches the query: needs no query vector, so a
        search works it out while the query is being embedded (`session_scores` reads it)."""
        return self._sessions.match(query_terms)

    def session_scores(self, match: Scores, slots: Slots) -> Scores:
        """Each slot's session's score out of `session_match` (0 for memories)."""
        session_ids = self._items.categories["session_id"].values_at(slots)
        return self._sessions.scores(match, session_ids)

    @property
    def graph_pending(self) -> bool:
        """Whether an HNSW graph is being built for this index (`dense.py`)."""
        return self._dense.graph_pending

    def settle_graph(self, timeout: float | None = None) -> None:
        """Wait for the HNSW graph being built, if any, and take it up."""
        self._dense.settle_graph(timeout)

    def withdraw_graph(self) -> None:
        """Give up the HNSW graph being built, if any: this index is no longer kept."""
        self._dense.withdraw_graph()

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

    def vectors(self, slots: Sequence[int] | Slots) -> Vectors:
        """The stored vectors of live slots (a copy), as `items` gives their items."""
        return self._dense.vectors(np.asarray(slots, dtype=np.int64))

    def created(self, slots: Slots) -> npt.NDArray[np.float64]:
        return self._items.numbers["created"][slots]

    def importance(self, slots: Slots) -> npt.NDArray[np.float64]:
        return self._items.numbers["importance"][slots]

    def access_counts(self, slots: Slots) -> npt.NDArray[np.int64]:
        return self._items.numbers["access_count"][slots]

    def set_access_counts(self, counts: Mapping[str, int], accessed: int) -> None:
        """The store's access counts of the memories recalled after the user's recall count
        `self.accessed`, which is now `accessed`: recalls served by other processes, which move
        no revision, arrive with the next search, which reads the user's count of recalls with
        the revision (this process's own are counted at once, `count_access`). A memory this
        index does not hold is left to its own top-up."""
        slots = self._slot.get(MEMORY, {})
        column = self._items.numbers["access_count"]
        for memory_id, count in counts.items():
            slot = slots.get(memory_id)
            if slot is not None:
                column[slot] = count
        self.accessed = accessed

    def count_access(self, memory_ids: Iterable[str]) -> None:
        """One more use of each memory, as the store counts it: a search's access signal then
        sees the uses since this index was built (access counts do not move the revision)."""
        slots = self._slot.get(MEMORY, {})
        counts = self._items.numbers["access_count"]
        for memory_id in memory_ids:
            slot = slots.get(memory_id)
            if slot is not None:
                counts[slot] += 1

    def salience(self, slots: Slots) -> npt.NDArray[np.float32]:
        return self._cues.salience(slots)

    def gives_answer(self, wanted: Answers, slots: Slots) -> npt.NDArray[np.float32]:
        return self._cues.gives(wanted, slots)

    def named_speakers(self, query: str, asked_by: str | None = None) -> Named:
        """Whom the query names ("When did Caroline ...", "What is Nate's ..."), for
        `speakers_named`: speakers, and the user and agents by their names (`name_people`). A
        speaker called Will is not named by "Will I need a visa?". The words of the roles name
        the turns that give them and no speaker ("What does the user like?": `ROLE_WORDS`), and
        so, when the query says which side asks it (`asked_by`, a role's word), do its persons:
        the user's "What did I tell you?" names the user's turns and the assistant's. A query
        asked by a speaker by name (`asked_by="Bob"`, in a group chat where every human gives
        the role "user") names Bob's turns by "I" and everyone else's by "you"."""
        named = names_in(query, self.speaker_words)
        roles = named & ROLE_WORDS
        found = Named(
            speakers=frozenset(c for w in named for c in self._speaker_by_word.get(w, ())),
            user=bool(named & self._user_words) or Role.USER.value in roles,
            agents=frozenset(a for w in named for a in self._agents_by_word.get(w, ())),
            assistant=Role.ASSISTANT.value in roles,
        )
        if asked_by is None:
            return found
        first, second = persons_in(query)
        if not (first or second):
            return found  # no "I" nor "you": who asks names nobody
        me, you = self._persons(asked_by)
        if first:
            found |= me
        if second:
            found |= you
        return found

    def _persons(self, asked_by: str) -> tuple[Named, Named]:
        """Whom "I" and "you" name in a query asked by `asked_by`: a side (the user's "I" is
        the user, their "you" the assistant; an agent's the other way round), or a speaker by
        name (their own turns, and everyone else's)."""
        if asked_by == Role.USER.value:
            return Named(user=True), Named(assistant=True)
        if asked_by == Role.ASSISTANT.value:
            return Named(assistant=True), Named(user=True)
        asker = self._called(asked_by)
        return asker, self._all_but(asker)

    def _called(self, name: str) -> Named:
        """Who goes by `name`, whole and in any case: speakers, the user, agents. Only those
        whose name has the rarest of its words are compared, found through the name maps."""
        wanted = _name_key(name)
        speaker_names, agent_names = self._items.categories["speaker"].values, self._people.agents
        speakers = min((self._speaker_by_word.get(w, set()) for w in wanted), key=len)
        agents = min((self._agents_by_word.get(w, frozenset()) for w in wanted), key=len)
        return Named(
            speakers=frozenset(c for c in speakers if _name_key(speaker_names[c]) == wanted),
            user=self._people.user is not None and _name_key(self._people.user) == wanted,
            agents=frozenset(a for a in agents if _name_key(agent_names[a]) == wanted),
        )

    def _all_but(self, asker: Named) -> Named:
        """Everyone in the user's conversations but `asker`, whom their "you" names: an agent's
        "you" is the user and the other agents, anyone else's takes in every agent."""
        return Named(
            speakers=frozenset(self._speaker_slots) - asker.speakers,
            user=not asker.user,
            agents=frozenset(self._people.agents) - asker.agents,
            assistant=not asker.agents,
        )

    def speakers_named(self, named: Named, slots: Slots) -> npt.NDArray[np.float32]:
        """1.0 where the slot's speaker is named, or where a turn that gives no speaker is the
        named user's (role "user") or a named agent's, or any agent's for "assistant" (role
        "assistant"); else 0."""
        if not named:
            return np.zeros(len(slots), dtype=np.float32)
        speakers = self._items.categories["speaker"].codes[slots]
        found = np.isin(speakers, list(named.speakers))
        if named.user or named.agents or named.assistant:
            roles = self._items.categories["role"]
            unnamed = speakers < 0
            if named.user:
                found |= unnamed & roles.matches_at(slots, (Role.USER.value,))
            if named.agents or named.assistant:
                answers = unnamed & roles.matches_at(slots, (Role.ASSISTANT.value,))
                if not named.assistant:
                    answers &= self._items.categories["agent_id"].matches_at(slots, named.agents)
                found |= answers
        return found.astype(np.float32)


def _name_key(name: str) -> tuple[str, ...]:
    """A name as compared with an asker's: its words, lower-cased ("bob  Lee" is "Bob Lee")."""
    return tuple(words(name.lower()))


def _neighbours(sequence: list[int], at: int) -> set[int]:
    """The slots whose words a turn's document holds beside its own: the two before, the one
    after."""
    return {*sequence[max(at - CONTEXT_TURNS, 0) : at], *sequence[at + 1 : at + 2]}


def _joined(own: Mapping[int, list[str]], slots: Iterable[int]) -> list[str]:
    return [term for slot in slots for term in own[slot]]


@dataclass(frozen=True, slots=True)
class _Gaps:
    """What taking turns out of one session changes (`UserIndex.remove`), worked out before any
    turn's terms are read, so that exactly the turns it needs are read, all in one pass."""

    session_id: str
    gone: list[int]  # its removed turns
    kept: list[int]  # its live turns left, in `seq` order
    # a kept turn whose neighbours changed: the ones it loses, and the ones it gains
    rewired: list[tuple[int, set[int], set[int]]]
    tail: list[int] | None  # its last turns, when they changed

    @classmethod
    def of(cls, session_id: str, sequence: list[int], gone: Collection[int]) -> _Gaps:
        """The gaps `gone` leaves in a session whose live turns are `sequence` (slots in `seq`
        order, those going included). A turn's document holds the words of the two turns before
        it and the one after, so only the turn before a removed one and the two after it can be
        rewired."""
        kept = [slot for slot in sequence if slot not in gone]
        near_a_gap = {
            sequence[at + step]
            for at, slot in enumerate(sequence)
            if slot in gone
            for step in (-1, *range(1, CONTEXT_TURNS + 1))
            if 0 <= at + step < len(sequence)
        }
        now_at = {slot: at for at, slot in enumerate(kept)}
        rewired = []
        for at, slot in enumerate(sequence):
            if slot in near_a_gap and slot in now_at:
                had, has = _neighbours(sequence, at), _neighbours(kept, now_at[slot])
                if had != has:
                    rewired.append((slot, had - has, has - had))
        changed_tail = kept[-CONTEXT_TURNS:] != sequence[-CONTEXT_TURNS:]
        return cls(
            session_id=session_id,
            gone=[slot for slot in sequence if slot in gone],
            kept=kept,
            rewired=rewired,
            tail=kept[-CONTEXT_TURNS:] if changed_tail else None,
        )

    def slots_read(self) -> set[int]:
        """The turns whose own terms closing the gaps needs: none when the session goes whole."""
        if not self.kept:
            return set()
        read = {*self.gone, *(self.tail or ())}
        for _, lost, gained in self.rewired:
            read |= lost | gained
        return read
