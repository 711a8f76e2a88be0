"""Search latency per user at 1k, 10k and 100k items (and p99 at 1M with the ANN index), index
build and top-up cost, and context assembly at 100k.

The corpus is synthetic: Zipf-distributed English words from the bundled tokenizer vocabulary,
in sessions of 20 turns between two speakers. Document vectors are random unit vectors (embedding
100k real texts would take minutes and measures the model, not the index); each query is
embedded by the real MiniLM model, so query latencies include it. Index build with real
embeddings is reported separately per 1k items.

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
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from benchmarks.common import summary_ms, write_results
from memvault.retrieval.embed import TOKENIZER_PATH, HashingEmbedder, default_embedder, normalise
from memvault.retrieval.fusion import Weights
from memvault.retrieval.index import Filters, UserIndex
from memvault.retrieval.items import Item
from memvault.retrieval.search import Query, search_index
from memvault.vault import Vault

SIZES = (1_000, 10_000, 100_000)
LARGE = 1_000_000
QUERIES = 300
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


def build(count: int) -> tuple[UserIndex, float]:
    index = UserIndex(default_embedder())
    corpus = items(count)
    started = time.perf_counter()
    for first in range(0, count, 10_000):
        chunk = corpus[first : first + 10_000]
        index.add(chunk, random_vectors(len(chunk)))
    return index, time.perf_counter() - started


def latencies(index: UserIndex, texts: list[str], weights: Weights) -> list[float]:
    times = []
    for text in texts:
        request = Query(text=text, limit=10, filters=Filters(now=NOW), now=NOW)
        started = time.perf_counter()
        search_index(index, request, weights)
        times.append(time.perf_counter() - started)
    return times


def without_query_embedding(index: UserIndex, texts: list[str]) -> dict[str, float]:
    """Hybrid latency with a near-free query embedder: the index's own share of a query."""
    model = index.embedder
    index.embedder = HashingEmbedder(model.dim)
    try:
        return summary_ms(latencies(index, texts, Weights()))
    finally:
        index.embedder = model


def query_embedding(texts: list[str]) -> dict[str, float]:
    embedder = default_embedder()
    times = []
    for text in texts:
        started = time.perf_counter()
        embedder.embed([text])
        times.append(time.perf_counter() - started)
    return summary_ms(times)


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
    """`Vault.context` over a user with `count` turns (hashing vectors: see the module doc)."""
    with tempfile.TemporaryDirectory() as folder:
        vault = Vault(folder, embedder=HashingEmbedder(384))
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
        "query_embedding_minilm": query_embedding(texts),
        "search": {},
    }
    for size in SIZES:
        index, seconds = build(size)
        row = {
            "build_s_without_embedding": round(seconds, 2),
            "hybrid": summary_ms(latencies(index, texts, hybrid)),
            "hybrid_without_query_embedding": without_query_embedding(index, texts),
            "bm25_only": summary_ms(latencies(index, texts, Weights.for_mode("bm25"))),
            "index_mb": round(index.nbytes() / 2**20, 1),
        }
        if size == SIZES[-1]:
            row["top_up_per_1k"] = top_up_cost(index)
        results["search"][str(size)] = row
        print(size, json.dumps(row))
    if large:
        index, seconds = build(LARGE)
        million = latencies(index, texts, hybrid)
        results["search"][str(LARGE)] = {
            "build_s_without_embedding": round(seconds, 2),
            "hybrid": summary_ms(million),
            "hybrid_without_query_embedding": without_query_embedding(index, texts),
            "index_mb": round(index.nbytes() / 2**20, 1),
        }
        print(LARGE, json.dumps(results["search"][str(LARGE)]))
        del index
    results["context_assembly_100k"] = context_assembly(100_000, texts)
    print("context", json.dumps(results["context_assembly_100k"]))
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    write_results("search", results)


if __name__ == "__main__":
    main()
