"""Per-user indexes in memory, bounded in bytes, brought up to date by revision.

Each search asks the store for the user's revision. If the cached index is at that revision it
is used as is; if it is behind, only the rows written since are decrypted and added (and
tombstoned rows dropped), so a write is visible to the very next search without a rebuild.
The least recently used indexes are evicted when the byte budget is exceeded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import numpy as np

from memvault.retrieval.dense import Vectors
from memvault.retrieval.embed import Embedder, background_embed
from memvault.retrieval.graphs import GraphBuilds
from memvault.retrieval.idle import IdleThread
from memvault.retrieval.index import People, UserIndex
from memvault.retrieval.items import TURN, Item

ItemKey = tuple[str, str]
# vectors by item, with the revision of the item each was embedded at
Known = dict[ItemKey, tuple[int, Vectors]]

DEFAULT_MAX_BYTES = 1 << 30
GROWN_ITEMS = 1_000
# items embedded at a time by a background top-up (about 0.5 s with MiniLM on one thread on a
# quiet machine): what a stopped top-up gives up at most
EMBED_CHUNK = 64
# seconds between looks, while a chunk is embedded, at whether the top-up should stop
_POLL = 0.05


class Stopped(Exception):
    """A background top-up (`IndexCache.get` with `stop`) stopped, its vault closing or a
    search of its user waiting: the index is unchanged, and the vectors embedded so far are
    kept in the vector store for the next top-up."""


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed for a user after a revision: new or rewritten items, and removed keys."""

    revision: int
    items: list[Item] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)
    reset: bool = False  # the user was deleted and made anew since: drop the old index
    # what the user and agents are called now, opened only when `people_key` (a digest of the
    # sealed names) is not the index's: a profile is whatever JSON the user keeps, and every
    # write would open it again
    people_key: bytes = b""
    people: Callable[[], People] = People
    # the user's count of recalls, and the access counts of the memories recalled after the
    # one the index had: recalls in other processes move no revision
    accessed: int = 0
    access_counts: Mapping[str, int] = field(default_factory=dict)


# user id, the index's revision and its count of the user's recalls (`UserIndex.accessed`)
Loader = Callable[[str, int, int], Changes]


class VectorStore(Protocol):
    """Where computed vectors are kept between processes (see `vectors.SealedVectors`)."""

    def load(self, user_id: str, model: str, since_rev: int) -> Known: ...
    def save(
        self, user_id: str, model: str, entries: list[tuple[ItemKey, int, Vectors]]
    ) -> None: ...
    def delete(self, user_id: str, keys: list[ItemKey]) -> None: ...


class IndexCache:
    """Thread-safe LRU of `UserIndex` by user id. One lock per user serialises its top-ups."""

    def __init__(
        self,
        embedder: Embedder,
        loader: Loader,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        ann_threshold: int | None = None,
        vectors: VectorStore | None = None,
        graphs: GraphBuilds | None = None,
    ) -> None:
        self.embedder = embedder
        self._loader = loader
        self._vectors = vectors
        self.max_bytes = max_bytes
        # how each new index is made: its HNSW threshold, and where its graphs are built
        self._ann: dict[str, Any] = {"graphs": graphs}
        if ann_threshold is not None:
            self._ann["ann_threshold"] = ann_threshold
        self._indexes: OrderedDict[str, UserIndex] = OrderedDict()
        # each index's bytes as of its last checkout, and their sum: a search measures only its
        # own user's index (about 5 us), not every cached one
        self._sizes: dict[str, int] = {}
        self._total = 0
        self._locks: dict[str, threading.Lock] = {}
        # by user, the searches waiting for its lock: a background top-up gives way to them
        self._waiting: dict[str, int] = {}
        # by user, the counts of recalls this process's own access writes made (see
        # `recalled_here`), until an index reaches them
        self._recalls_here: dict[str, set[int]] = {}
        self._lock = threading.Lock()
        # called once the indexes have taken GROWN_ITEMS items since the last call, in one
        # top-up or many small ones (a server settles its garbage collector there: see
        # memvault.api.serve)
        self.on_grown: Callable[[], None] | None = None
        self._grown = 0
        # where background top-ups embed (`get` with `stop`)
        self._idle = IdleThread("memvault-idle-embedder")

    def _user_lock(self, user_id: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(user_id, threading.Lock())

    @contextmanager
    def checkout(self, user_id: str, revision: int, recalls: int = 0) -> Iterator[UserIndex]:
        """The user's index at `revision` or later, counting the user's `recalls` or more,
        held exclusively while the block runs.

        Top-ups change an index in place, so a search must not run beside one; holding the
        user's lock for the search serialises the two for that user only. Recalls move no
        revision, so an index that counts fewer than the store is topped up too, for the
        access counts that other processes' recalls moved; this process's own are in the
        index already (`recalled_here`).
        """
        lock = self._user_lock(user_id)
        with self._lock:
            self._waiting[user_id] = self._waiting.get(user_id, 0) + 1
        try:
            lock.acquire()
        finally:
            with self._lock:
                self._waiting[user_id] -= 1
                if not self._waiting[user_id]:
                    del self._waiting[user_id]
        try:
            yield self._current(user_id, lock, revision, recalls)
        finally:
            lock.release()

    def _awaited(self, user_id: str) -> bool:
        with self._lock:
            return user_id in self._waiting

    def get(
        self,
        user_id: str,
        revision: int,
        recalls: int = 0,
        *,
        stop: threading.Event | None = None,
    ) -> UserIndex:
        """Build or top up the user's index now (to warm it, or to measure the cost).

        With `stop`, this is a background top-up, in two steps. First, holding no lock, what
        the index lacks is embedded on the idle thread (`IdleThread`: the lowest CPU priority,
        through the embedder's background path, `background_embed`), `EMBED_CHUNK` items at a
        time, each chunk stored as it is done. `Stopped` is raised, the chunk under way given
        up, once `stop` is set or a search of the user has begun a top-up of its own: it
        embeds what is left at full speed, and waits for none of this. Then, holding the
        user's lock, the index takes those vectors, and embeds at normal priority only what
        was written meanwhile. Without `stop`, all is embedded in one call, as a search does.
        """
        lock = self._user_lock(user_id)
        embedded = {} if stop is None else self._embed_ahead(user_id, lock, stop)
        with lock:
            return self._current(user_id, lock, revision, recalls, stop=stop, embedded=embedded)

    def _embed_ahead(self, user_id: str, lock: threading.Lock, stop: threading.Event) -> Known:
        """Embed the items written since the cached index's revision that have no stored
        vector, on the idle thread, chunk by chunk, each stored as it comes back; again for
        what was written meanwhile, until nothing is left. Holds no lock of the user's, so a
        search never waits for it; gives up once one has begun a top-up past what this read
        (`_taken_over`)."""
        with self._lock:
            index = self._indexes.get(user_id)
        since, accessed = (0, 0) if index is None else (index.revision, index.accessed)
        embedded: Known = {}
        embed = background_embed(self.embedder)
        while True:
            changes = self._loader(user_id, since, accessed)
            _, missing = self._known_vectors(user_id, changes.items, since, embedded)
            if not missing:
                return embedded
            for chunk in _like_lengths(changes.items, missing):
                texts = [changes.items[r].key for r in chunk]
                future = self._idle.submit(partial(embed, texts))
                vectors = _result(future, partial(self._taken_over, user_id, lock, changes, stop))
                entries = [_entry(changes.items[r], v) for r, v in zip(chunk, vectors, strict=True)]
                self._store_vectors(user_id, entries)
                embedded.update((key, (rev, vector)) for key, rev, vector in entries)
            since = changes.revision

    def _taken_over(
        self, user_id: str, lock: threading.Lock, changes: Changes, stop: threading.Event
    ) -> bool:
        """Whether embedding `changes` ahead should stop: the vault is closing, the user's
        lock is held (a search topping up or waiting to), the user was forgotten (`forget`
        lets go of the lock), or the index has come to the changes' revision."""
        if stop.is_set() or lock.locked():
            return True
        with self._lock:
            index = self._indexes.get(user_id)
            return self._locks.get(user_id) is not lock or (
                index is not None and index.revision >= changes.revision
            )

    def recalled_here(self, user_id: str, recalls: int) -> None:
        """An access write of this process made the user's count of recalls `recalls`.

        The index counted its uses when the search found them (`UserIndex.count_access`), so
        when it follows the count the index holds, the index needs nothing from the store for
        it; after another process's recall, the top-up reads both. Takes only the cache's own
        lock: the writer thread calling this must never wait for a user's index, whose top-up
        may be waiting for that writer."""
        with self._lock:
            self._recalls_here.setdefault(user_id, set()).add(recalls)

    def speaker_words(self, user_id: str) -> frozenset[str] | None:
        """The speakers' names in the user's cached index, or None when none is cached: what a
        search needs to start embedding its query before the checkout (which may top the index
        up with a new speaker, so the search looks again once it holds the index)."""
        with self._lock:
            index = self._indexes.get(user_id)
        return None if index is None else index.speaker_words

    def _current(
        self,
        user_id: str,
        lock: threading.Lock,
        revision: int,
        recalls: int,
        *,
        stop: threading.Event | None = None,
        embedded: Known | None = None,
    ) -> UserIndex:
        """The user's index brought to `revision`, called holding the user's `lock`, with any
        vectors just `embedded` for it. It is
        cached only if that lock is still the user's: `forget` lets go of the lock with the
        index, so a top-up under way when its user is deleted does not put the deleted user's
        words back in memory."""
        with self._lock:
            index = self._indexes.get(user_id)
        if index is not None and index.revision > revision:
            index = None  # the user was deleted and made anew: start again
        if index is None:
            index = UserIndex(self.embedder, **self._ann)
        if index.revision < revision or self._recalls_behind(user_id, index) < recalls:
            index = self._top_up(user_id, index, stop, embedded or {})
            self._recalls_behind(user_id, index)  # forgets the recalls the top-up read
        size = index.nbytes()
        with self._lock:
            if self._locks.get(user_id) is not lock:  # forgotten meanwhile: the caller's only
                return index
            replaced = self._indexes.get(user_id)
            if replaced is not None and replaced is not index:
                replaced.withdraw_graph()  # made anew (a reset, a deleted user) or compacted
            self._indexes[user_id] = index
            self._indexes.move_to_end(user_id)
            self._total += size - self._sizes.get(user_id, 0)
            self._sizes[user_id] = size
            self._evict(keep=user_id)
        return index

    def _top_up(
        self, user_id: str, index: UserIndex, stop: threading.Event | None, embedded: Known
    ) -> UserIndex:
        changes = self._loader(user_id, index.revision, index.accessed)
        if changes.reset:
            index = UserIndex(self.embedder, **self._ann)
            with self._lock:  # recalls counted for the user before it was made anew
                self._recalls_here.pop(user_id, None)
        turns = sorted(
            (i for i in changes.items if i.type == TURN),
            key=lambda i: (i.session_id or "", i.seq),
        )
        ordered = turns + [i for i in changes.items if i.type != TURN]
        # embedded before the index changes at all, so a stopped top-up leaves it as it was
        vectors = self._vectors_for(user_id, ordered, index.revision, stop, embedded)
        index.remove(changes.removed)
        if ordered:
            index.add(ordered, vectors)
            self._count_growth(len(ordered))
        if changes.removed and self._vectors is not None:
            self._vectors.delete(user_id, changes.removed)
        index.revision = changes.revision
        if changes.people_key != index.people_key:
            index.name_people(changes.people(), changes.people_key)
        index.set_access_counts(changes.access_counts, changes.accessed)
        if index.compaction_due():
            index = index.compacted()
        return index

    def _count_growth(self, added: int) -> None:
        with self._lock:
            self._grown += added
            grown = self._grown >= GROWN_ITEMS
            if grown:
                self._grown = 0
        if grown and self.on_grown is not None:
            self.on_grown()

    def _recalls_behind(self, user_id: str, index: UserIndex) -> int:
        """The count of recalls `index` holds, moved on past this process's own recalls that
        follow it (`recalled_here`); those at or below it are forgotten."""
        with self._lock:
            own = self._recalls_here.get(user_id)
            if own:
                while index.accessed + 1 in own:
                    index.accessed += 1
                own.difference_update([n for n in own if n <= index.accessed])
                if not own:
                    del self._recalls_here[user_id]
        return index.accessed

    def _vectors_for(
        self,
        user_id: str,
        items: list[Item],
        since_rev: int,
        stop: threading.Event | None,
        embedded: Known,
    ) -> Vectors:
        """Vectors for `items`: those just `embedded` or stored, where still current, and the
        rest embedded and stored (a chunk at a time when the top-up may be stopped, each chunk
        kept as it is done)."""
        out, missing = self._known_vectors(user_id, items, since_rev, embedded)
        chunks = [missing] if missing else []
        embed: Callable[[Sequence[str]], Vectors] = self.embedder.embed
        if stop is not None:
            chunks, embed = _like_lengths(items, missing), background_embed(self.embedder)
        for rows in chunks:
            if stop is not None and (stop.is_set() or self._awaited(user_id)):
                raise Stopped
            out[rows] = embed([items[r].key for r in rows])
            self._store_vectors(user_id, [_entry(items[r], out[r]) for r in rows])
        return out

    def _known_vectors(
        self, user_id: str, items: list[Item], since_rev: int, embedded: Known
    ) -> tuple[Vectors, list[int]]:
        """The vectors of `items` that are `embedded` or else stored, for their current
        revision, and the rows of those that are neither (the store is read only for those
        not just `embedded`)."""
        out = np.zeros((len(items), self.embedder.dim), dtype=np.float32)
        missing = _fill(out, items, range(len(items)), embedded)
        if missing and self._vectors is not None:
            stored = self._vectors.load(user_id, self.embedder.name, since_rev)
            missing = _fill(out, items, missing, stored)
        return out, missing

    def _store_vectors(self, user_id: str, entries: list[tuple[ItemKey, int, Vectors]]) -> None:
        if self._vectors is not None:
            self._vectors.save(user_id, self.embedder.name, entries)

    def _evict(self, keep: str) -> None:
        """Called with the lock held: drop the least recently used indexes until the total fits."""
        for user_id in list(self._indexes):
            if self._total <= self.max_bytes:
                break
            if user_id != keep:
                self._drop(user_id)
                lock = self._locks.get(user_id)
                if lock is not None and not lock.locked():
                    del self._locks[user_id]

    def _drop(self, user_id: str) -> None:
        """Let go of a user's index; a graph still to come for it is given up with it, or its
        build would hold a copy of the user's vectors outside the cache's bound until done."""
        index = self._indexes.pop(user_id, None)
        if index is not None:
            index.withdraw_graph()
        self._total -= self._sizes.pop(user_id, 0)
        self._recalls_here.pop(user_id, None)  # a new index reads the store's count

    def settle_graph(self, user_id: str, timeout: float | None = None) -> None:
        """Wait for the HNSW graph being built for the user's cached index, if any, and take it
        up (a search would, once it has come): to warm an index, or before measuring one."""
        with self._user_lock(user_id):
            with self._lock:
                index = self._indexes.get(user_id)
            if index is not None:
                index.settle_graph(timeout)

    def forget(self, user_id: str) -> None:
        """Drop a user's index (deleted user, or a change the revision cannot show).

        A top-up or search of the user under way holds the lock let go of here, so it does
        not cache its index when it ends (`_current`). Nothing waits for it, so the thread
        that relays another process's deletion is not held up by a build here."""
        with self._lock:
            self._drop(user_id)
            self._locks.pop(user_id, None)

    def close(self) -> None:
        """Let the idle thread go (after background top-ups have stopped: `IndexWarmer`)."""
        self._idle.close()

    def nbytes(self) -> int:
        """Bytes of the cached indexes, each as measured at its last checkout."""
        with self._lock:
            return self._total


def _fill(out: Vectors, items: Sequence[Item], rows: Iterable[int], known: Known) -> list[int]:
    """Copy into `out` the vectors `known` for the items at `rows`, where they belong to the
    item's current revision and have the right length; return the rows left without one."""
    missing = []
    for row in rows:
        item = items[row]
        found = known.get((item.type, item.id))
        if found is not None and found[0] >= item.rev and len(found[1]) == out.shape[1]:
            out[row] = found[1]
        else:
            missing.append(row)
    return missing


def _entry(item: Item, vector: Vectors) -> tuple[ItemKey, int, Vectors]:
    """A vector as stored: under its item's key, with the revision it was embedded at."""
    return (item.type, item.id), item.rev, vector


def _like_lengths(items: Sequence[Item], rows: list[int]) -> list[list[int]]:
    """`rows` in chunks of `EMBED_CHUNK`, of texts of like length, as an embedder sorting the
    whole list would batch them: a chunk of mixed lengths pads its batches out (14% slower
    measured at 3,000 turns)."""
    ordered = sorted(rows, key=lambda r: len(items[r].key))
    return [ordered[start : start + EMBED_CHUNK] for start in range(0, len(ordered), EMBED_CHUNK)]


def _result(future: Future[Vectors], give_up: Callable[[], bool]) -> Vectors:
    """The future's vectors once done, looking at `give_up` every `_POLL` seconds meanwhile
    and once more after; `Stopped` if it says so (the call, if under way, ends unheard)."""
    while True:
        try:
            vectors = future.result(timeout=_POLL)
        except TimeoutError:
            if give_up():
                future.cancel()
                raise Stopped from None
            continue
        if give_up():  # the user may be gone: store nothing of theirs
            raise Stopped
        return vectors
