"""Retrieval evaluation on conversation datasets (LoCoMo format)."""
