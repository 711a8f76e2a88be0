"""The Python client against a real `memvault serve` process."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_support import ADMIN_KEY, Server, start_server
from websockets.sync.client import connect

from memvault import Conflict, Forbidden, Invalid, NotFound, Turn
from memvault.client import AsyncMemvaultClient, MemvaultClient
from memvault.errors import Unauthorized
from memvault.model import Memory, Role, Tier


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data: Path = tmp_path_factory.mktemp("client") / "data"
    running = start_server(data, MEMVAULT_ADMIN_KEY=ADMIN_KEY)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def admin(server: Server) -> Iterator[MemvaultClient]:
    with MemvaultClient(server.url, ADMIN_KEY) as client:
        yield client


def user_client(server: Server, admin: MemvaultClient, user_id: str) -> MemvaultClient:
    _, secret = admin.create_key("user", user_id)
    return MemvaultClient(server.url, secret)


def test_sync_client_round_trip(server: Server, admin: MemvaultClient) -> None:
    with user_client(server, admin, "alice") as mv:
        user = mv.put_user("alice", {"name": "Alice"})
        assert user.profile == {"name": "Alice"} and mv.get_user("alice").id == "alice"
        turn = mv.add_turn("alice", "s1", "user", "I like green tea", speaker="Alice")
        assert isinstance(turn, Turn) and turn.role is Role.USER and turn.seq == 1
        more = mv.add_turns("alice", "s1", [{"role": "assistant", "content": "Noted."}])
        assert [t.seq for t in more] == [2]
        session = mv.get_session("alice", "s1")
        assert session.turns is not None and [t.content for t in session.turns][-1] == "Noted."
        assert [s.id for s in mv.list_sessions("alice")] == ["s1"]
        assert [t.seq for t in mv.session_turns("alice", "s1", after_seq=1)] == [2]
        assert mv.update_session("alice", "s1", title="Tea").title == "Tea"
        memory = mv.add_memory("alice", "Alice likes green tea", category="preference")
        assert isinstance(memory, Memory) and memory.category == "preference"
        assert mv.move_memory("alice", memory.id, tier="archive").tier is Tier.ARCHIVE
        assert mv.update_memory("alice", memory.id, importance=0.9).importance == 0.9
        assert [m.id for m in mv.list_memories("alice", tiers=["archive"])] == [memory.id]
        assert mv.list_memories("alice", kinds=["episodic"]) == []
        assert mv.stats("alice")["turns"] == 2
        hits = mv.search("alice", "green tea", limit=3)
        assert hits and hits[0].text and hits[0].created_at.tzinfo is not None
        context = mv.context("alice", "what does Alice drink?", session_id="s1")
        assert "green tea" in context.text and context.items
        document = mv.export_user("alice")
        assert document["format"] == "memvault-export"
        shake = mv.handshake("planner")
        assert shake.agent.name == "planner" and [a.id for a in mv.list_agents("alice")] == [
            shake.agent.id
        ]
        assert mv.clear("alice") == 2
        mv.delete_memory("alice", memory.id)
        with pytest.raises(NotFound):
            mv.get_memory("alice", memory.id)
        mv.ping()


def test_server_errors_come_back_as_memvault_errors(server: Server, admin: MemvaultClient) -> None:
    with user_client(server, admin, "bob") as mv:
        with pytest.raises(Invalid) as invalid:
            mv.add_turn("bob", "s1", "robot", "hello")
        assert invalid.value.field == "turns[0].role"
        with pytest.raises(NotFound):
            mv.get_session("alice", "s1")
        with pytest.raises(Forbidden):
            mv.list_keys()
        mv.add_turn("bob", "s1", "user", "hello")
        with pytest.raises(Conflict):
            mv.import_user(mv.export_user("bob"), user_id="bob")
    with MemvaultClient(server.url, "mvk_wrong") as stranger, pytest.raises(Unauthorized):
        stranger.get_user("bob")


def test_admin_manages_keys_and_global_context(admin: MemvaultClient) -> None:
    key, secret = admin.create_key("user", "carol", name="tablet")
    assert key.user_id == "carol" and secret.startswith("mvk_")
    assert key.id in {k.id for k in admin.list_keys()}
    admin.revoke_key(key.id)
    assert key.id not in {k.id for k in admin.list_keys()}
    entry = admin.set_global_context("house", "Be brief.")
    assert entry.text == "Be brief." and "house" in {e.key for e in admin.list_global_context()}
    admin.delete_global_context("house")


def test_async_client_uses_the_same_calls(server: Server, admin: MemvaultClient) -> None:
    _, secret = admin.create_key("user", "dora")

    async def run() -> list[Turn]:
        async with AsyncMemvaultClient(server.url, secret) as mv:
            await asyncio.gather(*(mv.add_turn("dora", "s1", "user", f"t{i}") for i in range(10)))
            with pytest.raises(NotFound):
                await mv.get_user("alice")
            return await mv.session_turns("dora", "s1")

    turns = asyncio.run(run())
    assert sorted(t.content for t in turns) == sorted(f"t{i}" for i in range(10))
    assert [t.seq for t in turns] == list(range(1, 11))


def test_whoami_names_the_keys_scope_user_and_agent(server: Server, admin: MemvaultClient) -> None:
    assert admin.whoami() == {"scope": "admin", "user_id": None, "agent_id": None}
    with user_client(server, admin, "fern") as mv:
        assert mv.whoami() == {"scope": "user", "user_id": "fern", "agent_id": None}
        shake = mv.handshake("scribe")

    async def as_agent() -> dict[str, str | None]:
        async with AsyncMemvaultClient(server.url, shake.key) as agent:
            return await agent.whoami()

    assert asyncio.run(as_agent()) == {
        "scope": "agent", "user_id": "fern", "agent_id": shake.agent.id,
    }  # fmt: skip


def test_supersede_keeps_the_old_memory_as_history(server: Server, admin: MemvaultClient) -> None:
    with user_client(server, admin, "gus") as mv:
        old = mv.add_memory("gus", "Gus lives in Lyon", category="home", tags=["place"])
        new = mv.supersede_memory("gus", old.id, "Gus lives in Porto", importance=0.8)
        assert isinstance(new, Memory) and new.text == "Gus lives in Porto"
        assert (new.category, new.tags, new.importance) == ("home", ("place",), 0.8)
        kept = mv.get_memory("gus", old.id)
        assert kept.text == "Gus lives in Lyon" and kept.superseded_by == new.id
        assert kept.valid_to is not None and new.valid_from is not None
        assert kept.valid_to.tzinfo is not None
        with pytest.raises(Conflict):
            mv.supersede_memory("gus", old.id, "Gus lives in Oslo")
        with pytest.raises(NotFound):
            mv.supersede_memory("gus", "no-such-memory", "anything")
        with pytest.raises(NotFound):
            mv.supersede_memory("alice", old.id, "not gus's to touch")
        with pytest.raises(Invalid) as invalid:
            mv.supersede_memory("gus", new.id, "Gus lives in Porto", importance="very")
        assert invalid.value.field == "importance"
        shake = mv.handshake("mover")

    async def as_agent() -> None:
        async with AsyncMemvaultClient(server.url, shake.key) as agent:
            with pytest.raises(NotFound):
                await agent.supersede_memory("gus", new.id, "the agent may not see it")
            own = await agent.add_memory("gus", "Meeting on Monday")
            moved = await agent.supersede_memory("gus", own.id, "Meeting on Tuesday")
            assert moved.agent_id == shake.agent.id
            assert (await agent.get_memory("gus", own.id)).superseded_by == moved.id

    asyncio.run(as_agent())


def test_websocket_over_a_real_socket(server: Server, admin: MemvaultClient) -> None:
    _, secret = admin.create_key("user", "erin")
    ws_url = server.url.replace("http://", "ws://") + "/v1/ws"
    with connect(ws_url) as listener, user_client(server, admin, "erin") as mv:
        listener.send(json.dumps({"type": "auth", "token": secret}))
        assert json.loads(listener.recv(timeout=5))["type"] == "ready"
        listener.send(json.dumps({"type": "join", "room": "user:erin"}))
        assert json.loads(listener.recv(timeout=5))["type"] == "joined"
        turn = mv.add_turn("erin", "s9", "user", "ping from http")
        event = json.loads(listener.recv(timeout=5))
        assert event["type"] == "turn.added" and event["turn_id"] == turn.id


def test_every_error_the_api_can_answer_comes_back_as_its_own_class() -> None:
    from memvault import errors
    from memvault.client import ERRORS

    answered = {
        cls.code: cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.MemvaultError)
        and cls.code != errors.MemvaultError.code  # the bases, which the API never answers
        and "code" in vars(cls)  # a kind of another error (UserKeyMissing) is answered as that
    }  # fmt: skip
    assert answered == ERRORS


@pytest.mark.parametrize("code", ["invalid", "bad_request"])
def test_an_error_naming_a_field_comes_back_naming_it(code: str) -> None:
    from memvault import errors
    from memvault.client import ERRORS, raise_for_error

    envelope = {
        "error": {"code": code, "message": "user: must be named", "details": {"field": "user"}}
    }
    with pytest.raises(errors.FieldError) as raised:
        raise_for_error(httpx.Response(400, json=envelope))
    assert type(raised.value) is ERRORS[code]
    assert (raised.value.field, raised.value.message) == ("user", "user: must be named")


def test_session_pages_go_on_by_time_and_id(admin: MemvaultClient) -> None:
    for n in range(3):
        admin.add_turn("tie-source", f"s{n}", "user", f"turn {n}")
    exported = admin.export_user("tie-source")
    for session in exported["sessions"]:
        session["updated_at"] = "2026-03-01T12:00:00+00:00"  # as an import can leave them
    admin.import_user(exported, user_id="tied")
    seen: list[str] = []
    page = admin.list_sessions("tied", limit=1)
    while page:
        seen += [s.id for s in page]
        page = admin.list_sessions("tied", limit=1, before=page[-1].updated_at,
                                   before_id=page[-1].id)  # fmt: skip
    assert seen == ["s2", "s1", "s0"]


def test_an_admin_client_lists_users_by_the_start_of_their_ids(admin: MemvaultClient) -> None:
    for user_id in ("zed-1", "zed-2", "zed-3"):
        admin.put_user(user_id, {"name": user_id.upper()})
    first = admin.list_users(prefix="zed-", limit=2)
    assert [(u.id, u.name) for u in first] == [("zed-1", "ZED-1"), ("zed-2", "ZED-2")]
    assert [u.id for u in admin.list_users(prefix="zed-", after=first[-1].id)] == ["zed-3"]
