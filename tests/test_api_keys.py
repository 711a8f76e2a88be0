"""API keys and JWTs: scopes, validation, revocation, the CLI, and the first admin key."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from api_support import ADMIN, Api, bearer, open_api
from conftest import MakeVault

from memvault import Invalid, NotFound
from memvault.api.serve import first_admin_key
from memvault.cli import main
from memvault.config import Settings
from memvault.keys import KEY_PREFIX, Scope, hash_secret

JWT_SECRET = "a-test-jwt-secret-of-at-least-32-bytes"


@pytest.fixture
def api(make_vault: MakeVault) -> Iterator[Api]:
    with open_api(make_vault, jwt_secret=JWT_SECRET) as opened:
        yield opened


def token(claims: dict[str, object], secret: str = JWT_SECRET) -> dict[str, str]:
    return bearer(jwt.encode(claims, secret, algorithm="HS256"))


def test_keys_are_random_prefixed_and_stored_as_hashes(api: Api) -> None:
    key, secret = api.vault.keys.create("user", "alice", name="laptop")
    other = api.vault.keys.create("user", "alice")[1]
    assert secret.startswith(KEY_PREFIX) and len(secret) > 40 and secret != other
    assert key.prefix == secret[: len(key.prefix)] and key.scope is Scope.USER
    assert api.vault.store.find_api_key(hash_secret(secret)) is not None
    assert api.vault.keys.authenticate(secret) == key
    assert api.vault.keys.authenticate(secret + "x") is None


def test_key_scopes_are_checked(api: Api) -> None:
    keys = api.vault.keys
    with pytest.raises(Invalid, match="user_id"):
        keys.create("user")
    with pytest.raises(Invalid, match="user_id"):
        keys.create("admin", "alice")
    with pytest.raises(Invalid, match="agent_id"):
        keys.create("agent", "alice", "no-such-agent")
    with pytest.raises(Invalid, match="agent_id"):
        keys.create("user", "alice", "agent")
    with pytest.raises(Invalid, match="scope"):
        keys.create("root")
    with pytest.raises(NotFound):
        keys.revoke("no-such-key")


def test_jwt_subject_is_the_user(api: Api) -> None:
    api.vault.add_turn("alice", "s1", "user", "hi")
    alice = token({"sub": "alice", "exp": int(time.time()) + 60})
    assert api.client.get("/v1/users/alice/sessions", headers=alice).status_code == 200
    assert api.client.get("/v1/users/bob/sessions", headers=alice).status_code == 404
    refused = api.client.get("/v1/keys", headers=alice)
    assert refused.status_code == 403
    assert refused.json()["error"]["message"] == "user keys may not do this"


@pytest.mark.parametrize(
    "headers",
    [
        token({"sub": "alice"}, secret="another-secret-of-at-least-32-bytes!"),
        token({"sub": "alice", "exp": int(time.time()) - 10}),
        token({"name": "no subject"}),
        bearer("not.a.jwt"),
    ],
)
def test_bad_jwts_are_401(api: Api, headers: dict[str, str]) -> None:
    response = api.client.get("/v1/users/alice", headers=headers)
    assert response.status_code == 401


def test_jwt_with_an_agent_claim_acts_as_that_agent(api: Api) -> None:
    agent = api.vault.register_agent("alice", "planner")
    headers = token({"sub": "alice", "agent_id": agent.id})
    made = api.client.post("/v1/users/alice/memories", json={"text": "x"}, headers=headers)
    assert made.json()["agent_id"] == agent.id


def test_deleting_a_user_stops_their_keys_at_once(api: Api) -> None:
    """Deleting a user deletes their keys: a key the server checked a moment ago must not
    keep working from its cache, or its next write would bring the deleted user back."""
    agent = api.vault.register_agent("carol", "planner")
    carol = bearer(api.key("user", "carol"))
    planner = bearer(api.key("agent", "carol", agent.id))
    dave = bearer(api.key("user", "dave"))
    c = api.client
    for headers, user in ((carol, "carol"), (planner, "carol"), (dave, "dave")):
        turn = {"role": "user", "content": "hello"}
        assert c.post(f"/v1/users/{user}/sessions/s/turns", json=turn, headers=headers).is_success
    assert c.delete("/v1/users/carol", headers=carol).status_code == 204
    for headers in (carol, planner):
        again = c.post("/v1/users/carol/sessions/s/turns", json=turn, headers=headers)
        assert again.status_code == 401
    assert c.get("/v1/users/carol", headers=ADMIN).status_code == 404
    assert c.get("/v1/users/dave", headers=dave).status_code == 200


def test_cli_creates_lists_and_revokes_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    assert main(["--data", data, "keys", "create", "--scope", "user", "--user", "zoe"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert created["key"].startswith(KEY_PREFIX) and created["user_id"] == "zoe"
    assert main(["--data", data, "keys", "list"]) == 0
    listed = capsys.readouterr().out
    key_id = listed.split()[0]
    assert "zoe" in listed and "live" in listed and created["prefix"] in listed
    assert created["key"] not in listed  # only the prefix, never the secret
    assert main(["--data", data, "keys", "revoke", key_id]) == 0
    capsys.readouterr()
    assert main(["--data", data, "keys", "list", "--all"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["--data", data, "keys", "revoke", key_id]) == 2


def test_first_start_makes_one_admin_key(make_vault: MakeVault) -> None:
    vault = make_vault()
    secret = first_admin_key(vault, vault.settings)
    assert secret is not None and vault.keys.authenticate(secret) is not None
    assert first_admin_key(vault, vault.settings) is None
    fresh = make_vault(data=vault.settings.data.parent / "other")
    configured = Settings(admin_key="configured-admin-key-0123")
    assert first_admin_key(fresh, configured) is None and not fresh.keys.has_admin()
