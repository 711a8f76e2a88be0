"""The search use case behind `Vault.search`: validate, fetch the user's index, rank, record use.

`Vault` owns the store and the keys; this owns the index cache and the ranking. The two meet
through two callables: the user's current revision, and a loader that decrypts what changed
since a revision. Access counts are written by a single background thread so that a search
never waits on a database write.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from memvault import validate as v
from memvault.errors import Invalid
from memvault.model import Channel, MemoryKind, Tier, utcnow
from memvault.retrieval.cache import DEFAULT_MAX_BYTES, IndexCache, Loader, VectorStore
from memvault.retrieval.embed import Embedder
from memvault.retrieval.fusion import Weights
from memvault.retrieval.index import Filters
from memvault.retrieval.items import ITEM_TYPES, MEMORY
from memvault.retrieval.search import Hit, Query, check_query, check_search_limit, search_index

log = logging.getLogger(__name__)


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
    types: Iterable[str] | None,
    kinds: Iterable[str] | None,
    tiers: Iterable[str] | None,
    session_id: str | None,
    agent_id: str | None,
    channel: str | None,
    since: datetime | str | None,
    until: datetime | str | None,
    tags: Iterable[str] | None,
    now: datetime,
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
    )


class Recall:
    """Search over per-user indexes kept in a byte-bounded cache."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        revision: Callable[[str], int],
        loader: Loader,
        record_access: Callable[[str, list[str], datetime], None],
        max_bytes: int = DEFAULT_MAX_BYTES,
        ann_threshold: int | None = None,
        weights: Weights | None = None,
        vectors: VectorStore | None = None,
    ) -> None:
        self.cache = IndexCache(
            embedder, loader, max_bytes=max_bytes, ann_threshold=ann_threshold, vectors=vectors
        )
        self.weights = weights or Weights()
        self._revision = revision
        self._record_access = record_access
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memvault-access")
        self._closed = threading.Event()

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
        weights: Weights | None = None,
        record_access: bool = True,
    ) -> list[Hit]:
        v.check_id("user_id", user_id)
        moment = utcnow() if now is None else v.check_time("now", now)
        filters = build_filters(
            types=types, kinds=kinds, tiers=tiers, session_id=session_id, agent_id=agent_id,
            channel=channel, since=since, until=until, tags=tags, now=moment,
        )  # fmt: skip
        request = Query(
            text=check_query(query),
            limit=check_search_limit(limit),
            filters=filters,
            now=moment,
            min_score=v.check_optional_number("min_score", min_score, 0, 1),
            explain=v.check_bool("explain", explain),
        )
        revision = self._revision(user_id)
        if revision == 0:
            return []
        with self.cache.checkout(user_id, revision) as index:
            hits = search_index(index, request, weights or self.weights)
        recalled = [h.id for h in hits if h.type == MEMORY]
        if record_access and recalled and not self._closed.is_set():
            self._writer.submit(self._record, user_id, recalled, utcnow())
        return hits

    def _record(self, user_id: str, memory_ids: list[str], moment: datetime) -> None:
        """Runs on the writer thread, where no caller can see an error: log it instead."""
        try:
            self._record_access(user_id, memory_ids, moment)
        except Exception as exc:  # logged by type only: no stack, nothing of the user's
            log.error("recording memory access failed: %s", type(exc).__name__)

    def forget(self, user_id: str) -> None:
        self.cache.forget(user_id)

    def close(self) -> None:
        """Finish pending access writes; call before the store closes."""
        self._closed.set()
        self._writer.shutdown(wait=True)
