"""The LLM's answer as an assistant turn, from a whole completion or from a stream of chunks.

Only the first choice is kept (a request with `n` > 1 gets several; the app shows one). The
turn carries the text, the tool calls the model asked for, and in its metadata the model, the
LLM's response id and why it stopped; a stream the client left early is marked `partial`, and
an answer with neither text nor tool calls `empty`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from memvault.retrieval.items import EMPTY_MARK  # marks it, and keeps it out of the index

DATA_PREFIX = "data:"
DONE = "[DONE]"
EMPTY_ANSWER = "[empty answer]"  # the content of the turn of an answer with no text or call


@dataclass
class Answer:
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    model: str | None = None
    response_id: str | None = None
    finish_reason: str | None = None
    refusal: bool = False

    def turn(self, agent_id: str | None, *, partial: bool = False) -> dict[str, Any]:
        """The fields of `Vault.add_turns`. An answer with nothing in it is a turn too (a turn
        needs some content, so it holds `EMPTY_ANSWER`, marked `EMPTY_MARK`): the session shows
        that the LLM answered, and why it stopped."""
        empty = not self.content and not self.tool_calls
        metadata: dict[str, Any] = {
            "model": self.model, "response_id": self.response_id,
            "finish_reason": self.finish_reason,
        }  # fmt: skip
        if empty:
            metadata[EMPTY_MARK] = True
        if self.refusal:
            metadata["refusal"] = True
        if partial:
            metadata["partial"] = True
        fields: dict[str, Any] = {
            "role": "assistant",
            "content": EMPTY_ANSWER if empty else self.content,
            "metadata": {k: v for k, v in metadata.items() if v is not None},
        }
        if self.tool_calls:
            fields["tool_calls"] = self.tool_calls
        if agent_id is not None:
            fields["agent_id"] = agent_id
        return fields


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _first_choice(body: Any) -> dict[str, Any]:
    choices = body.get("choices") if isinstance(body, dict) else None
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                return choice
    return {}


def completion_answer(body: Any) -> Answer:
    """The answer in a whole (not streamed) chat completion."""
    body, choice = _object(body), _first_choice(body)
    message = _object(choice.get("message"))
    content, refusal = _text(message.get("content")), _text(message.get("refusal"))
    calls = message.get("tool_calls")
    return Answer(
        content=content or refusal,
        tool_calls=[c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else [],
        model=_text(body.get("model")) or None,
        response_id=_text(body.get("id")) or None,
        finish_reason=_text(choice.get("finish_reason")) or None,
        refusal=bool(refusal) and not content,
    )


class StreamedAnswer:
    """Gathers an answer from the chunks of a stream, one server-sent event at a time."""

    def __init__(self) -> None:
        self.answer = Answer()
        self.done = False  # the stream's end was seen: a finish reason or `[DONE]`
        self._content: list[str] = []
        self._refusal: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}

    def feed(self, event: str) -> None:
        """Take one event (`data: {...}` lines); anything unreadable is passed over, as the
        client, which gets the same bytes, will judge it."""
        for line in event.splitlines():
            if not line.startswith(DATA_PREFIX):
                continue
            data = line[len(DATA_PREFIX) :].strip()
            if data == DONE:
                self.done = True
                continue
            try:
                chunk = json.loads(data)
            except ValueError:
                continue
            if isinstance(chunk, dict):
                self._take(chunk)

    def _take(self, chunk: dict[str, Any]) -> None:
        answer = self.answer
        answer.model = answer.model or _text(chunk.get("model")) or None
        answer.response_id = answer.response_id or _text(chunk.get("id")) or None
        choice = _first_choice(chunk)
        delta = _object(choice.get("delta"))
        self._content.append(_text(delta.get("content")))
        self._refusal.append(_text(delta.get("refusal")))
        calls = delta.get("tool_calls")
        for call in calls if isinstance(calls, list) else []:
            if isinstance(call, dict):
                self._take_call(call)
        finish = _text(choice.get("finish_reason"))
        if finish:
            answer.finish_reason = finish
            self.done = True

    def _take_call(self, fragment: dict[str, Any]) -> None:
        """A tool call arrives in pieces sharing an `index`: the id, type and name first, the
        arguments a few characters at a time."""
        index = fragment.get("index", 0)
        call = self._calls.setdefault(
            index if isinstance(index, int) else 0,
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        call["id"] = call["id"] or _text(fragment.get("id")) or None
        call["type"] = _text(fragment.get("type")) or call["type"]
        function = fragment.get("function")
        if isinstance(function, dict):
            call["function"]["name"] += _text(function.get("name"))
            call["function"]["arguments"] += _text(function.get("arguments"))

    def result(self) -> Answer:
        """The answer so far: whole once `done`, what had arrived otherwise."""
        content, refusal = "".join(self._content), "".join(self._refusal)
        self.answer.content = content or refusal
        self.answer.refusal = bool(refusal) and not content
        self.answer.tool_calls = [self._calls[i] for i in sorted(self._calls)]
        return self.answer
