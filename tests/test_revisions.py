"""User revisions: what per-user caches key on, in this process and in others."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memvault import Vault
from memvault.config import Settings
from memvault.retrieval.embed import HashingEmbedder


@pytest.fixture
def two_vaults(tmp_path: Path, backend_settings: dict[str, Any]) -> Iterator[tuple[Vault, Vault]]:
    """Two vaults on one store, as two server processes would be: no events pass between them."""
    settings = Settings(data=tmp_path / "data", **backend_settings)
    first = Vault(settings=settings, embedder=HashingEmbedder())
    second = Vault(settings=settings, embedder=HashingEmbedder())
    yield first, second
    second.close()
    first.close()


def test_every_write_moves_the_revision_forward(vault: Vault) -> None:
    assert vault.store.revision("u") == 0
    vault.add_turn("u", "s", "user", "one")
    first = vault.store.revision("u")
    memory = vault.add_memory("u", "a fact")
    vault.update_memory("u", memory.id, text="a changed fact")
    vault.delete_session("u", "s")
    assert vault.store.revision("u") == first + 3


def test_a_recreated_user_never_reuses_a_revision(vault: Vault) -> None:
    vault.add_turn("u", "s", "user", "before")
    before = vault.store.revision("u")
    vault.delete_user("u")
    vault.add_turn("u", "s", "user", "after")
    assert vault.store.revision("u") > before


def test_another_process_never_serves_a_deleted_users_content(
    two_vaults: tuple[Vault, Vault],
) -> None:
    reader, writer = two_vaults
    writer.add_turn("u", "s", "user", "my old address is 12 Elm Street")
    assert [h.text for h in reader.search("u", "Elm Street address")] == [
        "my old address is 12 Elm Street"
    ]
    writer.delete_user("u")  # the reader's process hears nothing of it
    writer.add_turn("u", "s", "user", "my address is 4 Oak Road")
    writer.add_turn("u", "s", "assistant", "noted, Oak Road")
    texts = [h.text for h in reader.search("u", "Elm Street address")]
    assert "my old address is 12 Elm Street" not in texts
    assert "my address is 4 Oak Road" in texts


def test_another_process_writes_under_the_recreated_users_new_key(
    two_vaults: tuple[Vault, Vault],
) -> None:
    first, second = two_vaults
    first.add_turn("u", "s", "user", "cached key in the first process")
    second.delete_user("u")
    second.add_turn("u", "s", "user", "a new key, made by the second process")
    first.add_turn("u", "s", "user", "written by the first process afterwards")
    contents = [t.content for t in second.recent_turns("u")]
    assert contents == [
        "a new key, made by the second process",
        "written by the first process afterwards",
    ]


def test_recalls_served_by_another_process_reach_this_ones_index_with_its_next_top_up(
    two_vaults: tuple[Vault, Vault],
) -> None:
    """Access counts move no revision, so another process's cached index learns of them only
    when it next tops up: then from the store's counts, not its own."""
    here, there = two_vaults
    memory = here.add_memory("u", "allergic to penicillin")
    here.add_memory("u", "keeps bees")

    def access() -> float:
        (hit,) = here.search("u", "penicillin", explain=True, record_access=False)
        assert hit.id == memory.id and hit.signals is not None
        return hit.signals["access"]

    assert access() == 0.0  # the index is built here
    for _ in range(3):
        there.search("u", "penicillin")
    there.recall.close()  # waits for its access writes
    assert here.get_memory("u", memory.id).access_count == 3
    assert access() == 0.0  # no revision moved: the cached index still counts none
    here.add_turn("u", "s", "user", "a write: the next search tops the index up")
    assert access() == pytest.approx(math.log1p(3) / math.log1p(100), abs=1e-4)
    here.search("u", "penicillin")  # counted in this index at once, and in the store
    here.recall.close()
    assert here.get_memory("u", memory.id).access_count == 4
