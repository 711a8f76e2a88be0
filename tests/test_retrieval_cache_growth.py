"""A large index build tells the server, which settles its garbage collector there; indexes
hold no reference cycles, which is what makes freezing them safe."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

from memvault import Vault
from memvault.api.serve import prepare, settle_garbage
from memvault.retrieval.cache import GROWN_ITEMS
from memvault.retrieval.embed import HashingEmbedder


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Vault]:
    with Vault(tmp_path, embedder=HashingEmbedder(64)) as opened:
        yield opened


def _add(vault: Vault, user_id: str, count: int) -> None:
    for first in range(0, count, 500):
        rows = [{"role": "user", "content": f"note {n} about the mill pond"} for n in range(500)]
        vault.add_turns(user_id, f"s{first}", rows[: count - first])


def test_on_grown_is_called_once_per_grown_items_taken_in_however_many_top_ups(
    vault: Vault,
) -> None:
    calls: list[int] = []
    vault.recall.cache.on_grown = lambda: calls.append(1)
    _add(vault, "ann", GROWN_ITEMS)  # in two writes: the background top-ups may take either
    vault.search("ann", "mill pond")
    assert len(calls) == 1
    vault.add_turn("ann", "s0", "user", "one more note")
    _add(vault, "bea", GROWN_ITEMS - 2)
    vault.search("ann", "mill pond")
    vault.search("bea", "mill pond")
    assert len(calls) == 1  # one item short of another GROWN_ITEMS
    vault.add_turn("bea", "s0", "user", "the last note")
    vault.search("bea", "mill pond")
    assert len(calls) == 2


def test_an_index_is_freed_by_reference_counting_alone(vault: Vault) -> None:
    _add(vault, "ann", 50)
    vault.add_memory("ann", "Ann sails every summer", importance=0.8)
    vault.search("ann", "sails")
    index = weakref.ref(vault.recall.cache.get("ann", vault.store.revision("ann")))
    gc.disable()
    try:
        vault.recall.forget("ann")
        assert index() is None  # no cycle kept it: no collector was needed
    finally:
        gc.enable()


def test_a_server_settles_the_collector_after_a_large_build(vault: Vault) -> None:
    prepare(vault)
    assert vault.recall.cache.on_grown is settle_garbage
    frozen = gc.get_freeze_count()
    try:
        _add(vault, "ann", GROWN_ITEMS)
        vault.search("ann", "mill pond")
        assert gc.get_freeze_count() > frozen
    finally:
        gc.unfreeze()


def test_the_cache_keeps_to_its_byte_budget_least_recently_used_out(vault: Vault) -> None:
    cache = vault.recall.cache
    for user_id in ("ann", "bea", "cid"):
        _add(vault, user_id, 200)
    assert vault.recall.warmer is not None and vault.recall.warmer.settle(timeout=30)
    for user_id in ("ann", "bea", "cid"):  # built after the writes: start from an empty cache
        cache.forget(user_id)

    def index(user_id: str) -> object:
        return cache.get(user_id, vault.store.revision(user_id))

    ann = index("ann")
    cache.max_bytes = int(2.5 * cache.nbytes())  # room for two indexes of this size
    bea = index("bea")
    assert index("ann") is ann  # now the most recently used
    index("cid")  # three do not fit: bea, used least recently, goes
    assert cache.nbytes() <= cache.max_bytes
    assert index("ann") is ann
    assert index("bea") is not bea  # built again
    for user_id in ("ann", "bea", "cid"):
        cache.forget(user_id)
    assert cache.nbytes() == 0
