"""Cross-tenant matrix: every user route, called with user A's key (and A's agent's key) on
user B's resources, answers 404 exactly as for a user that does not exist, and changes nothing.
An agent key cannot reach another agent's memories either."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_support import Api, open_api
from conftest import MakeVault

SESSION, MEMORY = "s1", "m-placeholder"


@pytest.fixture
def api(make_vault: MakeVault) -> Iterator[Api]:
    with open_api(make_vault) as opened:
        yield opened


def seed(api: Api, user_id: str) -> dict[str, str]:
    api.vault.add_turn(user_id, SESSION, "user", f"{user_id}'s secret")
    memory = api.vault.add_memory(user_id, f"{user_id}'s private fact")
    return {"session_id": SESSION, "memory_id": memory.id}


def requests_for(
    user_id: str, ids: dict[str, str], export: dict[str, Any]
) -> list[tuple[str, str, Any]]:
    u = f"/v1/users/{user_id}"
    s = f"{u}/sessions/{ids['session_id']}"
    m = f"{u}/memories/{ids['memory_id']}"
    return [
        ("PUT", u, {"profile": {"x": 1}}),
        ("GET", u, None),
        ("DELETE", u, None),
        ("GET", f"{u}/stats", None),
        ("GET", f"{u}/export", None),
        ("POST", f"{u}/import", export),
        ("POST", f"{u}/clear", {}),
        ("POST", f"{u}/consolidate", {}),
        ("GET", f"{u}/sessions", None),
        ("GET", s, None),
        ("PATCH", s, {"title": "mine now"}),
        ("DELETE", s, None),
        ("POST", f"{s}/turns", {"role": "user", "content": "injected"}),
        ("GET", f"{s}/turns", None),
        ("POST", f"{u}/memories", {"text": "injected"}),
        ("GET", f"{u}/memories", None),
        ("GET", m, None),
        ("PATCH", m, {"text": "changed"}),
        ("POST", f"{m}/supersede", {"text": "replaced"}),
        ("DELETE", m, None),
        ("POST", f"{u}/search", {"query": "secret"}),
        ("POST", f"{u}/context", {"query": "secret"}),
        ("GET", f"{u}/agents", None),
    ]


def test_the_matrix_covers_every_user_route(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    served = {
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1/users/")
        for method in operations
    }
    ids = {"session_id": "{session_id}", "memory_id": "{memory_id}"}
    covered = {(m, p) for m, p, _ in requests_for("{user_id}", ids, {})}
    assert served == covered


@pytest.mark.parametrize("caller", ["user", "agent"])
def test_another_users_resources_look_like_nothing(api: Api, caller: str) -> None:
    seed(api, "alice")
    bob_ids = seed(api, "bob")
    export = api.vault.export_user("alice")
    if caller == "user":
        headers = api.user_headers("alice")
    else:
        headers = api.agent_headers("alice", "helper")[1]
    before = api.vault.export_user("bob")
    for (method, path, body), (_, ghost_path, _) in zip(
        requests_for("bob", bob_ids, export),
        requests_for("nobody", bob_ids, export),
        strict=True,
    ):
        real = api.client.request(method, path, json=body, headers=headers)
        ghost = api.client.request(method, ghost_path, json=body, headers=headers)
        assert real.status_code in (403, 404), (method, path, real.status_code)
        assert (real.status_code, real.json()) == (ghost.status_code, ghost.json()), path
        assert "bob" not in real.text
    after = api.vault.export_user("bob")
    for volatile in ("exported_at",):
        before.pop(volatile), after.pop(volatile)
    assert before == after


def test_handshake_for_another_user_is_404(api: Api) -> None:
    alice = api.user_headers("alice")
    response = api.client.post("/v1/handshake", json={"name": "x", "user_id": "bob"},
                               headers=alice)  # fmt: skip
    assert response.status_code == 404
    assert api.vault.list_agents("bob") == []


def test_an_agent_cannot_reach_another_agents_memories(api: Api) -> None:
    planner_id, planner = api.agent_headers("alice", "planner")
    _, critic = api.agent_headers("alice", "critic")
    base = "/v1/users/alice/memories"
    own = api.client.post(base, json={"text": "plan: ship friday"}, headers=planner).json()
    assert own["agent_id"] == planner_id
    path = f"{base}/{own['id']}"
    assert api.client.get(path, headers=planner).status_code == 200
    for method, body in (("GET", None), ("PATCH", {"text": "x"}), ("DELETE", None)):
        denied = api.client.request(method, path, json=body, headers=critic)
        assert denied.status_code == 404 and denied.json()["error"]["message"] == "no such memory"
    assert api.client.get(base, headers=critic).json()["items"] == []
    asked = api.client.get(base, params={"agent_id": planner_id}, headers=critic).json()
    assert asked["items"] == []
    hits = api.client.post("/v1/users/alice/search", json={"query": "plan ship friday"},
                           headers=critic).json()["items"]  # fmt: skip
    assert own["id"] not in {h["id"] for h in hits}
    spoof = api.client.post(base, json={"text": "x", "agent_id": planner_id}, headers=critic)
    assert spoof.status_code == 403
    assert api.vault.get_memory("alice", own["id"]).text == "plan: ship friday"
    assert [m["id"] for m in api.client.get(base, headers=planner).json()["items"]] == [own["id"]]


def test_an_agent_key_may_not_read_the_users_stats(api: Api) -> None:
    """Stats count the whole user, every agent's memories included, so they are for user and
    admin keys, like export: an agent key is refused and learns nothing of other agents."""
    planner_id, _ = api.agent_headers("alice", "planner")
    _, critic = api.agent_headers("alice", "critic")
    for i in range(3):
        api.vault.add_memory("alice", f"planner's note {i}", agent_id=planner_id)
    path = "/v1/users/alice/stats"
    denied = api.client.get(path, headers=critic)
    assert denied.status_code == 403
    assert denied.json()["error"] == {
        "code": "forbidden", "message": "agent keys may not do this", "details": {},
    }  # fmt: skip
    assert api.client.get(path, headers=api.user_headers("alice")).json()["memories"] == 3


def test_an_agents_search_page_is_full_of_what_it_may_read(api: Api) -> None:
    _, planner = api.agent_headers("alice", "planner")
    _, critic = api.agent_headers("alice", "critic")
    base = "/v1/users/alice/memories"
    for i in range(5):
        api.client.post(base, json={"text": f"launch checklist item {i}"}, headers=planner)
    own = [
        api.client.post(base, json={"text": f"launch risk {i}"}, headers=critic).json()["id"]
        for i in range(3)
    ]
    body = {"query": "launch checklist", "limit": 3, "types": ["memory"]}
    hits = api.client.post("/v1/users/alice/search", json=body, headers=critic).json()["items"]
    assert sorted(h["id"] for h in hits) == sorted(own)


def test_an_agents_context_holds_only_what_the_agent_may_read(api: Api) -> None:
    """An agent key gets context from its own agent's memories, the user's turns and global
    context, as its memory list and search do; never another agent's or the user's own
    memories, not even in `dropped`. A user key's context keeps them all."""
    planner_id, planner = api.agent_headers("alice", "planner")
    critic_id, critic = api.agent_headers("alice", "critic")
    v = api.vault
    texts = {
        "planner": [v.add_memory("alice", "The launch plan: ship on friday", agent_id=planner_id),
                    v.add_memory("alice", "Always plan the launch with a checklist",
                                 agent_id=planner_id, pinned=True)],
        "critic": [v.add_memory("alice", "The launch will slip past friday", agent_id=critic_id),
                   v.add_memory("alice", "Never trust a launch plan", agent_id=critic_id,
                                pinned=True)],
        "user": [v.add_memory("alice", "Alice wants the launch on friday")],
    }  # fmt: skip
    turn = v.add_turn("alice", "s1", "user", "How is the launch on friday going?")
    body = {"query": "launch plan friday", "session_id": "s1", "token_budget": 4000}
    path = "/v1/users/alice/context"

    def context(headers: dict[str, str], **extra: Any) -> dict[str, Any]:
        answer = api.client.post(path, json={**body, **extra}, headers=headers)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    for name, headers in (("planner", planner), ("critic", critic)):
        seen = context(headers)
        small = context(headers, token_budget=30)
        ids = {i["id"] for c in (seen, small) for i in c["items"] + c["dropped"]}
        own = {m.id for m in texts[name]}
        assert own | {turn.id} <= {i["id"] for i in seen["items"]}
        assert ids <= own | {turn.id}, name
        for other in texts.values():
            for memory in other:
                assert (memory.text in seen["text"]) == (memory.id in own)
    everything = context(api.user_headers("alice"))
    every_memory = {m.id for memories in texts.values() for m in memories}
    assert every_memory <= {i["id"] for i in everything["items"]}


def test_an_agent_alone_gets_the_same_context_as_its_user(api: Api) -> None:
    """With no memories but its own, an agent's context is exactly the user's: the agent's
    assembly keeps the sections, order and budget of `Vault.context`."""
    agent_id, agent = api.agent_headers("alice", "solo")
    for text in ("Alice's dog is called Rex", "Rex loves the beach", "Walk Rex at seven"):
        api.vault.add_memory("alice", text, agent_id=agent_id, pinned=text.startswith("Walk"))
    api.vault.add_turns("alice", "s1", [{"role": "user", "content": "Where does Rex like to go?"},
                                        {"role": "assistant", "content": "To the beach.",
                                         "channel": "ai"}])  # fmt: skip
    body = {"query": "what do we know about Rex?", "session_id": "s1", "token_budget": 60,
            "now": "2026-01-01T00:00:00Z"}  # fmt: skip
    path = "/v1/users/alice/context"
    as_agent = api.client.post(path, json=body, headers=agent).json()
    as_user = api.client.post(path, json=body, headers=api.user_headers("alice")).json()
    # the same lines, sections, order and budget; the scores differ a little, since the first
    # call's use of the memories counts in the second's access signal
    for context in (as_agent, as_user):
        for item in context["items"] + context["dropped"]:
            score = item.pop("score")
            assert score is None or 0 < score <= 1
    assert as_agent == as_user
    assert as_agent["items"] and as_agent["dropped"]
