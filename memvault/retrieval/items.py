"""What the index holds per turn or memory: the text to show, the keys to match, the filters.

Turns and memories differ in shape; ranking and filtering treat them alike through `Item`.
A turn is keyed with its speaker folded in ("Caroline: I went to ..."), because people ask
about who said or did something, and an image shared in a turn is keyed by its caption.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from memvault.model import Memory, Turn

TURN = "turn"
MEMORY = "memory"
ITEM_TYPES = (TURN, MEMORY)


@dataclass(frozen=True, slots=True)
class Item:
    type: str
    id: str
    text: str
    created_at: datetime
    session_id: str | None = None
    seq: int = 0
    role: str | None = None
    speaker: str | None = None
    channel: str | None = None
    agent_id: str | None = None
    kind: str | None = None
    tier: str | None = None
    tags: tuple[str, ...] = ()
    importance: float = 0.0
    access_count: int = 0
    pinned: bool = False
    superseded: bool = False
    expires_at: datetime | None = None
    rev: int = 0  # the user's revision when the row was last written
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The text that is embedded and indexed: speaker, words, and any image caption."""
        caption = self.metadata.get("image_caption") if self.type == TURN else None
        text = f"{self.text} [image: {caption}]" if isinstance(caption, str) else self.text
        return f"{self.speaker}: {text}" if self.speaker else text

    def nbytes(self) -> int:
        return 200 + 2 * len(self.text) + 64 * len(self.metadata)


def item_from_turn(turn: Turn, rev: int = 0) -> Item:
    return Item(
        type=TURN,
        id=turn.id,
        text=turn.content,
        created_at=turn.created_at,
        session_id=turn.session_id,
        seq=turn.seq,
        role=turn.role.value,
        speaker=turn.speaker,
        channel=turn.channel.value,
        agent_id=turn.agent_id,
        rev=rev,
        metadata=turn.metadata,
    )


def item_from_memory(memory: Memory, rev: int = 0) -> Item:
    return Item(
        type=MEMORY,
        id=memory.id,
        text=memory.text,
        created_at=memory.created_at,
        agent_id=memory.agent_id,
        kind=memory.kind.value,
        tier=memory.tier.value,
        tags=memory.tags,
        importance=memory.importance,
        access_count=memory.access_count,
        pinned=memory.pinned,
        superseded=memory.superseded_by is not None,
        expires_at=memory.expires_at,
        rev=rev,
        metadata=memory.metadata,
    )
