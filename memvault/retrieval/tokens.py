"""Token counting for context budgets, with the tokenizer file kept in the package.

`tiktoken` downloads its vocabularies at first use, which memvault must never do; the bundled
WordPiece vocabulary of the default embedder counts within a few percent of GPT tokenizers on
English prose, which is what a budget needs.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from memvault.retrieval.embed import TOKENIZER_PATH

if TYPE_CHECKING:
    from tokenizers import Tokenizer


@cache
def _tokenizer() -> Tokenizer:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(TOKENIZER_PATH))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def count_tokens(text: str) -> int:
    """Tokens in `text`, without the special tokens a model would add around it."""
    return len(_tokenizer().encode(text, add_special_tokens=False).ids)


def count_tokens_batch(texts: list[str]) -> list[int]:
    """Token counts of many texts in one call: the Rust tokenizer batches them in parallel."""
    encodings = _tokenizer().encode_batch(texts, add_special_tokens=False)
    return [len(e.ids) for e in encodings]
