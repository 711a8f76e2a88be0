"""Change events published by `Vault` after each committed write.

Events carry ids, never content: a subscriber that needs the text loads it through `Vault`, in the
right user scope. The WebSocket hub subscribes here; the PostgreSQL backend relays the same events
between processes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """What changed, by id. Memory events also name the memory's `agent_id` (None for the
    user's own): subscribers that serve agent-scoped keys filter on it without a read."""

    type: str  # turn.added, memory.added|updated|deleted, session.updated|deleted, user.deleted
    user_id: str
    ids: dict[str, Any] = field(default_factory=dict)
    # written by another process and relayed here (`memvault.relay`): the same event as the
    # writer's own, so it compares equal to it
    remote: bool = field(default=False, compare=False)
    # made by consolidation, memvault's own upkeep, rather than by a caller
    upkeep: bool = field(default=False, compare=False)


Listener = Callable[[Event], None]


class EventBus:
    """In-process fan-out. A failing listener is logged and skipped: it never fails a write."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def publish(self, event: Event) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception as exc:  # logged by type only: no stack, nothing of the user's
                log.error("event listener failed for %s: %s", event.type, type(exc).__name__)
