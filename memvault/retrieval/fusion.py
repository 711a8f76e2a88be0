"""Weighted fusion of normalised signals into one relevance score.

Reciprocal-rank fusion of BM25 and MiniLM scored below BM25 alone on LoCoMo (R@10 0.54 against
0.57): it throws away how far ahead the leader of each list is. Scaling each signal to [0, 1]
and adding them with tuned weights keeps that information; the default weights were tuned on
LoCoMo (see docs/retrieval.md). Dividing by the weight total keeps scores in [0, 1], so a
`min_score` means the same whatever the weights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from memvault.errors import Invalid

Signal = npt.NDArray[np.float32]
SIGNALS = (
    "bm25", "dense", "session", "speaker", "time", "answer", "salience", "recency", "importance",
    "access",
)  # fmt: skip
MODES = ("hybrid", "bm25", "dense")


@dataclass(frozen=True, slots=True)
class Weights:
    """How much each signal counts. Zero switches a signal off (and skips computing it)."""

    bm25: float = 1.0
    dense: float = 1.7
    session: float = 0.8
    speaker: float = 0.9
    time: float = 1.0
    answer: float = 0.7  # the item gives the kind of answer the question asks for (cues.py)
    salience: float = 0.8  # how much the item tells, whatever the question (cues.py)
    recency: float = 0.05
    importance: float = 0.1
    access: float = 0.05
    recency_half_life_days: float = 30.0
    expansion: float = 0.5  # BM25 of related words (thesaurus.py), relative to the query's own

    def __post_init__(self) -> None:
        for name in SIGNALS:
            if getattr(self, name) < 0:
                raise Invalid(f"weights.{name}", "must not be negative")
        if self.bm25 == 0 and self.dense == 0:
            raise Invalid("weights", "at least one of bm25 and dense must count")
        if self.expansion < 0:
            raise Invalid("weights.expansion", "must not be negative")
        if self.recency_half_life_days <= 0:
            raise Invalid("weights.recency_half_life_days", "must be positive")

    def signal_weights(self) -> dict[str, float]:
        return {name: float(getattr(self, name)) for name in SIGNALS}

    @classmethod
    def for_mode(cls, mode: str, base: Weights | None = None) -> Weights:
        """The weights of a search mode: `bm25` and `dense` are the single-signal baselines."""
        base = base or cls()
        if mode == "hybrid":
            return base
        if mode not in MODES:
            raise Invalid("mode", f"unknown value; expected one of: {', '.join(MODES)}")
        off = dict.fromkeys(SIGNALS, 0.0)
        off[mode] = 1.0
        return replace(base, **off)


def scale_to_max(values: Signal) -> Signal:
    """Divide by the largest value so the best candidate scores 1; all-zero stays zero."""
    top = float(values.max()) if len(values) else 0.0
    if top <= 0:
        return np.zeros_like(values)
    scaled: Signal = np.clip(values / top, 0.0, 1.0).astype(np.float32)
    return scaled


def fuse(signals: dict[str, Signal], weights: Weights) -> Signal:
    """Weighted mean of the given signals, each already in [0, 1]."""
    by_name = weights.signal_weights()
    total = sum(by_name[name] for name in signals) or 1.0
    size = len(next(iter(signals.values()))) if signals else 0
    fused = np.zeros(size, dtype=np.float32)
    for name, values in signals.items():
        fused += by_name[name] * values
    result: Signal = fused / total
    return result
