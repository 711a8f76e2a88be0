"""Nearest-neighbour search over one user's vectors: exact below a size, HNSW above it.

Exact search is one matrix-vector product and needs no tuning, but it grows with the user: about
4 ms at 100k x 384 on two idle cores, several times that on a busy machine. Past `ann_threshold`
rows an HNSW graph (usearch) answers the candidate query instead. The graph stores
int8-quantised vectors: ten times faster to build than float32 (21 s against 212 s for
100k x 384 here) and about 0.4 ms a query. Quantisation only picks candidates; their scores are
always recomputed exactly from the float32 matrix.

Given `GraphBuilds`, an index has its graphs built in another process (`graphs.py`) and answers
by exact search until one arrives; what was added or removed meanwhile is applied to the graph
when the index takes it up. Without, a graph is built inline, as tests and benchmarks want.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from memvault.retrieval.graph_worker import build_graph
from memvault.retrieval.graphs import Graph, GraphBuilds

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
Slots = npt.NDArray[np.int64]

DEFAULT_ANN_THRESHOLD = 10_000
# keys a graph's vectors pass through while compaction renames them: above any slot
_STAGED_KEYS = 1 << 48
# How widely a graph kept through a compaction is searched; one built anew is searched at
# usearch's default, 64. Once new vectors fill the removed ones' places, a kept graph finds less of
# the exact top 50 (0.77 against 0.85 for a graph built anew, after two rounds of 30% removed and
# as many added), and searched this widely as much (0.85): `python -m benchmarks graph`.
KEPT_GRAPH_EXPANSION = 100
# The matrix grows by a quarter at a time: at 100k x 384 a doubling would leave up to 150 MB
# reserved and unused, and copying a quarter more now and then costs little beside an append.
GROWTH = 1.25
# At most this many vectors added since a graph was asked for are added to it when it comes
# (about 0.15 ms each at 100k, in the search that takes it up); an index that grew by more asks
# for a graph of what it holds now instead.
GRAPH_CATCH_UP = 1024
MIN_ROWS = 64
_MOVED_ROWS = 8192  # rows moved at a time when compaction packs the matrix in place


@dataclass
class _Building:
    """A graph on its way from `GraphBuilds`, of the live slots below `size` when it was asked
    for (`keys`)."""

    future: Future[Graph]
    size: int
    keys: Slots
    withdrawn: bool = False  # given up (`withdraw_graph`): its end is no failure


class DenseIndex:
    """Unit vectors in slots that match the lexical index's, growing by doubling."""

    def __init__(
        self,
        dim: int,
        *,
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        graphs: GraphBuilds | None = None,
    ) -> None:
        self.dim = dim
        self.ann_threshold = ann_threshold
        self._graphs = graphs
        self._building: _Building | None = None
        self._graph_failed = False  # a build failed: exact search, until a compaction
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._alive = np.zeros(0, dtype=bool)
        self._size = 0
        self._ann: Any = None
        self._ann_bytes = 0  # the graph's size: its own figure, scaled between readings
        self._ann_measured = (0, 0.0)  # vectors in the graph at the last reading, bytes each

    def __len__(self) -> int:
        return self._size

    def add(self, first_slot: int, vectors: Vectors) -> None:
        """Store `vectors` at consecutive slots from `first_slot`, the next free position."""
        if first_slot != self._size:
            raise ValueError("slots are appended in order")
        needed = self._append_rows(vectors)
        if self._ann is not None:
            self._ann.add(np.arange(self._size, needed, dtype=np.uint64), vectors)
        self._size = needed
        if self._ann is None and self._size >= self.ann_threshold:
            self._ask_for_graph()
        if self._ann is not None:
            self._size_ann()

    @property
    def graph_pending(self) -> bool:
        """Whether a graph is being built for this index (it is taken up by `nearest`)."""
        return self._building is not None

    def _ask_for_graph(self) -> None:
        """A graph of the live slots: built here without `GraphBuilds`, else asked for once."""
        if self._graphs is None:
            self._build_ann()
        elif self._building is None and not self._graph_failed:
            live = np.flatnonzero(self._alive[: self._size])
            future = self._graphs.submit(live.astype(np.uint64), self._matrix[live])
            self._building = _Building(future, self._size, live)

    def withdraw_graph(self) -> None:
        """Give up the graph asked for, if any: this index is dropped or replaced. A search
        still running on it (the cache let it go meanwhile) then keeps to exact search."""
        building, self._building = self._building, None
        if building is not None and self._graphs is not None:
            building.withdrawn = True
            self._graphs.withdraw(building.future)

    def settle_graph(self, timeout: float | None = None) -> None:
        """Wait for the graph asked for, if any, and take it up: for benchmarks and tests, and
        for warming an index; a search takes a graph up by itself once it has come."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._building is not None:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not wait([self._building.future], left).done:
                return
            self._take_up_graph()  # which may ask again, for an index that grew meanwhile

    def _take_up_graph(self) -> None:
        """Install the graph asked for, if it has come, with the slots added since it was asked
        for and without those removed since; if too many were added, ask again. A failed build
        leaves exact search in place."""
        building = self._building
        if building is None or not building.future.done():
            return
        self._building = None
        if building.withdrawn:
            return  # not a failure: another graph is asked for at the next add
        if self._size - building.size > GRAPH_CATCH_UP:
            self._ask_for_graph()  # this one is too far behind to catch up in a search
            return
        try:
            graph = building.future.result()
        except Exception as exc:
            self._graph_failed = True
            log.warning("search graph build failed (%s); exact search until the next compaction",
                        type(exc).__name__)  # fmt: skip
            return
        added = np.arange(building.size, self._size)
        added = added[self._alive[added]]
        if len(added):
            graph.add(added.astype(np.uint64), self._matrix[added])
        removed = building.keys[~self._alive[building.keys]]
        if len(removed):
            graph.remove(removed.astype(np.uint64))
        self._ann = graph
        self._size_ann()

    def _size_ann(self) -> None:
        """Keep `_ann_bytes` current. The graph's own figure takes 0.7 to 1.9 ms to read at 100k
        vectors, as long as inserting one, so it is read again only once the graph has grown by
        an eighth since the last reading; in between, that reading's bytes per vector are
        scaled by the count (a graph's size per vector barely moves as it grows)."""
        count = int(self._ann.size)
        measured, each = self._ann_measured
        if count >= measured + max(measured // 8, 1) or count < measured // 2:
            self._ann_bytes = int(self._ann.memory_usage)
            self._ann_measured = (count, self._ann_bytes / max(count, 1))
        else:
            self._ann_bytes = int(each * count)

    def compacted(self, slots: Slots) -> DenseIndex:
        """The vectors at `slots` (ascending), at slots 0, 1, ... of a new index, which takes
        this one's matrix and graph: this index is left empty.

        The rows move to the front of the matrix in place, a block at a time: a new matrix of
        70k x 384 cost 0.3 s of fresh memory in a server's process, most of a compaction. The
        HNSW graph goes along, its keys renamed (through keys no slot can have, since old and
        new slots overlap), instead of being built again: at 70k vectors the rename takes well
        under a second where a build took most of a compaction's 46 s. Below the threshold the
        graph is left behind, as a build of that size would have none. A kept graph wears (see
        `KEPT_GRAPH_EXPANSION`): with `GraphBuilds`, a new one is asked for at once, and the
        kept one serves until it comes.
        """
        if len(slots) > 1 and not bool(np.all(np.diff(slots) > 0)):
            raise ValueError("slots must be ascending")
        for first in range(0, len(slots), _MOVED_ROWS):
            block = slots[first : first + _MOVED_ROWS]
            # every row read here is at or after every row written: the blocks before this one
            # wrote only below `first`, and slots[first] >= first
            self._matrix[first : first + len(block)] = self._matrix[block]
        dense = DenseIndex(self.dim, ann_threshold=self.ann_threshold, graphs=self._graphs)
        self._alive[: len(slots)], self._alive[len(slots) :] = True, False
        dense._matrix, dense._alive, dense._size = self._matrix, self._alive, len(slots)
        self._matrix = np.zeros((0, self.dim), dtype=np.float32)
        self._alive, self._size = np.zeros(0, dtype=bool), 0
        if self._ann is not None and dense._size >= self.ann_threshold:
            final = np.arange(len(slots), dtype=np.uint64)
            staged = final + np.uint64(_STAGED_KEYS)
            self._ann.rename(slots.astype(np.uint64), staged)
            self._ann.rename(staged, final)
            dense._ann = self._ann
            dense._ann.expansion_search = KEPT_GRAPH_EXPANSION
            dense._size_ann()
        if dense._size >= self.ann_threshold and (dense._ann is None or self._graphs is not None):
            dense._ask_for_graph()  # with `GraphBuilds`, a new graph replaces the kept one
            if dense._ann is not None:
                dense._size_ann()
        self.withdraw_graph()  # of slots that are no more
        self._ann, self._ann_bytes = None, 0
        return dense

    def _append_rows(self, vectors: Vectors) -> int:
        """Write `vectors` after the last slot, growing the matrix if needed; the new size."""
        needed = self._size + len(vectors)
        if needed > len(self._matrix):
            capacity = max(needed, int(GROWTH * len(self._matrix)), MIN_ROWS)
            matrix = np.zeros((capacity, self.dim), dtype=np.float32)
            matrix[: self._size] = self._matrix[: self._size]
            alive = np.zeros(capacity, dtype=bool)
            alive[: self._size] = self._alive[: self._size]
            self._matrix, self._alive = matrix, alive
        self._matrix[self._size : needed] = vectors
        self._alive[self._size : needed] = True
        return needed

    def _build_ann(self) -> None:
        live = np.flatnonzero(self._alive[: self._size])
        self._ann = build_graph(live.astype(np.uint64), self._matrix[live])

    def remove(self, slot: int) -> None:
        if 0 <= slot < self._size and self._alive[slot]:
            self._alive[slot] = False
            if self._ann is not None:
                self._ann.remove(slot)

    def similarity(self, query: Vectors, slots: Slots | None = None) -> Vectors:
        """Exact cosine of the query with the given slots (all slots when None).

        A single-threaded einsum rather than BLAS: on a busy two-core server, a threaded
        matrix-vector product over 10k rows measured 7 ms against 3 ms for einsum.
        """
        rows = self._matrix[: self._size] if slots is None else self._matrix[slots]
        scores: Vectors = np.einsum("ij,j->i", rows, query)
        return scores

    def vectors(self, slots: Slots) -> Vectors:
        return self._matrix[slots]

    def nearest(self, query: Vectors, k: int) -> Slots:
        """Up to `k` live slots, best first: approximate when the HNSW graph exists."""
        if self._size == 0 or k <= 0:
            return np.zeros(0, dtype=np.int64)
        self._take_up_graph()
        if self._ann is not None:
            matches = self._ann.search(query, k)
            return np.asarray(matches.keys, dtype=np.int64)
        scores = self.similarity(query)
        scores[~self._alive[: self._size]] = -np.inf
        k = min(k, int(self._alive[: self._size].sum()))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        return top[np.argsort(-scores[top])].astype(np.int64)

    def nbytes(self) -> int:
        """The float32 matrix as allocated, and the HNSW graph (its int8 vectors and links)."""
        return int(self._matrix.nbytes + self._alive.nbytes) + self._ann_bytes
