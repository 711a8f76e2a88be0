"""Query vectors computed beside the index work and kept briefly per user (`QueryVectors`), and
the single-text path of the MiniLM embedder that every query takes."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from embedders import CountingEmbedder

from memvault import Vault
from memvault.config import Settings
from memvault.errors import MemvaultError
from memvault.retrieval.embed import HashingEmbedder, MiniLMEmbedder, Vectors
from memvault.retrieval.fusion import Weights
from memvault.retrieval.index import Filters
from memvault.retrieval.recall import QueryVectors
from memvault.retrieval.search import Query, search_index

NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


class Counting(CountingEmbedder):
    """The counting embedder (`seen`), which fails its next `failures` calls as an embedding
    endpoint that is down would."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.failures = 0
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> Vectors:
        with self._lock:
            failing = self.failures > 0
            self.failures -= failing
        if failing:
            self.seen.extend(texts)
            raise MemvaultError("embedding endpoint answered HTTP 503")
        return super().embed(texts)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def counting() -> Counting:
    return Counting()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def vectors(counting: Counting, clock: Clock) -> Iterator[QueryVectors]:
    kept = QueryVectors(counting, max_entries=3, max_age=60.0, clock=clock)
    yield kept
    kept.close()


def test_a_repeated_query_reuses_its_vector_within_one_user(
    vectors: QueryVectors, counting: Counting
) -> None:
    first = vectors.vector("ann", "where is the key").result()
    again = vectors.vector("ann", "where is the key").result()
    assert again is first and counting.seen == ["where is the key"]
    assert np.array_equal(first, HashingEmbedder(64).embed(["where is the key"]))
    with pytest.raises(ValueError, match="read-only"):
        first[0, 0] = 1.0  # shared by every search of the text, so nobody may change it


def test_users_and_texts_never_share_an_entry(vectors: QueryVectors, counting: Counting) -> None:
    vectors.vector("ann", "where is the key").result()
    vectors.vector("bo", "where is the key").result()
    vectors.vector("ann", "where is the car").result()
    assert counting.seen == ["where is the key", "where is the key", "where is the car"]


def test_entries_expire_and_the_count_is_bounded(
    vectors: QueryVectors, counting: Counting, clock: Clock
) -> None:
    for text in ("one", "two", "three", "four"):
        vectors.vector("ann", text).result()
    assert len(vectors) == 3
    vectors.vector("ann", "one").result()  # the oldest was evicted: embedded again
    assert counting.seen.count("one") == 2
    clock.now += 60.0
    assert vectors.vector("ann", "four").result() is not None
    assert counting.seen.count("four") == 2 and len(vectors) == 1


def test_forget_drops_only_that_users_entries(vectors: QueryVectors, counting: Counting) -> None:
    vectors.vector("ann", "hello").result()
    vectors.vector("bo", "hello").result()
    vectors.forget("ann")
    assert len(vectors) == 1
    vectors.vector("bo", "hello").result()
    vectors.vector("ann", "hello").result()
    assert counting.seen == ["hello"] * 3


def test_a_failed_embedding_is_raised_then_tried_again(
    vectors: QueryVectors, counting: Counting
) -> None:
    counting.failures = 1
    with pytest.raises(MemvaultError, match="503"):
        vectors.vector("ann", "hello").result()
    assert vectors.vector("ann", "hello").result().shape == (1, 64)
    assert counting.seen == ["hello", "hello"]


def test_after_close_vectors_are_still_given_but_not_kept(
    vectors: QueryVectors, counting: Counting
) -> None:
    vectors.vector("ann", "hello").result()
    vectors.close()
    assert vectors.vector("ann", "hello").result().shape == (1, 64)
    assert len(vectors) == 0 and counting.seen == ["hello", "hello"]


def test_search_then_context_embeds_the_query_once(tmp_path: Path) -> None:
    counting = Counting()
    vault = Vault(tmp_path, embedder=counting)
    try:
        vault.add_turn("ann", "s1", "user", "I keep the spare key under the blue flowerpot")
        vault.add_turn("ann", "s1", "user", "The car is parked on level three")
        vault.search("ann", "warm up the index")  # embeds the turns themselves
        counting.seen.clear()
        hits = vault.search("ann", "where did I put the spare key?")
        context = vault.context("ann", "where did I put the spare key?")
        assert counting.seen == ["where did I put the spare key?"]
        assert hits[0].text == "I keep the spare key under the blue flowerpot"
        assert "blue flowerpot" in context.text
        assert vault.search("nobody", "where did I put the spare key?") == []
        assert counting.seen == ["where did I put the spare key?"]  # no index: no embedding
        assert vault.search("ann", "spare key", weights=Weights.for_mode("bm25"))
        assert "spare key" not in counting.seen  # BM25 only: nothing to embed
    finally:
        vault.close()


def test_the_query_is_embedded_without_the_speakers_names(tmp_path: Path) -> None:
    counting = Counting()
    # the searches top the index up themselves, so the order of what is embedded is theirs
    vault = Vault(tmp_path, settings=Settings(warm_indexes=False), embedder=counting)
    try:
        vault.add_turn("u", "s1", "user", "Hey Caroline! I'm off swimming", speaker="Melanie")
        vault.search("u", "What activities does Melanie partake in?")  # builds the index first
        assert counting.seen[-1] == "What activities does partake in?"
        counting.seen.clear()
        vault.search("u", "What did Melanie and Jon paint?")  # started before the checkout
        vault.add_turn("u", "s1", "user", "We painted a lake", speaker="Jon Smith")
        vault.search("u", "What did Melanie and Jon paint?")  # a speaker new since: again
        vault.search("u", "What did Melanie do?")  # nothing left but stop words: kept whole
        vault.add_turn("u", "s1", "user", "Sure", speaker="Will")
        vault.search("u", "Will I need a visa, Melanie?")  # a stop word, here not a name
        vault.search("u", "What did Will say about it?")  # here a name
        assert counting.seen == [
            "What did and Jon paint?", "Jon Smith: We painted a lake", "What did and paint?",
            "What did Melanie do?", "Will I need a visa,?", "Will: Sure", "What did say about it?",
        ]  # fmt: skip
    finally:
        vault.close()


def test_a_vector_computed_ahead_ranks_exactly_like_one_computed_inline(tmp_path: Path) -> None:
    vault = Vault(tmp_path, embedder=HashingEmbedder(64))
    try:
        for text in ("red kite over the hill", "a kite shop", "hill walking boots", "kites"):
            vault.add_turn("ann", "s1", "user", text, created_at=NOW)
        ahead = vault.search("ann", "kite on a hill", now=NOW)
        index = vault.recall.cache.get("ann", vault.store.revision("ann"))
        query = Query(text="kite on a hill", limit=10, filters=Filters(now=NOW), now=NOW)
        inline = search_index(index, query, Weights())
        assert len(ahead) == 4
        assert [(h.id, h.score) for h in ahead] == [(h.id, h.score) for h in inline]
    finally:
        vault.close()


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_minilm_single_text_path_matches_the_batch_path(minilm: MiniLMEmbedder) -> None:
    texts = ["hello there", "Caroline: I went to the support group yesterday!", "word " * 600]
    batched = minilm.embed([*texts, "padding partner of a rather different length"])
    for row, text in enumerate(texts):
        alone = minilm.embed([text])
        assert alone.shape == (1, 384) and alone.dtype == np.float32
        assert float(alone[0] @ batched[row]) > 0.9999
    assert not minilm.embed(["  "]).any()
