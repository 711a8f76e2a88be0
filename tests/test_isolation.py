"""User B can never reach user A's data through any Vault method."""

from __future__ import annotations

import pytest

from memvault import NotFound, Vault


@pytest.fixture
def alice(vault: Vault) -> dict[str, str]:
    turn = vault.add_turn("alice", "alice-chat", "user", "alice's secret plan")
    memory = vault.add_memory("alice", "alice's private fact")
    return {"turn": turn.id, "memory": memory.id, "session": "alice-chat"}


def test_reads_as_bob_see_nothing_of_alice(vault: Vault, alice: dict[str, str]) -> None:
    vault.add_turn("bob", "bob-chat", "user", "bob's own words")
    assert [t.content for t in vault.recent_turns("bob")] == ["bob's own words"]
    assert vault.recent_turns("bob", session_id=alice["session"]) == []
    assert [s.id for s in vault.list_sessions("bob")] == ["bob-chat"]
    assert vault.list_memories("bob") == []
    assert "alice" not in repr(vault.export_user("bob"))
    assert vault.stats("bob")["turns"] == 1
    for call in (
        lambda: vault.get_session("bob", alice["session"]),
        lambda: vault.session_turns("bob", alice["session"]),
        lambda: vault.get_memory("bob", alice["memory"]),
    ):
        with pytest.raises(NotFound):
            call()


def test_writes_as_bob_cannot_touch_alice(vault: Vault, alice: dict[str, str]) -> None:
    vault.add_turn("bob", "bob-chat", "user", "hi")
    for call in (
        lambda: vault.update_memory("bob", alice["memory"], text="overwritten"),
        lambda: vault.move_memory("bob", alice["memory"], tier="archive"),
        lambda: vault.delete_memory("bob", alice["memory"]),
        lambda: vault.delete_session("bob", alice["session"]),
        lambda: vault.update_session("bob", alice["session"], title="mine"),
    ):
        with pytest.raises(NotFound):
            call()
    vault.clear("bob")
    # Appending to a session id alice uses creates bob's own session; hers is unchanged.
    vault.add_turn("bob", alice["session"], "user", "bob here")
    assert [t.content for t in vault.get_session("alice", alice["session"]).turns or ()] == [
        "alice's secret plan"
    ]
    assert vault.get_memory("alice", alice["memory"]).text == "alice's private fact"
    assert [t.content for t in vault.recent_turns("bob")] == ["bob here"]


def test_deleting_bob_leaves_alice(vault: Vault, alice: dict[str, str]) -> None:
    vault.add_turn("bob", "b", "user", "bye")
    vault.delete_user("bob")
    with pytest.raises(NotFound):
        vault.delete_user("bob")
    assert vault.get_memory("alice", alice["memory"]).text == "alice's private fact"
    assert vault.recent_turns("alice")[0].content == "alice's secret plan"


def test_deleting_a_user_revokes_their_keys_and_drops_their_jobs(vault: Vault) -> None:
    vault.add_turn("carol", "s", "user", "hello")
    vault.add_turn("dave", "s", "user", "hello")
    _, carol_secret = vault.keys.create("user", "carol")
    _, dave_secret = vault.keys.create("user", "dave")
    carol_job = vault.jobs.enqueue("extraction", "carol", {"turn_id": "t1"})
    dave_job = vault.jobs.enqueue("extraction", "dave", {"turn_id": "t2"})
    vault.delete_user("carol")
    assert vault.keys.authenticate(carol_secret) is None
    assert vault.jobs.get(carol_job) is None
    assert vault.keys.authenticate(dave_secret) is not None
    assert vault.jobs.get(dave_job) is not None
