"""Embedders for tests that watch what gets embedded, and when: the hashing embedder underneath,
so the vectors are real ones and search works as with any embedder."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from memvault.retrieval.dense import Vectors
from memvault.retrieval.embed import BackgroundRun, HashingEmbedder


class CountingEmbedder(HashingEmbedder):
    """The hashing embedder, remembering every document text it was asked to embed."""

    def __init__(self, dim: int = 256) -> None:
        super().__init__(dim)
        self.seen: list[str] = []
        self.callers: list[str] = []  # the thread of each call

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.seen.extend(texts)
        self.callers.append(threading.current_thread().name)
        return super().embed(texts)


class GatedEmbedder(CountingEmbedder):
    """Background embedding (`embed_in_background`, what a top-up after a write uses) waits at a
    gate once it is closed: `entered` is set when a call reaches it, and it goes on once
    `opened` is set. A search's own embedding never waits, and its query is not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.closed = threading.Event()
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.runs: list[BackgroundRun] = []  # those that reached the closed gate

    def embed_in_background(self, texts: Sequence[str], run: BackgroundRun) -> Vectors:
        if self.closed.is_set():
            self.runs.append(run)
            self.entered.set()
            self.opened.wait(timeout=30)
        return self.embed(texts)

    def embed_query(self, text: str) -> Vectors:
        return HashingEmbedder.embed(self, [text])
