"""A faster copy of MiniLM for search queries: the packaged model, quantised per channel.

The packaged model stores its weights as int8 but runs in float32 (each weight is cast back when
the session loads), so every query costs a full float32 pass. Dynamic quantisation with
per-channel scales runs the matrix products in int8 instead: a query embeds about 1.7 times
faster, and its vector stays within cosine 0.99 of the float32 one (0.995 on average over LoCoMo
questions). Measured on LoCoMo, queries embedded this way against documents embedded by the full
model changed R@10 by -0.2 points (noise), while quantising the documents as well cost 0.7. So
documents keep the full model, and only queries, whose vectors are never stored, use this one.

Derived, never downloaded: built from the installed package's model on first use (about two
seconds), then kept in a cache folder under a name carrying a digest of the source model and the
versions of onnx and onnxruntime, so an upgrade of any of them builds it again (the three newest
builds are kept). Where the folder cannot be written, the model is built in memory for the
process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from importlib.metadata import version
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "XDG_CACHE_HOME"
PREFIX = "minilm-query-"
KEEP_BUILDS = 3


def default_cache_folder() -> Path:
    """`$XDG_CACHE_HOME/memvault`, or `~/.cache/memvault` (the usual place for derived files)."""
    base = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache")
    return Path(base) / "memvault"


def query_model(source: Path, cache_folder: Path | None = None, *, rebuild: bool = False) -> bytes:
    """The quantised query model derived from `source`, from the cache or built now (always
    built with `rebuild`, for a cached copy that would not load)."""
    target = cached_path(source, cache_folder)
    folder = target.parent
    if target.is_file() and not rebuild:
        return target.read_bytes()
    with tempfile.TemporaryDirectory(prefix="memvault-quantise-") as scratch:
        built = _quantise(source, Path(scratch))
        model = built.read_bytes()
    staged = folder / f".{target.name}.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        staged.write_bytes(model)
        os.replace(staged, target)  # atomic: a concurrent process sees all of it or none
    except OSError as exc:
        with contextlib.suppress(OSError):
            staged.unlink(missing_ok=True)  # a disk that filled up keeps no half-written file
        log.warning("query model not cached (%s); it is rebuilt per process", type(exc).__name__)
        return model
    with contextlib.suppress(OSError):  # tidying: a stale build that will not go is harmless
        _drop_all_but_newest(folder)
    return model


def _drop_all_but_newest(folder: Path) -> None:
    """Builds for earlier package versions pile up after upgrades; keep the newest few, not
    only the latest, so that two environments of different versions sharing the folder do not
    delete each other's on every start."""
    builds = sorted(folder.glob(f"{PREFIX}*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for stale in builds[KEEP_BUILDS:]:
        stale.unlink(missing_ok=True)


def cached_path(source: Path, cache_folder: Path | None = None) -> Path:
    """Where the model derived from `source` is kept."""
    folder = cache_folder or default_cache_folder()
    return folder / f"{PREFIX}{_fingerprint(source)}.onnx"


def _fingerprint(source: Path) -> str:
    digest = hashlib.blake2b(source.read_bytes(), digest_size=8)
    for package in ("onnx", "onnxruntime"):
        digest.update(f"{package}={version(package)}".encode())
    digest.update(b"fused-dynamic-int8-per-channel")
    return digest.hexdigest()


def _quantise(source: Path, scratch: Path) -> Path:
    """Fold the int8-to-float casts into float32 weights, lay the network out again in fused
    operators (fused_graph.py), then quantise its products dynamically. The embedding tables
    stay float: they are looked up, not multiplied, and quantised they moved the vectors."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from memvault.retrieval.fused_graph import fused_bert

    folded, fused = scratch / "folded.onnx", scratch / "fused.onnx"
    quantised = scratch / "query.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
    onnx.save(fused_bert(onnx.load(folded)), fused)
    root = logging.getLogger()
    root.addFilter(_drop_quantiser_advice)
    try:
        quantize_dynamic(
            fused,
            quantised,
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul", "Attention"],
            # the fused operators' outputs have no inferred type: they are all float
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.removeFilter(_drop_quantiser_advice)
    return quantised


def _drop_quantiser_advice(record: logging.LogRecord) -> bool:
    """The quantiser advises a shape pre-processing pass on the root logger. For this model the
    pass changes nothing (the same vectors, measured), so the advice is noise in a server log."""
    return "onnxruntime" not in record.pathname
