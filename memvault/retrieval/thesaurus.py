"""Related words for query expansion, derived once from the bundled MiniLM model.

The lexical index misses evidence that says "children" when the question says "kids", and the
dense signal is too weak on short chat turns to make up for it. Each whole word of MiniLM's
WordPiece vocabulary was embedded on its own, and its nearest words (cosine at least
`MIN_COSINE`) were written to a small file shipped with the package. At query time the
neighbours of the query's words become extra BM25 terms at a reduced weight: no model call, no
per-user state, and nothing about any user is involved in building it.

Regenerate the file (deterministic for a given model) with `python -m memvault.retrieval.thesaurus`.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

import numpy as np

from memvault.retrieval.embed import TOKENIZER_PATH, Embedder
from memvault.retrieval.text import STOP_WORDS, terms, words

THESAURUS_PATH = Path(__file__).with_name("minilm_thesaurus.txt.gz")
NEIGHBOURS = 3
MIN_COSINE = 0.6
_MIN_WORD_CHARS = 3
_BLOCK = 1024


class Thesaurus:
    """word -> its closest words, best first."""

    def __init__(self, related: dict[str, tuple[str, ...]]) -> None:
        self._related = related

    def __len__(self) -> int:
        return len(self._related)

    def related(self, word: str) -> tuple[str, ...]:
        return self._related.get(word, ())

    def expansion_terms(self, text: str, known_terms: Iterable[str]) -> list[str]:
        """Index terms of the words related to `text`'s words, minus those already asked for."""
        seen = set(known_terms)
        extra = []
        for word in words(text):
            if word in STOP_WORDS:
                continue
            for neighbour in self.related(word):
                for term in terms(neighbour):
                    if term not in seen:
                        seen.add(term)
                        extra.append(term)
        return extra

    def dump(self, path: Path) -> None:
        """One line per word: the word, then its neighbours, separated by spaces."""
        lines = (" ".join((word, *near)) for word, near in sorted(self._related.items()))
        with gzip.open(path, "wt", encoding="utf-8", compresslevel=9) as out:
            out.write("\n".join(lines) + "\n")

    @classmethod
    def load(cls, path: Path) -> Thesaurus:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            entries = (line.split() for line in lines)
            return cls({entry[0]: tuple(entry[1:]) for entry in entries if len(entry) > 1})


@cache
def shipped_thesaurus() -> Thesaurus:
    """The thesaurus built from MiniLM, loaded once per process (about 20k words)."""
    return Thesaurus.load(THESAURUS_PATH)


def vocabulary_words(tokenizer_path: Path = TOKENIZER_PATH) -> list[str]:
    """The whole English words of the WordPiece vocabulary that can be index terms."""
    vocab = json.loads(tokenizer_path.read_text(encoding="utf-8"))["model"]["vocab"]
    return sorted(
        word
        for word in vocab
        if word.isascii()
        and word.isalpha()
        and len(word) >= _MIN_WORD_CHARS
        and word not in STOP_WORDS
    )


def build_thesaurus(
    embedder: Embedder,
    vocabulary: Sequence[str],
    *,
    neighbours: int = NEIGHBOURS,
    min_cosine: float = MIN_COSINE,
) -> Thesaurus:
    """Each word's nearest other words by the embedder's cosine, in blocks to bound memory."""
    vectors = embedder.embed(list(vocabulary))
    related: dict[str, tuple[str, ...]] = {}
    for start in range(0, len(vocabulary), _BLOCK):
        block = vectors[start : start + _BLOCK] @ vectors.T
        for row, similarities in enumerate(block):
            similarities[start + row] = -1.0  # a word is not its own neighbour
            best = np.argsort(-similarities, kind="stable")[:neighbours]
            near = tuple(vocabulary[j] for j in best if similarities[j] >= min_cosine)
            if near:
                related[vocabulary[start + row]] = near
    return Thesaurus(related)


def main() -> None:
    from memvault.retrieval.embed import MiniLMEmbedder

    thesaurus = build_thesaurus(MiniLMEmbedder(), vocabulary_words())
    thesaurus.dump(THESAURUS_PATH)
    print(f"{len(thesaurus)} words written")


if __name__ == "__main__":
    main()
