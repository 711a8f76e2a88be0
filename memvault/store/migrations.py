"""Numbered schema migrations, portable across SQLite and PostgreSQL.

Each migration is a list of statements with `{blob}`, `{real}`, `{bigint}` standing for the
backend's types. They are recorded in `schema_migrations` and applied at open, in order, each in
its own transaction; the SQLite backend copies the file to a timestamped backup first when a
database that already has data is about to change. Never edit a shipped migration: add one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from memvault.model import utcnow
from memvault.store.database import Database


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "initial schema",
        (
            """CREATE TABLE users (
                id TEXT PRIMARY KEY,
                profile {blob},
                revision {bigint} NOT NULL DEFAULT 0,
                base_revision {bigint} NOT NULL DEFAULT 0,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            """CREATE TABLE agents (
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                id TEXT NOT NULL,
                name {blob} NOT NULL,
                description {blob},
                created_at TEXT NOT NULL,
                PRIMARY KEY (user_id, id)
            )""",
            """CREATE TABLE sessions (
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                id TEXT NOT NULL,
                kind TEXT NOT NULL,
                agent_id TEXT,
                title {blob},
                summary {blob},
                intent {blob},
                confidence {real},
                entities {blob},
                metadata {blob},
                turn_count INTEGER NOT NULL DEFAULT 0,
                last_seq INTEGER NOT NULL DEFAULT 0,
                last_turn_at TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                PRIMARY KEY (user_id, id)
            )""",
            "CREATE INDEX sessions_by_update ON sessions (user_id, updated_at)",
            """CREATE TABLE turns (
                user_id TEXT NOT NULL,
                id TEXT NOT NULL,
                session_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                role TEXT NOT NULL,
                channel TEXT NOT NULL,
                modality TEXT NOT NULL,
                speaker {blob},
                content {blob} NOT NULL,
                audio_ref {blob},
                audio_duration {real},
                tool_calls {blob},
                tool_result {blob},
                intent {blob},
                confidence {real},
                entities {blob},
                metadata {blob},
                agent_id TEXT,
                created_at TEXT NOT NULL,
                rev {bigint} NOT NULL,
                PRIMARY KEY (user_id, id),
                UNIQUE (user_id, session_id, seq),
                FOREIGN KEY (user_id, session_id) REFERENCES sessions (user_id, id)
                    ON DELETE CASCADE
            )""",
            "CREATE INDEX turns_by_time ON turns (user_id, created_at)",
            "CREATE INDEX turns_by_rev ON turns (user_id, rev)",
            """CREATE TABLE memories (
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                id TEXT NOT NULL,
                kind TEXT NOT NULL,
                tier TEXT NOT NULL,
                text {blob} NOT NULL,
                category {blob},
                importance {real} NOT NULL,
                valence {real} NOT NULL,
                tags {blob},
                source_turn_ids {blob},
                valid_from TEXT,
                valid_to TEXT,
                superseded_by TEXT,
                pinned INTEGER NOT NULL DEFAULT 0,
                access_count INTEGER NOT NULL DEFAULT 0,
                last_accessed_at TEXT,
                expires_at TEXT,
                agent_id TEXT,
                metadata {blob},
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL,
                rev {bigint} NOT NULL,
                PRIMARY KEY (user_id, id)
            )""",
            "CREATE INDEX memories_by_kind ON memories (user_id, kind, tier)",
            "CREATE INDEX memories_by_rev ON memories (user_id, rev)",
            """CREATE TABLE tombstones (
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                item_type TEXT NOT NULL,
                item_id TEXT NOT NULL,
                rev {bigint} NOT NULL,
                PRIMARY KEY (user_id, item_type, item_id)
            )""",
            "CREATE INDEX tombstones_by_rev ON tombstones (user_id, rev)",
            """CREATE TABLE daily_activity (
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                day TEXT NOT NULL,
                turns INTEGER NOT NULL DEFAULT 0,
                memories INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (user_id, day)
            )""",
            """CREATE TABLE global_context (
                key TEXT PRIMARY KEY,
                text TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
        ),
    ),
    Migration(
        2,
        "api keys",
        (
            # Only a SHA-256 of each key is kept; `prefix` lets an operator recognise a key.
            """CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                secret_hash TEXT NOT NULL UNIQUE,
                prefix TEXT NOT NULL,
                scope TEXT NOT NULL,
                user_id TEXT,
                agent_id TEXT,
                name TEXT,
                created_at TEXT NOT NULL,
                revoked_at TEXT
            )""",
        ),
    ),
    Migration(
        4,
        "job queue",
        (
            # `payload` is JSON of ids only; content is loaded by the worker in the user's scope.
            """CREATE TABLE jobs (
                id TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                user_id TEXT NOT NULL,
                payload TEXT NOT NULL,
                state TEXT NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                max_attempts INTEGER NOT NULL,
                run_after TEXT NOT NULL,
                lease_owner TEXT,
                lease_expires_at TEXT,
                last_error TEXT,
                created_at TEXT NOT NULL,
                updated_at TEXT NOT NULL
            )""",
            "CREATE INDEX jobs_due ON jobs (state, run_after)",
            "CREATE INDEX jobs_leases ON jobs (state, lease_expires_at)",
        ),
    ),
    Migration(
        5,
        "embeddings",
        (
            # One sealed float32 vector per item and model; `rev` is the item's revision when it
            # was embedded, so a vector older than its item's text is recomputed, not reused.
            """CREATE TABLE embeddings (
                user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
                item_type TEXT NOT NULL,
                item_id TEXT NOT NULL,
                model TEXT NOT NULL,
                rev {bigint} NOT NULL,
                vector {blob} NOT NULL,
                PRIMARY KEY (user_id, model, item_type, item_id)
            )""",
            "CREATE INDEX embeddings_by_rev ON embeddings (user_id, model, rev)",
        ),
    ),
    Migration(
        6,
        "recent turns by channel",
        (
            # The newest turns of one channel, in a session (context assembly asks for each
            # channel's own) or across the user's sessions. Without these, turns were walked from
            # the newest until enough of that channel turned up: all of them, for a channel
            # seldom used.
            "CREATE INDEX turns_by_channel ON turns (user_id, session_id, channel, seq)",
            "CREATE INDEX turns_by_channel_time ON turns (user_id, channel, created_at, id)",
        ),
    ),
    Migration(
        7,
        "memory access order",
        (
            # A count of the user's recalls, and on each memory the count at its last recall:
            # a cache in another process reads the access counts that moved since it last
            # looked (`changes_since`), as it reads rows by revision, without any clock.
            "ALTER TABLE users ADD COLUMN accessed {bigint} NOT NULL DEFAULT 0",
            "ALTER TABLE memories ADD COLUMN accessed {bigint} NOT NULL DEFAULT 0",
            "CREATE INDEX memories_by_access ON memories (user_id, accessed)",
        ),
    ),
)


def migrate(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply every pending migration; back the database up first if it already holds a schema.

    Returns the versions applied. Each migration and its record commit together, so a crash
    leaves the schema at a recorded version.
    """
    with db.write() as tx:
        tx.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        applied = {int(r["version"]) for r in tx.all("SELECT version FROM schema_migrations")}
    todo = sorted((m for m in migrations if m.version not in applied), key=lambda m: m.version)
    if not todo:
        return []
    if applied:
        db.backup(f"before-migration-{todo[0].version:04d}")
    for migration in todo:
        with db.write() as tx:
            for statement in migration.statements:
                tx.execute(db.dialect.ddl(statement))
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, utcnow().isoformat()),
            )
    return [m.version for m in todo]
