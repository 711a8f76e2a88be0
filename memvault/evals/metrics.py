"""Retrieval metrics over ranked source-turn ids, and their aggregation per category."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

KS = (5, 10, 20)


def recall_at(ranked: Sequence[str], evidence: Iterable[str], k: int) -> float:
    """Share of the evidence turns among the first `k` results."""
    wanted = set(evidence)
    return len(wanted & set(ranked[:k])) / len(wanted) if wanted else 0.0


def hit_at(ranked: Sequence[str], evidence: Iterable[str], k: int) -> float:
    """1.0 when at least one evidence turn is among the first `k` results."""
    return float(bool(set(evidence) & set(ranked[:k])))


def reciprocal_rank(ranked: Sequence[str], evidence: Iterable[str]) -> float:
    wanted = set(evidence)
    for position, turn_id in enumerate(ranked, start=1):
        if turn_id in wanted:
            return 1.0 / position
    return 0.0


def percentiles_ms(seconds: Sequence[float]) -> dict[str, float]:
    if not seconds:
        return {"p50": 0.0, "p95": 0.0, "p99": 0.0}
    values = np.asarray(seconds) * 1000
    return {f"p{p}": round(float(np.percentile(values, p)), 3) for p in (50, 95, 99)}


@dataclass
class Tally:
    """Per-question scores of one search mode, grouped by category."""

    rows: dict[str, list[dict[str, float]]] = field(default_factory=lambda: defaultdict(list))

    def add(
        self,
        category: str,
        ranked: Sequence[str],
        evidence: Sequence[str],
        extra: dict[str, float] | None = None,
    ) -> None:
        row = {f"recall@{k}": recall_at(ranked, evidence, k) for k in KS}
        row |= {f"hit@{k}": hit_at(ranked, evidence, k) for k in KS}
        row["mrr"] = reciprocal_rank(ranked, evidence)
        row |= extra or {}
        self.rows[category].append(row)

    def summary(self) -> dict[str, dict[str, float]]:
        """Means per category and over all of them ("all"), with question counts."""
        groups = dict(sorted(self.rows.items()))
        groups["all"] = [row for rows in self.rows.values() for row in rows]
        out = {}
        for name, rows in groups.items():
            if not rows:
                continue
            means = {key: round(float(np.mean([r[key] for r in rows])), 4) for key in rows[0]}
            out[name] = {"questions": len(rows), **means}
        return out
