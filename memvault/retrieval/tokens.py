"""Token counting for context budgets, with the tokenizer file kept in the package.

`tiktoken` downloads its vocabularies at first use, which memvault must never do. The bundled
WordPiece vocabulary of the default embedder is a real subword tokenizer, so its counts are a
close stand-in for an LLM's own; a budget needs that, not exactness.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from functools import cache
from typing import TYPE_CHECKING

from memvault.retrieval.embed import TOKENIZER_PATH

if TYPE_CHECKING:
    from tokenizers import Tokenizer

KEPT = 65_536  # lines, and words, each


@cache
def _tokenizer() -> Tokenizer:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


class _Kept:
    """Counts by text, the least recently used let go past `KEPT`."""

    def __init__(self) -> None:
        self._counts: OrderedDict[str, int] = OrderedDict()

    def known(self, texts: Iterable[str]) -> dict[str, int]:
        found = {text: self._counts[text] for text in texts if text in self._counts}
        for text in found:
            self._counts.move_to_end(text)
        return found

    def keep(self, counts: dict[str, int]) -> None:
        self._counts.update(counts)
        while len(self._counts) > KEPT:
            self._counts.popitem(last=False)


class _Counts:
    """Token counts of lines, and of the words (runs of text between spaces) of lines not seen.

    Context assembly meets the same lines call after call (the conversation under way, the
    facts, what the search finds again), and those are one lookup each. A new line's count is
    the sum of its words' counts, exactly: WordPiece splits at every space and never merges
    across one, and its normalisation maps each character on its own. People reuse their words,
    so most of a new line's words are known, and it is counted in a few microseconds instead of
    83 by the tokenizer. Words not yet known are tokenized in one batch, without the offsets a
    plain call tracks.
    """

    def __init__(self) -> None:
        self._lines = _Kept()
        self._words = _Kept()
        self._lock = threading.Lock()

    def of(self, texts: Sequence[str]) -> list[int]:
        with self._lock:
            known = self._lines.known(texts)
        new = {text: text.split(" ") for text in texts if text not in known}
        if new:
            with self._lock:
                words = self._words.known(w for split in new.values() for w in split)
            missing = [w for w in dict.fromkeys(w for split in new.values() for w in split)
                       if w not in words]  # fmt: skip
            if missing:
                encoded = _tokenizer().encode_batch_fast(missing, add_special_tokens=False)
                words.update({w: len(e.ids) for w, e in zip(missing, encoded, strict=True)})
            counted = {text: sum(words[w] for w in split) for text, split in new.items()}
            with self._lock:
                self._words.keep({w: words[w] for w in missing})
                self._lines.keep(counted)
            known.update(counted)
        return [known[text] for text in texts]


_counts = _Counts()


def count_tokens_of(texts: Sequence[str]) -> list[int]:
    """Tokens in each text, without the special tokens a model would add around it."""
    return _counts.of(texts)


def load_tokenizer() -> None:
    """Load the tokenizer now (about 40 ms), for a server's warm-up: counting a text would not
    do it, when its count is already kept."""
    _tokenizer()


def count_tokens(text: str) -> int:
    """Tokens in `text`, without the special tokens a model would add around it."""
    return _counts.of([text])[0]
