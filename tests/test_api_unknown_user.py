"""A user nothing was ever written for, or one deleted, over HTTP: every user-scoped read
answers by the one rule of docs/api.md ("A user that does not exist"). Reads of the user's
collections answer empty, exactly as for a user who exists with nothing in them; a read of one
object by id answers 404 naming the object; the user itself, and what describes or acts on the
whole user, answers 404 `no such user` until the user exists."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_support import ADMIN, Api, bearer, open_api
from conftest import MakeVault

EMPTY_PAGE: dict[str, Any] = {"items": [], "next": None}
EMPTY_CONTEXT = {"text": "", "items": [], "dropped": [], "tokens": 0, "token_budget": 2000}
COLLECTIONS = [
    ("GET", "sessions", None, EMPTY_PAGE),
    ("GET", "memories", None, EMPTY_PAGE),
    ("GET", "agents", None, EMPTY_PAGE),
    ("POST", "search", {"query": "what do I like"}, EMPTY_PAGE),
    ("POST", "context", {"query": "what do I like"}, EMPTY_CONTEXT),
]
OBJECTS = [
    ("GET", "sessions/s1", None, "no such session"),
    ("GET", "sessions/s1/turns", None, "no such session"),
    ("PATCH", "sessions/s1", {"title": "t"}, "no such session"),
    ("GET", "memories/m1", None, "no such memory"),
    ("PATCH", "memories/m1", {"text": "t"}, "no such memory"),
]
THE_USER: list[tuple[str, str, Any]] = [
    ("GET", "", None),
    ("GET", "/stats", None),
    ("GET", "/export", None),
    ("GET", "/export?format=jsonl", None),
    ("GET", "/export?format=markdown", None),
    ("POST", "/consolidate", {}),
]


@pytest.fixture
def api(make_vault: MakeVault) -> Iterator[Api]:
    with open_api(make_vault) as opened:
        yield opened


def call(api: Api, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return api.client.request(method, f"/v1/users/ghost{path}", json=body, headers=headers)


def keys_for_ghost(api: Api) -> dict[str, dict[str, str]]:
    """An admin key, and a user key bound to `ghost` (keys do not make their user exist)."""
    return {"admin": ADMIN, "user": bearer(api.key("user", "ghost"))}


@pytest.mark.parametrize(("method", "path", "body", "empty"), COLLECTIONS, ids=str)
def test_a_collection_of_a_user_that_does_not_exist_is_empty_as_for_one_with_nothing(
    api: Api, method: str, path: str, body: Any, empty: Any
) -> None:
    for scope, headers in keys_for_ghost(api).items():
        answer = call(api, method, f"/{path}", body, headers)
        assert (answer.status_code, answer.json()) == (200, empty), scope
    api.vault.put_user("ghost", {"name": "Casper"})  # exists now, with nothing in it: the same
    answer = call(api, method, f"/{path}", body, ADMIN)
    assert (answer.status_code, answer.json()) == (200, empty)
    assert api.vault.get_user("ghost").profile == {"name": "Casper"}  # a read made nothing


def test_recent_turns_of_a_user_that_does_not_exist_are_none(api: Api) -> None:
    assert api.vault.recent_turns("ghost") == []
    assert api.vault.recent_turns("ghost", session_id="s1") == []


@pytest.mark.parametrize(("method", "path", "body", "missing"), OBJECTS, ids=str)
def test_an_object_of_a_user_that_does_not_exist_is_404_naming_the_object(
    api: Api, method: str, path: str, body: Any, missing: str
) -> None:
    for scope, headers in keys_for_ghost(api).items():
        answer = call(api, method, f"/{path}", body, headers)
        assert answer.status_code == 404, scope
        assert answer.json()["error"] == {"code": "not_found", "message": missing, "details": {}}


@pytest.mark.parametrize(("method", "path", "body"), THE_USER, ids=str)
def test_the_user_and_what_describes_the_whole_user_are_404_until_the_user_exists(
    api: Api, method: str, path: str, body: Any
) -> None:
    for scope, headers in keys_for_ghost(api).items():
        answer = call(api, method, path, body, headers)
        assert answer.status_code == 404, scope
        assert answer.json()["error"]["message"] == "no such user"
    api.vault.put_user("ghost", {"name": "Casper"})
    assert call(api, method, path, body, ADMIN).status_code == 200


def test_a_deleted_user_answers_as_one_that_never_existed(api: Api) -> None:
    api.vault.add_turn("ghost", "s1", "user", "I like tea")
    memory = api.vault.add_memory("ghost", "likes tea")
    assert call(api, "DELETE", "", None, ADMIN).status_code == 204
    assert call(api, "DELETE", "", None, ADMIN).status_code == 404
    for method, path, body, empty in COLLECTIONS:
        assert call(api, method, f"/{path}", body, ADMIN).json() == empty, path
    assert call(api, "GET", f"/memories/{memory.id}", None, ADMIN).status_code == 404
    for method, path, body in THE_USER:
        assert call(api, method, path, body, ADMIN).status_code == 404, path
