"""An append is one transaction on every backend: a turn that clashes undoes the whole call,
session counters and the user's revision included, and the next append carries on from there."""

from __future__ import annotations

import pytest

from memvault import Conflict, Vault


def test_a_clashing_append_leaves_session_and_revision_as_they_were(vault: Vault) -> None:
    first = vault.add_turn("u", "s", "user", "first")
    revision = vault.store.revision("u")
    clashing = [
        {"role": "user", "content": "would be second"},
        {"id": first.id, "role": "user", "content": "clash"},
    ]
    with pytest.raises(Conflict):
        vault.add_turns("u", "s", clashing)
    with pytest.raises(Conflict):
        vault.add_turns("u", "new-session", clashing)
    session = vault.get_session("u", "s")
    assert session.turn_count == 1 and [t.content for t in session.turns or ()] == ["first"]
    assert [s.id for s in vault.list_sessions("u")] == ["s"]
    assert vault.store.revision("u") == revision
    second = vault.add_turn("u", "s", "user", "second")
    assert second.seq == 2 and vault.store.revision("u") == revision + 1
