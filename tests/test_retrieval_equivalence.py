"""An index kept up to date write by write ranks exactly as one built from the same rows.

The cache tops a user's index up from the rows written since its revision instead of
rebuilding it, so every write path must leave the index as a fresh build would be: turns
appended one at a time with searches in between (a chat) or through the server's group commit,
memories rewritten (text, kind, tier, importance, tags), superseded and deleted, sessions
deleted, a channel cleared out of sessions that mix channels, the user renamed and agents
registered (their names name the turns that give only a role), memories recalled by another
process (access counts move no revision), and the compactions all this leads to. Each case
replays a seeded random history, then asks every query, bare and under each
filter, of the live vault and of a second vault opened on the same store, and compares hits and
scores.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TypedDict, cast

import pytest

from memvault import Vault
from memvault.errors import NotFound
from memvault.retrieval.embed import HashingEmbedder
from memvault.retrieval.search import Hit

START = datetime(2024, 1, 1, tzinfo=UTC)
WORDS = [
    "dog", "cat", "hike", "trail", "pottery", "swim", "lake", "paint", "book", "novel",
    "guitar", "violin", "music", "job", "office", "boss", "sister", "brother", "mom", "camping",
    "beach", "trip", "paris", "tokyo", "ramen", "pizza", "coffee", "garden", "roses", "yoga",
    "marathon", "chess", "movie",
]  # fmt: skip
NAMED = ["what did Bo say", "what does Cy like about hiking", "Dot said what of pizza",
         "Ann Lee and the dog", "Lee on coffee"]  # fmt: skip
QUERIES = WORDS + [f"{a} {b}" for a, b in zip(WORDS, WORDS[3:], strict=False)] + NAMED
FILTERS: list[dict[str, object]] = [
    {"types": ["memory"], "kinds": ["fact"]},
    {"tiers": ["working", "archive"]},
    {"tags": ["home"]},
    {"types": ["turn"], "session_id": "the newest live session"},
    {"since": START + timedelta(days=50), "until": START + timedelta(days=150)},
]


class MemoryFields(TypedDict, total=False):
    """Fields of a memory beside its text, as `Vault.add_memory` and `update_memory` take them."""

    kind: str
    tier: str
    importance: float
    tags: list[str]


class History:
    """A random but reproducible life of one user's data, written through the `Vault`."""

    def __init__(self, vault: Vault, other: Vault, seed: int) -> None:
        self.vault = vault
        self.other = other  # another process on the same store: its recalls move no revision
        self.rng = random.Random(seed)
        self.sessions: list[str] = []
        self.memories: list[str] = []
        self.agents: list[str | None] = [None]
        self.day = 0

    def sentence(self) -> str:
        words = [self.rng.choice(WORDS) for _ in range(self.rng.randint(2, 9))]
        return " ".join(words).capitalize() + self.rng.choice(".!?")

    def step(self) -> None:
        self.day += 1
        choice = self.rng.random()
        if choice < 0.45 or not self.sessions:
            self.append_turns()
        elif choice < 0.60:
            memory = self.vault.add_memory("u", self.sentence(), **self.memory_fields())
            self.memories.append(memory.id)
        elif choice < 0.67 and self.memories:
            memory_id = self.rng.choice(self.memories)
            fields: Mapping[str, object] = self.rng.choice(
                [{"text": self.sentence()}, self.memory_fields()]
            )
            self.vault.update_memory("u", memory_id, **fields)
        elif choice < 0.74 and self.memories:
            memory_id = self.memories.pop(self.rng.randrange(len(self.memories)))
            self.vault.delete_memory("u", memory_id)
        elif choice < 0.80 and self.memories:
            memory_id = self.memories.pop(self.rng.randrange(len(self.memories)))
            self.memories.append(self.vault.supersede_memory("u", memory_id, self.sentence()).id)
        elif choice < 0.94:
            session_id = self.sessions.pop(self.rng.randrange(len(self.sessions)))
            self.vault.delete_session("u", session_id)
        elif choice < 0.97:
            self.vault.clear("u", channel=self.rng.choice(("ai", "general")))
            self.sessions = [s for s in self.sessions if self._has_turns(s)]
        elif choice < 0.985:
            self.vault.put_user("u", {"name": self.rng.choice(("Cy", "Ann Lee", 7))})
        else:
            name = self.rng.choice(("Dot", "Bo", "Dot Com"))
            self.agents.append(self.vault.register_agent("u", name).id)
        if self.rng.random() < 0.5:  # the index is topped up between some writes, not others
            self.vault.search("u", self.rng.choice(WORDS), limit=5)
        if self.rng.random() < 0.2:
            self.other.search("u", self.rng.choice(WORDS), limit=5)

    def memory_fields(self) -> MemoryFields:
        """What a memory may be given or changed to, beside its text: every filter's column."""
        fields: dict[str, object] = {
            "kind": self.rng.choice(("fact", "episodic", "procedural")),
            "tier": self.rng.choice(("working", "long_term", "archive")),
            "importance": round(self.rng.random(), 2),
            "tags": self.rng.sample(("home", "work", "health"), self.rng.randint(0, 2)),
        }
        picked = self.rng.sample(sorted(fields.items()), self.rng.randint(1, len(fields)))
        return cast(MemoryFields, dict(picked))

    def append_turns(self) -> None:
        if self.sessions and self.rng.random() < 0.6:
            session_id = self.rng.choice(self.sessions)
        else:
            session_id = f"s{self.day}"
            self.sessions.append(session_id)
        turns = [
            {
                "role": self.rng.choice(("user", "assistant")),
                "content": self.sentence(),
                "speaker": self.rng.choice(("Ann", "Bo", None, None)),
                "agent_id": self.rng.choice(self.agents),
                "channel": self.rng.choice(("ai", "general")),
                "created_at": START + timedelta(days=self.day),
            }
            for _ in range(self.rng.randint(1, 4))
        ]
        if self.rng.random() < 0.5:
            self.vault.add_turns("u", session_id, turns)
        else:  # the server's group commit, one group per turn
            self.vault.add_turn_groups([("u", session_id, [turn]) for turn in turns])

    def _has_turns(self, session_id: str) -> bool:
        try:
            return bool(self.vault.session_turns("u", session_id))
        except NotFound:
            return False


def _ranked(hits: list[Hit]) -> list[tuple[float, str]]:
    """Hits as (score, id), best first; items tied at the last score are left out, since which
    of them makes the cut depends on the order they were indexed in, not on their rank."""
    ranked = sorted((-round(h.score, 5), h.id) for h in hits)
    if ranked and len(hits) == 10:
        ranked = [r for r in ranked if r[0] != ranked[-1][0]]
    return ranked


@pytest.mark.parametrize("seed", [3, 4, 5])  # each names the user and registers agents
def test_an_index_topped_up_write_by_write_ranks_as_a_fresh_build(
    recall_vault: Vault, seed: int
) -> None:
    vault = recall_vault
    other = Vault(settings=vault.settings, embedder=HashingEmbedder())
    history = History(vault, other, seed)
    history.append_turns()
    first_index = vault.recall.cache.get("u", vault.store.revision("u"))
    for _ in range(150):
        history.step()
    other.close()  # its access writes done: the next search reads their counts
    history.append_turns()
    now = START + timedelta(days=history.day + 1)
    filters = [
        {**f, "session_id": history.sessions[-1]} if "session_id" in f else f for f in FILTERS
    ]
    unfiltered: list[tuple[str, dict[str, object]]] = [(q, {}) for q in QUERIES]
    asked = unfiltered + [(q, f) for q in WORDS[::3] for f in filters]
    live = [vault.search("u", q, now=now, record_access=False, **f) for q, f in asked]
    assert vault.recall.cache.get("u", vault.store.revision("u")) is not first_index  # compacted
    vault.recall.close()  # the access counts searches recorded are written before the rebuild
    fresh_vault = Vault(settings=vault.settings, embedder=HashingEmbedder())
    try:
        for (query, options), hits in zip(asked, live, strict=True):
            fresh = fresh_vault.search("u", query, now=now, record_access=False, **options)
            assert _ranked(hits) == _ranked(fresh), (query, options)
        assert sum(len(hits) for hits in live) > len(asked)  # the check checked much
        assert all(
            any(live[i] for i in range(len(QUERIES) + n, len(asked), len(FILTERS)))
            for n in range(len(FILTERS))
        )  # and every filter let something through
    finally:
        fresh_vault.close()
