"""Helpers shared by the benchmarks: percentiles, timing, and the results file."""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
# the instruction sets onnxruntime's int8 kernels and usearch choose by: a query embeds about
# twice as fast with VNNI as with AVX2 alone, so a figure means little without them
CPU_FEATURES = ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "amx_int8")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": round(percentile(ms, 50), 4),
        "p95_ms": round(percentile(ms, 95), 4),
        "p99_ms": round(percentile(ms, 99), 4),
        "mean_ms": round(statistics.fmean(ms), 4),
    }


def ratio(
    over: Mapping[str, float], under: Mapping[str, float], key: str, digits: int = 3
) -> float:
    """One `summary_ms` figure (`key`, "p50_ms" say) of `over` against the same of `under`:
    the way every benchmark compares a run with its baseline of the same run."""
    return round(over[key] / under[key], digits)


def write_results(name: str, results: dict[str, Any]) -> Path:
    """Write `results/<name>.json` with the machine it ran on, and return its path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "ran_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            **cpu_description(),
        },
        **results,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return path


def cpu_description() -> dict[str, Any]:
    """The CPU's model name and which of `CPU_FEATURES` it has (Linux; empty elsewhere)."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return {}
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in info.splitlines())
        if value
    )
    flags = set(fields.get("flags", "").split())
    return {
        "cpu": fields.get("model name"),
        "cpu_features": [f for f in CPU_FEATURES if f in flags],
    }
