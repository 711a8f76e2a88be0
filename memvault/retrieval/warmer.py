"""Search indexes brought up to date after writes, on a thread of their own.

A search pays for whatever was written since the user's index last looked: the new rows are
decrypted and, above all, embedded (about 4 ms a turn with MiniLM on two cores: 12.7 s for the
first search after an import of 3,000 turns, `benchmarks/bench_warm.py`). A write does not wait
for that either: it is durable when it returns, and embedding it is no part of that. So each
write marks its user, and one thread tops up marked users' indexes while the caller goes on (an
index not cached is built, as a search would). The vectors it computes are stored as it goes,
so a search in another process reads them instead of embedding again.

A search that comes first still sees every write: it waits for the top-up under way (the user's
lock) or does what is left itself. Writes made while a user's top-up runs mark the user again,
so a burst of writes costs a top-up or two, not one each.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from memvault.retrieval.cache import Stopped

log = logging.getLogger(__name__)

# brings one user's index up to date; raises `Stopped` once the event is set
Refresh = Callable[[str, threading.Event], None]


class IndexWarmer:
    """One thread, started by the first write, topping up the indexes of users written to."""

    def __init__(self, refresh: Refresh) -> None:
        self._refresh = refresh
        self._marked: dict[str, None] = {}  # users to top up, oldest mark first
        self._busy = False  # a top-up is under way
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def written(self, user_id: str) -> None:
        """A write for `user_id` has committed: top its index up soon. Never blocks."""
        with self._changed:
            if self._stop.is_set():
                return
            self._marked[user_id] = None
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="memvault-index-warmer", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def unmark(self, user_id: str) -> None:
        """Forget a pending mark (the user was deleted: there is nothing left to index)."""
        with self._changed:
            self._marked.pop(user_id, None)

    def settle(self, timeout: float | None = None) -> bool:
        """Wait until every user marked so far is topped up; False if `timeout` ran out first.
        For tests and benchmarks, and a caller about to measure a search."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._stop.is_set() or not (self._marked or self._busy), timeout
            )

    def close(self) -> None:
        """Stop taking marks and end the thread: a top-up under way stops at its next chunk
        (`cache.EMBED_CHUNK` items), keeping the vectors it has stored."""
        with self._changed:
            self._stop.set()
            self._marked.clear()
            self._changed.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._changed:
                self._busy = False
                self._changed.notify_all()  # for `settle`
                self._changed.wait_for(lambda: self._stop.is_set() or bool(self._marked))
                if self._stop.is_set():
                    return
                user_id = next(iter(self._marked))
                del self._marked[user_id]
                self._busy = True
            try:
                self._refresh(user_id, self._stop)
            except Stopped:
                return
            except Exception as exc:  # logged by type only; the next search tries again itself
                log.warning("index top-up after a write failed: %s", type(exc).__name__)
