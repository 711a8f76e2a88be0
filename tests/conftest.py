"""Shared fixtures. Every Vault/Store test takes `vault` or `make_vault`, which are parametrised
over the storage backends, so one contract suite covers them all."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from memvault import Vault
from memvault.config import Settings
from memvault.model import Role, Turn
from memvault.store.postgres import temporary_schema

BACKENDS = ("sqlite", "postgres")
POSTGRES_URL = os.environ.get(
    "MEMVAULT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)

MakeVault = Callable[..., Vault]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@functools.cache
def _postgres_unreachable() -> str | None:
    """Why the test server cannot be used, or None when it answers (asked once per run)."""
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def require_postgres() -> None:
    """Skip without a server, unless MEMVAULT_REQUIRE_POSTGRES=1 (CI), which makes it a failure."""
    reason = _postgres_unreachable()
    if reason is None:
        return
    message = f"PostgreSQL does not answer at {POSTGRES_URL.split('@')[-1]}: {reason}"
    if os.environ.get("MEMVAULT_REQUIRE_POSTGRES") == "1":
        pytest.fail(message + " (MEMVAULT_REQUIRE_POSTGRES=1)", pytrace=False)
    pytest.skip(message + " (set MEMVAULT_REQUIRE_POSTGRES=1 to fail instead)")


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema for one test (unique, so parallel workers never meet), dropped after.

    Yields a URL whose connections use only that schema.
    """
    require_postgres()
    with temporary_schema(POSTGRES_URL, "t") as url:
        yield url


@pytest.fixture
def postgres_url() -> Iterator[str]:
    with postgres_schema() as url:
        yield url


FolderSettings = Callable[[Path], dict[str, Any]]


@pytest.fixture
def folder_settings(backend: str) -> Iterator[FolderSettings]:
    """Settings that give each data folder its own database, as the SQLite files do."""
    with ExitStack() as schemas:
        urls: dict[Path, str] = {}

        def settings_for(folder: Path) -> dict[str, Any]:
            if backend != "postgres":
                return {}
            if folder not in urls:
                urls[folder] = schemas.enter_context(postgres_schema())
            return {"database_url": urls[folder]}

        yield settings_for


@pytest.fixture
def backend_settings(
    folder_settings: FolderSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Settings a backend needs beyond the default data folder (a database URL, for instance).

    A database URL also goes into the environment, so processes a test starts use it too.
    """
    settings = folder_settings(tmp_path / "data")
    if "database_url" in settings:
        monkeypatch.setenv("MEMVAULT_DATABASE_URL", settings["database_url"])
    return settings


@pytest.fixture
def make_vault(
    tmp_path: Path, backend_settings: dict[str, Any], folder_settings: FolderSettings
) -> Iterator[MakeVault]:
    """Open vaults on real files; all of them are closed at the end of the test."""
    opened: list[Vault] = []

    def make(data: Path | None = None, **overrides: Any) -> Vault:
        folder = data or tmp_path / "data"
        fields = {"data": folder, **backend_settings, **folder_settings(folder), **overrides}
        vault = Vault(settings=Settings(**fields))
        opened.append(vault)
        return vault

    yield make
    for vault in opened:
        vault.close()


@pytest.fixture
def vault(make_vault: MakeVault) -> Vault:
    return make_vault()


@pytest.fixture
def recall_vault(tmp_path: Path, backend_settings: dict[str, Any]) -> Iterator[Vault]:
    """A vault whose search uses the hashing embedder: retrieval tests without loading a model."""
    from memvault.retrieval.embed import HashingEmbedder

    settings = Settings(data=tmp_path / "recall", **backend_settings)
    vault = Vault(settings=settings, embedder=HashingEmbedder())
    yield vault
    vault.close()


def sessions_of_one_moment(vault: Vault, user_id: str, count: int) -> None:
    """Sessions s0 to s`count - 1`, one turn each, last active at the same moment, as an import
    of them can leave them: what a list's pages must neither skip nor repeat."""
    for n in range(count):
        vault.add_turn("source", f"s{n}", "user", f"turn {n}")
    exported = vault.export_user("source")
    for session in exported["sessions"]:
        session["updated_at"] = "2026-03-01T12:00:00+00:00"
    vault.import_user(exported, user_id=user_id)


def plain_turn(
    seq: int, content: str, role: Role = Role.USER, *, first: datetime, **fields: Any
) -> Turn:
    """Turn `seq` of session "s" of user "u", said `seq` minutes after `first`: for the rules
    that read turns without a store (consolidation's, extraction's)."""
    return Turn(
        id=f"t{seq}",
        user_id="u",
        session_id="s",
        seq=seq,
        role=role,
        content=content,
        created_at=first + timedelta(minutes=seq),
        **fields,
    )
