"""The OpenAI-compatible chat proxy: `POST /v1/chat/completions` and `GET /v1/models`.

An app that speaks OpenAI's chat API gains memory by pointing its base URL at `/v1` here and
using a memvault key as its API key. The work is in `memvault.api.proxy`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from starlette.responses import Response

from memvault.api.deps import PrincipalDep
from memvault.api.proxy.caller import caller_of
from memvault.api.proxy.chat import ChatProxy

router = APIRouter(prefix="/v1", tags=["chat proxy"])


def proxy_of(request: Request) -> ChatProxy:
    proxy: ChatProxy = request.app.state.chat_proxy
    return proxy


@router.post("/chat/completions")
async def chat_completions(
    body: Annotated[dict[str, Any], Body(description="An OpenAI chat completion request.")],
    request: Request,
    principal: PrincipalDep,
) -> Response:
    """Save the new messages, add what memvault remembers, forward to the LLM, save its answer
    (`stream: true` relays the LLM's events as they arrive). Headers: `X-Memvault-Session`
    (default `chat`), `X-Memvault-Context-Tokens` (default 1000; 0: no memory)."""
    caller = caller_of(principal, body, request.headers)
    return await proxy_of(request).complete(caller, body)


@router.get("/models")
async def models(request: Request, _: PrincipalDep) -> Response:
    """The LLM's models, as it lists them."""
    return await proxy_of(request).models()
