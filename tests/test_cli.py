"""The `memvault` command against real data folders: a mistake in what it is given ends in an
error that names it (exit 2), not a traceback, and does not leave anything behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from memvault.cli import main


@pytest.fixture(autouse=True)
def _sqlite_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The data folder holds everything (SQLite, the key file), whatever the environment says."""
    for name in ("MEMVAULT_DATABASE_URL", "MEMVAULT_KEYRING_URL", "MEMVAULT_MASTER_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEMVAULT_EMBEDDER", "hashing")


@pytest.mark.parametrize(
    "command",
    [["stats", "alice"], ["export", "alice"], ["rotate-master-key"], ["keys", "list"],
     ["keys", "revoke", "k1"]],
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
