"""Per-user indexes in memory, bounded in bytes, brought up to date by revision.

Each search asks the store for the user's revision. If the cached index is at that revision it
is used as is; if it is behind, only the rows written since are decrypted and added (and
tombstoned rows dropped), so a write is visible to the very next search without a rebuild.
The least recently used indexes are evicted when the byte budget is exceeded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import numpy as np

from memvault.retrieval.dense import Vectors
from memvault.retrieval.embed import BackgroundRun, Embedder, background_embed
from memvault.retrieval.graphs import GraphBuilds
from memvault.retrieval.idle import IdleThread
from memvault.retrieval.index import People, UserIndex
from memvault.retrieval.items import TURN, Item, searchable

ItemKey = tuple[str, str]

DEFAULT_MAX_BYTES = 1 << 30
GROWN_ITEMS = 1_000
# items embedded at a time by a background top-up (about 0.3 s with MiniLM on one thread of a
# quiet machine): what a top-up that gives way gives up at most, and closing waits for
EMBED_CHUNK = 64
# seconds between looks, while a background top-up's chunk is embedded, at whether a search of
# its user waits: the most a search waits for one
GIVE_WAY_POLL = 0.01


class Stopped(Exception):
    """A background top-up (`IndexCache.warm`) stopped, its vault closing or a search of its
    user waiting: the index is unchanged, and the vectors embedded so far are kept in the
    vector store for the next top-up."""


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

    def load(
        self, user_id: str, model: str, since_rev: int
    ) -> dict[ItemKey, tuple[int, Vectors]]: ...
    def extent(self, user_id: str, model: str) -> tuple[int, int]: ...
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
        # bytes per item of the last index measured: what `_has_room` goes by when no index is
        # cached, the last one let go for being too large among them
        self._last_bytes_per_item = 0.0
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

    def get(self, user_id: str, revision: int, recalls: int = 0) -> UserIndex:
        """Build or top up the user's index now, as a search would (to measure the cost)."""
        lock = self._user_lock(user_id)
        with lock:
            return self._current(user_id, lock, revision, recalls)

    def warm(self, user_id: str, revision: int, recalls: int, stop: threading.Event) -> None:
        """Bring the user's index to `revision` in the background, after writes (`warmer.py`).

        A cached index is topped up. One not cached is built only if the cache has room for it
        (`_has_room`): an index nobody has searched yet must not push out one that a search
        used. Otherwise only the vectors of the rows written after the newest stored vector
        are computed and stored, for whatever search builds the index later, here or in
        another process; the work then grows with the writes, not with the user's history (a
        stopped top-up may leave an older row without one: the search embeds it). Background
        top-ups leave an index where it was in the least-recently-used order.

        New items are embedded `EMBED_CHUNK` at a time, through the embedder's background path
        on the idle thread (`IdleThread`: the lowest CPU priority) where it has one, each chunk
        stored as it is done. `Stopped` is raised, the chunk under way given up, within
        `GIVE_WAY_POLL` of `stop` being set or a search of the user starting to wait (at the
        next chunk, for an embedder run on this thread); the search does the rest at full speed.
        """
        lock = self._user_lock(user_id)
        with lock:
            with self._lock:
                cached = user_id in self._indexes
            if cached or self._vectors is None:
                self._current(user_id, lock, revision, recalls, stop=stop)
                return
            stored, newest = self._vectors.extent(user_id, self.embedder.name)
            # the rows with no vector yet, mostly; with none stored, that is every row, read as
            # a build reads them (access counts and all), so that the build takes them as read
            whole = newest == 0
            changes = self._loader(user_id, newest, 0 if whole else recalls)
            if self._has_room(stored + len(changes.items)):
                loaded = changes if whole else None
                self._current(user_id, lock, revision, recalls, stop=stop, loaded=loaded)
            else:
                self._vectors_for(user_id, lock, searchable(changes.items), newest, stop)

    def _has_room(self, items: int) -> bool:
        """Whether an index of `items` items fits in the cache beside those it holds, at their
        bytes per item, or with none held at the last measured index's.

        Without that last figure, an index larger than the whole budget, built in the
        background and let go at once, would leave the cache empty and be built again, the
        user's whole history read and decrypted, after every write (any fits when nothing has
        been measured yet)."""
        with self._lock:
            held = sum(len(index) for index in self._indexes.values())
            per_item = self._total / held if held else self._last_bytes_per_item
            return self._total + items * per_item <= self.max_bytes

    def recalled_here(self, user_id: str, recalls: int) -> None:
        """An access write of this process made the user's count of recalls `recalls`.

        The index counted its uses when the search found them (`UserIndex.count_access`), so
        when it follows the count the index holds, the index needs nothing from the store for
        it; after another process's recall, the top-up reads both. Takes only the cache's own
        lock: the writer thread calling this must never wait for a user's index, whose top-up
        may be waiting for that writer."""
        with self._lock:
            self._recalls_here.setdefault(user_id, set()).add(recalls)

    def holds(self, user_id: str) -> bool:
        """Whether the user's index is cached here (another process's writes are taken up only
        for those: see `Recall.written_elsewhere`)."""
        with self._lock:
            return user_id in self._indexes

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
        loaded: Changes | None = None,
    ) -> UserIndex:
        """The user's index brought to `revision`, called holding the user's `lock` (with the
        user's whole change feed already `loaded`, when no index is cached). It is cached only
        if that lock is still the user's: `forget` lets go of the lock with the
        index, so a top-up under way when its user is deleted does not put the deleted user's
        words back in memory."""
        with self._lock:
            index = self._indexes.get(user_id)
        if index is not None and index.revision > revision:
            index = None  # the user was deleted and made anew: start again
        if index is None:
            index = UserIndex(self.embedder, **self._ann)
        if index.revision < revision or self._recalls_behind(user_id, index) < recalls:
            index = self._top_up(user_id, lock, index, stop, loaded)
            self._recalls_behind(user_id, index)  # forgets the recalls the top-up read
        size = index.nbytes()
        with self._lock:
            if self._locks.get(user_id) is not lock:  # forgotten meanwhile: the caller's only
                return index
            replaced = self._indexes.get(user_id)
            if replaced is not None and replaced is not index:
                replaced.withdraw_graph()  # made anew (a reset, a deleted user) or compacted
            self._indexes[user_id] = index
            if stop is None:  # a use, where a background top-up is none
                self._indexes.move_to_end(user_id)
            elif replaced is None:  # built in the background: not used yet, so first to go
                self._indexes.move_to_end(user_id, last=False)
            self._total += size - self._sizes.get(user_id, 0)
            self._sizes[user_id] = size
            if len(index):
                self._last_bytes_per_item = size / len(index)
            # a search keeps the index it uses; a background top-up may cost its own index
            # rather than one a search used more recently
            self._evict(keep=user_id if stop is None else None)
        return index

    def _top_up(
        self,
        user_id: str,
        lock: threading.Lock,
        index: UserIndex,
        stop: threading.Event | None = None,
        loaded: Changes | None = None,
    ) -> UserIndex:
        changes = (
            loaded if loaded is not None else self._loader(user_id, index.revision, index.accessed)
        )
        if changes.reset:
            index = UserIndex(self.embedder, **self._ann)
            with self._lock:  # recalls counted for the user before it was made anew
                self._recalls_here.pop(user_id, None)
        indexed = searchable(changes.items)
        turns = sorted(
            (i for i in indexed if i.type == TURN), key=lambda i: (i.session_id or "", i.seq)
        )
        ordered = turns + [i for i in indexed if i.type != TURN]
        # embedded before the index changes at all, so a stopped top-up leaves it as it was
        vectors = self._vectors_for(user_id, lock, ordered, index.revision, stop)
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
        lock: threading.Lock,
        items: list[Item],
        since_rev: int,
        stop: threading.Event | None,
    ) -> Vectors:
        """Vectors for `items`: stored ones where still current, the rest embedded and stored
        (a chunk at a time on the idle thread when the top-up may be stopped, each chunk kept
        as it is done)."""
        model = self.embedder.name
        out = np.zeros((len(items), self.embedder.dim), dtype=np.float32)
        missing = list(range(len(items)))
        if self._vectors is not None and items:
            stored = self._vectors.load(user_id, model, since_rev)
            missing = []
            for row, item in enumerate(items):
                found = stored.get((item.type, item.id))
                if found is not None and found[0] >= item.rev and len(found[1]) == len(out[row]):
                    out[row] = found[1]
                else:
                    missing.append(row)
        if stop is None:
            chunks = [missing] if missing else []
            embed: Callable[[Sequence[str]], Vectors] = self.embedder.embed
        else:
            chunks = _like_lengths(items, missing)
            embed = partial(self._embed_in_background, user_id, lock, stop)
        for rows in chunks:
            out[rows] = embed([items[r].key for r in rows])
            if self._vectors is not None:
                entries = [((items[r].type, items[r].id), items[r].rev, out[r]) for r in rows]
                self._vectors.save(user_id, model, entries)
        return out

    def _embed_in_background(
        self, user_id: str, lock: threading.Lock, stop: threading.Event, texts: Sequence[str]
    ) -> Vectors:
        """A chunk of a background top-up, which holds the user's `lock`: `Stopped` first if it
        should give way (`stop` set, a search of the user waiting, the user forgotten).

        An embedder with a background path (`background_embed`) is run on the idle thread, and
        the top-up does not wait for it blindly, since that thread gets no CPU while the
        machine is busy: it gives the chunk up as soon as it should give way, abandoning the
        run under way (`BackgroundRun`) so that it does not go on beside the search that takes
        over, and again if it should by the time the chunk is done, so that nothing of a
        deleted user is stored. An embedder without one is run here: it may hold the GIL
        throughout (the hashing one does), and a thread at the lowest priority holding the GIL
        stalls every other thread.
        """
        give_way = partial(self._gives_way, user_id, lock, stop)
        if give_way():
            raise Stopped
        embed = background_embed(self.embedder)
        if embed is None:
            return self.embedder.embed(texts)
        run = BackgroundRun()
        future: Future[Vectors] = self._idle.submit(partial(embed, texts, run))
        while True:
            try:
                vectors = future.result(timeout=GIVE_WAY_POLL)
            except TimeoutError:
                if give_way():
                    future.cancel()  # or, under way, it ends at once, unheard
                    run.abandon()
                    raise Stopped from None
                continue
            if give_way():
                raise Stopped
            return vectors

    def _gives_way(self, user_id: str, lock: threading.Lock, stop: threading.Event) -> bool:
        if stop.is_set() or self._awaited(user_id):
            return True
        with self._lock:
            return self._locks.get(user_id) is not lock

    def _evict(self, keep: str | None) -> None:
        """Called with the lock held: drop the least recently used indexes but `keep`'s until
        the total fits."""
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
        """Let the idle thread go, once background top-ups have stopped (`IndexWarmer.close`):
        it ends after the chunk under way, if any."""
        self._idle.close()

    def nbytes(self) -> int:
        """Bytes of the cached indexes, each as measured at its last checkout."""
        with self._lock:
            return self._total


def _like_lengths(items: Sequence[Item], rows: list[int]) -> list[list[int]]:
    """`rows` in chunks of `EMBED_CHUNK`, of texts of like length, as an embedder sorting the
    whole list would batch them: a chunk of mixed lengths pads its batches out (14% slower
    measured at 3,000 turns)."""
    ordered = sorted(rows, key=lambda r: len(items[r].key))
    return [ordered[start : start + EMBED_CHUNK] for start in range(0, len(ordered), EMBED_CHUNK)]
