"""Python client for a memvault server: `MemvaultClient` and `AsyncMemvaultClient`.

Every endpoint is written once, as a function that builds a `Call` (method, path, body, and how
to read the answer). The two clients differ only in how they send a call, so they cannot drift
apart: the `endpoint` descriptor gives each client the same methods, blocking on one and
awaitable on the other. Method names follow `Vault` where the meaning is the same; server errors
come back as the same `memvault.errors` classes `Vault` raises.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import date, datetime
from typing import Any, Generic, ParamSpec, TypeVar, overload
from urllib.parse import quote

import httpx

from memvault import errors
from memvault.keys import ApiKey
from memvault.mind.context import Context
from memvault.model import Agent, GlobalContextEntry, Memory, Session, Turn, User
from memvault.retrieval.search import Hit

T = TypeVar("T")
M = TypeVar("M")
P = ParamSpec("P")

ERRORS: dict[str, type[errors.MemvaultError]] = {
    cls.code: cls
    for cls in (
        errors.Invalid, errors.NotFound, errors.Forbidden, errors.Conflict, errors.Unauthorized,
        errors.TooLarge, errors.RateLimited, errors.IntegrityError, errors.WrongMasterKey,
        errors.Unavailable, errors.BadRequest, errors.LlmUnreachable, errors.LlmNotConfigured,
    )
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Call(Generic[T]):
    """One HTTP request and the function that turns its answer into a result."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Handshake:
    """An agent, registered or found by name, and a key of its own (shown this once)."""

    agent: Agent
    key: str
    key_id: str


# -- reading answers ---------------------------------------------------------------------------


def from_dict(cls: type[M], data: Mapping[str, Any]) -> M:
    """Rebuild a model dataclass from its `to_dict()` form (dates, enums, nested turns)."""
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    return cls(**{f.name: _convert(hints[f.name], data[f.name]) for f in fields if f.name in data})


def _convert(kind: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return _convert(next(a for a in typing.get_args(kind) if a is not type(None)), value)
    if origin in (tuple, list):
        return origin(_convert(typing.get_args(kind)[0], item) for item in value)
    if kind is datetime:
        return datetime.fromisoformat(value)
    if kind is date:
        return date.fromisoformat(value)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind(value)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        return from_dict(kind, value)
    return value


def _one(cls: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: from_dict(cls, response.json())


def _items(cls: type[M]) -> Callable[[httpx.Response], list[M]]:
    return lambda response: [from_dict(cls, item) for item in response.json()["items"]]


def _json(response: httpx.Response) -> Any:
    return response.json()


def _nothing(response: httpx.Response) -> None:
    return None


def raise_for_error(response: httpx.Response) -> httpx.Response:
    """Turn the server's error envelope back into the `memvault.errors` class it came from."""
    if response.status_code < 400:
        return response
    try:
        error = response.json()["error"]
        code, message, details = error["code"], error["message"], error.get("details") or {}
    except (ValueError, KeyError, TypeError):
        code, message, details = "error", f"HTTP {response.status_code}", {}
    cls = ERRORS.get(code, errors.MemvaultError)
    if issubclass(cls, errors.FieldError):  # built from its field, as the server built it
        field = str(details.get("field", "request"))
        raise cls(field, message.removeprefix(f"{field}: "))
    raise cls(message, details=details)


# -- the endpoints, once -----------------------------------------------------------------------


def _q(segment: str) -> str:
    return quote(segment, safe="")


def _user(user_id: str) -> str:
    return f"/v1/users/{_q(user_id)}"


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime | date) else value


def _ping() -> Call[None]:
    return Call("GET", "/readyz", _nothing)


def _put_user(user_id: str, profile: Mapping[str, Any] | None = None) -> Call[User]:
    return Call("PUT", _user(user_id), _one(User), json={"profile": dict(profile or {})})


def _get_user(user_id: str) -> Call[User]:
    return Call("GET", _user(user_id), _one(User))


def _list_users(
    *, limit: int = 50, after: str | None = None, prefix: str | None = None
) -> Call[list[User]]:
    """As `Vault.list_users` (an admin key's): the API's cursor is the last page's last id."""
    params = _drop_none({"limit": limit, "cursor": after, "prefix": prefix})
    return Call("GET", "/v1/users", _items(User), params=params)


def _delete_user(user_id: str) -> Call[None]:
    return Call("DELETE", _user(user_id), _nothing)


def _stats(user_id: str) -> Call[dict[str, Any]]:
    return Call("GET", f"{_user(user_id)}/stats", _json)


def _export_user(user_id: str) -> Call[dict[str, Any]]:
    return Call("GET", f"{_user(user_id)}/export", _json)


def _import_user(data: Mapping[str, Any], *, user_id: str) -> Call[User]:
    return Call("POST", f"{_user(user_id)}/import", _one(User), json=dict(data))


def _clear(user_id: str, *, channel: str | None = None) -> Call[int]:
    return Call(
        "POST", f"{_user(user_id)}/clear", lambda r: int(r.json()["deleted"]),
        json={"channel": channel},
    )  # fmt: skip


def _read_handshake(response: httpx.Response) -> Handshake:
    data = response.json()
    return Handshake(from_dict(Agent, data["agent"]), data["key"], data["key_id"])


def _handshake(
    name: str, description: str | None = None, *, user_id: str | None = None
) -> Call[Handshake]:
    body = _drop_none({"name": name, "description": description, "user_id": user_id})
    return Call("POST", "/v1/handshake", _read_handshake, json=body)


def _list_agents(user_id: str) -> Call[list[Agent]]:
    return Call("GET", f"{_user(user_id)}/agents", _items(Agent))


def _turns_path(user_id: str, session_id: str) -> str:
    return f"{_user(user_id)}/sessions/{_q(session_id)}/turns"


def _add_turn(user_id: str, session_id: str, role: str, content: str, **fields: Any) -> Call[Turn]:
    body = {"role": role, "content": content, **{k: _jsonable(v) for k, v in fields.items()}}
    return Call("POST", _turns_path(user_id, session_id), _one(Turn), json=body)


def _add_turns(
    user_id: str, session_id: str, turns: Iterable[Mapping[str, Any]]
) -> Call[list[Turn]]:
    body = [{k: _jsonable(v) for k, v in t.items()} for t in turns]
    return Call("POST", _turns_path(user_id, session_id), _items(Turn), json=body)


def _get_session(user_id: str, session_id: str) -> Call[Session]:
    return Call("GET", f"{_user(user_id)}/sessions/{_q(session_id)}", _one(Session))


def _list_sessions(
    user_id: str,
    *,
    limit: int = 50,
    before: datetime | str | None = None,
    before_id: str | None = None,
) -> Call[list[Session]]:
    """As `Vault.list_sessions`: the API's cursor is the time and, when given, the id."""
    cursor = _jsonable(before)
    if cursor is not None and before_id is not None:
        cursor = f"{cursor}/{before_id}"
    params = _drop_none({"limit": limit, "cursor": cursor})
    return Call("GET", f"{_user(user_id)}/sessions", _items(Session), params=params)


def _session_turns(
    user_id: str, session_id: str, *, after_seq: int = 0, limit: int = 100
) -> Call[list[Turn]]:
    params = {"cursor": str(after_seq), "limit": limit}
    return Call("GET", _turns_path(user_id, session_id), _items(Turn), params=params)


def _update_session(user_id: str, session_id: str, **fields: Any) -> Call[Session]:
    path = f"{_user(user_id)}/sessions/{_q(session_id)}"
    return Call("PATCH", path, _one(Session), json=_drop_none(fields))


def _delete_session(user_id: str, session_id: str) -> Call[None]:
    return Call("DELETE", f"{_user(user_id)}/sessions/{_q(session_id)}", _nothing)


def _add_memory(
    user_id: str, text: str, *, kind: str = "fact", tier: str = "long_term", **fields: Any
) -> Call[Memory]:
    body = {"text": text, "kind": kind, "tier": tier}
    body.update({k: _jsonable(v) for k, v in fields.items()})
    return Call("POST", f"{_user(user_id)}/memories", _one(Memory), json=body)


def _memory_path(user_id: str, memory_id: str) -> str:
    return f"{_user(user_id)}/memories/{_q(memory_id)}"


def _get_memory(user_id: str, memory_id: str) -> Call[Memory]:
    return Call("GET", _memory_path(user_id, memory_id), _one(Memory))


def _update_memory(user_id: str, memory_id: str, **fields: Any) -> Call[Memory]:
    body = {k: _jsonable(v) for k, v in fields.items()}
    return Call("PATCH", _memory_path(user_id, memory_id), _one(Memory), json=body)


def _move_memory(
    user_id: str, memory_id: str, *, tier: str | None = None, kind: str | None = None
) -> Call[Memory]:
    return _update_memory(user_id, memory_id, **_drop_none({"tier": tier, "kind": kind}))


def _supersede_memory(user_id: str, memory_id: str, text: str, **fields: Any) -> Call[Memory]:
    """Replace a memory that no longer holds: answers the new one. The old one is kept, its
    `valid_to` set and `superseded_by` naming the new one; fields not given are inherited."""
    body = {"text": text, **{k: _jsonable(v) for k, v in fields.items()}}
    return Call("POST", f"{_memory_path(user_id, memory_id)}/supersede", _one(Memory), json=body)


def _delete_memory(user_id: str, memory_id: str) -> Call[None]:
    return Call("DELETE", _memory_path(user_id, memory_id), _nothing)


def _list_memories(
    user_id: str,
    *,
    kinds: Iterable[str] | None = None,
    tiers: Iterable[str] | None = None,
    agent_id: str | None = None,
    category: str | None = None,
    tags: Iterable[str] | None = None,
    pinned: bool | None = None,
    include_superseded: bool = True,
    include_expired: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> Call[list[Memory]]:
    params = _drop_none({
        "kind": list(kinds or []), "tier": list(tiers or []), "tag": list(tags or []),
        "agent_id": agent_id, "category": category,
        "pinned": None if pinned is None else str(pinned).lower(),
        "include_superseded": str(include_superseded).lower(),
        "include_expired": str(include_expired).lower(), "limit": limit, "cursor": str(offset),
    })  # fmt: skip
    return Call("GET", f"{_user(user_id)}/memories", _items(Memory), params=params)


def _search(user_id: str, query: str, **options: Any) -> Call[list[Hit]]:
    """Options as `Vault.search`: limit, types, kinds, tiers, session_id, channel, since, ..."""
    body = {"query": query, **{k: _jsonable(v) for k, v in options.items()}}
    return Call("POST", f"{_user(user_id)}/search", _items(Hit), json=body)


def _context(user_id: str, query: str, **options: Any) -> Call[Context]:
    """Options as `Vault.context`: session_id, token_budget, channel_limits, now, min_score,
    asked_by, min_relative_score."""
    body = {"query": query, **{k: _jsonable(v) for k, v in options.items()}}
    return Call("POST", f"{_user(user_id)}/context", _one(Context), json=body)


def _whoami() -> Call[dict[str, str | None]]:
    """The token's `{"scope", "user_id", "agent_id"}` (`user_id` is None for an admin key)."""
    return Call("GET", "/v1/whoami", _json)


def _set_global_context(key: str, text: str) -> Call[GlobalContextEntry]:
    path = f"/v1/global-context/{_q(key)}"
    return Call("PUT", path, _one(GlobalContextEntry), json={"text": text})


def _list_global_context() -> Call[list[GlobalContextEntry]]:
    return Call("GET", "/v1/global-context", _items(GlobalContextEntry))


def _delete_global_context(key: str) -> Call[None]:
    return Call("DELETE", f"/v1/global-context/{_q(key)}", _nothing)


def _read_new_key(response: httpx.Response) -> tuple[ApiKey, str]:
    data = response.json()
    return from_dict(ApiKey, data), data["key"]


def _create_key(
    scope: str, user_id: str | None = None, agent_id: str | None = None, name: str | None = None
) -> Call[tuple[ApiKey, str]]:
    body = _drop_none({"scope": scope, "user_id": user_id, "agent_id": agent_id, "name": name})
    return Call("POST", "/v1/keys", _read_new_key, json=body)


def _list_keys(*, include_revoked: bool = False) -> Call[list[ApiKey]]:
    params = {"include_revoked": str(include_revoked).lower()}
    return Call("GET", "/v1/keys", _items(ApiKey), params=params)


def _revoke_key(key_id: str) -> Call[None]:
    return Call("DELETE", f"/v1/keys/{_q(key_id)}", _nothing)


# -- the two clients -----------------------------------------------------------------------------


class endpoint(Generic[P, T]):
    """Makes a `Call` builder a method: blocking on `MemvaultClient`, awaitable on the async one."""

    def __init__(self, build: Callable[P, Call[T]]) -> None:
        self.build = build
        self.__doc__ = build.__doc__

    @overload
    def __get__(self, client: MemvaultClient, owner: type | None = None) -> Callable[P, T]: ...
    @overload
    def __get__(
        self, client: AsyncMemvaultClient, owner: type | None = None
    ) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, client: _Client, owner: type | None = None) -> Callable[P, Any]:
        build = self.build

        def bound(*args: P.args, **kwargs: P.kwargs) -> Any:
            return client.send(build(*args, **kwargs))

        return bound


class _Client:
    """The methods both clients share; each subclass says only how a `Call` is sent."""

    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def send(self, call: Call[Any]) -> Any:
        raise NotImplementedError

    ping = endpoint(_ping)
    put_user = endpoint(_put_user)
    get_user = endpoint(_get_user)
    list_users = endpoint(_list_users)
    delete_user = endpoint(_delete_user)
    stats = endpoint(_stats)
    export_user = endpoint(_export_user)
    import_user = endpoint(_import_user)
    clear = endpoint(_clear)
    handshake = endpoint(_handshake)
    list_agents = endpoint(_list_agents)
    add_turn = endpoint(_add_turn)
    add_turns = endpoint(_add_turns)
    get_session = endpoint(_get_session)
    list_sessions = endpoint(_list_sessions)
    session_turns = endpoint(_session_turns)
    update_session = endpoint(_update_session)
    delete_session = endpoint(_delete_session)
    add_memory = endpoint(_add_memory)
    get_memory = endpoint(_get_memory)
    update_memory = endpoint(_update_memory)
    move_memory = endpoint(_move_memory)
    supersede_memory = endpoint(_supersede_memory)
    delete_memory = endpoint(_delete_memory)
    list_memories = endpoint(_list_memories)
    search = endpoint(_search)
    context = endpoint(_context)
    whoami = endpoint(_whoami)
    set_global_context = endpoint(_set_global_context)
    list_global_context = endpoint(_list_global_context)
    delete_global_context = endpoint(_delete_global_context)
    create_key = endpoint(_create_key)
    list_keys = endpoint(_list_keys)
    revoke_key = endpoint(_revoke_key)


class MemvaultClient(_Client):
    """Blocking client: `with MemvaultClient(url, key) as mv: mv.add_turn(...)`."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        super().__init__(base_url, api_key)
        self._http = httpx.Client(base_url=base_url, headers=self.headers, timeout=timeout)

    def send(self, call: Call[T]) -> T:
        response = self._http.request(call.method, call.path, json=call.json, params=call.params)
        return call.parse(raise_for_error(response))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MemvaultClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncMemvaultClient(_Client):
    """Asyncio client: `async with AsyncMemvaultClient(url, key) as mv: await mv.add_turn(...)`."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        super().__init__(base_url, api_key)
        self._http = httpx.AsyncClient(base_url=base_url, headers=self.headers, timeout=timeout)

    async def send(self, call: Call[T]) -> T:
        response = await self._http.request(
            call.method, call.path, json=call.json, params=call.params
        )
        return call.parse(raise_for_error(response))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncMemvaultClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
