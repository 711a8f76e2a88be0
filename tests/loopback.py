"""A real HTTP and WebSocket server on a loopback port, around a vault the test also holds.

Unlike `memvault serve` in a child process, the test can write through the same vault (as an
embedded caller would) while clients talk to the server over real sockets.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from api_support import free_port
from websockets.sync.client import ClientConnection

from memvault import Vault
from memvault.api import create_app


@contextmanager
def serve_in_thread(vault: Vault) -> Iterator[str]:
    """Run the app under uvicorn on a free loopback port; yields the base URL (`http://...`)."""
    port = free_port()
    config = uvicorn.Config(
        create_app(vault), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="loopback-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the loopback server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def receive(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=timeout))
    return message


def receive_until(ws: ClientConnection, wanted: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Every message up to and including the first of type `wanted`."""
    deadline = time.monotonic() + timeout
    messages: list[dict[str, Any]] = []
    while not messages or messages[-1]["type"] != wanted:
        messages.append(receive(ws, max(0.0, deadline - time.monotonic())))
    return messages
