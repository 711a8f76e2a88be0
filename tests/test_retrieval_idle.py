"""The idle thread runs what it is handed at the lowest CPU priority, one call at a time, and
lets go without waiting for a call under way."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator

import pytest

from memvault.retrieval.idle import NICE, IdleThread


@pytest.fixture
def idle() -> Iterator[IdleThread]:
    thread = IdleThread("test-idle")
    yield thread
    thread.close()


def _own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def test_calls_run_in_turn_on_one_named_thread(idle: IdleThread) -> None:
    names = [idle.submit(lambda: threading.current_thread().name) for _ in range(3)]
    assert [f.result(timeout=10) for f in names] == ["test-idle"] * 3
    assert idle.submit(lambda: 6 * 7).result(timeout=10) == 42


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own nice is Linux's")
def test_calls_run_at_the_lowest_priority_and_the_callers_keep_theirs(idle: IdleThread) -> None:
    before = _own_nice()
    assert idle.submit(_own_nice).result(timeout=10) == max(before, NICE)
    assert _own_nice() == before


def test_what_a_call_raises_reaches_its_caller_and_the_thread_goes_on(idle: IdleThread) -> None:
    def fail() -> None:
        raise ValueError("bad chunk")

    with pytest.raises(ValueError, match="bad chunk"):
        idle.submit(fail).result(timeout=10)
    assert idle.submit(lambda: "still here").result(timeout=10) == "still here"


def test_a_call_given_up_before_it_starts_never_runs(idle: IdleThread) -> None:
    gate = threading.Event()
    ran: list[str] = []
    blocking = idle.submit(lambda: gate.wait(timeout=10))
    given_up = idle.submit(lambda: ran.append("ran"))
    assert given_up.cancel()
    gate.set()
    assert blocking.result(timeout=10)
    idle.submit(lambda: None).result(timeout=10)  # everything before it has been taken
    assert ran == []


def test_close_waits_for_the_call_under_way_and_gives_up_the_rest(idle: IdleThread) -> None:
    started, gate = threading.Event(), threading.Event()
    ran: list[str] = []

    def slow() -> str:
        started.set()
        gate.wait(timeout=10)
        ran.append("slow")
        return "done"

    under_way = idle.submit(slow)
    waiting = idle.submit(lambda: ran.append("waiting"))
    assert started.wait(timeout=10)
    closing = threading.Thread(target=idle.close)
    closing.start()
    closing.join(timeout=0.2)
    assert closing.is_alive()  # waits for the call under way
    with pytest.raises(RuntimeError, match="closed"):
        idle.submit(lambda: None)
    gate.set()
    closing.join(timeout=10)
    assert not closing.is_alive()
    assert under_way.result(timeout=0) == "done"
    assert ran == ["slow"] and waiting.cancelled()
