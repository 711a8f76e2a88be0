"""The OpenAI-compatible chat proxy, over real sockets: the memvault app served on loopback, a
real OpenAI-compatible server on loopback as the LLM (`fake_llm`), and the vault read back to
see what was saved."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from api_support import ADMIN, ADMIN_KEY, bearer, free_port, open_api
from conftest import MakeVault
from fake_llm import MODEL, FakeLlm, Reply, fake_llm
from loopback import serve_in_thread
from starlette.types import Message

from memvault import Vault
from memvault.api.proxy.answer import Answer
from memvault.api.proxy.relay import RelayResponse
from memvault.llm import LlmClient
from memvault.model import Turn

UPSTREAM_KEY = "sk-upstream-secret-0123456789"
WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
}


@dataclass
class Proxy:
    vault: Vault
    llm: FakeLlm
    http: httpx.Client  # base URL: memvault's /v1, as an OpenAI client is given it

    def user_key(self, user_id: str) -> dict[str, str]:
        return bearer(self.vault.keys.create("user", user_id)[1])

    def agent_key(self, user_id: str, name: str) -> tuple[str, dict[str, str]]:
        agent = self.vault.register_agent(user_id, name)
        return agent.id, bearer(self.vault.keys.create("agent", user_id, agent.id)[1])

    def chat(self, headers: dict[str, str], messages: list[Any], **body: Any) -> httpx.Response:
        return self.http.post(
            "/chat/completions", json={"model": MODEL, "messages": messages, **body},
            headers=headers,
        )  # fmt: skip

    def stream(
        self, headers: dict[str, str], messages: list[Any]
    ) -> AbstractContextManager[httpx.Response]:
        body = {"model": MODEL, "messages": messages, "stream": True}
        return self.http.stream("POST", "/chat/completions", json=body, headers=headers)

    def turns(self, user_id: str, session_id: str = "chat") -> list[Turn]:
        return self.vault.session_turns(user_id, session_id)


@pytest.fixture
def llm() -> Iterator[FakeLlm]:
    with fake_llm() as fake:
        yield fake


@contextmanager
def serve_proxy(vault: Vault, llm: FakeLlm) -> Iterator[Proxy]:
    with serve_in_thread(vault) as url, httpx.Client(base_url=url + "/v1", timeout=30) as http:
        yield Proxy(vault, llm, http)


@pytest.fixture
def proxy(make_vault: MakeVault, llm: FakeLlm) -> Iterator[Proxy]:
    vault = make_vault(
        admin_key=ADMIN_KEY, llm_url=llm.url, llm_api_key=UPSTREAM_KEY, llm_timeout=5,
        embedder="hashing",
    )  # fmt: skip
    with serve_proxy(vault, llm) as served:
        yield served


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str | None, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text, **extra}


def wait_until(done: Callable[[], object], what: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not done():
        assert time.monotonic() < deadline, f"waited {within} s for {what}"
        time.sleep(0.02)


def leave_before_reading(proxy: Proxy, headers: dict[str, str], messages: list[Any]) -> None:
    """Ask for a stream over a bare socket and close it once the LLM has the request, before
    reading a byte of the answer: an app whose user gave up at once."""
    body = json.dumps({"model": MODEL, "messages": messages, "stream": True}).encode()
    url = proxy.http.base_url
    assert url.port is not None
    lines = [
        f"POST {url.path.rstrip('/')}/chat/completions HTTP/1.1", f"Host: {url.host}:{url.port}",
        "Content-Type: application/json", f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]  # fmt: skip
    with socket.create_connection((url.host, url.port)) as client:
        client.sendall("\r\n".join([*lines, "", ""]).encode() + body)
        wait_until(lambda: proxy.llm.chats, "the request to reach the LLM")


def wait_for_turns(proxy: Proxy, user_id: str, count: int) -> list[Turn]:
    deadline = time.monotonic() + 10
    while len(turns := proxy.turns(user_id)) < count:
        assert time.monotonic() < deadline, f"{len(turns)} turns saved, waited for {count}"
        time.sleep(0.02)
    return turns


# -- saving turns ---------------------------------------------------------------------------


def test_a_chat_saves_the_users_message_and_the_answer_in_order(
    proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    alice = proxy.user_key("alice")
    caplog.set_level(logging.DEBUG)
    sent = [{"role": "system", "content": "You are terse."}, user("I am planning a trip to Lisbon")]
    answer = proxy.chat(alice, sent)
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["choices"][0]["message"]["content"] == "Hello!"
    turns = proxy.turns("alice")
    assert [(t.role.value, t.content) for t in turns] == [
        ("user", "I am planning a trip to Lisbon"), ("assistant", "Hello!"),
    ]  # fmt: skip
    assert turns[1].metadata == {
        "model": MODEL, "response_id": reply["id"], "finish_reason": "stop"
    }  # fmt: skip
    assert turns[0].agent_id is None and turns[1].agent_id is None
    # the LLM gets its own key, never the caller's memvault key
    upstream = proxy.llm.chats[-1].headers
    assert upstream["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Lisbon" not in logged and UPSTREAM_KEY not in logged and "Hello!" not in logged
    assert '"route": "/v1/chat/completions"' in logged


def test_the_session_comes_from_the_header(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    headers = {**alice, "X-Memvault-Session": "trip-planning"}
    assert proxy.chat(headers, [user("hello")]).status_code == 200
    assert [t.content for t in proxy.turns("alice", "trip-planning")] == ["hello", "Hello!"]
    bad = proxy.chat({**alice, "X-Memvault-Session": "a/b"}, [user("hello")])
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["field"] == "X-Memvault-Session"


def test_a_retried_request_does_not_save_the_users_message_twice(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    proxy.llm.script(Reply(status=500, error={"error": {"message": "overloaded"}}))
    sent = [user("What is the capital of Norway?")]
    assert proxy.chat(alice, sent).status_code == 500
    assert proxy.chat(alice, sent).status_code == 200  # the app tries again
    assert [(t.role.value, t.content) for t in proxy.turns("alice")] == [
        ("user", "What is the capital of Norway?"), ("assistant", "Hello!"),
    ]  # fmt: skip
    # the same words said again later in the conversation are a new turn
    again = [*sent, assistant("Hello!"), user("What is the capital of Norway?")]
    assert proxy.chat(alice, again).status_code == 200
    assert [t.role.value for t in proxy.turns("alice")] == ["user", "assistant"] * 2


@pytest.mark.parametrize("stream", [False, True])
def test_an_empty_answer_is_a_turn_marked_empty(proxy: Proxy, stream: bool) -> None:
    """A turn needs some content: an answer with neither text nor tool calls is saved with a
    placeholder, marked `empty`. The app sends it back as an empty message, which it stands
    for: the same words said again after it are a new turn, and a retry of those is not."""
    alice = proxy.user_key("alice")
    overloaded = Reply(status=500, error={"error": {"message": "overloaded"}})
    proxy.llm.script(Reply(content=""), overloaded, Reply(content="Oslo."))
    sent = [user("What is the capital of Norway?")]
    assert proxy.chat(alice, sent, stream=stream).status_code == 200
    empty = proxy.turns("alice")[1]
    assert (empty.role.value, empty.content) == ("assistant", "[empty answer]")
    assert empty.metadata == {
        "model": MODEL, "response_id": "chatcmpl-1", "finish_reason": "stop", "empty": True,
    }  # fmt: skip
    again = [*sent, assistant(None), user("What is the capital of Norway?")]
    assert proxy.chat(alice, again, stream=stream).status_code == 500
    assert proxy.chat(alice, again, stream=stream).status_code == 200  # the app tries again
    assert [(t.role.value, t.content) for t in proxy.turns("alice")] == [
        ("user", "What is the capital of Norway?"), ("assistant", "[empty answer]"),
        ("user", "What is the capital of Norway?"), ("assistant", "Oslo."),
    ]  # fmt: skip


def test_an_empty_answer_is_neither_found_nor_put_in_a_context(proxy: Proxy) -> None:
    """The placeholder of an empty answer is nobody's words: a search for them finds the
    user's turn that holds them and not the placeholder, and a context, even with the
    session's recent turns, leaves it out. The session still lists it."""
    alice = proxy.user_key("alice")
    proxy.llm.script(Reply(content=""))
    assert proxy.chat(alice, [user("Give me an empty answer")]).status_code == 200
    asked, empty = proxy.turns("alice")
    assert empty.content == "[empty answer]" and empty.metadata["empty"] is True
    found = [hit.id for hit in proxy.vault.search("alice", "empty answer")]
    assert asked.id in found and empty.id not in found
    context = proxy.vault.context("alice", "empty answer", session_id="chat")
    lines = context.text.splitlines()
    assert any("Give me an empty answer" in line for line in lines)
    assert not any("[empty answer]" in line for line in lines), context.text


def test_text_parts_are_saved_and_other_parts_noted_by_kind_only(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    image = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": image}},
        {"type": "text", "text": "Be brief."},
    ]
    assert proxy.chat(alice, [{"role": "user", "content": content}]).status_code == 200
    saved = proxy.turns("alice")[0]
    assert saved.content == "What is in this picture?\n\nBe brief."
    assert saved.metadata == {"non_text_parts": ["image_url"]}
    assert "iVBORw0KGgo" not in json.dumps(saved.to_dict())
    assert proxy.llm.last_messages[-1]["content"] == content  # the LLM still gets the image


def test_a_tool_call_round_trip_saves_the_call_and_the_result(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    proxy.llm.script(Reply(content="", tool_calls=[WEATHER_CALL]), Reply(content="It is -3 C."))
    asked = [user("What is the weather in Oslo?")]
    first = proxy.chat(alice, asked, tools=[{"type": "function", "function": {"name": "x"}}])
    assert first.json()["choices"][0]["finish_reason"] == "tool_calls"
    result = {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": -3}'}
    second = proxy.chat(alice, [*asked, assistant(None, tool_calls=[WEATHER_CALL]), result])
    assert second.status_code == 200
    turns = proxy.turns("alice")
    assert [t.role.value for t in turns] == ["user", "assistant", "tool", "assistant"]
    call, tool, final = turns[1], turns[2], turns[3]
    assert call.content == "" and call.tool_calls == [WEATHER_CALL]
    assert call.metadata["finish_reason"] == "tool_calls"
    assert tool.content == '{"temp_c": -3}' and tool.tool_result == {"tool_call_id": "call_1"}
    assert final.content == "It is -3 C."


def test_a_tool_that_answered_nothing_is_still_a_turn(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    proxy.llm.script(Reply(content="", tool_calls=[WEATHER_CALL]), Reply(content="No data."))
    asked = [user("What is the weather in Oslo?")]
    assert proxy.chat(alice, asked).status_code == 200
    result = {"role": "tool", "tool_call_id": "call_1", "content": ""}
    followed = [*asked, assistant(None, tool_calls=[WEATHER_CALL]), result]
    assert proxy.chat(alice, followed).status_code == 200
    tool = proxy.turns("alice")[2]
    assert tool.role.value == "tool" and tool.content == ""
    assert tool.tool_result == {"tool_call_id": "call_1"}


# -- memory in the prompt -------------------------------------------------------------------


def test_what_is_remembered_goes_after_the_apps_system_messages(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    proxy.vault.add_memory("alice", "Alice is allergic to peanuts", kind="fact", category="health")
    system = {"role": "system", "content": "You are a cook."}
    assert proxy.chat(alice, [system, user("What should I cook tonight?")]).status_code == 200
    got = proxy.llm.last_messages
    assert [m["role"] for m in got] == ["system", "system", "user"]
    assert got[0] == system and "allergic to peanuts" in got[1]["content"]
    assert got[2] == user("What should I cook tonight?")
    # with no system message of the app's, the memory comes first
    assert proxy.chat(alice, [user("And tomorrow?")]).status_code == 200
    got = proxy.llm.last_messages
    assert [m["role"] for m in got] == ["system", "user"]
    assert "allergic to peanuts" in got[0]["content"]


def test_no_memory_with_a_zero_budget_or_nothing_remembered(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    sent = [user("What should I cook tonight?")]
    assert proxy.chat(alice, sent).status_code == 200  # nothing remembered yet
    assert proxy.llm.last_messages == sent
    proxy.vault.add_memory("alice", "Alice is allergic to peanuts", kind="fact")
    off = {**alice, "X-Memvault-Context-Tokens": "0"}
    assert proxy.chat(off, sent).status_code == 200
    assert proxy.llm.last_messages == sent
    bad = proxy.chat({**alice, "X-Memvault-Context-Tokens": "lots"}, sent)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["field"] == "X-Memvault-Context-Tokens"


def test_the_conversation_under_way_is_not_repeated_as_memory(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    proxy.vault.add_memory("alice", "Alice lives in Bergen", kind="fact")
    sent = [user("Tell me about rainy cities")]
    proxy.chat(alice, sent)
    proxy.chat(alice, [*sent, assistant("Hello!"), user("Which rainy city is best?")])
    memory = proxy.llm.last_messages[0]["content"]
    assert "lives in Bergen" in memory
    assert "Which rainy city is best?" not in memory  # the message asked about
    assert "Current conversation" not in memory  # the session's recent turns
    assert "rainy cities" not in memory  # a turn the app sent along, though it matches


def test_a_turn_of_the_session_the_app_no_longer_sends_can_be_remembered(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    proxy.chat(alice, [user("My umbrella is the green one with the duck handle")])
    # the app keeps only its last exchange: the umbrella is out of its window, not of memory
    window = [assistant("Noted."), user("Talk to me about weather")]
    proxy.chat(alice, window)
    proxy.chat(alice, [*window, assistant("Sure."), user("Which umbrella should I take?")])
    memory = proxy.llm.last_messages[0]["content"]
    assert "green one with the duck handle" in memory
    assert "Talk to me about weather" not in memory


def memory_sent(proxy: Proxy) -> str:
    """The memory the LLM got with the last chat: its system messages (none here are the app's)."""
    return "\n".join(m["content"] for m in proxy.llm.last_messages if m["role"] == "system")


@pytest.mark.parametrize("answered", [False, True])
def test_a_retried_request_leaves_out_the_turns_it_carries(proxy: Proxy, answered: bool) -> None:
    """A retry finds its messages stored (and, when the first try was answered, the answer
    after them): the memory leaves out the stored turns the request carries, wherever they sit
    in the session, and the user's message is not saved twice."""
    alice = proxy.user_key("alice")
    umbrella, which = "My umbrella is the green one with the duck handle", "Which umbrella?"
    proxy.chat(alice, [user(umbrella)])
    if not answered:
        proxy.llm.script(Reply(status=500, error={"error": {"message": "overloaded"}}))
    sent = [user(umbrella), assistant("Hello!"), user(which)]
    proxy.chat(alice, sent)
    assert proxy.chat(alice, sent).status_code == 200  # the app tries again
    memory = memory_sent(proxy)
    assert "duck handle" not in memory and which not in memory  # the app sent them along
    stored = [(t.role.value, t.content) for t in proxy.turns("alice")]
    answers = [("assistant", "Hello!")] * (2 if answered else 1)
    assert stored == [("user", umbrella), ("assistant", "Hello!"), ("user", which), *answers]


def test_a_conversation_longer_than_the_session_leaves_out_all_it_carries(proxy: Proxy) -> None:
    """The app began the conversation before memvault stored it: every stored turn it sends
    along is left out, not only as many of the last as it sent too many."""
    alice = proxy.user_key("alice")
    umbrella = "My umbrella is the green one with the duck handle"
    said = [user(umbrella), assistant("Noted."), user("Thanks"), assistant("You are welcome.")]
    proxy.vault.add_turns("alice", "chat", [dict(m) for m in said])
    sent = [user("Hi"), assistant("Hey."), *said, user("Which umbrella?")]
    assert proxy.chat(alice, sent).status_code == 200
    assert "duck handle" not in memory_sent(proxy)


# -- streaming ------------------------------------------------------------------------------


def test_a_stream_is_relayed_as_it_arrives_and_saved_at_its_end(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    proxy.llm.script(Reply(content="Lisbon is lovely in May", hold_after=2))
    with proxy.stream(alice, [user("When should I go?")]) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        lines = answer.iter_lines()
        first = [next(lines), next(lines), next(lines), next(lines)]  # two events, two blanks
        # the LLM is holding the rest back: these came through before its stream ended
        assert proxy.llm.streams_done == 0
        assert first == [proxy.llm.sent_events[0].strip(), "", proxy.llm.sent_events[1].strip(), ""]
        assert len(proxy.turns("alice")) == 1  # the user's message, saved before the LLM
        proxy.llm.release()
        rest = list(lines)
    relayed = "\n".join(first + rest)
    assert relayed.strip() == "".join(proxy.llm.sent_events).strip()
    assert rest[-2:] == ["data: [DONE]", ""]
    turns = proxy.turns("alice")  # saved before the end of the stream reached the client
    assert [(t.role.value, t.content) for t in turns] == [
        ("user", "When should I go?"), ("assistant", "Lisbon is lovely in May"),
    ]  # fmt: skip
    assert turns[1].metadata == {
        "model": MODEL, "response_id": "chatcmpl-1", "finish_reason": "stop"
    }  # fmt: skip


def test_a_client_leaving_mid_stream_leaves_a_partial_answer(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    proxy.llm.script(Reply(content="Lisbon is lovely in May", hold_after=3))
    with proxy.stream(alice, [user("When should I go?")]) as answer:
        lines = answer.iter_lines()
        for _ in range(6):  # three events: the role, "Lisbon", " is"
            next(lines)
    # the client has closed its connection; the LLM is still holding its stream open
    wait_until(lambda: proxy.llm.closed_early == 1, "the proxy to close the LLM's stream")
    turns = wait_for_turns(proxy, "alice", 2)
    assert turns[1].content == "Lisbon is"
    assert turns[1].metadata["partial"] is True
    assert "finish_reason" not in turns[1].metadata


@pytest.mark.parametrize("headers_after", [0.0, 0.5])
def test_a_client_leaving_before_the_first_byte_closes_the_llms_stream(
    proxy: Proxy, headers_after: float
) -> None:
    """The client leaves before reading anything: after the LLM's headers came (the proxy is
    waiting for its first event), or while the proxy still waits for them. The LLM's stream is
    closed at once, not held open until it ends, and the answer is saved as far as it came
    (nothing here), marked partial."""
    proxy.llm.script(Reply(content="Lisbon is lovely in May", delay=headers_after, hold_after=0))
    leave_before_reading(proxy, proxy.user_key("alice"), [user("When should I go?")])
    wait_until(lambda: proxy.llm.closed_early == 1, "the proxy to close the LLM's stream")
    answered = wait_for_turns(proxy, "alice", 2)[1]
    assert answered.role.value == "assistant" and answered.metadata["partial"] is True
    assert answered.metadata["empty"] is True and proxy.llm.streams_done == 0


@pytest.mark.parametrize(("sends_before_leaving", "gathered"), [(0, ""), (2, "Lisbon")])
def test_a_server_that_tells_of_a_client_gone_by_failing_send_closes_the_llms_stream(
    llm: FakeLlm, sends_before_leaving: int, gathered: str
) -> None:
    """ASGI 2.4 lets a server raise `OSError` from `send` once the client has gone, and not
    report it through `receive`: the relay stops there, before the response start or after
    the first event, closes the LLM's stream and saves what had come, marked partial."""
    llm.script(Reply(content="Lisbon is lovely in May", hold_after=2))
    saved: list[tuple[Answer, bool]] = []
    sent: list[Message] = []

    async def save(answer: Answer, partial: bool) -> None:
        saved.append((answer, partial))

    async def receive() -> Message:  # such a server need not report the client gone here
        await anyio.sleep_forever()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if len(sent) == sends_before_leaving:
            raise OSError("the client has gone")
        sent.append(message)

    async def relay() -> None:
        client = LlmClient(llm.url, timeout=5)
        body = {"model": MODEL, "messages": [user("When should I go?")], "stream": True}
        try:
            response = RelayResponse(await client.open_chat_stream(body), save)
            scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}}
            await response(scope, receive, send)
        finally:
            await client.aclose()

    anyio.run(relay)
    assert len(sent) == sends_before_leaving
    [(answer, partial)] = saved
    assert answer.content == gathered and partial is True
    wait_until(lambda: llm.closed_early == 1, "the proxy to close the LLM's stream")


def test_a_stream_the_llm_breaks_off_leaves_a_partial_answer(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    proxy.llm.script(Reply(content="Lisbon is lovely in May", cut_after=3))
    with proxy.stream(alice, [user("When should I go?")]) as answer:
        relayed = answer.read().decode()
    assert relayed == "".join(proxy.llm.sent_events) and "[DONE]" not in relayed
    answered = proxy.turns("alice")[1]
    assert answered.content == "Lisbon is" and answered.metadata["partial"] is True


def test_an_answer_too_large_to_save_still_reaches_the_client(
    make_vault: MakeVault, llm: FakeLlm, caplog: pytest.LogCaptureFixture
) -> None:
    vault = make_vault(admin_key=ADMIN_KEY, llm_url=llm.url, max_content_bytes=40,
                       embedder="hashing")  # fmt: skip
    llm.script(Reply(content="a very long answer that is over the limit of forty bytes"))
    with serve_proxy(vault, llm) as proxy:
        answer = proxy.chat(proxy.user_key("alice"), [user("Tell me a story")])
        assert answer.status_code == 200
        assert answer.json()["choices"][0]["message"]["content"].startswith("a very long")
        assert [t.role.value for t in proxy.turns("alice")] == ["user"]
    assert "the answer was not saved (invalid turns[0].content)" in caplog.text
    assert "a very long" not in caplog.text


def test_streamed_tool_calls_are_gathered_from_their_pieces(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    proxy.llm.script(Reply(content="", tool_calls=[WEATHER_CALL]))
    with proxy.stream(alice, [user("Weather in Oslo?")]) as answer:
        answer.read()
    call = proxy.turns("alice")[1]
    assert call.tool_calls == [WEATHER_CALL] and call.content == ""
    assert call.metadata["finish_reason"] == "tool_calls" and "partial" not in call.metadata


# -- the LLM failing ------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_an_llm_error_is_passed_through_and_only_the_question_saved(
    proxy: Proxy, stream: bool
) -> None:
    alice = proxy.user_key("alice")
    error = {"error": {"message": "the model crashed", "type": "server_error"}}
    proxy.llm.script(Reply(status=500, error=error))
    answer = proxy.chat(alice, [user("Hello there")], stream=stream)
    assert answer.status_code == 500 and answer.json() == error
    assert [(t.role.value, t.content) for t in proxy.turns("alice")] == [("user", "Hello there")]


@pytest.mark.parametrize("status", [200, 502])
def test_an_answer_that_is_not_json_is_named_not_repeated(proxy: Proxy, status: int) -> None:
    proxy.llm.script(Reply(status=status, html="<html>gateway says hello</html>"))
    answer = proxy.chat(proxy.user_key("alice"), [user("Hello there")])
    assert answer.status_code == 502 and "gateway says" not in answer.text
    if status == 200:  # no answer at all
        assert answer.json()["error"]["code"] == "llm_unreachable"
    else:  # the LLM's error, in OpenAI's shape
        assert answer.json()["error"]["type"] == "upstream_error"
    assert [t.role.value for t in proxy.turns("alice")] == ["user"]


def test_a_refused_connection_answers_502_without_the_url(
    make_vault: MakeVault, llm: FakeLlm
) -> None:
    nowhere = f"http://user:hunter2@127.0.0.1:{free_port()}/v1"
    vault = make_vault(admin_key=ADMIN_KEY, llm_url=nowhere, embedder="hashing")
    with serve_proxy(vault, llm) as proxy:
        answer = proxy.chat(proxy.user_key("alice"), [user("Hello there")])
        assert answer.status_code == 502
        error = answer.json()["error"]
        assert error == {"code": "llm_unreachable", "message": "could not connect to the LLM",
                         "details": {}}  # fmt: skip
        assert [t.content for t in proxy.turns("alice")] == ["Hello there"]


def test_an_llm_that_does_not_answer_in_time_answers_502(
    make_vault: MakeVault, llm: FakeLlm
) -> None:
    vault = make_vault(admin_key=ADMIN_KEY, llm_url=llm.url, llm_timeout=0.3, embedder="hashing")
    llm.script(Reply(delay=1.5))
    with serve_proxy(vault, llm) as proxy:
        answer = proxy.chat(proxy.user_key("alice"), [user("Hello there")])
        assert answer.status_code == 502
        assert answer.json()["error"]["message"] == "the LLM did not answer within 0.3 s"
        assert [t.role.value for t in proxy.turns("alice")] == ["user"]


# -- who is asking --------------------------------------------------------------------------


def test_an_agent_key_writes_as_its_agent_and_sees_only_its_memories(proxy: Proxy) -> None:
    planner, planner_key = proxy.agent_key("alice", "planner")
    writer, _ = proxy.agent_key("alice", "writer")
    proxy.vault.add_memory("alice", "Alice prefers morning flights", kind="fact", agent_id=planner)
    proxy.vault.add_memory("alice", "Alice writes crime novels", kind="fact", agent_id=writer)
    assert proxy.chat(planner_key, [user("Book me a flight")]).status_code == 200
    memory = proxy.llm.last_messages[0]["content"]
    assert "morning flights" in memory and "crime novels" not in memory
    turns = proxy.turns("alice")
    assert [(t.role.value, t.agent_id) for t in turns] == [
        ("user", planner), ("assistant", planner),
    ]  # fmt: skip


def test_an_admin_key_names_the_user_in_the_body(proxy: Proxy) -> None:
    answer = proxy.chat(ADMIN, [user("Hello from Bob")], user="bob")
    assert answer.status_code == 200
    assert [t.content for t in proxy.turns("bob")] == ["Hello from Bob", "Hello!"]
    assert proxy.llm.chats[-1].body["user"] == "bob"  # OpenAI's own field, passed on
    calls = len(proxy.llm.chats)
    missing = proxy.chat(ADMIN, [user("Hello from nobody")])
    assert missing.status_code == 400
    assert missing.json()["error"]["code"] == "bad_request"
    assert missing.json()["error"]["details"] == {"field": "user"}
    assert len(proxy.llm.chats) == calls  # nothing forwarded


def test_a_user_key_cannot_write_to_another_user(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    proxy.vault.add_turn("bob", "chat", "user", "Bob's own turn")
    answer = proxy.chat(alice, [user("Written into Bob's memory?")], user="bob")
    assert answer.status_code == 404 and answer.json()["error"]["code"] == "not_found"
    assert [t.content for t in proxy.turns("bob")] == ["Bob's own turn"]
    assert proxy.vault.list_sessions("alice") == [] and proxy.llm.chats == []
    assert proxy.chat(alice, [user("Mine")], user="alice").status_code == 200  # its own user
    assert proxy.http.post("/chat/completions", json={"messages": []}).status_code == 401


def test_models_are_listed_by_the_llm(proxy: Proxy) -> None:
    answer = proxy.http.get("/models", headers=proxy.user_key("alice"))
    assert answer.status_code == 200 and answer.json()["data"][0]["id"] == MODEL
    assert proxy.http.get("/models").status_code == 401


def test_without_an_llm_url_the_proxy_answers_503(make_vault: MakeVault) -> None:
    with open_api(make_vault, embedder="hashing") as api:
        for answer in (
            api.client.post("/v1/chat/completions", json={"messages": [user("hi")], "user": "a"},
                            headers=ADMIN),
            api.client.get("/v1/models", headers=ADMIN),
        ):  # fmt: skip
            assert answer.status_code == 503
            error = answer.json()["error"]
            assert error["code"] == "llm_not_configured"
            assert "MEMVAULT_LLM_URL" in error["message"]
            assert "retry-after" not in answer.headers
        assert api.vault.list_sessions("a") == []


def test_malformed_messages_are_refused_before_anything_is_saved(proxy: Proxy) -> None:
    alice = proxy.user_key("alice")
    malformed: list[tuple[list[Any], str]] = [
        ([], "messages"),
        (["hello"], "messages[0]"),
        ([{"role": "user", "content": [{"type": "text", "text": 3}]}],
         "messages[0].content[0].text"),
        ([{"role": "system", "content": "Be brief."}, user("  ")], "messages[1].content"),
        ([{"role": "assistant", "content": 3}, user("Hi")], "messages[0].content"),
    ]  # fmt: skip
    for messages, field in malformed:
        answer = proxy.chat(alice, messages)
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["details"]["field"] == field
    assert proxy.vault.list_sessions("alice") == [] and proxy.llm.chats == []


def test_a_message_too_large_to_save_is_refused_naming_the_message(
    make_vault: MakeVault, llm: FakeLlm
) -> None:
    vault = make_vault(admin_key=ADMIN_KEY, llm_url=llm.url, max_content_bytes=40,
                       embedder="hashing")  # fmt: skip
    with serve_proxy(vault, llm) as proxy:
        long = "a very long message, well over the limit of 40 bytes"
        sent = [{"role": "system", "content": "Be brief."}, user(long)]
        answer = proxy.chat(proxy.user_key("alice"), sent)
        assert answer.status_code == 422
        error = answer.json()["error"]
        assert error["details"] == {"field": "messages[1].content"}
        assert error["message"].startswith("messages[1].content: ")
        assert "very long" not in answer.text
        assert vault.list_sessions("alice") == [] and llm.chats == []
