"""The search use case behind `Vault.search`: validate, fetch the user's index, rank, record use.

`Vault` owns the store and the keys; this owns the index cache and the ranking. The two meet
through two callables: the user's current revision, and a loader that decrypts what changed
since a revision. Access counts are written by a single background thread so that a search
never waits on a database write.

The query's embedding is most of a hybrid search, so it starts on a worker thread once the user
is known to have something to search, and runs beside the index checkout and the BM25 walk (the
model releases the GIL); `QueryVectors` keeps it for a moment so that a context assembled for
the text just searched does not embed it again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import NamedTuple, TypeVar

from memvault import validate as v
from memvault.errors import Invalid
from memvault.model import Channel, MemoryKind, Role, Tier, utcnow
from memvault.retrieval.cache import DEFAULT_MAX_BYTES, Changes, IndexCache, Loader, VectorStore
from memvault.retrieval.embed import Embedder, Vectors
from memvault.retrieval.fusion import Weights
from memvault.retrieval.graphs import GraphBuilds
from memvault.retrieval.index import Filters, UserIndex
from memvault.retrieval.items import ITEM_TYPES, MEMORY, Item
from memvault.retrieval.search import (
    Hit,
    Query,
    check_query,
    check_search_limit,
    dense_query_text,
    search_index,
)
from memvault.retrieval.text import words
from memvault.retrieval.thesaurus import shipped_thesaurus
from memvault.retrieval.tokens import load_tokenizer
from memvault.retrieval.warmer import REMOTE_QUIET, IndexWarmer

log = logging.getLogger(__name__)

QUERY_VECTORS = 256
QUERY_VECTOR_SECONDS = 60.0
HANDOVER_SECONDS = 0.005  # at most: a worker is normally picked up in well under 0.1 ms
EMBED_THREADS = 32  # threads are made only when none is idle: one or two on a quiet server
STANDING_LIMIT = 100  # pinned memories, and facts, that a context may hold

_T = TypeVar("_T")

_Key = tuple[str, bytes]  # user id, keyed digest of the query text

# the sides a query may say it is asked by (`Recall.search`'s `asked_by`)
ASKERS = (Role.USER.value, Role.ASSISTANT.value)


def _choices(field: str, values: Iterable[str] | None, allowed: Sequence[str]) -> frozenset[str]:
    if isinstance(values, str):
        raise Invalid(field, "must be a list, not a single string")
    chosen = frozenset(values or ())
    unknown = chosen - set(allowed)
    if unknown:
        raise Invalid(field, f"unknown value; expected any of: {', '.join(allowed)}")
    return chosen


def build_filters(
    *,
    now: datetime,
    types: Iterable[str] | None = None,
    kinds: Iterable[str] | None = None,
    tiers: Iterable[str] | None = None,
    session_id: str | None = None,
    agent_id: str | None = None,
    channel: str | None = None,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    tags: Iterable[str] | None = None,
    seen_by_agent: str | None = None,
) -> Filters:
    """Check every filter argument, naming the bad one, and bundle them."""
    chosen_types = _choices("types", types, ITEM_TYPES) if types is not None else None
    if chosen_types is not None and not chosen_types:
        raise Invalid("types", "must name at least one of: turn, memory")
    start = v.check_optional_time("since", since)
    end = v.check_optional_time("until", until)
    if start is not None and end is not None and start > end:
        raise Invalid("since", "is after until")
    kind_values = [k.value for k in MemoryKind]
    tier_values = [t.value for t in Tier]
    return Filters(
        types=chosen_types or frozenset(ITEM_TYPES),
        kinds=None if kinds is None else _choices("kinds", kinds, kind_values),
        tiers=None if tiers is None else _choices("tiers", tiers, tier_values),
        session_id=v.check_optional_id("session_id", session_id),
        agent_id=v.check_optional_id("agent_id", agent_id),
        channel=None if channel is None else v.check_enum("channel", channel, Channel).value,
        since=start,
        until=end,
        tags=None if tags is None else frozenset(v.check_strings("tags", tags)),
        now=now,
        seen_by_agent=v.check_optional_id("seen_by_agent", seen_by_agent),
    )


def _checked_query(
    text: str,
    *,
    limit: int,
    filters: Filters,
    now: datetime,
    min_score: float | None,
    explain: bool,
    asked_by: str | None,
) -> Query:
    """A search request, each argument checked (an `Invalid` names the bad one)."""
    return Query(
        text=check_query(text),
        limit=check_search_limit(limit),
        filters=filters,
        now=now,
        min_score=v.check_optional_number("min_score", min_score, 0, 1),
        explain=v.check_bool("explain", explain),
        asked_by=_check_asker(asked_by),
    )


def _check_asker(asked_by: object) -> str | None:
    """Who asks a query, if it says (whom its "I" and "you" mean): a side, "user" or
    "assistant" in any case, or a speaker by name, as turns give it (a group chat's "Bob")."""
    if asked_by is None:
        return None
    name = v.check_text("asked_by", asked_by, max_bytes=v.MAX_SHORT_TEXT)
    side = name.strip().lower()
    if side in ASKERS:
        return Role(side).value
    if not words(name):
        raise Invalid("asked_by", f"names nobody; expected {', '.join(ASKERS)} or a speaker's name")
    return name


class QueryVectors:
    """Query embeddings by user and text, computed on worker threads and kept briefly.

    An entry is a future, so a search can start the embedding early and collect it when the
    ranking needs it, and a second search of the same text (the usual search-then-context) gets
    the same vector without running the model. Keys are the user id and a digest of the text
    keyed with a per-process secret: no query text is kept after its search. Being per user,
    one user's query never makes another's faster, so timing reveals nothing across users.
    Bounded in entries and in age; never written anywhere.
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        max_entries: int = QUERY_VECTORS,
        max_age: float = QUERY_VECTOR_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._embedder = embedder
        self._max_entries = max_entries
        self._max_age = max_age
        self._clock = clock
        self._secret = os.urandom(32)
        self._entries: OrderedDict[_Key, tuple[float, Future[Vectors]]] = OrderedDict()
        self._lock = threading.Lock()
        self._workers = ThreadPoolExecutor(EMBED_THREADS, thread_name_prefix="memvault-embed")
        self._closed = False

    def vector(self, user_id: str, text: str) -> Future[Vectors]:
        """The embedding of `text` (one row) for this user: kept, under way, or started now.

        A new embedding is handed over before this returns: the worker needs the GIL to
        tokenise, and a caller going on with the ranking in Python would hold it for up to the
        interpreter's switch interval (5 ms), leaving the model idle meanwhile. Once the model
        runs it releases the GIL, and the two proceed side by side.
        """
        key = (user_id, hashlib.blake2b(text.encode(), key=self._secret).digest())
        with self._lock:
            kept = None if self._closed else self._kept_or_started(key, text)
        if kept is None:  # closed: no workers left, so embed on the caller's thread
            future: Future[Vectors] = Future()
            future.set_result(self._embed(text, threading.Event()))
            return future
        future, started = kept
        if started is not None:
            started.wait(HANDOVER_SECONDS)
        return future

    def _embed(self, text: str, started: threading.Event) -> Vectors:
        """Read-only: one array is handed to every search of the text, none may change it."""
        started.set()
        vectors = self._embedder.embed_query(text)
        vectors.flags.writeable = False
        return vectors

    def _kept_or_started(
        self, key: _Key, text: str
    ) -> tuple[Future[Vectors], threading.Event | None]:
        """Called with the lock held: the entry, and the event a new embedding sets once it
        starts (None for a kept one). A failed embedding is raised once, then tried again."""
        now = self._clock()
        self._drop_expired(now)
        entry = self._entries.get(key)
        if entry is not None and not _failed(entry[1]):
            return entry[1], None
        started = threading.Event()
        future = self._workers.submit(self._embed, text, started)
        self._entries.pop(key, None)
        self._entries[key] = (now, future)  # at the end: the order stays the order of age
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return future, started

    def _drop_expired(self, now: float) -> None:
        """Entries are in order of age, so the expired ones are at the front."""
        while self._entries:
            created, _ = next(iter(self._entries.values()))
            if now - created < self._max_age:
                break
            self._entries.popitem(last=False)

    def forget(self, user_id: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k[0] == user_id]:
                del self._entries[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def close(self) -> None:
        """Stop the workers and drop every entry; later calls embed on the caller's thread."""
        with self._lock:
            self._closed = True
            self._entries.clear()
        self._workers.shutdown(wait=True, cancel_futures=True)


def _failed(future: Future[Vectors]) -> bool:
    return future.done() and (future.cancelled() or future.exception() is not None)


class Standing(NamedTuple):
    """What a context holds besides the search's hits (`_standing_of`)."""

    pinned: list[Item]
    facts: list[Item]
    recent: list[Item]


def _standing_of(
    index: UserIndex,
    *,
    agent_id: str | None,
    now: datetime,
    session_id: str | None,
    channel_limits: Mapping[str, int],
) -> Standing:
    """What a context holds besides what the search found: the user's pinned memories and
    their facts not pinned, each newest first and live at `now` (one agent's alone with
    `agent_id`), at most `STANDING_LIMIT` of each, and the newest turns of the session under way,
    `channel_limits[channel]` of each channel, oldest first. Read from the index, they are
    already decrypted, where the store would decrypt them again on every call."""
    limit = STANDING_LIMIT
    pinned = index.memories(pinned=True, kinds=None, agent_id=agent_id, now=now, limit=limit)
    facts = index.memories(
        pinned=False, kinds=frozenset(("fact",)), agent_id=agent_id, now=now, limit=limit
    )
    recent = [] if session_id is None else index.recent_turns(session_id, channel_limits)
    return Standing(pinned, facts, recent)


class Recall:
    """Search over per-user indexes kept in a byte-bounded cache."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        revision_and_recalls: Callable[[str], tuple[int, int]],
        loader: Loader,
        record_access: Callable[[str, list[str], datetime], int | None],
        max_bytes: int = DEFAULT_MAX_BYTES,
        ann_threshold: int | None = None,
        weights: Weights | None = None,
        vectors: VectorStore | None = None,
        graph_builds: bool = True,
        warm_indexes: bool = True,
    ) -> None:
        # by user, the last access write submitted and not yet done (the writer runs them in
        # order, so it stands for all of them)
        self._access_writes: dict[str, Future[None]] = {}
        self._access_lock = threading.Lock()
        # HNSW graphs built in another process (`graphs.py`), or inline when not
        self._graphs = GraphBuilds() if graph_builds else None
        self.cache = IndexCache(
            embedder,
            self._after_access_writes(loader),
            max_bytes=max_bytes,
            ann_threshold=ann_threshold,
            vectors=vectors,
            graphs=self._graphs,
        )
        self.weights = weights or Weights()
        self.query_vectors = QueryVectors(embedder)
        self._revision_and_recalls = revision_and_recalls
        self._record_access = record_access
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memvault-access")
        self._closed = threading.Event()
        # indexes topped up after writes, off the next search's path (`warmer.py`)
        self.warmer = IndexWarmer(self._warm) if warm_indexes else None

    def _after_access_writes(self, loader: Loader) -> Loader:
        """`loader`, run once the user's access counts in flight are written. The cached index
        counts a use at once and the store a moment later; a memory rewritten in that moment
        would otherwise come back into the index without the use. Searches never wait here:
        only a top-up does, and only while a write for the same user is under way."""

        def load(user_id: str, revision: int, accessed: int) -> Changes:
            with self._access_lock:
                pending = self._access_writes.get(user_id)
            if pending is not None:
                pending.result()  # `_record` logs its own errors: this never raises
            return loader(user_id, revision, accessed)

        return load

    def search(
        self,
        user_id: str,
        query: str,
        *,
        limit: int = 10,
        types: Iterable[str] | None = ("turn", "memory"),
        kinds: Iterable[str] | None = None,
        tiers: Iterable[str] | None = None,
        session_id: str | None = None,
        agent_id: str | None = None,
        channel: str | None = None,
        since: datetime | str | None = None,
        until: datetime | str | None = None,
        tags: Iterable[str] | None = None,
        now: datetime | str | None = None,
        min_score: float | None = None,
        explain: bool = False,
        asked_by: str | None = None,
        weights: Weights | None = None,
        record_access: bool = True,
        seen_by_agent: str | None = None,
    ) -> list[Hit]:
        """Rank the user's turns and memories for `query`. With `seen_by_agent`, memories of
        other agents (and of none) are left out before ranking, so an agent's page is full and
        only memories it was shown have their access recorded. `asked_by` ("user" or
        "assistant") says who wrote the query, so that its "I" and "you" name that side's turns
        and the other's ("What did I tell you about my sister?"). In a group chat, where every
        human gives the role "user", it may name the speaker who asks, as their turns give it
        (`asked_by="Bob"`): "I" then names Bob's turns, "you" everyone else's."""
        v.check_id("user_id", user_id)
        moment = utcnow() if now is None else v.check_time("now", now)
        filters = build_filters(
            types=types, kinds=kinds, tiers=tiers, session_id=session_id, agent_id=agent_id,
            channel=channel, since=since, until=until, tags=tags, now=moment,
            seen_by_agent=seen_by_agent,
        )  # fmt: skip
        request = _checked_query(
            query, limit=limit, filters=filters, now=moment, min_score=min_score,
            explain=explain, asked_by=asked_by,
        )  # fmt: skip
        hits, _ = self._ranked(user_id, request, weights or self.weights, record_access)
        return hits

    def for_context(
        self,
        user_id: str,
        query: str,
        *,
        limit: int,
        now: datetime,
        min_score: float | None,
        agent_id: str | None = None,
        session_id: str | None = None,
        channel_limits: Mapping[str, int] | None = None,
        asked_by: str | None = None,
    ) -> tuple[list[Hit], Standing]:
        """What a context reads of the index, in one checkout at one revision: the search's
        hits for `query` (memories of `agent_id` alone, when given) and what it holds besides
        them (`_standing_of`). Read in two checkouts, a write landing between them could show a
        memory in one section and leave it out of another."""
        filters = build_filters(now=now, seen_by_agent=agent_id)
        request = _checked_query(
            query, limit=limit, filters=filters, now=now, min_score=min_score, explain=False,
            asked_by=asked_by,
        )  # fmt: skip
        standing = functools.partial(
            _standing_of, agent_id=agent_id, now=now, session_id=session_id,
            channel_limits=channel_limits or {},
        )  # fmt: skip
        hits, read = self._ranked(user_id, request, self.weights, record_access=True, also=standing)
        return hits, read or Standing([], [], [])

    def _ranked(
        self,
        user_id: str,
        request: Query,
        chosen: Weights,
        record_access: bool,
        also: Callable[[UserIndex], _T] | None = None,
    ) -> tuple[list[Hit], _T | None]:
        """The search of a checked request, and what `also` reads of the index in the same
        checkout (None for a user with nothing to search)."""
        v.check_id("user_id", user_id)
        embed = chosen.dense > 0
        # started before the revision is read (a round trip on PostgreSQL) and the checkout,
        # with the names of the cached index, if there is one; if the checkout builds the
        # index or adds a speaker, the text is made again from the new names (when it comes
        # out the same, its vector is the one already under way)
        known = self.cache.speaker_words(user_id) if embed else None
        vector = None
        if known is not None:
            vector = self.query_vectors.vector(user_id, dense_query_text(request.text, known))
        revision, recalls = self._revision_and_recalls(user_id)
        if revision == 0:
            return [], None
        with self.cache.checkout(user_id, revision, recalls) as index:
            if embed and index.speaker_words is not known:
                names = index.speaker_words
                vector = self.query_vectors.vector(user_id, dense_query_text(request.text, names))
            hits = search_index(
                index, request, chosen, query_vector=vector.result if vector else None
            )
            recalled = [h.id for h in hits if h.type == MEMORY]
            if record_access and recalled and not self._closed.is_set():
                index.count_access(recalled)  # this index's count now, the store's on the writer
                self._submit_access(user_id, recalled)
            read = None if also is None else also(index)
        return hits, read

    def _submit_access(self, user_id: str, memory_ids: list[str]) -> None:
        """Queue the store's access write, remembered as the user's latest until it is done
        (called with the user's index held, so no top-up reads the rows before it is queued)."""
        write = self._writer.submit(self._record, user_id, memory_ids, utcnow())
        with self._access_lock:
            self._access_writes[user_id] = write

        def done(finished: Future[None]) -> None:
            with self._access_lock:
                if self._access_writes.get(user_id) is finished:
                    del self._access_writes[user_id]

        write.add_done_callback(done)

    def prepare(self) -> None:
        """Load now what the first search or context would otherwise load: the query model
        (derived on a machine's first start, about 2 s), the related-words file and the
        tokenizer that counts a context's tokens (40 ms of the first context otherwise). A
        server calls this before it listens, so its first user does not wait for them. An
        embedder that cannot answer yet (a remote endpoint still starting) is left to the first
        search: a warm-up must not keep the server from starting."""
        shipped_thesaurus()
        load_tokenizer()
        try:
            self.cache.embedder.embed_query("memvault")
        except Exception as exc:  # logged by type only, and tried again by the first search
            log.warning("query embedder not warmed up (%s)", type(exc).__name__)

    def _record(self, user_id: str, memory_ids: list[str], moment: datetime) -> None:
        """Runs on the writer thread, where no caller can see an error: log it instead."""
        try:
            recalls = self._record_access(user_id, memory_ids, moment)
        except Exception as exc:  # logged by type only: no stack, nothing of the user's
            log.error("recording memory access failed: %s", type(exc).__name__)
            return
        if recalls is not None:
            self.cache.recalled_here(user_id, recalls)

    def written(self, user_id: str) -> None:
        """A write for the user has committed (`Vault` calls this): top its index up soon."""
        if self.warmer is not None:
            self.warmer.written(user_id)

    def written_elsewhere(self, user_id: str) -> None:
        """Another process wrote for the user (an event relayed over PostgreSQL): top the
        user's index up here too, if it is cached, after a longer pause (`REMOTE_QUIET`) that
        lets the writer store the vectors first. An index not cached is left to its first
        search, as it would be in a process that never saw the write: every server building
        every written user's index would fill each cache with the others' users."""
        if self.warmer is not None and self.cache.holds(user_id):
            self.warmer.written(user_id, quiet=REMOTE_QUIET)

    def _warm(self, user_id: str, stop: threading.Event) -> None:
        revision, recalls = self._revision_and_recalls(user_id)
        if revision:  # 0: deleted since the write
            self.cache.warm(user_id, revision, recalls, stop)

    def forget(self, user_id: str) -> None:
        if self.warmer is not None:
            self.warmer.unmark(user_id)
        self.cache.forget(user_id)
        self.query_vectors.forget(user_id)

    def close(self) -> None:
        """Stop topping up, finish pending access writes; call before the store closes."""
        if self.warmer is not None:
            self.warmer.close()
        self.cache.close()
        self._closed.set()
        self._writer.shutdown(wait=True)
        self.query_vectors.close()
        if self._graphs is not None:
            self._graphs.close()
