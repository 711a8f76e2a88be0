"""The `Vault` facade: every memvault use case, in one place.

The server, the CLI and the MCP server call only this. A call validates its input completely
before it writes anything, seals user content under the user's own key, lets the store commit it
in one transaction, then publishes an event. Every method takes the user scope first.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from memvault import validate as v
from memvault.config import Settings
from memvault.crypto import Keyring, decode_key, encode_key, generate_key
from memvault.errors import Conflict, Invalid, MemvaultError, NotFound, UserKeyMissing
from memvault.events import Event, EventBus
from memvault.inputs import (
    build_turn,
    check_validity,
    memory_fields,
    new_session,
    optional_stamp,
    session_fields,
    with_seq,
)
from memvault.jobs import JobQueue
from memvault.keys import ApiKeys
from memvault.mind.consolidate import (
    SUMMARY_NOTES,
    ConsolidationPolicy,
    ConsolidationReport,
    FactLedger,
    SessionPlan,
    SessionReader,
    holds_from,
    merged_end,
    needs_extraction,
    needs_summary,
    plan_memories,
    plan_session,
)
from memvault.mind.context import (
    MIN_RELATIVE_SCORE,
    Context,
    Sources,
    build_context,
    check_budget,
    check_channel_limits,
    check_min_relative_score,
)
from memvault.mind.extract import ExtractedFact, extracted_metadata
from memvault.mind.llm_reader import session_reader
from memvault.mind.unlearn import UnlearningPlan, extracted_sources, plan_unlearning
from memvault.model import (
    Agent,
    Channel,
    GlobalContextEntry,
    Memory,
    MemoryKind,
    Session,
    Tier,
    Turn,
    User,
    format_ts,
    new_id,
    parse_ts,
    utcnow,
)
from memvault.relay import open_relay
from memvault.retrieval.cache import Changes
from memvault.retrieval.embed import Embedder, RemoteEmbedder, embedder_from_settings
from memvault.retrieval.index import People
from memvault.retrieval.items import item_from_memory, item_from_turn
from memvault.retrieval.recall import Recall
from memvault.retrieval.search import Hit
from memvault.retrieval.vectors import SealedVectors
from memvault.rows import (
    memory_from_row,
    open_agent,
    open_memory,
    open_session,
    open_turn,
    open_user,
    turn_row,
)
from memvault.sealing import Sealer
from memvault.stats import user_stats
from memvault.store import Store, check_database_urls, open_keyring, open_store
from memvault.store.database import PlanOutdated, Row, TurnGroup, Unlearning
from memvault.transfer import export_document, read_export, seal_dump

MAX_LIST = 1000
UNLEARN_ATTEMPTS = 5  # plans a deletion of turns makes before it gives up to a busy writer
T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


def _people_key(user: Row | None, agents: Sequence[Row]) -> bytes:
    """A digest of the sealed profile and agent names: a sealed value changes whenever it is
    written again (its nonce is new), so an equal digest means nothing to open again."""
    if user is None:
        return b""
    digest = hashlib.blake2b(digest_size=16)
    parts = [bytes(user["profile"] or b"")]
    parts += [part for row in agents for part in (row["id"].encode(), bytes(row["name"]))]
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.digest()


def user_reads(
    read: Callable[Concatenate[Vault, str, P], R],
) -> Callable[Concatenate[Vault, str, P], R]:
    """A read of one user's rows that answers `NotFound` ("no such user") when the user was
    deleted while it ran: rows read just before a deletion no longer open, their key shredded
    (`UserKeyMissing`), and the caller should hear what a read a moment later would say. A user
    who is still there but has no key is an integrity fault, and is raised as one."""

    @functools.wraps(read)
    def reading(vault: Vault, user_id: str, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return read(vault, user_id, *args, **kwargs)
        except UserKeyMissing:
            if vault.store.get_user(user_id) is None:
                raise NotFound("no such user") from None
            raise

    return reading


class Vault:
    """Encrypted, per-user conversation memory. Thread-safe; use one per data folder."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        settings: Settings | None = None,
        master_key: str | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.settings = settings or Settings()
        if path is not None:
            self.settings = self.settings.model_copy(update={"data": Path(path)})
        if master_key is not None:
            self.settings = self.settings.model_copy(update={"master_key": master_key})
        # before anything is made: a database that does not answer leaves nothing to undo
        check_database_urls(self.settings)
        self._own_embedder = embedder is None  # made here from settings: closed here
        self.embedder = embedder or embedder_from_settings(self.settings)
        data = Path(self.settings.data)
        data.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir = data
        self.keyring: Keyring = open_keyring(self.settings, data)
        try:
            store = open_store(self.settings, data)
        except BaseException:
            self.keyring.close()
            raise
        self.store: Store = store
        self.jobs = JobQueue(store.db)  # background work, shared by every process on the database
        self.sealer = Sealer(self.keyring)
        self.events = EventBus()
        self._upkeep_writes = threading.local()  # see `_own_upkeep`
        self.relay = open_relay(store.db, self.events)  # events to and from other processes
        self.keys = ApiKeys(self.store, self.events)  # the server's API keys
        self.recall = Recall(
            self.embedder,
            max_bytes=self.settings.index_cache_bytes,
            ann_threshold=self.settings.ann_threshold,
            graph_builds=self.settings.graph_builds,
            warm_indexes=self.settings.warm_indexes,
            revision_and_recalls=self.store.revision_and_recalls,
            loader=self._index_changes,
            record_access=lambda user_id, ids, now: self.store.record_access(
                user_id, ids, format_ts(now)
            ),
            vectors=SealedVectors(self.store, self.keyring),
        )
        self.events.subscribe(self._keep_index)

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, **kwargs: Any) -> Vault:
        return cls(path, **kwargs)

    def close(self) -> None:
        if self.relay is not None:
            self.relay.close()
        self.recall.close()
        if self._own_embedder and isinstance(self.embedder, RemoteEmbedder):
            self.embedder.close()
        self.store.close()
        self.keyring.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def ping(self) -> None:
        """Raise if the database or the keyring cannot be reached (readiness checks)."""
        self.store.ping()
        self.keyring.ping()

    # -- users -----------------------------------------------------------------------------

    def put_user(self, user_id: str, profile: Mapping[str, Any] | None = None) -> User:
        """Create the user, or replace their profile attributes."""
        v.check_id("user_id", user_id)
        profile = v.check_json(
            "profile", dict(profile or {}), max_bytes=self.settings.max_json_bytes, object_only=True
        )
        now = format_ts(utcnow())
        sealed = self.sealer.for_user(user_id).seal("users", user_id, {"profile": profile or None})
        row = self.store.put_user(user_id, sealed["profile"], now)
        self._publish("user.updated", user_id)
        return open_user(self.sealer, row)

    @user_reads
    def get_user(self, user_id: str) -> User:
        v.check_id("user_id", user_id)
        row = self.store.get_user(user_id)
        if row is None:
            raise NotFound("no such user")
        return open_user(self.sealer, row)

    def list_users(
        self, *, limit: int = 50, after: str | None = None, prefix: str | None = None
    ) -> list[User]:
        """Every user, by id, with their profiles: an operator's view across users (the API
        gives it to admin keys only). `after` pages on from the last page's last id; `prefix`
        keeps the ids that start with it."""
        v.check_limit("limit", limit, MAX_LIST)
        v.check_optional_id("after", after)
        if prefix is not None:  # the start of an id: it may end in a space, or be empty
            v.check_text("prefix", prefix, max_bytes=4 * v.MAX_ID_LENGTH, allow_empty=True)
        rows = self.store.list_users(limit=limit, after=after, prefix=prefix or None)
        return [open_user(self.sealer, row) for row in rows]

    def delete_user(self, user_id: str) -> None:
        """Crypto-shred: destroy the user's data key first, then delete their rows.

        With the key gone, no copy of their rows (a backup, a stolen file) can be opened, even if
        the row deletion were interrupted.
        """
        v.check_id("user_id", user_id)
        shredded = self.keyring.shred(user_id)
        deleted = self.store.delete_user(user_id)
        if not (shredded or deleted):
            raise NotFound("no such user")
        self._publish("user.deleted", user_id)

    # -- agents ----------------------------------------------------------------------------

    def register_agent(self, user_id: str, name: str, description: str | None = None) -> Agent:
        """The multi-AI handshake: find the user's agent by name, or create it with a new UUID."""
        v.check_id("user_id", user_id)
        v.check_text("name", name, max_bytes=256)
        description = v.check_optional_text("description", description)
        for agent in self.list_agents(user_id):
            if agent.name == name:
                return agent
        agent_id = new_id()
        now = utcnow()
        row = {"user_id": user_id, "id": agent_id, "name": name, "description": description,
               "created_at": format_ts(now)}  # fmt: skip
        self.store.insert_agent(
            self.sealer.for_user(user_id).seal("agents", agent_id, row), format_ts(now)
        )
        return Agent(agent_id, user_id, name, description, now)

    @user_reads
    def list_agents(self, user_id: str) -> list[Agent]:
        v.check_id("user_id", user_id)
        return [open_agent(self.sealer, row) for row in self.store.list_agents(user_id)]

    # -- turns and sessions ------------------------------------------------------------------

    def add_turn(
        self,
        user_id: str,
        session_id: str,
        role: str,
        content: str,
        *,
        speaker: str | None = None,
        channel: str = "ai",
        modality: str = "text",
        created_at: datetime | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        tool_calls: Any = None,
        tool_result: Any = None,
        intent: str | None = None,
        confidence: float | None = None,
        entities: Any = None,
        agent_id: str | None = None,
        audio_ref: str | None = None,
        audio_duration: float | None = None,
    ) -> Turn:
        """Append one turn; it is on disk when this returns."""
        fields = {
            "role": role, "content": content, "speaker": speaker, "channel": channel,
            "modality": modality, "created_at": created_at, "metadata": metadata,
            "tool_calls": tool_calls, "tool_result": tool_result, "intent": intent,
            "confidence": confidence, "entities": entities, "agent_id": agent_id,
            "audio_ref": audio_ref, "audio_duration": audio_duration,
        }  # fmt: skip
        return self.add_turns(user_id, session_id, [fields])[0]

    def add_turns(
        self, user_id: str, session_id: str, turns: Iterable[Mapping[str, Any]]
    ) -> list[Turn]:
        """Append several turns in one transaction: all of them are stored, or none."""
        built, group = self._prepare_turns(user_id, session_id, turns)
        return self._appended(built, group, self.store.append_turns(*group))

    def add_turn_groups(
        self, groups: Sequence[tuple[str, str, Iterable[Mapping[str, Any]]]]
    ) -> list[list[Turn] | MemvaultError]:
        """Group commit: `add_turns` for several (user, session, turns) in one transaction.

        Concurrent appends (the server gathers them) share one commit instead of paying for one
        each. Each group gets its own answer: its turns, or the error that refused it. A group
        that fails its checks does not stop the others; if the shared write clashes, the groups
        are written one by one so that only the clashing one fails. Every stored turn is on disk
        when this returns.
        """
        results: list[list[Turn] | MemvaultError] = []
        ready: list[tuple[int, list[Turn], TurnGroup]] = []
        for user_id, session_id, turns in groups:
            try:
                built, group = self._prepare_turns(user_id, session_id, turns)
            except MemvaultError as exc:
                results.append(exc)
                continue
            ready.append((len(results), built, group))
            results.append([])
        try:
            written = self.store.append_turn_groups([group for _, _, group in ready])
        except MemvaultError:
            for index, built, group in ready:
                try:
                    results[index] = self._appended(built, group, self.store.append_turns(*group))
                except MemvaultError as exc:
                    results[index] = exc
            return results
        for (index, built, group), seqs in zip(ready, written, strict=True):
            results[index] = self._appended(built, group, seqs)
        return results

    def _prepare_turns(
        self, user_id: str, session_id: str, turns: Iterable[Mapping[str, Any]]
    ) -> tuple[list[Turn], TurnGroup]:
        """Check and seal turns for one session; nothing is written yet."""
        v.check_id("user_id", user_id)
        v.check_id("session_id", session_id)
        now = utcnow()
        built = [
            build_turn(self.settings, user_id, session_id, dict(t), where=f"turns[{i}]", now=now)
            for i, t in enumerate(turns)
        ]
        if not built:
            raise Invalid("turns", "must not be empty")
        seal = self.sealer.for_user(user_id).seal
        rows = [seal("turns", t.id, turn_row(t)) for t in built]
        stamp = format_ts(now)
        return built, (user_id, session_id, new_session(built[0], stamp), rows, stamp)

    def _appended(self, built: list[Turn], group: TurnGroup, seqs: list[int]) -> list[Turn]:
        """The stored turns, announced: called once their transaction has committed."""
        user_id, session_id = group[0], group[1]
        stored = [with_seq(t, s) for t, s in zip(built, seqs, strict=True)]
        for turn in stored:
            self._publish("turn.added", user_id, session_id=session_id, turn_id=turn.id)
        return stored

    @user_reads
    def get_session(self, user_id: str, session_id: str) -> Session:
        """The session with all its turns, in order."""
        v.check_id("user_id", user_id)
        v.check_id("session_id", session_id)
        found = self.store.get_session_with_turns(user_id, session_id)
        if found is None:
            raise NotFound("no such session")
        row, turns = found
        return open_session(self.sealer, row, (open_turn(self.sealer, t) for t in turns))

    @user_reads
    def session_turns(
        self, user_id: str, session_id: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[Turn]:
        """One page of a session's turns after `after_seq`, in order (for long sessions)."""
        v.check_id("user_id", user_id)
        v.check_id("session_id", session_id)
        v.check_limit("limit", limit, MAX_LIST)
        if self.store.get_session(user_id, session_id) is None:
            raise NotFound("no such session")
        rows = self.store.session_turns(user_id, session_id, after_seq=after_seq, limit=limit)
        return [open_turn(self.sealer, r) for r in rows]

    @user_reads
    def list_sessions(
        self,
        user_id: str,
        *,
        limit: int = 50,
        before: datetime | str | None = None,
        before_id: str | None = None,
    ) -> list[Session]:
        """Sessions by last activity, newest first (the latest id first among equal times).

        `before` pages on to sessions last active earlier; with `before_id` too (the last page's
        last session: its `updated_at` and `id`), to those after it in this order, so that
        sessions last active at the same moment (an import keeps the times it is given) are
        neither skipped nor repeated between pages."""
        v.check_id("user_id", user_id)
        v.check_limit("limit", limit, MAX_LIST)
        cursor = None if before is None else format_ts(v.check_time("before", before))
        if before_id is not None:
            v.check_id("before_id", before_id)
            if cursor is None:
                raise Invalid("before_id", "needs before, the time of the same session")
        rows = self.store.list_sessions(user_id, limit=limit, before=cursor, before_id=before_id)
        return [open_session(self.sealer, r) for r in rows]

    def update_session(
        self,
        user_id: str,
        session_id: str,
        *,
        title: str | None = None,
        intent: str | None = None,
        confidence: float | None = None,
        entities: Any = None,
        metadata: Mapping[str, Any] | None = None,
        summary: str | None = None,
        kind: str | None = None,
    ) -> Session:
        """Set the given fields; fields left as None keep their value."""
        v.check_id("user_id", user_id)
        v.check_id("session_id", session_id)
        fields = session_fields(
            self.settings,
            {"title": title, "summary": summary, "kind": kind, "intent": intent,
             "confidence": confidence, "entities": entities, "metadata": metadata},
        )  # fmt: skip
        row = self._update_session(user_id, session_id, fields)
        if row is None:
            raise NotFound("no such session")
        return open_session(self.sealer, row)

    def _update_session(
        self, user_id: str, session_id: str, fields: Row, if_updated_at: str | None = None
    ) -> Row | None:
        """`update_session`'s work on checked fields (`session_fields`): the session's row as
        written, or None when there is no such session, or (`if_updated_at`, a stored
        `updated_at`) it was written since then."""
        # read first: a session missing or written meanwhile is not sealed for (the store checks
        # `if_updated_at` again in the write)
        current = self.store.get_session(user_id, session_id)
        if current is None or if_updated_at not in (None, current["updated_at"]):
            return None
        if not fields:
            return current
        sealed = self._sealed_update(user_id, "sessions", session_id, fields)
        if sealed is None:
            return None
        row = self.store.update_session(
            user_id, session_id, sealed, format_ts(utcnow()), if_updated_at=if_updated_at
        )
        if row is None:
            return None
        self._publish("session.updated", user_id, session_id=session_id)
        return row

    def _sealed_update(self, user_id: str, table: str, row_id: str, fields: Row) -> Row | None:
        """`fields` sealed for an update of a row the user has; None when the user has no key
        (deleted, by another writer perhaps, since the row was read). Only a user's first write
        makes their key: an update that made one would give a crypto-shredded user a key again,
        for rows the store then refuses to write."""
        sealer = self.sealer.for_existing_user(user_id)
        return None if sealer is None else sealer.seal(table, row_id, fields)

    @user_reads
    def recent_turns(
        self,
        user_id: str,
        *,
        session_id: str | None = None,
        channel: str | None = None,
        limit: int = 20,
    ) -> list[Turn]:
        """The newest `limit` turns, oldest first: ready to replay into a prompt."""
        v.check_id("user_id", user_id)
        v.check_optional_id("session_id", session_id)
        chan = None if channel is None else v.check_enum("channel", channel, Channel).value
        v.check_limit("limit", limit, MAX_LIST)
        rows = self.store.recent_turns(user_id, session_id=session_id, channel=chan, limit=limit)
        return [open_turn(self.sealer, r) for r in reversed(rows)]

    def delete_session(self, user_id: str, session_id: str) -> None:
        """Delete the session and its turns, and the facts read from them alone (see
        `_forget_turns`)."""
        v.check_id("user_id", user_id)
        v.check_id("session_id", session_id)
        found, unlearned = self._forget_turns(
            user_id,
            lambda turn: turn["session_id"] == session_id,
            lambda unlearning: self.store.delete_session(
                user_id, session_id, format_ts(utcnow()), unlearning=unlearning
            ),
        )
        if not found:
            raise NotFound("no such session")
        self._publish("session.deleted", user_id, session_id=session_id)
        self._announce_unlearned(user_id, *unlearned)

    def clear(self, user_id: str, *, channel: str | None = None) -> int:
        """Forget the user's conversation history (one channel, or all); the memories stay,
        but for the facts read from the forgotten turns alone (see `_forget_turns`).

        Returns how many turns were deleted. Sessions left without turns go too; a session
        that keeps turns of another channel loses its summary (it may quote what was
        forgotten) and consolidation's note of the turns it covered, in the same transaction,
        so the next run summarises what is left.
        """
        v.check_id("user_id", user_id)
        chan = None if channel is None else v.check_enum("channel", channel, Channel).value
        unnoted = [] if chan is None else self._without_summary_notes(user_id)
        deleted, unlearned = self._forget_turns(
            user_id,
            lambda turn: chan is None or turn["channel"] == chan,
            lambda unlearning: self.store.clear_turns(
                user_id, chan, format_ts(utcnow()), unnoted=unnoted, unlearning=unlearning
            ),
        )
        if deleted:
            self._publish("user.cleared", user_id, channel=chan)
        self._announce_unlearned(user_id, *unlearned)
        return deleted

    def _forget_turns(
        self, user_id: str, removes: Callable[[Row], bool], delete: Callable[[Unlearning], T]
    ) -> tuple[T, tuple[UnlearningPlan, dict[str, Memory]]]:
        """Run `delete`, a store deletion of the turns `removes` picks (given a turn's `id`,
        `session_id` and `channel`), with the facts read from those turns alone deleted in its
        transaction and their predecessors put back (`memvault.mind.unlearn`); answer what
        `delete` did, the plan and the facts it was made over.

        The facts' sources and metadata are sealed, so the store cannot find them: this opens
        every fact of the user's at each deletion. That is acceptable because a user's facts
        are few (a handful of statements a conversation at most, none said twice while it
        stands), and the turns, which are many, are only located by id, never opened.
        The plan is made over reads outside the transaction; the store checks in it that
        the facts and the located turns are as read, and the plan is made again when another
        writer changed them meanwhile."""
        for _ in range(UNLEARN_ATTEMPTS):
            unlearning, plan, facts = self._plan_unlearning(user_id, removes)
            try:
                return delete(unlearning), (plan, facts)
            except PlanOutdated:
                continue
        raise Conflict("the user's facts changed during the deletion; try again")

    def _plan_unlearning(
        self, user_id: str, removes: Callable[[Row], bool]
    ) -> tuple[Unlearning, UnlearningPlan, dict[str, Memory]]:
        """`_forget_turns`'s plan, for the store and as planned, and the facts it was made over."""
        rows = self.store.list_memories(user_id, kinds=[MemoryKind.FACT.value])
        facts = {r["id"]: open_memory(self.sealer, r) for r in rows}
        located = self.store.locate_turns(user_id, sorted(extracted_sources(facts.values())))
        removed = {str(t["id"]) for t in located if removes(t)}
        plan = plan_unlearning(facts.values(), removed, {str(t["id"]) for t in located} - removed)
        unlearning = Unlearning(
            facts=(len(rows), max((int(r["rev"]) for r in rows), default=0)),
            sources=tuple(str(t["id"]) for t in located),
            deleted=plan.deleted,
            relinked=tuple((r.memory_id, r.superseded_by, optional_stamp(r.valid_to))
                           for r in plan.relinked),
        )  # fmt: skip
        return unlearning, plan, facts

    def _announce_unlearned(
        self, user_id: str, plan: UnlearningPlan, facts: Mapping[str, Memory]
    ) -> None:
        """Publish the deletions and relinks of `_forget_turns`, once committed."""
        for memory_id in plan.deleted:
            agent_id = facts[memory_id].agent_id
            self._publish("memory.deleted", user_id, memory_id=memory_id, agent_id=agent_id)
        for relink in plan.relinked:
            agent_id = facts[relink.memory_id].agent_id
            self._publish("memory.updated", user_id, memory_id=relink.memory_id, agent_id=agent_id)

    def _without_summary_notes(self, user_id: str) -> list[tuple[str, str, bytes | None]]:
        """For each session whose metadata notes the turns its summary covers: its id, its
        `updated_at`, and its metadata sealed without the notes of its summary (what a clear
        leaves it)."""
        sealer = self.sealer.for_existing_user(user_id)
        if sealer is None:  # no key, so no sessions: nothing to clear
            return []
        found = []
        for session in self._every_session(user_id):
            if any(note in session.metadata for note in SUMMARY_NOTES):
                rest = {k: val for k, val in session.metadata.items() if k not in SUMMARY_NOTES}
                sealed = sealer.seal("sessions", session.id, {"metadata": rest or None})
                found.append((session.id, format_ts(session.updated_at), sealed["metadata"]))
        return found

    # -- memories --------------------------------------------------------------------------

    def add_memory(
        self, user_id: str, text: str, *, kind: str = "fact", tier: str = "long_term",
        supersedes: str | None = None, **fields: Any,
    ) -> Memory:  # fmt: skip
        """Store a memory. `supersedes` names a current memory this one replaces (see
        `supersede_memory`); both change in one commit."""
        v.check_id("user_id", user_id)
        now = utcnow()
        memory_id = new_id()
        values = memory_fields(self.settings, {"text": text, "kind": kind, "tier": tier, **fields})
        check_validity(values.get("valid_from"), values.get("valid_to"))
        created = values.pop("created_at", None) or format_ts(now)
        row = {
            "user_id": user_id, "id": memory_id, "importance": 0.5, "valence": 0.0, "pinned": 0,
            "access_count": 0, "created_at": created, "updated_at": format_ts(now), **values,
        }  # fmt: skip
        v.check_optional_id("supersedes", supersedes)
        if supersedes is None:
            sealed = self.sealer.for_user(user_id).seal("memories", memory_id, row)
        else:  # an update of the superseded memory: it never makes the user a key
            found = self._sealed_update(user_id, "memories", memory_id, row)
            if found is None:
                raise NotFound("no such current memory to supersede")
            sealed = found
        owner = self.store.insert_memory(sealed, format_ts(now), supersedes=supersedes)
        self._publish("memory.added", user_id, memory_id=memory_id, agent_id=row.get("agent_id"))
        if supersedes is not None:
            self._publish("memory.updated", user_id, memory_id=supersedes, agent_id=owner)
        return memory_from_row(row)  # as a read would give it, without the read

    def supersede_memory(self, user_id: str, memory_id: str, text: str, **fields: Any) -> Memory:
        """Replace a fact that no longer holds: the new memory is valid from now, the old one's
        validity closes and it points to its successor. History is kept, not overwritten.

        The new memory takes the old one's kind, tier, category, tags and agent unless given.
        """
        v.check_id("user_id", user_id)
        v.check_id("memory_id", memory_id)
        old = self.get_memory(user_id, memory_id)
        if old.superseded_by is not None:
            raise Conflict("that memory is already superseded")
        inherited = {"kind": old.kind.value, "tier": old.tier.value, "category": old.category,
                     "tags": list(old.tags), "agent_id": old.agent_id}  # fmt: skip
        fields = {**inherited, **fields}
        fields.setdefault("valid_from", utcnow())
        return self.add_memory(user_id, text, supersedes=memory_id, **fields)

    @user_reads
    def get_memory(self, user_id: str, memory_id: str) -> Memory:
        v.check_id("user_id", user_id)
        v.check_id("memory_id", memory_id)
        row = self.store.get_memory(user_id, memory_id)
        if row is None:
            raise NotFound("no such memory")
        return open_memory(self.sealer, row)

    def update_memory(self, user_id: str, memory_id: str, **fields: Any) -> Memory:
        """Change the given fields (text, importance, tier, ...); the rest stay as they are."""
        row = self._update_memory(user_id, memory_id, fields)
        if row is None:
            raise NotFound("no such memory")
        return open_memory(self.sealer, row)

    def _update_memory(
        self,
        user_id: str,
        memory_id: str,
        fields: Mapping[str, Any],
        if_updated_at: str | None = None,
    ) -> Row | None:
        """`update_memory`'s work: the memory's row as written, or None when there is no such
        memory, or (`if_updated_at`, a stored `updated_at`) it was written since then."""
        v.check_id("user_id", user_id)
        v.check_id("memory_id", memory_id)
        if "created_at" in fields:
            raise Invalid("created_at", "cannot be changed")
        values = memory_fields(self.settings, fields)
        # read for the validity check and the event (the store checks `if_updated_at` again)
        current = self.store.get_memory(user_id, memory_id)
        if current is None or if_updated_at not in (None, current["updated_at"]):
            return None
        if values.get("superseded_by") == memory_id:
            raise Invalid("superseded_by", "a memory cannot supersede itself")
        check_validity(
            values.get("valid_from", current["valid_from"]),
            values.get("valid_to", current["valid_to"]),
        )
        if not values:
            return current
        sealed = self._sealed_update(user_id, "memories", memory_id, values)
        if sealed is None:
            return None
        row = self.store.update_memory(
            user_id, memory_id, sealed, format_ts(utcnow()), if_updated_at=if_updated_at
        )
        if row is None:
            return None
        moved = {"previous_agent_id": current["agent_id"]}
        if current["agent_id"] == row["agent_id"]:
            moved = {}  # the agent it belonged to is told when it leaves that agent's view
        self._publish(
            "memory.updated", user_id, memory_id=memory_id, agent_id=row["agent_id"], **moved
        )
        return row

    def move_memory(
        self, user_id: str, memory_id: str, *, tier: str | None = None, kind: str | None = None
    ) -> Memory:
        """Move a memory to another tier of its life, or reclassify its kind."""
        if tier is None and kind is None:
            raise Invalid("tier", "give a tier or a kind to move the memory to")
        fields = {k: val for k, val in (("tier", tier), ("kind", kind)) if val is not None}
        return self.update_memory(user_id, memory_id, **fields)

    def delete_memory(self, user_id: str, memory_id: str) -> None:
        v.check_id("user_id", user_id)
        v.check_id("memory_id", memory_id)
        deleted = self.store.delete_memory(user_id, memory_id, format_ts(utcnow()))
        if deleted is None:
            raise NotFound("no such memory")
        self._publish("memory.deleted", user_id, memory_id=memory_id, agent_id=deleted["agent_id"])

    @user_reads
    def list_memories(
        self,
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
        now: datetime | None = None,
    ) -> list[Memory]:
        """Memories newest first, filtered. Category and tags are sealed, so they filter after
        decryption; the other filters run in the database."""
        v.check_id("user_id", user_id)
        v.check_limit("limit", limit, MAX_LIST)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise Invalid("offset", "must be a non-negative integer")
        kind_values = [v.check_enum("kinds", k, MemoryKind).value for k in kinds or ()]
        tier_values = [v.check_enum("tiers", t, Tier).value for t in tiers or ()]
        wanted_tags = set(v.check_strings("tags", tags))
        sealed_filter = category is not None or bool(wanted_tags)
        rows = self.store.list_memories(
            user_id,
            kinds=kind_values or None,
            tiers=tier_values or None,
            agent_id=v.check_optional_id("agent_id", agent_id),
            pinned=None if pinned is None else v.check_bool("pinned", pinned),
            current_only=not include_superseded,
            live_at=None if include_expired else format_ts(now or utcnow()),
            limit=None if sealed_filter else limit,
            offset=0 if sealed_filter else offset,
        )
        memories = [open_memory(self.sealer, r) for r in rows]
        if not sealed_filter:
            return memories
        matching = [
            m
            for m in memories
            if (category is None or m.category == category) and wanted_tags <= set(m.tags)
        ]
        return matching[offset : offset + limit]

    # -- consolidation ---------------------------------------------------------------------

    def consolidate(
        self,
        user_id: str,
        *,
        now: datetime | None = None,
        policy: ConsolidationPolicy | None = None,
    ) -> ConsolidationReport:
        """Move the user's memories along their life, summarise their idle sessions and read
        the facts the user stated in them, each fact replacing any older one of its slot.

        The rules (`memvault.mind.consolidate`, `memvault.mind.extract`) decide over what is
        stored, as of `now`; this applies their plan with the ordinary operations
        (`update_session`, `add_memory`, `update_memory`, `move_memory`), so nothing is deleted,
        superseded duplicates and facts are kept as history and each change is announced.
        Sessions are written first, with the facts read from them, then the memories. The same
        `now` gives the same plan, and a run right after another finds nothing to do.

        Each change is made only to the memory or session as the plan read it: one written or
        deleted meanwhile (a caller's edit, another server's run) is left alone, listed in the
        report's `skipped` or `skipped_sessions`, and the run goes on.
        """
        v.check_id("user_id", user_id)
        moment = utcnow() if now is None else v.check_time("now", now)
        if policy is None:
            policy = ConsolidationPolicy()
        elif not isinstance(policy, ConsolidationPolicy):
            raise Invalid("policy", "must be a ConsolidationPolicy")
        with self._own_upkeep():
            return self._consolidate(user_id, moment, policy)

    def _consolidate(
        self, user_id: str, moment: datetime, policy: ConsolidationPolicy
    ) -> ConsolidationReport:
        user = self.store.get_user(user_id)
        if user is None:
            raise NotFound("no such user")
        rows = self.store.list_memories(user_id)
        memories = {r["id"]: open_memory(self.sealer, r) for r in rows}
        read_at = {r["id"]: str(r["updated_at"]) for r in rows}
        user_name = open_user(self.sealer, user).name
        with session_reader(self.settings, policy) as reader:  # the LLM, if one is configured
            plans, skipped_sessions = self._session_plans(
                user_id, user_name, moment, policy, reader
            )
        summarised, extracted = [], []
        ledger = FactLedger(memories.values())
        for session_id, session_read_at, session_plan in plans:
            changes = session_plan.fields()
            if self._update_session(user_id, session_id, changes, session_read_at) is None:
                skipped_sessions.append(session_id)  # its facts wait for the next run
                continue
            if session_plan.summary is not None:
                summarised.append(session_id)
            for fact in ledger.news(session_plan.facts):
                added = self._add_fact(user_id, fact)
                memories[added.id], read_at[added.id] = added, format_ts(added.updated_at)
                extracted.append(added.id)
        plan = plan_memories(list(memories.values()), moment, policy)
        skipped: set[str] = set()

        def apply(memory_id: str, **fields: Any) -> None:
            if memory_id in skipped:
                return
            try:
                row = self._update_memory(user_id, memory_id, fields, read_at[memory_id])
            except NotFound:  # the successor was deleted meanwhile: left current
                row = None
            if row is None:
                skipped.add(memory_id)
            else:
                read_at[memory_id] = str(row["updated_at"])

        for merge in plan.merges:
            for old in merge.merged:
                ends = merged_end(memories[old], moment)
                apply(old, superseded_by=merge.survivor, valid_to=ends)
        for supersession in plan.supersessions:
            starts = holds_from(memories[supersession.newer])
            for old in supersession.older:  # closed where the newer one starts
                ends = merged_end(memories[old], starts)
                apply(old, superseded_by=supersession.newer, valid_to=ends)
        for memory_id, fields in plan.survivor_fields.items():
            apply(memory_id, **fields)
        for move in plan.moves:
            apply(move.memory_id, tier=move.tier.value)
        moved = {reason: tuple(m.memory_id for m in plan.moves
                               if m.reason == reason and m.memory_id not in skipped)
                 for reason in ("promoted", "unused", "decayed", "expired")}  # fmt: skip
        merged = tuple(
            dataclasses.replace(m, merged=tuple(i for i in m.merged if i not in skipped))
            for m in plan.merges
            if any(i not in skipped for i in m.merged)
        )
        superseded = tuple(
            dataclasses.replace(s, older=tuple(i for i in s.older if i not in skipped))
            for s in plan.supersessions
            if any(i not in skipped for i in s.older)
        )
        return ConsolidationReport(
            user_id=user_id, now=moment, merged=merged, promoted=moved["promoted"],
            archived_unused=moved["unused"], archived_decayed=moved["decayed"],
            archived_expired=moved["expired"], summarised=tuple(summarised),
            extracted=tuple(extracted), superseded=superseded,
            skipped=tuple(sorted(skipped)), skipped_sessions=tuple(sorted(skipped_sessions)),
        )  # fmt: skip

    def _session_plans(
        self,
        user_id: str,
        user_name: str | None,
        now: datetime,
        policy: ConsolidationPolicy,
        reader: SessionReader,
    ) -> tuple[list[tuple[str, str, SessionPlan]], list[str]]:
        """What the rules write to the user's sessions (a summary, the notes of what was read)
        and the facts read from their turns by `reader`, each as (session id, `updated_at` of
        the read it was made from, plan); and the sessions left out: deleted since they were
        listed, or whose summary, metadata or facts do not fit this deployment's limits.

        All are read, and the LLM (if any) asked, before any is written, as the memories are,
        with no transaction open: each write is then conditional on the read its plan was made
        from, and a session written meanwhile is skipped."""
        plans: list[tuple[str, str, SessionPlan]] = []
        left_out: list[str] = []
        for listed_row in self._every_session_row(user_id):
            listed = open_session(self.sealer, listed_row)
            if not (
                needs_summary(listed, now, policy)
                or needs_extraction(listed, int(listed_row["last_seq"]), now, policy)
            ):
                continue
            # read afresh with its turns: the listing may be stale by now, and its metadata
            # written back would undo a caller's edit made since
            found = self.store.get_session_with_turns(user_id, listed.id)
            if found is None:  # deleted since it was listed
                left_out.append(listed.id)
                continue
            row, turns = found
            session = open_session(self.sealer, row, (open_turn(self.sealer, t) for t in turns))
            plan = plan_session(
                session, int(row["last_seq"]), user_name, now, policy, reader=reader
            )
            if plan is None:
                continue
            try:  # too long for this deployment: every run would stop here
                session_fields(self.settings, plan.fields())
                for fact in plan.facts:
                    memory_fields(self.settings, self._fact_fields(fact))
            except Invalid:
                left_out.append(session.id)
                continue
            plans.append((session.id, str(row["updated_at"]), plan))
        return plans, left_out

    @staticmethod
    def _fact_fields(fact: ExtractedFact) -> dict[str, Any]:
        """An extracted fact as a memory of the user's own (no agent's) of kind `fact`, true
        and written down since it was said."""
        return {
            "text": fact.text, "kind": "fact", "tier": "long_term", "category": fact.category,
            "source_turn_ids": fact.source_turn_ids, "valid_from": fact.said_at,
            "created_at": fact.said_at, "metadata": extracted_metadata(fact.slot, fact.model),
        }  # fmt: skip

    def _add_fact(self, user_id: str, fact: ExtractedFact) -> Memory:
        fields = self._fact_fields(fact)
        return self.add_memory(user_id, fields.pop("text"), **fields)

    def _every_session(self, user_id: str) -> list[Session]:
        """All the user's sessions, by id, read a page of `MAX_LIST` at a time."""
        return [open_session(self.sealer, r) for r in self._every_session_row(user_id)]

    def _every_session_row(self, user_id: str) -> list[Row]:
        """The stored rows of all the user's sessions, by id, a page of `MAX_LIST` at a time:
        with the columns a `Session` leaves out (`last_seq`)."""
        found: list[Row] = []
        last: Row | None = None  # the last page's last session
        while True:
            rows = self.store.list_sessions(
                user_id,
                limit=MAX_LIST,
                before=None if last is None else last["updated_at"],
                before_id=None if last is None else last["id"],
            )
            found += rows
            if len(rows) < MAX_LIST:
                return sorted(found, key=lambda r: str(r["id"]))
            last = rows[-1]

    # -- global context --------------------------------------------------------------------

    def set_global_context(self, key: str, text: str) -> GlobalContextEntry:
        """Deployment-wide context for every user. Not user content: stored unencrypted."""
        v.check_id("key", key)
        v.check_text("text", text, max_bytes=self.settings.max_content_bytes)
        now = utcnow()
        self.store.set_global(key, text, format_ts(now))
        return GlobalContextEntry(key, text, now)

    def list_global_context(self) -> list[GlobalContextEntry]:
        return [
            GlobalContextEntry(r["key"], r["text"], parse_ts(r["updated_at"]))
            for r in self.store.list_global()
        ]

    def delete_global_context(self, key: str) -> None:
        v.check_id("key", key)
        if not self.store.delete_global(key):
            raise NotFound("no such global context entry")

    # -- recall ----------------------------------------------------------------------------

    def search(self, user_id: str, query: str, **options: Any) -> list[Hit]:
        """Hybrid search of the user's turns and memories; see `Recall.search` for options
        (limit, types, kinds, tiers, session_id, agent_id, channel, since, until, tags, now,
        min_score, explain, asked_by, seen_by_agent)."""
        return self.recall.search(user_id, query, **options)

    @user_reads
    def context(
        self,
        user_id: str,
        query: str,
        *,
        session_id: str | None = None,
        token_budget: int = 2000,
        channel_limits: Mapping[str, int] | None = None,
        now: datetime | None = None,
        min_score: float = 0.2,
        agent_id: str | None = None,
        asked_by: str | None = None,
        min_relative_score: float = MIN_RELATIVE_SCORE,
        leave_out: Iterable[str] = (),
    ) -> Context:
        """What an LLM should know for this query, inside `token_budget` tokens.

        With `agent_id`, the context as that agent may see the user: memories (pinned, facts
        and relevant ones) only of that agent; turns and global context as for the user. The
        narrowing happens before assembly, so the budget is spent only on lines the agent may
        read and nothing of another agent's shows, not even in `dropped`.

        `asked_by` ("user" or "assistant") says who wrote `query`: a context for the user's
        latest message is asked by the user, whose "I" and "my" then name the user's turns and
        "you" the assistant's. In a group chat it names the speaker who wrote it ("Bob"), whose
        "I" is then Bob and "you" everyone else (`Recall.search`).

        A relevant memory or turn must score at least `min_score`, and at least
        `min_relative_score` times the best one's score: a question with a clear answer gets a
        short context, and a caller who pays per token can ask for a higher share.

        `leave_out` names turns (or memories) the caller's prompt holds already, such as the
        conversation a chat app sends with each call: they are not repeated as relevant lines.
        """
        check_budget(token_budget)
        check_min_relative_score(min_relative_score)
        limits = check_channel_limits(channel_limits)
        v.check_id("user_id", user_id)
        v.check_optional_id("session_id", session_id)
        moment = utcnow() if now is None else v.check_time("now", now)  # one moment for all
        if isinstance(leave_out, str):  # one id given alone would be read letter by letter
            raise Invalid("leave_out", "must be a list of ids")
        known = frozenset(leave_out)  # as long as the conversation: ids matching none are moot
        hits, standing = self.recall.for_context(
            user_id, query, limit=50, now=moment, min_score=min_score, agent_id=agent_id,
            session_id=session_id, channel_limits=limits, asked_by=asked_by,
        )  # fmt: skip
        sources = Sources(
            global_entries=self.list_global_context(),
            pinned=standing.pinned,
            facts=standing.facts,
            hits=[hit for hit in hits if hit.id not in known],
            recent=standing.recent,
        )
        return build_context(
            sources, token_budget=token_budget, min_relative_score=min_relative_score
        )

    def _index_changes(self, user_id: str, revision: int, accessed: int) -> Changes:
        """Decrypted rows written after `revision`, and the access counts that moved after the
        user's recall count `accessed`, for topping up the user's search index."""
        feed = self.store.changes_since(user_id, revision, accessed)
        items = [item_from_turn(open_turn(self.sealer, r), int(r["rev"])) for r in feed.turns]
        items += [
            item_from_memory(open_memory(self.sealer, r), int(r["rev"])) for r in feed.memories
        ]
        removed = [(t["item_type"], t["item_id"]) for t in feed.tombstones]
        user, agents = feed.user, feed.agents

        def people() -> People:
            return People(
                user=None if user is None else open_user(self.sealer, user).name,
                agents={row["id"]: open_agent(self.sealer, row).name for row in agents},
            )

        return Changes(
            revision=feed.revision,
            items=items,
            removed=removed,
            reset=feed.reset,
            people_key=_people_key(user, agents),
            people=people,
            accessed=0 if feed.user is None else int(feed.user["accessed"]),
            access_counts={row["id"]: int(row["access_count"]) for row in feed.recalled},
        )

    # -- statistics ------------------------------------------------------------------------

    @user_reads
    def stats(self, user_id: str, *, now: datetime | None = None) -> dict[str, Any]:
        """Counts, time span, per-channel totals, daily activity and streaks (UTC days)."""
        v.check_id("user_id", user_id)
        if self.store.get_user(user_id) is None:
            raise NotFound("no such user")
        today = (now or utcnow()).astimezone(UTC).date()
        return user_stats(self.store.counts(user_id), today)

    # -- export, import --------------------------------------------------------------------

    @user_reads
    def export_user(self, user_id: str) -> dict[str, Any]:
        """Everything of one user as plain JSON-ready data, versioned for `import_user`."""
        v.check_id("user_id", user_id)
        dump = self.store.dump_user(user_id)
        if dump is None:
            raise NotFound("no such user")
        return export_document(self.sealer, dump, self.list_agents(user_id))

    def import_user(self, data: Mapping[str, Any], *, user_id: str | None = None) -> User:
        """Load an export (into the same or another user id) in one transaction.

        Ids, sequence numbers and timestamps are kept. Anything that clashes with what the
        target user already has raises `Conflict`, and nothing is written. The whole export is
        checked before the user gets a data key, so a bad one does not leave an unused key.
        """
        dump = read_export(self.settings, data, user_id)
        target = dump["user"]["id"]
        self.store.load_user(seal_dump(self.sealer.for_user(target), dump), format_ts(utcnow()))
        self._publish("user.imported", target)
        return self.get_user(target)

    # -- keys ------------------------------------------------------------------------------

    def rotate_master_key(self, new_key: str | bytes | None = None) -> str:
        """Re-wrap every data key under a new master key; returns it as base64.

        With a key file, the file is replaced. With `MEMVAULT_MASTER_KEY`, the caller must put
        the returned key there before the next start.
        """
        if new_key is None:
            key = generate_key()
        elif isinstance(new_key, bytes):
            key = decode_key(encode_key(new_key), source="new_key")
        else:
            key = decode_key(new_key, source="new_key")
        self.keyring.rotate(key)
        return encode_key(key)

    # -- events ----------------------------------------------------------------------------

    def _publish(self, kind: str, user_id: str, **ids: Any) -> None:
        """Announce a committed write, and have the user's index take it up in the background
        (`Recall.written`); another process's writes come through the relay (`_keep_index`).
        A write of consolidation's is marked as such (`Event.upkeep`)."""
        if kind != "user.deleted":
            self.recall.written(user_id)
        upkeep = getattr(self._upkeep_writes, "active", False)
        self.events.publish(Event(kind, user_id, ids, upkeep=upkeep))

    @contextmanager
    def _own_upkeep(self) -> Iterator[None]:
        """Mark the writes this thread makes meanwhile as memvault's own upkeep: a background
        consolidation (`memvault.upkeep`) is not scheduled again by the facts a run added."""
        self._upkeep_writes.active = True
        try:
            yield
        finally:
            self._upkeep_writes.active = False

    def _keep_index(self, event: Event) -> None:
        """A deleted user's index goes, whichever process deleted it; another process's write
        is taken up by the user's index here, if one is cached (`Recall.written_elsewhere`)."""
        if event.type == "user.deleted":
            self.recall.forget(event.user_id)
        elif event.remote:
            self.recall.written_elsewhere(event.user_id)
