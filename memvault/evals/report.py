"""The evaluation report as a terminal table; the JSON form is the report dict itself."""

from __future__ import annotations

from typing import Any

COLUMNS = ("recall@5", "recall@10", "recall@20", "hit@10", "mrr")
# each with its heading and format: the share of the evidence a context holds, and its tokens
CONTEXT_COLUMNS = (
    ("context_recall@1000", "ctx@1000", ".3f"),
    ("context_recall@2000", "ctx@2000", ".3f"),
    ("context_tokens@1000", "tok@1000", ".0f"),
    ("context_tokens@2000", "tok@2000", ".0f"),
)


def format_table(report: dict[str, Any]) -> str:
    """Recall per mode and category, then latencies: what a reader checks first."""
    header = f"{'mode':<8} {'category':<9} {'n':>5} " + " ".join(f"{c:>10}" for c in COLUMNS)
    header += " " + " ".join(f"{heading:>9}" for _, heading, _ in CONTEXT_COLUMNS)
    lines = [header, "-" * len(header)]
    for mode, categories in report["modes"].items():
        for category, row in categories.items():
            cells = " ".join(f"{row.get(c, 0.0):>10.3f}" for c in COLUMNS)
            context = " ".join(
                f"{row[key]:>9{form}}" if key in row else f"{'':>9}"
                for key, _, form in CONTEXT_COLUMNS
            )
            lines.append(f"{mode:<8} {category:<9} {row['questions']:>5} {cells} {context}")
    lines.append("")
    for mode, latency in report["latency_ms"].items():
        lines.append(
            f"search latency {mode:<7} p50 {latency['p50']:.2f} ms  p95 {latency['p95']:.2f} ms  "
            f"p99 {latency['p99']:.2f} ms"
        )
    context = report["context_latency_ms"]
    lines.append(
        f"context assembly       p50 {context['p50']:.2f} ms  p95 {context['p95']:.2f} ms  "
        f"p99 {context['p99']:.2f} ms"
    )
    lines.append(
        f"{report['cases']} cases, {report['turns']} turns, index build "
        f"{report['index_build_seconds']:.1f} s, embedder {report['embedder']}, "
        f"replayed by {report['replay'].rstrip('s')}, speakers {report['speakers']}, "
        f"asked by {report['asked'].rstrip('s')}"
    )
    return "\n".join(lines)
