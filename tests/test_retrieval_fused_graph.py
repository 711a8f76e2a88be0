"""The packaged MiniLM laid out again in fused operators computes what the packaged model does."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from memvault.retrieval.embed import MiniLMEmbedder
from memvault.retrieval.fused_graph import fused_bert

TEXTS = [
    "hiking",
    "When did Caroline go to the LGBTQ support group?",
    "Caroline: I went to the support group yesterday and it was so powerful, we talked for hours",
]


@pytest.fixture(scope="module")
def folded(tmp_path_factory: pytest.TempPathFactory) -> onnx.ModelProto:
    """The packaged model with its int8 weights cast to float32, as the query model starts."""
    target = tmp_path_factory.mktemp("fused") / "folded.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    source = MiniLMEmbedder().model_file
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    return onnx.load(target)


def _hidden(model: str | bytes, feed: dict[str, np.ndarray]) -> np.ndarray:
    """The token states of `model` (a path, or a serialised model)."""
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (hidden,) = session.run(["last_hidden_state"], feed)
    return np.asarray(hidden)


def test_the_fused_graph_gives_the_packaged_models_states_on_a_padded_batch(
    folded: onnx.ModelProto,
) -> None:
    embedder = MiniLMEmbedder()
    encodings = embedder._tokenizer.encode_batch(TEXTS)
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    assert mask.min() == 0  # the short texts are padded: the mask is exercised
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    fused = fused_bert(folded)
    assert len(fused.graph.node) < len(folded.graph.node) / 5
    expected = _hidden(str(embedder.model_file), feed)
    got = _hidden(fused.SerializeToString(), feed)
    real = mask.astype(bool)  # padded places are never pooled: only real tokens must agree
    assert np.abs(got[real] - expected[real]).max() < 1e-4


def test_a_model_laid_out_otherwise_is_refused_by_name(folded: onnx.ModelProto) -> None:
    broken = onnx.ModelProto()
    broken.CopyFrom(folded)
    for tensor in broken.graph.initializer:
        if tensor.name.endswith("layer.3.attention.output.LayerNorm.weight"):
            tensor.name = "renamed"
    with pytest.raises(ValueError, match=r"layer\.3\.attention\.output\.LayerNorm\.weight"):
        fused_bert(broken)
