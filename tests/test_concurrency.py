"""Many writers, threads and processes: no turn lost, order within each session kept."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from conftest import MakeVault

from memvault import Vault

PER_WRITER = 60


def _check_session(vault: Vault, user: str, session: str, writers: list[str]) -> None:
    turns = vault.get_session(user, session).turns or ()
    assert [t.seq for t in turns] == list(range(1, len(turns) + 1))
    for writer in writers:
        mine = [int(t.content.split(":")[1]) for t in turns if t.content.startswith(writer + ":")]
        assert mine == list(range(PER_WRITER)), f"{writer} lost or reordered turns"


def test_threads_append_to_shared_and_own_sessions(vault: Vault) -> None:
    names = [f"w{i}" for i in range(6)]

    def write(name: str) -> None:
        for i in range(PER_WRITER):
            vault.add_turn("u", "shared", "user", f"{name}:{i}")
            vault.add_turn("u", f"own-{name}", "user", f"{name}:{i}")

    threads = [threading.Thread(target=write, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_session(vault, "u", "shared", names)
    for name in names:
        _check_session(vault, "u", f"own-{name}", [name])
    assert vault.stats("u")["turns"] == 2 * PER_WRITER * len(names)


def test_two_processes_append_to_the_same_folder(
    backend: str, make_vault: MakeVault, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    make_vault(data).add_turn("u", "warmup", "user", "create keys first")
    script = textwrap.dedent(f"""
        import sys
        from memvault import Vault
        name = sys.argv[1]
        with Vault.open({str(data)!r}) as vault:
            for i in range({PER_WRITER}):
                vault.add_turn("u", "shared", "user", f"{{name}}:{{i}}")
                vault.add_turn("u", "own-" + name, "user", f"{{name}}:{{i}}")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, name]) for name in ("p1", "p2")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    vault = make_vault(data)
    _check_session(vault, "u", "shared", ["p1", "p2"])
    _check_session(vault, "u", "own-p1", ["p1"])
    _check_session(vault, "u", "own-p2", ["p2"])
