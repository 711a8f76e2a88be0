"""Bad input gets an `Invalid` naming the field, and nothing is written."""

from __future__ import annotations

from typing import Any

import pytest

from memvault import Invalid, NotFound, Vault

BIG = "x" * 65537


@pytest.mark.parametrize(
    ("field", "args", "kwargs"),
    [
        ("user_id", ("", "s", "user", "hi"), {}),
        ("user_id", ("a" * 129, "s", "user", "hi"), {}),
        ("user_id", ("a/b", "s", "user", "hi"), {}),
        ("user_id", ("a\\b", "s", "user", "hi"), {}),
        ("user_id", ("..", "s", "user", "hi"), {}),
        ("user_id", ("bad\nid", "s", "user", "hi"), {}),
        ("user_id", ("bad\x00id", "s", "user", "hi"), {}),
        ("user_id", (" padded", "s", "user", "hi"), {}),
        ("user_id", (42, "s", "user", "hi"), {}),
        ("session_id", ("u", "", "user", "hi"), {}),
        ("session_id", ("u", "x/y", "user", "hi"), {}),
        ("turns[0].role", ("u", "s", "robot", "hi"), {}),
        ("turns[0].channel", ("u", "s", "user", "hi"), {"channel": "sms"}),
        ("turns[0].modality", ("u", "s", "user", "hi"), {"modality": "video"}),
        ("turns[0].content", ("u", "s", "user", BIG), {}),
        ("turns[0].content", ("u", "s", "user", ""), {}),
        ("turns[0].content", ("u", "s", "user", 12), {}),
        ("turns[0].content", ("u", "s", "user", "\ud800"), {}),
        ("turns[0].confidence", ("u", "s", "user", "hi"), {"confidence": 1.5}),
        ("turns[0].confidence", ("u", "s", "user", "hi"), {"confidence": -0.1}),
        ("turns[0].confidence", ("u", "s", "user", "hi"), {"confidence": "high"}),
        ("turns[0].confidence", ("u", "s", "user", "hi"), {"confidence": True}),
        ("turns[0].metadata", ("u", "s", "user", "hi"), {"metadata": ["not", "an", "object"]}),
        ("turns[0].metadata", ("u", "s", "user", "hi"), {"metadata": {"x": object()}}),
        ("turns[0].metadata", ("u", "s", "user", "hi"), {"metadata": {"x": BIG}}),
        ("turns[0].created_at", ("u", "s", "user", "hi"), {"created_at": "yesterday"}),
        ("turns[0].agent_id", ("u", "s", "user", "hi"), {"agent_id": ""}),
        ("turns[0].audio_duration", ("u", "s", "user", "hi"), {"audio_duration": -1}),
    ],
)
def test_bad_turn_input_names_the_field_and_writes_nothing(
    vault: Vault, field: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(Invalid) as err:
        vault.add_turn(*args, **kwargs)
    assert err.value.field == field
    assert err.value.details == {"field": field}
    assert vault.list_users() == []


def test_error_messages_never_echo_the_value(vault: Vault) -> None:
    with pytest.raises(Invalid) as err:
        vault.add_turn("u", "s", "user", "secret-sauce" * 10_000)
    assert "secret-sauce" not in str(err.value)


def test_content_limit_is_configurable(make_vault: Any) -> None:
    small = make_vault(max_content_bytes=10)
    small.add_turn("u", "s", "user", "0123456789")
    with pytest.raises(Invalid, match="over the limit of 10"):
        small.add_turn("u", "s", "user", "0123456789!")


def test_tool_turn_may_have_empty_content(vault: Vault) -> None:
    turn = vault.add_turn("u", "s", "assistant", "", tool_calls=[{"name": "search"}])
    assert turn.content == "" and turn.tool_calls == [{"name": "search"}]


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("text", {"text": ""}),
        ("kind", {"kind": "dream"}),
        ("tier", {"tier": "attic"}),
        ("importance", {"importance": 2}),
        ("valence", {"valence": -1.5}),
        ("tags", {"tags": "not-a-list"}),
        ("pinned", {"pinned": "yes"}),
        ("valid_from", {"valid_from": "not a date"}),
        ("memory", {"colour": "blue"}),
    ],
)
def test_bad_memory_input(vault: Vault, field: str, kwargs: dict[str, Any]) -> None:
    fields = {"text": "a fact", **kwargs}
    text = fields.pop("text")
    with pytest.raises(Invalid) as err:
        vault.add_memory("u", text, **fields)
    assert err.value.field == field
    assert vault.list_memories("u") == []


@pytest.mark.parametrize(
    ("field", "call"),
    [
        ("limit", lambda v: v.recent_turns("u", limit=0)),
        ("limit", lambda v: v.list_sessions("u", limit=10_001)),
        ("before_id", lambda v: v.list_sessions("u", before="2026-01-01T00:00:00Z", before_id="")),
        ("limit", lambda v: v.list_users(limit=0)),
        ("after", lambda v: v.list_users(after="a/b")),
        ("prefix", lambda v: v.list_users(prefix="\ud800")),
        ("channel", lambda v: v.recent_turns("u", channel="sms")),
        ("kinds", lambda v: v.list_memories("u", kinds=["dream"])),
        ("offset", lambda v: v.list_memories("u", offset=-1)),
        ("tier", lambda v: v.move_memory("u", "m")),
        ("created_at", lambda v: v.update_memory("u", "m", created_at="2020-01-01")),
        ("turns", lambda v: v.add_turns("u", "s", [])),
        (
            "turns[0]",
            lambda v: v.add_turns("u", "s", [{"role": "user", "content": "x", "colour": 1}]),
        ),
        ("turns[0].role", lambda v: v.add_turns("u", "s", [{"content": "x"}])),
        ("confidence", lambda v: v.update_session("u", "s", confidence=3)),
        ("key", lambda v: v.set_global_context("a/b", "text")),
    ],
)
def test_bad_arguments_elsewhere(vault: Vault, field: str, call: Any) -> None:
    with pytest.raises(Invalid) as err:
        call(vault)
    assert err.value.field == field


def test_missing_things_are_not_found(vault: Vault) -> None:
    for call in (
        lambda: vault.get_session("nobody", "s"),
        lambda: vault.update_session("nobody", "s", title="t"),
        lambda: vault.get_memory("nobody", "m"),
        lambda: vault.delete_user("nobody"),
        lambda: vault.export_user("nobody"),
    ):
        with pytest.raises(NotFound):
            call()
