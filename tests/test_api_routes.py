"""Every HTTP route, in process, against a real vault on disk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from api_support import ADMIN, Api, bearer, open_api
from conftest import MakeVault, sessions_of_one_moment


@pytest.fixture
def api(make_vault: MakeVault) -> Iterator[Api]:
    with open_api(make_vault) as opened:
        yield opened


@pytest.fixture
def alice(api: Api) -> dict[str, str]:
    return api.user_headers("alice")


def test_health_and_readiness_need_no_key(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/readyz").json() == {"status": "ready"}


def test_readiness_fails_when_the_keyring_is_gone(api: Api) -> None:
    api.vault.keyring.close()
    response = api.client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
    assert response.headers["retry-after"] == "1"


def test_user_profile_stats_and_delete(api: Api, alice: dict[str, str]) -> None:
    c = api.client
    put = c.put("/v1/users/alice", json={"profile": {"name": "Alice"}}, headers=alice)
    assert put.status_code == 200 and put.json()["profile"] == {"name": "Alice"}
    assert c.get("/v1/users/alice", headers=alice).json()["id"] == "alice"
    c.post("/v1/users/alice/sessions/s1/turns", json={"role": "user", "content": "hi"},
           headers=alice)  # fmt: skip
    stats = c.get("/v1/users/alice/stats", headers=alice).json()
    assert stats["turns"] == 1 and stats["sessions"] == 1
    assert c.delete("/v1/users/alice", headers=alice).status_code == 204
    assert c.get("/v1/users/alice", headers=ADMIN).status_code == 404
    assert c.get("/v1/users/alice", headers=alice).status_code == 401  # deleted with the user


def test_an_admin_lists_the_users_a_page_at_a_time_and_by_the_start_of_their_ids(
    api: Api, alice: dict[str, str]
) -> None:
    for user_id in ("team-b", "team-a", "solo", "team_x", "team%"):
        api.vault.add_turn(user_id, "s", "user", "hello")
    api.vault.put_user("team-a", {"name": "Ann"})
    c, users = api.client, "/v1/users"
    first = c.get(users, params={"limit": 2}, headers=ADMIN).json()
    assert [u["id"] for u in first["items"]] == ["solo", "team%"] and first["next"] == "team%"
    rest = c.get(users, params={"limit": 10, "cursor": first["next"]}, headers=ADMIN).json()
    assert [u["id"] for u in rest["items"]] == ["team-a", "team-b", "team_x"]
    assert rest["items"][0]["profile"] == {"name": "Ann"} and rest["next"] is None
    by_prefix = c.get(users, params={"prefix": "team-"}, headers=ADMIN).json()
    assert [u["id"] for u in by_prefix["items"]] == ["team-a", "team-b"]  # "_" is no wildcard
    literal = c.get(users, params={"prefix": "team%"}, headers=ADMIN).json()
    assert [u["id"] for u in literal["items"]] == ["team%"]
    assert c.get(users, headers=alice).status_code == 403  # across users: admin keys only
    bad = c.get(users, params={"cursor": "a/b"}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["error"]["details"] == {"field": "cursor"}


def test_turns_one_or_many_and_pages(api: Api, alice: dict[str, str]) -> None:
    c = api.client
    path = "/v1/users/alice/sessions/s1/turns"
    one = c.post(path, json={"role": "user", "content": "first"}, headers=alice)
    assert one.status_code == 201 and one.json()["seq"] == 1
    many = c.post(path, json=[{"role": "assistant", "content": f"r{i}"} for i in range(4)],
                  headers=alice)  # fmt: skip
    assert many.status_code == 201
    assert [t["seq"] for t in many.json()["items"]] == [2, 3, 4, 5]
    first = c.get(path, params={"limit": 3}, headers=alice).json()
    assert [t["seq"] for t in first["items"]] == [1, 2, 3] and first["next"] == "3"
    rest = c.get(path, params={"limit": 3, "cursor": first["next"]}, headers=alice).json()
    assert [t["seq"] for t in rest["items"]] == [4, 5] and rest["next"] is None


def test_session_pages_neither_skip_nor_repeat_sessions_of_the_same_moment(
    api: Api, alice: dict[str, str]
) -> None:
    sessions_of_one_moment(api.vault, "alice", 5)
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        answer = api.client.get("/v1/users/alice/sessions", params=params, headers=alice).json()
        seen += [s["id"] for s in answer["items"]]
        if answer["next"] is None:
            break
        params["cursor"] = answer["next"]
    assert seen == ["s4", "s3", "s2", "s1", "s0"]
    older = api.client.get(  # a cursor of the time alone, as before: what came before that time
        "/v1/users/alice/sessions", params={"cursor": "2026-03-01T12:00:01+00:00"}, headers=alice
    )
    assert [s["id"] for s in older.json()["items"]] == seen
    bad = api.client.get(
        "/v1/users/alice/sessions", params={"cursor": "2026-03-01T12:00:00+00:00/ "}, headers=alice
    )
    assert bad.status_code == 422 and bad.json()["error"]["details"] == {"field": "cursor"}


def test_a_session_list_cursor_not_from_the_list_is_422_naming_cursor(
    api: Api, alice: dict[str, str]
) -> None:
    """The list pages by time, which `Vault.list_sessions` takes as `before`: the error names
    the query parameter the caller sent, not that argument."""
    answer = api.client.get("/v1/users/alice/sessions", params={"cursor": "x"}, headers=alice)
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["message"] == "cursor: is not an ISO 8601 date-time"
    assert error["details"] == {"field": "cursor"}


@pytest.mark.parametrize("cursor", ["-1", "x", "\u00b2", "9" * 30, str(2**63)])
@pytest.mark.parametrize("listing", ["sessions/s1/turns", "memories"])
def test_a_cursor_not_from_the_list_is_422(
    api: Api, alice: dict[str, str], listing: str, cursor: str
) -> None:
    """Cursors of offset-paged lists are whole numbers that fit the database: anything else
    ("²" passes str.isdigit, a 30-digit number overflows the column) names `cursor`."""
    c = api.client
    c.post("/v1/users/alice/sessions/s1/turns", json={"role": "user", "content": "x"},
           headers=alice)  # fmt: skip
    c.post("/v1/users/alice/memories", json={"text": "x"}, headers=alice)
    answer = c.get(f"/v1/users/alice/{listing}", params={"cursor": cursor}, headers=alice)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["details"]["field"] == "cursor"


def test_sessions_read_patch_list_delete(api: Api, alice: dict[str, str]) -> None:
    c = api.client
    for session in ("s1", "s2", "s3"):
        c.post(f"/v1/users/alice/sessions/{session}/turns", json={"role": "user", "content": "x"},
               headers=alice)  # fmt: skip
    patched = c.patch("/v1/users/alice/sessions/s1",
                      json={"title": "Trip", "confidence": 0.5, "metadata": {"k": 1}},
                      headers=alice)  # fmt: skip
    assert patched.json()["title"] == "Trip"
    session = c.get("/v1/users/alice/sessions/s1", headers=alice).json()
    assert session["title"] == "Trip" and len(session["turns"]) == 1
    page = c.get("/v1/users/alice/sessions", params={"limit": 2}, headers=alice).json()
    assert len(page["items"]) == 2 and page["next"] is not None
    more = c.get("/v1/users/alice/sessions", params={"limit": 2, "cursor": page["next"]},
                 headers=alice).json()  # fmt: skip
    seen = {s["id"] for s in page["items"] + more["items"]}
    assert seen == {"s1", "s2", "s3"}
    assert c.delete("/v1/users/alice/sessions/s2", headers=alice).status_code == 204
    assert c.get("/v1/users/alice/sessions/s2", headers=alice).status_code == 404


def test_memories_add_filter_edit_move_delete(api: Api, alice: dict[str, str]) -> None:
    c = api.client
    base = "/v1/users/alice/memories"
    fact = c.post(base, json={"text": "likes tea", "category": "preference", "tags": ["drink"]},
                  headers=alice)  # fmt: skip
    assert fact.status_code == 201
    c.post(base, json={"text": "met Bo", "kind": "episodic", "tier": "working"}, headers=alice)
    memory_id = fact.json()["id"]
    facts = c.get(base, params={"kind": "fact"}, headers=alice).json()["items"]
    assert [m["id"] for m in facts] == [memory_id]
    tagged = c.get(base, params={"tag": "drink", "category": "preference"}, headers=alice).json()
    assert [m["id"] for m in tagged["items"]] == [memory_id]
    edited = c.patch(f"{base}/{memory_id}", json={"text": "loves tea", "importance": 0.9},
                     headers=alice).json()  # fmt: skip
    assert edited["text"] == "loves tea" and edited["importance"] == 0.9
    moved = c.patch(f"{base}/{memory_id}", json={"tier": "archive"}, headers=alice).json()
    assert moved["tier"] == "archive"
    assert c.get(f"{base}/{memory_id}", headers=alice).json()["tier"] == "archive"
    paged = c.get(base, params={"limit": 1}, headers=alice).json()
    assert len(paged["items"]) == 1 and paged["next"] == "1"
    assert c.delete(f"{base}/{memory_id}", headers=alice).status_code == 204
    assert c.get(f"{base}/{memory_id}", headers=alice).status_code == 404


def test_export_formats_and_import_into_another_user(api: Api, alice: dict[str, str]) -> None:
    c = api.client
    c.post("/v1/users/alice/sessions/s1/turns", json={"role": "user", "content": "hello there"},
           headers=alice)  # fmt: skip
    c.post("/v1/users/alice/memories", json={"text": "likes tea"}, headers=alice)
    document = c.get("/v1/users/alice/export", headers=alice).json()
    assert document["format"] == "memvault-export"
    lines = c.get("/v1/users/alice/export", params={"format": "jsonl"}, headers=alice).text
    types = [json.loads(line)["type"] for line in lines.splitlines()]
    assert types[0] == "user" and "turn" in types and "memory" in types
    text = c.get("/v1/users/alice/export", params={"format": "markdown"}, headers=alice).text
    assert "hello there" in text and "likes tea" in text
    imported = c.post("/v1/users/carol/import", json=document, headers=ADMIN)
    assert imported.status_code == 201 and imported.json()["id"] == "carol"
    again = c.post("/v1/users/carol/import", json=document, headers=ADMIN)
    assert again.status_code == 409
    turns = c.get("/v1/users/carol/sessions/s1/turns", headers=ADMIN).json()["items"]
    assert [t["content"] for t in turns] == ["hello there"]


def test_clear_forgets_turns_of_one_channel(api: Api, alice: dict[str, str]) -> None:
    c = api.client
    c.post("/v1/users/alice/sessions/s1/turns", json={"role": "user", "content": "a"},
           headers=alice)  # fmt: skip
    c.post("/v1/users/alice/sessions/g1/turns",
           json={"role": "user", "content": "b", "channel": "general"}, headers=alice)  # fmt: skip
    cleared = c.post("/v1/users/alice/clear", json={"channel": "general"}, headers=alice)
    assert cleared.json() == {"deleted": 1}
    assert c.post("/v1/users/alice/clear", headers=alice).json() == {"deleted": 1}


def test_handshake_registers_once_and_issues_agent_keys(api: Api, alice: dict[str, str]) -> None:
    c = api.client
    first = c.post("/v1/handshake", json={"name": "planner"}, headers=alice).json()
    second = c.post("/v1/handshake", json={"name": "planner", "description": "d"},
                    headers=alice).json()  # fmt: skip
    assert first["agent_id"] == second["agent_id"] and first["key"] != second["key"]
    agent = {"Authorization": f"Bearer {first['key']}"}
    turn = c.post("/v1/users/alice/sessions/s1/turns", json={"role": "assistant", "content": "x"},
                  headers=agent).json()  # fmt: skip
    assert turn["agent_id"] == first["agent_id"]
    agents = c.get("/v1/users/alice/agents", headers=alice).json()["items"]
    assert [a["name"] for a in agents] == ["planner"]
    by_admin = c.post("/v1/handshake", json={"name": "helper", "user_id": "alice"}, headers=ADMIN)
    assert by_admin.status_code == 200
    no_user = c.post("/v1/handshake", json={"name": "helper"}, headers=ADMIN)
    assert no_user.status_code == 422


def test_global_context_read_by_all_written_by_admin(api: Api, alice: dict[str, str]) -> None:
    c = api.client
    put = c.put("/v1/global-context/house-rules", json={"text": "Be kind."}, headers=ADMIN)
    assert put.status_code == 200
    assert c.get("/v1/global-context/house-rules", headers=alice).json()["text"] == "Be kind."
    assert [e["key"] for e in c.get("/v1/global-context", headers=alice).json()["items"]] == [
        "house-rules"
    ]
    denied = c.put("/v1/global-context/x", json={"text": "no"}, headers=alice)
    assert denied.status_code == 403
    assert c.delete("/v1/global-context/house-rules", headers=alice).status_code == 403
    assert c.delete("/v1/global-context/house-rules", headers=ADMIN).status_code == 204
    assert c.get("/v1/global-context/house-rules", headers=alice).status_code == 404


def test_keys_created_listed_revoked_by_admin(api: Api) -> None:
    c = api.client
    created = c.post("/v1/keys", json={"scope": "user", "user_id": "dan", "name": "phone"},
                     headers=ADMIN)  # fmt: skip
    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith("mvk_") and body["user_id"] == "dan"
    dan = {"Authorization": f"Bearer {body['key']}"}
    assert c.get("/v1/users/dan/sessions", headers=dan).status_code == 200
    listed = c.get("/v1/keys", headers=ADMIN).json()["items"]
    assert body["id"] in {k["id"] for k in listed}
    assert all("key" not in k and "secret_hash" not in k for k in listed)
    assert c.get("/v1/keys", headers=dan).status_code == 403
    assert c.delete(f"/v1/keys/{body['id']}", headers=ADMIN).status_code == 204
    assert c.get("/v1/users/dan/sessions", headers=dan).status_code == 401
    revoked = c.get("/v1/keys", params={"include_revoked": "true"}, headers=ADMIN).json()
    assert any(k["id"] == body["id"] and k["revoked_at"] for k in revoked["items"])
    assert c.delete(f"/v1/keys/{body['id']}", headers=ADMIN).status_code == 404


def test_key_records_hold_only_a_hash(api: Api) -> None:
    secret = api.key("user", "erin")
    rows = api.vault.store.list_api_keys()
    assert rows and all(secret not in json.dumps(row) for row in rows)


def test_openapi_document_lists_the_routes(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert "/v1/users/{user_id}/sessions/{session_id}/turns" in paths
    assert "/v1/handshake" in paths and "/v1/keys" in paths


def test_search_and_context(api: Api, alice: dict[str, str]) -> None:
    c = api.client
    c.post("/v1/users/alice/sessions/s1/turns",
           json=[{"role": "user", "content": "My dog Rex loves the beach"},
                 {"role": "assistant", "content": "Rex sounds fun"}], headers=alice)  # fmt: skip
    c.post("/v1/users/alice/memories", json={"text": "Alice's dog is called Rex"}, headers=alice)
    found = c.post("/v1/users/alice/search", json={"query": "dog Rex", "limit": 5, "explain": True},
                   headers=alice)  # fmt: skip
    assert found.status_code == 200
    hits = found.json()["items"]
    assert hits and {"id", "type", "score", "text", "signals"} <= set(hits[0])
    assert "item" not in hits[0]
    only = c.post("/v1/users/alice/search", json={"query": "dog", "types": ["memory"]},
                  headers=alice).json()["items"]  # fmt: skip
    assert {h["type"] for h in only} == {"memory"}
    context = c.post("/v1/users/alice/context",
                     json={"query": "what is my dog called?", "session_id": "s1",
                           "token_budget": 500}, headers=alice)  # fmt: skip
    assert context.status_code == 200
    assert "Rex" in context.json()["text"] and context.json()["tokens"] <= 500
    bad = c.post("/v1/users/alice/search", json={"query": "x", "limit": 0}, headers=alice)
    assert bad.status_code == 422
    mine = c.post("/v1/users/alice/search",
                  json={"query": "what is my dog called?", "asked_by": "user", "explain": True},
                  headers=alice).json()["items"]  # fmt: skip
    speaker = {h["text"]: h["signals"]["speaker"] for h in mine}
    assert speaker["My dog Rex loves the beach"] == 1.0 and speaker["Rex sounds fun"] == 0.0
    asker = c.post("/v1/users/alice/context", json={"query": "my dog?", "asked_by": " "},
                   headers=alice)  # fmt: skip
    assert asker.status_code == 422 and "asked_by" in asker.text
    share = c.post("/v1/users/alice/context", json={"query": "my dog?", "min_relative_score": 2},
                   headers=alice)  # fmt: skip
    assert share.status_code == 422 and "min_relative_score" in share.text


def test_whoami_tells_a_tokens_scope_and_user(api: Api) -> None:
    agent_id, agent_headers = api.agent_headers("alice", "Jarvis")
    answers = {
        "admin": api.client.get("/v1/whoami", headers=ADMIN),
        "user": api.client.get("/v1/whoami", headers=api.user_headers("alice")),
        "agent": api.client.get("/v1/whoami", headers=agent_headers),
    }
    assert answers["admin"].json() == {"scope": "admin", "user_id": None, "agent_id": None}
    assert answers["user"].json() == {"scope": "user", "user_id": "alice", "agent_id": None}
    assert answers["agent"].json() == {"scope": "agent", "user_id": "alice", "agent_id": agent_id}
    refused = api.client.get("/v1/whoami", headers=bearer("mvk_" + "x" * 43))
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "invalid or revoked credentials"


def test_supersede_answers_the_successor_and_closes_the_old_memory(api: Api) -> None:
    headers = api.user_headers("alice")
    old = api.vault.add_memory("alice", "Alice works at Acme", category="work")
    path = f"/v1/users/alice/memories/{old.id}/supersede"
    answer = api.client.post(path, json={"text": "Alice works at Initech"}, headers=headers)
    assert answer.status_code == 201
    new = answer.json()
    assert (new["text"], new["category"]) == ("Alice works at Initech", "work")
    assert api.vault.get_memory("alice", old.id).superseded_by == new["id"]

    again = api.client.post(path, json={"text": "Alice works at Globex"}, headers=headers)
    assert (again.status_code, again.json()["error"]["code"]) == (409, "conflict")
    missing = api.client.post(path, json={}, headers=headers)
    assert (missing.status_code, missing.json()["error"]["details"]["field"]) == (422, "text")


def test_supersede_is_not_for_another_agents_memory_or_another_user(api: Api) -> None:
    _, agent_headers = api.agent_headers("alice", "Jarvis")
    users_own = api.vault.add_memory("alice", "Alice likes tea")
    path = f"/v1/users/alice/memories/{users_own.id}/supersede"
    as_agent = api.client.post(path, json={"text": "Alice likes coffee"}, headers=agent_headers)
    assert as_agent.status_code == 404
    as_bob = api.client.post(
        path, json={"text": "Alice likes coffee"}, headers=api.user_headers("bob")
    )
    assert as_bob.status_code == 404
    assert api.vault.get_memory("alice", users_own.id).superseded_by is None
