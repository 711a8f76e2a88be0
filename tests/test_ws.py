"""WebSocket /v1/ws: authentication, rooms, history, live events, appends, heartbeat."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import jwt
import pytest
from api_support import ADMIN_KEY, Api, bearer, open_api
from conftest import MakeVault
from loopback import receive, receive_until, serve_in_thread
from starlette.testclient import WebSocketTestSession
from starlette.websockets import WebSocketDisconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from memvault.api.ws import CLOSE_IDLE, CLOSE_UNAUTHORIZED

IDLE = 1.0
JWT_SECRET = "a-test-jwt-secret-of-at-least-32-bytes"


@pytest.fixture
def api(make_vault: MakeVault) -> Iterator[Api]:
    """The idle timeout only ends a test that waits in vain, instead of letting it hang."""
    with open_api(make_vault, ws_idle_timeout=10, ws_history_turns=2) as opened:
        yield opened


@pytest.fixture
def impatient(make_vault: MakeVault) -> Iterator[Api]:
    with open_api(make_vault, ws_idle_timeout=IDLE) as opened:
        yield opened


def connect(ws: WebSocketTestSession, token: str) -> dict[str, Any]:
    ws.send_json({"type": "auth", "token": token})
    ready: dict[str, Any] = ws.receive_json()
    assert ready["type"] == "ready"
    return ready


def join(ws: WebSocketTestSession, room: str, **extra: Any) -> list[dict[str, Any]]:
    ws.send_json({"type": "join", "room": room, **extra})
    replies = [ws.receive_json()]
    if room.startswith("session:") and replies[0]["type"] == "joined":
        replies.append(ws.receive_json())
    return replies


def test_one_client_writes_and_the_other_receives(api: Api) -> None:
    key = api.key("user", "alice")
    with (
        api.client.websocket_connect("/v1/ws") as listener,
        api.client.websocket_connect("/v1/ws") as writer,
    ):
        assert connect(listener, key)["user_id"] == "alice"
        assert join(listener, "session:s1")[0] == {"type": "joined", "room": "session:s1"}
        connect(writer, key)
        writer.send_json({"type": "append", "session_id": "s1", "ref": 7,
                          "turns": [{"role": "user", "content": "hello"}]})  # fmt: skip
        appended = writer.receive_json()
        assert appended["type"] == "appended" and appended["ref"] == 7
        turn_id = appended["turns"][0]["id"]
        event = listener.receive_json()
        assert event == {"type": "turn.added", "user_id": "alice", "session_id": "s1",
                         "turn_id": turn_id}  # fmt: skip
        api.client.post("/v1/users/alice/memories", json={"text": "likes tea"},
                        headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        join(listener, "user:alice")
        api.client.patch("/v1/users/alice/sessions/s1", json={"title": "t"},
                         headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert listener.receive_json()["type"] == "session.updated"


def test_joining_a_session_room_sends_recent_history(api: Api) -> None:
    for text in ("one", "two", "three"):
        api.vault.add_turn("alice", "s1", "user", text)
    with api.client.websocket_connect("/v1/ws") as ws:
        connect(ws, api.key("user", "alice"))
        _joined, history = join(ws, "session:s1")
        assert history["type"] == "history"
        assert [t["content"] for t in history["turns"]] == ["two", "three"]


def test_other_users_rooms_do_not_exist(api: Api) -> None:
    api.vault.add_turn("bob", "s-bob", "user", "private")
    with api.client.websocket_connect("/v1/ws") as ws:
        connect(ws, api.key("user", "alice"))
        for message in (
            {"type": "join", "room": "user:bob"},
            {"type": "join", "room": "session:s-bob", "user_id": "bob"},
            {"type": "append", "user_id": "bob", "session_id": "s", "turns": []},
        ):
            ws.send_json(message)
            reply = ws.receive_json()
            assert reply["type"] == "error" and reply["error"]["code"] == "not_found"
    with api.client.websocket_connect("/v1/ws") as ws:
        connect(ws, ADMIN_KEY)
        _joined, history = join(ws, "session:s-bob", user_id="bob")
        assert [t["content"] for t in history["turns"]] == ["private"]


def test_bad_messages_answer_errors_and_keep_the_connection(api: Api) -> None:
    with api.client.websocket_connect("/v1/ws") as ws:
        connect(ws, api.key("user", "alice"))
        ws.send_text("{not json")
        assert ws.receive_json()["error"]["code"] == "invalid"
        ws.send_json({"type": "dance"})
        assert ws.receive_json()["error"]["details"] == {"field": "type"}
        ws.send_json(
            {"type": "append", "session_id": "s1", "turns": [{"role": "nope", "content": "x"}]}
        )
        assert ws.receive_json()["error"]["details"] == {"field": "turns[0].role"}
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


@pytest.mark.parametrize("frame", [b'{"type": "ping"}', "[" * 100_000 + "]" * 100_000])
def test_unreadable_frames_are_bad_messages(make_vault: MakeVault, frame: str | bytes) -> None:
    """Over real sockets: a binary frame, or JSON nested too deep to parse, answers an error
    and keeps the connection, like any bad message; as the first message it fails
    authentication (4401)."""
    vault = make_vault(admin_key=ADMIN_KEY, ws_idle_timeout=10)
    key = vault.keys.create("user", "alice")[1]
    with serve_in_thread(vault) as url:
        with ws_connect(url.replace("http", "ws", 1) + "/v1/ws") as ws:
            ws.send(json.dumps({"type": "auth", "token": key}))
            assert receive(ws)["type"] == "ready"
            ws.send(frame)
            assert receive(ws)["error"]["code"] == "invalid"
            ws.send(json.dumps({"type": "ping"}))
            assert receive(ws) == {"type": "pong"}
        with ws_connect(url.replace("http", "ws", 1) + "/v1/ws") as ws:
            ws.send(frame)
            with pytest.raises(ConnectionClosed) as closed:
                receive(ws)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == CLOSE_UNAUTHORIZED


@pytest.mark.parametrize(
    "first", [{"type": "auth", "token": "mvk_wrong"}, {"type": "hello"}, "not json", "[1]"]
)
def test_failed_authentication_closes_with_4401(api: Api, first: Any) -> None:
    with api.client.websocket_connect("/v1/ws") as ws:
        if isinstance(first, str):
            ws.send_text(first)
        else:
            ws.send_json(first)
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == CLOSE_UNAUTHORIZED


def test_a_silent_client_is_closed_after_the_idle_timeout(impatient: Api) -> None:
    with impatient.client.websocket_connect("/v1/ws") as ws:
        connect(ws, impatient.key("user", "alice"))
        started = time.monotonic()
        for _ in range(3):  # pings 0.4 s apart keep it open past one idle timeout
            time.sleep(0.4)
            ws.send_json({"type": "ping"})
            assert ws.receive_json() == {"type": "pong"}
        assert time.monotonic() - started > IDLE
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == CLOSE_IDLE


def test_sockets_are_in_the_access_log(impatient: Api, caplog: pytest.LogCaptureFixture) -> None:
    key = impatient.key("user", "alice")
    with (
        caplog.at_level(logging.INFO, logger="memvault.access"),
        impatient.client.websocket_connect("/v1/ws") as ws,
    ):
        connect(ws, key)
        join(ws, "session:s1")
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "memvault.access"]
    assert [(x["method"], x["route"], x["status"]) for x in lines] == [("WS", "/v1/ws", CLOSE_IDLE)]
    assert lines[0]["key_id"]


def test_agent_keys_hear_only_their_own_agents_memory_events(make_vault: MakeVault) -> None:
    """Over real sockets: two agents of one user each hear their own memories' events and not
    the other's, whoever wrote them (agent, user key, or the embedded vault); the user's key
    hears every event. Turn events stay the whole user's."""
    vault = make_vault(admin_key=ADMIN_KEY, ws_idle_timeout=10)
    planner, writer = vault.register_agent("alice", "planner"), vault.register_agent("alice", "w")
    keys = {
        "planner": vault.keys.create("agent", "alice", planner.id)[1],
        "writer": vault.keys.create("agent", "alice", writer.id)[1],
        "user": vault.keys.create("user", "alice")[1],
    }
    with serve_in_thread(vault) as url, ExitStack() as stack:
        sockets = {}
        for name, token in keys.items():
            ws = stack.enter_context(ws_connect(url.replace("http", "ws", 1) + "/v1/ws"))
            ws.send(json.dumps({"type": "auth", "token": token}))
            assert receive(ws)["type"] == "ready"
            ws.send(json.dumps({"type": "join", "room": "user:alice"}))
            assert receive(ws) == {"type": "joined", "room": "user:alice"}
            sockets[name] = ws
        with httpx.Client(base_url=url) as http:
            path = "/v1/users/alice/memories"

            def memory(who: str, **body: Any) -> str:
                answer = http.post(path, json=body, headers=bearer(keys[who]))
                assert answer.status_code == 201, answer.text
                return str(answer.json()["id"])

            mine = memory("planner", text="planner note")
            assert http.patch(f"{path}/{mine}", json={"importance": 0.9},
                              headers=bearer(keys["planner"])).status_code == 200  # fmt: skip
            theirs = memory("writer", text="writer note")
            assigned = memory("user", text="for the writer", agent_id=writer.id)
            own = memory("user", text="the user's own")
            moved = http.patch(f"{path}/{assigned}", json={"agent_id": planner.id},
                               headers=bearer(keys["user"]))  # fmt: skip
            assert moved.status_code == 200, moved.text
            assert http.delete(f"{path}/{mine}", headers=bearer(keys["planner"])).status_code == 204
        successor = vault.supersede_memory("alice", theirs, "writer note, corrected").id
        vault.add_turn("alice", "s1", "user", "everyone hears this turn", agent_id=planner.id)
        heard = {
            name: [(m["type"], m.get("memory_id"), m.get("agent_id")) for m in
                   receive_until(ws, "turn.added")[:-1]]
            for name, ws in sockets.items()
        }  # fmt: skip
    p, w = planner.id, writer.id
    assert heard["planner"] == [
        ("memory.added", mine, p), ("memory.updated", mine, p),
        ("memory.updated", assigned, p), ("memory.deleted", mine, p),
    ]  # fmt: skip
    assert heard["writer"] == [  # told when the assigned memory leaves its view
        ("memory.added", theirs, w), ("memory.added", assigned, w),
        ("memory.updated", assigned, p), ("memory.added", successor, w),
        ("memory.updated", theirs, w),
    ]  # fmt: skip
    assert heard["user"] == [
        ("memory.added", mine, p), ("memory.updated", mine, p), ("memory.added", theirs, w),
        ("memory.added", assigned, w), ("memory.added", own, None),
        ("memory.updated", assigned, p), ("memory.deleted", mine, p),
        ("memory.added", successor, w), ("memory.updated", theirs, w),
    ]  # fmt: skip


@pytest.mark.parametrize("ended_by", ["revocation", "user deletion"])
def test_a_socket_is_closed_when_its_key_stops_working(
    make_vault: MakeVault, ended_by: str
) -> None:
    """Over real sockets: once its key is revoked (or its user deleted, which deletes the
    user's keys), an open socket hears nothing more and writes nothing more: it is closed with
    4401. Another user's socket and an admin socket stay open."""
    vault = make_vault(admin_key=ADMIN_KEY, ws_idle_timeout=10)
    key, secret = vault.keys.create("user", "carol")
    dave = vault.keys.create("user", "dave")[1]
    with serve_in_thread(vault) as url, ExitStack() as stack:
        sockets = {}
        for name, token, room in (
            ("carol", secret, "user:carol"), ("dave", dave, "user:dave"),
            ("admin", ADMIN_KEY, "user:carol"),
        ):  # fmt: skip
            ws = stack.enter_context(ws_connect(url.replace("http", "ws", 1) + "/v1/ws"))
            ws.send(json.dumps({"type": "auth", "token": token}))
            assert receive(ws)["type"] == "ready"
            ws.send(json.dumps({"type": "join", "room": room}))
            assert receive(ws)["type"] == "joined"
            sockets[name] = ws
        with httpx.Client(base_url=url, headers=bearer(ADMIN_KEY)) as http:
            vault.add_turn("carol", "s1", "user", "before")
            assert receive(sockets["carol"])["type"] == "turn.added"
            assert receive(sockets["admin"])["type"] == "turn.added"
            path = f"/v1/keys/{key.id}" if ended_by == "revocation" else "/v1/users/carol"
            assert http.delete(path).status_code == 204
        carol = sockets["carol"]
        append = {"type": "append", "session_id": "s2", "ref": 1,
                  "turns": [{"role": "user", "content": "after"}]}  # fmt: skip
        with pytest.raises(ConnectionClosed) as closed:
            carol.send(json.dumps(append))
            while True:  # whatever was already on its way, then the close
                assert receive(carol)["type"] not in ("appended", "turn.added")
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_UNAUTHORIZED
        assert all(s.id != "s2" for s in vault.list_sessions("carol"))
        for name in ("dave", "admin"):
            sockets[name].send(json.dumps({"type": "ping"}))
            assert receive_until(sockets[name], "pong")[-1] == {"type": "pong"}


def strict_json(text: str | bytes) -> Any:
    """JSON as any other parser reads it: Python's would also take NaN and Infinity."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_a_ref_that_would_not_go_out_as_json_is_refused(make_vault: MakeVault) -> None:
    """Over real sockets: Python parses NaN, Infinity, 1e999 and lone surrogate escapes, but
    echoing such a `ref` would send a frame that is not JSON (or not UTF-8). Such a message
    answers `invalid` naming `ref`, is not acted on, and the connection stays open; a `ref`
    that is JSON is echoed as it came. A `ref` has the size limit of any JSON field."""
    vault = make_vault(admin_key=ADMIN_KEY, ws_idle_timeout=10, max_json_bytes=64)
    key = vault.keys.create("user", "alice")[1]
    append = '{"type": "append", "session_id": "s1", "turns": [{"role": "user", "content": "x"}]'
    with serve_in_thread(vault) as url, ws_connect(url.replace("http", "ws", 1) + "/v1/ws") as ws:
        ws.send(json.dumps({"type": "auth", "token": key}))
        assert receive(ws)["type"] == "ready"
        refused = {
            "ref: is not JSON-serialisable": ("NaN", "-Infinity", "1e999", '{"a": [1, NaN]}'),
            "ref: is not valid Unicode text (lone surrogate)": ('"\\ud800"',),
            "ref: is over the limit of 64 bytes once serialised": ('"' + "r" * 63 + '"',),
        }
        for words, refs in refused.items():
            for ref in refs:
                ws.send(append + ', "ref": ' + ref + "}")
                reply = strict_json(ws.recv(timeout=10))
                assert reply["type"] == "error" and "ref" not in reply, ref
                assert reply["error"] == {"code": "invalid", "message": words,
                                          "details": {"field": "ref"}}  # fmt: skip
        assert vault.list_sessions("alice") == []
        for ref in ('"a"', "1.5", "-0.0", "12345678901234567890", '{"k": [null, "\\u00e9"]}'):
            ws.send('{"type": "ping", "ref": ' + ref + "}")
            assert strict_json(ws.recv(timeout=10)) == {"type": "pong", "ref": json.loads(ref)}
        ws.send(append + ', "ref": 3}')
        assert strict_json(ws.recv(timeout=10))["type"] == "appended"


def jwt_token(claims: dict[str, object]) -> str:
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def test_a_jwt_socket_is_closed_when_the_token_expires(make_vault: MakeVault) -> None:
    """Over real sockets: a socket opened with a JWT works until the token's `exp`, then is
    closed with 4401, like one whose key is revoked; an append sent as `exp` passes writes
    nothing. A socket whose JWT expires later stays open."""
    vault = make_vault(admin_key=ADMIN_KEY, ws_idle_timeout=10, jwt_secret=JWT_SECRET)
    exp = int(time.time()) + 3  # the JWT library counts whole seconds: 2 to 3 s from now
    with serve_in_thread(vault) as url, ExitStack() as stack:
        sockets = {}
        for name, claims in (("short", {"sub": "alice", "exp": exp}),
                             ("long", {"sub": "alice", "exp": exp + 60})):  # fmt: skip
            ws = stack.enter_context(ws_connect(url.replace("http", "ws", 1) + "/v1/ws"))
            ws.send(json.dumps({"type": "auth", "token": jwt_token(claims)}))
            assert receive(ws)["type"] == "ready"
            sockets[name] = ws
        short = sockets["short"]

        def append(session_id: str) -> str:
            return json.dumps({"type": "append", "session_id": session_id, "ref": session_id,
                               "turns": [{"role": "user", "content": "hello"}]})  # fmt: skip

        short.send(append("before"))
        assert receive(short)["type"] == "appended"
        assert time.time() < exp  # the check above ran while the token was good
        time.sleep(max(0.0, exp - time.time()))
        with pytest.raises(ConnectionClosed) as closed:
            short.send(append("after"))
            while True:  # whatever was already on its way, then the close
                assert receive(short)["type"] != "appended"
        assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_UNAUTHORIZED
        assert [s.id for s in vault.list_sessions("alice")] == ["before"]
        sockets["long"].send(json.dumps({"type": "ping"}))
        assert receive(sockets["long"]) == {"type": "pong"}
