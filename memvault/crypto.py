"""The keyring: a master key, one data key per user, and field-level sealing.

Every user's content is sealed with AES-256-GCM under that user's own 256-bit data key. Data keys
are stored wrapped (encrypted) by the master key, in a key store kept apart from the content, so a
copy of the content database alone opens nothing, and destroying a user's data key makes every
copy of their rows unreadable (crypto-shredding).

A sealed field is ``version byte || 96-bit nonce || ciphertext+tag``. The associated data binds
the ciphertext to (user, table, row, column): moved to another row, column or user, it fails to
open instead of being read as someone else's text.
"""

from __future__ import annotations

import base64
import binascii
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from memvault.errors import IntegrityError, Invalid, UserKeyMissing, WrongMasterKey

SEAL_VERSION = 1
NONCE_BYTES = 12
KEY_BYTES = 32
MASTER_KEY_ENV = "MEMVAULT_MASTER_KEY"
MASTER_KEY_FILE = "master.key"
_CHECK_PLAINTEXT = b"memvault keyring check v1"
_CHECK_AAD = b"memvault:keyring-check"
_CACHE_USERS = 4096
_VERSION_BYTE = bytes((SEAL_VERSION,))


def generate_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str, *, source: str) -> bytes:
    """Parse a base64 master key; `source` names where it came from for the error message."""
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(source, "not valid base64") from None
    if len(key) != KEY_BYTES:
        raise Invalid(source, f"must decode to {KEY_BYTES} bytes, got {len(key)}")
    return key


def field_aad(user_id: str, table: str, row_id: str, column: str) -> bytes:
    return "\x1f".join(("memvault:v1", user_id, table, row_id, column)).encode()


def _wrap_aad(user_id: str) -> bytes:
    return b"memvault:data-key\x1f" + user_id.encode()


class KeyStore(Protocol):
    """Where wrapped data keys live: a SQLite file by default; PostgreSQL brings its own."""

    def get_check(self) -> bytes | None: ...
    def set_check(self, value: bytes) -> None: ...
    def get_wrapped(self, user_id: str) -> bytes | None: ...
    def add_wrapped(self, user_id: str, wrapped: bytes, check: bytes) -> bytes | None:
        """Store `wrapped` unless the user has a key already, and only while the keyring's check
        is still `check` (no rotation has changed the master key since the caller read it);
        return the key that is stored, or None when there is none."""
        ...

    def delete_wrapped(self, user_id: str) -> bool: ...
    def all_wrapped(self) -> list[tuple[str, bytes]]: ...
    def replace_all(self, rewrap: Callable[[str, bytes], bytes], check: bytes) -> None:
        """Replace every wrapped key by `rewrap(user_id, wrapped)` and the check by `check`, in
        one transaction that a concurrent `add_wrapped` waits for: no key is left out."""
        ...

    def ping(self) -> None: ...
    def close(self) -> None: ...


class SqliteKeyStore:
    """Wrapped keys in their own SQLite file, with secure_delete so a shredded key leaves no trace.

    Rollback journal instead of WAL: a deleted key must not linger in a write-ahead log.
    """

    def __init__(self, path: Path) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout = 10000")
        self._conn.execute("PRAGMA journal_mode = DELETE")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute("PRAGMA secure_delete = ON")
        with self._lock:
            self._conn.executescript(
                """
                CREATE TABLE IF NOT EXISTS keyring_meta (
                    name TEXT PRIMARY KEY, value BLOB NOT NULL
                );
                CREATE TABLE IF NOT EXISTS user_keys (
                    user_id TEXT PRIMARY KEY, wrapped_key BLOB NOT NULL
                );
                """
            )
        os.chmod(path, 0o600)

    def _one(self, sql: str, params: tuple[object, ...]) -> bytes | None:
        with self._lock:
            row = self._conn.execute(sql, params).fetchone()
        return None if row is None else bytes(row[0])

    def get_check(self) -> bytes | None:
        return self._one("SELECT value FROM keyring_meta WHERE name = ?", ("check",))

    def set_check(self, value: bytes) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO keyring_meta (name, value) VALUES ('check', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (value,),
            )

    def get_wrapped(self, user_id: str) -> bytes | None:
        return self._one("SELECT wrapped_key FROM user_keys WHERE user_id = ?", (user_id,))

    def add_wrapped(self, user_id: str, wrapped: bytes, check: bytes) -> bytes | None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO user_keys (user_id, wrapped_key) SELECT ?, ? WHERE EXISTS "
                "(SELECT 1 FROM keyring_meta WHERE name = 'check' AND value = ?) "
                "ON CONFLICT (user_id) DO NOTHING",
                (user_id, wrapped, check),
            )
            row = self._conn.execute(
                "SELECT wrapped_key FROM user_keys WHERE user_id = ?", (user_id,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def delete_wrapped(self, user_id: str) -> bool:
        with self._lock:
            cur = self._conn.execute("DELETE FROM user_keys WHERE user_id = ?", (user_id,))
        return cur.rowcount > 0

    def all_wrapped(self) -> list[tuple[str, bytes]]:
        with self._lock:
            rows = self._conn.execute("SELECT user_id, wrapped_key FROM user_keys").fetchall()
        return [(r[0], bytes(r[1])) for r in rows]

    def replace_all(self, rewrap: Callable[[str, bytes], bytes], check: bytes) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")  # the keys are read under the write lock
            try:
                rows = self._conn.execute("SELECT user_id, wrapped_key FROM user_keys").fetchall()
                self._conn.executemany(
                    "UPDATE user_keys SET wrapped_key = ? WHERE user_id = ?",
                    [(rewrap(u, bytes(w)), u) for u, w in rows],
                )
                self._conn.execute(
                    "UPDATE keyring_meta SET value = ? WHERE name = 'check'", (check,)
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def ping(self) -> None:
        with self._lock:
            self._conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def load_master_key(data_dir: Path, env_value: str | None, *, create: bool) -> bytes:
    """The master key from the environment, else from `master.key` beside the data.

    The key file is created (mode 0600) only for a brand-new data folder: creating a fresh key for
    a folder that already holds a keyring would lock its users out, so that is an error instead.
    A `master.key.new` left by an interrupted rotation is handled by `Keyring.open`.
    """
    if env_value:
        return decode_key(env_value, source=MASTER_KEY_ENV)
    path = data_dir / MASTER_KEY_FILE
    if path.exists():
        return decode_key(path.read_text(), source=str(MASTER_KEY_FILE))
    if not create:
        raise WrongMasterKey(
            f"no master key: set {MASTER_KEY_ENV} or restore {MASTER_KEY_FILE} in the data folder"
        )
    key = generate_key()
    write_key_file(path, key)
    return key


def write_key_file(path: Path, key: bytes) -> None:
    """A new file holding `key` (base64), readable by its owner alone, on disk when this
    returns; an existing file is never overwritten (`FileExistsError`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(encode_key(key) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _unwrapped(master: AESGCM, user_id: str, wrapped: bytes) -> bytes:
    try:
        return master.decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _wrap_aad(user_id))
    except InvalidTag:
        raise IntegrityError("a data key failed to unwrap") from None


def _rotated() -> WrongMasterKey:
    return WrongMasterKey(
        "the master key was rotated since this keyring was opened: open it again with the new key"
    )


class Keyring:
    """Seals and opens user fields; creates, caches, rotates and shreds data keys."""

    def __init__(self, keys: KeyStore, master_key: bytes, *, key_file: Path | None = None) -> None:
        self._keys = keys
        self._master = AESGCM(master_key)
        self._key_file = key_file
        # user id -> (wrapped key as stored, its cipher): the wrapped bytes tell a cached key
        # apart from the one another process may have made after deleting the user.
        self._cache: OrderedDict[str, tuple[bytes, AESGCM]] = OrderedDict()
        self._lock = threading.Lock()
        check = keys.get_check()
        if check is None:
            keys.set_check(self._seal_check(self._master))
            check = keys.get_check()
        if check is None or not self._check_opens(self._master, check):
            raise WrongMasterKey("the master key does not open this keyring")
        # New data keys are stored only while the keyring still has this check: after another
        # process rotates the master key, a key wrapped by this one would open with neither.
        self._check = check

    @staticmethod
    def _seal_check(master: AESGCM) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + master.encrypt(nonce, _CHECK_PLAINTEXT, _CHECK_AAD)

    @staticmethod
    def _check_opens(master: AESGCM, check: bytes) -> bool:
        try:
            return master.decrypt(check[:NONCE_BYTES], check[NONCE_BYTES:], _CHECK_AAD) == (
                _CHECK_PLAINTEXT
            )
        except InvalidTag:
            return False

    # -- data keys -------------------------------------------------------------------------

    def _user_cipher(self, user_id: str, *, create: bool, fresh: bool = False) -> AESGCM:
        """The user's cipher: from the cache, or (when absent or `fresh`) as the store has it."""
        cipher = self._stored_cipher(user_id, create=create, fresh=fresh)
        if cipher is None:
            raise UserKeyMissing("no data key for this user: it was deleted or never made")
        return cipher

    def _stored_cipher(self, user_id: str, *, create: bool, fresh: bool) -> AESGCM | None:
        """`_user_cipher`, or None when the user has no key and `create` is false."""
        with self._lock:
            cached = self._cache.get(user_id)
            if cached is not None:
                self._cache.move_to_end(user_id)
                if not fresh:
                    return cached[1]
        wrapped = self._keys.get_wrapped(user_id)
        if wrapped is None:
            if not create:
                with self._lock:
                    self._cache.pop(user_id, None)
                return None
            stored = self._keys.add_wrapped(
                user_id, self._wrap(user_id, generate_key()), self._check
            )
            if stored is None:
                raise _rotated()
            wrapped = stored
        if cached is not None and cached[0] == wrapped:
            return cached[1]
        cipher = AESGCM(self._unwrap(user_id, wrapped))
        with self._lock:
            self._cache[user_id] = (wrapped, cipher)
            if len(self._cache) > _CACHE_USERS:
                self._cache.popitem(last=False)
        return cipher

    def _wrap(self, user_id: str, data_key: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._master.encrypt(nonce, data_key, _wrap_aad(user_id))

    def _unwrap(self, user_id: str, wrapped: bytes) -> bytes:
        try:
            return _unwrapped(self._master, user_id, wrapped)
        except IntegrityError:
            if self._keys.get_check() != self._check:
                raise _rotated() from None
            raise

    def ensure_user_key(self, user_id: str) -> None:
        """Make sure the user has a data key, and that the cached one is still the stored one.

        Writers call this once per call before sealing: another process may have deleted the
        user (shredding the key) and made them anew with a new key since this one cached it.
        """
        self._user_cipher(user_id, create=True, fresh=True)

    def has_user_key(self, user_id: str) -> bool:
        """Whether the user has a data key, the cached one checked against the store; none is
        made. An update calls this instead of `ensure_user_key`: a user deleted since the
        update read their row (crypto-shredded) must not be given a key again."""
        return self._stored_cipher(user_id, create=False, fresh=True) is not None

    def ping(self) -> None:
        """Raise if the key store cannot be reached."""
        self._keys.ping()

    def shred(self, user_id: str) -> bool:
        """Destroy the user's data key: every ciphertext of theirs, in any copy, is now noise."""
        with self._lock:
            self._cache.pop(user_id, None)
        return self._keys.delete_wrapped(user_id)

    def rotate(self, new_master_key: bytes) -> None:
        """Re-wrap every data key under a new master key; content is untouched.

        With a key file, the new key is written to `master.key.new` before the keyring changes
        and renamed over `master.key` after, so a crash at any point leaves a key that opens it.
        Other processes with the keyring open refuse to make or unwrap a data key from then on
        (`WrongMasterKey`), until they open it again with the new master key.
        """
        new_master = AESGCM(new_master_key)
        pending = None
        if self._key_file is not None:
            pending = self._key_file.with_name(self._key_file.name + ".new")
            pending.unlink(missing_ok=True)
            write_key_file(pending, new_master_key)

        def rewrap(user_id: str, wrapped: bytes) -> bytes:  # runs inside the key store's lock
            data_key = _unwrapped(self._master, user_id, wrapped)
            nonce = os.urandom(NONCE_BYTES)
            return nonce + new_master.encrypt(nonce, data_key, _wrap_aad(user_id))

        check = self._seal_check(new_master)
        self._keys.replace_all(rewrap, check)
        self._master, self._check = new_master, check
        if pending is not None and self._key_file is not None:
            os.replace(pending, self._key_file)

    @classmethod
    def open(cls, keys: KeyStore, data_dir: Path, env_value: str | None) -> Keyring:
        """Open with the configured master key, finishing a rotation a crash interrupted."""
        brand_new = keys.get_check() is None
        master = load_master_key(data_dir, env_value, create=brand_new)
        key_file = None if env_value else data_dir / MASTER_KEY_FILE
        pending = data_dir / (MASTER_KEY_FILE + ".new")
        if key_file is not None and pending.exists():
            new_master = decode_key(pending.read_text(), source=pending.name)
            check = keys.get_check()
            if check is not None and cls._check_opens(AESGCM(new_master), check):
                os.replace(pending, key_file)
                master = new_master
            else:
                pending.unlink()
        return cls(keys, master, key_file=key_file)

    # -- fields ----------------------------------------------------------------------------

    def seal(
        self,
        user_id: str,
        table: str,
        row_id: str,
        column: str,
        plaintext: bytes,
        *,
        create: bool = True,
    ) -> bytes:
        return self.seal_columns(user_id, table, row_id, {column: plaintext}, create=create)[column]

    def seal_columns(
        self,
        user_id: str,
        table: str,
        row_id: str,
        plaintexts: dict[str, bytes],
        *,
        create: bool = True,
    ) -> dict[str, bytes]:
        """Seal several columns of one row, looking the user's key up once. Without `create`,
        a user with no key (deleted meanwhile) is an `IntegrityError` rather than a new key."""
        cipher = self._user_cipher(user_id, create=create)
        nonces = os.urandom(NONCE_BYTES * len(plaintexts))
        sealed = {}
        for i, (column, plaintext) in enumerate(plaintexts.items()):
            nonce = nonces[i * NONCE_BYTES : (i + 1) * NONCE_BYTES]
            aad = field_aad(user_id, table, row_id, column)
            sealed[column] = _VERSION_BYTE + nonce + cipher.encrypt(nonce, plaintext, aad)
        return sealed

    def open_field(
        self, user_id: str, table: str, row_id: str, column: str, sealed: bytes
    ) -> bytes:
        if len(sealed) < 1 + NONCE_BYTES + 16 or sealed[0] != SEAL_VERSION:
            raise IntegrityError(f"{table}.{column}: ciphertext is truncated or of unknown version")
        nonce, body = sealed[1 : 1 + NONCE_BYTES], sealed[1 + NONCE_BYTES :]
        aad = field_aad(user_id, table, row_id, column)
        cipher = self._user_cipher(user_id, create=False)
        try:
            return cipher.decrypt(nonce, body, aad)
        except InvalidTag:
            pass
        # Perhaps the cached key is of a deleted incarnation of this user: ask the store.
        current = self._user_cipher(user_id, create=False, fresh=True)
        if current is not cipher:
            try:
                return current.decrypt(nonce, body, aad)
            except InvalidTag:
                pass
        raise IntegrityError(
            f"{table}.{column}: ciphertext does not open (tampered, or not this row's)"
        )

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
        self._keys.close()


__all__ = [
    "KeyStore",
    "Keyring",
    "SqliteKeyStore",
    "decode_key",
    "encode_key",
    "generate_key",
]
