"""Request bodies. Field names are `Vault`'s; `Vault` does the real checks (sizes, enums), these
models give the OpenAPI document its shapes and reject unknown fields early."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from memvault.mind.context import MIN_RELATIVE_SCORE


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def fields(self) -> dict[str, Any]:
        """Only what the caller sent: `Vault` keeps its defaults for the rest."""
        return self.model_dump(exclude_unset=True)


class UserIn(Body):
    profile: dict[str, Any] = {}


class ClearIn(Body):
    channel: str | None = None


class ConsolidateIn(Body):
    now: datetime | None = None


class TurnIn(Body):
    role: str
    content: str = ""
    id: str | None = None
    speaker: str | None = None
    channel: str | None = None
    modality: str | None = None
    created_at: datetime | None = None
    metadata: dict[str, Any] | None = None
    tool_calls: Any = None
    tool_result: Any = None
    intent: str | None = None
    confidence: float | None = None
    entities: Any = None
    agent_id: str | None = None
    audio_ref: str | None = None
    audio_duration: float | None = None


class SessionPatch(Body):
    title: str | None = None
    summary: str | None = None
    kind: str | None = None
    intent: str | None = None
    confidence: float | None = None
    entities: Any = None
    metadata: dict[str, Any] | None = None


class MemoryFields(Body):
    category: str | None = None
    importance: float | None = None
    valence: float | None = None
    tags: list[str] | None = None
    source_turn_ids: list[str] | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    superseded_by: str | None = None
    pinned: bool | None = None
    expires_at: datetime | None = None
    agent_id: str | None = None
    metadata: dict[str, Any] | None = None


class MemoryIn(MemoryFields):
    text: str
    kind: str = "fact"
    tier: str = "long_term"
    created_at: datetime | None = None


class MemoryPatch(MemoryFields):
    """Edit text and fields, or move the memory: a new `tier` or `kind`."""

    text: str | None = None
    kind: str | None = None
    tier: str | None = None


class MemorySupersede(MemoryFields):
    """The successor of a memory that no longer holds; unset fields are inherited from it."""

    text: str
    kind: str | None = None
    tier: str | None = None


class HandshakeIn(Body):
    name: str
    description: str | None = None
    user_id: str | None = None  # admin keys name the user; a user key's own user is implied


class KeyIn(Body):
    scope: str
    user_id: str | None = None
    agent_id: str | None = None
    name: str | None = None


class GlobalContextIn(Body):
    text: str


class MemoryQuery(Body):
    """Filters of `GET .../memories`, as query parameters."""

    kind: list[str] | None = None
    tier: list[str] | None = None
    tag: list[str] | None = None
    agent_id: str | None = None
    category: str | None = None
    pinned: bool | None = None
    include_superseded: bool = True
    include_expired: bool = False
    limit: int = Field(100, ge=1, le=1000)
    cursor: str | None = None


def _one_or_many(value: Any) -> str:
    return "turns" if isinstance(value, list) else "turn"


# One turn or a list. The discriminator validates only the matching shape, so a 422 names
# `turn.role` or `turns[2].role` instead of listing both alternatives.
TurnsIn = Annotated[
    Annotated[TurnIn, Tag("turn")] | Annotated[list[TurnIn], Tag("turns")],
    Discriminator(_one_or_many),
]


class SearchIn(Body):
    query: str
    limit: int = 10
    types: list[str] | None = None
    kinds: list[str] | None = None
    tiers: list[str] | None = None
    session_id: str | None = None
    agent_id: str | None = None
    channel: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    tags: list[str] | None = None
    now: datetime | None = None  # "last week" is resolved against this moment
    min_score: float | None = None
    explain: bool = False
    asked_by: str | None = None  # "user", "assistant" or a speaker: whom "I" and "you" mean


class ContextIn(Body):
    query: str
    session_id: str | None = None
    token_budget: int = 2000
    channel_limits: dict[str, int] | None = None
    now: datetime | None = None
    min_score: float = 0.2
    asked_by: str | None = None
    min_relative_score: float = MIN_RELATIVE_SCORE
