"""Encryption at rest: nothing readable on disk, ciphertexts bound to their row, keys shreddable."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import MakeVault

from memvault import IntegrityError, NotFound, Vault, WrongMasterKey
from memvault.crypto import encode_key, generate_key
from memvault.retrieval.vectors import SealedVectors

CANARY = "canary-7f3a91-zebra-quartz"
# These read or damage the SQLite files themselves; the rest run on every backend.
SQLITE_FILES = pytest.mark.parametrize("backend", ["sqlite"])


def _write_canary_everywhere(vault: Vault) -> None:
    vault.put_user("u", {"nickname": CANARY})
    vault.add_turn(
        "u", "s", "user", f"my secret is {CANARY}", speaker=CANARY, metadata={"note": CANARY},
        entities=[CANARY], tool_calls=[{"name": CANARY}], tool_result=CANARY, intent=CANARY,
        audio_ref=CANARY,
    )  # fmt: skip
    vault.update_session("u", "s", title=CANARY, summary=CANARY, metadata={"x": CANARY})
    vault.add_memory("u", CANARY, category=CANARY, tags=[CANARY], metadata={"m": CANARY})
    vault.register_agent("u", CANARY, CANARY)


def _files_containing(folder: Path, needle: bytes) -> list[str]:
    hits = []
    for path in folder.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            hits.append(path.name)
    return hits


@SQLITE_FILES
def test_canary_is_absent_from_every_file(
    backend: str, make_vault: MakeVault, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    vault = make_vault(data)
    _write_canary_everywhere(vault)
    names = {p.name for p in data.iterdir()}
    assert {"memvault.db", "memvault.db-wal", "keyring.db", "master.key"} <= names
    for needle in (CANARY.encode(), CANARY.encode("utf-16-le")):
        assert _files_containing(data, needle) == []  # while open: the WAL holds the writes
    vault.close()
    assert _files_containing(data, CANARY.encode()) == []  # after the checkpoint
    assert make_vault(data).get_session("u", "s").title == CANARY


@SQLITE_FILES
def test_key_file_is_private(backend: str, vault: Vault) -> None:
    mode = stat.S_IMODE(os.stat(vault.data_dir / "master.key").st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(os.stat(vault.data_dir / "keyring.db").st_mode) == 0o600


def _copy_database(vault: Vault, target: Path) -> Path:
    with sqlite3.connect(vault.data_dir / "memvault.db") as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    src.close()
    dst.close()
    return target


@SQLITE_FILES
def test_deleting_a_user_shreds_every_copy(backend: str, vault: Vault, tmp_path: Path) -> None:
    vault.add_turn("alice", "s", "user", "alice's secret")
    vault.add_turn("bob", "s", "user", "bob's words")
    copy = _copy_database(vault, tmp_path / "stolen.db")
    wrapped = vault.keyring._keys.get_wrapped("alice")
    assert wrapped is not None
    vault.delete_user("alice")
    with sqlite3.connect(copy) as conn:
        conn.row_factory = sqlite3.Row
        rows = {r["user_id"]: dict(r) for r in conn.execute("SELECT * FROM turns")}
    conn.close()
    with pytest.raises(IntegrityError):
        vault.sealer.open("turns", "alice", rows["alice"]["id"], rows["alice"])
    assert (
        vault.sealer.open("turns", "bob", rows["bob"]["id"], rows["bob"])["content"]
        == "bob's words"
    )
    assert wrapped not in (vault.data_dir / "keyring.db").read_bytes()  # secure_delete
    assert vault.list_sessions("alice") == []


@SQLITE_FILES
@pytest.mark.parametrize(
    "owners", [("u", "u"), ("a", "b")], ids=["to another row", "to another user"]
)
def test_a_ciphertext_moved_elsewhere_fails_to_open(
    backend: str, make_vault: MakeVault, tmp_path: Path, owners: tuple[str, str]
) -> None:
    data = tmp_path / "data"
    vault = make_vault(data)
    first = vault.add_turn(owners[0], "s", "user", "first words")
    second = vault.add_turn(owners[1], "s", "user", "second words")
    vault.close()
    with sqlite3.connect(data / "memvault.db") as conn:
        sealed = dict(conn.execute("SELECT id, content FROM turns").fetchall())
        for target, source in ((first.id, second.id), (second.id, first.id)):
            conn.execute("UPDATE turns SET content = ? WHERE id = ?", (sealed[source], target))
    conn.close()
    reopened = make_vault(data)
    for user in set(owners):
        with pytest.raises(IntegrityError) as err:
            reopened.recent_turns(user)
        assert "turns.content" in str(err.value) and "words" not in str(err.value)


@pytest.mark.parametrize("damage", ["flip", "truncate", "version"])
@SQLITE_FILES
def test_tampered_ciphertext_is_an_integrity_error(
    backend: str, make_vault: MakeVault, tmp_path: Path, damage: str
) -> None:
    data = tmp_path / "data"
    vault = make_vault(data)
    memory = vault.add_memory("u", "a private fact")
    vault.close()
    with sqlite3.connect(data / "memvault.db") as conn:
        blob = bytearray(conn.execute("SELECT text FROM memories").fetchone()[0])
        if damage == "flip":
            blob[-3] ^= 0x01
        elif damage == "truncate":
            blob = blob[:10]
        else:
            blob[0] = 9
        conn.execute("UPDATE memories SET text = ?", (bytes(blob),))
    conn.close()
    with pytest.raises(IntegrityError):
        make_vault(data).get_memory("u", memory.id)


def test_wrong_master_key_fails_at_open(make_vault: MakeVault, tmp_path: Path) -> None:
    key = encode_key(generate_key())
    make_vault(tmp_path / "d", master_key=key).add_turn("u", "s", "user", "hello")
    with pytest.raises(WrongMasterKey):
        make_vault(tmp_path / "d", master_key=encode_key(generate_key()))
    assert make_vault(tmp_path / "d", master_key=key).recent_turns("u")[0].content == "hello"


@SQLITE_FILES
def test_missing_key_file_is_an_error_not_a_new_key(
    backend: str, make_vault: MakeVault, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    make_vault(data).add_turn("u", "s", "user", "hello")
    (data / "master.key").unlink()
    with pytest.raises(WrongMasterKey, match="no master key"):
        make_vault(data)
    assert not (data / "master.key").exists()


def test_bad_master_key_value_names_the_variable(make_vault: MakeVault, tmp_path: Path) -> None:
    from memvault import Invalid

    with pytest.raises(Invalid) as err:
        make_vault(tmp_path / "d", master_key="not base64!")
    assert err.value.field == "MEMVAULT_MASTER_KEY"


@SQLITE_FILES
def test_rotation_rewraps_keys_and_keeps_content(
    backend: str, make_vault: MakeVault, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    vault = make_vault(data)
    vault.add_turn("u", "s", "user", "before rotation")
    old_key = (data / "master.key").read_text().strip()
    new_key = vault.rotate_master_key()
    assert (data / "master.key").read_text().strip() == new_key != old_key
    vault.add_turn("u", "s", "user", "after rotation")
    vault.close()
    with pytest.raises(WrongMasterKey):
        make_vault(data, master_key=old_key)
    contents = [t.content for t in make_vault(data).recent_turns("u")]
    assert contents == ["before rotation", "after rotation"]


def test_rotation_by_another_process_does_not_strand_new_users(
    make_vault: MakeVault, tmp_path: Path
) -> None:
    """A vault that stays open (a server) while another one (the command line) rotates the
    master key still holds the old key: a data key it made for a new user under that key would
    open with neither key after a restart. It refuses to make one instead, and says why."""
    data = tmp_path / "data"
    running = make_vault(data)
    running.add_turn("alice", "s", "user", "before rotation")
    rotator = make_vault(data)
    rotator.rotate_master_key()
    rotator.close()
    with pytest.raises(WrongMasterKey, match="rotated"):
        running.add_turn("bob", "s", "user", "a new user after the rotation")
    with pytest.raises(WrongMasterKey, match="rotated"):
        running.add_turn("alice", "s", "user", "alice's key is wrapped by the new key now")
    running.close()
    reopened = make_vault(data)
    reopened.add_turn("alice", "s", "user", "after rotation")
    assert [t.content for t in reopened.recent_turns("alice")] == [
        "before rotation", "after rotation",
    ]  # fmt: skip
    reopened.add_turn("bob", "s", "user", "bob, with the new key")
    assert [t.content for t in reopened.recent_turns("bob")] == ["bob, with the new key"]


@SQLITE_FILES
def test_rotation_interrupted_before_rename_recovers(
    backend: str, make_vault: MakeVault, tmp_path: Path
) -> None:
    """A crash after the keyring took the new key but before the key file was replaced."""
    data = tmp_path / "data"
    vault = make_vault(data)
    vault.add_turn("u", "s", "user", "survives")
    old_file = (data / "master.key").read_bytes()
    vault.rotate_master_key()
    vault.close()
    shutil.copy(data / "master.key", data / "master.key.new")
    (data / "master.key").write_bytes(old_file)
    assert make_vault(data).recent_turns("u")[0].content == "survives"
    assert not (data / "master.key.new").exists()


Update = Callable[[Vault, str, str], object]
UPDATES: dict[str, tuple[str, Update]] = {  # what each update reads first, and the update
    "update_memory": ("get_memory", lambda v, m, s: v.update_memory("alice", m, text="new")),
    "move_memory": ("get_memory", lambda v, m, s: v.move_memory("alice", m, tier="archive")),
    "supersede_memory": ("get_memory", lambda v, m, s: v.supersede_memory("alice", m, "new")),
    "update_session": ("get_session", lambda v, m, s: v.update_session("alice", s, title="t")),
}


@pytest.mark.parametrize("update", UPDATES)
def test_an_update_of_a_user_deleted_after_its_read_is_not_found_and_makes_no_key(
    make_vault: MakeVault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, update: str
) -> None:
    """Another vault on the same database deletes the user between the update's read and its
    seal: sealing made the shredded user a new data key. Only a first write may make one."""
    data = tmp_path / "data"
    updater, deleter = make_vault(data), make_vault(data)
    updater.add_turn("alice", "s", "user", "hello")
    memory = updater.add_memory("alice", "likes tea")
    read_name, run = UPDATES[update]
    read = getattr(updater.store, read_name)

    def read_then_deleted(*args: Any, **kwargs: Any) -> Any:
        found = read(*args, **kwargs)  # the row as it was, then the user goes
        deleter.delete_user("alice")
        return found

    monkeypatch.setattr(updater.store, read_name, read_then_deleted)
    with pytest.raises(NotFound):
        run(updater, memory.id, "s")
    assert deleter.keyring._keys.get_wrapped("alice") is None
    assert updater.store.get_user("alice") is None


def test_vectors_saved_for_a_user_deleted_meanwhile_are_dropped_and_make_no_key(
    make_vault: MakeVault, tmp_path: Path
) -> None:
    """A top-up that read a user's rows before another vault deleted the user then saves their
    vectors: sealing them made the shredded user a new data key."""
    data = tmp_path / "data"
    embedding, deleter = make_vault(data), make_vault(data)
    turn = embedding.add_turn("alice", "s", "user", "hello")
    deleter.delete_user("alice")
    vectors = SealedVectors(embedding.store, embedding.keyring)
    vectors.save("alice", "model", [(("turn", turn.id), 1, np.ones(4, dtype=np.float32))])
    assert deleter.keyring._keys.get_wrapped("alice") is None
    assert vectors.load("alice", "model", 0) == {}


def test_a_read_of_rows_whose_user_is_deleted_meanwhile_is_not_found(
    make_vault: MakeVault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows were read, then another vault deleted the user and this one's key cache let go
    of the key (as any check against the store does): the rows no longer open. The caller hears
    what a read a moment later would say, not an integrity fault."""
    data = tmp_path / "data"
    reader, deleter = make_vault(data), make_vault(data)
    memory = reader.add_memory("alice", "likes tea")
    read = reader.store.get_memory

    def read_then_deleted(*args: Any, **kwargs: Any) -> Any:
        found = read(*args, **kwargs)
        deleter.delete_user("alice")
        assert not reader.keyring.has_user_key("alice")  # the cached key let go
        return found

    monkeypatch.setattr(reader.store, "get_memory", read_then_deleted)
    with pytest.raises(NotFound) as refused:
        reader.get_memory("alice", memory.id)
    assert str(refused.value) == "no such user"
