"""Which columns of which table hold user content, and how they are sealed and opened.

The single list of encrypted columns: the store keeps whatever it is given, `Vault` passes every
row through here on its way in and out.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from memvault.crypto import Keyring
from memvault.store.database import Row

Encoding = Literal["text", "json"]

SEALED_COLUMNS: dict[str, dict[str, Encoding]] = {
    "users": {"profile": "json"},
    "agents": {"name": "text", "description": "text"},
    "sessions": {
        "title": "text", "summary": "text", "intent": "text", "entities": "json",
        "metadata": "json",
    },
    "turns": {
        "speaker": "text", "content": "text", "audio_ref": "text", "tool_calls": "json",
        "tool_result": "json", "intent": "text", "entities": "json", "metadata": "json",
    },
    "memories": {
        "text": "text", "category": "text", "tags": "json", "source_turn_ids": "json",
        "metadata": "json",
    },
}  # fmt: skip


def _encode(value: Any, encoding: Encoding) -> bytes:
    if encoding == "text":
        return str(value).encode("utf-8")
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _decode(data: bytes, encoding: Encoding) -> Any:
    text = data.decode("utf-8")
    return text if encoding == "text" else json.loads(text)


class Sealer:
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def for_user(self, user_id: str) -> UserSealer:
        """A sealer for one write of one user, with the user's key checked against the store once
        (it may have been shredded and remade by another process since it was cached). The
        user's first write makes their key here."""
        self.keyring.ensure_user_key(user_id)
        return UserSealer(self, user_id, create=True)

    def for_existing_user(self, user_id: str) -> UserSealer | None:
        """A sealer for an update of what the user has, which never makes a key; None when the
        user has none: deleted (by another writer, perhaps) since the caller read the row, so
        the update has nothing to change, and a crypto-shredded user stays without a key."""
        if not self.keyring.has_user_key(user_id):
            return None
        return UserSealer(self, user_id, create=False)

    def seal(self, table: str, user_id: str, row_id: str, row: Row, *, create: bool = True) -> Row:
        """A copy of `row` with its content columns sealed; None stays None (nothing to hide).
        Without `create`, sealing never makes the user a key (see `for_existing_user`)."""
        plaintexts = {
            column: _encode(row[column], encoding)
            for column, encoding in SEALED_COLUMNS[table].items()
            if row.get(column) is not None
        }
        if not plaintexts:
            return dict(row)
        sealed = self.keyring.seal_columns(user_id, table, row_id, plaintexts, create=create)
        return {**row, **sealed}

    def open(self, table: str, user_id: str, row_id: str, row: Row) -> Row:
        opened = dict(row)
        for column, encoding in SEALED_COLUMNS[table].items():
            value = row.get(column)
            if value is not None:
                plain = self.keyring.open_field(user_id, table, row_id, column, bytes(value))
                opened[column] = _decode(plain, encoding)
        return opened


class UserSealer:
    """Seals the rows of one write for one user; made by `Sealer.for_user` (which may make the
    user's key) or `Sealer.for_existing_user` (which never does)."""

    def __init__(self, sealer: Sealer, user_id: str, *, create: bool) -> None:
        self._sealer = sealer
        self._user_id = user_id
        self._create = create

    def seal(self, table: str, row_id: str, row: Row) -> Row:
        return self._sealer.seal(table, self._user_id, row_id, row, create=self._create)
