"""What memvault remembers, put into the prompt as one system message.

The app's own system messages come first (they say who the assistant is); the memory follows
them, before the conversation. Nothing is added when nothing is remembered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from memvault.api.proxy.turns import INSTRUCTION_ROLES

MEMORY_PREAMBLE = (
    "What you remember about this user from earlier conversations (from memvault). Use it when "
    "it helps; do not mention where it comes from unless asked."
)


def memory_message(context_text: str) -> dict[str, str]:
    return {"role": "system", "content": f"{MEMORY_PREAMBLE}\n\n{context_text}"}


def with_memory(
    messages: Sequence[Mapping[str, Any]], context_text: str
) -> list[Mapping[str, Any]]:
    """The messages with the memory after the leading system messages (first, if none)."""
    if not context_text.strip():
        return list(messages)
    at = 0
    while at < len(messages) and messages[at].get("role") in INSTRUCTION_ROLES:
        at += 1
    return [*messages[:at], memory_message(context_text), *messages[at:]]
