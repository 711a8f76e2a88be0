"""Helpers for the server tests: an in-process app around a real vault, and a real
`memvault serve` process on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from starlette.testclient import TestClient

from memvault import Vault
from memvault.api import create_app

ADMIN_KEY = "test-admin-key-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@dataclass
class Api:
    client: TestClient
    vault: Vault

    def key(self, scope: str, user_id: str | None = None, agent_id: str | None = None) -> str:
        _, secret = self.vault.keys.create(scope, user_id, agent_id)
        return secret

    def user_headers(self, user_id: str) -> dict[str, str]:
        return bearer(self.key("user", user_id))

    def agent_headers(self, user_id: str, name: str) -> tuple[str, dict[str, str]]:
        agent = self.vault.register_agent(user_id, name)
        return agent.id, bearer(self.key("agent", user_id, agent.id))


@contextmanager
def open_api(make_vault: Callable[..., Vault], **settings: Any) -> Iterator[Api]:
    vault = make_vault(admin_key=ADMIN_KEY, **settings)
    with TestClient(create_app(vault)) as client:
        yield Api(client, vault)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    port: int

    def stop(self, *, kill: bool = False) -> str:
        """Stop the process (SIGKILL or SIGTERM) and return what it printed."""
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        output, _ = self.process.communicate(timeout=15)
        return output


def start_server(data: Path, *, port: int | None = None, flags: bool = True, **env: str) -> Server:
    """Run `memvault serve` and wait until it answers /healthz. Port and data folder go in
    as `--port` and `--data`, or with `flags=False` as MEMVAULT_PORT and MEMVAULT_DATA."""
    port = port or free_port()
    environment = {**os.environ, "MEMVAULT_RATE_LIMIT_PER_MINUTE": "0", **env}
    where = ["--port", str(port), "--data", str(data)]
    if not flags:
        environment.update(MEMVAULT_PORT=str(port), MEMVAULT_DATA=str(data))
        where = []
    process = subprocess.Popen(
        [sys.executable, "-m", "memvault.cli", "serve", *where],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("memvault serve exited:\n" + process.communicate()[0])
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return Server(process, url, port)
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("memvault serve did not start:\n" + process.communicate()[0])
