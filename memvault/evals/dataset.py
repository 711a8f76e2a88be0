"""Conversation evaluation data in the shared JSONL format (LoCoMo; LongMemEval once converted).

One JSON object per line: a case with its sessions (dated, with turns) and its questions (with
the ids of the turns holding the evidence). The data is licensed for evaluation only and is
never copied into this repository: it is read from `MEMVAULT_DATASETS`, or by default from
`../shared/datasets` beside the repository.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from memvault.errors import Invalid
from memvault.retrieval.search import MAX_QUERY_CHARS

DATASETS_ENV = "MEMVAULT_DATASETS"
REPO_ROOT = Path(__file__).resolve().parents[2]
RECALL_CATEGORIES = ("1", "2", "3", "4")


@dataclass(frozen=True, slots=True)
class SourceTurn:
    turn_id: str
    speaker: str
    text: str
    image_caption: str | None = None


@dataclass(frozen=True, slots=True)
class SourceSession:
    session_id: str
    date: datetime
    turns: tuple[SourceTurn, ...]


@dataclass(frozen=True, slots=True)
class Question:
    question_id: str
    question: str
    answer: str
    category: str
    date: datetime | None
    evidence: tuple[str, ...]
    abstention: bool

    @property
    def scored(self) -> bool:
        """Counted in recall: categories 1 to 4 with at least one evidence turn."""
        return self.category in RECALL_CATEGORIES and bool(self.evidence) and not self.abstention


@dataclass(frozen=True, slots=True)
class Case:
    case_id: str
    sessions: tuple[SourceSession, ...]
    questions: tuple[Question, ...]

    @property
    def last_date(self) -> datetime:
        return max(s.date for s in self.sessions)


def datasets_dir() -> Path:
    """Where the evaluation data lives: `MEMVAULT_DATASETS`, else beside the repository."""
    configured = os.environ.get(DATASETS_ENV)
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "datasets"


def _date(text: str) -> datetime:
    """ISO 8601 (the files give minutes, no zone); a date without a zone is taken as UTC."""
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Malformed(Exception):
    """A field of a case that is missing or of the wrong kind, named by its path in the case."""


_KIND_NAMES: dict[Any, str] = {
    str: "a string",
    list: "a list",
    bool: "true or false",
    (str, int): "a string or a number",
}


def _field(parent: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """`parent[key]`, which must be present and of `kind`; `where` is the parent's path."""
    if not isinstance(parent, dict) or key not in parent:
        raise _Malformed(f"{where}{key} is missing")
    value = parent[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _Malformed(f"{where}{key} must be {_KIND_NAMES[kind]}")
    return value


def _text(parent: Any, key: str, where: str, *, max_chars: int | None = None) -> str:
    """A string field that must hold something other than spaces (turns and questions)."""
    value: str = _field(parent, key, str, where)
    if not value.strip():
        raise _Malformed(f"{where}{key} is empty")
    if max_chars is not None and len(value) > max_chars:
        raise _Malformed(f"{where}{key} is longer than {max_chars} characters")
    return value


def _optional(parent: dict[str, Any], key: str, kind: type, where: str) -> Any:
    """`parent[key]` when present and not null, which must then be of `kind`; else None."""
    return None if parent.get(key) is None else _field(parent, key, kind, where)


def _moment(parent: Any, key: str, where: str) -> datetime:
    text = _field(parent, key, str, where)
    try:
        return _date(text)
    except ValueError:
        raise _Malformed(f"{where}{key} is not an ISO 8601 date") from None


def _case(data: Any) -> Case:
    """One case, checked field by field so that a bad one is refused before anything is replayed."""
    if not isinstance(data, dict):
        raise _Malformed("the line is not a JSON object")
    sessions = []
    seen: set[str] = set()
    for s, raw in enumerate(_field(data, "sessions", list, "")):
        where = f"sessions[{s}]."
        turns = []
        for t, turn in enumerate(_field(raw, "turns", list, where)):
            at = f"{where}turns[{t}]."
            turn_id = _field(turn, "turn_id", str, at)
            if turn_id in seen:
                raise _Malformed(f"{at}turn_id {turn_id!r} appears twice")
            seen.add(turn_id)
            speaker = _text(turn, "speaker", at)
            caption = _optional(turn, "image_caption", str, at)
            turns.append(SourceTurn(turn_id, speaker, _text(turn, "text", at), caption))
        session_id = str(_field(raw, "session_id", (str, int), where))
        sessions.append(SourceSession(session_id, _moment(raw, "date", where), tuple(turns)))
    questions = []
    for n, q in enumerate(_field(data, "questions", list, "")):
        where = f"questions[{n}]."
        evidence = _field(q, "evidence_turn_ids", list, where)
        if not all(isinstance(e, str) for e in evidence):
            raise _Malformed(f"{where}evidence_turn_ids must be a list of strings")
        questions.append(
            Question(
                question_id=str(_field(q, "question_id", (str, int), where)),
                question=_text(q, "question", where, max_chars=MAX_QUERY_CHARS),
                answer=str(q.get("answer", "")),
                category=str(_field(q, "category", (str, int), where)),
                date=_moment(q, "question_date", where) if q.get("question_date") else None,
                evidence=tuple(e for e in evidence if e in seen),
                abstention=bool(_optional(q, "abstention", bool, where)),
            )
        )
    return Case(str(_field(data, "case_id", (str, int), "")), tuple(sessions), tuple(questions))


def read_cases(path: Path, *, limit: int | None = None) -> Iterator[Case]:
    """Cases from a JSONL file, in file order; at most `limit` of them (blank lines skipped).

    A line that is not a case is refused with its line number and the path of the first field
    at fault ("line 3: sessions[2].turns[0].text is empty"), never with the field's content.
    """
    if limit is not None and limit < 1:
        raise Invalid("cases", "must be at least 1")
    if not path.is_file():
        raise Invalid("dataset", "file not found")
    read = 0
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if limit is not None and read >= limit:
                return
            if not line.strip():
                continue
            try:
                yield _case(json.loads(line))
            except _Malformed as exc:
                raise Invalid("dataset", f"line {number}: {exc}") from None
            except ValueError:
                raise Invalid("dataset", f"line {number} is not valid JSON") from None
            read += 1
