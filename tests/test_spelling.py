"""The spelling pass: unknown words are read as the knowledge base's words they stand for; known words never change."""

from __future__ import annotations

from typing import Any

import pytest

from coach.retrieval import HybridRetriever
from coach.spelling import Speller, distance, skeleton

KB = ["Senior Level salary ranges for the manager", "Director of AI Engineering", "Professional development budgets"]


def speller(**kwargs: Any) -> Speller:
    return Speller(KB, known={"germany", "pirate", "what", "for"}, fold=lambda w: w[:-1] if w.endswith("s") else w,
                   **kwargs)


def test_edit_distance_counts_swaps_as_one_and_gives_up_past_its_limit() -> None:
    assert distance("salry", "salary", 2) == 1 and distance("mangaer", "manager", 2) == 1
    assert distance("budget", "budget", 1) == 0 and distance("abc", "xyzzy", 2) == 3


def test_a_skeleton_is_the_words_consonants() -> None:
    assert skeleton("manager") == "mngr" and skeleton("level") == "lvl" and skeleton("engineering") == "engnrng"


def test_typos_and_abbreviations_become_the_knowledge_bases_words() -> None:
    assert speller().correct("ai mngr salry rnge for senior lvl??") == "ai manager salary range for senior level??"
    assert speller().correct("Whats the pay for a Dirctor?") == "Whats the pay for a Director?"


def test_known_words_and_unrelated_unknown_words_are_left_alone() -> None:
    text = "What does a pirate earn in Germany? kubernetes zzz prote\u0301ge\u0301 proté"
    assert speller().correct(text) == text
    assert speller().suggest("budget") is None, "a knowledge-base word is known"


@pytest.mark.integration
def test_a_misspelt_question_retrieves_the_salary_bands(real_retriever: HybridRetriever) -> None:
    query = real_retriever.correct("ai mngr salry rnge for senior lvl??")
    assert "salary" in query and "manager" in query
    labels = [p.label for p in real_retriever.search(query, k=3)]
    assert any(label.startswith("Salary Ranges") for label in labels), labels
    assert real_retriever.correct("What does a senior engineering manager earn in Germany?").endswith("Germany?")


@pytest.mark.integration
def test_a_passage_the_question_quotes_is_retrieved_though_its_meaning_ranks_it_low(
        real_retriever: HybridRetriever) -> None:
    passages = real_retriever.search("Which industries offer competitive packages for AI expertise?", k=4)
    labels = [p.label for p in passages]
    assert labels.index("Salary Ranges (US Market, 2024) > Factors Influencing Compensation") <= 1, labels
    scores = [p.score for p in passages]
    assert scores == sorted(scores, reverse=True)
