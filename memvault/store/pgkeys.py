"""Wrapped data keys in PostgreSQL, for deployments where several servers share one keyring.

The tables live wherever `MEMVAULT_KEYRING_URL` points (ideally another database, or at least
another schema and role, than the content); unset, beside the content. docs/encryption.md weighs
the two. Each key is one row; a shredded key's row is deleted and the table vacuumed. Each read
and write is one statement or transaction and nothing else, so it is `retried` when the
database rolls it back or loses its connection.
"""

from __future__ import annotations

from collections.abc import Callable

from memvault.errors import Conflict
from memvault.store.database import retried
from memvault.store.postgres import PostgresDatabase

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS keyring_meta (name TEXT PRIMARY KEY, value BYTEA NOT NULL)",
    "CREATE TABLE IF NOT EXISTS user_keys (user_id TEXT PRIMARY KEY, wrapped_key BYTEA NOT NULL)",
)


class PostgresKeyStore:
    """The `KeyStore` protocol on PostgreSQL."""

    def __init__(self, url: str, *, field: str = "keyring_url") -> None:
        self._db = PostgresDatabase(url, field=field, pool_size=2)
        try:
            with self._db.exclusive(), self._db.write() as tx:
                for statement in _SCHEMA:
                    tx.execute(statement)
        except BaseException:
            self._db.close()
            raise

    @retried
    def _value(self, sql: str, params: tuple[object, ...]) -> bytes | None:
        """One column of at most one row, read in one round trip: every write checks its user's
        key here first, so this sits on the write path."""
        rows = self._db.query(sql, params)
        return bytes(next(iter(rows[0].values()))) if rows else None

    def get_check(self) -> bytes | None:
        return self._value("SELECT value FROM keyring_meta WHERE name = 'check'", ())

    @retried
    def set_check(self, value: bytes) -> None:
        """Record the first check only: a second process racing to create the keyring loses."""
        with self._db.write() as tx:
            added = tx.execute(
                "INSERT INTO keyring_meta (name, value) VALUES ('check', ?) "
                "ON CONFLICT (name) DO NOTHING",
                (value,),
            )
        if not added:
            raise Conflict("another process created this keyring at the same moment; open again")

    def get_wrapped(self, user_id: str) -> bytes | None:
        return self._value("SELECT wrapped_key FROM user_keys WHERE user_id = ?", (user_id,))

    @retried
    def add_wrapped(self, user_id: str, wrapped: bytes, check: bytes) -> bytes | None:
        """Store the user's first key while the check is `check`; a key another process stored
        first wins and is returned. The check is read FOR SHARE: a rotation, which holds it FOR
        UPDATE, either sees this key or makes this insert find a new check."""
        with self._db.write() as tx:
            tx.send(
                "INSERT INTO user_keys (user_id, wrapped_key) SELECT ?, ? WHERE EXISTS "
                "(SELECT 1 FROM keyring_meta WHERE name = 'check' AND value = ? FOR SHARE) "
                "ON CONFLICT (user_id) DO NOTHING",
                (user_id, wrapped, check),
            )
            row = tx.one("SELECT wrapped_key FROM user_keys WHERE user_id = ?", (user_id,))
        return None if row is None else bytes(row["wrapped_key"])

    def delete_wrapped(self, user_id: str) -> bool:
        deleted = self._delete(user_id)
        if deleted:
            # Reclaim the dead row version now rather than whenever autovacuum comes by.
            with self._db.connection() as conn:
                conn.execute("VACUUM user_keys")
        return deleted

    @retried
    def _delete(self, user_id: str) -> bool:
        with self._db.write() as tx:
            return tx.execute("DELETE FROM user_keys WHERE user_id = ?", (user_id,)) > 0

    @retried
    def all_wrapped(self) -> list[tuple[str, bytes]]:
        rows = self._db.query("SELECT user_id, wrapped_key FROM user_keys ORDER BY user_id")
        return [(r["user_id"], bytes(r["wrapped_key"])) for r in rows]

    @retried
    def replace_all(self, rewrap: Callable[[str, bytes], bytes], check: bytes) -> None:
        """Every key and the check in one transaction: a keyring never mixes two master keys.
        The check is locked first, so a key being added meanwhile is either read here or
        refused (`add_wrapped`)."""
        with self._db.write() as tx:
            tx.one("SELECT value FROM keyring_meta WHERE name = 'check' FOR UPDATE")
            found = tx.all("SELECT user_id, wrapped_key FROM user_keys ORDER BY user_id")
            rows = [(rewrap(r["user_id"], bytes(r["wrapped_key"])), r["user_id"]) for r in found]
            # Not held back for the commit: a connection lost while these wait on a lock is
            # then a plain rollback, run again, rather than a commit of unknown outcome.
            tx.executemany("UPDATE user_keys SET wrapped_key = ? WHERE user_id = ?", rows)
            tx.execute("UPDATE keyring_meta SET value = ? WHERE name = 'check'", (check,))

    def ping(self) -> None:
        self._db.ping()

    def close(self) -> None:
        self._db.close()
