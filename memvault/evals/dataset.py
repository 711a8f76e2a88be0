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


def _case(data: dict[str, Any]) -> Case:
    sessions = []
    for raw in data["sessions"]:
        turns = tuple(
            SourceTurn(t["turn_id"], t["speaker"], t["text"], t.get("image_caption"))
            for t in raw["turns"]
        )
        sessions.append(SourceSession(raw["session_id"], _date(raw["date"]), turns))
    known = {t.turn_id for s in sessions for t in s.turns}
    questions = tuple(
        Question(
            question_id=q["question_id"],
            question=q["question"],
            answer=str(q.get("answer", "")),
            category=str(q["category"]),
            date=_date(q["question_date"]) if q.get("question_date") else None,
            evidence=tuple(e for e in q["evidence_turn_ids"] if e in known),
            abstention=bool(q.get("abstention")),
        )
        for q in data["questions"]
    )
    return Case(str(data["case_id"]), tuple(sessions), questions)


def read_cases(path: Path, *, limit: int | None = None) -> Iterator[Case]:
    """Cases from a JSONL file, in file order; at most `limit` of them."""
    if not path.is_file():
        raise Invalid("dataset", "file not found")
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            if limit is not None and number >= limit:
                return
            if line.strip():
                try:
                    yield _case(json.loads(line))
                except (KeyError, TypeError, ValueError):
                    raise Invalid("dataset", f"line {number + 1} is not a valid case") from None
