"""Figures in a generated answer must be in its sources: normalisation, what strip_ungrounded keeps, and the
citation cite_missing gives a sentence that cites nothing."""

from __future__ import annotations

import pytest

from coach.grounding import cite_missing, figures, strip_ungrounded, ungrounded

SOURCE = """Salary Ranges (US Market, 2024) > Base Salary
- Entry Level: $150,000 - $180,000
- Mid-Level: $180,000 - $220,000
- Top Tier/FAANG Companies: $250,000 - $350,000+
Salary Ranges (US Market, 2024) > Total Compensation
- Annual Bonus: 10% - 30% of base salary
- Chief AI Officer: $500,000 - $1,000,000+
Most roles ask for 5+ years of management experience and 2.5 years in AI."""


@pytest.mark.parametrize(("written", "as_in_source"), [
    ("$150K", "$150,000"),
    ("$150k", "150,000"),
    ("150000", "$150,000"),
    ("$ 150,000", "$150,000"),
    ("$1M", "$1,000,000"),
    ("$1.2M", "1,200,000"),
    ("10%", "10 %"),
    ("10 percent", "10%"),
    ("2.5 years", "2.5"),
])
def test_the_same_figure_written_two_ways_is_one_figure(written: str, as_in_source: str) -> None:
    assert figures(written) == figures(as_in_source)
    assert figures(written), f"{written!r} holds a figure"


@pytest.mark.parametrize("written", [
    "$150,000 - $180,000", "$150K-$180K", "$150k–$180k", "$150K to $180K", "between 150,000 and 180,000",
])
def test_a_salary_range_gives_both_ends(written: str) -> None:
    assert figures(written) == {"150000", "180000"}


@pytest.mark.parametrize("written", ["10% - 30%", "10-30%", "10 to 30 percent", "10%–30%"])
def test_a_percentage_range_gives_both_ends(written: str) -> None:
    assert figures(written) == {"10", "30"}


def test_citations_and_list_numbers_are_not_figures() -> None:
    assert figures("1. Mentor the team [3]\n2. Hire well [12][4]\n3) Review [1, 2]") == set()


def test_figures_inside_words_are_not_figures() -> None:
    assert figures("Use Q4 planning and GPT4-class models in v2") == set()


@pytest.mark.parametrize("answer", [
    "Entry level pays $150K-$180K [1].",
    "Entry level pays $150,000 to $180,000 and a bonus of 10 to 30 percent [2].",
    "A Chief AI Officer can reach $1M+ [1].",
    "Top tier pays up to $350K.",
    "You need 5+ years of management experience.",
    "Salary Ranges (US Market, 2024) lists it.",
])
def test_figures_from_the_sources_are_grounded(answer: str) -> None:
    assert ungrounded(answer, SOURCE) == set()
    assert strip_ungrounded(answer, SOURCE) == (answer, set())


@pytest.mark.parametrize(("answer", "invented"), [
    ("Entry level pays $160,000 [1].", {"160000"}),
    ("Entry level pays $999,999.", {"999999"}),
    ("The bonus is 45% of base [2].", {"45"}),
    ("You need 12 years of experience.", {"12"}),
    ("Entry level pays $150K-$190K [1].", {"190000"}),
])
def test_a_figure_not_in_the_sources_is_ungrounded(answer: str, invented: set[str]) -> None:
    assert ungrounded(answer, SOURCE) == invented


def test_strip_ungrounded_keeps_the_grounded_sentences() -> None:
    answer = ("Entry level pays $150,000 - $180,000 [1]. Most managers earn $999,999 [1]. "
              "The annual bonus is 10% - 30% of base salary [2].")
    cleaned, removed = strip_ungrounded(answer, SOURCE)
    assert removed == {"999999"}
    assert "999" not in cleaned
    assert "Entry level pays $150,000 - $180,000 [1]." in cleaned
    assert "The annual bonus is 10% - 30% of base salary [2]." in cleaned


def test_strip_ungrounded_drops_only_the_bad_bullet() -> None:
    answer = ("From the passages:\n- Entry Level: $150,000 - $180,000 [1]\n- Principal: $777,000 [1]\n"
              "- Annual Bonus: 10% - 30% [2]")
    cleaned, removed = strip_ungrounded(answer, SOURCE)
    assert removed == {"777000"}
    lines = cleaned.splitlines()
    assert "- Entry Level: $150,000 - $180,000 [1]" in lines
    assert "- Annual Bonus: 10% - 30% [2]" in lines
    assert not any("777" in line for line in lines)


def test_an_answer_without_figures_is_left_alone() -> None:
    answer = "Mentor the team and keep up with research [2]."
    assert strip_ungrounded(answer, SOURCE) == (answer, set())


def test_a_shorthand_range_with_one_unit_is_grounded() -> None:
    assert ungrounded("Entry level pays $150-180K [1].", SOURCE) == set()


def test_strip_ungrounded_keeps_the_line_breaks_of_the_kept_lines() -> None:
    answer = "Pay:\n- Entry Level: $150,000 [1]\n- Principal: $777,000 [1]\n\n\n\nAnnual bonus: 10% [2]."
    cleaned, _ = strip_ungrounded(answer, SOURCE)
    assert cleaned == "Pay:\n- Entry Level: $150,000 [1]\n\nAnnual bonus: 10% [2]."


# -- cite_missing -------------------------------------------------------------------------------
SOURCES = [
    (1, "Salary Ranges (US Market, 2024) > Base Salary\n- Entry Level: $150,000 - $180,000\n"
        "- Senior Level: $220,000 - $280,000"),
    (2, "Salary Ranges (US Market, 2024) > Total Compensation\n- Annual Bonus: 10% - 30% of base salary"),
    (3, "Requirements > Technical Expertise\nExperience with TensorFlow and PyTorch."),
]


def test_an_uncited_sentence_gets_the_passage_sharing_the_most_with_it() -> None:
    answer = "The annual bonus is 10% - 30% of base salary. Know TensorFlow and PyTorch!"
    assert cite_missing(answer, SOURCES) == ("The annual bonus is 10% - 30% of base salary [2]. "
                                             "Know TensorFlow and PyTorch [3]!")


def test_an_uncited_bullet_gets_its_citation_at_the_end() -> None:
    answer = "These include:\n- Entry Level: $150,000 - $180,000\n- Senior level pays $220,000"
    assert cite_missing(answer, SOURCES) == ("These include:\n- Entry Level: $150,000 - $180,000 [1]\n"
                                             "- Senior level pays $220,000 [1]")


def test_a_shared_figure_counts_more_than_a_shared_word() -> None:
    """'salary' is in passages 1 and 2; the figure 30 only in 2."""
    assert cite_missing("Up to 30% more salary.", SOURCES) == "Up to 30% more salary [2]."


@pytest.mark.parametrize("answer", [
    "Entry level pays $150,000 [1]. Senior level pays $220,000 [1].",
    "The bonus matters.",
    "Key facts:",
    "",
])
def test_cited_lead_in_and_unrelated_sentences_are_left_alone(answer: str) -> None:
    assert cite_missing(answer, SOURCES) == answer


def test_without_sources_nothing_is_cited() -> None:
    assert cite_missing("Entry level pays $150,000 - $180,000.", []) == "Entry level pays $150,000 - $180,000."


def test_only_the_uncited_sentence_is_cited() -> None:
    answer = "Entry level pays $150,000 - $180,000 [1]. The annual bonus is 10% - 30% of base salary."
    assert cite_missing(answer, SOURCES) == ("Entry level pays $150,000 - $180,000 [1]. "
                                             "The annual bonus is 10% - 30% of base salary [2].")


def test_a_401k_plan_is_a_name_not_a_figure() -> None:
    assert figures("401(k) matching and a 401 (k) plan") == set()
    assert ungrounded("Benefits include 401(k) matching [1].", "Health insurance") == set()
