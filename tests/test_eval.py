"""The evaluation harness: the JSONL reader on a file made here, and a small LoCoMo slice when
the shared datasets folder is present (it is licensed for evaluation and never copied here)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from memvault import Vault
from memvault.errors import Invalid
from memvault.evals.dataset import datasets_dir, read_cases
from memvault.evals.harness import _as_roles, _asker, _in_person, evaluate, replay_case
from memvault.evals.metrics import hit_at, recall_at, reciprocal_rank
from memvault.evals.report import format_table
from memvault.retrieval.embed import HashingEmbedder

CASE: dict[str, Any] = {
    "case_id": "mini",
    "dataset": "test",
    "metadata": {"speakers": ["Ann", "Bo"]},
    "sessions": [
        {
            "session_id": "session_1",
            "date": "2023-05-08T13:56",
            "turns": [
                {"turn_id": "D1:1", "speaker": "Ann", "text": "I started pottery classes."},
                {"turn_id": "D1:2", "speaker": "Bo", "text": "Nice! I went fishing.",
                 "image_caption": "a photo of a lake"},
            ],
        },
        {
            "session_id": "session_2",
            "date": "2023-06-01T09:00",
            "turns": [{"turn_id": "D2:1", "speaker": "Ann", "text": "My pottery bowl cracked."}],
        },
    ],
    "questions": [
        {"question_id": "q1", "question": "What class did Ann start?", "answer": "pottery",
         "category": "4", "evidence_turn_ids": ["D1:1"], "abstention": False},
        {"question_id": "q2", "question": "What did Bo photograph at the lake?", "answer": "lake",
         "category": "1", "evidence_turn_ids": ["D1:2", "D9:9"], "abstention": False},
        {"question_id": "q3", "question": "What is Ann's cat called?", "answer": "none",
         "category": "5", "evidence_turn_ids": [], "abstention": True},
    ],
}  # fmt: skip


@pytest.fixture
def mini_dataset(tmp_path: Path) -> Path:
    path = tmp_path / "mini.jsonl"
    path.write_text(json.dumps(CASE) + "\n\n", encoding="utf-8")
    return path


def test_reader_keeps_dates_resolvable_evidence_and_scoring_rules(mini_dataset: Path) -> None:
    (case,) = read_cases(mini_dataset)
    assert [s.date.isoformat() for s in case.sessions] == [
        "2023-05-08T13:56:00+00:00", "2023-06-01T09:00:00+00:00",
    ]  # fmt: skip
    assert case.sessions[0].turns[1].image_caption == "a photo of a lake"
    q1, q2, q3 = case.questions
    assert q2.evidence == ("D1:2",)  # the unresolvable id is dropped
    assert q1.scored and q2.scored and not q3.scored
    assert case.last_date == case.sessions[1].date


def test_reader_rejects_a_missing_or_malformed_file(tmp_path: Path) -> None:
    with pytest.raises(Invalid):
        list(read_cases(tmp_path / "absent.jsonl"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"case_id": "x"}\n', encoding="utf-8")
    with pytest.raises(Invalid) as error:
        list(read_cases(broken))
    assert "line 1" in str(error.value)


def _broken(change: str) -> dict[str, Any]:
    """CASE with one field changed, given as `path=value` (`-` removes the field)."""
    case = copy.deepcopy(CASE)
    path, value = change.split("=", 1)
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    target: Any = case
    for part in parents:
        target = target[part]
    if value == "-":
        del target[last]
    else:
        target[last] = json.loads(value)
    return case


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("sessions=-", "sessions is missing"),
        ('sessions.0.turns.1.text="  "', "sessions[0].turns[1].text is empty"),
        ("sessions.0.turns.0.speaker=null", "sessions[0].turns[0].speaker must be a string"),
        ('sessions.1.turns.0.turn_id="D1:1"', "sessions[1].turns[0].turn_id 'D1:1' appears twice"),
        ('sessions.1.date="in June"', "sessions[1].date is not an ISO 8601 date"),
        ('questions.0.question=""', "questions[0].question is empty"),
        (f'questions.0.question="{"x" * 4097}"',
         "questions[0].question is longer than 4096 characters"),
        ('questions.1.evidence_turn_ids="D1:2"', "questions[1].evidence_turn_ids must be a list"),
        ("questions.1.evidence_turn_ids=[3]",
         "questions[1].evidence_turn_ids must be a list of strings"),
        ("questions.2.category=true", "questions[2].category must be a string or a number"),
        ('questions.2.abstention="yes"', "questions[2].abstention must be true or false"),
        ("case_id=-", "case_id is missing"),
    ],
)  # fmt: skip
def test_reader_names_the_line_and_field_of_a_malformed_case(
    tmp_path: Path, change: str, named: str
) -> None:
    """The line number counts blank lines (an editor's line 3), and only the field's path is
    named: a value may be somebody's words."""
    path = tmp_path / "cases.jsonl"
    lines = [json.dumps(CASE), "", json.dumps(_broken(change))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(Invalid) as error:
        list(read_cases(path))
    assert str(error.value) == f"dataset: line 3: {named}"


def test_reader_limit_counts_cases_not_lines(tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    second = {**CASE, "case_id": "second"}
    path.write_text(f"\n{json.dumps(CASE)}\n\n{json.dumps(second)}\n", encoding="utf-8")
    assert [c.case_id for c in read_cases(path, limit=2)] == ["mini", "second"]
    assert [c.case_id for c in read_cases(path, limit=1)] == ["mini"]
    with pytest.raises(Invalid, match="cases: must be at least 1"):
        list(read_cases(path, limit=0))


def test_harness_refuses_a_dataset_with_nothing_to_score_before_replaying(tmp_path: Path) -> None:
    unscored = {**CASE, "questions": [CASE["questions"][2]]}  # adversarial only
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps(unscored) + "\n", encoding="utf-8")
    with pytest.raises(Invalid, match="dataset: no question to score"):
        evaluate(read_cases(path), embedder=HashingEmbedder(), progress=False)


def test_harness_names_the_case_and_session_where_a_store_limit_is_met(tmp_path: Path) -> None:
    """The reader checks the shape; the store's own limits (here: an id that would be a path)
    are met while replaying, and the error says where."""
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps(_broken('sessions.1.session_id="a/b"')) + "\n", encoding="utf-8")
    with pytest.raises(Invalid) as error:
        evaluate(read_cases(path), embedder=HashingEmbedder(), progress=False)
    assert str(error.value) == (
        "dataset: case 'mini', session 'a/b': session_id: contains a path separator"
    )


def test_metrics() -> None:
    ranked = ["a", "b", "c", "d"]
    assert recall_at(ranked, ["b", "z"], 2) == 0.5
    assert hit_at(ranked, ["d"], 3) == 0.0 and hit_at(ranked, ["d"], 4) == 1.0
    assert reciprocal_rank(ranked, ["c", "d"]) == pytest.approx(1 / 3)
    assert reciprocal_rank(ranked, ["z"]) == 0.0


def test_harness_replays_and_scores_a_made_up_case(mini_dataset: Path) -> None:
    report = evaluate(read_cases(mini_dataset), embedder=HashingEmbedder(), progress=False)
    overall = report["modes"]["hybrid"]["all"]
    assert overall["questions"] == 2  # the adversarial question is not scored
    assert overall["recall@5"] == 1.0  # three turns: everything is in the top 5
    assert overall["context_recall@2000"] == 1.0
    assert set(report["modes"]) == {"hybrid", "bm25", "dense"}
    assert report["turns"] == 3 and report["cases"] == 1
    table = format_table(report)
    assert "hybrid" in table and "p99" in table


def test_a_case_written_turn_by_turn_scores_as_one_written_a_session_at_a_time(
    mini_dataset: Path,
) -> None:
    """What a chat gets (a turn a call, the index topped up in between) is what is measured."""
    by_session = evaluate(read_cases(mini_dataset), embedder=HashingEmbedder(), progress=False)
    by_turn = evaluate(
        read_cases(mini_dataset), embedder=HashingEmbedder(), progress=False, replay="turns"
    )
    assert by_turn["modes"] == by_session["modes"]
    assert (by_session["replay"], by_turn["replay"]) == ("sessions", "turns")
    with pytest.raises(Invalid, match="replay"):
        evaluate(read_cases(mini_dataset), embedder=HashingEmbedder(), replay="words")


LOCOMO = datasets_dir() / "locomo.jsonl"


@pytest.mark.skipif(not LOCOMO.is_file(), reason="LoCoMo not found: set MEMVAULT_DATASETS")
def test_locomo_slice_recalls_most_single_hop_evidence() -> None:
    """First conversation cut to its first 5 sessions, BM25 + hashing vectors: a smoke test of
    the real data path, with a floor far below the benchmark's numbers."""
    (case,) = read_cases(LOCOMO, limit=1)
    sessions = case.sessions[:5]
    known = {t.turn_id for s in sessions for t in s.turns}
    questions = tuple(q for q in case.questions if q.evidence and set(q.evidence) <= known)
    small = replace(case, sessions=sessions, questions=questions)
    report = evaluate([small], embedder=HashingEmbedder(), progress=False)
    single_hop = report["modes"]["hybrid"]["4"]
    assert single_hop["questions"] >= 10
    assert single_hop["recall@10"] >= 0.6
    assert (
        report["modes"]["hybrid"]["all"]["recall@10"]
        >= report["modes"]["dense"]["all"]["recall@10"]
    )
    by_turn = evaluate([small], embedder=HashingEmbedder(), progress=False, replay="turns")
    assert by_turn["modes"] == report["modes"]  # a chat's index scores as a batch-built one
    # written as a chat stores it (roles, no speakers), the names of the user and agent given
    # make up for the speakers' names: here exactly, and without them recall falls
    by_role = {
        speakers: evaluate([small], embedder=HashingEmbedder(), progress=False, speakers=speakers)
        for speakers in ("roles", "unnamed")
    }
    recall = {k: r["modes"]["hybrid"]["all"]["recall@10"] for k, r in by_role.items()}
    assert recall["roles"] == report["modes"]["hybrid"]["all"]["recall@10"] > recall["unnamed"]


def test_a_case_written_as_roles_names_the_user_in_their_profile_and_the_other_as_an_agent(
    mini_dataset: Path, tmp_path: Path
) -> None:
    (case,) = read_cases(mini_dataset)
    with Vault(tmp_path / "data", embedder=HashingEmbedder()) as vault:
        replay_case(vault, "u", case, speakers="roles")
        (agent,) = vault.list_agents("u")
        assert vault.get_user("u").name == "Ann" and agent.name == "Bo"
        turns = [
            t for s in ("session_1", "session_2") for t in vault.recent_turns("u", session_id=s)
        ]
        assert [(t.role, t.speaker, t.agent_id) for t in turns] == [
            ("user", None, None), ("assistant", None, agent.id), ("user", None, None),
        ]  # fmt: skip
        hits = vault.search("u", "What did Bo photograph at the lake?", explain=True)
        assert [h.signals and h.signals["speaker"] for h in hits][:1] == [1.0]
        assert hits[0].text == "Nice! I went fishing."
        replay_case(vault, "v", case, speakers="unnamed")
        assert vault.list_agents("v") == [] and vault.get_user("v").name is None
    with pytest.raises(Invalid, match="speakers"):
        evaluate(read_cases(mini_dataset), embedder=HashingEmbedder(), speakers="words")


def test_questions_can_be_asked_of_the_user_and_the_assistant_by_role(
    mini_dataset: Path,
) -> None:
    """An agent asks about "the user", not Ann: written as roles and asked so, the mini case
    recalls what it recalls asked by name."""
    as_roles = _as_roles(["Ann", "Bo"])
    assert as_roles("What is Ann's cat called?") == "What is the user's cat called?"
    assert as_roles("Did Bo meet Ann, or Anna?") == "Did the assistant meet the user, or Anna?"
    cases = list(read_cases(mini_dataset))
    by = {
        asked: evaluate(
            cases, embedder=HashingEmbedder(), progress=False, speakers="roles", asked=asked
        )
        for asked in ("names", "roles")
    }
    assert by["roles"]["asked"] == "roles" and "asked by role" in format_table(by["roles"])
    assert by["roles"]["modes"]["hybrid"] == by["names"]["modes"]["hybrid"]
    assert by["roles"]["modes"]["hybrid"]["all"]["recall@10"] > 0
    with pytest.raises(Invalid, match="asked"):
        evaluate(cases, embedder=HashingEmbedder(), asked="pronouns")


def test_questions_can_be_asked_in_the_first_person_by_the_user(mini_dataset: Path) -> None:
    """A chat's user asks "What is my cat called?", not "What is Ann's cat called?", and an
    agent "Did I meet you?": the questions are worded so, and the report says who asked."""
    in_person = _in_person(["Ann", "Bo"], ["Ann"])
    assert in_person("What is Ann's cat called?") == "What is my cat called?"
    assert in_person("What does Ann like?") == "What do I like?"
    assert in_person("Did Bo meet Ann, or Anna?") == "Did you meet me, or Anna?"
    assert in_person("Is Bo a painter?") == "Are you a painter?"
    assert _in_person(["Ann", "Bo"], ["Bo"])("Did Bo meet Ann?") == "Did I meet you?"
    cases = list(read_cases(mini_dataset))
    by = {
        asked: evaluate(
            cases, embedder=HashingEmbedder(), progress=False, speakers="unnamed", asked=asked
        )
        for asked in ("names", "user", "assistant")
    }
    assert by["user"]["asked"] == "user" and "asked by user" in format_table(by["user"])
    assert by["user"]["modes"]["hybrid"]["all"]["recall@10"] > 0
    assert "asked by assistant" in format_table(by["assistant"])


def test_a_question_asked_in_the_first_person_says_who_asks_by_side_or_by_name() -> None:
    """Turns that give roles are asked of by side; turns that name their speakers, as a group
    chat's do, by the asking speaker's name, which the side cannot tell apart."""
    names = ["Ann", "Bo"]
    assert _asker("user", "unnamed", names) == "user"
    assert _asker("assistant", "roles", names) == "assistant"
    assert _asker("user", "named", names) == "Ann"
    assert _asker("assistant", "named", names) == "Bo"
    assert _asker("assistant", "named", [*names, "Cy"]) is None  # two would be asking
    assert _asker("names", "named", names) is None


def test_eval_command_prints_the_table_and_writes_json(
    mini_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from memvault.cli import main

    out = tmp_path / "results" / "report.json"
    code = main(["eval", "--dataset", str(mini_dataset), "--embedder", "hashing", "-o", str(out)])
    assert code == 0
    assert "recall@10" in capsys.readouterr().out
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["dataset"] == "mini.jsonl"
    assert report["modes"]["hybrid"]["all"]["questions"] == 2
    args = ["eval", "--dataset", str(mini_dataset), "--embedder", "hashing", "--replay", "turns"]
    assert main([*args, "-o", str(out)]) == 0
    assert "replayed by turn" in capsys.readouterr().out
    assert json.loads(out.read_text(encoding="utf-8"))["replay"] == "turns"
