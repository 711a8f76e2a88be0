"""What memvault makes of what it stores: context assembly for LLM prompts, and consolidation."""
