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


def test_recalls_served_by_another_process_reach_this_ones_index_at_its_next_search(
    two_vaults: tuple[Vault, Vault],
) -> None:
    """Access counts move no revision, so a search reads the user's count of recalls with the
    revision: an index that counts fewer than the store reads the counts that moved, though
    nothing was written."""
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
    assert access() == pytest.approx(math.log1p(3) / math.log1p(100), abs=1e-4)
    here.search("u", "penicillin")  # counted in this index at once, and in the store
    here.recall.close()
    assert here.get_memory("u", memory.id).access_count == 4
    assert access() == pytest.approx(math.log1p(4) / math.log1p(100), abs=1e-4)


def test_this_process_own_recalls_send_its_index_to_the_store_for_nothing(
    two_vaults: tuple[Vault, Vault], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index counts its own process's recalls when it finds them, so the count of recalls
    they move in the store is no news to it: only another process's recall is."""
    here, there = two_vaults
    memory = here.add_memory("u", "allergic to penicillin")
    for _ in range(2):
        here.search("u", "penicillin")
    here.recall.close()  # waits for the access writes: the store now counts two more recalls
    reads: list[int] = []
    store_changes = here.store.changes_since

    def counted(user_id: str, revision: int, accessed: int) -> Any:
        reads.append(accessed)
        return store_changes(user_id, revision, accessed)

    monkeypatch.setattr(here.store, "changes_since", counted)
    (hit,) = here.search("u", "penicillin", explain=True)
    assert hit.signals is not None
    assert hit.signals["access"] == pytest.approx(math.log1p(2) / math.log1p(100), abs=1e-4)
    assert reads == []
    there.search("u", "penicillin")
    there.recall.close()
    (hit,) = here.search("u", "penicillin", explain=True)
    assert reads == [2]  # read the counts moved after this index's two
    assert hit.signals is not None and here.get_memory("u", memory.id).access_count == 3
    assert hit.signals["access"] == pytest.approx(math.log1p(3) / math.log1p(100), abs=1e-4)
