"""A thread for work nobody waits for, at the lowest CPU priority: it gets the time the
requests leave, and no more.

Embedding a write's items ahead of the next search (`warmer.py`) is such work. At normal
priority it took a core from the requests that came meanwhile: a server taking appends from
16 connections answered 0.71 times as many with it on, and 0.77 to 0.99 times as many (four
runs) with it here (`benchmarks/bench_server.py`).

Linux gives each thread a nice value of its own, and onnxruntime runs a one-thread session on
the thread that calls it, so the model's arithmetic takes this thread's priority. Elsewhere
`setpriority` would lower the whole process, so the thread keeps the normal priority there.
Where the kernel groups processes by session (autogroup), a nice value weighs against the
threads of the same session, such as the process's own request threads, not against other
sessions' processes.

A thread started from this one takes its priority too: the MiniLM embedder keeps the tokenizer
from starting its pool of threads (`TOKENIZERS_PARALLELISM`), which, started here, would slow
every caller's tokenizing after.

Nothing here may hold what a request waits for (a user's index lock, the store's write
lock): a thread this low would keep it for as long as the machine is busy. So it only
computes, and its caller, at normal priority, stores the results and changes the index. The
GIL is such a lock too: what runs here should let go of it while it computes, as onnxruntime
does (pure Python here would stall every other thread whenever the scheduler put this one
aside: eight threads appending, with the hashing embedder's top-ups run here, wrote 0.75x as
many turns as with warming off).
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

NICE = 19  # the lowest priority of a normal thread: runs when nothing else wants the core


class IdleThread:
    """One daemon thread running the calls handed to it in turn, at the lowest priority.

    Started by the first call. Closing waits for the call under way, if any: a thread still
    inside onnxruntime when the interpreter exits aborts the process.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._calls: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, call: Callable[[], T]) -> Future[T]:
        """Run `call` on the thread; its future holds the result or what it raised."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the idle thread is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._calls.put((future, call))
        return future

    def close(self) -> None:
        """Take no more calls, give up those not started, and wait for the one under way."""
        with self._lock:
            if not self._closed and self._thread is not None:
                self._calls.put(None)
            self._closed = True
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        _lowest_priority()
        while (task := self._calls.get()) is not None:
            future, call = task
            if self._closed:
                future.cancel()  # handed in before the close, not started: given up
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:  # the caller's to handle, through the future
                future.set_exception(exc)


def _lowest_priority() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except OSError as exc:  # a sandbox may forbid it: the work goes on at normal priority
        log.warning("idle thread kept normal priority (%s)", type(exc).__name__)
