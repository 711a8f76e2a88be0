"""Shared fixtures. Every Vault/Store test takes `vault` or `make_vault`, which are parametrised
over the storage backends, so one contract suite covers them all."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from memvault import Vault
from memvault.config import Settings

BACKENDS = ("sqlite",)

MakeVault = Callable[..., Vault]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend_settings(backend: str) -> dict[str, Any]:
    """Settings a backend needs beyond the data folder (a database URL, for instance)."""
    return {}


@pytest.fixture
def make_vault(tmp_path: Path, backend_settings: dict[str, Any]) -> Iterator[MakeVault]:
    """Open vaults on real files; all of them are closed at the end of the test."""
    opened: list[Vault] = []

    def make(data: Path | None = None, **overrides: Any) -> Vault:
        fields = {"data": data or tmp_path / "data", **backend_settings, **overrides}
        vault = Vault(settings=Settings(**fields))
        opened.append(vault)
        return vault

    yield make
    for vault in opened:
        vault.close()


@pytest.fixture
def vault(make_vault: MakeVault) -> Vault:
    return make_vault()
