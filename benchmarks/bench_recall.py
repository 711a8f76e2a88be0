"""LoCoMo retrieval recall: the full evaluation (10 conversations, 1,536 scored questions), with
the default MiniLM embedder, hybrid against BM25-only and dense-only in the same run.

Writes `results/locomo.json`. Needs the dataset (`MEMVAULT_DATASETS`, or `../shared/datasets`
beside the repository); without it the benchmark says so and writes nothing. About 3 minutes on
2 cores, most of it embedding the turns.
"""

from __future__ import annotations

import os

from benchmarks.common import write_results
from memvault.evals.dataset import datasets_dir, read_cases
from memvault.evals.harness import evaluate
from memvault.evals.report import format_table


def main() -> None:
    path = datasets_dir() / "locomo.jsonl"
    if not path.is_file():
        print(f"skipped: {path.name} not found (set MEMVAULT_DATASETS to its folder)")
        return
    load_before = [round(x, 2) for x in os.getloadavg()]
    report = evaluate(read_cases(path))
    report["dataset"] = path.name
    report["load_average"] = {"start": load_before, "end": [round(x, 2) for x in os.getloadavg()]}
    print(format_table(report))
    write_results("locomo", report)


if __name__ == "__main__":
    main()
