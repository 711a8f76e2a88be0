"""Token counting for context budgets, with the tokenizer file kept in the package.

`tiktoken` downloads its vocabularies at first use, which memvault must never do. The bundled
WordPiece vocabulary of the default embedder is a real subword tokenizer, so its counts are a
close stand-in for an LLM's own; a budget needs that, not exactness.
"""

from __future__ import annotations

from functools import cache, lru_cache
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


@lru_cache(maxsize=65_536)
def count_tokens(text: str) -> int:
    """Tokens in `text`, without the special tokens a model would add around it.

    Cached: context assembly counts the same recent turns and facts on every call.
    """
    return len(_tokenizer().encode(text, add_special_tokens=False).ids)
