"""Query expansion with related words: the shipped thesaurus, how it is built, and its effect on
search (hashing embedder, so only the lexical side is exercised)."""

from __future__ import annotations

from pathlib import Path

import pytest

from memvault import Vault
from memvault.errors import Invalid
from memvault.retrieval.embed import HashingEmbedder
from memvault.retrieval.fusion import Weights
from memvault.retrieval.text import terms
from memvault.retrieval.thesaurus import (
    Thesaurus,
    build_thesaurus,
    shipped_thesaurus,
    vocabulary_words,
)


def test_the_shipped_thesaurus_relates_everyday_words() -> None:
    thesaurus = shipped_thesaurus()
    assert len(thesaurus) > 15_000
    assert "children" in thesaurus.related("kids")
    assert "hiking" in thesaurus.related("hike")
    assert thesaurus.related("the") == ()  # stop words are never expanded
    assert thesaurus.related("zzzunknown") == ()


def test_expansion_terms_skip_stop_words_and_terms_already_asked_for() -> None:
    thesaurus = Thesaurus({"kids": ("children", "kid"), "what": ("which",)})
    assert thesaurus.expansion_terms("What do the kids like?", terms("kids like")) == terms(
        "children"
    )


def test_build_keeps_close_words_only_and_round_trips_through_its_file(tmp_path: Path) -> None:
    vocabulary = ["garden", "gardens", "gardening", "violin", "tax"]
    thesaurus = build_thesaurus(HashingEmbedder(), vocabulary, neighbours=2, min_cosine=0.01)
    for word in vocabulary:
        assert word not in thesaurus.related(word)
        assert len(thesaurus.related(word)) <= 2
    strict = build_thesaurus(HashingEmbedder(), vocabulary, min_cosine=1.01)
    assert len(strict) == 0
    path = tmp_path / "related.txt.gz"
    thesaurus.dump(path)
    loaded = Thesaurus.load(path)
    assert {w: loaded.related(w) for w in vocabulary} == {
        w: thesaurus.related(w) for w in vocabulary
    }


def test_the_vocabulary_is_whole_english_words() -> None:
    vocabulary = vocabulary_words()
    assert "children" in vocabulary and "the" not in vocabulary
    assert all(w.isascii() and w.isalpha() and len(w) >= 3 for w in vocabulary)
    assert not any(w.startswith("##") for w in vocabulary)


def test_search_finds_a_related_word_and_expansion_can_be_switched_off(
    recall_vault: Vault,
) -> None:
    vault = recall_vault
    vault.add_turn("u", "s1", "user", "The children loved the dinosaur bones", speaker="Ann")
    vault.add_turn("u", "s2", "user", "Tax forms are due in April", speaker="Ann")
    lexical = Weights.for_mode("bm25")
    hits = vault.search("u", "What do her kids like?", weights=lexical)
    assert [h.text for h in hits] == ["The children loved the dinosaur bones"]
    off = Weights(bm25=1.0, dense=0.0, expansion=0.0)
    assert vault.search("u", "What do her kids like?", weights=off) == []


def test_a_negative_expansion_weight_is_refused() -> None:
    with pytest.raises(Invalid, match=r"weights\.expansion"):
        Weights(expansion=-0.1)
