"""Events and caches across processes sharing one PostgreSQL database."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from memvault import Vault
from memvault.config import Settings
from memvault.crypto import encode_key, generate_key
from memvault.events import Event
from memvault.retrieval.embed import HashingEmbedder
from memvault.upkeep import Upkeep

OpenVault = Callable[[str], Vault]


@pytest.fixture
def master_key() -> str:
    return encode_key(generate_key())


@pytest.fixture
def open_vault(postgres_url: str, master_key: str, tmp_path: Path) -> Iterator[OpenVault]:
    """Vaults that stand for separate servers: own data folders, one database, one master key."""
    opened: list[Vault] = []

    def make(name: str) -> Vault:
        settings = Settings(data=tmp_path / name, database_url=postgres_url, master_key=master_key)
        opened.append(Vault(settings=settings, embedder=HashingEmbedder()))
        return opened[-1]

    yield make
    for vault in opened:
        vault.close()


def _collect(vault: Vault) -> queue.Queue[Event]:
    events: queue.Queue[Event] = queue.Queue()
    vault.events.subscribe(events.put)
    return events


def test_an_event_reaches_the_other_vault_once_and_never_echoes(open_vault: OpenVault) -> None:
    one, two = open_vault("one"), open_vault("two")
    heard_by_one, heard_by_two = _collect(one), _collect(two)
    turn = one.add_turn("alice", "s", "user", "private words")
    remote = heard_by_two.get(timeout=5)
    assert remote == Event("turn.added", "alice", {"session_id": "s", "turn_id": turn.id})
    assert "private words" not in repr(remote)
    assert heard_by_one.get(timeout=1) == remote  # the local event, delivered locally
    with pytest.raises(queue.Empty):  # neither the echo nor a relayed copy comes back
        heard_by_one.get(timeout=0.5)
    assert heard_by_two.empty()


def test_an_event_from_another_process_names_a_turn_this_one_can_load(
    open_vault: OpenVault, postgres_url: str, master_key: str, tmp_path: Path
) -> None:
    here = open_vault("here")
    heard = _collect(here)
    script = textwrap.dedent("""
        import sys
        from memvault import Vault
        with Vault(sys.argv[1]) as vault:
            vault.add_turn("bob", "chat", "user", "from the other process")
    """)
    env = {"MEMVAULT_DATABASE_URL": postgres_url, "MEMVAULT_MASTER_KEY": master_key}
    writer = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "there")],
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )
    assert writer.returncode == 0
    event = heard.get(timeout=5)
    assert (event.type, event.user_id) == ("turn.added", "bob")
    (turn,) = here.recent_turns("bob", session_id=event.ids["session_id"])
    assert (turn.id, turn.content) == (event.ids["turn_id"], "from the other process")


def test_a_warm_search_cache_sees_another_servers_write_at_once(open_vault: OpenVault) -> None:
    one, two = open_vault("one"), open_vault("two")
    one.add_turn("alice", "s", "user", "we planted tomatoes in the garden")
    assert [h.text for h in two.search("alice", "tomatoes garden")]  # cache now warm
    one.add_turn("alice", "s", "user", "the violin lesson moved to friday")
    hits = two.search("alice", "violin lesson")
    assert hits and "violin" in hits[0].text
    one.delete_user("alice")
    assert two.search("alice", "violin lesson") == []


def _cached_revision(vault: Vault, user_id: str) -> int | None:
    index = vault.recall.cache._indexes.get(user_id)
    return None if index is None else index.revision


def test_another_servers_writes_top_up_the_indexes_cached_here(open_vault: OpenVault) -> None:
    one, two = open_vault("one"), open_vault("two")
    heard = _collect(two)
    one.add_turn("alice", "s", "user", "we planted tomatoes in the garden")
    assert two.search("alice", "tomatoes garden")  # alice's index is now cached on two
    before = _cached_revision(two, "alice")
    one.add_turns(
        "alice", "s", [{"role": "user", "content": f"row {n} of beans"} for n in range(20)]
    )
    one.add_turn("bob", "s", "user", "bob's index is cached nowhere")
    for _ in range(21):
        assert heard.get(timeout=5).type == "turn.added"
    assert two.recall.warmer is not None and two.recall.warmer.settle(timeout=30)
    revision, _ = two.store.revision_and_recalls("alice")
    assert before is not None and before < revision
    assert _cached_revision(two, "alice") == revision  # caught up before any search
    assert not two.recall.cache.holds("bob")  # not built for a write it never searched


def test_upkeep_leaves_another_servers_writes_to_that_server(open_vault: OpenVault) -> None:
    one, two = open_vault("one"), open_vault("two")
    heard = _collect(two)
    upkeep = Upkeep(two, delay=60, poll_seconds=0.05)
    try:
        one.add_turn("alice", "s", "user", "written through the other server")
        assert heard.get(timeout=5).type == "turn.added"
    finally:
        upkeep.close()  # queues every write it still holds
    assert two.jobs.counts() == {}


def test_the_relay_reconnects_after_losing_its_connection(
    open_vault: OpenVault, postgres_url: str
) -> None:
    one, two = open_vault("one"), open_vault("two")
    heard = _collect(two)
    assert two.relay is not None
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s",
            (f'LISTEN "{two.relay.channel}"',),
        ).fetchall()
    assert len(killed) == 2  # both vaults listen on the channel
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        one.add_turn("alice", "s", "user", "are you there?")
        try:
            assert heard.get(timeout=0.5).type == "turn.added"
            return
        except queue.Empty:
            continue
    pytest.fail("no event arrived after the listener was cut off")


def test_a_malformed_notification_is_skipped(open_vault: OpenVault, postgres_url: str) -> None:
    one, two = open_vault("one"), open_vault("two")
    heard = _collect(two)
    assert two.relay is not None
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for garbage in ("not json", '{"type": "turn.added"}', "[1, 2]"):
            conn.execute("SELECT pg_notify(%s, %s)", (two.relay.channel, garbage))
    turn = one.add_turn("alice", "s", "user", "still flowing")
    assert heard.get(timeout=5).ids["turn_id"] == turn.id
