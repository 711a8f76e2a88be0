"""The one error envelope, pinned: every failure answers `{"error": {code, message, details}}`
with the right status, and neither answers nor logs carry user content, keys or traces."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from api_support import ADMIN, ADMIN_KEY, Api, open_api
from conftest import MakeVault
from fastapi import APIRouter

from memvault.errors import Unavailable

SECRET_TEXT = "my-very-private-diary-entry"


@pytest.fixture
def api(make_vault: MakeVault) -> Iterator[Api]:
    with open_api(make_vault, max_body_bytes=2048, rate_limit_per_minute=5) as opened:
        yield opened


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert isinstance(body["error"]["details"], dict)
    assert SECRET_TEXT not in response.text
    error: dict[str, Any] = body["error"]
    return error


def test_validation_errors_name_the_field_and_not_the_value(api: Api) -> None:
    headers = api.user_headers("alice")
    path = "/v1/users/alice/sessions/s1/turns"
    typed = api.client.post(path, json={"role": "user", "content": 5}, headers=headers)
    assert error_of(typed, 422, "invalid")["details"]["field"] == "turn.content"
    in_list = api.client.post(path, json=[{"role": "user", "content": "ok"}, {"content": "x"}],
                              headers=headers)  # fmt: skip
    assert error_of(in_list, 422, "invalid")["details"]["field"] == "turns[1].role"
    unknown = api.client.post(path, json={"role": "user", "content": "x", "colour": SECRET_TEXT},
                              headers=headers)  # fmt: skip
    assert error_of(unknown, 422, "invalid")["details"]["field"] == "turn.colour"
    vault_check = api.client.post(path, json={"role": SECRET_TEXT, "content": "x"},
                                  headers=headers)  # fmt: skip
    assert error_of(vault_check, 422, "invalid")["details"]["field"] == "turns[0].role"
    broken = api.client.post(path, content=b"{not json", headers={**headers,
                             "content-type": "application/json"})  # fmt: skip
    error_of(broken, 422, "invalid")
    query = api.client.get("/v1/users/alice/sessions", params={"limit": 0}, headers=headers)
    assert error_of(query, 422, "invalid")["details"]["field"] == "limit"


TURNS = "/v1/users/alice/sessions/s1/turns"
MEMORIES = "/v1/users/alice/memories"


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", TURNS, r'{"role": "user", "content": "x", "metadata": {"\ud800": 1}}',
         "turns[0].metadata"),
        ("POST", TURNS, r'[{"role": "tool", "tool_result": {"k": "\udc00"}}]',
         "turns[0].tool_result"),
        ("POST", MEMORIES, r'{"text": "x", "metadata": {"k": "\ud800"}}', "metadata"),
        ("PUT", "/v1/users/alice", r'{"profile": {"name": "\ud800"}}', "profile"),
    ],
)  # fmt: skip
def test_lone_surrogates_in_json_values_are_422(
    api: Api, method: str, path: str, body: str, field: str
) -> None:
    """JSON escapes can spell a lone surrogate, which no UTF-8 column can hold: as in a text
    field, it is a 422 naming the field, and nothing is written."""
    headers = {**api.user_headers("alice"), "content-type": "application/json"}
    answer = api.client.request(method, path, content=body.encode(), headers=headers)
    assert error_of(answer, 422, "invalid")["details"]["field"] == field
    assert api.client.get("/v1/users/alice", headers=ADMIN).status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (TURNS, {"role": "user", "content": "x", "created_at": "9999-12-31T23:59:59-12:00"},
         "turns[0].created_at"),
        (MEMORIES, {"text": "x", "valid_from": "0001-01-01T00:00:00+05:00"}, "valid_from"),
        ("/v1/users/alice/search", {"query": "x", "since": "9999-12-31T23:00:00-05:00"}, "since"),
        ("/v1/users/alice/context", {"query": "x", "now": "0001-01-01T00:00:00+05:00"}, "now"),
    ],
)  # fmt: skip
def test_date_times_that_leave_the_calendar_in_utc_are_422(
    api: Api, path: str, body: dict[str, Any], field: str
) -> None:
    """A valid ISO date-time at the edge of the calendar, whose offset takes it past year 9999
    or before year 1 in UTC, is a 422 naming the field, not a 500; nothing is written."""
    answer = api.client.post(path, json=body, headers=api.user_headers("alice"))
    assert error_of(answer, 422, "invalid")["details"]["field"] == field
    assert api.client.get("/v1/users/alice", headers=ADMIN).status_code == 404


def test_missing_and_bad_credentials_are_401(api: Api) -> None:
    missing = api.client.get("/v1/users/alice")
    assert error_of(missing, 401, "unauthorized") and missing.headers["www-authenticate"]
    bad = api.client.get("/v1/users/alice", headers={"Authorization": "Bearer mvk_nope"})
    error_of(bad, 401, "unauthorized")
    not_bearer = api.client.get("/v1/users/alice", headers={"Authorization": f"Basic {ADMIN_KEY}"})
    error_of(not_bearer, 401, "unauthorized")


def test_not_found_forbidden_and_conflict(api: Api) -> None:
    headers = api.user_headers("alice")
    error_of(api.client.get("/v1/users/alice/sessions/nope", headers=headers), 404, "not_found")
    error_of(api.client.get("/v1/no/such/route", headers=headers), 404, "not_found")
    error_of(api.client.get("/v1/keys", headers=headers), 403, "forbidden")
    error_of(api.client.put("/healthz"), 405, "method_not_allowed")
    api.client.post("/v1/users/alice/sessions/s1/turns", json={"role": "user", "content": "a"},
                    headers=headers)  # fmt: skip
    document = api.client.get("/v1/users/alice/export", headers=headers).json()
    clash = api.client.post("/v1/users/alice/import", json=document, headers=headers)
    error_of(clash, 409, "conflict")


def test_bodies_over_the_limit_are_413(api: Api) -> None:
    headers = api.user_headers("alice")
    big = {"role": "user", "content": SECRET_TEXT * 200}
    response = api.client.post("/v1/users/alice/sessions/s1/turns", json=big, headers=headers)
    error_of(response, 413, "too_large")

    def chunks() -> Iterator[bytes]:
        yield b'{"role": "user", "content": "'
        for _ in range(100):
            yield b"x" * 100
        yield b'"}'

    streamed = api.client.post("/v1/users/alice/sessions/s1/turns", content=chunks(),
                               headers={**headers, "content-type": "application/json"})  # fmt: skip
    error_of(streamed, 413, "too_large")


def test_each_key_has_its_own_rate_limit(api: Api) -> None:
    alice, bob = api.user_headers("alice"), api.user_headers("bob")
    for _ in range(5):
        assert api.client.get("/v1/users/alice/sessions", headers=alice).status_code == 200
    limited = api.client.get("/v1/users/alice/sessions", headers=alice)
    assert error_of(limited, 429, "rate_limited")["details"]["retry_after"] >= 1
    assert int(limited.headers["retry-after"]) >= 1
    assert api.client.get("/v1/users/bob/sessions", headers=bob).status_code == 200


def test_unexpected_failures_are_a_bare_500(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    router = APIRouter()

    @router.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError(SECRET_TEXT)

    api.client.app.include_router(router)  # type: ignore[attr-defined]
    with caplog.at_level(logging.INFO):
        response = api.client.get("/v1/boom")
    assert error_of(response, 500, "internal")["message"] == "internal server error"
    assert SECRET_TEXT not in caplog.text and "Traceback" not in caplog.text


def test_an_unavailable_database_is_503_with_retry_after(api: Api) -> None:
    """What the PostgreSQL backend raises when it cannot take the work (provoked for real in
    test_postgres_transient.py) keeps the one envelope and tells the client when to retry."""
    router = APIRouter()

    @router.get("/v1/busy")
    def busy() -> None:
        raise Unavailable("the database is unavailable", details={"retry_after": 1})

    api.client.app.include_router(router)  # type: ignore[attr-defined]
    response = api.client.get("/v1/busy")
    assert error_of(response, 503, "unavailable")["details"] == {"retry_after": 1}
    assert response.headers["retry-after"] == "1"


def test_access_log_has_one_line_per_request_without_bodies_or_keys(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    headers = api.user_headers("alice")
    with caplog.at_level(logging.INFO, logger="memvault.access"):
        api.client.post("/v1/users/alice/sessions/s1/turns",
                        json={"role": "user", "content": SECRET_TEXT}, headers=headers)  # fmt: skip
        api.client.get("/v1/users/alice/sessions/s1", headers=ADMIN)
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "memvault.access"]
    assert [(x["method"], x["route"], x["status"]) for x in lines] == [
        ("POST", "/v1/users/{user_id}/sessions/{session_id}/turns", 201),
        ("GET", "/v1/users/{user_id}/sessions/{session_id}", 200),
    ]
    assert lines[0]["key_id"] and lines[1]["key_id"] == "env-admin"
    assert SECRET_TEXT not in caplog.text
    assert headers["Authorization"].split()[1] not in caplog.text and ADMIN_KEY not in caplog.text
