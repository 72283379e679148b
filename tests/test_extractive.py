"""The extractive answer (no model; also the fallback): the passages' own bullets and sentences, cited."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from coach import knowledge
from coach.config import Settings
from coach.embeddings import MiniLMEmbeddings
from coach.extractive import UnitSimilarity, compose, key_points, lead, units
from coach.retrieval import HybridRetriever, Passage, build_retriever
from coach.store import open_index

SALARY = "Salary Ranges (US Market, 2024)"
INTRO = "From the knowledge base:"


@pytest.fixture(scope="module")
def retriever(tmp_path_factory: pytest.TempPathFactory, repo_root: Path,
              real_embedder: MiniLMEmbeddings) -> HybridRetriever:
    """Real retrieval over the repository's knowledge/ (MiniLM, embedded Chroma on a temp folder)."""
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("COACH_")]:
            mp.delenv(name)
        data = tmp_path_factory.getbasetemp() / "answer-index"  # shared with the other answer tests
        data.mkdir(exist_ok=True)
        settings = Settings(_env_file=None, knowledge_dir=repo_root / "knowledge",
                            data_dir=data, models_dir=repo_root / "models")
    index = open_index(settings, real_embedder)
    index.sync(knowledge.load(settings.knowledge_dir, settings.chunk_max_words).chunks, progress=False)
    return build_retriever(index, settings)


def _lines(answer: str) -> list[tuple[str, int]]:
    """(text, cited passage number) of each `- text [n]` line."""
    out = []
    for line in answer.splitlines()[1:]:
        match = re.fullmatch(r"- (.+) \[(\d+)\]", line)
        assert match, f"not a cited bullet: {line!r}"
        out.append((match.group(1), int(match.group(2))))
    return out


def test_units_are_bullets_and_sentences() -> None:
    text = ("Total compensation includes:\n- Annual Bonus: 10% - 30%\n* Stock: varies\n\n"
            "First point. Second point! third")
    assert units(text) == ["Total compensation includes:", "Annual Bonus: 10% - 30%", "Stock: varies",
                           "First point.", "Second point! third"]


def test_the_salary_question_is_answered_with_the_entry_level_bullet_and_citations(
        retriever: HybridRetriever) -> None:
    question = "What is the entry-level base salary range?"
    passages = retriever.search(question, k=4)
    answer = compose(question, passages, INTRO)
    assert answer.splitlines()[0] == INTRO
    lines = _lines(answer)
    entry = [n for text, n in lines if text == "Entry Level: $150,000 - $180,000"]
    assert entry, answer
    assert (passages[entry[0] - 1].section, passages[entry[0] - 1].subsection) == (SALARY, "Base Salary")
    assert lines[0][0] == "Entry Level: $150,000 - $180,000", "the best match comes first"


@pytest.mark.parametrize(("question", "expected"), [
    ("What does a VP of AI/ML make?", "VP of AI/ML: $400,000 - $600,000+"),
    ("How large is the annual bonus?", "Annual Bonus: 10% - 30% of base salary"),
    ("Which machine learning frameworks should I have experience with?", "TensorFlow"),
])
def test_every_line_is_quoted_from_the_passage_it_cites(retriever: HybridRetriever, question: str,
                                                        expected: str) -> None:
    passages = retriever.search(question, k=4)
    answer = compose(question, passages, INTRO)
    assert expected in answer
    lines = _lines(answer)
    assert 1 <= len(lines) <= 4
    for text, n in lines:
        assert 1 <= n <= len(passages)
        assert text in passages[n - 1].text


def test_lead_in_lines_are_left_out() -> None:
    passage = Passage("p", "Total compensation packages often include bonuses, stock options, and benefits:\n"
                      "- Annual Bonus: 10% - 30% of base salary", SALARY, "Total Compensation", "06.md", "r", 1.0)
    points = key_points("compensation bonus", [passage])
    assert [p.text for p in points] == ["Annual Bonus: 10% - 30% of base salary"]


def test_points_keep_the_passages_order_and_numbering() -> None:
    first = Passage("a", "- Annual Bonus: 10% - 30% of base salary", SALARY, "Total Compensation", "06.md", "r", 1.0)
    second = Passage("b", "- Sign-on Bonus: $20,000 - $100,000", SALARY, "Total Compensation", "06.md", "r", 0.5)
    points = key_points("sign-on bonus annual bonus", [first, second])
    assert [(p.text, p.source) for p in points] == [("Annual Bonus: 10% - 30% of base salary", 1),
                                                   ("Sign-on Bonus: $20,000 - $100,000", 2)]


def test_no_passages_give_no_answer() -> None:
    assert compose("What does it pay?", [], INTRO) == ""


@pytest.mark.parametrize(("text", "expected"), [
    ("Resource Constraints: Navigating the high costs of AI implementation.", "Resource Constraints"),
    ("Entry Level: $150,000 - $180,000", "Entry Level"),
    ("Lead, mentor, and grow teams of engineers, applied scientists, and machine learning experts.",
     "Lead, mentor, and grow teams"),
    ("Note: this is a long lead that runs on for many words: then more", "Note"),
    ("Major tech hubs like Silicon Valley: New York", "Major tech hubs like Silicon"),
])
def test_a_unit_is_named_by_its_term_or_first_words(text: str, expected: str) -> None:
    assert lead(text) == expected


def test_meaning_finds_the_unit_that_shares_no_word_with_the_question(retriever: HybridRetriever,
                                                                      real_embedder: MiniLMEmbeddings) -> None:
    """'limited budgets' shares no word with 'Resource Constraints ... high costs'; embeddings see it."""
    question = "What problems do limited budgets cause when adopting AI?"
    passages = [p for p in retriever.search(question, k=4) if p.section == "Common Challenges"]
    assert passages, "retrieval finds the Common Challenges passage"
    calls: list[int] = []

    def embed_documents(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        return real_embedder.embed_documents(texts)

    similarity = UnitSimilarity(real_embedder.embed_query, embed_documents)
    similarity.prepare(passages)
    embedded = sum(calls)
    best = max(key_points(question, passages, similarity=similarity), key=lambda k: k.score)
    assert best.text.startswith("Resource Constraints:")
    key_points("Which challenge is about costs?", passages, similarity=similarity)
    assert sum(calls) == embedded, "units are embedded once, not per question"
