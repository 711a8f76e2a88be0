"""Vault events across processes: PostgreSQL NOTIFY out, LISTEN in, the local EventBus on both ends.

Every process sharing a PostgreSQL database runs one relay per `Vault`. Local events (published
after their write committed) go out with NOTIFY; events from other processes come in on a
listening connection and are republished on the local bus, so the WebSocket hub and every other
subscriber see all writes without knowing where they happened. Payloads carry the event's ids,
never content: a receiver loads what it needs through `Vault`, in the user's scope. Each relay
stamps its events with a random origin and drops its own when they come back; a remote event
(`Event.remote`) being republished is never sent out again.

NOTIFY is fire-and-forget: events sent while a listener is reconnecting are missed. That is
fine for live updates; anything that must not be missed (search caches) checks the user's
revision in the database instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import uuid
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier

from memvault.events import Event, EventBus
from memvault.store.database import Database
from memvault.store.postgres import PostgresDatabase

log = logging.getLogger(__name__)

MAX_PAYLOAD = 7900  # PostgreSQL refuses NOTIFY payloads of 8000 bytes and more
_POLL_SECONDS = 0.25
_RECONNECT_SECONDS = 1.0


class PostgresRelay:
    """Bridges one `EventBus` to the events channel of its database and schema."""

    def __init__(self, db: PostgresDatabase, bus: EventBus) -> None:
        self._db = db
        self._bus = bus
        self.origin = uuid.uuid4().hex
        with db.connection() as conn:
            row = conn.execute("SELECT current_schema() AS s").fetchone()
        schema = str(row["s"] if row else "public")
        # One channel per schema: deployments sharing a database in separate schemas stay apart.
        self.channel = "memvault_events_" + hashlib.sha256(schema.encode()).hexdigest()[:16]
        self._stop = threading.Event()
        self._outbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._listener: psycopg.Connection[Any] | None = self._listen_connection()
        self._threads = [
            threading.Thread(target=self._listen, name="memvault-relay-in", daemon=True),
            threading.Thread(target=self._send_queued, name="memvault-relay-out", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        self._unsubscribe = bus.subscribe(self._queue)

    def _listen_connection(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self._db.url, autocommit=True)
        conn.execute(SQL("LISTEN {}").format(Identifier(self.channel)))
        return conn

    def _queue(self, event: Event) -> None:
        """Hand the event to the sender thread: a write never waits for NOTIFY."""
        if event.remote:
            return
        message = {"origin": self.origin, "type": event.type, "user_id": event.user_id,
                   "ids": event.ids}  # fmt: skip
        payload = json.dumps(message, separators=(",", ":"), default=str)
        if len(payload.encode()) > MAX_PAYLOAD:
            message["ids"] = {"truncated": True}
            payload = json.dumps(message, separators=(",", ":"))
        self._outbox.put(payload)

    def _send_queued(self) -> None:
        """Send queued events in order, all that have piled up in one transaction.

        `None` (queued by `close`, after which nothing else is queued) ends the loop.
        """
        while (first := self._outbox.get()) is not None:
            batch, stopping = [first], False
            while not stopping and not self._outbox.empty():
                item = self._outbox.get()
                stopping = item is None
                if item is not None:
                    batch.append(item)
            self._notify(batch)
            if stopping:
                return

    def _notify(self, batch: list[str]) -> None:
        """One NOTIFY per event, each committing on its own, pipelined in one round trip."""
        try:
            with self._db.connection() as conn, conn.cursor() as cur:
                cur.executemany("SELECT pg_notify(%s, %s)", [(self.channel, p) for p in batch])
        except psycopg.Error as exc:
            log.warning("event relay dropped %d event(s): %s", len(batch), type(exc).__name__)

    def _receive(self, payload: str) -> None:
        try:
            message = json.loads(payload)
            event = Event(
                str(message["type"]), str(message["user_id"]), dict(message["ids"]), remote=True
            )
        except (ValueError, KeyError, TypeError):
            log.warning("event relay skipped a malformed notification")
            return
        if message.get("origin") == self.origin:
            return
        self._bus.publish(event)

    def _listen(self) -> None:
        while not self._stop.is_set():
            try:
                if self._listener is None:
                    self._listener = self._listen_connection()
                for note in self._listener.notifies(timeout=_POLL_SECONDS):
                    self._receive(note.payload)
            except psycopg.Error as exc:
                log.warning(
                    "event relay lost its connection (%s); reconnecting", type(exc).__name__
                )
                self._drop_listener()
                self._stop.wait(_RECONNECT_SECONDS)

    def _drop_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def close(self) -> None:
        """Stop listening; events already queued are still sent."""
        self._unsubscribe()
        self._stop.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join()
        self._drop_listener()


def open_relay(db: Database, bus: EventBus) -> PostgresRelay | None:
    """A relay when the database is shared (PostgreSQL); None for SQLite, which is one process."""
    return PostgresRelay(db, bus) if isinstance(db, PostgresDatabase) else None
