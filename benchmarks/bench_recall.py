"""LoCoMo retrieval recall: the full evaluation (10 conversations, 1,536 scored questions), with
the default MiniLM embedder, hybrid against BM25-only and dense-only in the same run.

Then the same data written a turn at a time, the index topped up after each turn, as a chat
writes it: its recall must equal the first run's (`turn_by_turn` in the results), since search
quality must not depend on how the index grew.

Then the data written as an assistant's chat stores it, roles and no speakers' names
(`memvault eval --speakers`): with the user named by their profile and the other speaker as a
named agent (`roles`), and without those names (`unnamed`, the baseline for it); and written
as roles, asked as an agent asks its memory, of "the user" and "the assistant" rather than by
name (`roles_asked_as_roles`, `memvault eval --asked roles`); and unnamed, asked as the user
asks in a chat, in the first person, saying so (`unnamed_asked_by_the_user`, `memvault eval
--asked user`), and as the agent asks in its own words (`unnamed_asked_by_the_assistant`);
and with the speakers named, each asking in the first person and saying so by name, as in a
group chat, whose humans all give the role "user" (`named_asked_by_the_first_speaker`,
`named_asked_by_the_other_speaker`). Only the hybrid figures are kept for these
(`by_speakers`).

Writes `results/locomo.json`. Needs the dataset (`MEMVAULT_DATASETS`, or `../shared/datasets`
beside the repository); without it the benchmark says so and writes nothing. About 10 minutes
on 2 cores (AVX2), most of it embedding the turns (one at a time in the second run).
"""

from __future__ import annotations

import os
import time

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
    cases = list(read_cases(path))
    report = evaluate(cases)
    report["dataset"] = path.name
    print(format_table(report))
    started = time.perf_counter()
    by_turn = evaluate(cases, replay="turns")
    report["turn_by_turn"] = {
        "modes": by_turn["modes"],
        "same_recall_as_by_session": by_turn["modes"] == report["modes"],
        "replay_seconds": round(time.perf_counter() - started, 1),
    }
    print(format_table(by_turn))
    report["by_speakers"] = {}
    for name, speakers, asked in (
        ("roles", "roles", "names"),
        ("unnamed", "unnamed", "names"),
        ("roles_asked_as_roles", "roles", "roles"),
        ("unnamed_asked_by_the_user", "unnamed", "user"),
        ("unnamed_asked_by_the_assistant", "unnamed", "assistant"),
        ("named_asked_by_the_first_speaker", "named", "user"),
        ("named_asked_by_the_other_speaker", "named", "assistant"),
    ):
        run = evaluate(cases, speakers=speakers, asked=asked)
        report["by_speakers"][name] = {"hybrid": run["modes"]["hybrid"]["all"]}
        print(format_table(run))
    report["load_average"] = {"start": load_before, "end": [round(x, 2) for x in os.getloadavg()]}
    write_results("locomo", report)


if __name__ == "__main__":
    main()
