"""Group commit for turn appends: the one place where the server batches writes.

A durable SQLite commit costs an fsync, and one writer commits at a time, so appends that each
commit alone top out well below what the HTTP layer can carry. Here concurrent appends (HTTP and
WebSocket) queue up; while one batch is being written, the next one gathers, and each batch is
written by `Vault.add_turn_groups` in one transaction. Every request still gets its own answer
(its turns, or its own error) only after its turns are on disk.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from memvault.errors import MemvaultError
from memvault.model import Turn
from memvault.vault import Vault

_Pending = tuple[str, str, Sequence[Mapping[str, Any]], "asyncio.Future[list[Turn]]"]


class AppendBatcher:
    def __init__(self, vault: Vault, *, max_groups: int = 256) -> None:
        self.vault = vault
        self.max_groups = max_groups
        self._queue: list[_Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    async def add_turns(
        self, user_id: str, session_id: str, turns: Sequence[Mapping[str, Any]]
    ) -> list[Turn]:
        """Like `Vault.add_turns`, sharing its commit with whatever else is being appended."""
        future: asyncio.Future[list[Turn]] = asyncio.get_running_loop().create_future()
        self._queue.append((user_id, session_id, turns, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def drain(self) -> None:
        """Wait for queued appends to be written (at shutdown)."""
        if self._flusher is not None:
            await self._flusher

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # requests already parsed in this loop turn join the first batch
        while self._queue:
            batch, self._queue = self._queue[: self.max_groups], self._queue[self.max_groups :]
            groups = [(user_id, session_id, turns) for user_id, session_id, turns, _ in batch]
            try:
                results = await run_in_threadpool(self.vault.add_turn_groups, groups)
            except Exception as exc:  # the write itself failed: every request in it hears so
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (*_, future), result in zip(batch, results, strict=True):
                if future.done():  # the caller went away; its turns are stored all the same
                    continue
                if isinstance(result, MemvaultError):
                    future.set_exception(result)
                else:
                    future.set_result(result)
