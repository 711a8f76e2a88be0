"""OpenAI chat messages as memvault turns, and the reverse question: is this already stored?

A request carries the whole conversation so far. Its new part is what follows the last assistant
message: the user's message, or the results of the tools the assistant asked for. Earlier
messages were new in an earlier request and saved then; system (and developer) messages are the
app's instructions, not turns.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from memvault.errors import Invalid
from memvault.model import Role, Turn
from memvault.retrieval.items import EMPTY_MARK
from memvault.vault import MAX_LIST

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


Key = tuple[str, str]  # a turn's role and its text as stored: what a message is compared by


@dataclass(frozen=True, slots=True)
class NewPart:
    """What a request adds to its session, read from its messages once per request."""

    turns: list[dict[str, Any]]  # the new messages as the fields of `Vault.add_turns`, in order
    sources: list[str]  # where each of those turns comes from (`messages[3]`), for errors
    sent: list[Key]  # the conversation before them (stored already), oldest first

    @property
    def tail_size(self) -> int:
        """How many of the session's last turns to read to place the request in it: its
        conversation, its new turns, and an answer a retry may find after them."""
        return min(len(self.sent) + len(self.turns) + 1, MAX_LIST)


def new_part(messages: Sequence[Message], agent_id: str | None) -> NewPart:
    """The new messages (the turns after the last assistant message) as turn fields, and the
    conversation before them (every message but the app's instructions), stored already."""
    start = 0
    for at, message in enumerate(messages):
        if message["role"] == "assistant":
            start = at + 1
    new = [at for at, m in enumerate(messages) if at >= start and m["role"] in TURN_ROLES]
    return NewPart(
        turns=[message_turn(messages[at], f"messages[{at}]", agent_id) for at in new],
        sources=[f"messages[{at}]" for at in new],
        sent=[
            message_key(m, f"messages[{at}]")
            for at, m in enumerate(messages[:start])
            if m["role"] not in INSTRUCTION_ROLES
        ],
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


def stored_text(message: Message, where: str) -> tuple[str, list[str]]:
    """A message's text as its turn holds it, and the kinds of its parts that are not text.
    A message with no text but other parts (only an image, say) holds the list of what it held,
    so that it is still a turn; an assistant's refusal stands for its missing text."""
    text, kinds = text_and_parts(message.get("content"), f"{where}.content")
    if kinds and not text.strip():
        text = "[" + ", ".join(kinds) + "]"
    refusal = message.get("refusal")
    if message["role"] == "assistant" and not text and isinstance(refusal, str):
        text = refusal
    return text, kinds


def message_turn(message: Message, where: str, agent_id: str | None) -> dict[str, Any]:
    """A user or tool message as the fields of `Vault.add_turns` (`stored_text`).

    A tool message's turn has the call it answers as its `tool_result` (`{"tool_call_id":
    ...}`): a tool may well answer nothing, and that empty answer is still a turn."""
    text, kinds = stored_text(message, where)
    metadata: dict[str, Any] = {"non_text_parts": kinds} if kinds else {}
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


def message_key(message: Message, where: str) -> Key:
    role: str = message["role"]
    return TURN_ROLES.get(role, role), stored_text(message, where)[0]


def turn_key(turn: Turn) -> Key:
    """A stored turn as a message of the app's would be compared with it: the answer saved
    for an LLM's empty one stands for the empty message the app sends back."""
    if turn.role is Role.ASSISTANT and turn.metadata.get(EMPTY_MARK) is True:
        return turn.role.value, ""
    return turn.role.value, turn.content


def same_turn(stored: Turn, fields: Mapping[str, Any]) -> bool:
    """Whether a stored turn is this one: same role, text and tool call."""
    same_result: bool = stored.tool_result == fields.get("tool_result")
    return turn_key(stored) == (fields["role"], fields["content"]) and same_result


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a request stands in its session's stored tail."""

    stored: bool  # its new turns are stored already: the request was sent before
    carried: list[str]  # the ids of the stored turns it carries, to leave out of its memory


def place(new: NewPart, tail: Sequence[Turn]) -> Placement:
    """Place a request in its session's last stored turns (`tail`, oldest first; at least
    `new.tail_size` of them where the session has them): whether its new turns are stored
    (`retried_at`), and which stored turns it carries: its new turns if so, and those of the
    turns just before them that match a message of its conversation, each message matching
    one turn. Those the app changed or did not send are not carried."""
    at = retried_at(new, tail)
    before = tail[: len(tail) if at is None else at]
    unmatched = Counter(new.sent)
    carried = []
    for turn in before[-len(new.sent) :] if new.sent else ():
        if unmatched[key := turn_key(turn)] > 0:
            unmatched[key] -= 1
            carried.append(turn.id)
    if at is not None:
        carried += [turn.id for turn in tail[at : at + len(new.turns)]]
    return Placement(stored=at is not None, carried=carried)


def retried_at(new: NewPart, tail: Sequence[Turn]) -> int | None:
    """Where in `tail` the request's new turns are stored already, or None: they are its last
    turns, or (for a request that carries an answer) followed only by an answer to them, and
    they follow the answer the request says they follow.

    A request sent again (a retry after the LLM failed, a client that timed out, an app asking
    for another answer) saves nothing twice. The same words said again after an answer are a
    new turn: the request's answer is not the stored turn before them. A request with no
    answer that finds its words answered is taken as new: an app that sends only the user's
    latest message may well say the same thing twice."""
    if not new.turns:
        return None
    ends = [len(tail)]
    if new.sent and tail and tail[-1].role is Role.ASSISTANT:
        ends.append(len(tail) - 1)
    for end in ends:
        at = end - len(new.turns)
        if at >= 0 and all(map(same_turn, tail[at:end], new.turns)) and follows(new, tail[:at]):
            return at
    return None


def follows(new: NewPart, before: Sequence[Turn]) -> bool:
    """Whether stored turns (`before`) end with the answer the request's new part follows."""
    return not new.sent or (bool(before) and turn_key(before[-1]) == new.sent[-1])


TURN_FIELD_SOURCES = {"content": "content", "speaker": "name", "tool_result": "tool_call_id"}


def message_error(exc: Invalid, new: NewPart) -> Invalid:
    """A refusal of the new turns (`Vault.add_turns`: over a size limit, say), naming the field
    of the request (`messages[3].content`) rather than of the turn (`turns[0].content`)."""
    found = re.fullmatch(r"turns\[(\d+)\]\.(\w+)", exc.field)
    if found is None or int(found[1]) >= len(new.sources):
        return exc
    source = TURN_FIELD_SOURCES.get(found[2])
    field = new.sources[int(found[1])] + (f".{source}" if source else "")
    return Invalid(field, exc.message.removeprefix(f"{exc.field}: "))


def last_user_text(messages: Sequence[Message]) -> str:
    """The text of the latest user message: what memory is asked about. Empty if none."""
    for at in range(len(messages) - 1, -1, -1):
        if messages[at]["role"] == "user":
            text, _ = text_and_parts(messages[at].get("content"), f"messages[{at}].content")
            return text
    return ""
