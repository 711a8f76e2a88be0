"""The `memvault` command against real data folders: a mistake in what it is given ends in an
error that names it (exit 2), not a traceback, and does not leave anything behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from api_support import free_port

from memvault import Vault
from memvault.cli import main
from memvault.crypto import encode_key, generate_key


@pytest.fixture(autouse=True)
def _sqlite_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The data folder holds everything (SQLite, the key file), whatever the environment says."""
    for name in ("MEMVAULT_DATABASE_URL", "MEMVAULT_KEYRING_URL", "MEMVAULT_MASTER_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEMVAULT_EMBEDDER", "hashing")


@pytest.mark.parametrize(
    "command",
    [["stats", "alice"], ["export", "alice"], ["rotate-master-key"], ["keys", "list"],
     ["keys", "revoke", "k1"], ["users"]],
    ids=" ".join,
)  # fmt: skip
def test_a_command_on_a_folder_with_no_data_says_so_and_makes_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """A mistyped --data made a new vault there (a fresh master key and empty databases), then
    answered "no such user" as if the user were missing from the real one."""
    typo = tmp_path / "dtaa"
    assert main(["--data", str(typo), *command]) == 2
    assert capsys.readouterr().err == (
        f"memvault: no memvault data in {typo} (give the folder with --data or MEMVAULT_DATA)\n"
    )
    assert not typo.exists()


@pytest.mark.parametrize("damaged", ["memvault.db", "keyring.db", "folder"])
def test_a_damaged_data_folder_is_named_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damaged: str
) -> None:
    data = tmp_path / "data"
    assert main(["--data", str(data), "demo"]) == 0
    if damaged == "folder":
        data = tmp_path / "a-file"
        data.write_text("not a folder\n", encoding="utf-8")
    else:
        (data / damaged).write_bytes(b"not a database " * 100)
    capsys.readouterr()
    assert main(["--data", str(data), "demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("memvault: data: ") and str(data) in err, err
    named = "is not a folder" if damaged == "folder" else "keyring.db in " + str(data)
    assert named in err and ("file is not a database" in err or damaged == "folder"), err


def test_rotating_an_environment_master_key_needs_a_file_for_the_new_key_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Printed after the rotation, the only copy of the new key could be lost with the output;
    the key is on disk before the keyring changes, and never printed."""
    data, old = str(tmp_path / "data"), encode_key(generate_key())
    monkeypatch.setenv("MEMVAULT_MASTER_KEY", old)
    assert main(["--data", data, "demo"]) == 0
    capsys.readouterr()
    assert main(["--data", data, "rotate-master-key"]) == 2
    assert "memvault: new_key_file: " in capsys.readouterr().err
    assert main(["--data", data, "stats", "demo-user"]) == 0  # nothing rotated
    written = tmp_path / "new.key"
    assert main(["--data", data, "rotate-master-key", "--new-key-file", str(written)]) == 0
    new = written.read_text().strip()
    assert new not in capsys.readouterr().out and written.stat().st_mode & 0o777 == 0o600
    assert main(["--data", data, "stats", "demo-user"]) == 2  # the old key opens nothing now
    monkeypatch.setenv("MEMVAULT_MASTER_KEY", new)
    assert main(["--data", data, "stats", "demo-user"]) == 0
    chosen = tmp_path / "chosen.key"
    chosen.write_text(encode_key(generate_key()) + "\n")  # a key the operator made: used as is
    assert main(["--data", data, "rotate-master-key", "--new-key-file", str(chosen)]) == 0
    monkeypatch.setenv("MEMVAULT_MASTER_KEY", chosen.read_text().strip())
    assert main(["--data", data, "stats", "demo-user"]) == 0


@pytest.mark.parametrize(
    ("variable", "command"),
    [("MEMVAULT_DATABASE_URL", ["serve", "--port", "0"]), ("MEMVAULT_DATABASE_URL", ["demo"]),
     ("MEMVAULT_KEYRING_URL", ["serve", "--port", "0"]), ("MEMVAULT_KEYRING_URL", ["demo"])],
    ids=lambda part: part if isinstance(part, str) else part[0],
)  # fmt: skip
def test_a_database_that_does_not_answer_is_named_before_anything_is_made(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    command: list[str],
) -> None:
    """A closed port on loopback: the store's pool waited 10 seconds, then a PoolTimeout
    traceback named nothing. Now one line names the setting, and no data folder is made."""
    port = free_port()
    monkeypatch.setenv(variable, f"postgresql://memvault:s3cret-pw@127.0.0.1:{port}/memvault")
    data = tmp_path / "data"
    assert main(["--data", str(data), *command]) == 2
    field = variable.removeprefix("MEMVAULT_").lower()
    assert capsys.readouterr().err == (
        f"memvault: {field}: could not reach a PostgreSQL server at 127.0.0.1:{port} "
        "(connection refused)\n"
    )
    assert not data.exists()


def test_a_setting_the_environment_gets_wrong_is_named_without_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMVAULT_DATABASE_POOL_SIZE", "s3cret")
    assert main(["--data", str(tmp_path), "stats", "alice"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("memvault: MEMVAULT_DATABASE_POOL_SIZE: ") and err.count("\n") == 1
    assert "s3cret" not in err


@pytest.mark.parametrize("command", ["stats", "export"])
def test_a_user_that_does_not_exist_is_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Stats and export describe the whole user: an unknown id is a mistake, not zeros."""
    data = str(tmp_path / "data")
    assert main(["--data", data, "demo"]) == 0
    capsys.readouterr()
    assert main(["--data", data, command, "demo-usr"]) == 2
    assert capsys.readouterr() == ("", "memvault: no such user\n")


def test_users_are_listed_by_id_a_line_each_and_narrowed_by_prefix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    with Vault.open(data) as vault:
        for user_id in ("team-b", "solo", "team-a"):
            vault.put_user(user_id, {"name": "private name"})
    assert main(["--data", str(data), "users"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["solo", "team-a", "team-b"]
    assert all(len(line.split("\t")) == 3 for line in lines)  # id, created, updated
    assert "private name" not in "\n".join(lines)  # profiles are content: export shows them
    assert main(["--data", str(data), "users", "--prefix", "team-"]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == [
        "team-a",
        "team-b",
    ]
