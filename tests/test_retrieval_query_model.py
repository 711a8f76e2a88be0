"""The quantised query model: close to the full model, derived once and cached, and never a
reason for a search to fail."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from memvault.retrieval.embed import MiniLMEmbedder
from memvault.retrieval.query_model import cached_path
from memvault.retrieval.tokens import _tokenizer
from memvault.vault import Vault

QUESTIONS = [
    "When did Caroline go to the LGBTQ support group?",
    "What did Melanie paint recently?",
    "hiking",
    "Would Caroline likely pursue writing as a career option?",
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(scope="module")
def minilm(cache: Path) -> MiniLMEmbedder:
    return MiniLMEmbedder(model_cache=cache)


def test_query_vectors_stay_close_to_the_full_models(minilm: MiniLMEmbedder) -> None:
    for question in QUESTIONS:
        fast = minilm.embed_query(question)
        full = minilm.embed([question])
        assert fast.shape == (1, 384) and fast.dtype == np.float32
        assert np.linalg.norm(fast) == pytest.approx(1.0, abs=1e-5)
        assert 0.98 < float(fast[0] @ full[0]) < 0.99999  # close, and really another model
    assert not minilm.embed_query("   ").any()


def test_query_vectors_rank_documents_like_the_full_models(minilm: MiniLMEmbedder) -> None:
    documents = minilm.embed(
        ["I adopted a puppy last week", "We got a new dog", "Interest rates rose again"]
    )
    fast = documents @ minilm.embed_query("Did they get a pet?")[0]
    full = documents @ minilm.embed(["Did they get a pet?"])[0]
    assert list(np.argsort(-fast)) == list(np.argsort(-full))
    assert fast[2] < min(fast[0], fast[1]) - 0.2


def test_the_derived_model_is_cached_and_reused(minilm: MiniLMEmbedder, cache: Path) -> None:
    minilm.embed_query("warm")
    kept = [p.name for p in cache.iterdir()]
    assert kept == [cached_path(minilm.model_file, cache).name]  # no staging file left over
    built = cached_path(minilm.model_file, cache).stat().st_mtime_ns
    again = MiniLMEmbedder(model_cache=cache)
    assert np.array_equal(again.embed_query(QUESTIONS[0]), minilm.embed_query(QUESTIONS[0]))
    assert cached_path(minilm.model_file, cache).stat().st_mtime_ns == built


def test_an_unwritable_cache_folder_still_gives_the_fast_model(
    tmp_path: Path, minilm: MiniLMEmbedder, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the folder should be")
    embedder = MiniLMEmbedder(model_cache=blocked / "memvault")
    with caplog.at_level(logging.WARNING):
        vector = embedder.embed_query(QUESTIONS[1])
    assert np.array_equal(vector, minilm.embed_query(QUESTIONS[1]))
    assert "not cached" in caplog.text and QUESTIONS[1] not in caplog.text


def test_a_damaged_cached_model_is_built_again(tmp_path: Path, minilm: MiniLMEmbedder) -> None:
    embedder = MiniLMEmbedder(model_cache=tmp_path)
    kept = cached_path(embedder.model_file, tmp_path)
    kept.write_bytes(b"not an onnx model")
    vector = embedder.embed_query(QUESTIONS[2])
    assert np.array_equal(vector, minilm.embed_query(QUESTIONS[2]))
    assert kept.read_bytes().startswith(b"\x08")  # an ONNX protobuf again (ir_version field)


def test_a_query_model_that_cannot_be_made_falls_back_to_the_full_model(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The source itself is unreadable as a model: nothing to derive from, so queries use
    the full model (already loaded), with a warning naming no text."""
    embedder = MiniLMEmbedder(model_cache=tmp_path / "models")
    embedder.model_file = tmp_path / "not-a-model.onnx"
    embedder.model_file.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        vector = embedder.embed_query(QUESTIONS[2])
    assert np.array_equal(vector, embedder.embed([QUESTIONS[2]]))
    assert "using the full model" in caplog.text and QUESTIONS[2] not in caplog.text


def test_prepare_builds_the_query_model_keeps_the_newest_builds_and_loads_the_token_counter(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    models.mkdir()
    for age in range(1, 4):  # as earlier package versions left them, the oldest last
        older = models / f"minilm-query-{age:016x}.onnx"
        older.write_bytes(b"an older build")
        os.utime(older, (1_700_000_000 - age * 86_400,) * 2)
    embedder = MiniLMEmbedder(model_cache=models)
    _tokenizer.cache_clear()  # a context's token counter, loaded by whichever test came first
    with Vault(tmp_path / "vault", embedder=embedder) as vault:
        vault.recall.prepare()
        assert _tokenizer.cache_info().currsize == 1  # loaded now, not by the first context
        assert {p.name for p in models.iterdir()} == {
            f"minilm-query-{1:016x}.onnx",
            f"minilm-query-{2:016x}.onnx",
            cached_path(embedder.model_file, models).name,
        }
        assert vault.search("nobody", "anything at all") == []


def test_a_query_model_that_disagrees_with_the_full_model_is_not_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What saturating int8 products would look like on a CPU without VNNI, made here with
    per-tensor scales (lowest probe cosine 0.958): loaded, measured, and set aside."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    embedder = MiniLMEmbedder(model_cache=tmp_path / "models")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(tmp_path / "folded.onnx")
    ort.InferenceSession(str(embedder.model_file), options, providers=["CPUExecutionProvider"])
    coarse = cached_path(embedder.model_file, tmp_path / "models")
    coarse.parent.mkdir()
    quantize_dynamic(tmp_path / "folded.onnx", coarse, weight_type=QuantType.QInt8)
    with caplog.at_level(logging.WARNING):
        vector = embedder.embed_query(QUESTIONS[0])
    assert np.array_equal(vector, embedder.embed([QUESTIONS[0]]))
    assert "cosine 0.9" in caplog.text and "using the full model" in caplog.text
    assert QUESTIONS[0] not in caplog.text
