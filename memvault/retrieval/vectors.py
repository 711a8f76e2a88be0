"""Embeddings kept in the store, sealed under the user's key, so a restart does not re-embed.

Vectors are derived from user content and say a good deal about it, so they are encrypted like
the text they come from (AES-GCM, associated data binding user, item and model). Each vector
records the item's revision when it was embedded and the embedder's name: a rewritten memory or a
change of model means recomputing, never comparing vectors across texts or models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from memvault.crypto import Keyring
from memvault.retrieval.dense import Vectors
from memvault.store import Store

TABLE = "embeddings"

ItemKey = tuple[str, str]


def _row_id(item_type: str, item_id: str, model: str) -> str:
    return f"{item_type}:{item_id}:{model}"


class SealedVectors:
    """Loads and saves a user's vectors through the store, sealing them with the keyring."""

    def __init__(self, store: Store, keyring: Keyring) -> None:
        self._store = store
        self._keyring = keyring

    def load(self, user_id: str, model: str, since_rev: int) -> dict[ItemKey, tuple[int, Vectors]]:
        """Vectors of items embedded after `since_rev`, with the item revision they belong to."""
        found = {}
        for row in self._store.get_embeddings(user_id, model, since_rev):
            row_id = _row_id(row["item_type"], row["item_id"], model)
            plain = self._keyring.open_field(user_id, TABLE, row_id, "vector", bytes(row["vector"]))
            found[(row["item_type"], row["item_id"])] = (
                int(row["rev"]),
                np.frombuffer(plain, dtype=np.float32),
            )
        return found

    def extent(self, user_id: str, model: str) -> tuple[int, int]:
        """How many vectors the user has stored, and the revision of the newest item among
        them (0 for none)."""
        return self._store.embedding_extent(user_id, model)

    def save(
        self, user_id: str, model: str, entries: Sequence[tuple[ItemKey, int, Vectors]]
    ) -> None:
        """Keep the vectors of items the user has. A user deleted since the items were read
        (by another process, perhaps) has no key, and none is made for their vectors: a
        crypto-shredded user must not get a key back, and there is nothing left to embed for."""
        if not self._keyring.has_user_key(user_id):
            return
        rows = [
            {
                "item_type": item_type,
                "item_id": item_id,
                "rev": rev,
                "vector": self._seal(user_id, _row_id(item_type, item_id, model), vector),
            }
            for (item_type, item_id), rev, vector in entries
        ]
        self._store.put_embeddings(user_id, model, rows)

    def _seal(self, user_id: str, row_id: str, vector: Vectors) -> bytes:
        plain = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        return self._keyring.seal(user_id, TABLE, row_id, "vector", plain, create=False)

    def delete(self, user_id: str, keys: Sequence[ItemKey]) -> None:
        self._store.delete_embeddings(user_id, keys)
