"""Embeddings persist sealed in the store: a restart re-embeds nothing, a rewritten memory or a
new model is re-embedded, deleted items take their vectors with them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
from embedders import CountingEmbedder

from memvault import Vault
from memvault.retrieval.embed import HashingEmbedder


def _open(folder: Path, embedder: HashingEmbedder) -> Vault:
    return Vault(folder, embedder=embedder)


def test_restart_reuses_stored_vectors(tmp_path: Path) -> None:
    first = CountingEmbedder()
    with _open(tmp_path, first) as vault:
        vault.add_turn("u", "s", "user", "the boat is moored in Kiel", speaker="Ann")
        vault.add_memory("u", "Ann sails every summer")
        vault.search("u", "boat")
    assert len(first.seen) == 3  # two items and the query
    second = CountingEmbedder()
    with _open(tmp_path, second) as vault:
        hits = vault.search("u", "where is the boat")
    assert second.seen == ["where is the boat"]
    assert hits[0].text == "the boat is moored in Kiel"


def test_rewritten_memory_and_new_model_are_embedded_again(tmp_path: Path) -> None:
    with _open(tmp_path, CountingEmbedder()) as vault:
        memory = vault.add_memory("u", "likes jazz")
        vault.search("u", "jazz")
        vault.update_memory("u", memory.id, text="likes opera")
    again = CountingEmbedder()
    with _open(tmp_path, again) as vault:
        vault.search("u", "opera")
    assert "likes opera" in again.seen
    other_model = CountingEmbedder(dim=64)
    with _open(tmp_path, other_model) as vault:
        assert vault.search("u", "opera")[0].id == memory.id
    assert "likes opera" in other_model.seen


def test_vectors_are_sealed_and_leave_with_their_items(tmp_path: Path) -> None:
    embedder = HashingEmbedder()
    with _open(tmp_path, embedder) as vault:
        memory = vault.add_memory("u", "the safe code is 7788")
        vault.search("u", "safe code")
        raw = embedder.embed([vault.get_memory("u", memory.id).text])[0]
    database = tmp_path / "memvault.db"
    with sqlite3.connect(database) as conn:
        (stored,) = conn.execute("SELECT vector FROM embeddings").fetchone()
    assert np.asarray(raw, dtype=np.float32).tobytes() not in stored
    with _open(tmp_path, embedder) as vault:
        vault.delete_memory("u", memory.id)
        assert vault.search("u", "safe code") == []
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM embeddings").fetchone() == (0,)
