"""A small client for an OpenAI-compatible chat API (OpenAI, vLLM, Ollama, LM Studio, ...).

Only what the chat proxy needs: send a chat request and get the status and JSON back, or open a
streamed one and read its server-sent events as they arrive; list the models. Async, because
the server is: one `httpx.AsyncClient` per app keeps connections to the LLM open between calls.
Consolidation runs in sync code (the CLI, the background upkeep thread), so `BlockingLlmClient`
sends it the one kind of request it makes, a whole chat answer, to the same `LlmEndpoint`, with
the same headers, timeout and errors.

A failure to get any answer (refused, timed out, cut off) raises `LlmUnreachable`, whose message
names the problem and never the URL, which may carry credentials. The API key travels only in
the `Authorization` header of requests to the LLM.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from memvault.config import Settings
from memvault.errors import LlmUnreachable

CHAT_PATH = "chat/completions"
MODELS_PATH = "models"


def unreachable(exc: httpx.HTTPError, timeout: float) -> LlmUnreachable:
    """What went wrong, in words that hold no URL, no header and no body."""
    if isinstance(exc, httpx.TimeoutException):
        return LlmUnreachable(f"the LLM did not answer within {timeout:g} s")
    if isinstance(exc, httpx.ConnectError):
        return LlmUnreachable("could not connect to the LLM")
    return LlmUnreachable(f"the connection to the LLM failed ({type(exc).__name__})")


@contextmanager
def reaching(timeout: float) -> Iterator[None]:
    """Raise any failure to reach the LLM as `LlmUnreachable` (`unreachable`)."""
    try:
        yield
    except httpx.HTTPError as exc:
        raise unreachable(exc, timeout) from None


def json_or_error(status: int, content: bytes) -> Any:
    """The body as JSON. An error body that is not JSON (an HTML page from a gateway, say)
    becomes an OpenAI-style error object that says so without repeating it; a success that is
    not JSON is no answer (`LlmUnreachable`)."""
    try:
        return json.loads(content)
    except ValueError:
        if 200 <= status < 300:
            raise LlmUnreachable("the LLM answered with a body that is not JSON") from None
        message = f"the LLM answered HTTP {status} with a body that is not JSON"
        return {"error": {"message": message, "type": "upstream_error"}}


def answer(response: httpx.Response) -> tuple[int, Any]:
    """The status and the JSON answer of a response, whatever the status (`json_or_error`)."""
    return response.status_code, json_or_error(response.status_code, response.content)


@dataclass(frozen=True, slots=True)
class LlmEndpoint:
    """The LLM at one base URL (`https://api.openai.com/v1`), with one key and one timeout:
    what every client of it is built from."""

    url: str
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 120.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LlmEndpoint | None:
        """The configured LLM, or None when `llm_url` is unset."""
        if settings.llm_url is None:
            return None
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        return cls(settings.llm_url, key, settings.llm_timeout)

    def client_options(self) -> dict[str, Any]:
        """An httpx client's base URL, headers (the key, in `Authorization` only) and timeout."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return {"base_url": self.url.rstrip("/") + "/", "headers": headers,
                "timeout": self.timeout}  # fmt: skip


@dataclass
class ChatStream:
    """A streamed chat answer whose status is known and whose body is still arriving."""

    status: int
    response: httpx.Response
    timeout: float

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    async def events(self) -> AsyncIterator[str]:
        """Each server-sent event as it arrives: its lines and the blank line that ends it,
        as sent (line ends normalised to `\\n`). Raises `LlmUnreachable` if the stream stops
        before it ends (cut off, or silent for longer than the timeout)."""
        lines: list[str] = []
        with reaching(self.timeout):
            async for line in self.response.aiter_lines():
                lines.append(line)
                if not line:
                    yield "\n".join(lines) + "\n"
                    lines = []
        if any(lines):  # a last event without its blank line
            yield "\n".join(lines) + "\n\n"

    async def error_body(self) -> Any:
        """The whole body of an answer that is not a stream (an error), as JSON."""
        with reaching(self.timeout):
            content = await self.response.aread()
        return json_or_error(self.status, content)

    async def aclose(self) -> None:
        await self.response.aclose()


class LlmClient:
    """The LLM at one base URL (`https://api.openai.com/v1`), with one key and one timeout."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 120.0):
        self.timeout = timeout
        self._http = httpx.AsyncClient(**LlmEndpoint(base_url, api_key, timeout).client_options())

    @classmethod
    def from_settings(cls, settings: Settings) -> LlmClient | None:
        """The configured LLM, or None when `llm_url` is unset."""
        endpoint = LlmEndpoint.from_settings(settings)
        if endpoint is None:
            return None
        return cls(endpoint.url, api_key=endpoint.api_key, timeout=endpoint.timeout)

    async def _json(self, sending: Awaitable[httpx.Response]) -> tuple[int, Any]:
        """The status and the JSON answer of a request, whatever the status."""
        with reaching(self.timeout):
            response = await sending
        return answer(response)

    async def chat(self, body: Mapping[str, Any]) -> tuple[int, Any]:
        """POST `chat/completions`; the status and the JSON answer, whatever the status."""
        return await self._json(self._http.post(CHAT_PATH, json=body))

    async def open_chat_stream(self, body: Mapping[str, Any]) -> ChatStream:
        """POST `chat/completions` and return once the status has arrived; the events follow
        through `ChatStream.events`. The caller closes it (`aclose`)."""
        request = self._http.build_request("POST", CHAT_PATH, json=body)
        with reaching(self.timeout):
            response = await self._http.send(request, stream=True)
        return ChatStream(response.status_code, response, self.timeout)

    async def models(self) -> tuple[int, Any]:
        """GET `models`: the status and the JSON answer."""
        return await self._json(self._http.get(MODELS_PATH))

    async def aclose(self) -> None:
        await self._http.aclose()


class BlockingLlmClient:
    """The LLM for sync code: whole chat answers only, over one connection pool that the caller
    closes (`close`, or `with`) once its run is done."""

    def __init__(self, endpoint: LlmEndpoint) -> None:
        self.timeout = endpoint.timeout
        self._http = httpx.Client(**endpoint.client_options())

    def chat(self, body: Mapping[str, Any]) -> tuple[int, Any]:
        """POST `chat/completions`; the status and the JSON answer, whatever the status.
        Raises `LlmUnreachable` when there is no answer (`unreachable`)."""
        with reaching(self.timeout):
            response = self._http.post(CHAT_PATH, json=body)
        return answer(response)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BlockingLlmClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
