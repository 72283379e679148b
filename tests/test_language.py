"""Questions in other languages (the second outside probe): said plainly, before the spelling pass would turn
their words into English ones ("Wie" -> "Wide", "Rolle" -> "Role"); English questions full of names, tools and
loanwords are never taken for another language."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import REPO, FakeChat

from coach.coach import Coach
from coach.language import not_english

OTHER = [
    "Wie viel verdient man in dieser Rolle?", "Was ist die Rolle eines Managers?", "Welche Fähigkeiten brauche ich?",
    "Quel est le salaire pour ce poste ?", "Comment devenir manager dans cette entreprise ?",
    "¿Cuánto gana un gerente de ingeniería?",
    "¿Qué habilidades necesito para este puesto?", "Quanto guadagna un manager?", "Quanto ganha um gerente?",
    "Hoe veel verdient een manager?", "Что нужно знать для этой роли?", "这个职位的薪水是多少？",
    "この仕事の給料はいくらですか", "ما هو الراتب؟", "연봉은 얼마입니까?",
]
# English with the names and loanwords an English question about the role carries.
NAMES = ["Kubernetes", "PyTorch", "Munich", "São Paulo", "Zürich", "Director of AI Engineering", "a café", "MLOps"]
FRAMES = ["Is {} important for this role?", "What does the role pay in {}?", "How do I get from {} to the next rung?",
          "Tell me about {}.", "Which skills matter more than {}?"]


@pytest.mark.parametrize("question", OTHER)
def test_questions_in_other_languages_are_not_english(question: str) -> None:
    assert not_english(question)


def test_english_questions_with_names_and_loanwords_are_english() -> None:
    wrong = [q for q in (f.format(n) for f, n in itertools.product(FRAMES, NAMES)) if not_english(q)]
    assert wrong == []


def test_no_public_question_is_taken_for_another_language() -> None:
    files = [*sorted((REPO.parent / "shared" / "eval").glob("*.jsonl")), REPO / "bench" / "extra_questions.jsonl"]
    questions = [json.loads(line)["question"] for f in files if f.exists() for line in f.read_text().splitlines()
                 if line.strip() and "question" in json.loads(line)]
    assert questions and [q for q in questions if not_english(q)] == []


def test_the_coach_says_it_answers_in_english_and_asks_no_model(make_coach: Callable[..., Coach]) -> None:
    fake = FakeChat(["Die Rolle ..."])
    coach = make_coach(fake)
    answer = coach.answer("Wie viel verdient man in dieser Rolle?")
    assert answer.route == "not_english" and answer.out_of_scope and fake.requests == []
    assert "English" in answer.text and "Wide" not in answer.text and answer.sources == []
    assert answer.standalone == "Wie viel verdient man in dieser Rolle?"  # no spelling pass ran on it


def test_the_prompt_file_names_the_role(tmp_path: Path, make_coach: Callable[..., Coach]) -> None:
    text = make_coach().answer("Quel est le salaire pour ce poste ?").text
    assert "Senior Software Engineering Manager in AI" in text and text.endswith("?\"")
