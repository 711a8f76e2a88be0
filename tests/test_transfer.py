"""Export and import: a user moves between vaults unchanged, or not at all."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import MakeVault

from memvault import Conflict, Invalid, Vault
from memvault.cli import main
from memvault.config import Settings
from memvault.store import open_key_store


def _fill(vault: Vault) -> None:
    vault.put_user("alice", {"name": "Alice"})
    agent = vault.register_agent("alice", "planner", "plans")
    vault.add_turn("alice", "s1", "user", "hello", speaker="Alice", metadata={"m": 1},
                   created_at=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))  # fmt: skip
    vault.add_turn("alice", "s1", "tool", "", tool_result={"ok": True}, agent_id=agent.id)
    vault.add_turn("alice", "room", "user", "hi all", channel="general", modality="audio",
                   audio_ref="clip.ogg", audio_duration=2.0)  # fmt: skip
    vault.update_session("alice", "s1", title="First chat", summary="Greetings")
    first = vault.add_memory("alice", "likes tea", category="preference", tags=["drink"])
    second = vault.add_memory("alice", "likes coffee", category="preference", importance=0.9)
    vault.update_memory("alice", first.id, superseded_by=second.id)


def _comparable(export: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in export.items() if k != "exported_at"}


def test_export_then_import_gives_identical_data(make_vault: MakeVault, tmp_path: Path) -> None:
    source = make_vault(tmp_path / "a")
    _fill(source)
    exported = source.export_user("alice")
    json.dumps(exported)  # JSON-serialisable as it is
    target = make_vault(tmp_path / "b")
    target.import_user(json.loads(json.dumps(exported)))
    assert _comparable(target.export_user("alice")) == _comparable(exported)
    assert target.stats("alice")["turns"] == 3


def test_import_under_another_user_id(make_vault: MakeVault, tmp_path: Path) -> None:
    vault = make_vault(tmp_path / "a")
    _fill(vault)
    vault.import_user(vault.export_user("alice"), user_id="alice-copy")
    copy = vault.export_user("alice-copy")
    assert copy["user"]["id"] == "alice-copy"
    assert copy["sessions"] == vault.export_user("alice")["sessions"]


def test_import_clash_writes_nothing(vault: Vault) -> None:
    _fill(vault)
    exported = vault.export_user("alice")
    vault.import_user(exported, user_id="bob")
    before = _comparable(vault.export_user("bob"))
    with pytest.raises(Conflict):
        vault.import_user(exported, user_id="bob")
    assert _comparable(vault.export_user("bob"))["sessions"] == before["sessions"]
    assert len(vault.list_memories("bob")) == 2


def test_an_import_over_the_users_own_data_says_what_clashes(vault: Vault) -> None:
    _fill(vault)
    exported = vault.export_user("alice")
    for part in ("agents", "sessions", "memories"):  # each clashes once the one before is gone
        with pytest.raises(Conflict) as err:
            vault.import_user(exported)
        assert err.value.message == (
            f"the user already holds {part} with this import's ids; nothing was imported"
        )
        exported = {**exported, part: []}
    assert len(vault.list_memories("alice")) == 2


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("format", lambda d: d.update(format="something-else")),
        ("version", lambda d: d.update(version=99)),
        ("sessions", lambda d: d.update(sessions={})),
        ("sessions[0].turns[0].role", lambda d: d["sessions"][0]["turns"][0].update(role="x")),
        ("memories[0].importance", lambda d: d["memories"][0].update(importance=5)),
        ("user_id", lambda d: d["user"].update(id="a/b")),
        ("agents[0].name", lambda d: d["agents"][0].update(name="")),
        ("user.created_at", lambda d: d["user"].update(created_at="yesterday")),
    ],
)
def test_bad_export_is_invalid_and_leaves_no_trace(
    make_vault: MakeVault, tmp_path: Path, field: str, change: Any
) -> None:
    _assert_import_refused(make_vault, tmp_path, change, field)


def _assert_import_refused(
    make_vault: MakeVault, tmp_path: Path, change: Any, field: str | None = None
) -> None:
    """Alice's export, changed by `change`, is refused naming `field` (or the field `change`
    returns), and the target vault is left without a row or a key."""
    source = make_vault(tmp_path / "a")
    _fill(source)
    document = source.export_user("alice")
    named = change(document)
    target = make_vault(tmp_path / "b")
    with pytest.raises(Invalid) as err:
        target.import_user(document)
    assert err.value.field == (field or named)
    assert target.list_users() == []
    assert _users_with_keys(target) == []


def _session_with_turns(document: dict[str, Any], count: int) -> int:
    return next(i for i, s in enumerate(document["sessions"]) if len(s["turns"]) == count)


def _repeat_seq(document: dict[str, Any]) -> str:
    i = _session_with_turns(document, 2)
    turns = document["sessions"][i]["turns"]
    turns[1]["seq"] = turns[0]["seq"]
    return f"sessions[{i}].turns[1].seq"


def _repeat_turn_id(document: dict[str, Any]) -> str:
    first, second = document["sessions"][0], document["sessions"][1]
    second["turns"][0]["id"] = first["turns"][0]["id"]
    return "sessions[1].turns[0].id"


def _repeat(part: str) -> Any:
    def change(document: dict[str, Any]) -> str:
        document[part][1]["id"] = document[part][0]["id"]
        return f"{part}[1].id"

    return change


def _replace(path: str, value: Any) -> Any:
    """Set the item at a dotted path ("sessions.0.turns") to `value`; the path names the field."""

    def change(document: dict[str, Any]) -> str:
        *parents, last = path.split(".")
        node: Any = document
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        node[int(last) if last.isdigit() else last] = value
        return "".join(f"[{k}]" if k.isdigit() else f".{k}" for k in path.split(".")).lstrip(".")

    return change


@pytest.mark.parametrize(
    "change",
    [
        _replace("agents.0", "planner"),
        _replace("daily_activity.0", 7),
        _replace("daily_activity.0.day", "someday"),
        _replace("sessions.0.turns", "abc"),
        _replace("sessions.0.turns.0", ["role", "user"]),
        _replace("sessions.0.turns.0.seq", "one"),
        _replace("sessions.0.turns.0.seq", -1),
        _repeat_seq,
        _repeat_turn_id,
        _repeat("sessions"),
        _repeat("memories"),
    ],
)
def test_a_malformed_or_self_clashing_export_is_invalid_and_leaves_no_key(
    make_vault: MakeVault, tmp_path: Path, change: Any
) -> None:
    _assert_import_refused(make_vault, tmp_path, change)


def _users_with_keys(vault: Vault) -> list[str]:
    """Who has a data key, as the key store (kept apart from the content) holds them."""
    keys = open_key_store(vault.settings, vault.data_dir)
    try:
        return [user_id for user_id, _ in keys.all_wrapped()]
    finally:
        keys.close()


def test_the_command_line_names_a_file_it_cannot_import_or_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing, unreadable or non-JSON import file, or an export path that cannot be written,
    is an error naming the file and the problem (exit 2), not a traceback; nothing is written,
    and the file's content is not repeated."""
    monkeypatch.setenv("MEMVAULT_EMBEDDER", "hashing")
    data = tmp_path / "data"
    with Vault(settings=Settings(data=data, embedder="hashing")) as vault:
        _fill(vault)
        before = _comparable(vault.export_user("alice"))
    not_json = tmp_path / "diary.json"
    not_json.write_text("my secret diary, not JSON", encoding="utf-8")
    not_utf8 = tmp_path / "latin1.json"
    not_utf8.write_bytes('{"user": "secret caf\xe9"}'.encode("latin-1"))
    cases = [
        (["import", str(tmp_path / "missing.json")], ["missing.json", "No such file"]),
        (["import", str(tmp_path)], [str(tmp_path), "directory"]),
        (["import", str(not_json)], ["diary.json", "not JSON", "line 1"]),
        (["import", str(not_utf8)], ["latin1.json", "UTF-8"]),
        (["export", "alice", "-o", str(tmp_path / "gone" / "alice.json")], ["alice.json"]),
    ]
    for args, named in cases:
        capsys.readouterr()
        assert main(["--data", str(data), *args]) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("memvault: ") and "Traceback" not in err, err
        assert all(part in err for part in named) and "secret" not in err, err
    assert not (tmp_path / "gone").exists()
    with Vault(settings=Settings(data=data, embedder="hashing")) as vault:
        assert _comparable(vault.export_user("alice")) == before
        assert _users_with_keys(vault) == ["alice"]
