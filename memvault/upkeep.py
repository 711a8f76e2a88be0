"""Background consolidation: a user who writes is consolidated some time later, by a job.

A server process runs one `Upkeep`. It watches the event bus for writes by callers (a turn or a
memory added) and queues a consolidation job for that user `delay` seconds later, at most one
per user and delay from this process, so a chat of a hundred turns queues one job, not a
hundred. The job goes through the shared queue (`memvault.jobs`), so with several servers on one
PostgreSQL any of them may run it, once, under a lease. Writes relayed from another server
(`Event.remote`) are that server's to schedule: N servers do not queue N jobs for one burst.
Consolidation is idempotent, so the extra job another server may have queued for the same user,
written to through both, finds nothing to do.

A user who goes on writing is consolidated about every `delay`; one who stops is consolidated
once more, `delay` to twice `delay` after their last write, and then left alone until they write
again. Consolidation's own writes (the facts it adds, the memories and sessions it updates) are
marked as such (`Event.upkeep`) and queue nothing: a run does not schedule the next.

The event listener only notes the user; the queue is written from this module's own thread, so
a write's caller never waits for it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from memvault.errors import NotFound
from memvault.events import Event
from memvault.jobs import Job, JobKind, Worker
from memvault.vault import Vault

log = logging.getLogger(__name__)

WRITES = frozenset({"turn.added", "memory.added"})  # by callers (not `Event.upkeep`)


class Upkeep:
    """Queues and runs consolidation jobs for users who wrote, on one background thread."""

    def __init__(self, vault: Vault, delay: float, *, poll_seconds: float = 1.0) -> None:
        self.vault = vault
        self.delay = delay
        self.poll_seconds = poll_seconds
        self._written: set[str] = set()
        self._lock = threading.Lock()
        self._queued_until: dict[str, float] = {}  # monotonic time this process's job is due
        self._worker = Worker(vault.jobs, {JobKind.CONSOLIDATION: self._consolidate})
        self._stop = threading.Event()
        self._unsubscribe = vault.events.subscribe(self._on_event)
        self._thread = threading.Thread(target=self._run, name="memvault-upkeep", daemon=True)
        self._thread.start()

    def _on_event(self, event: Event) -> None:
        if event.type in WRITES and not (event.remote or event.upkeep):
            with self._lock:
                self._written.add(event.user_id)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._queue_written()
                worked = self._worker.run_once()
            except Exception as exc:  # the database away for a moment: try again next poll
                log.warning("consolidation upkeep: %s", type(exc).__name__)
                worked = False
            if not worked:
                self._stop.wait(self.poll_seconds)

    def _queue_written(self) -> None:
        """A job `delay` from now for each user who wrote, unless one from here is still due."""
        with self._lock:
            users, self._written = self._written, set()
        now = time.monotonic()
        # noted again for the next poll: a user whose job from here is still due (this write
        # waits for the one after it), and, should the queue fail, every user not yet queued
        left = set(users)
        try:
            for user_id in sorted(users):
                if self._queued_until.get(user_id, 0.0) > now:
                    continue
                self.vault.jobs.enqueue(JobKind.CONSOLIDATION, user_id, delay_seconds=self.delay)
                self._queued_until[user_id] = now + self.delay
                left.discard(user_id)
        finally:
            with self._lock:
                self._written |= left
        for user_id in [u for u, due in self._queued_until.items() if due <= now]:
            del self._queued_until[user_id]

    def _consolidate(self, job: Job) -> None:
        with contextlib.suppress(NotFound):  # a user deleted meanwhile has nothing left to do
            self.vault.consolidate(job.user_id)

    def close(self) -> None:
        """Stop watching and working; a job under way finishes first.

        Users noted since the last poll, or waiting for their job from here to pass, get a job
        now: otherwise their last writes would wait for a next write that may never come.
        """
        self._unsubscribe()
        self._stop.set()
        self._thread.join()
        self._queued_until.clear()
        try:
            self._queue_written()
        except Exception as exc:  # the database away: those users wait for their next write
            log.warning("consolidation upkeep, on close: %s", type(exc).__name__)
