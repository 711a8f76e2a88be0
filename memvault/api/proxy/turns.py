"""OpenAI chat messages as memvault turns, and the reverse question: is this already stored?

A request carries the whole conversation so far. Its new part is what follows the last assistant
message: the user's message, or the results of the tools the assistant asked for. Earlier
messages were new in an earlier request and saved then; system (and developer) messages are the
app's instructions, not turns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memvault.errors import Invalid
from memvault.model import Turn

INSTRUCTION_ROLES = frozenset(("system", "developer"))
TURN_ROLES = {"user": "user", "tool": "tool", "function": "tool"}  # "function": the old tool role
TEXT_PART = "text"

Message = Mapping[str, Any]


def check_messages(body: Mapping[str, Any]) -> list[Message]:
    """`messages`, a non-empty list of objects each with a string `role`; the rest of each
    message is the LLM's to judge."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Invalid("messages", "must be a non-empty list")
    for at, message in enumerate(messages):
        if not isinstance(message, dict):
            raise Invalid(f"messages[{at}]", "must be an object")
        if not isinstance(message.get("role"), str):
            raise Invalid(f"messages[{at}].role", "must be a string")
    return messages


@dataclass(frozen=True, slots=True)
class NewPart:
    """What a request adds to its session, read from its messages once per request."""

    turns: list[dict[str, Any]]  # the new messages as the fields of `Vault.add_turns`, in order
    stored_sent: int  # how many of the session's last stored turns the request carries
    answer: Message | None  # the assistant message the new part follows, or None


def new_part(messages: Sequence[Message], agent_id: str | None) -> NewPart:
    """The new messages (the turns after the last assistant message) as turn fields; the
    conversation before them (every message but the app's instructions), which is stored
    already; and the last message of that conversation, the answer they follow."""
    start = 0
    for at, message in enumerate(messages):
        if message["role"] == "assistant":
            start = at + 1
    new = [(at, m) for at, m in enumerate(messages) if at >= start and m["role"] in TURN_ROLES]
    conversation = [m for m in messages if m["role"] not in INSTRUCTION_ROLES]
    sent = len(conversation) - len(new)
    return NewPart(
        turns=[message_turn(m, f"messages[{at}]", agent_id) for at, m in new],
        stored_sent=sent,
        answer=conversation[sent - 1] if sent > 0 else None,
    )


def text_and_parts(content: Any, where: str) -> tuple[str, list[str]]:
    """The text of a message's content, and the kinds of its parts that are not text.

    Content is a string, null, or a list of parts (`{"type": "text", "text": ...}`,
    `{"type": "image_url", ...}`, ...): the text parts are joined by blank lines; of the
    others only the kind is kept, never the data (an image, a recording)."""
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise Invalid(where, "must be a string, null or a list of parts")
    texts: list[str] = []
    kinds: list[str] = []
    for at, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str):
            raise Invalid(f"{where}[{at}].type", "must be a string")
        if kind == TEXT_PART:
            text = part.get("text")
            if not isinstance(text, str):
                raise Invalid(f"{where}[{at}].text", "must be a string")
            texts.append(text)
        else:
            kinds.append(kind)
    return "\n\n".join(texts), kinds


def message_turn(message: Message, where: str, agent_id: str | None) -> dict[str, Any]:
    """A user or tool message as the fields of `Vault.add_turns`. A message with no text
    (only an image, say) is saved as the list of what it held, so that it is still a turn.

    A tool message's turn has the call it answers as its `tool_result` (`{"tool_call_id":
    ...}`): a tool may well answer nothing, and that empty answer is still a turn."""
    text, kinds = text_and_parts(message.get("content"), f"{where}.content")
    metadata: dict[str, Any] = {}
    if kinds:
        metadata["non_text_parts"] = kinds
        if not text.strip():
            text = "[" + ", ".join(kinds) + "]"
    role = TURN_ROLES[message["role"]]
    name = message.get("name")
    fields: dict[str, Any] = {"role": role, "content": text, "metadata": metadata}
    if role == "tool":
        fields["tool_result"] = {"tool_call_id": message.get("tool_call_id")}
    elif not text.strip():
        raise Invalid(f"{where}.content", "must hold some text or another part")
    if role == "user" and isinstance(name, str) and name:
        fields["speaker"] = name
    elif role == "tool" and name is not None:
        metadata["name"] = name
    if agent_id is not None:
        fields["agent_id"] = agent_id
    return fields


def same_turn(stored: Turn, fields: Mapping[str, Any]) -> bool:
    """Whether a stored turn is this one: same role, text and tool call."""
    same_result: bool = stored.tool_result == fields.get("tool_result")
    return (
        stored.role.value == fields["role"] and stored.content == fields["content"] and same_result
    )


def already_stored(
    turns: Sequence[Mapping[str, Any]], stored: Sequence[Turn], answer: Message | None
) -> bool:
    """Whether the session's last stored turns (`stored`, oldest first, one more than `turns`
    where there is one) are these turns, after the `answer` the request says they follow.

    A request sent again (a retry after the LLM failed, or a client that timed out) saves
    nothing twice. The same words said again after an answer that was not stored (an LLM's
    empty answer has no turn) are a new turn: the request's answer is not the stored turn
    before them."""
    tail = stored[len(stored) - len(turns) :] if len(stored) >= len(turns) else []
    if len(tail) != len(turns) or not all(map(same_turn, tail, turns)):
        return False
    if answer is None:
        return True
    before = stored[: len(stored) - len(turns)]
    text, _ = text_and_parts(answer.get("content"), "answer.content")
    return bool(before) and before[-1].role.value == "assistant" and before[-1].content == text


def last_user_text(messages: Sequence[Message]) -> str:
    """The text of the latest user message: what memory is asked about. Empty if none."""
    for at in range(len(messages) - 1, -1, -1):
        if messages[at]["role"] == "user":
            text, _ = text_and_parts(messages[at].get("content"), f"messages[{at}].content")
            return text
    return ""
