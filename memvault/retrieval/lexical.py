"""BM25 over one user's items, in NumPy, growing in place as items arrive.

A user's index is small enough (thousands to a few hundred thousand items) that an inverted index
of Python lists with per-term NumPy arrays built on demand answers a query in well under a
millisecond per term, with no external engine and nothing written to disk in plaintext.
"""

from __future__ import annotations

import bisect
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

Scores = npt.NDArray[np.float32]

# Postings hold slots as int32 and term frequencies as uint16, six bytes a posting where int64
# and int32 took twelve; a frequency past 65,535 (a document repeating one word that often)
# widens that term's array to int32, so every count stays exact.
_SLOTS = "i"
_NARROW_TF = "H"
_WIDE_TF = "i"
_NARROW_TF_MAX = 0xFFFF
# per term: its vocabulary entry and string, its tuple and two arrays, its document frequency
_TERM_BYTES = 320
# a posting in its arrays, with their over-allocation as they grow
_POSTING_BYTES = 7


class BM25Index:
    """Okapi BM25 with document slots addressed by integer position.

    Slots are appended and never reused; removing an item zeroes its postings' effect through the
    `alive` mask, so positions stay stable for the dense index and the metadata arrays beside it.
    """

    def __init__(self, *, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b
        self._vocab: dict[str, int] = {}
        self._postings: list[tuple[array[int], array[int]]] = []
        self._arrays: dict[int, tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]] = {}
        self._arrays_bytes = 0
        self._df: list[int] = []
        self._lengths = np.zeros(0, dtype=np.float32)
        self._alive = np.zeros(0, dtype=bool)
        self._size = 0
        self._live = 0
        self._total_length = 0.0
        self._posting_count = 0

    def __len__(self) -> int:
        return self._size

    def add(self, slot: int, terms: Iterable[str]) -> None:
        """Index `terms` at `slot`, which must be the next free position."""
        if slot != self._size:
            raise ValueError("slots are appended in order")
        if slot >= len(self._lengths):
            grow = max(1024, len(self._lengths))
            self._lengths = np.concatenate([self._lengths, np.zeros(grow, dtype=np.float32)])
            self._alive = np.concatenate([self._alive, np.zeros(grow, dtype=bool)])
        counts = Counter(terms)
        vocab, postings, df, cached = self._vocab, self._postings, self._df, self._arrays
        for term, tf in counts.items():  # the hot loop of an index build: calls only when rare
            tid = vocab.get(term)
            if tid is None:
                tid = self._term_id(term)
            docs, tfs = postings[tid] if tf <= _NARROW_TF_MAX else self._postings_for(tid, tf)
            docs.append(slot)
            tfs.append(tf)
            df[tid] += 1
            if tid in cached:
                self._forget_arrays(tid)
        self._posting_count += len(counts)
        length = float(sum(counts.values()))
        self._lengths[slot] = length
        self._alive[slot] = True
        self._size += 1
        self._live += 1
        self._total_length += length

    def extend(self, slot: int, terms: Iterable[str]) -> None:
        """Add `terms` to the document already at `slot` (a turn learning of the reply to it).

        Postings stay sorted by slot, so an older slot's entry is found by bisection; a term new
        to the document is inserted in place, which is cheap because it is nearly always the
        newest slot and so goes at the end.
        """
        if not (0 <= slot < self._size and self._alive[slot]):
            raise ValueError("only a live document can be extended")
        counts = Counter(terms)
        vocab, cached = self._vocab, self._arrays
        for term, tf in counts.items():
            tid = vocab.get(term)
            if tid is None:
                tid = self._term_id(term)
            docs, tfs = self._postings[tid]
            at = bisect.bisect_left(docs, slot)
            if at < len(docs) and docs[at] == slot:
                docs, tfs = self._postings_for(tid, tfs[at] + tf)
                tfs[at] += tf
            else:
                docs, tfs = self._postings_for(tid, tf)
                docs.insert(at, slot)
                tfs.insert(at, tf)
                self._df[tid] += 1
                self._posting_count += 1
            if tid in cached:
                self._forget_arrays(tid)
        length = float(sum(counts.values()))
        self._lengths[slot] += length
        self._total_length += length

    def _term_id(self, term: str) -> int:
        tid = self._vocab.get(term)
        if tid is None:
            tid = self._vocab[term] = len(self._postings)
            self._postings.append((array(_SLOTS), array(_NARROW_TF)))
            self._df.append(0)
        return tid

    def _postings_for(self, tid: int, tf: int) -> tuple[array[int], array[int]]:
        """The term's postings, its frequencies widened first if `tf` would not fit them."""
        docs, tfs = self._postings[tid]
        if tf > _NARROW_TF_MAX and tfs.typecode == _NARROW_TF:
            tfs = array(_WIDE_TF, tfs)
            self._postings[tid] = (docs, tfs)
        return docs, tfs

    def _forget_arrays(self, tid: int) -> None:
        arrays = self._arrays.pop(tid, None)
        if arrays is not None:
            self._arrays_bytes -= arrays[0].nbytes + arrays[1].nbytes

    def remove(self, slot: int) -> None:
        """Forget a slot's document. Document frequencies keep counting it until the next
        rebuild, a small IDF drift that is cheaper than rewriting postings on every delete."""
        if 0 <= slot < self._size and self._alive[slot]:
            self._alive[slot] = False
            self._live -= 1
            self._total_length -= float(self._lengths[slot])

    def _term_arrays(self, tid: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        arrays = self._arrays.get(tid)
        if arrays is None:
            docs, tfs = self._postings[tid]
            # copies: a NumPy view would pin the growable array's buffer, and the next
            # append to it would fail
            arrays = (np.array(docs, dtype=np.int32), np.array(tfs, dtype=np.float32))
            self._arrays[tid] = arrays
            self._arrays_bytes += arrays[0].nbytes + arrays[1].nbytes
        return arrays

    def scores(self, query_terms: Iterable[str]) -> Scores:
        """BM25 score of every slot (zero where no query term occurs or the slot is removed)."""
        return self.weighted_scores(Counter(query_terms))

    def weighted_scores(self, term_weights: Mapping[str, float]) -> Scores:
        """BM25 with each query term's contribution scaled by its weight (a repeated term, or a
        related word counted at less than a word of the query itself)."""
        out = np.zeros(self._size, dtype=np.float32)
        if self._live == 0:
            return out
        avg_length = max(self._total_length / self._live, 1.0)
        for term, weight in term_weights.items():
            tid = self._vocab.get(term)
            if tid is None or weight <= 0:
                continue
            docs, tfs = self._term_arrays(tid)
            df = self._df[tid]
            idf = math.log(1 + (self._live - df + 0.5) / (df + 0.5))
            norm = self.k1 * (1 - self.b + self.b * self._lengths[docs] / avg_length)
            out[docs] += weight * idf * tfs * (self.k1 + 1) / (tfs + norm)
        if self._live < self._size:  # removed documents keep their postings until a rebuild
            out[~self._alive[: self._size]] = 0.0
        return out

    def nbytes(self) -> int:
        """Memory held, for the cache's byte budget: postings, vocabulary, the per-slot arrays
        and the arrays of searched terms kept for the next search."""
        postings = self._posting_count * _POSTING_BYTES + len(self._vocab) * _TERM_BYTES
        return postings + self._arrays_bytes + self._lengths.nbytes + self._alive.nbytes
