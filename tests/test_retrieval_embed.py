"""Embedders: the real MiniLM model (a few tests, it takes a moment to load), the hashing
embedder, and the OpenAI-compatible client against a real local HTTP server."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from memvault.errors import Invalid, MemvaultError
from memvault.retrieval.embed import (
    BackgroundRun,
    HashingEmbedder,
    MiniLMEmbedder,
    RemoteEmbedder,
    background_embed,
    relevance_floor,
)
from memvault.retrieval.tokens import _tokenizer, count_tokens, count_tokens_of
from memvault.vault import Vault


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def test_minilm_ranks_meaning_not_words(minilm: MiniLMEmbedder) -> None:
    vectors = minilm.embed(
        ["I adopted a puppy last week", "We got a new dog", "Interest rates rose again"]
    )
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.3


HISTORY = (
    "I adopted a puppy called Rex last week",
    "Congratulations! What breed is Rex?",
    "A beagle. Also my sister Jo moved to Lisbon in May.",
    "Remind me to buy dog food tomorrow",
)


def test_minilm_search_brings_back_nothing_the_history_does_not_hold(
    minilm: MiniLMEmbedder, tmp_path: Path
) -> None:
    """The dense signal is scaled to the best candidate, so without the relevance floor the
    allergy (cosine 0.14 to the query) was the best match for quantum physics, and the
    context took it in as relevant. Inside the time a query names, the floor is waived: a
    question about that time asks for what was said then."""
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    with Vault(tmp_path, embedder=minilm) as vault:
        for number, text in enumerate(HISTORY):
            role = "assistant" if number == 1 else "user"
            vault.add_turns("ann", "s1", [{"role": role, "content": text, "created_at": now}])
        vault.add_memory("ann", "Ann is allergic to peanuts", kind="episodic")
        assert vault.search("ann", "explain quantum entanglement", now=now) == []
        context = vault.context("ann", "explain quantum entanglement", now=now)
        assert context.items == [] and context.text == ""
        dogs = {h.text for h in vault.search("ann", "what dog do I have", now=now)}
        assert dogs >= {HISTORY[0], HISTORY[2]}
        assert "Ann is allergic to peanuts" not in dogs
        today = {h.text for h in vault.search("ann", "what did we talk about today", now=now)}
        assert today >= set(HISTORY)
        # an outside embedder that predates the floor counts any positive cosine, as before
        assert relevance_floor(object()) == 0.0  # type: ignore[arg-type]


def test_minilm_batch_order_and_padding_do_not_change_vectors(minilm: MiniLMEmbedder) -> None:
    short, long = "hello there", "a much longer sentence about hiking in the mountains " * 5
    alone = minilm.embed([short])[0]
    batched = minilm.embed([long, short, long])
    assert np.allclose(batched[1], alone, atol=1e-4)
    assert np.allclose(batched[0], batched[2], atol=1e-5)


def test_minilm_several_batches_keep_the_callers_order(minilm: MiniLMEmbedder) -> None:
    texts = [f"note {n}: " + "walked the dog in the park " * (n % 7) for n in range(75)]
    together = minilm.embed(texts)  # three batches, sorted by length inside
    alone = np.concatenate([minilm.embed([text]) for text in texts])
    assert np.allclose(together, alone, atol=1e-4)


def test_minilm_in_the_background_gives_the_same_vectors(minilm: MiniLMEmbedder) -> None:
    """Its one-thread session is another run of the same model: a vector stored by the
    background is the one a search would have computed."""
    texts = [f"note {n}: " + "walked the dog in the park " * (n % 7) for n in range(40)]
    assert np.array_equal(minilm.embed_in_background(texts), minilm.embed(texts))
    assert np.array_equal(minilm.embed_in_background(texts[:1]), minilm.embed(texts[:1]))
    assert np.array_equal(minilm.embed_in_background(texts, BackgroundRun()), minilm.embed(texts))
    assert background_embed(minilm) == minilm.embed_in_background
    hashing = HashingEmbedder()
    assert background_embed(hashing) is None  # an embedder without one: `embed`, as usual


def test_an_abandoned_background_run_ends_before_its_work_is_done(minilm: MiniLMEmbedder) -> None:
    """A top-up giving way to a search abandons its chunk: the model stops at its next operator
    instead of taking a core until the chunk's end, beside the search."""
    texts = [f"note {n}: " + "walked the dog along the river in the rain " * 12 for n in range(64)]
    run = BackgroundRun()
    started = threading.Event()
    outcome: list[BaseException | None] = []

    def embed() -> None:
        started.set()
        try:
            minilm.embed_in_background(texts, run)
            outcome.append(None)
        except Exception as exc:  # onnxruntime's own error type, raised by the ended run
            outcome.append(exc)

    whole = time.perf_counter()
    minilm.embed_in_background(texts)
    whole = time.perf_counter() - whole
    worker = threading.Thread(target=embed)
    worker.start()
    assert started.wait(timeout=30)
    time.sleep(whole / 10)
    abandoned = time.perf_counter()
    run.abandon()
    worker.join(timeout=30)
    assert len(outcome) == 1 and isinstance(outcome[0], Exception)  # it did not run to its end
    assert time.perf_counter() - abandoned < whole / 2
    with pytest.raises(Exception, match="terminate"):  # abandoned before it starts: no run at all
        minilm.embed_in_background(texts[:2], run)


_FRESH_PROCESS = """
import os
from memvault.retrieval.embed import MiniLMEmbedder
from memvault.retrieval.idle import NICE, IdleThread
embedder, idle = MiniLMEmbedder(), IdleThread("idle")
texts = [f"note {n}: the heron came back to the weir" for n in range(70)]
idle.submit(lambda: embedder.embed_in_background(texts)).result()
embedder.embed(texts)
niced = [t for t in os.listdir("/proc/self/task")
         if os.getpriority(os.PRIO_PROCESS, int(t)) == NICE]
idle.close()
print(len(niced))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own nice is Linux's")
def test_background_embedding_leaves_no_thread_but_the_idle_one_at_its_priority() -> None:
    """A tokenizer's pool of threads started by a batch on the idle thread would take its
    priority, and slow every later caller's tokenizing. In a fresh process, where no pool
    exists yet, and whatever the variable that says so is here."""
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "1"  # the idle thread


def test_minilm_truncates_long_input_and_zeroes_empty_text(minilm: MiniLMEmbedder) -> None:
    vectors = minilm.embed(["word " * 2000, "", "   "])
    assert np.isfinite(vectors).all()
    assert np.linalg.norm(vectors[0]) == pytest.approx(1.0, abs=1e-5)
    assert not vectors[1].any() and not vectors[2].any()


def test_hashing_embedder_is_deterministic_and_relates_shared_words() -> None:
    embedder = HashingEmbedder(128)
    first = embedder.embed(["my dog likes the park", "my dog likes the beach", "tax forms"])
    again = HashingEmbedder(128).embed(["my dog likes the park"])
    assert np.array_equal(first[0], again[0])
    assert first[0] @ first[1] > first[0] @ first[2]
    assert embedder.name == "hashing-128"


def test_hashing_embedder_rejects_tiny_dimension() -> None:
    with pytest.raises(Invalid) as error:
        HashingEmbedder(2)
    assert error.value.field == "dim"


def test_token_counts_follow_the_wordpiece_vocabulary() -> None:
    assert count_tokens("hello world") == 2
    assert count_tokens("unbelievably") > 1  # split into word pieces
    assert [count_tokens(t) for t in ("", "a b c")] == [0, 3]


def test_token_counts_by_word_add_up_to_the_tokenizers_count_of_the_whole_line() -> None:
    """Counted word by word from a cache, a line must come to what the tokenizer makes of it
    whole: spaces doubled or at the ends, other white space, a control character inside a word
    (dropped, so the word is one), accents, CJK characters (a token each), punctuation."""
    lines = [
        "[2023-05-08] Caroline: I went to the LGBTQ support group yesterday!",
        "  two  spaces  ",
        "tab\tand\nnew line\u00a0no-break\u2003em space",
        "foot\x1fball and foot ball",  # the control character goes: "football", one token
        "café naïve façade CAFÉ",
        "中文字符 mixed中文 text",
        "e-mail: someone@example.com!! (really?) 😀",
        "",
        " ",
        "unbelievably unbelievably",  # the same word twice in one batch
    ]
    whole = [len(_tokenizer().encode(line, add_special_tokens=False).ids) for line in lines]
    assert count_tokens_of(lines) == whole
    assert count_tokens_of(lines[::-1]) == whole[::-1]  # again, now from the cache


class _Embeddings(BaseHTTPRequestHandler):
    """A stand-in OpenAI-compatible server: vector = [len(text), 1, 0] per input."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.headers.get("Authorization") != "Bearer sk-test":
            self.send_response(401)
            self.end_headers()
            return
        data = [
            {"index": i, "embedding": [float(len(text)), 1.0, 0.0]}
            for i, text in enumerate(body["input"])
        ]
        payload = json.dumps({"data": list(reversed(data)), "model": body["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Embeddings)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_remote_embedder_keeps_input_order_and_normalises(endpoint: str) -> None:
    embedder = RemoteEmbedder(endpoint, "test-model", api_key="sk-test")
    try:
        vectors = embedder.embed(["abc", "a"])
        assert embedder.dim == 3
        assert embedder.name == "remote:test-model"
    finally:
        embedder.close()
    expected = np.array([[3, 1, 0], [1, 1, 0]], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(vectors, expected)


def test_remote_embedder_reports_http_errors_without_content(endpoint: str) -> None:
    embedder = RemoteEmbedder(endpoint, "test-model", api_key="wrong")
    try:
        with pytest.raises(MemvaultError) as error:
            embedder.embed(["a secret sentence"])
    finally:
        embedder.close()
    assert "401" in str(error.value)
    assert "secret" not in str(error.value)


def test_remote_embedder_validates_its_configuration() -> None:
    with pytest.raises(Invalid) as error:
        RemoteEmbedder("ftp://example", "m")
    assert error.value.field == "base_url"
    with pytest.raises(Invalid) as error:
        RemoteEmbedder("http://127.0.0.1:9", "")
    assert error.value.field == "model"
    with pytest.raises(Invalid) as error:
        RemoteEmbedder("http://127.0.0.1:9", "m", relevance_floor=1.5)
    assert error.value.field == "relevance_floor"


def test_settings_choose_the_embedder(
    endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import ValidationError

    from memvault import Vault
    from memvault.config import Settings

    monkeypatch.setenv("MEMVAULT_EMBEDDER", "hashing")
    with Vault(tmp_path / "h") as vault:
        assert isinstance(vault.embedder, HashingEmbedder)
    remote = Settings(
        data=tmp_path / "r", embedder="remote", embedding_url=endpoint,
        embedding_model="test-model", embedding_api_key="sk-test",
    )  # fmt: skip
    with Vault(settings=remote) as vault:
        vault.add_turn("u", "s", "user", "the remote endpoint embeds this")
        assert vault.embedder.name == "remote:test-model"
        assert [h.text for h in vault.search("u", "remote endpoint")] == [
            "the remote endpoint embeds this"
        ]
        assert relevance_floor(vault.embedder) == 0.0  # a model of unknown scale: unset
    floored = remote.model_copy(update={"embedding_relevance_floor": 0.3})
    with Vault(settings=floored) as vault:
        assert relevance_floor(vault.embedder) == 0.3
    with pytest.raises(ValidationError, match="needs embedding_url and embedding_model"):
        Settings(data=tmp_path / "x", embedder="remote")


def test_a_server_warm_up_survives_an_endpoint_that_refuses(
    endpoint: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The endpoint answers 401 to this key: warming up logs the failure and returns, so a
    server still starts; the first search meets the same error, named, as before."""
    embedder = RemoteEmbedder(endpoint, "test-model", api_key="wrong")
    try:
        with Vault(tmp_path, embedder=embedder) as vault, caplog.at_level(logging.WARNING):
            vault.recall.prepare()
            assert "query embedder not warmed up (MemvaultError)" in caplog.text
            vault.add_turn("ann", "s", "user", "hello there")
            with pytest.raises(MemvaultError, match="HTTP 401"):
                vault.search("ann", "hello")
    finally:
        embedder.close()
