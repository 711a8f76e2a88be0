"""HNSW graphs built in a process of their own: an index searches exactly until its graph
comes, then takes it up with what changed meanwhile; failures and shutdowns leave exact search."""

from __future__ import annotations

import gc
import logging
import time
import weakref
from collections.abc import Iterator
from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from memvault import Vault
from memvault.config import Settings
from memvault.retrieval.dense import GRAPH_CATCH_UP, KEPT_GRAPH_EXPANSION, DenseIndex
from memvault.retrieval.embed import HashingEmbedder
from memvault.retrieval.graphs import GraphBuildFailed, GraphBuilds

DIM = 32


def _unit(rows: int, seed: int) -> npt.NDArray[np.float32]:
    vectors = np.random.default_rng(seed).normal(size=(rows, DIM)).astype(np.float32)
    unit: npt.NDArray[np.float32] = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit


@pytest.fixture
def builds() -> Iterator[GraphBuilds]:
    graphs = GraphBuilds()
    yield graphs
    graphs.close()


def _exact_top(dense: DenseIndex, query: npt.NDArray[np.float32], k: int) -> list[int]:
    alive = dense._alive[: len(dense)]
    scores = np.where(alive, dense.similarity(query), -np.inf)
    top: list[int] = np.argsort(-scores)[:k].tolist()
    return top


def _wait_for_graph(dense: DenseIndex, query: npt.NDArray[np.float32]) -> None:
    """Until a search takes the graph up, as one does once it has come."""
    deadline = time.monotonic() + 60
    while dense.graph_pending:
        assert time.monotonic() < deadline, "no graph within a minute"
        time.sleep(0.05)
        dense.nearest(query, 1)


def test_an_index_searches_exactly_until_its_graph_comes_then_takes_up_what_changed(
    builds: GraphBuilds,
) -> None:
    vectors = _unit(700, seed=1)
    dense = DenseIndex(DIM, ann_threshold=500, graphs=builds)
    dense.add(0, vectors[:600])
    assert dense.graph_pending and dense._ann is None  # asked for, not built here
    query = vectors[42] + 0.01
    assert dense.nearest(query, 5).tolist() == _exact_top(dense, query, 5)
    dense.add(600, vectors[600:])  # while the graph is built: added after it was asked for
    dense.remove(42)  # and removed
    _wait_for_graph(dense, query)
    assert dense._ann is not None and dense._ann.size == 699
    assert 42 not in dense.nearest(query, 5)
    assert dense.nearest(vectors[650] + 0.01, 5)[0] == 650
    assert dense.nbytes() > dense._matrix.nbytes  # the graph's bytes are counted


def test_an_index_that_grew_too_much_meanwhile_asks_for_a_graph_of_what_it_holds_now(
    builds: GraphBuilds,
) -> None:
    """A graph that comes far behind is not caught up inside a search, vector by vector."""
    vectors = _unit(600 + GRAPH_CATCH_UP + 1, seed=5)
    dense = DenseIndex(DIM, ann_threshold=500, graphs=builds)
    dense.add(0, vectors[:600])
    first = dense._building
    assert first is not None
    dense.add(600, vectors[600:])
    first.future.result(timeout=60)
    query = vectors[-1] + 0.01
    assert dense.nearest(query, 1)[0] == len(vectors) - 1  # exact: the first graph is left
    assert dense.graph_pending and dense._building is not first and dense._ann is None
    dense.settle_graph(timeout=60)
    assert dense._ann is not None and dense._ann.size == len(vectors)
    assert dense.nearest(query, 1)[0] == len(vectors) - 1


def test_a_compacted_index_serves_its_kept_graph_until_a_new_one_replaces_it(
    builds: GraphBuilds,
) -> None:
    vectors = _unit(2000, seed=2)
    dense = DenseIndex(DIM, ann_threshold=500, graphs=builds)
    dense.add(0, vectors)
    _wait_for_graph(dense, vectors[0])
    for slot in range(0, 2000, 3):
        dense.remove(slot)
    live = np.array([s for s in range(2000) if s % 3])
    compacted = dense.compacted(live)
    kept = compacted._ann
    assert kept.expansion_search == KEPT_GRAPH_EXPANSION and compacted.graph_pending
    query = vectors[live[10]] + 0.01
    assert compacted.nearest(query, 1)[0] == 10
    _wait_for_graph(compacted, query)
    assert compacted._ann is not kept and compacted._ann.expansion_search < KEPT_GRAPH_EXPANSION
    assert compacted._ann.size == len(live) and compacted.nearest(query, 1)[0] == 10


def test_a_failed_build_is_reported_by_its_type_alone(builds: GraphBuilds) -> None:
    keys = np.arange(10, dtype=np.uint64)
    failed = builds.submit(keys, _unit(5, seed=3))  # fewer vectors than keys
    with pytest.raises(GraphBuildFailed) as error:
        failed.result(timeout=60)
    assert str(error.value) == "the build failed: ValueError"


def test_closing_stops_a_build_under_way_and_leaves_exact_search(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A process can be stopped, where a thread could not: closing does not wait for the build.
    An index whose build was stopped keeps searching exactly, and says why by type only."""
    builds = GraphBuilds()
    vectors = _unit(150_000, seed=4)
    dense = DenseIndex(DIM, ann_threshold=1000, graphs=builds)
    dense.add(0, vectors)
    time.sleep(0.5)  # the build process is under way
    started = time.monotonic()
    builds.close()
    assert time.monotonic() - started < 5
    with caplog.at_level(logging.WARNING, logger="memvault.retrieval.dense"):
        query = vectors[7] + 0.01
        assert dense.nearest(query, 3).tolist() == _exact_top(dense, query, 3)
    assert not dense.graph_pending and dense._ann is None
    assert "search graph build failed (GraphBuildFailed)" in caplog.text
    with pytest.raises(CancelledError):
        builds.submit(np.arange(1, dtype=np.uint64), vectors[:1]).result()


def test_a_vault_searches_at_once_and_its_graph_follows(tmp_path: Path) -> None:
    """Past the threshold a user's search does not wait for a graph: it answers exactly, and
    answers the same once the graph is in."""
    settings = Settings(data=tmp_path / "data", ann_threshold=40)
    with Vault(settings=settings, embedder=HashingEmbedder()) as vault:
        vault.add_turns("u", "s", [
            {"role": "user", "content": f"note {n} about the {topic} trip"}
            for n, topic in enumerate(["lake", "city", "forest"] * 20)
        ])  # fmt: skip
        before = [hit.id for hit in vault.search("u", "the forest trip", limit=5)]
        index = vault.recall.cache.get("u", vault.store.revision("u"))
        assert index.graph_pending
        vault.recall.cache.settle_graph("u", timeout=60)
        assert not index.graph_pending
        assert [hit.id for hit in vault.search("u", "the forest trip", limit=5)] == before


def _gone(ref: weakref.ref[npt.NDArray[np.float32]], within: float = 5.0) -> bool:
    """Whether the array `ref` points to is freed, within `within` seconds."""
    deadline = time.monotonic() + within
    while ref() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.01)
    return ref() is None


def test_a_finished_build_keeps_no_copy_of_the_vectors(builds: GraphBuilds) -> None:
    """The worker thread let go of a job's vectors only when the next graph was asked for: after
    a 1M build, 1.5 GB of a user's vectors held for nothing."""
    vectors = _unit(600, seed=6)
    freed = weakref.ref(vectors)
    future = builds.submit(np.arange(600, dtype=np.uint64), vectors)
    del vectors
    assert future.result(timeout=60).size == 600
    assert _gone(freed)


def test_a_graph_no_longer_wanted_is_not_built_and_one_under_way_is_stopped(
    builds: GraphBuilds,
) -> None:
    big = _unit(150_000, seed=4)
    running = builds.submit(np.arange(len(big), dtype=np.uint64), big)
    vectors = _unit(600, seed=7)
    freed = weakref.ref(vectors)
    waiting = builds.submit(np.arange(600, dtype=np.uint64), vectors)
    del vectors
    builds.withdraw(waiting)
    assert waiting.cancelled() and freed() is None  # let go at once, with its vectors
    time.sleep(0.5)  # the big build is under way
    started = time.monotonic()
    builds.withdraw(running)
    with pytest.raises(GraphBuildFailed):
        running.result(timeout=10)
    assert time.monotonic() - started < 5
    assert builds.submit(np.arange(600, dtype=np.uint64), _unit(600, 8)).result(60).size == 600


def test_an_index_the_cache_lets_go_gives_up_its_graph(tmp_path: Path) -> None:
    """Dropped from the cache (evicted, or its user deleted), an index's graph is not built:
    its build would hold a copy of the user's vectors outside the cache's bound."""
    settings = Settings(data=tmp_path / "data", ann_threshold=40)
    with Vault(settings=settings, embedder=HashingEmbedder()) as vault:
        busy = _unit(150_000, seed=9)  # the worker busy with another user's graph meanwhile
        graphs = vault.recall._graphs
        assert graphs is not None
        ahead = graphs.submit(np.arange(len(busy), dtype=np.uint64), busy)
        vault.add_turns("u", "s", [
            {"role": "user", "content": f"note {n} about the trip"} for n in range(60)
        ])  # fmt: skip
        index = vault.recall.cache.get("u", vault.store.revision("u"))
        building = index._dense._building
        assert building is not None and not building.future.done()
        vault.recall.cache.forget("u")
        assert building.future.cancelled() and not index.graph_pending
        graphs.withdraw(ahead)
        assert [hit.text for hit in vault.search("u", "note 7 about the trip", limit=1)] == [
            "note 7 about the trip"
        ]


def test_a_graph_given_up_under_a_running_search_is_no_failure(
    builds: GraphBuilds, caplog: pytest.LogCaptureFixture
) -> None:
    """The cache may let an index go while a search runs on it, and take it back at once for
    its user's next search: the search that sees its graph given up keeps to exact search and
    marks no failure, so the index asks for a graph again at its next add."""
    big = _unit(150_000, seed=11)  # the worker busy: the index's graph waits its turn
    busy = builds.submit(np.arange(len(big), dtype=np.uint64), big)
    vectors = _unit(700, seed=10)
    dense = DenseIndex(DIM, ann_threshold=500, graphs=builds)
    dense.add(0, vectors[:600])
    seen_by_the_search = dense._building
    dense.withdraw_graph()
    builds.withdraw(busy)
    dense._building = seen_by_the_search  # as the running search read it before
    with caplog.at_level(logging.WARNING, logger="memvault.retrieval.dense"):
        query = vectors[3] + 0.01
        assert dense.nearest(query, 3).tolist() == _exact_top(dense, query, 3)
    assert not dense.graph_pending and not dense._graph_failed and caplog.text == ""
    dense.add(600, vectors[600:])
    assert dense.graph_pending
    dense.settle_graph(timeout=60)
    assert dense._ann is not None and dense._ann.size == 700


def test_without_a_process_a_graph_is_built_on_a_thread_and_asking_does_not_wait(
    builds: GraphBuilds, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Where no process can be started (here: no interpreter at that path), the graph is built
    on the worker thread; a search asking for another graph meanwhile must not wait for it."""
    monkeypatch.setattr("sys.executable", "/nonexistent/python")
    vectors = _unit(40_000, seed=12)
    with caplog.at_level(logging.WARNING, logger="memvault.retrieval.graphs"):
        first = builds.submit(np.arange(len(vectors), dtype=np.uint64), vectors)
        time.sleep(0.2)  # the thread's build under way
        started = time.monotonic()
        second = builds.submit(np.arange(600, dtype=np.uint64), vectors[:600])
        asked_in = time.monotonic() - started
        still_building = not first.done()
        assert first.result(timeout=120).size == len(vectors)
    assert still_building and asked_in < 0.1
    assert second.result(timeout=60).size == 600
    assert "no process for a graph build (FileNotFoundError): built on a thread" in caplog.text
