"""HNSW graphs built in a process of their own, so that no search waits for one.

A graph of 100k vectors takes 10 to 20 s to build, of 1M about ten minutes. Built inline, as
it was, it stalled the search that took a user past the threshold, the first search after a
restart, and the one that compacted the index. A thread is no way out: usearch's `add` takes
the GIL for each vector, and a 20k graph that builds in 3.5 s on one thread alone took 112 s
beside one busy Python thread. So a graph is built by `graph_worker.py` in a process of its
own, one at a time, and comes back serialised; until it arrives, the user's index answers by
exact search, which finds as much or more, only slower at large sizes.

The vectors cross to the worker over a pipe and stay in memory: nothing is written to disk, and
a failure is reported by its exception's type alone.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from memvault.retrieval.graph_worker import HEADER, build_graph

log = logging.getLogger(__name__)

Graph = Any  # usearch.index.Index: typed loosely, as usearch ships no type information
Keys = npt.NDArray[np.uint64]
_WORKER = Path(__file__).with_name("graph_worker.py")


class GraphBuildFailed(RuntimeError):
    """A graph could not be built; the message names the failure's type, never the data."""


@dataclass
class _Job:
    keys: Keys
    vectors: npt.NDArray[np.float32]
    future: Future[Graph]
    withdrawn: bool = False  # no longer wanted: not begun, or stopped


class GraphBuilds:
    """Builds graphs one at a time, each in a process of its own, in the order asked for.

    The worker thread starts when a graph is first asked for. `withdraw` gives up one graph (its
    index was dropped), `close` all of them: a build under way is stopped, those waiting are let
    go with their vectors.
    """

    def __init__(self) -> None:
        self._waiting: list[_Job] = []
        self._wake = threading.Condition()
        self._worker: threading.Thread | None = None
        self._current: _Job | None = None  # the job the worker has taken, until it is done
        self._running: subprocess.Popen[bytes] | None = None  # the current job's process
        self._closed = False

    def submit(self, keys: Keys, vectors: npt.NDArray[np.float32]) -> Future[Graph]:
        """A graph of `vectors` under `keys`, to come. The arrays must not change afterwards:
        they are read when the build starts."""
        future: Future[Graph] = Future()
        with self._wake:
            if self._closed:
                future.cancel()
                return future
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._work, name="memvault-graph-builds", daemon=True
                )
                self._worker.start()
            self._waiting.append(_Job(keys, vectors, future))
            self._wake.notify()
        return future

    def withdraw(self, future: Future[Graph]) -> None:
        """Give up the graph `future` stands for: one waiting is never built, and its vectors
        (a copy: 1.5 GB at 1M) go at once; one under way is stopped."""
        running = None
        with self._wake:
            self._waiting = [job for job in self._waiting if job.future is not future]
            current = self._current
            if current is not None and current.future is future:
                current.withdrawn = True
                running = self._running
        future.cancel()  # done already, or under way: then its build fails, and nobody asks
        if running is not None:
            running.kill()

    def close(self) -> None:
        """Stop the build under way, cancel the waiting ones and the worker thread."""
        with self._wake:
            self._closed = True
            running, worker, waiting = self._running, self._worker, self._waiting
            self._waiting = []
            self._wake.notify()
        for job in waiting:
            job.future.cancel()
        if running is not None:
            running.kill()
        if worker is not None:
            worker.join()

    def _work(self) -> None:
        while (job := self._next()) is not None:
            self._run(job)
            del job  # its vectors go now, not when the next graph is asked for

    def _next(self) -> _Job | None:
        """The next job, once there is one (None once closed); it is the current job."""
        with self._wake:
            while not self._waiting and not self._closed:
                self._wake.wait()
            if self._closed:
                return None
            self._current = self._waiting.pop(0)
            return self._current

    def _run(self, job: _Job) -> None:
        try:
            if job.future.set_running_or_notify_cancel():
                job.future.set_result(self._build(job))
        except Exception as exc:  # for the index, which logs it by type
            job.future.set_exception(exc)
        finally:
            with self._wake:
                self._current = None

    def _build(self, job: _Job) -> Graph:
        """One build in a worker process, its graph read back."""
        keys, vectors = job.keys, job.vectors
        with self._wake:
            if self._closed or job.withdrawn:
                raise GraphBuildFailed("the build was withdrawn")
            process: subprocess.Popen[bytes] | None = None
            unstarted = ""
            try:
                # our own interpreter on our own file: no input reaches the command line. It
                # finds numpy and usearch where this process does (-P: the file's folder, the
                # package's, is not put first on its path)
                process = subprocess.Popen(  # noqa: S603
                    [sys.executable, "-P", str(_WORKER)], stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                )  # fmt: skip
            except OSError as exc:
                unstarted = type(exc).__name__
            self._running = process
        if process is None:  # built outside the lock, which a search takes to ask for a graph
            log.warning("no process for a graph build (%s): built on a thread", unstarted)
            return build_graph(keys, vectors)
        try:
            with process:  # its pipes closed, and waited for, however the exchange ends
                graph, error = _exchange(process, keys, vectors)
        finally:
            with self._wake:
                self._running = None
        if process.returncode != 0:
            raise GraphBuildFailed(f"the build failed: {_failure(error, process.returncode)}")
        from usearch.index import Index

        return Index.restore(graph)


def _exchange(
    process: subprocess.Popen[bytes], keys: Keys, vectors: npt.NDArray[np.float32]
) -> tuple[bytes, bytes]:
    """Send the request a part at a time, without joining it into one more copy of the vectors
    (1.5 GB at 1M), then read the answer. The worker reads all of its input before it writes
    anything, so the two cannot wait on each other."""
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    try:
        with process.stdin as sink:
            sink.write(HEADER.pack(len(keys), vectors.shape[1]))
            sink.write(np.ascontiguousarray(keys).data)
            sink.write(np.ascontiguousarray(vectors, dtype=np.float32).data)
    except BrokenPipeError:
        pass  # the worker is gone (killed, say): its exit code tells
    return process.stdout.read(), process.stderr.read()


def _failure(error: bytes, returncode: int) -> str:
    """The worker's exception type, or its exit code: nothing else it wrote is repeated."""
    name = error.decode("ascii", "replace").strip()
    return name if name.isidentifier() else f"exit code {returncode}"
