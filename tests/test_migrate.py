"""`memvault migrate`: a SQLite folder into PostgreSQL, as stored, resumable, verified."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from api_support import free_port
from conftest import POSTGRES_URL, postgres_schema, require_postgres

from memvault import Conflict, Vault
from memvault.cli import main
from memvault.config import Settings
from memvault.errors import Unavailable
from memvault.jobs import JobKind
from memvault.migrate import migrate_to_postgres
from memvault.retrieval.embed import HashingEmbedder


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A SQLite deployment with every kind of row, two users and a deleted one."""
    folder = tmp_path / "sqlite"
    with Vault(settings=Settings(data=folder), embedder=HashingEmbedder()) as vault:
        for user in ("alice", "bob", "carol"):
            vault.put_user(user, {"name": user.title()})
            vault.register_agent(user, "planner")
            vault.add_turn(user, "s1", "user", f"{user} keeps bees on the roof")
            vault.add_turn(user, "s1", "assistant", "noted", channel="general")
            kept = vault.add_memory(user, f"{user} likes honey", category="preference")
            gone = vault.add_memory(user, "to be forgotten")
            vault.delete_memory(user, gone.id)
            vault.jobs.enqueue(JobKind.EMBEDDING, user, {"memory_id": kept.id})
            vault.search(user, "bees")  # stores the sealed embeddings
        vault.delete_user("carol")
        vault.set_global_context("motto", "be kind")
        vault.keys.create("admin", name="ops")
    return folder


def _exports(vault: Vault) -> dict[str, Any]:
    return {
        user: {k: v for k, v in vault.export_user(user).items() if k != "exported_at"}
        for user in ("alice", "bob")
    }


def test_round_trip_keeps_every_row_and_opens_with_the_same_key(
    source: Path, postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--from", f"sqlite://{source}", "--to", postgres_url]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["users_copied"] == 2
    tables = report["tables"]
    assert {t: tables[t]["target_rows"] for t in ("users", "turns", "memories", "tombstones")} == {
        "users": 2, "turns": 4, "memories": 2, "tombstones": 2,
    }  # fmt: skip
    assert all(t["source_checksum"] == t["target_checksum"] for t in tables.values())
    # carol was deleted, and her queued job with her
    assert tables["api_keys"]["target_rows"] == 1 and tables["jobs"]["target_rows"] == 2
    assert tables["embeddings"]["target_rows"] == 2 * 3  # two turns and a memory each

    key = (source / "master.key").read_text()
    with Vault(settings=Settings(data=source), embedder=HashingEmbedder()) as before:
        expected = _exports(before)
    settings = Settings(data=tmp_path / "pg", database_url=postgres_url, master_key=key)
    with Vault(settings=settings, embedder=HashingEmbedder()) as after:
        assert _exports(after) == expected
        assert after.search("alice", "bees roof")[0].text == "alice keeps bees on the roof"
        assert [g.text for g in after.list_global_context()] == ["be kind"]


def test_dry_run_writes_nothing(source: Path, postgres_url: str) -> None:
    report = migrate_to_postgres(f"sqlite://{source}", postgres_url, dry_run=True)
    assert report.copied == ["alice", "bob"] and report.tables["turns"].source.rows == 4
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
        assert tables.fetchone() == (0,)


def test_a_second_run_resumes_and_refuses_to_overwrite(source: Path, postgres_url: str) -> None:
    url = f"sqlite://{source}"
    migrate_to_postgres(url, postgres_url)
    with psycopg.connect(postgres_url) as conn:  # as if the first run had stopped before bob
        conn.execute("DELETE FROM users WHERE id = 'bob'")
    again = migrate_to_postgres(url, postgres_url)
    assert (again.copied, again.skipped, again.ok) == (["bob"], ["alice"], True)

    with psycopg.connect(postgres_url) as conn:  # the target moved on: it must not be replaced
        conn.execute("UPDATE turns SET seq = seq + 10 WHERE user_id = 'alice'")
    with pytest.raises(Conflict):
        migrate_to_postgres(url, postgres_url)


def test_a_target_keyring_of_another_deployment_is_refused(
    source: Path, postgres_url: str, tmp_path: Path
) -> None:
    Vault(settings=Settings(data=tmp_path / "other", database_url=postgres_url)).close()
    assert main(["migrate", "--from", f"sqlite://{source}", "--to", postgres_url]) == 2


def test_keys_can_go_to_their_own_database(source: Path, postgres_url: str, tmp_path: Path) -> None:
    with postgres_schema() as keyring_url:
        report = migrate_to_postgres(f"sqlite://{source}", postgres_url, keyring_url=keyring_url)
        assert report.ok
        key = (source / "master.key").read_text()
        settings = Settings(data=tmp_path / "pg", database_url=postgres_url,
                            keyring_url=keyring_url, master_key=key)  # fmt: skip
        with Vault(settings=settings, embedder=HashingEmbedder()) as vault:
            contents = {t.content for t in vault.recent_turns("bob")}
        assert contents == {"bob keeps bees on the roof", "noted"}
        with psycopg.connect(postgres_url) as conn:
            found = conn.execute("SELECT to_regclass('user_keys') IS NULL").fetchone()
        assert found == (True,)


def test_an_unreachable_keyring_is_named_and_the_target_is_left_untouched(
    source: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A closed port on loopback: one line naming --keyring-to and what went wrong, no
    traceback, and not even the schema written into the target that does answer."""
    port = free_port()
    closed = f"postgresql://memvault:s3cret-pw@127.0.0.1:{port}/keys"
    argv = ["migrate", "--from", f"sqlite://{source}", "--to", postgres_url, "--keyring-to", closed]
    assert main(argv) == 2
    refused = f"could not reach a PostgreSQL server at 127.0.0.1:{port} (connection refused)"
    assert capsys.readouterr() == ("", f"memvault: keyring_to: {refused}\n")
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
        assert tables.fetchone() == (0,)


def tables_in(url: str) -> int:
    with psycopg.connect(url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()")
        found = tables.fetchone()
    assert found is not None
    return int(found[0])


def test_called_directly_a_bad_keyring_url_writes_nothing_to_the_target(
    source: Path, postgres_url: str
) -> None:
    closed = f"postgresql://memvault:s3cret-pw@127.0.0.1:{free_port()}/keys"
    with pytest.raises(Unavailable) as raised:
        migrate_to_postgres(f"sqlite://{source}", postgres_url, keyring_url=closed)
    assert raised.value.message.startswith("keyring_to: could not reach a PostgreSQL server")
    assert "s3cret" not in str(raised.value)
    assert tables_in(postgres_url) == 0


def test_a_keyring_of_another_deployment_is_refused_before_the_target_is_written(
    source: Path, postgres_url: str, tmp_path: Path
) -> None:
    with postgres_schema() as keyring_url, postgres_schema() as other:
        settings = Settings(data=tmp_path / "other", database_url=other, keyring_url=keyring_url)
        Vault(settings=settings).close()
        with pytest.raises(Conflict):
            migrate_to_postgres(f"sqlite://{source}", postgres_url, keyring_url=keyring_url)
        assert tables_in(postgres_url) == 0


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ("postgresql://memvault:s3cret-pw@127.0.0.1:{closed}/test",
         "to: could not reach a PostgreSQL server at 127.0.0.1:{closed} (connection refused)"),
        ("{server}/no_such_database",
         "to: the server at 127.0.0.1:5432 has no database 'no_such_database'"),
        ("postgresql://nobody_here:s3cret-pw@127.0.0.1:5432/test",
         "to: the server at 127.0.0.1:5432 refused user 'nobody_here': check the user name and "
         "password"),
        ("postgresql://memvault:s3cret pw@127.0.0.1:5432/test",
         "to: is not a PostgreSQL URL: percent-encode spaces and other special characters in the "
         "user name and password (@ as %40), and check the query parameters"),
        ("postgresql://memvault:s3cret@pw@127.0.0.1:5432/test",
         "to: an @ in the user name or password must be written %40"),
        ("postgresql://memvault:s3cret-pw@127.0.0.1:54x2/test", "to: the port must be a number"),
        ("mysql://memvault:s3cret-pw@127.0.0.1/test", "to: must start with postgresql://"),
    ],
    ids=["closed-port", "no-database", "unknown-user", "space", "at-sign", "port", "scheme"],
)  # fmt: skip
def test_a_bad_target_url_is_one_line_naming_its_fault_never_the_password(
    source: Path, capsys: pytest.CaptureFixture[str], target: str, named: str
) -> None:
    require_postgres()
    closed, server = free_port(), POSTGRES_URL.rsplit("/", 1)[0]
    url = target.format(closed=closed, server=server)
    assert main(["migrate", "--from", f"sqlite://{source}", "--to", url]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"memvault: {named.format(closed=closed)}\n")
    assert "s3cret" not in err
