"""Retrieval: embedders, per-user lexical and dense indexes, hybrid ranking, the index cache."""
