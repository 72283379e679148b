"""The faithfulness figures of `coach eval`: cited sentences supported by what they cite, and figures cited to a
passage that states them. Supported, re-pointable (cited to the wrong passage) and unsupported sentences,
paraphrases that must pass, and the counting over an answer."""

from __future__ import annotations

import pytest

from coach.faithfulness import Faithfulness, measure, supports
from coach.retrieval import Passage


def passage(pid: str, text: str, section: str = "Salary Ranges (US Market, 2024)", sub: str = "") -> Passage:
    return Passage(pid, text, section, sub, "06-salary.md", "Role", 0.0)


BASE = passage("b", "- Entry Level: $150,000 - $180,000\n- Mid-Level: $180,000 - $220,000", sub="Base Salary")
INTRO = passage("i", "The compensation for this role varies based on company size, location and experience.")
HUBS = passage("h", "- San Francisco Bay Area, Seattle and New York have the most openings.", "Market Demand",
               "Geographic Hotspots")


@pytest.mark.parametrize(("unit", "cited", "ok"), [
    ("Entry Level pays $150,000 - $180,000 [1].", [BASE], True),
    ("At entry level the base salary is $150K-$180K [1].", [BASE], True),  # the same figures, other words
    ("Compensation varies with company size, location and experience [1].", [INTRO], True),  # a paraphrase
    ("Entry Level pays $150,000 - $180,000 [1].", [INTRO], False),  # re-pointable: BASE holds it
    ("Entry Level pays $150,000 - $190,000 [1].", [BASE], False),  # a figure no passage states
    ("The role offers unlimited vacation and a company car [1].", [BASE], False),  # no passage says it
    ("Austin and Denver are growing hubs [1].", [HUBS], False),
    ("Anything [7].", [], False),  # a citation to no source
])
def test_support(unit: str, cited: list[Passage], ok: bool) -> None:
    assert supports(unit, cited) is ok


def test_an_answer_is_counted_per_cited_unit_and_per_figure() -> None:
    answer = ("The pay depends on the company [2].\n"
              "- Entry Level: $150,000 - $180,000 [2]\n"  # cited to the introduction: no support, figures not held
              "- Mid-Level: $180,000 - $220,000 [1]\n"
              "This sentence cites nothing.")
    got = measure(answer, [BASE, INTRO])
    assert got == Faithfulness(cited=3, supported=1, figures=4, figures_held=2)
    assert got + got == Faithfulness(6, 2, 8, 4)


TOTAL = passage("t", "- Annual Bonus: 10% to 30% of base salary\n- Stock Options/RSUs: $50,000 to $500,000+",
                sub="Total Compensation")


@pytest.mark.parametrize(("answer", "fixed"), [
    # the probe's kind: a bonus range cited to the Base Salary passage; Total Compensation holds it
    ("The annual bonus ranges from 10% to 30% of base salary [1].",
     "The annual bonus ranges from 10% to 30% of base salary [3]."),
    ("- Entry Level: $150,000 - $180,000 [2]\n- Stock Options/RSUs: $50,000 to $500,000+ [3]",
     "- Entry Level: $150,000 - $180,000 [1]\n- Stock Options/RSUs: $50,000 to $500,000+ [3]"),
    ("Entry Level pays $150,000 - $180,000 [2][3].", "Entry Level pays $150,000 - $180,000 [1]."),
])
def test_a_citation_is_pointed_at_the_passage_that_holds_the_claim(answer: str, fixed: str) -> None:
    from coach.faithfulness import repoint

    sources = [BASE, INTRO, TOTAL]
    assert repoint(answer, sources) == fixed
    assert measure(fixed, sources).supported == measure(fixed, sources).cited


@pytest.mark.parametrize("answer", [
    "Entry Level pays $150,000 - $180,000 [1].",  # supported where it points: untouched
    "The role offers unlimited vacation and a company car [1].",  # nothing supports it: left for a later stage
    "No citation here.",
])
def test_a_citation_that_holds_or_that_no_source_would_hold_is_left_alone(answer: str) -> None:
    from coach.faithfulness import repoint

    assert repoint(answer, [BASE, INTRO, TOTAL]) == answer
