"""Background work (extraction, embedding, consolidation) in a table every process can reach.

A job is claimed under a lease: the claim stamps a fresh owner token and an expiry. A worker that
dies mid-job simply stops renewing its lease, and once it expires the job is claimable again, so
nothing is lost. Completion and failure only count when the caller still owns the lease, so a job
is never completed twice, even when a slow worker wakes up after its job moved on.

On PostgreSQL, concurrent claimers skip each other's rows (`FOR UPDATE SKIP LOCKED`) instead of
queueing behind them; on SQLite the claim runs in the single write transaction, which is already
exclusive. Payloads carry ids, never content, and failures record an exception type, never its
message, since both end up in logs.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from memvault import validate as v
from memvault.errors import Invalid
from memvault.model import format_ts, new_id, utcnow
from memvault.store.database import Database, Row, retried

log = logging.getLogger(__name__)

PayloadValue = str | int | Sequence[str]


class JobKind(enum.StrEnum):
    EXTRACTION = "extraction"
    EMBEDDING = "embedding"
    CONSOLIDATION = "consolidation"


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job. `lease` is this claim's owner token; it proves ownership on completion."""

    id: str
    kind: JobKind
    user_id: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    lease: str


def _check_payload(payload: Mapping[str, PayloadValue]) -> dict[str, Any]:
    """Ids and counts only: anything that could be content is refused before it is stored."""
    checked: dict[str, Any] = {}
    for key, value in payload.items():
        field = f"payload.{v.check_id('payload key', key)}"
        if isinstance(value, bool) or not isinstance(value, str | int | list | tuple):
            raise Invalid(field, "must be an id, an integer or a list of ids")
        if isinstance(value, str):
            checked[key] = v.check_id(field, value)
        elif isinstance(value, int):
            checked[key] = value
        else:
            checked[key] = list(v.check_strings(field, value, ids=True))
    return checked


def _later(seconds: float) -> str:
    return format_ts(utcnow() + timedelta(seconds=seconds))


class JobQueue:
    """Enqueue, claim, renew, complete and fail jobs in the `jobs` table of any `Database`."""

    def __init__(
        self, db: Database, *, backoff_seconds: float = 2.0, max_backoff_seconds: float = 600.0
    ) -> None:
        self.db = db
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self._skip_locked = " FOR UPDATE SKIP LOCKED" if db.dialect.name == "postgresql" else ""

    def enqueue(
        self,
        kind: JobKind | str,
        user_id: str,
        payload: Mapping[str, PayloadValue] | None = None,
        *,
        max_attempts: int = 5,
        delay_seconds: float = 0.0,
    ) -> str:
        """Queue a job and return its id."""
        job_kind = v.check_enum("kind", kind, JobKind)
        v.check_id("user_id", user_id)
        body = json.dumps(_check_payload(payload or {}), separators=(",", ":"))
        attempts = int(v.check_number("max_attempts", max_attempts, 1, 100))
        job_id, now = new_id(), format_ts(utcnow())
        self._insert((job_id, job_kind.value, user_id, body, attempts, _later(delay_seconds), now))
        return job_id

    @retried
    def _insert(self, values: tuple[str, str, str, str, int, str, str]) -> None:
        """One transaction, its id chosen beforehand: run again, it still queues one job."""
        with self.db.write() as tx:
            tx.execute(
                "INSERT INTO jobs (id, kind, user_id, payload, state, attempts, max_attempts, "
                "run_after, created_at, updated_at) VALUES (?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?)",
                (*values, values[-1]),
            )

    def claim(
        self, worker: str, *, lease_seconds: float, kinds: Collection[JobKind] | None = None
    ) -> Job | None:
        """Take the most overdue job (queued and due, or running with an expired lease), of one
        of `kinds` when given: a worker takes only the jobs it has a handler for, and leaves
        the others to the workers that do."""
        chosen = None if kinds is None else sorted(JobKind(kind).value for kind in kinds)
        if chosen == []:
            return None
        row = self._claim(f"{worker}/{uuid.uuid4().hex}", lease_seconds, chosen)
        if row is None:
            return None
        return Job(
            id=row["id"], kind=JobKind(row["kind"]), user_id=row["user_id"],
            payload=json.loads(row["payload"]), attempts=int(row["attempts"]),
            max_attempts=int(row["max_attempts"]), lease=row["lease_owner"],
        )  # fmt: skip

    @retried
    def _claim(self, lease: str, lease_seconds: float, kinds: list[str] | None) -> Row | None:
        """The claim's one transaction. Run again, it looks at the queue afresh (the clock
        included): the run that was rolled back claimed nothing."""
        now = format_ts(utcnow())
        with self.db.write() as tx:
            # A job whose last allowed attempt died with its worker has nobody left to fail it.
            tx.execute(
                "UPDATE jobs SET state = 'failed', last_error = 'lease expired', "
                "lease_owner = NULL, updated_at = ? WHERE state = 'running' "
                "AND lease_expires_at <= ? AND attempts >= max_attempts",
                (now, now),
            )
            of_kind = "" if kinds is None else " AND kind IN (" + ", ".join("?" * len(kinds)) + ")"
            due = tx.one(
                "SELECT id FROM jobs WHERE ((state = 'queued' AND run_after <= ?) "
                "OR (state = 'running' AND lease_expires_at <= ? AND attempts < max_attempts))"
                + of_kind + " ORDER BY run_after LIMIT 1" + self._skip_locked,
                (now, now, *(kinds or ())),
            )  # fmt: skip
            if due is None:
                return None
            return tx.one(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = ?, "
                "lease_expires_at = ?, updated_at = ? WHERE id = ? RETURNING *",
                (lease, _later(lease_seconds), now, due["id"]),
            )

    @retried
    def _settle(self, job: Job, assignments: str, params: Sequence[Any]) -> bool:
        """Apply `assignments` if `job`'s lease is still the current one; say whether it was.

        One conditional update: run again after a rollback, it gives the same answer."""
        with self.db.write() as tx:
            return (
                tx.execute(
                    f"UPDATE jobs SET {assignments}, updated_at = ? "
                    "WHERE id = ? AND state = 'running' AND lease_owner = ?",
                    (*params, format_ts(utcnow()), job.id, job.lease),
                )
                > 0
            )

    def renew(self, job: Job, *, lease_seconds: float) -> bool:
        """Push the lease's expiry forward; False if the job was taken over meanwhile."""
        return self._settle(job, "lease_expires_at = ?", (_later(lease_seconds),))

    def complete(self, job: Job) -> bool:
        """Mark the job done; False (and nothing changes) if this claim no longer owns it."""
        return self._settle(job, "state = 'done', lease_owner = NULL, lease_expires_at = NULL", ())

    def fail(self, job: Job, error: str) -> bool:
        """Queue a retry after an exponential backoff, or mark it failed after its last attempt.

        `error` is stored and logged: give an exception type or a fixed phrase, never content.
        """
        if job.attempts >= job.max_attempts:
            return self._settle(
                job, "state = 'failed', lease_owner = NULL, last_error = ?", (error[:200],)
            )
        delay = min(self.backoff_seconds * 2 ** (job.attempts - 1), self.max_backoff_seconds)
        return self._settle(
            job,
            "state = 'queued', lease_owner = NULL, lease_expires_at = NULL, run_after = ?, "
            "last_error = ?",
            (_later(delay), error[:200]),
        )

    @retried
    def get(self, job_id: str) -> Row | None:
        """The job's row as stored (state, attempts, last error), for operators and tests."""
        with self.db.read() as tx:
            return tx.one("SELECT * FROM jobs WHERE id = ?", (job_id,))

    @retried
    def counts(self) -> dict[str, int]:
        """Jobs per state."""
        with self.db.read() as tx:
            rows = tx.all("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
        return {r["state"]: int(r["n"]) for r in rows}


Handler = Callable[[Job], None]


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Worker:
    """Claims jobs and runs the handler for their kind, renewing the lease while it runs."""

    def __init__(
        self,
        queue: JobQueue,
        handlers: Mapping[JobKind, Handler],
        *,
        name: str | None = None,
        lease_seconds: float = 60.0,
        poll_seconds: float = 1.0,
    ) -> None:
        self.queue = queue
        self.handlers = dict(handlers)
        self.name = name or default_worker_name()
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds

    def run_once(self) -> bool:
        """Run one job if one is due; return whether there was one."""
        job = self.queue.claim(self.name, lease_seconds=self.lease_seconds, kinds=self.handlers)
        if job is None:
            return False
        handler = self.handlers.get(job.kind)
        if handler is None:
            self.queue.fail(job, "no handler for this kind")
            return True
        finished = threading.Event()
        keeper = threading.Thread(target=self._keep_lease, args=(job, finished), daemon=True)
        keeper.start()
        try:
            handler(job)
        except Exception as exc:
            log.warning("job %s (%s) failed: %s", job.id, job.kind, type(exc).__name__)
            self.queue.fail(job, type(exc).__name__)
        else:
            if not self.queue.complete(job):
                log.warning("job %s finished after its lease passed to another worker", job.id)
        finally:
            finished.set()
            keeper.join()
        return True

    def _keep_lease(self, job: Job, finished: threading.Event) -> None:
        while not finished.wait(self.lease_seconds / 3):
            if not self.queue.renew(job, lease_seconds=self.lease_seconds):
                return

    def run(self, stop: threading.Event) -> None:
        """Work until `stop` is set, polling when the queue is empty."""
        while not stop.is_set():
            if not self.run_once():
                stop.wait(self.poll_seconds)
