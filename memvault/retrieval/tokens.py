"""Token counting for context budgets, with the tokenizer file kept in the package.

`tiktoken` downloads its vocabularies at first use, which memvault must never do. The bundled
WordPiece vocabulary of the default embedder is a real subword tokenizer, so its counts are a
close stand-in for an LLM's own; a budget needs that, not exactness.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

from memvault.retrieval.embed import TOKENIZER_PATH

if TYPE_CHECKING:
    from tokenizers import Tokenizer

KEPT_WORDS = 65_536


@cache
def _tokenizer() -> Tokenizer:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


class _Counts:
    """Token counts of words (runs of text between spaces), the least recently used let go past
    `KEPT_WORDS`.

    A line's count is the sum of its words' counts, exactly: WordPiece splits at every space and
    never merges across one, and its normalisation maps each character on its own. People reuse
    their words, so after the first few contexts nearly every word is known, and a line is
    counted in a few microseconds instead of 83 by the tokenizer. Words not yet known are
    tokenized in one batch, without the offsets a plain call tracks.
    """

    def __init__(self) -> None:
        self._kept: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, texts: Sequence[str]) -> list[int]:
        lines = [text.split(" ") for text in texts]
        with self._lock:
            known = {w: self._kept[w] for words in lines for w in words if w in self._kept}
            for word in known:
                self._kept.move_to_end(word)
        missing = [w for w in dict.fromkeys(w for words in lines for w in words) if w not in known]
        if missing:
            encoded = _tokenizer().encode_batch_fast(missing, add_special_tokens=False)
            counted = {word: len(e.ids) for word, e in zip(missing, encoded, strict=True)}
            with self._lock:
                self._kept.update(counted)
                while len(self._kept) > KEPT_WORDS:
                    self._kept.popitem(last=False)
            known.update(counted)
        return [sum(known[w] for w in words) for words in lines]


_counts = _Counts()


def count_tokens_of(texts: Sequence[str]) -> list[int]:
    """Tokens in each text, without the special tokens a model would add around it."""
    return _counts.of(texts)


def count_tokens(text: str) -> int:
    """Tokens in `text`, without the special tokens a model would add around it."""
    return _counts.of([text])[0]
