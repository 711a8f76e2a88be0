"""A real OpenAI-compatible chat server on a loopback port, for the chat proxy's tests.

It answers `POST /v1/chat/completions` (whole JSON, or server-sent events with `stream: true`)
and `GET /v1/models`, and records every request it receives. Each chat request takes the next
scripted `Reply` (a plain "Hello!" when none is left): text, tool calls, an error status, a delay
before answering, or a stream that stops after some events until the test lets it go on. A held
stream watches its connection: when the proxy closes it, the stream counts as `closed_early`.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODEL = "fake-model"
WAIT_LIMIT = 30.0  # a held stream never outlives a test by more than this
WATCH_EVERY = 0.02  # how often a held stream looks whether the proxy closed its connection


@dataclass
class Reply:
    content: str = "Hello!"
    tool_calls: list[dict[str, Any]] | None = None
    status: int = 200
    error: dict[str, Any] | None = None  # the body of an error status
    delay: float = 0.0  # seconds before answering at all
    hold_after: int | None = None  # a stream stops after this many events until `release()`
    cut_after: int | None = None  # a stream closes the connection after this many events
    html: str | None = None  # a body that is not JSON, as a misconfigured gateway answers


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeLlm:
    url: str  # the base URL an OpenAI client takes: http://127.0.0.1:PORT/v1
    replies: list[Reply] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    sent_events: list[str] = field(default_factory=list)  # every SSE event written, in order
    streams_done: int = 0  # streams written to their end
    closed_early: int = 0  # streams whose connection the proxy closed before their end
    released: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, *replies: Reply) -> None:
        with self.lock:
            self.replies.extend(replies)

    def release(self) -> None:
        """Let held streams go on."""
        self.released.set()

    def closed_one_early(self) -> None:
        with self.lock:
            self.closed_early += 1

    def held(self, connection: socket.socket) -> bool:
        """Wait for `release()`: True once released, False if the proxy closed the connection
        meanwhile."""
        deadline = time.monotonic() + WAIT_LIMIT
        while not self.released.wait(WATCH_EVERY):
            if peer_closed(connection):
                return False
            if time.monotonic() > deadline:
                break
        return True

    def next_reply(self) -> Reply:
        with self.lock:
            return self.replies.pop(0) if self.replies else Reply()

    @property
    def chats(self) -> list[Received]:
        return [r for r in self.received if r.path.endswith("/chat/completions")]

    @property
    def last_messages(self) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = self.chats[-1].body["messages"]
        return messages


def peer_closed(connection: socket.socket) -> bool:
    """Whether the other end closed the connection: it reads as ended (or reset) although the
    whole request was read, so nothing more is due from it."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except ConnectionError:
        return True


def completion(reply: Reply, number: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content or None}
    if reply.tool_calls:
        message["tool_calls"] = reply.tool_calls
    return {
        "id": f"chatcmpl-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13},
    }


def chunks(reply: Reply, number: int) -> list[dict[str, Any]]:
    """The stream of a reply as OpenAI sends it: the role, the text a word at a time, each
    tool call's id and name then its arguments in two pieces, and the finish reason."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {"id": f"chatcmpl-{number}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": MODEL, "choices": [choice]}  # fmt: skip

    out = [chunk({"role": "assistant", "content": ""})]
    words = reply.content.split(" ") if reply.content else []
    out += [chunk({"content": w if i == 0 else " " + w}) for i, w in enumerate(words)]
    for index, call in enumerate(reply.tool_calls or []):
        function, arguments = call["function"], call["function"]["arguments"]
        half = len(arguments) // 2
        out.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                          "function": {"name": function["name"],
                                                       "arguments": ""}}]}))  # fmt: skip
        for piece in (arguments[:half], arguments[half:]):
            out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    out.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
    return out


def _handler(fake: FakeLlm) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _html(self, status: int, text: str) -> None:
            data = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            fake.received.append(Received(self.path, dict(self.headers), None))
            if self.path == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
            else:
                self._json(404, {"error": {"message": "no such route"}})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fake.received.append(Received(self.path, dict(self.headers), body))
            number = len(fake.received)
            reply = fake.next_reply()
            time.sleep(reply.delay)
            if reply.html is not None:
                self._html(reply.status, reply.html)
            elif reply.status >= 300:
                self._json(reply.status, reply.error or {"error": {"message": "failed"}})
            elif body.get("stream"):
                self._stream(reply, number)
            else:
                self._json(reply.status, completion(reply, number))

        def _stream(self, reply: Reply, number: int) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            events = [f"data: {json.dumps(c)}\n\n" for c in chunks(reply, number)]
            events.append("data: [DONE]\n\n")
            for at, event in enumerate(events):
                if at == reply.cut_after:
                    return
                if at == reply.hold_after and not fake.held(self.connection):
                    fake.closed_one_early()
                    return
                # noted before it is written: the test may read it as soon as the proxy relays it
                fake.sent_events.append(event)
                try:
                    self.wfile.write(event.encode())
                    self.wfile.flush()
                except OSError:  # the proxy went away: not sent after all
                    fake.sent_events.pop()
                    fake.closed_one_early()
                    return
            fake.streams_done += 1

    return Handler


@contextmanager
def fake_llm() -> Iterator[FakeLlm]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server.daemon_threads = True
    fake = FakeLlm(f"http://127.0.0.1:{server.server_address[1]}/v1")
    server.RequestHandlerClass = _handler(fake)
    thread = threading.Thread(target=server.serve_forever, name="fake-llm", daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.release()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
