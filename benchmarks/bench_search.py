"""Search latency per user at 1k, 10k and 100k items (and p99 at 1M with the ANN index), index
build and top-up cost, and context assembly at 100k.

The corpus is synthetic: Zipf-distributed English words from the bundled tokenizer vocabulary,
in sessions of 20 turns between two speakers. Document vectors are random unit vectors (embedding
100k real texts would take minutes and measures the model, not the index); each query is
embedded by the real MiniLM model, so query latencies include it. Index build with real
embeddings is reported separately per 1k items. An index past the HNSW threshold answers as soon
as its rows are in, by exact search, while its graph is built in another process
(`build_s_without_embedding`, then `graph_in_after_s`); at 100k the baseline in the same run
builds the graph inline, in the search that needs it (`build_s_with_the_graph_inline`).
Latencies are measured once the graph is in.

`hybrid` times `search_index` alone, embedding the query inline; `recall` times `Recall.search`
(what `Vault.search` runs once it has the user's revision), which embeds the query on a worker
thread beside the BM25 walk; `recall_repeat` is the same text searched a second time, as
`Vault.context` does after a search, when the query vector is reused; `recall_naming_a_time`
is `recall` with "last month" added to each query, which adds the best matches from inside that
month to the candidates, timed in alternating blocks with the same queries without it
(`recall_alongside_it`; a fresh set of queries for both). The baseline in the same
run, `recall_full_model_queries`, embeds queries with the full model instead of the quantised
query model (query_model.py); the two are timed in alternating blocks of 25 queries, so that the
machine's drift falls on both alike while each block runs with one model's weights in cache, as
a server would. Like `memvault serve`, the benchmark settles the garbage collector after each
large top-up (`settle_garbage`).

Run: `python -m benchmarks search` (1k to 100k and context, a few minutes on 2 cores), and
`python -m benchmarks.bench_search --large` to add the 1M run (about 10 more minutes: building
the BM25 postings and the HNSW graph for a million items dominates).
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from benchmarks.common import summary_ms, write_results
from memvault.api.serve import prepare, settle_garbage
from memvault.retrieval.cache import Changes, ItemKey
from memvault.retrieval.embed import (
    TOKENIZER_PATH,
    HashingEmbedder,
    MiniLMEmbedder,
    Vectors,
    default_embedder,
    normalise,
)
from memvault.retrieval.fusion import Weights
from memvault.retrieval.index import Filters, UserIndex
from memvault.retrieval.items import Item
from memvault.retrieval.recall import QueryVectors, Recall
from memvault.retrieval.search import Query, search_index
from memvault.vault import Vault

SIZES = (1_000, 10_000, 100_000)
LARGE = 1_000_000
QUERIES = 300
BLOCK = 25  # queries timed in a row with one model, before switching to the other
CHUNK = 10_000
USER = "bench"
NOW = datetime(2025, 1, 1, tzinfo=UTC)
RNG = np.random.default_rng(42)


def _vocabulary() -> list[str]:
    vocab = json.loads(TOKENIZER_PATH.read_text(encoding="utf-8"))["model"]["vocab"]
    return [w for w in vocab if w.isalpha() and len(w) >= 3 and w.isascii()]


WORDS = _vocabulary()
_ZIPF = 1.0 / np.arange(1, len(WORDS) + 1) ** 1.05
_ZIPF /= _ZIPF.sum()


_CUMULATIVE = np.cumsum(_ZIPF)


def sentences(count: int, low: int = 6, high: int = 30) -> list[str]:
    """`count` texts of `low` to `high` Zipf-distributed words, drawn in one go (fast at 1M)."""
    lengths = RNG.integers(low, high, size=count)
    picks = np.searchsorted(_CUMULATIVE, RNG.random(int(lengths.sum())))
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return [" ".join(WORDS[i] for i in picks[a:b]) for a, b in itertools.pairwise(bounds)]


def items(count: int, start: int = 0) -> list[Item]:
    """Turns in sessions of 20, two speakers, one session a day going back from NOW."""
    made = []
    texts = sentences(count)
    for n in range(start, start + count):
        session = n // 20
        made.append(
            Item(
                type="turn",
                id=f"t{n}",
                text=texts[n - start],
                created_at=NOW - timedelta(days=session % 3650, minutes=20 - n % 20),
                session_id=f"s{session}",
                seq=n % 20 + 1,
                role="user",
                speaker=("Ann", "Bo")[n % 2],
                channel="ai",
            )
        )
    return made


def random_vectors(count: int, dim: int = 384) -> np.ndarray[Any, np.dtype[np.float32]]:
    return normalise(RNG.normal(size=(count, dim)).astype(np.float32))


def queries() -> list[str]:
    return sentences(QUERIES, 3, 9)


class FixedVectors:
    """Stands in for the sealed vector store, handing out the random vectors made for a corpus."""

    def __init__(self, corpus: list[Item], vectors: Vectors) -> None:
        self._by_key = {(i.type, i.id): (i.rev, v) for i, v in zip(corpus, vectors, strict=True)}

    def load(self, user_id: str, model: str, since_rev: int) -> dict[ItemKey, tuple[int, Vectors]]:
        return self._by_key

    def extent(self, user_id: str, model: str) -> tuple[int, int]:
        return len(self._by_key), max((rev for rev, _ in self._by_key.values()), default=0)

    def save(self, user_id: str, model: str, entries: list[tuple[ItemKey, int, Vectors]]) -> None:
        pass

    def delete(self, user_id: str, keys: list[ItemKey]) -> None:
        pass


@dataclass
class Built:
    recall: Recall
    index: UserIndex
    searchable_s: float  # until the index answers (by exact search above the threshold)
    graph_s: float  # until its HNSW graph, built in another process, is in


def build(count: int, *, graph_builds: bool = True) -> Built:
    """A `Recall` whose one user has `count` turns, added in revisions of 10k like a history,
    and its index once the HNSW graph is in (`graph_builds=False`: built inline)."""
    corpus = items(count)
    chunks = [corpus[first : first + CHUNK] for first in range(0, count, CHUNK)]
    recall = Recall(
        default_embedder(),
        revision_and_recalls=lambda _user: (len(chunks), 0),
        loader=lambda _user, since, _accessed: Changes(revision=since + 1, items=chunks[since]),
        record_access=lambda *_: None,
        max_bytes=1 << 40,
        vectors=FixedVectors(corpus, random_vectors(count)),
        graph_builds=graph_builds,
    )
    recall.cache.on_grown = settle_garbage  # as `memvault serve` does
    started = time.perf_counter()
    for revision in range(1, len(chunks) + 1):
        index = recall.cache.get(USER, revision)
    searchable = time.perf_counter() - started
    recall.cache.settle_graph(USER)
    return Built(recall, index, searchable, time.perf_counter() - started)


def latencies(index: UserIndex, texts: list[str], weights: Weights) -> list[float]:
    times = []
    for text in texts:
        request = Query(text=text, limit=10, filters=Filters(now=NOW), now=NOW)
        started = time.perf_counter()
        search_index(index, request, weights)
        times.append(time.perf_counter() - started)
    return times


def recall_latencies(recall: Recall, texts: list[str], *, repeat: bool) -> list[float]:
    """`Recall.search` per text; with `repeat`, the text was searched just before (untimed)."""
    times = []
    for text in texts:
        if repeat:
            recall.search(USER, text, now=NOW, record_access=False)
        started = time.perf_counter()
        recall.search(USER, text, now=NOW, record_access=False)
        times.append(time.perf_counter() - started)
    return times


class FullModelQueries:
    """The default embedder with queries sent through the full model: the baseline."""

    def __init__(self, inner: MiniLMEmbedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self.inner.embed(texts)

    def embed_query(self, text: str) -> Vectors:
        return self.inner.embed([text])


def recall_against_full_model(recall: Recall, texts: list[str]) -> dict[str, dict[str, float]]:
    """`Recall.search` with the query model and with the full model, in alternating blocks."""
    model = recall.query_vectors
    baseline = QueryVectors(FullModelQueries(default_embedder()))
    times: dict[str, list[float]] = {"recall": [], "recall_full_model_queries": []}
    try:
        for first in range(0, len(texts), BLOCK):
            for name, vectors in (("recall", model), ("recall_full_model_queries", baseline)):
                recall.query_vectors = vectors
                times[name] += recall_latencies(recall, texts[first : first + BLOCK], repeat=False)
    finally:
        recall.query_vectors = model
        baseline.close()
    return {name: summary_ms(values) for name, values in times.items()}


def recall_naming_a_time(recall: Recall, texts: list[str]) -> dict[str, dict[str, float]]:
    """`Recall.search` of the queries with "last month" added (which adds the best matches
    from inside that month to the candidates) and, in alternating blocks, without it. Given
    queries not searched before, so that no vector is reused."""
    times: dict[str, list[float]] = {"recall_naming_a_time": [], "recall_alongside_it": []}
    for first in range(0, len(texts), BLOCK):
        block = texts[first : first + BLOCK]
        times["recall_naming_a_time"] += recall_latencies(
            recall, [f"{text} last month" for text in block], repeat=False
        )
        times["recall_alongside_it"] += recall_latencies(recall, block, repeat=False)
    return {name: summary_ms(values) for name, values in times.items()}


def without_query_embedding(index: UserIndex, texts: list[str]) -> dict[str, float]:
    """Hybrid latency with a near-free query embedder: the index's own share of a query."""
    model = index.embedder
    index.embedder = HashingEmbedder(model.dim)
    try:
        return summary_ms(latencies(index, texts, Weights()))
    finally:
        index.embedder = model


def turn_by_turn(index: UserIndex, texts: list[str]) -> dict[str, dict[str, float]]:
    """A chat at this size: one turn appended (its vector given: the model's share is in
    `top_up_per_1k`), then a search; against a search with no write before it, alternating.
    The searches embed their queries with hashing vectors: the index's share of a query."""
    model = index.embedder
    index.embedder = HashingEmbedder(model.dim)
    turns, vectors = items(len(texts), start=20_000_000), random_vectors(len(texts))
    times: dict[str, list[float]] = {"append_one_turn": [], "search_after_it": [], "search": []}
    try:
        for n, text in enumerate(texts):
            request = Query(text=text, limit=10, filters=Filters(now=NOW), now=NOW)
            started = time.perf_counter()
            search_index(index, request, Weights())
            times["search"].append(time.perf_counter() - started)
            started = time.perf_counter()
            index.add(turns[n : n + 1], vectors[n : n + 1])
            times["append_one_turn"].append(time.perf_counter() - started)
            started = time.perf_counter()
            search_index(index, request, Weights())
            times["search_after_it"].append(time.perf_counter() - started)
    finally:
        index.embedder = model
    return {name: summary_ms(values) for name, values in times.items()}


def query_embedding(texts: list[str]) -> dict[str, dict[str, float]]:
    """One query's embedding alone, by the query model and by the full model, in alternating
    blocks."""
    embedder = default_embedder()
    embedder.embed_query("load the query model before timing it")
    ways: dict[str, Callable[[str], Vectors]] = {
        "query_model": embedder.embed_query,
        "full_model": lambda t: embedder.embed([t]),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for first in range(0, len(texts), BLOCK):
        for name, embed in ways.items():
            for text in texts[first : first + BLOCK]:
                started = time.perf_counter()
                embed(text)
                times[name].append(time.perf_counter() - started)
    return {name: summary_ms(values) for name, values in times.items()}


def top_up_cost(index: UserIndex) -> dict[str, float]:
    """Seconds to add 1k items to an existing index: index work alone, and with real embedding."""
    fresh = items(1_000, start=len(index) + 10_000_000)
    started = time.perf_counter()
    index.add(fresh[:500], random_vectors(500))
    index_only = (time.perf_counter() - started) * 2
    started = time.perf_counter()
    index.add(fresh[500:])  # embedded by MiniLM
    with_model = (time.perf_counter() - started) * 2
    return {"index_only_s": round(index_only, 3), "with_minilm_embedding_s": round(with_model, 3)}


def context_assembly(count: int, texts: list[str]) -> dict[str, Any]:
    """`Vault.context` over a user with `count` turns (hashing vectors: see the module doc), the
    vault prepared as `memvault serve` prepares it (models and token counter loaded, garbage
    settled after the index is built)."""
    with tempfile.TemporaryDirectory() as folder:
        vault = Vault(folder, embedder=HashingEmbedder(384))
        prepare(vault)  # as `memvault serve` does before it listens
        try:
            corpus = items(count)
            for first in range(0, count, 2_000):
                rows = [
                    {"role": "user", "content": i.text, "speaker": i.speaker,
                     "created_at": i.created_at}
                    for i in corpus[first : first + 2_000]
                ]  # fmt: skip
                vault.add_turns("bench", f"s{first // 2_000}", rows)
            for text in sentences(20):
                vault.add_memory("bench", text, importance=0.7)
            vault.search("bench", "warm up the index")
            vault.recall.cache.settle_graph("bench")
            times = []
            for text in texts[:100]:
                started = time.perf_counter()
                vault.context("bench", text, session_id="s0", token_budget=2000)
                times.append(time.perf_counter() - started)
        finally:
            vault.close()
    return {"items": count, **summary_ms(times)}


def main() -> None:
    large = "--large" in sys.argv
    texts = queries()
    hybrid = Weights()
    results: dict[str, Any] = {
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "queries": QUERIES,
        "query_embedding": query_embedding(texts),
        "search": {},
    }
    for size in SIZES:
        built = build(size)
        recall, index = built.recall, built.index
        row = {
            "build_s_without_embedding": round(built.searchable_s, 2),
            "graph_in_after_s": round(built.graph_s, 2),
            "hybrid": summary_ms(latencies(index, texts, hybrid)),
            **recall_against_full_model(recall, texts),
            "recall_repeat": summary_ms(recall_latencies(recall, texts, repeat=True)),
            **recall_naming_a_time(recall, queries()),
            "hybrid_without_query_embedding": without_query_embedding(index, texts),
            "bm25_only": summary_ms(latencies(index, texts, Weights.for_mode("bm25"))),
            "index_mb": round(index.nbytes() / 2**20, 1),
        }
        if size == SIZES[-1]:
            row["top_up_per_1k"] = top_up_cost(index)
            row["turn_by_turn"] = turn_by_turn(index, queries())
        results["search"][str(size)] = row
        print(size, json.dumps(row))
        recall.close()
        del recall, index, built
    inline = build(SIZES[-1], graph_builds=False)  # the baseline: the graph built in the search
    results["search"][str(SIZES[-1])]["build_s_with_the_graph_inline"] = round(
        inline.searchable_s, 2
    )
    inline.recall.close()
    del inline
    if large:
        built = build(LARGE)
        recall, index = built.recall, built.index
        million = latencies(index, texts, hybrid)
        results["search"][str(LARGE)] = {
            "build_s_without_embedding": round(built.searchable_s, 2),
            "graph_in_after_s": round(built.graph_s, 2),
            "hybrid": summary_ms(million),
            **recall_against_full_model(recall, texts),
            "hybrid_without_query_embedding": without_query_embedding(index, texts),
            "index_mb": round(index.nbytes() / 2**20, 1),
        }
        print(LARGE, json.dumps(results["search"][str(LARGE)]))
        recall.close()
        del recall, index, built
    results["context_assembly_100k"] = context_assembly(100_000, texts)
    print("context", json.dumps(results["context_assembly_100k"]))
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write_results("search", results)


if __name__ == "__main__":
    main()
