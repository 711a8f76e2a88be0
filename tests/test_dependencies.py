"""The compiled dependencies load together in one process, whichever comes first.

usearch 2.26.2 and later crash the interpreter (SIGSEGV) when imported before onnxruntime; a
server that builds an HNSW index before its first embedding would die. `pyproject.toml` keeps
usearch below that; this test fails if an upgrade brings the crash back.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

MODULES = ("usearch.index", "onnxruntime", "Stemmer", "tokenizers", "onnx")


@pytest.mark.parametrize("first", MODULES)
def test_the_compiled_modules_load_in_any_order(first: str) -> None:
    order = [first, *(m for m in MODULES if m != first)]
    code = "; ".join(f"import {module}" for module in order)
    run = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, timeout=120
    )
    assert run.returncode == 0, f"importing {', '.join(order)}: exit {run.returncode}"
