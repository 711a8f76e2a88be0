"""One proxied chat call, start to end: save what is new, add memory, ask the LLM, save its
answer.

The order is what keeps the promise that every turn is saved. The request's new messages are
on disk before the LLM is called, so what the user said survives an LLM that fails. The answer
is saved before the client gets it (a whole completion) or before the stream's end reaches the
client; a stream the client leaves early is saved as far as it got, marked `partial`.

Memory is read before the new messages are saved: the user's latest message would otherwise be
the best match for itself, taking a line of the budget and raising the bar the other lines must
clear (`MIN_RELATIVE_SCORE`). The stored turns the request carries are left out of it too (the
app sends the conversation itself; on a retry, its new messages are stored already), found by
one read of the session's last turns (`turns.place`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from memvault.api.appends import AppendBatcher
from memvault.api.proxy.answer import Answer, completion_answer
from memvault.api.proxy.caller import Caller
from memvault.api.proxy.memory import with_memory
from memvault.api.proxy.relay import EVENT_STREAM, RelayResponse
from memvault.api.proxy.turns import (
    Message,
    NewPart,
    Placement,
    check_messages,
    last_user_text,
    message_error,
    new_part,
    place,
)
from memvault.errors import Invalid, LlmNotConfigured, MemvaultError
from memvault.llm import LlmClient
from memvault.vault import Vault

log = logging.getLogger(__name__)

NO_RECENT_TURNS = {"ai": 0, "general": 0}  # the app sends the conversation under way itself
NOT_CONFIGURED = "the chat proxy needs MEMVAULT_LLM_URL: the base URL of an OpenAI-compatible API"


class SessionLocks:
    """One asyncio lock per (user, session), held while a request compares its messages with
    the stored tail, reads its memory and saves its new messages: two copies of one request
    sent at once (a client's retry racing its original) then save it once. Within one server
    process; see docs/api.md."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, user_id: str, session_id: str) -> AsyncIterator[None]:
        key = (user_id, session_id)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class ChatProxy:
    def __init__(self, vault: Vault, appends: AppendBatcher, llm: LlmClient | None) -> None:
        self.vault = vault
        self.appends = appends
        self.llm = llm
        self.locks = SessionLocks()

    def _llm(self) -> LlmClient:
        if self.llm is None:
            raise LlmNotConfigured(NOT_CONFIGURED)
        return self.llm

    async def models(self) -> Response:
        status, body = await self._llm().models()
        return JSONResponse(body, status_code=status)

    async def complete(self, caller: Caller, body: Mapping[str, Any]) -> Response:
        """`POST /v1/chat/completions`, streamed or not, as the LLM answers it."""
        llm = self._llm()
        messages = check_messages(body)
        new = new_part(messages, caller.agent_id)  # checked before anything is written
        async with self.locks.hold(caller.user_id, caller.session_id):
            placed = await self._place(caller, new)
            try:
                memory = await self._memory(caller, messages, placed.carried)
            finally:  # what the user said is saved even if reading memory failed
                if new.turns and not placed.stored:
                    await self._save_new(caller, new)
        outgoing = {**body, "messages": with_memory(messages, memory)}
        if body.get("stream") is True:
            return await self._streamed(caller, llm, outgoing)
        status, answer = await llm.chat(outgoing)
        if 200 <= status < 300:
            await self._save_answer(caller, completion_answer(answer))
        return JSONResponse(answer, status_code=status)

    async def _place(self, caller: Caller, new: NewPart) -> Placement:
        """Where the request stands in its session (`place`), from one read of the session's
        last turns. The session lock is held from this read until the new turns are saved, so
        that two copies of one request sent at once save them once."""
        tail = await run_in_threadpool(
            partial(
                self.vault.recent_turns, caller.user_id, session_id=caller.session_id,
                limit=new.tail_size,
            )
        )  # fmt: skip
        return place(new, tail)

    async def _memory(
        self, caller: Caller, messages: Sequence[Message], carried: Sequence[str]
    ) -> str:
        """The context for the user's latest message, as the caller's agent sees the user,
        without the stored turns the request carries (`carried`)."""
        query = last_user_text(messages)
        if caller.context_tokens == 0 or not query.strip():
            return ""
        context = await run_in_threadpool(
            partial(
                self.vault.context, caller.user_id, query, session_id=caller.session_id,
                token_budget=caller.context_tokens, channel_limits=NO_RECENT_TURNS,
                agent_id=caller.agent_id, asked_by="user", leave_out=carried,
            )
        )  # fmt: skip
        return context.text

    async def _save_new(self, caller: Caller, new: NewPart) -> None:
        """Save the request's new messages, all or none; a refusal names the message's field."""
        try:
            await self.appends.add_turns(caller.user_id, caller.session_id, new.turns)
        except Invalid as exc:
            raise message_error(exc, new) from None

    async def _save_answer(self, caller: Caller, answer: Answer, *, partial: bool = False) -> None:
        """Save the assistant's answer. The client gets the answer even if this fails (it
        came back from the LLM and may have cost money); the failure is logged by kind."""
        fields = answer.turn(caller.agent_id, partial=partial)
        try:
            await self.appends.add_turns(caller.user_id, caller.session_id, [fields])
        except MemvaultError as exc:
            field = exc.details.get("field", "")
            log.error("chat proxy: the answer was not saved (%s %s)", exc.code, field)

    async def _streamed(
        self, caller: Caller, llm: LlmClient, outgoing: Mapping[str, Any]
    ) -> Response:
        stream = await llm.open_chat_stream(outgoing)
        content_type = stream.response.headers.get("content-type", "")
        if not stream.ok or not content_type.startswith(EVENT_STREAM):
            try:  # an error, or an LLM that answered whole although asked to stream
                body = await stream.error_body()
            finally:
                await stream.aclose()
            if stream.ok:
                await self._save_answer(caller, completion_answer(body))
            return JSONResponse(body, status_code=stream.status)

        async def save(answer: Answer, partial: bool) -> None:
            await self._save_answer(caller, answer, partial=partial)

        return RelayResponse(stream, save)
