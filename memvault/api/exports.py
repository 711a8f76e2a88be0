"""Render a `Vault.export_user` document as JSON Lines or Markdown.

JSON stays the lossless, importable form; JSON Lines streams one record per line for tools;
Markdown is for people reading their own history.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


def jsonl_lines(document: dict[str, Any]) -> Iterator[str]:
    """One `{"type": ..., ...}` record per line: user, agents, sessions, turns, memories."""
    yield _line({"type": "user", **document["user"]})
    for agent in document["agents"]:
        yield _line({"type": "agent", **agent})
    for session in document["sessions"]:
        yield _line({"type": "session", **{k: v for k, v in session.items() if k != "turns"}})
        for turn in session["turns"]:
            yield _line({"type": "turn", "session_id": session["id"], **turn})
    for memory in document["memories"]:
        yield _line({"type": "memory", **memory})
    for day in document["daily_activity"]:
        yield _line({"type": "daily_activity", **day})


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def markdown(document: dict[str, Any]) -> str:
    user = document["user"]
    out = [f"# Memory export for {user['id']}", "", f"Exported {document['exported_at']}.", ""]
    for session in document["sessions"]:
        out += [f"## Session {session.get('title') or session['id']}", ""]
        for turn in session["turns"]:
            who = turn.get("speaker") or turn["role"]
            out.append(f"- **{who}** ({turn['created_at']}): {turn['content']}")
        out.append("")
    if document["memories"]:
        out += ["## Memories", ""]
        for memory in document["memories"]:
            label = memory["kind"] + (f", {memory['category']}" if memory.get("category") else "")
            out.append(f"- ({label}) {memory['text']}")
        out.append("")
    return "\n".join(out)
