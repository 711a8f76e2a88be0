"""Search indexes brought up to date after writes, on a thread of their own.

A search pays for whatever was written since the user's index last looked: the new rows are
decrypted and, above all, embedded (about 4 ms a turn with MiniLM on two cores: 12.7 s for the
first search after an import of 3,000 turns, `benchmarks/bench_warm.py`). A write does not wait
for that either: it is durable when it returns, and embedding it is no part of that. So each
write marks its user, and one thread tops up marked users' indexes while the caller goes on (an
index not cached is built, as a search would). The vectors it computes are stored as it goes,
so a search in another process reads them instead of embedding again.

The embedding itself runs on an idle thread (`idle.IdleThread`: the lowest CPU priority, one
core, `embed_in_background`), a chunk at a time (`cache.EMBED_CHUNK`), so it takes only the CPU
the requests leave. A search that comes first still sees every write: within 10 ms the top-up
gives up the chunk under way and lets go of the index, and the search does what is left at full
speed. A user's top-up starts once its writes have paused for `QUIET` (or `MAX_WAIT`
after the first, for a writer that never pauses), so the writes of a burst share one top-up and
do not meet it while they last. Topped up after each write instead, a writer appending one turn
at a time went from 0.43 to 1.2-1.4 ms a turn on SQLite, every top-up being one more
transaction (its vectors) beside the writer's own.

Another process's writes (relayed over PostgreSQL) are taken up too, for the indexes cached
here, after `REMOTE_QUIET`: by then the writer's own top-up has mostly stored their vectors,
and this one reads them instead of embedding the same texts again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from memvault.retrieval.cache import Stopped

log = logging.getLogger(__name__)

# brings one user's index up to date; raises `Stopped` once the event is set, or when a search
# of the user takes over
Refresh = Callable[[str, threading.Event], None]
# seconds a user's writes must pause before its top-up starts: short beside the time a person
# takes to answer, long beside the gap between the writes of a burst
QUIET = 0.05
# seconds after a user's first unhandled write when its top-up starts, pause or not
MAX_WAIT = 1.0
# the pause for another process's writes: long enough for the writer's top-up (which starts
# after QUIET and embeds about 250 turns a second) to store the vectors of a short burst
REMOTE_QUIET = 0.5


class IndexWarmer:
    """One thread, started by the first write, topping up the indexes of users written to."""

    def __init__(self, refresh: Refresh, quiet: float = QUIET, max_wait: float = MAX_WAIT) -> None:
        self._refresh = refresh
        self._quiet = quiet
        self._max_wait = max_wait
        # users to top up, with the moments of their first and last writes since their last
        # top-up began, and the pause their top-up waits for
        self._marked: dict[str, tuple[float, float, float]] = {}
        self._busy = False  # a top-up is under way
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def written(self, user_id: str, quiet: float | None = None) -> None:
        """A write for `user_id` has committed: top its index up once its writes have paused
        for `quiet` (this warmer's own by default; the shortest asked for since the last
        top-up wins). Never blocks."""
        with self._changed:
            if self._stop.is_set():
                return
            now = time.monotonic()
            pause = self._quiet if quiet is None else quiet
            first, _, asked = self._marked.get(user_id, (now, now, pause))
            self._marked[user_id] = (first, now, min(pause, asked))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="memvault-index-warmer", daemon=True
                )
                self._thread.start()
            # a first write or a shorter pause may bring the top-up forward; a later write
            # otherwise only moves it later, and the thread need not wake for it
            if first == now or pause < asked:
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

    def _next_user(self) -> str | None:
        """Called with the lock held: wait for the first user whose top-up is due and take
        it; None once the warmer is closed."""
        while not self._stop.is_set():
            wait = None
            if self._marked:
                due, user_id = min(
                    (min(last + quiet, first + self._max_wait), user_id)
                    for user_id, (first, last, quiet) in self._marked.items()
                )
                wait = due - time.monotonic()
                if wait <= 0:
                    del self._marked[user_id]
                    return user_id
            self._changed.wait(wait)
        return None

    def _run(self) -> None:
        while True:
            with self._changed:
                self._busy = False
                self._changed.notify_all()  # for `settle`
                user_id = self._next_user()
                if user_id is None:
                    return
                self._busy = True
            try:
                self._refresh(user_id, self._stop)
            except Stopped:
                if self._stop.is_set():
                    return
                # else a search of the user took over: it does the rest at full speed
            except Exception as exc:  # logged by type only; the next search tries again itself
                log.warning("index top-up after a write failed: %s", type(exc).__name__)
