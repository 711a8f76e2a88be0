"""The store: portable SQL over sealed rows, for any `Database` (SQLite, PostgreSQL).

The store never sees plaintext: `Vault` seals user fields before they arrive and opens them after
they leave. Every method takes the user scope first and every statement filters on it. Each write
bumps the user's revision inside its own transaction and stamps the rows it touches with it
(`rev`), so a per-user cache can ask for exactly what changed since it last looked.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from memvault.errors import Conflict, NotFound
from memvault.store.database import (
    ChangeSet,
    Database,
    PlanOutdated,
    Row,
    Statement,
    Transaction,
    TurnGroup,
    Unlearning,
    retried,
)
from memvault.store.migrations import migrate

USER_COLUMNS = ("id", "profile", "revision", "created_at", "updated_at")
AGENT_COLUMNS = ("user_id", "id", "name", "description", "created_at")
SESSION_COLUMNS = (
    "user_id", "id", "kind", "agent_id", "title", "summary", "intent", "confidence", "entities",
    "metadata", "turn_count", "last_seq", "last_turn_at", "created_at", "updated_at",
)  # fmt: skip
TURN_COLUMNS = (
    "user_id", "id", "session_id", "seq", "role", "channel", "modality", "speaker", "content",
    "audio_ref", "audio_duration", "tool_calls", "tool_result", "intent", "confidence",
    "entities", "metadata", "agent_id", "created_at", "rev",
)  # fmt: skip
MEMORY_COLUMNS = (
    "user_id", "id", "kind", "tier", "text", "category", "importance", "valence", "tags",
    "source_turn_ids", "valid_from", "valid_to", "superseded_by", "pinned", "access_count",
    "last_accessed_at", "expires_at", "agent_id", "metadata", "created_at", "updated_at", "rev",
)  # fmt: skip
API_KEY_COLUMNS = (
    "id", "secret_hash", "prefix", "scope", "user_id", "agent_id", "name", "created_at",
    "revoked_at",
)  # fmt: skip
SESSION_FIELDS = frozenset(
    {"kind", "title", "summary", "intent", "confidence", "entities", "metadata", "agent_id"}
)
MEMORY_FIELDS = frozenset(MEMORY_COLUMNS) - {"user_id", "id", "created_at", "rev"}


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"


def _values(row: Row, columns: Sequence[str]) -> tuple[Any, ...]:
    return tuple(row.get(c) for c in columns)


def _in(values: Sequence[Any]) -> str:
    return "(" + ", ".join("?" for _ in values) + ")"


class _WrittenMeanwhile(Exception):
    """A conditional update found the row changed: raised to roll its transaction back."""


def _unchanged_since(if_updated_at: str | None) -> tuple[str, tuple[str, ...]]:
    """What a conditional update adds to its `WHERE` (and its parameters): the row still has
    the `updated_at` its caller read. Nothing when the update is unconditional (None)."""
    if if_updated_at is None:
        return "", ()
    return " AND updated_at = ?", (if_updated_at,)


class SqlStore:
    """Implements the `Store` protocol in portable SQL with `?` placeholders.

    Each method is one transaction and nothing else, so it is `retried`: run again when the
    database rolls it back on its own (a deadlock, a connection lost mid-statement). A read
    qualifies as much as a write: running it again changes nothing.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        migrate(db)

    def close(self) -> None:
        self.db.close()

    def ping(self) -> None:
        self.db.ping()

    # -- users ---------------------------------------------------------------------------------

    @staticmethod
    def _touch(user_id: str, now: str) -> Statement:
        """The statement that creates the user if new and bumps its revision, returning it.

        One statement, so it costs one round trip and locks the user's row either way. A new
        user's revisions start at the clock in microseconds (`base_revision`), not at 0: a user
        deleted and made again under the same id then never reuses a revision, and a cache
        holding the old incarnation (in any process) sees its revision fall below the base and
        rebuilds instead of topping up deleted content.
        """
        base = time.time_ns() // 1000
        return (
            "INSERT INTO users (id, revision, base_revision, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE "
            "SET revision = users.revision + 1, updated_at = excluded.updated_at "
            "RETURNING revision",
            (user_id, base + 1, base, now, now),
        )

    @staticmethod
    def _touch_user(tx: Transaction, user_id: str, now: str) -> int:
        """Create the user if new, bump its revision, and return the new revision."""
        row = tx.one(*SqlStore._touch(user_id, now))
        assert row is not None
        return int(row["revision"])

    @staticmethod
    def _bump_sql(user_id: str, now: str) -> Statement:
        """The statement that bumps an existing user's revision (locking the row), returning it."""
        return (
            "UPDATE users SET revision = revision + 1, updated_at = ? WHERE id = ? "
            "RETURNING revision",
            (now, user_id),
        )

    @staticmethod
    def _bump(tx: Transaction, user_id: str, now: str) -> int:
        row = tx.one(*SqlStore._bump_sql(user_id, now))
        if row is None:
            raise NotFound("no such user")
        return int(row["revision"])

    @staticmethod
    def _exists(tx: Transaction, table: str, user_id: str, row_id: str) -> bool:
        sql = f"SELECT id FROM {table} WHERE user_id = ? AND id = ?"
        return tx.one(sql, (user_id, row_id)) is not None

    def revision(self, user_id: str) -> int:
        return self.revision_and_recalls(user_id)[0]

    @retried
    def revision_and_recalls(self, user_id: str) -> tuple[int, int]:
        """The user's revision and count of recalls (0, 0 for no such user): what a cached
        search index is current against. Recalls move no revision, and read here they cost
        nothing more than the revision alone."""
        rows = self.db.query("SELECT revision, accessed FROM users WHERE id = ?", (user_id,))
        return (0, 0) if not rows else (int(rows[0]["revision"]), int(rows[0]["accessed"]))

    @retried
    def get_user(self, user_id: str) -> Row | None:
        with self.db.read() as tx:
            return tx.one("SELECT * FROM users WHERE id = ?", (user_id,))

    @retried
    def put_user(self, user_id: str, profile: bytes | None, now: str) -> Row:
        with self.db.write() as tx:
            _, row = tx.ones(
                [
                    self._touch(user_id, now),
                    ("UPDATE users SET profile = ? WHERE id = ? RETURNING *", (profile, user_id)),
                ]
            )
        assert row is not None
        return row

    @retried
    def list_users(self, *, limit: int, after: str | None, prefix: str | None) -> list[Row]:
        """Users by id, after `after`, those whose id starts with `prefix` when given."""
        sql = "SELECT * FROM users WHERE 1 = 1"
        params: list[Any] = []
        if after is not None:
            sql += " AND id > ?"
            params.append(after)
        if prefix:  # no LIKE: "%" and "_" in an id are its own characters
            sql += " AND substr(id, 1, ?) = ?"
            params += [len(prefix), prefix]
        sql += " ORDER BY id LIMIT ?"
        with self.db.read() as tx:
            return tx.all(sql, [*params, limit])

    @retried
    def delete_user(self, user_id: str) -> bool:
        """Delete every row of the user, their API keys and queued jobs included: a user made
        again under the same id starts with nothing of the old one's, not even access."""
        with self.db.write() as tx:
            # Lock the user's row first, as every write does, so concurrent writers queue here.
            tx.execute("UPDATE users SET revision = revision + 1 WHERE id = ?", (user_id,))
            for table in (
                "turns",
                "sessions",
                "memories",
                "agents",
                "tombstones",
                "daily_activity",
                "api_keys",
                "jobs",
            ):
                tx.execute(f"DELETE FROM {table} WHERE user_id = ?", (user_id,))
            return tx.execute("DELETE FROM users WHERE id = ?", (user_id,)) > 0

    # -- agents --------------------------------------------------------------------------------

    @retried
    def insert_agent(self, row: Row, now: str) -> None:
        with self.db.write() as tx:
            self._touch_user(tx, row["user_id"], now)
            tx.execute(_insert_sql("agents", AGENT_COLUMNS), _values(row, AGENT_COLUMNS))

    @retried
    def list_agents(self, user_id: str) -> list[Row]:
        with self.db.read() as tx:
            return tx.all(
                "SELECT * FROM agents WHERE user_id = ? ORDER BY created_at, id", (user_id,)
            )

    # -- sessions and turns --------------------------------------------------------------------

    @retried
    def append_turns(
        self, user_id: str, session_id: str, new_session: Row, turns: Sequence[Row], now: str
    ) -> list[int]:
        """Append turns to a session (created from `new_session` if absent) in one transaction.

        Returns the sequence numbers given to the turns, in order. Sequence numbers come from the
        session row, which the transaction holds locked, so concurrent writers never share one.
        """
        with self.db.write() as tx:
            return self._append_turns(tx, (user_id, session_id, new_session, turns, now))

    @retried
    def append_turn_groups(self, groups: Sequence[TurnGroup]) -> list[list[int]]:
        """Several `append_turns` in one transaction, paying for one commit: all land, or none.

        The server's group commit gathers concurrent appends into one call of this. Groups are
        written in (user, session) order whatever order they come in, so every such transaction
        locks users in the same order and two servers' groups never deadlock on PostgreSQL.
        """
        seqs: list[list[int]] = [[] for _ in groups]
        order = sorted(range(len(groups)), key=lambda i: groups[i][:2])
        with self.db.write() as tx:
            answers = tx.ones([s for i in order for s in self._lock_statements(groups[i])])
            for n, i in enumerate(order):
                seqs[i] = self._write_turns(tx, groups[i], answers[2 * n], answers[2 * n + 1])
        return seqs

    @classmethod
    def _append_turns(cls, tx: Transaction, group: TurnGroup) -> list[int]:
        return cls._write_turns(tx, group, *tx.ones(cls._lock_statements(group)))

    @classmethod
    def _lock_statements(cls, group: TurnGroup) -> list[Statement]:
        """The statements of an append that have answers: the user's new revision, then the
        session's last sequence number (the user's row first, as every write locks it). They
        need nothing from each other, so a backend can send them, for many groups, at once."""
        return [cls._touch(group[0], group[4]), cls._take_seqs(group)]

    @classmethod
    def _write_turns(
        cls, tx: Transaction, group: TurnGroup, user: Row | None, session: Row | None
    ) -> list[int]:
        """Insert the turns and count them, given the answers of `_lock_statements`. Nothing
        waits on these statements: they go out with the next one that has an answer, or the
        commit."""
        user_id, session_id, _, turns, _ = group
        assert user is not None and session is not None
        rev, last = int(user["revision"]), int(session["last_seq"])
        seqs = list(range(last - len(turns) + 1, last + 1))
        tx.send_many(
            _insert_sql("turns", TURN_COLUMNS),
            [
                _values(
                    {**t, "user_id": user_id, "session_id": session_id, "seq": s, "rev": rev},
                    TURN_COLUMNS,
                )
                for t, s in zip(turns, seqs, strict=True)
            ],
        )  # fmt: skip
        cls._count_activity(tx, user_id, Counter(t["created_at"][:10] for t in turns), "turns")
        return seqs

    @staticmethod
    def _take_seqs(group: TurnGroup) -> Statement:
        """The statement that creates the session if new and moves its counters past the
        group's turns, returning the last sequence number taken. It locks the session's row,
        so concurrent writers to one session never share a number."""
        user_id, session_id, new_session, turns, now = group
        latest = max(t["created_at"] for t in turns)
        session = {
            **new_session, "user_id": user_id, "id": session_id, "turn_count": len(turns),
            "last_seq": len(turns), "last_turn_at": latest, "updated_at": now,
        }  # fmt: skip
        return (
            _insert_sql("sessions", SESSION_COLUMNS) + " ON CONFLICT (user_id, id) DO UPDATE "
            "SET last_seq = sessions.last_seq + excluded.last_seq, "
            "turn_count = sessions.turn_count + excluded.turn_count, "
            "updated_at = excluded.updated_at, last_turn_at = CASE "
            "WHEN sessions.last_turn_at IS NULL OR sessions.last_turn_at < excluded.last_turn_at "
            "THEN excluded.last_turn_at ELSE sessions.last_turn_at END "
            "RETURNING last_seq",
            _values(session, SESSION_COLUMNS),
        )

    @staticmethod
    def _count_activity(tx: Transaction, user_id: str, days: Counter[str], column: str) -> None:
        tx.send_many(
            f"INSERT INTO daily_activity (user_id, day, {column}) VALUES (?, ?, ?) "
            f"ON CONFLICT (user_id, day) DO UPDATE "
            f"SET {column} = daily_activity.{column} + excluded.{column}",
            [(user_id, day, n) for day, n in sorted(days.items())],
        )

    @retried
    def get_session(self, user_id: str, session_id: str) -> Row | None:
        with self.db.read() as tx:
            return tx.one(
                "SELECT * FROM sessions WHERE user_id = ? AND id = ?", (user_id, session_id)
            )

    @retried
    def get_session_with_turns(self, user_id: str, session_id: str) -> tuple[Row, list[Row]] | None:
        with self.db.read() as tx:
            session = tx.one(
                "SELECT * FROM sessions WHERE user_id = ? AND id = ?", (user_id, session_id)
            )
            if session is None:
                return None
            turns = tx.all(
                "SELECT * FROM turns WHERE user_id = ? AND session_id = ? ORDER BY seq",
                (user_id, session_id),
            )
        return session, turns

    @retried
    def session_turns(
        self, user_id: str, session_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[Row]:
        with self.db.read() as tx:
            return tx.all(
                "SELECT * FROM turns WHERE user_id = ? AND session_id = ? AND seq > ? "
                "ORDER BY seq LIMIT ?",
                (user_id, session_id, after_seq, limit),
            )

    @retried
    def list_sessions(
        self, user_id: str, *, limit: int, before: str | None, before_id: str | None = None
    ) -> list[Row]:
        sql = "SELECT * FROM sessions WHERE user_id = ?"
        params: list[Any] = [user_id]
        if before is not None and before_id is not None:  # after the page's last, ties and all
            sql += " AND (updated_at < ? OR (updated_at = ? AND id < ?))"
            params += [before, before, before_id]
        elif before is not None:
            sql += " AND updated_at < ?"
            params.append(before)
        sql += " ORDER BY updated_at DESC, id DESC LIMIT ?"
        params.append(limit)
        with self.db.read() as tx:
            return tx.all(sql, params)

    @retried
    def update_session(
        self,
        user_id: str,
        session_id: str,
        fields: Row,
        now: str,
        *,
        if_updated_at: str | None = None,
    ) -> Row | None:
        """Change a session's fields; None when there is no such session, or (`if_updated_at`)
        when it was written since the caller read it at that `updated_at`."""
        unknown = set(fields) - SESSION_FIELDS
        assert not unknown, unknown
        unchanged, condition = _unchanged_since(if_updated_at)
        try:
            with self.db.write() as tx:
                if not self._exists(tx, "sessions", user_id, session_id):
                    return None
                assignments = ", ".join(f"{name} = ?" for name in fields)
                _, row = tx.ones(
                    [
                        self._bump_sql(user_id, now),  # the user's row first, as in every write
                        (
                            f"UPDATE sessions SET {assignments}, updated_at = ? "
                            f"WHERE user_id = ? AND id = ?{unchanged} RETURNING *",
                            (*fields.values(), now, user_id, session_id, *condition),
                        ),
                    ]
                )
                if row is None:  # written meanwhile: the revision's bump goes back with it
                    raise _WrittenMeanwhile
                return row
        except _WrittenMeanwhile:
            return None

    @retried
    def delete_session(
        self, user_id: str, session_id: str, now: str, *, unlearning: Unlearning | None = None
    ) -> bool:
        """Delete the session and its turns, and apply `unlearning` in the same transaction."""
        with self.db.write() as tx:
            if not self._exists(tx, "sessions", user_id, session_id):
                return False
            rev = self._bump(tx, user_id, now)
            self._unlearn(tx, user_id, rev, now, unlearning)
            self._bury_turns(tx, user_id, rev, "session_id = ?", (session_id,))
            tx.send("DELETE FROM turns WHERE user_id = ? AND session_id = ?", (user_id, session_id))
            tx.send("DELETE FROM sessions WHERE user_id = ? AND id = ?", (user_id, session_id))
        return True

    @staticmethod
    def _bury_turns(
        tx: Transaction, user_id: str, rev: int, where: str, params: Sequence[Any]
    ) -> None:
        """Record tombstones for the turns about to be deleted, so caches can drop them."""
        tx.send(
            "INSERT INTO tombstones (user_id, item_type, item_id, rev) "
            f"SELECT user_id, 'turn', id, ? FROM turns WHERE user_id = ? AND {where} "
            "ON CONFLICT (user_id, item_type, item_id) DO UPDATE SET rev = excluded.rev",
            (rev, user_id, *params),
        )

    @classmethod
    def _unlearn(
        cls, tx: Transaction, user_id: str, rev: int, now: str, unlearning: Unlearning | None
    ) -> None:
        """Delete the facts `unlearning` takes and relink those it puts back, before the turns
        go: only if the user's facts, and the source turns it found, are as it was planned over
        (`PlanOutdated` otherwise, rolling the whole transaction back)."""
        if unlearning is None:
            return
        sources = unlearning.sources
        located: Statement = (
            (f"SELECT COUNT(*) AS n FROM turns WHERE user_id = ? AND id IN {_in(sources)}",
             (user_id, *sources))
            if sources
            else ("SELECT 0 AS n", ())
        )  # fmt: skip
        facts, found = tx.ones(
            [
                (
                    "SELECT COUNT(*) AS n, COALESCE(MAX(rev), 0) AS top FROM memories "
                    "WHERE user_id = ? AND kind = ?",
                    (user_id, "fact"),
                ),
                located,
            ]
        )
        assert facts is not None and found is not None
        if (facts["n"], facts["top"]) != unlearning.facts or found["n"] != len(sources):
            raise PlanOutdated
        for memory_id in unlearning.deleted:
            cls._bury_memory(tx, user_id, memory_id, rev)
        tx.send_many(
            "UPDATE memories SET superseded_by = ?, valid_to = ?, updated_at = ?, rev = ? "
            "WHERE user_id = ? AND id = ?",
            [(after, ends, now, rev, user_id, memory_id)
             for memory_id, after, ends in unlearning.relinked],
        )  # fmt: skip

    @retried
    def locate_turns(self, user_id: str, turn_ids: Sequence[str]) -> list[Row]:
        """The `id`, `session_id` and `channel` of those of `turn_ids` that exist."""
        if not turn_ids:
            return []
        with self.db.read() as tx:
            return tx.all(
                "SELECT id, session_id, channel FROM turns "
                f"WHERE user_id = ? AND id IN {_in(turn_ids)}",
                (user_id, *turn_ids),
            )

    @retried
    def recent_turns(
        self, user_id: str, *, session_id: str | None, channel: str | None, limit: int
    ) -> list[Row]:
        """The newest `limit` turns, newest first."""
        sql = "SELECT * FROM turns WHERE user_id = ?"
        params: list[Any] = [user_id]
        if session_id is not None:
            sql += " AND session_id = ?"
            params.append(session_id)
        if channel is not None:
            sql += " AND channel = ?"
            params.append(channel)
        order = "seq DESC" if session_id is not None else "created_at DESC, id DESC"
        sql += f" ORDER BY {order} LIMIT ?"
        params.append(limit)
        with self.db.read() as tx:
            return tx.all(sql, params)

    @retried
    def clear_turns(
        self,
        user_id: str,
        channel: str | None,
        now: str,
        *,
        unnoted: Sequence[tuple[str, str, bytes | None]] = (),
        unlearning: Unlearning | None = None,
    ) -> int:
        """Delete the user's turns (of one channel, or all) and the sessions left empty, and
        apply `unlearning` in the same transaction.

        A session that keeps turns of another channel loses its summary, which may quote the
        deleted ones. `unnoted` gives, for sessions whose metadata notes what a summary covers,
        (session id, `updated_at` as the caller read it, the metadata sealed without that
        note): those of them that lose turns take it, unless written since the caller read
        them (then their own metadata stays; without a summary, a note decides nothing)."""
        where, params = ("channel = ?", (channel,)) if channel else ("1 = 1", ())
        losing = f"id IN (SELECT session_id FROM turns WHERE user_id = ? AND {where})"
        with self.db.write() as tx:
            if tx.one("SELECT id FROM users WHERE id = ?", (user_id,)) is None:
                return 0
            rev = self._bump(tx, user_id, now)
            self._unlearn(tx, user_id, rev, now, unlearning)
            for session_id, read_at, metadata in unnoted:
                tx.send(
                    f"UPDATE sessions SET metadata = ? WHERE user_id = ? AND id = ? "
                    f"AND updated_at = ? AND {losing}",
                    (metadata, user_id, session_id, read_at, user_id, *params),
                )
            tx.send(
                f"UPDATE sessions SET summary = NULL WHERE user_id = ? AND {losing}",
                (user_id, user_id, *params),
            )
            self._bury_turns(tx, user_id, rev, where, params)
            deleted = tx.execute(
                f"DELETE FROM turns WHERE user_id = ? AND {where}", (user_id, *params)
            )
            tx.execute(
                "UPDATE sessions SET turn_count = (SELECT COUNT(*) FROM turns t "
                "WHERE t.user_id = sessions.user_id AND t.session_id = sessions.id) "
                "WHERE user_id = ?",
                (user_id,),
            )
            tx.execute("DELETE FROM sessions WHERE user_id = ? AND turn_count = 0", (user_id,))
        return deleted

    # -- memories ------------------------------------------------------------------------------

    @retried
    def insert_memory(self, row: Row, now: str, *, supersedes: str | None = None) -> str | None:
        """Insert a memory; with `supersedes`, close that memory's validity in the same commit.

        The old memory keeps its text: it is superseded (valid_to, superseded_by), not lost.
        Returns the superseded memory's `agent_id` (None without one), so the caller can name
        its owner in an event without reading it back.
        """
        owner = None
        with self.db.write() as tx:
            rev = self._touch_user(tx, row["user_id"], now)
            if supersedes is not None:
                # closed now, or where it starts if it holds only from later on: a validity
                # never ends before it begins (timestamps are fixed-width text, so compare)
                closed = tx.one(
                    "UPDATE memories SET valid_to = CASE WHEN valid_from > ? THEN valid_from "
                    "ELSE ? END, superseded_by = ?, updated_at = ?, rev = ? "
                    "WHERE user_id = ? AND id = ? AND superseded_by IS NULL RETURNING agent_id",
                    (now, now, row["id"], now, rev, row["user_id"], supersedes),
                )
                if closed is None:
                    raise NotFound("no such current memory to supersede")
                owner = closed["agent_id"]
            tx.send(
                _insert_sql("memories", MEMORY_COLUMNS),
                _values({**row, "rev": rev}, MEMORY_COLUMNS),
            )
            self._count_activity(tx, row["user_id"], Counter([row["created_at"][:10]]), "memories")
        return owner

    @retried
    def get_memory(self, user_id: str, memory_id: str) -> Row | None:
        with self.db.read() as tx:
            return tx.one(
                "SELECT * FROM memories WHERE user_id = ? AND id = ?", (user_id, memory_id)
            )

    @retried
    def update_memory(
        self,
        user_id: str,
        memory_id: str,
        fields: Row,
        now: str,
        *,
        if_updated_at: str | None = None,
    ) -> Row | None:
        """Change a memory's fields; None when there is no such memory, or (`if_updated_at`)
        when it was written since the caller read it at that `updated_at`.

        A `superseded_by` is written only while that successor exists, in the same statement:
        a memory pointing to a deleted one would drop out of the current memories for good.
        A successor that is gone (deleted by another writer, say) is `NotFound`, naming the
        field, and nothing is written."""
        unknown = set(fields) - MEMORY_FIELDS
        assert not unknown, unknown
        where, params = _unchanged_since(if_updated_at)
        successor = fields.get("superseded_by")
        if successor is not None:
            where += " AND EXISTS (SELECT 1 FROM memories s WHERE s.user_id = ? AND s.id = ?)"
            params = (*params, user_id, successor)
        try:
            with self.db.write() as tx:
                if not self._exists(tx, "memories", user_id, memory_id):
                    return None
                rev = self._bump(tx, user_id, now)
                assignments = "".join(f"{name} = ?, " for name in fields)
                row = tx.one(
                    f"UPDATE memories SET {assignments}updated_at = ?, rev = ? "
                    f"WHERE user_id = ? AND id = ?{where} RETURNING *",
                    (*fields.values(), now, rev, user_id, memory_id, *params),
                )
                if row is not None:
                    return row
                if successor is not None and not self._exists(tx, "memories", user_id, successor):
                    raise NotFound(
                        "superseded_by: no such memory", details={"field": "superseded_by"}
                    )
                raise _WrittenMeanwhile  # the revision's bump goes back with it
        except _WrittenMeanwhile:
            return None

    @retried
    def delete_memory(self, user_id: str, memory_id: str, now: str) -> Row | None:
        """Delete a memory; returns its `agent_id` (as a row, for the caller's event), or None
        when there was no such memory."""
        with self.db.write() as tx:
            deleted = tx.one(
                "SELECT agent_id FROM memories WHERE user_id = ? AND id = ?", (user_id, memory_id)
            )
            if deleted is None:
                return None
            rev = self._bump(tx, user_id, now)
            self._bury_memory(tx, user_id, memory_id, rev)
        return deleted

    @staticmethod
    def _bury_memory(tx: Transaction, user_id: str, memory_id: str, rev: int) -> None:
        """Delete a memory, recording a tombstone so caches drop it."""
        tx.send(
            "INSERT INTO tombstones (user_id, item_type, item_id, rev) "
            "VALUES (?, 'memory', ?, ?) "
            "ON CONFLICT (user_id, item_type, item_id) DO UPDATE SET rev = excluded.rev",
            (user_id, memory_id, rev),
        )
        tx.send("DELETE FROM memories WHERE user_id = ? AND id = ?", (user_id, memory_id))

    @retried
    def list_memories(
        self,
        user_id: str,
        *,
        kinds: Sequence[str] | None = None,
        tiers: Sequence[str] | None = None,
        agent_id: str | None = None,
        pinned: bool | None = None,
        current_only: bool = False,
        live_at: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Row]:
        """Memories newest first. `current_only` drops superseded ones; `live_at` expired ones."""
        sql = "SELECT * FROM memories WHERE user_id = ?"
        params: list[Any] = [user_id]
        for column, wanted in (("kind", kinds), ("tier", tiers)):
            if wanted:
                sql += f" AND {column} IN {_in(wanted)}"
                params.extend(wanted)
        if agent_id is not None:
            sql += " AND agent_id = ?"
            params.append(agent_id)
        if pinned is not None:
            sql += " AND pinned = ?"
            params.append(int(pinned))
        if current_only:
            sql += " AND superseded_by IS NULL"
        if live_at is not None:
            sql += " AND (expires_at IS NULL OR expires_at > ?)"
            params.append(live_at)
        sql += " ORDER BY created_at DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params.extend((limit, offset))
        with self.db.read() as tx:
            return tx.all(sql, params)

    @retried
    def record_access(self, user_id: str, memory_ids: Sequence[str], now: str) -> int | None:
        """Count a recall; return the user's count of recalls it made (None: nothing written).

        Not a content change: the revision stays, so caches stay warm. The user's count of
        recalls moves instead, and each memory recalled is stamped with it, so that caches
        elsewhere read the counts that moved (`changes_since`)."""
        if not memory_ids:
            return None
        with self.db.write() as tx:
            row = tx.one(
                "UPDATE users SET accessed = accessed + 1 WHERE id = ? RETURNING accessed",
                (user_id,),
            )
            if row is None:  # deleted meanwhile
                return None
            recalls = int(row["accessed"])
            tx.execute(
                "UPDATE memories SET access_count = access_count + 1, last_accessed_at = ?, "
                f"accessed = ? WHERE user_id = ? AND id IN {_in(memory_ids)}",
                (now, recalls, user_id, *memory_ids),
            )
        return recalls

    # -- embeddings ----------------------------------------------------------------------------

    @retried
    def get_embeddings(self, user_id: str, model: str, since_rev: int) -> list[Row]:
        """Stored vectors of `model` for items embedded at a revision after `since_rev`."""
        with self.db.read() as tx:
            return tx.all(
                "SELECT item_type, item_id, rev, vector FROM embeddings "
                "WHERE user_id = ? AND model = ? AND rev > ?",
                (user_id, model, since_rev),
            )

    @retried
    def embedding_extent(self, user_id: str, model: str) -> tuple[int, int]:
        """How many vectors of `model` the user has stored, and the highest item revision among
        them (0 for none): rows written after it have none. Read off an index, no vector."""
        rows = self.db.query(
            "SELECT COUNT(*) AS n, MAX(rev) AS rev FROM embeddings WHERE user_id = ? AND model = ?",
            (user_id, model),
        )
        return (int(rows[0]["n"]), int(rows[0]["rev"] or 0)) if rows else (0, 0)

    @retried
    def put_embeddings(self, user_id: str, model: str, rows: Sequence[Row]) -> None:
        """Store sealed vectors. Not a content change: the user's revision stays."""
        if not rows:
            return
        with self.db.write() as tx:
            tx.executemany(
                "INSERT INTO embeddings (user_id, item_type, item_id, model, rev, vector) "
                "VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (user_id, model, item_type, item_id) "
                "DO UPDATE SET rev = excluded.rev, vector = excluded.vector",
                [
                    (user_id, r["item_type"], r["item_id"], model, r["rev"], r["vector"])
                    for r in rows
                ],
            )

    @retried
    def delete_embeddings(self, user_id: str, items: Sequence[tuple[str, str]]) -> None:
        """Forget the vectors of deleted items, in every model."""
        if not items:
            return
        with self.db.write() as tx:
            tx.executemany(
                "DELETE FROM embeddings WHERE user_id = ? AND item_type = ? AND item_id = ?",
                [(user_id, item_type, item_id) for item_type, item_id in items],
            )

    # -- change feed for caches ----------------------------------------------------------------

    @retried
    def changes_since(self, user_id: str, rev: int, accessed: int) -> ChangeSet:
        """Turns and memories written after `rev`, tombstones after it, the access counts of
        memories recalled after the user's recall count `accessed`, and the user's row and
        agents, whole: what they are called names their turns (`retrieval.index.People`), and
        a new profile or agent moves the revision too. The user's row is read first: its
        counts are then never ahead of the rows read after it.

        `reset` says `rev` belongs to an earlier incarnation of the user (deleted since): the
        caller must drop what it holds; the rows returned are then the whole user.
        """
        with self.db.read() as tx:  # in order, in one round trip where the backend pipelines
            heads, turns, memories, tombstones, agents, recalled = tx.alls(
                [
                    ("SELECT * FROM users WHERE id = ?", (user_id,)),
                    (
                        "SELECT * FROM turns WHERE user_id = ? AND rev > ? ORDER BY created_at, id",
                        (user_id, rev),
                    ),
                    (
                        "SELECT * FROM memories WHERE user_id = ? AND rev > ? "
                        "ORDER BY created_at, id",
                        (user_id, rev),
                    ),
                    (
                        "SELECT item_type, item_id, rev FROM tombstones "
                        "WHERE user_id = ? AND rev > ?",
                        (user_id, rev),
                    ),
                    ("SELECT * FROM agents WHERE user_id = ? ORDER BY id", (user_id,)),
                    (
                        "SELECT id, access_count FROM memories WHERE user_id = ? AND accessed > ?",
                        (user_id, accessed),
                    ),
                ]
            )
        head = heads[0] if heads else None
        if head is None:
            return ChangeSet(0, rev > 0, turns, memories, tombstones, None, agents, recalled)
        reset = rev < int(head["base_revision"])
        return ChangeSet(
            int(head["revision"]), reset, turns, memories, tombstones, head, agents, recalled
        )

    # -- global context ------------------------------------------------------------------------

    @retried
    def set_global(self, key: str, text: str, now: str) -> None:
        with self.db.write() as tx:
            tx.execute(
                "INSERT INTO global_context (key, text, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE "
                "SET text = excluded.text, updated_at = excluded.updated_at",
                (key, text, now),
            )

    @retried
    def list_global(self) -> list[Row]:
        """Every context reads these: one statement, no transaction around it."""
        return self.db.query("SELECT * FROM global_context ORDER BY key")

    @retried
    def delete_global(self, key: str) -> bool:
        with self.db.write() as tx:
            return tx.execute("DELETE FROM global_context WHERE key = ?", (key,)) > 0

    # -- API keys (deployment-wide: a key names its user, it is not inside one) ---------------

    @retried
    def insert_api_key(self, row: Row) -> None:
        with self.db.write() as tx:
            tx.execute(_insert_sql("api_keys", API_KEY_COLUMNS), _values(row, API_KEY_COLUMNS))

    @retried
    def find_api_key(self, secret_hash: str) -> Row | None:
        """The live (not revoked) key with this hash."""
        with self.db.read() as tx:
            return tx.one(
                "SELECT * FROM api_keys WHERE secret_hash = ? AND revoked_at IS NULL",
                (secret_hash,),
            )

    @retried
    def list_api_keys(self) -> list[Row]:
        with self.db.read() as tx:
            return tx.all("SELECT * FROM api_keys ORDER BY created_at, id")

    @retried
    def revoke_api_key(self, key_id: str, now: str) -> bool:
        with self.db.write() as tx:
            return (
                tx.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                    (now, key_id),
                )
                > 0
            )

    # -- statistics and whole-user copies ------------------------------------------------------

    @retried
    def counts(self, user_id: str) -> Row:
        with self.db.read() as tx:
            sessions = tx.one("SELECT COUNT(*) AS n FROM sessions WHERE user_id = ?", (user_id,))
            memories = tx.one("SELECT COUNT(*) AS n FROM memories WHERE user_id = ?", (user_id,))
            turns = tx.one(
                "SELECT COUNT(*) AS n, MIN(created_at) AS first_at, MAX(created_at) AS last_at "
                "FROM turns WHERE user_id = ?",
                (user_id,),
            )
            channels = tx.all(
                "SELECT channel, COUNT(*) AS n FROM turns WHERE user_id = ? GROUP BY channel",
                (user_id,),
            )
            days = tx.all(
                "SELECT day, turns, memories FROM daily_activity WHERE user_id = ? ORDER BY day",
                (user_id,),
            )
        assert sessions is not None and memories is not None and turns is not None
        return {
            "sessions": int(sessions["n"]),
            "memories": int(memories["n"]),
            "turns": int(turns["n"]),
            "first_at": turns["first_at"],
            "last_at": turns["last_at"],
            "by_channel": {r["channel"]: int(r["n"]) for r in channels},
            "daily_activity": days,
        }

    @retried
    def dump_user(self, user_id: str) -> Row | None:
        """Every row of one user, sealed, in one snapshot (for export and backend migration)."""
        with self.db.read() as tx:
            user = tx.one("SELECT * FROM users WHERE id = ?", (user_id,))
            if user is None:
                return None
            orders = {
                "agents": "id", "sessions": "created_at, id", "turns": "session_id, seq",
                "memories": "created_at, id", "daily_activity": "day",
            }  # fmt: skip
            dump = {
                table: tx.all(
                    f"SELECT * FROM {table} WHERE user_id = ? ORDER BY {order}", (user_id,)
                )
                for table, order in orders.items()
            }
        return {"user": user, **dump}

    @retried
    def load_user(self, dump: Row, now: str) -> None:
        """Insert a whole user's rows in one transaction; any clash writes nothing (Conflict)."""
        user_id = dump["user"]["id"]
        with self.db.write() as tx:
            rev = self._touch_user(tx, user_id, now)
            user = dump["user"]
            tx.execute(
                "UPDATE users SET profile = COALESCE(?, profile), "
                "created_at = CASE WHEN created_at > ? THEN ? ELSE created_at END, "
                "updated_at = ? WHERE id = ?",
                (user.get("profile"), user["created_at"], user["created_at"], user["updated_at"],
                 user_id),
            )  # fmt: skip
            tables: Iterable[tuple[str, Sequence[str]]] = (
                ("agents", AGENT_COLUMNS), ("sessions", SESSION_COLUMNS),
                ("turns", TURN_COLUMNS), ("memories", MEMORY_COLUMNS),
            )  # fmt: skip
            for table, columns in tables:
                rows = [{**r, "user_id": user_id, "rev": rev} for r in dump[table]]
                try:
                    tx.executemany(_insert_sql(table, columns), [_values(r, columns) for r in rows])
                except Conflict as exc:
                    raise Conflict(
                        f"the user already holds {table} with this import's ids; "
                        "nothing was imported", details={"table": table, **exc.details},
                    ) from None  # fmt: skip
            for column in ("turns", "memories"):
                days = Counter({r["day"]: int(r[column]) for r in dump["daily_activity"]})
                self._count_activity(tx, user_id, +days, column)
