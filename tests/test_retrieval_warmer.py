"""Indexes are topped up after writes on a background thread: the next search finds what was
written embedded already, still sees every write when it comes first, and closing or deleting
never waits for a long top-up nor leaves a deleted user's words behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from embedders import CountingEmbedder, GatedEmbedder

from memvault import Vault
from memvault.config import Settings
from memvault.retrieval.cache import EMBED_CHUNK, Changes, IndexCache, Stopped, VectorStore
from memvault.retrieval.embed import HashingEmbedder
from memvault.retrieval.warmer import IndexWarmer

OpenVault = Callable[..., Vault]


@pytest.fixture
def open_vault(tmp_path: Path, backend_settings: dict[str, Any]) -> Iterator[OpenVault]:
    """Vaults on one data folder (and database), each with the embedder it is given."""
    opened: list[Vault] = []

    def make(embedder: HashingEmbedder, **overrides: Any) -> Vault:
        settings = Settings(data=tmp_path / "data", **backend_settings, **overrides)
        vault = Vault(settings=settings, embedder=embedder)
        opened.append(vault)
        return vault

    yield make
    for vault in opened:
        vault.close()


def _notes(count: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"note {n} about the mill pond"} for n in range(count)]


def _stored_vectors(vault: Vault, user_id: str) -> int:
    return len(vault.recall.cache._vectors.load(user_id, vault.embedder.name, 0))  # type: ignore[union-attr]


def test_written_items_are_embedded_before_the_next_search(open_vault: OpenVault) -> None:
    embedder = CountingEmbedder()
    vault = open_vault(embedder)
    vault.add_turns("ann", "s1", _notes(40))
    vault.add_memory("ann", "Ann keeps bees behind the mill")
    assert vault.recall.warmer is not None and vault.recall.warmer.settle(timeout=30)
    assert len(embedder.seen) == 41  # every item, without a search
    assert _stored_vectors(vault, "ann") == 41
    hits = vault.search("ann", "bees")
    assert hits[0].text == "Ann keeps bees behind the mill"
    assert len(embedder.seen) == 42  # the query alone: nothing was left to embed


def test_a_search_right_after_a_write_sees_it(open_vault: OpenVault) -> None:
    vault = open_vault(CountingEmbedder())
    for session in range(5):
        vault.add_turns("ann", f"s{session}", _notes(EMBED_CHUNK))
        vault.add_turn("ann", f"s{session}", "user", f"the heron came back in week {session}")
        hits = vault.search("ann", f"heron week {session}", limit=1)
        assert hits[0].text == f"the heron came back in week {session}"


def test_another_process_reads_the_vectors_the_writer_stored(open_vault: OpenVault) -> None:
    writer = open_vault(CountingEmbedder())
    writer.add_turns("ann", "s1", _notes(30))
    assert writer.recall.warmer is not None and writer.recall.warmer.settle(timeout=30)
    reader_embedder = CountingEmbedder()
    reader = open_vault(reader_embedder)  # its own cache, as a second process has
    assert reader.search("ann", "note 7 mill pond")[0].text == "note 7 about the mill pond"
    assert reader_embedder.seen == ["note 7 mill pond"]


def test_without_warming_the_search_embeds_what_was_written(open_vault: OpenVault) -> None:
    embedder = CountingEmbedder()
    vault = open_vault(embedder, warm_indexes=False)
    assert vault.recall.warmer is None
    vault.add_turns("ann", "s1", _notes(10))
    assert embedder.seen == []
    vault.search("ann", "mill pond")
    assert len(embedder.seen) == 11


def test_a_stopped_top_up_changes_nothing_and_keeps_what_it_embedded(
    open_vault: OpenVault,
) -> None:
    embedder = CountingEmbedder()
    vault = open_vault(embedder, warm_indexes=False)
    vault.add_turns("ann", "s1", _notes(2 * EMBED_CHUNK + 10))
    cache = vault.recall.cache
    stop = threading.Event()
    first = cache._vectors
    assert first is not None

    class StopAfterFirstChunk:
        """The vault's own vector store, asking the top-up to stop once a chunk is saved."""

        def __init__(self, store: VectorStore) -> None:
            self.store = store

        def __getattr__(self, name: str) -> Any:
            return getattr(self.store, name)

        def save(self, *args: Any) -> None:
            self.store.save(*args)
            stop.set()

    cache._vectors = StopAfterFirstChunk(first)
    with pytest.raises(Stopped):
        cache.warm("ann", vault.store.revision("ann"), 0, stop)
    cache._vectors = first
    assert cache.speaker_words("ann") is None  # no index was cached
    assert _stored_vectors(vault, "ann") == EMBED_CHUNK
    embedder.seen.clear()
    vault.search("ann", "mill pond")
    assert len(embedder.seen) == EMBED_CHUNK + 10 + 1  # the rest, and the query


def test_close_stops_a_long_top_up_after_the_chunk_under_way(open_vault: OpenVault) -> None:
    embedder = GatedEmbedder()
    vault = open_vault(embedder)
    embedder.closed.set()
    vault.add_turns("ann", "s1", _notes(3 * EMBED_CHUNK))
    assert embedder.entered.wait(timeout=30)  # the top-up is embedding its first chunk
    closing = threading.Thread(target=vault.close)
    closing.start()
    assert vault.recall.warmer is not None
    while not vault.recall.warmer._stop.is_set():  # the close has asked it to stop
        closing.join(timeout=0.01)
    embedder.opened.set()
    closing.join(timeout=30)
    assert not closing.is_alive()
    assert len(embedder.seen) == EMBED_CHUNK  # the chunk under way, and no other
    reopened = open_vault(CountingEmbedder())
    assert _stored_vectors(reopened, "ann") == 0  # given up: it came back unheard


def test_a_top_up_gives_way_to_a_search_at_once_giving_up_its_chunk(
    open_vault: OpenVault,
) -> None:
    embedder = GatedEmbedder()
    vault = open_vault(embedder)
    embedder.closed.set()
    vault.add_turns("ann", "s1", _notes(3 * EMBED_CHUNK))
    vault.add_turn("ann", "s1", "user", "the heron nests by the weir")
    assert embedder.entered.wait(timeout=30)  # the top-up is embedding its first chunk
    found: list[str] = []
    searching = threading.Thread(
        target=lambda: found.extend(h.text for h in vault.search("ann", "heron weir", limit=1)),
        name="searcher",
    )
    searching.start()
    searching.join(timeout=30)
    assert found == ["the heron nests by the weir"]  # with the top-up's chunk at the gate
    assert [run.abandoned for run in embedder.runs] == [True]  # its model run told to end
    assert vault.recall.warmer is not None and vault.recall.warmer.settle(timeout=30)
    embedder.opened.set()
    deadline = time.monotonic() + 30
    while len(embedder.callers) < 2 and time.monotonic() < deadline:  # the chunk, unheard
        time.sleep(0.01)
    assert embedder.callers == ["searcher", "memvault-idle-embedder"]  # no second chunk
    assert len(embedder.seen) == 3 * EMBED_CHUNK + 1 + EMBED_CHUNK


def test_a_user_deleted_during_a_top_up_leaves_no_index_behind(open_vault: OpenVault) -> None:
    embedder = GatedEmbedder()
    vault = open_vault(embedder)
    vault.add_turn("ann", "s1", "user", "my bank pin is in the blue book")
    assert vault.recall.warmer is not None and vault.recall.warmer.settle(timeout=30)
    embedder.closed.set()
    vault.add_turn("ann", "s1", "user", "and the spare key under the pot")
    assert embedder.entered.wait(timeout=30)  # the top-up holds the index
    vault.delete_user("ann")  # does not wait for the top-up (nor can it put the index back)
    embedder.opened.set()
    assert vault.recall.warmer.settle(timeout=30)
    assert vault.recall.cache.speaker_words("ann") is None
    assert vault.recall.cache.nbytes() == 0
    assert vault.search("ann", "bank pin") == []


def test_a_failed_top_up_is_logged_by_type_and_the_search_tries_again(
    open_vault: OpenVault, caplog: pytest.LogCaptureFixture
) -> None:
    class FailingOnce(CountingEmbedder):
        failed = False

        def embed(self, texts: Any) -> Any:
            if not self.failed:
                self.failed = True
                raise RuntimeError("the secret text " + " ".join(texts))
            return super().embed(texts)

    vault = open_vault(FailingOnce())
    vault.add_turn("ann", "s1", "user", "the vault code is 4411")
    assert vault.recall.warmer is not None and vault.recall.warmer.settle(timeout=30)
    assert "RuntimeError" in caplog.text
    assert "4411" not in caplog.text and "secret" not in caplog.text
    assert vault.search("ann", "vault code")[0].text == "the vault code is 4411"


def test_an_index_forgotten_while_being_built_is_not_cached_after() -> None:
    gate, entered = threading.Event(), threading.Event()

    def slow_loader(user_id: str, revision: int, accessed: int) -> Changes:
        entered.set()
        gate.wait(timeout=30)
        return Changes(revision=7)

    cache = IndexCache(HashingEmbedder(), slow_loader)
    building = threading.Thread(target=cache.get, args=("ann", 7))
    building.start()
    assert entered.wait(timeout=30)
    cache.forget("ann")  # does not wait for the build
    gate.set()
    building.join(timeout=30)
    assert cache.speaker_words("ann") is None
    assert cache.nbytes() == 0
    cache.get("ann", 7)  # the next build is cached as usual
    assert cache.speaker_words("ann") is not None


def test_a_burst_of_writes_shares_one_top_up_and_a_writer_who_never_pauses_gets_one() -> None:
    refreshed: list[str] = []
    warmer = IndexWarmer(lambda user_id, stop: refreshed.append(user_id), quiet=1.0, max_wait=60)
    try:
        for _ in range(30):  # 1.5 s of writes, never a second apart
            warmer.written("ann")
            time.sleep(0.05)
        warmer.written("bea")
        assert refreshed == []  # still writing, as far as it knows
        assert warmer.settle(timeout=30)
        assert sorted(refreshed) == ["ann", "bea"]
    finally:
        warmer.close()
    refreshed.clear()
    warmer = IndexWarmer(lambda user_id, stop: refreshed.append(user_id), quiet=60, max_wait=0.1)
    try:
        deadline = time.monotonic() + 30
        while not refreshed and time.monotonic() < deadline:
            warmer.written("ann")  # never a pause of a minute
            time.sleep(0.01)
        assert refreshed == ["ann"]
    finally:
        warmer.close()


def test_a_longer_pause_asked_for_waits_and_a_shorter_one_brings_the_top_up_forward() -> None:
    refreshed: list[tuple[str, float]] = []
    start = time.monotonic()
    warmer = IndexWarmer(
        lambda user_id, stop: refreshed.append((user_id, time.monotonic() - start)),
        quiet=0.05,
        max_wait=60,
    )
    try:
        warmer.written("ann", quiet=30)  # another process's write, say
        time.sleep(0.3)
        assert refreshed == []  # well past the warmer's own pause
        warmer.written("ann")  # a write here: its own pause wins
        assert warmer.settle(timeout=10)
        assert [user_id for user_id, _ in refreshed] == ["ann"]
        assert refreshed[0][1] < 10
    finally:
        warmer.close()


def _searched_in_turn(
    open_vault: OpenVault, users: list[str]
) -> tuple[Vault, CountingEmbedder, IndexWarmer, IndexCache]:
    """A vault whose `users` each wrote 40 notes, warmed, then searched in that order: the
    first is the least recently used."""
    embedder = CountingEmbedder()
    vault = open_vault(embedder)
    warmer, cache = vault.recall.warmer, vault.recall.cache
    assert warmer is not None
    for user_id in users:
        vault.add_turns(user_id, "s1", _notes(40))
    assert warmer.settle(timeout=30)
    for user_id in users:
        vault.search(user_id, "mill pond")
    return vault, embedder, warmer, cache


def _watch_loads(cache: IndexCache) -> list[int]:
    """The revisions the cache's loader is asked to read from, from now on."""
    loaded_since: list[int] = []
    load = cache._loader

    def watched(user_id: str, revision: int, accessed: int) -> Changes:
        loaded_since.append(revision)
        return load(user_id, revision, accessed)

    cache._loader = watched
    return loaded_since


def test_past_the_cache_budget_only_new_rows_get_vectors_and_no_index_is_pushed_out(
    open_vault: OpenVault,
) -> None:
    vault, embedder, warmer, cache = _searched_in_turn(open_vault, ["ann"])
    cache.max_bytes = cache.nbytes()  # full: ann's index alone
    vault.add_turns("bea", "s1", _notes(30))
    assert warmer.settle(timeout=30)
    assert _stored_vectors(vault, "bea") == 30
    assert cache.speaker_words("bea") is None  # no index built for bea
    assert cache.speaker_words("ann") is not None  # nor ann's pushed out for it
    embedder.seen.clear()
    loaded_since = _watch_loads(cache)
    vault.add_turns("bea", "s2", [{"role": "user", "content": "the heron is back"}])
    assert warmer.settle(timeout=30)
    assert embedder.seen == ["the heron is back"]  # the new row, not bea's history
    assert loaded_since and 0 not in loaded_since  # bea's history was not read again
    embedder.seen.clear()
    assert vault.search("bea", "heron")[0].text == "the heron is back"
    assert embedder.seen == ["heron"]  # the search built bea's index from stored vectors


def test_a_background_top_up_does_not_count_as_a_use(open_vault: OpenVault) -> None:
    vault, _, warmer, cache = _searched_in_turn(open_vault, ["ann", "bea"])
    vault.add_turns("cid", "s1", _notes(40))
    assert warmer.settle(timeout=30)
    cache.forget("cid")  # cid has stored vectors and no index
    vault.add_turn("ann", "s1", "user", "one more note")
    assert warmer.settle(timeout=30)  # ann topped up in the background
    cache.max_bytes = cache.nbytes()
    vault.search("cid", "mill pond")  # one index must go for cid's
    assert cache.speaker_words("ann") is None  # still the least recently used
    assert cache.speaker_words("bea") is not None


def test_an_index_grown_in_the_background_goes_before_one_searched_since(
    open_vault: OpenVault,
) -> None:
    vault, _, warmer, cache = _searched_in_turn(open_vault, ["ann", "bea"])
    cache.max_bytes = cache.nbytes()
    vault.add_turns("ann", "s2", _notes(200))  # ann's top-up takes it over the budget
    assert warmer.settle(timeout=30)
    assert cache.speaker_words("ann") is None  # ann's own index went
    assert cache.speaker_words("bea") is not None
    assert _stored_vectors(vault, "ann") == 240  # its vectors kept for the next search


def test_an_index_built_in_the_background_beyond_the_budget_goes_first(
    open_vault: OpenVault,
) -> None:
    vault, _, warmer, cache = _searched_in_turn(open_vault, ["ann"])
    cache.max_bytes = int(2.05 * cache.nbytes())  # room for a second index like ann's
    long_notes = [
        {"role": "user", "content": " ".join(f"word{n}x{w}" for w in range(200))} for n in range(40)
    ]
    vault.add_turns("bea", "s1", long_notes)  # as many items as ann, each far larger
    assert warmer.settle(timeout=30)
    assert cache.speaker_words("bea") is None  # built, over the budget, and let go first
    assert cache.speaker_words("ann") is not None
    assert cache.nbytes() <= cache.max_bytes


def test_an_index_larger_than_the_whole_budget_is_not_built_again_after_each_write(
    open_vault: OpenVault,
) -> None:
    vault = open_vault(CountingEmbedder())
    warmer, cache = vault.recall.warmer, vault.recall.cache
    assert warmer is not None
    cache.max_bytes = 1  # no index fits
    vault.add_turns("ann", "s1", _notes(40))
    assert warmer.settle(timeout=30)
    assert cache.speaker_words("ann") is None  # built once, over the budget, and let go
    loaded_since = _watch_loads(cache)
    for session in ("s2", "s3"):
        vault.add_turn("ann", session, "user", "the heron is back")
        assert warmer.settle(timeout=30)
    assert loaded_since and 0 not in loaded_since  # ann's history was not read again
    assert _stored_vectors(vault, "ann") == 42
