"""The job queue: leases, retries, and real worker processes that race or die mid-job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memvault import Invalid
from memvault.config import Settings
from memvault.jobs import Job, JobKind, JobQueue, Worker
from memvault.store import open_store

# A worker process: says it is ready and, once a `go` file appears beside its output file,
# drains the queue, writing each job id it completes to that file. With "hang", it announces
# its first job and then never finishes it.
WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from memvault.config import Settings
    from memvault.jobs import JobKind, JobQueue, Worker
    from memvault.store import open_store

    data, out, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    def handle(job):
        if mode == "hang":
            partial = out.with_name(out.name + ".partial")
            partial.write_text(job.id)
            partial.replace(out)  # whole or absent: the test reads it as soon as it exists
            time.sleep(600)
        time.sleep(0.02)
        with out.open("a") as f:
            f.write(job.id + "\\n")

    store = open_store(Settings(data=data), data)
    worker = Worker(JobQueue(store.db), {kind: handle for kind in JobKind},
                    name=out.name, lease_seconds=float(sys.argv[4]))
    Path(f"{out}.ready").touch()
    while not (out.parent / "go").exists():
        time.sleep(0.01)
    while worker.run_once():
        pass
    store.close()
""")


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


@pytest.fixture
def queue(data: Path, backend_settings: dict[str, Any]) -> Iterator[JobQueue]:
    store = open_store(Settings(data=data, **backend_settings), data)
    yield JobQueue(store.db, backoff_seconds=0.2)
    store.close()


def _worker(data: Path, out: Path, mode: str, lease: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(data), str(out), mode, str(lease)])


def _wait_for(*files: Path) -> None:
    deadline = time.monotonic() + 30
    while not all(f.exists() for f in files) and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_claimed_job_is_completed_once(queue: JobQueue) -> None:
    job_id = queue.enqueue(JobKind.EMBEDDING, "alice", {"turn_ids": ["t1", "t2"]})
    job = queue.claim("w1", lease_seconds=30)
    assert job is not None and job.id == job_id and job.payload == {"turn_ids": ["t1", "t2"]}
    assert queue.claim("w2", lease_seconds=30) is None  # leased, not due
    assert queue.complete(job) is True
    assert queue.complete(job) is False
    assert queue.get(job_id)["state"] == "done"  # type: ignore[index]
    assert queue.claim("w2", lease_seconds=30) is None


def test_failures_back_off_then_give_up(queue: JobQueue) -> None:
    job_id = queue.enqueue(JobKind.EXTRACTION, "alice", {"session_id": "s"}, max_attempts=2)
    first = queue.claim("w", lease_seconds=30)
    assert first is not None and queue.fail(first, "ValueError")
    assert queue.claim("w", lease_seconds=30) is None  # backing off for 0.2 s
    time.sleep(0.25)
    second = queue.claim("w", lease_seconds=30)
    assert second is not None and second.attempts == 2
    assert queue.fail(second, "ValueError")
    time.sleep(0.5)
    assert queue.claim("w", lease_seconds=30) is None
    row = queue.get(job_id)
    assert row is not None and (row["state"], row["last_error"]) == ("failed", "ValueError")


def test_an_expired_lease_moves_the_job_and_the_late_owner_cannot_finish(
    queue: JobQueue,
) -> None:
    queue.enqueue(JobKind.CONSOLIDATION, "alice")
    slow = queue.claim("slow", lease_seconds=0.1)
    assert slow is not None
    time.sleep(0.15)
    fast = queue.claim("fast", lease_seconds=30)
    assert fast is not None and fast.id == slow.id and fast.attempts == 2
    assert queue.complete(slow) is False
    assert queue.renew(slow, lease_seconds=30) is False
    assert queue.complete(fast) is True


def test_a_dead_workers_last_attempt_ends_failed(queue: JobQueue) -> None:
    job_id = queue.enqueue(JobKind.EMBEDDING, "alice", max_attempts=1)
    assert queue.claim("dies", lease_seconds=0.05) is not None
    time.sleep(0.1)
    assert queue.claim("next", lease_seconds=30) is None
    assert queue.get(job_id)["state"] == "failed"  # type: ignore[index]


def test_payloads_hold_ids_not_content(queue: JobQueue) -> None:
    with pytest.raises(Invalid):
        queue.enqueue(JobKind.EMBEDDING, "alice", {"text": "line one\nline two"})
    with pytest.raises(Invalid):
        queue.enqueue(JobKind.EMBEDDING, "alice", {"nested": {"a": "b"}})  # type: ignore[dict-item]
    with pytest.raises(Invalid):
        queue.enqueue("summarise", "alice")


def test_worker_retries_a_failing_handler(queue: JobQueue) -> None:
    calls: list[int] = []

    def flaky(job: Job) -> None:
        calls.append(job.attempts)
        if job.attempts == 1:
            raise RuntimeError("first try fails")

    job_id = queue.enqueue(JobKind.EXTRACTION, "alice")
    worker = Worker(queue, {JobKind.EXTRACTION: flaky}, lease_seconds=30)
    assert worker.run_once() is True
    time.sleep(0.25)
    assert worker.run_once() is True
    assert calls == [1, 2]
    assert queue.get(job_id)["state"] == "done"  # type: ignore[index]


def test_a_worker_claims_only_the_kinds_it_has_a_handler_for(queue: JobQueue) -> None:
    """A server runs consolidation only: it must leave another kind's job queued for the worker
    that handles it, not fail it for want of a handler."""
    extraction = queue.enqueue(JobKind.EXTRACTION, "alice")
    consolidation = queue.enqueue(JobKind.CONSOLIDATION, "alice")
    done: list[str] = []
    upkeep = Worker(queue, {JobKind.CONSOLIDATION: lambda job: done.append(job.id)})
    assert upkeep.run_once() is True and done == [consolidation]
    assert upkeep.run_once() is False  # the extraction job is not its to take
    assert queue.get(extraction)["state"] == "queued"  # type: ignore[index]
    assert queue.claim("w", lease_seconds=30, kinds=()) is None
    claimed = queue.claim("w", lease_seconds=30, kinds=[JobKind.EXTRACTION])
    assert claimed is not None and claimed.id == extraction


def test_two_worker_processes_never_run_the_same_job(
    queue: JobQueue, data: Path, tmp_path: Path
) -> None:
    ids = {queue.enqueue(JobKind.EMBEDDING, "u", {"turn_id": f"t{i}"}) for i in range(60)}
    outs = [tmp_path / "w1", tmp_path / "w2"]
    procs = [_worker(data, out, "drain", 30) for out in outs]
    _wait_for(*(Path(f"{out}.ready") for out in outs))
    (tmp_path / "go").touch()
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    done = [out.read_text().split() if out.exists() else [] for out in outs]
    assert all(done), "both workers should have taken part"
    assert sorted(done[0] + done[1]) == sorted(ids)  # every job once, none twice
    assert queue.counts() == {"done": 60}


def test_a_killed_workers_job_is_picked_up_again(
    queue: JobQueue, data: Path, tmp_path: Path
) -> None:
    job_id = queue.enqueue(JobKind.EXTRACTION, "u", {"session_id": "s"})
    started = tmp_path / "hung"
    (tmp_path / "go").touch()
    proc = _worker(data, started, "hang", 1.0)
    try:
        _wait_for(started)
        assert started.read_text() == job_id
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert queue.get(job_id)["state"] == "running"  # type: ignore[index]
    assert queue.claim("early", lease_seconds=30) is None  # the dead worker's lease holds
    time.sleep(1.1)
    rescuer = _worker(data, tmp_path / "rescuer", "drain", 30)
    assert rescuer.wait(timeout=60) == 0
    assert (tmp_path / "rescuer").read_text().split() == [job_id]
    row = queue.get(job_id)
    assert row is not None and (row["state"], row["attempts"]) == ("done", 2)
