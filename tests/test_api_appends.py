"""Group commit: concurrent appends share transactions, and no turn is lost or misnumbered;
a bad or clashing request fails alone."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import httpx
from api_support import ADMIN, ADMIN_KEY
from conftest import MakeVault

from memvault import Conflict, Invalid
from memvault.api import create_app
from memvault.model import new_id


def test_concurrent_appends_all_land_in_order(make_vault: MakeVault) -> None:
    vault = make_vault(admin_key=ADMIN_KEY)
    app = create_app(vault)
    sessions = [(f"user-{i % 3}", f"session-{i % 5}") for i in range(300)]
    duplicate = new_id()

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t", headers=ADMIN) as c:
            taken = {"id": duplicate, "role": "user", "content": "x"}
            first = await c.post("/v1/users/user-0/sessions/s/turns", json=taken)
            assert first.status_code == 201
            calls = [
                c.post(f"/v1/users/{user}/sessions/{session}/turns",
                       json=[{"role": "user", "content": f"turn {i}"},
                             {"role": "assistant", "content": f"reply {i}"}])
                for i, (user, session) in enumerate(sessions)
            ]  # fmt: skip
            calls.insert(100, c.post("/v1/users/user-1/sessions/bad/turns", json={"role": "x"}))
            calls.insert(200, c.post("/v1/users/user-0/sessions/s/turns", json=taken))
            return await asyncio.gather(*calls)

    answers = asyncio.run(run())
    statuses = [a.status_code for a in answers]
    assert statuses.count(201) == len(sessions)
    assert statuses[100] == 422 and statuses[200] == 409
    expected: dict[tuple[str, str], list[str]] = defaultdict(list)
    for i, key in enumerate(sessions):
        expected[key] += [f"turn {i}", f"reply {i}"]
    for (user, session), contents in expected.items():
        stored = vault.get_session(user, session).turns or ()
        assert [t.seq for t in stored] == list(range(1, len(contents) + 1))
        assert sorted(t.content for t in stored) == sorted(contents)
        pairs = [t.content.split()[1] for t in stored]
        assert pairs[0::2] == pairs[1::2]  # each request's two turns are adjacent, in order
    assert "bad" not in {s.id for s in vault.list_sessions("user-1", limit=100)}


def test_add_turn_groups_answers_each_group(make_vault: MakeVault) -> None:
    vault = make_vault()
    taken = vault.add_turn("alice", "s1", "user", "first").id
    results = vault.add_turn_groups(
        [
            ("alice", "s1", [{"role": "user", "content": "second"}]),
            ("bob", "s1", [{"role": "nobody", "content": "x"}]),
            ("carol", "s2", [{"id": taken, "role": "user", "content": "fine"}]),
            ("alice", "s1", [{"id": taken, "role": "user", "content": "clash"}]),
            ("alice", "s2", []),
        ]
    )
    first, invalid, other_user, clash, empty = results
    assert isinstance(first, list) and first[0].seq == 2
    assert isinstance(invalid, Invalid) and invalid.field == "turns[0].role"
    assert isinstance(other_user, list) and other_user[0].id == taken  # ids are per user
    assert isinstance(clash, Conflict)
    assert isinstance(empty, Invalid)
    assert [t.content for t in vault.get_session("alice", "s1").turns or ()] == ["first", "second"]
