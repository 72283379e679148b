"""The evidence of an answer (no model; also the fallback): the passages' own bullets and sentences, cited.

The tests of what retrieval with the real embedding model finds are marked `integration`.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from coach.embeddings import FakeEmbeddings
from coach.extractive import Evidence, KeyPoint, UnitSimilarity, format_points, gather, key_points, lead, units
from coach.retrieval import HybridRetriever, Passage

SALARY = "Salary Ranges (US Market, 2024)"
INTRO = "From the knowledge base:"
ANNUAL = Passage("a", "- Annual Bonus: 10% - 30% of base salary", SALARY, "Total Compensation", "06.md", "r", 1.0)
SIGN_ON = Passage("b", "- Sign-on Bonus: $20,000 - $100,000", SALARY, "Total Compensation", "06.md", "r", 0.5)


def _lines(answer: str) -> list[tuple[str, int]]:
    """(text, cited passage number) of each `- text [n]` line."""
    out = []
    for line in answer.splitlines()[1:]:
        match = re.fullmatch(r"- (.+) \[(\d+)\]", line)
        assert match, f"not a cited bullet: {line!r}"
        out.append((match.group(1), int(match.group(2))))
    return out


# -- units and key points ---------------------------------------------------------------------
def test_units_are_bullets_and_sentences() -> None:
    text = ("Total compensation includes:\n- Annual Bonus: 10% - 30%\n* Stock: varies\n\n"
            "First point. Second point! third")
    assert units(text) == ["Total compensation includes:", "Annual Bonus: 10% - 30%", "Stock: varies",
                           "First point.", "Second point! third"]


def test_a_unit_is_not_split_after_an_abbreviation() -> None:
    assert units("Know frameworks, e.g. TensorFlow. Work in the U.S. Market too.") == \
        ["Know frameworks, e.g. TensorFlow.", "Work in the U.S. Market too."]


def test_lead_in_lines_are_left_out() -> None:
    passage = Passage("p", "Total compensation packages often include bonuses, stock options, and benefits:\n"
                      "- Annual Bonus: 10% - 30% of base salary", SALARY, "Total Compensation", "06.md", "r", 1.0)
    points = key_points("compensation bonus", [passage])
    assert [p.text for p in points] == ["Annual Bonus: 10% - 30% of base salary"]


def test_points_keep_the_passages_order_and_numbering() -> None:
    points = key_points("sign-on bonus annual bonus", [ANNUAL, SIGN_ON])
    assert [(p.text, p.source) for p in points] == [("Annual Bonus: 10% - 30% of base salary", 1),
                                                   ("Sign-on Bonus: $20,000 - $100,000", 2)]


def test_at_most_limit_points_and_none_far_below_the_best() -> None:
    passage = Passage("p", "- Annual Bonus: 10% - 30% of base salary\n- Stock Options: varies\n- Sign-on: rare\n"
                      "- Health insurance\n- Parental leave", SALARY, "Total Compensation", "06.md", "r", 1.0)
    points = key_points("annual bonus base salary", [passage], limit=2)
    assert [p.text for p in points] == ["Annual Bonus: 10% - 30% of base salary"], \
        "units sharing no word score far below the best one"
    assert len(key_points("compensation", [passage], limit=2)) == 2


def test_no_passages_give_no_points() -> None:
    assert key_points("What does it pay?", []) == []
    evidence = gather("What does it pay?", [], INTRO)
    assert evidence.points == [] and evidence.key_facts == "" and evidence.best is None


# -- evidence ---------------------------------------------------------------------------------
def test_gather_gives_the_points_as_a_cited_list_under_the_intro() -> None:
    evidence = gather("How large is the annual bonus?", [SIGN_ON, ANNUAL], INTRO)
    assert isinstance(evidence, Evidence)
    assert evidence.question == "How large is the annual bonus?" and evidence.passages == [SIGN_ON, ANNUAL]
    assert evidence.key_facts.splitlines()[0] == INTRO
    assert ("Annual Bonus: 10% - 30% of base salary", 2) in _lines(evidence.key_facts)
    assert evidence.best is not None and evidence.best.text.startswith("Annual Bonus") and evidence.best.source == 2


def test_format_points() -> None:
    points = [KeyPoint("Entry Level: $150,000 - $180,000", 1, 2.0), KeyPoint("Annual Bonus: 10%", 3, 1.0)]
    assert format_points(points, INTRO) == (f"{INTRO}\n- Entry Level: $150,000 - $180,000 [1]\n"
                                            "- Annual Bonus: 10% [3]")
    assert format_points([], INTRO) == ""


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


# -- similarity by meaning --------------------------------------------------------------------
class Counting(FakeEmbeddings):
    """The fake embedder, counting the documents it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[str] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.embedded += texts
        return super().embed_documents(texts)


def test_units_are_embedded_once_per_process() -> None:
    embedder = Counting()
    similarity = UnitSimilarity(embedder.embed_query, embedder.embed_documents)
    similarity.prepare([ANNUAL, SIGN_ON])
    assert len(embedder.embedded) == 3, "two units and their shared heading"
    first = key_points("annual bonus", [ANNUAL, SIGN_ON], similarity=similarity)
    key_points("sign-on bonus", [ANNUAL, SIGN_ON], similarity=similarity)
    similarity.plain("bonus", [ANNUAL.label])
    assert len(embedder.embedded) == 3, "prepared units and headings are not embedded again"
    assert first[0].text.startswith("Annual Bonus")
    other = Passage("c", "- Health insurance", SALARY, "Additional Benefits", "06.md", "r", 0.1)
    key_points("insurance", [other], similarity=similarity)
    assert len(embedder.embedded) == 4, "a passage not prepared is embedded on first use"


def test_similarity_is_the_cosine_of_question_and_unit() -> None:
    embedder = FakeEmbeddings()
    similarity = UnitSimilarity(embedder.embed_query, embedder.embed_documents)
    scores = similarity("annual bonus", ANNUAL, ["Annual Bonus: 10% - 30% of base salary", "Health insurance"])
    assert scores[0] > 0.3 and scores[1] == pytest.approx(0.0, abs=1e-6)


# -- with real retrieval ----------------------------------------------------------------------
@pytest.mark.integration
def test_the_salary_question_is_answered_with_the_entry_level_bullet_and_citations(
        real_retriever: HybridRetriever) -> None:
    question = "What is the entry-level base salary range?"
    passages = real_retriever.search(question, k=4)
    answer = gather(question, passages, INTRO).key_facts
    assert answer.splitlines()[0] == INTRO
    lines = _lines(answer)
    entry = [n for text, n in lines if text == "Entry Level: $150,000 - $180,000"]
    assert entry, answer
    assert (passages[entry[0] - 1].section, passages[entry[0] - 1].subsection) == (SALARY, "Base Salary")
    assert lines[0][0] == "Entry Level: $150,000 - $180,000", "the best match comes first"


@pytest.mark.integration
@pytest.mark.parametrize(("question", "expected"), [
    ("What does a VP of AI/ML make?", "VP of AI/ML: $400,000 - $600,000+"),
    ("How large is the annual bonus?", "Annual Bonus: 10% - 30% of base salary"),
    ("Which machine learning frameworks should I have experience with?", "TensorFlow"),
])
def test_every_line_is_quoted_from_the_passage_it_cites(real_retriever: HybridRetriever, question: str,
                                                        expected: str) -> None:
    passages = real_retriever.search(question, k=4)
    answer = gather(question, passages, INTRO).key_facts
    assert expected in answer
    lines = _lines(answer)
    assert 1 <= len(lines) <= 4
    for text, n in lines:
        assert 1 <= n <= len(passages)
        assert text in passages[n - 1].text


@pytest.mark.integration
def test_meaning_finds_the_unit_that_shares_no_word_with_the_question(real_retriever: HybridRetriever,
                                                                      real_embedder: Any) -> None:
    """'limited budgets' shares no word with 'Resource Constraints ... high costs'; embeddings see it."""
    question = "What problems do limited budgets cause when adopting AI?"
    passages = [p for p in real_retriever.search(question, k=4) if p.section == "Common Challenges"]
    assert passages, "retrieval finds the Common Challenges passage"
    calls: list[int] = []

    def embed_documents(texts: list[str]) -> list[list[float]]:
        calls.append(len(texts))
        return real_embedder.embed_documents(texts)

    similarity = UnitSimilarity(real_embedder.embed_query, embed_documents)
    similarity.prepare(passages)
    embedded = sum(calls)
    best = gather(question, passages, INTRO, similarity).best
    assert best is not None and best.text.startswith("Resource Constraints:")
    without = max(key_points(question, passages), key=lambda k: k.score)
    assert not without.text.startswith("Resource Constraints:"), "shared words alone miss it"
    key_points("Which challenge is about costs?", passages, similarity=similarity)
    assert sum(calls) == embedded, "units are embedded once, not per question"
