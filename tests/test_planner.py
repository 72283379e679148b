"""The career planner: the role card read from the knowledge Markdown, the assessment rules at their boundaries,
and the cited report.

The profile reader and the model's help are in test_planner_profile.py; the coach's planning route in
test_planner_chat.py; the store, résumés and `coach plan` in test_planner_io.py.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import SALARY
from planner_support import KNOWLEDGE, card_of, cited, passages_of

from coach.planner import Planner, Profile, assess, read_profile, render, to_dict
from coach.planner.assess import VERDICT_WORDS, Assessment
from coach.planner.card import RoleCard
from coach.retrieval import Library

GROUPS = ["Educational Background", "Technical Expertise", "Leadership and Management", "Project Management",
          "Technical Skills", "Soft Skills", "Additional Desirable Skills"]
LADDER = [("Entry Level", 150_000, 180_000), ("Mid-Level", 180_000, 220_000), ("Senior Level", 220_000, 280_000),
          ("Top Tier/FAANG Companies", 250_000, 350_000), ("Director of AI Engineering", 300_000, 400_000),
          ("VP of AI/ML", 400_000, 600_000), ("Chief AI Officer", 500_000, 1_000_000)]
MET = {"years_development": 8, "years_leadership": 5, "degree": "bachelor"}  # every hard requirement, exactly
NOT_YET_WORDS = re.compile(r"verdict: ready|you are ready|you're ready|you meet (?:the|all|every)", re.IGNORECASE)


@pytest.fixture(scope="module")
def card() -> RoleCard:
    """The card of the repository's knowledge folder."""
    return card_of()


def verdict(card: RoleCard, **profile: Any) -> str:
    """The verdict for a profile given as fields."""
    return assess(Profile(**profile), card).verdict


def all_must_skills(card: RoleCard) -> list[str]:
    """Enough terms of every must-have skill requirement to meet it."""
    return [t for r in card.requirements if r.must and r.kind == "skill" for t in r.terms[:r.need]]


def nice_skills(card: RoleCard) -> list[str]:
    """Every term of the nice-to-have requirements."""
    return [t for r in card.requirements if not r.must for t in r.terms]


# -- the card: read from the Markdown ---------------------------------------------------------------
def markdown_bullets(path: Path) -> dict[str, list[str]]:
    """The bullets of a knowledge file by `##` heading, read straight from the file."""
    out: dict[str, list[str]] = {}
    heading = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            heading = line[3:].strip()
        elif line.startswith("- ") and heading:
            out.setdefault(heading, []).append(line[2:].strip())
    return out


def test_requirements_are_grouped_as_the_text_groups_them(card: RoleCard) -> None:
    written = markdown_bullets(KNOWLEDGE / "03-requirements.md")
    assert list(dict.fromkeys(r.group for r in card.requirements)) == GROUPS == list(written)
    for group in GROUPS:
        assert [r.text for r in card.requirements if r.group == group] == written[group], group


def test_years_are_numbers_of_development_and_of_leadership(card: RoleCard) -> None:
    dev, lead = card.minimum_years("development"), card.minimum_years("leadership")
    assert dev is not None and lead is not None
    assert (dev.years, dev.group) == (8, "Technical Expertise")
    assert dev.text == "8+ years of software development experience."
    assert (lead.years, lead.group) == (5, "Leadership and Management")
    assert lead.text == "5+ years in technical leadership roles."
    assert isinstance(dev.years, int) and isinstance(lead.years, int)
    assert [r.years for r in card.requirements if r.years is not None] == [8, 5]


def test_education_names_the_degree_and_fields_and_the_preferred_degree_is_nice_to_have(card: RoleCard) -> None:
    must, nice = [r for r in card.requirements if r.group == "Educational Background"]
    assert (must.degree, must.must) == ("bachelor", True)
    assert must.fields == ("Computer Science", "Machine Learning", "Mathematics")
    assert (nice.degree, nice.must) == ("master", False)


def test_must_and_nice_to_have_follow_the_groups(card: RoleCard) -> None:
    nice = [r.text for r in card.requirements if not r.must]
    assert nice == ["Master's or PhD often preferred, especially in AI-related disciplines.",
                    *markdown_bullets(KNOWLEDGE / "03-requirements.md")["Additional Desirable Skills"]]


def test_skill_vocabularies_come_from_the_bullets(card: RoleCard) -> None:
    by_text = {r.text: r for r in card.requirements}
    languages = by_text["Proficiency in multiple programming languages (e.g., Python, C++, Java)."]
    assert (languages.terms, languages.need) == (("Python", "C++", "Java"), 2)  # "multiple": two of them
    frameworks = by_text["Extensive experience with machine learning frameworks "
                         "(e.g., TensorFlow, PyTorch, scikit-learn)."]
    assert (frameworks.terms, frameworks.need) == (("TensorFlow", "PyTorch", "scikit-learn"), 1)
    clouds = by_text["Familiarity with cloud platforms (e.g., AWS, Azure, Google Cloud)."]
    assert clouds.terms == ("AWS", "Azure", "Google Cloud")
    mlops = by_text["Experience with MLOps tools (e.g., MLFlow, AWS SageMaker)."]
    assert (mlops.terms, mlops.must) == (("MLFlow", "AWS SageMaker"), False)
    assert {"Python", "C++", "Java", "TensorFlow", "PyTorch", "scikit-learn", "AWS", "Azure", "Google Cloud", "MLFlow",
            "AWS SageMaker", "agile methodologies", "CI/CD", "distributed computing", "big data", "model governance",
            "AI ethics"} <= set(card.vocabulary)


def test_the_ladder_in_order_with_pay_and_the_company_tier_beside_it(card: RoleCard) -> None:
    assert [(r.title, r.low, r.high) for r in card.ladder] == LADDER
    assert [r.title for r in card.ladder if r.tier] == ["Top Tier/FAANG Companies"]
    assert [r.title for r in card.ladder if r.above_role] == ["Director of AI Engineering", "VP of AI/ML",
                                                             "Chief AI Officer"]
    assert [r.title for r in card.steps()] == [t for t, _, _ in LADDER if not t.startswith("Top Tier")]
    assert card.rung("senior level") is card.ladder[2]
    assert card.rung("Chief AI Officer").pay == "$500,000 - $1,000,000+"  # type: ignore[union-attr]
    assert card.rung("Mid-Level").pay == "$180,000 - $220,000"  # type: ignore[union-attr]


def test_every_item_carries_the_passage_it_comes_from(card: RoleCard) -> None:
    passages = {p.id: p for p in passages_of(KNOWLEDGE)}
    for req in card.requirements:
        assert req.text in passages[req.cite.passage_id].text
        assert req.cite.label == f"Requirements > {req.group}" and req.cite.source == "03-requirements.md"
    for rung in card.ladder:
        assert f"- {rung.title}: $" in passages[rung.cite.passage_id].text
        assert rung.cite.label == f"{SALARY} > " + ("Career Progression" if rung.above_role else "Base Salary")
    assert card.actions
    for action in card.actions:
        assert action.text in passages[action.cite.passage_id].text
        assert action.cite.label.startswith(("Career Development >", "Best Practices"))
    for req in card.requirements:  # each requirement is linked to actions of the card
        assert req.actions and all(0 <= i < len(card.actions) for i in req.actions)


def test_every_value_of_the_card_is_in_the_knowledge_text(card: RoleCard) -> None:
    files = {p.name: p.read_text(encoding="utf-8") for p in KNOWLEDGE.glob("*.md")}
    assert f"role: {card.role}" in files["01-overview.md"]
    for req in card.requirements:
        source = files[req.cite.source]
        assert f"- {req.text}" in source, req.text
        for term in req.terms:
            assert term in req.text, (term, req.text)
        if req.years is not None:
            assert f"{req.years}+ years" in req.text
        if req.degree:
            assert {"bachelor": "Bachelor", "master": "Master", "phd": "PhD"}[req.degree] in req.text
        for name in req.fields:
            assert name in req.text
        assert req.group in {line[3:] for line in source.splitlines() if line.startswith("## ")}
    for rung in card.ladder:
        line = f"- {rung.title}: ${rung.low:,} - ${rung.high:,}{'+' if rung.open_ended else ''}\n"
        assert line in files[rung.cite.source], line
    for action in card.actions:
        assert f"- {action.text}" in files[action.cite.source], action.text
    for conflict in card.conflicts:
        for statement in conflict.statements:
            assert statement.text in files[statement.cite.source]


def test_editing_the_markdown_changes_the_card(knowledge_copy: Path, card: RoleCard) -> None:
    requirements = knowledge_copy / "03-requirements.md"
    salaries = knowledge_copy / "06-salary-ranges-us-market-2024.md"
    requirements.write_text(requirements.read_text(encoding="utf-8")
                            .replace("8+ years of software", "10+ years of software")
                            .replace("(e.g., Python, C++, Java)", "(e.g., Python, Rust, Go)"), encoding="utf-8")
    salaries.write_text(salaries.read_text(encoding="utf-8").replace("Senior Level: $220,000 - $280,000",
                                                                     "Senior Level: $230,000 - $295,000"),
                        encoding="utf-8")
    edited = card_of(knowledge_copy)
    assert edited.minimum_years("development").years == 10  # type: ignore[union-attr]
    assert card.minimum_years("development").years == 8  # type: ignore[union-attr]
    senior = edited.rung("Senior Level")
    assert senior is not None and (senior.low, senior.high) == (230_000, 295_000)
    assert "Rust" in edited.vocabulary and "C++" not in edited.vocabulary
    nine = Profile(years_development=9, years_leadership=6, degree="master")
    assert assess(nine, card).verdict == "ready"
    edited_row = assess(nine, edited).row("years", "development")
    assert edited_row is not None and (edited_row.status, edited_row.gap) == ("partly", "1 more year")


def test_the_planner_rebuilds_its_card_when_the_index_revision_changes(knowledge_copy: Path) -> None:
    planner = Planner()
    before = Library(("fake", "v1", 1), tuple(passages_of(knowledge_copy)))
    first = planner.card(before)
    assert planner.card(before) is first  # cached for the same revision
    path = knowledge_copy / "03-requirements.md"
    path.write_text(path.read_text(encoding="utf-8").replace("5+ years in technical", "6+ years in technical"),
                    encoding="utf-8")
    after = planner.card(Library(("fake", "v2", 1), tuple(passages_of(knowledge_copy))))
    assert after.minimum_years("leadership").years == 6  # type: ignore[union-attr]


def test_the_conflict_keeps_both_statements_with_their_sources(card: RoleCard) -> None:
    (conflict,) = card.conflicts
    assert conflict.about == "years of development"
    said = {s.cite.label: s.text for s in conflict.statements}
    assert said["Requirements > Technical Expertise"] == "8+ years of software development experience."
    assert "5-10 years in software development" in said["Overview > Qualifications"]
    assert {s.cite.source for s in conflict.statements} == {"03-requirements.md", "01-overview.md"}


def test_the_conflict_is_noted_for_six_years_and_not_for_ten_or_for_four(card: RoleCard) -> None:
    six = assess(Profile(years_development=6, years_leadership=5, degree="bachelor"), card)
    (note,) = six.notes
    assert "Overview > Qualifications" in note and "8+" in note and "5-10 years" in note
    assert six.verdict == "not_yet"  # the other passage does not relax the requirement
    assert "Note: The knowledge base disagrees" in render(six, "Am I ready?").text
    assert assess(Profile(years_development=10, years_leadership=5, degree="bachelor"), card).notes == ()
    assert assess(Profile(years_development=4), card).notes == ()  # short by both passages: nothing to reconcile


# -- the assessment: rules at each boundary ---------------------------------------------------------------
@pytest.mark.parametrize(("have", "status", "gap"), [
    (8, "met", ""), (12, "met", ""), (7, "partly", "1 more year"), (7.5, "partly", "0.5 more years"),
    (3, "partly", "5 more years"), (0, "missing", "8 more years"), (None, "unknown", ""),
])
def test_development_years_row(card: RoleCard, have: float | None, status: str, gap: str) -> None:
    row = assess(Profile(years_development=have), card).row("years", "development")
    assert row is not None and (row.status, row.gap, row.required) == (status, gap, "8+ years")
    assert row.have == ("not stated" if have is None else "none" if have == 0 else f"{have:g} year" + "s" * (have != 1))


@pytest.mark.parametrize(("have", "status", "gap"), [
    (5, "met", ""), (4, "partly", "1 more year"), (1, "partly", "4 more years"), (0, "missing", "5 more years"),
    (None, "unknown", ""),
])
def test_leadership_years_row(card: RoleCard, have: float | None, status: str, gap: str) -> None:
    row = assess(Profile(years_leadership=have), card).row("years", "leadership")
    assert row is not None and (row.status, row.gap) == (status, gap)


@pytest.mark.parametrize(("change", "expected"), [
    ({}, "ready"),
    ({"degree": "master"}, "ready"),
    ({"degree": "phd"}, "ready"),
    ({"years_development": 7}, "close"),
    ({"years_development": 7.5}, "close"),
    ({"years_leadership": 4}, "close"),
    ({"years_development": 7, "years_leadership": 4}, "not_yet"),  # two gaps are not close, even small ones
    ({"years_development": 6}, "not_yet"),
    ({"years_leadership": 3}, "not_yet"),
    ({"years_development": 7, "years_leadership": 3}, "not_yet"),
    ({"years_development": 0}, "not_yet"),
    ({"years_leadership": 0}, "not_yet"),
    ({"degree": "none"}, "not_yet"),
    ({"degree": "none", "years_development": 7}, "not_yet"),
    ({"degree": None}, "unknown"),
    ({"years_development": None}, "unknown"),
    ({"years_leadership": None, "degree": None}, "unknown"),
    ({"years_development": 7, "degree": None}, "close"),  # a known gap of a year; the rest still to be told
    ({"years_development": 6, "degree": None}, "not_yet"),
], ids=lambda v: json.dumps(v) if isinstance(v, dict) else v)
def test_verdict_rules(card: RoleCard, change: dict[str, Any], expected: str) -> None:
    assert verdict(card, **{**MET, **change}) == expected


def test_a_missing_must_have_skill_makes_it_close_not_ready(card: RoleCard) -> None:
    a = assess(Profile(**MET, skills=["Python", "TensorFlow"]), card)
    assert a.verdict == "close"
    assert any("C++" in r.gap for r in a.rows if r.status == "partly")  # "multiple" languages: one more of them
    assert verdict(card, **MET, skills=all_must_skills(card)) == "ready"


def test_nice_to_haves_never_change_the_verdict(card: RoleCard) -> None:
    must = all_must_skills(card)
    for base in (MET, {**MET, "years_development": 7}, {**MET, "years_leadership": 2}, {**MET, "degree": None}):
        without = verdict(card, **base, skills=must)
        assert verdict(card, **base, skills=[*must, *nice_skills(card)]) == without
    a = assess(Profile(**MET, skills=must), card)
    assert a.verdict == "ready"
    # the master's is lacking; desirable skills not named are unknown (not naming a skill is not lacking it)
    assert {r.status for r in a.rows if not r.must and r.requirement.degree} == {"missing"}
    assert {r.status for r in a.rows if not r.must and not r.requirement.degree} == {"unknown"}


def test_verdict_over_a_grid_of_profiles(card: RoleCard) -> None:
    """Never ready with a years requirement unmet; only ready or close with every hard requirement met."""
    seen = set()
    for dev, lead, degree, skills in itertools.product(range(13), range(9), ["none", "bachelor", "master", None],
                                                       [[], ["Python", "AWS"]]):
        v = verdict(card, years_development=dev, years_leadership=lead, degree=degree, skills=skills)
        seen.add(v)
        where = f"{dev=} {lead=} {degree=} {skills=}: {v}"
        if dev < 8 or lead < 5:
            assert v != "ready", where
            if max(8 - dev, 5 - lead) > 1 or degree == "none":
                assert v == "not_yet", where
        elif degree in ("bachelor", "master"):
            assert v in ("ready", "close"), where
            assert v == ("close" if skills else "ready"), where
        else:
            assert v == ("not_yet" if degree == "none" else "unknown"), where
    assert seen == {"ready", "close", "not_yet", "unknown"}


@pytest.mark.parametrize(("level", "next_title", "next_pay"), [
    (None, "Entry Level", "$150,000 - $180,000"),
    ("Entry Level", "Mid-Level", "$180,000 - $220,000"),
    ("Mid-Level", "Senior Level", "$220,000 - $280,000"),
    ("Senior Level", "Director of AI Engineering", "$300,000 - $400,000+"),  # the company tier is not a step
    ("Director of AI Engineering", "VP of AI/ML", "$400,000 - $600,000+"),
    ("VP of AI/ML", "Chief AI Officer", "$500,000 - $1,000,000+"),
    ("Chief AI Officer", None, None),
])
def test_ladder_position(card: RoleCard, level: str | None, next_title: str | None, next_pay: str | None) -> None:
    title = "Senior Software Engineer" if level is None else level  # a title not on the ladder: not in the role yet
    a = assess(Profile(current_level=level, current_title=title), card)
    assert (a.current.title if a.current else None) == level
    assert (a.next.title if a.next else None, a.next.pay if a.next else None) == (next_title, next_pay)


def test_no_title_said_is_no_next_rung_and_the_report_asks_for_it(card: RoleCard) -> None:
    """Someone who said no title may already be high on the ladder: its first band is not their next rung."""
    a = assess(Profile(people_managed=3), card)
    assert (a.current, a.next) == (None, None)
    text = render(a, "I lead 3 engineers. How many years of leadership do I need?").text
    assert "Next rung" not in text and "Tell me your current title" in text and "$150,000 - $180,000" in text


def test_priorities_are_the_gaps_tied_to_actions_with_sources(card: RoleCard) -> None:
    a = assess(Profile(years_development=6, years_leadership=2, degree="bachelor"), card)
    assert 1 <= len(a.priorities) <= 3
    development, leadership = a.priorities[:2]
    assert "2 more years of software development" in development.text
    assert "3 more years of technical leadership" in leadership.text
    assert leadership.sources[0].label == "Requirements > Leadership and Management"
    assert leadership.sources[-1].label.startswith("Career Development >")
    actions = {s.text: s.cite for s in card.actions}
    for p in a.priorities:
        assert actions[p.action] == p.sources[-1]  # the action is a bullet of the passage it cites


def test_never_more_than_three_priorities(card: RoleCard) -> None:
    for profile in (Profile(years_development=1, years_leadership=0, degree="none", skills=["Java"]), Profile(),
                    Profile(**MET, skills=all_must_skills(card))):
        priorities = assess(profile, card).priorities
        assert 1 <= len(priorities) <= 3
        assert all(p.sources and p.action for p in priorities)


# -- the report ------------------------------------------------------------------------------------------
PROFILES = {
    "ready": Profile(years_development=11, years_leadership=6, degree="master"),
    "close": Profile(years_development=7, years_leadership=5, degree="bachelor"),
    "not_yet": Profile(years_development=3, years_leadership=0, degree="bachelor"),
    "unknown": Profile(years_development=9),
}
QUESTIONS = ["Am I ready for this role?", "What should I focus on?", "What is my next salary band?",
             "Is my degree enough?", "Which skills am I missing?", "How far am I from this role?"]


@pytest.mark.parametrize("expected", list(PROFILES))
def test_the_verdict_word_in_the_text_is_the_assessment(card: RoleCard, expected: str) -> None:
    a = assess(PROFILES[expected], card)
    assert a.verdict == expected
    for question in QUESTIONS:
        text = render(a, question).text
        said = re.findall(r"\*\*Verdict: (.+?)\.\*\*", text)
        assert said == [VERDICT_WORDS[expected] + (" yet" if expected == "unknown" else "")], text
        if expected != "ready":
            assert not NOT_YET_WORDS.search(text), text
        else:
            assert "not yet" not in text.lower()


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_citation_is_a_valid_index_into_the_cites(card: RoleCard, name: str) -> None:
    ids = {p.id for p in passages_of(KNOWLEDGE)}
    profile = PROFILES[name].model_copy(update={"skills": ["Python", "AWS"], "current_level": "Mid-Level"})
    for question in [*QUESTIONS, "After this role, what are the steps up the ladder and what does each pay?"]:
        report = render(assess(profile, card), question)
        numbers = cited(report.text)
        assert numbers and set(numbers) == set(range(1, len(report.cites) + 1)), (question, report.text)
        assert {c.passage_id for c in report.cites} <= ids
        assert len(set(report.cites)) == len(report.cites)


def test_a_ladder_question_lists_each_step_with_its_pay(card: RoleCard) -> None:
    question = "After this role, what are the steps up the ladder and what does each pay?"
    text = render(assess(Profile(), card), question).text
    assert "Verdict" not in text  # nothing personal to assess
    places = [text.index(f"{title} (${low:,} - ${high:,}+)") for title, low, high in LADDER[4:]]
    assert places == sorted(places)
    mid = assess(Profile(current_level="Mid-Level"), card)
    text = render(mid, "What are all the steps above me and what does each pay?").text
    places = [text.index(f"{r.title} ({r.pay})") for r in card.steps()[1:]]
    assert places == sorted(places) and "You are at Mid-Level ($180,000 - $220,000)" in text


def test_the_parts_follow_what_was_asked(card: RoleCard) -> None:
    a = assess(Profile(years_development=9, years_leadership=6, degree="bachelor", current_level="Mid-Level"), card)
    about_degree = render(a, "Is my degree good enough?").text
    about_years = render(a, "How many years of experience do I still need?").text
    about_band = render(a, "What is my next salary band?").text
    assert about_degree.index("Education:") < about_degree.index("Experience:")
    assert about_years.index("Experience:") < about_years.index("Education:")
    assert about_band.index("the next rung is Senior Level") < about_band.index("Experience:")
    for text in (about_degree, about_years, about_band):
        assert text.index("**Verdict: ready.**") < text.index("Experience:")  # a verdict leads


def test_not_enough_information_says_what_to_tell_and_closes_the_answer(card: RoleCard) -> None:
    text = render(assess(Profile(years_development=9), card), "Am I ready?").text
    last = text.split("\n\n")[-1]
    assert last.startswith("**Verdict: not enough information")
    assert "highest degree" in last and "years of technical leadership" in last
    assert "years of software development" not in last  # already told


def test_the_answer_says_what_it_understood(card: RoleCard) -> None:
    one = render(assess(Profile(years_development=1, years_leadership=1, degree="none"), card), "Am I ready?").text
    assert one.startswith("*I understood: 1 year of software development; 1 year of technical leadership; no degree.*")
    never = render(assess(Profile(years_development=12, years_leadership=0), card), "Am I ready?").text
    assert never.startswith("*I understood: 12 years of software development; no leadership yet.*")
    assert not render(assess(Profile(), card), "Am I ready?").text.startswith("*I understood")


def test_problems_reading_the_profile_are_shown_as_notes(card: RoleCard) -> None:
    reading = read_profile("I have 200 years of software development experience. Am I ready?", card)
    text = render(assess(reading.profile, card), "Am I ready?", reading.problems).text
    assert "Note: 200 years of software development is more than a working life" in text
    assert "Verdict: not enough information" in text


def test_to_dict_has_the_shape_of_coach_plan_json(card: RoleCard) -> None:
    a = assess(Profile(years_development=6, years_leadership=2, current_level="Mid-Level"), card)
    data = json.loads(json.dumps(to_dict(a, ["a problem."])))
    assert data["verdict"] == "not_yet" and data["notes"][0] == "a problem."
    assert len(data["requirements"]) == len(card.requirements)
    row = next(r for r in data["requirements"] if r["requirement"].startswith("8+"))
    assert {k: row[k] for k in ("status", "have", "required")} == {"status": "partly", "have": "6 years",
                                                                    "required": "8+ years"}
    assert row["source"] == "Requirements > Technical Expertise (03-requirements.md)"
    assert data["ladder"]["current"]["title"] == "Mid-Level" and data["ladder"]["next"]["pay"] == "$220,000 - $280,000"
    assert data["priorities"] and all(p["text"] and p["source"] for p in data["priorities"])


def test_an_assessment_is_a_pure_function(card: RoleCard) -> None:
    profile = Profile(years_development=7, years_leadership=4, degree="bachelor", skills=["Python"])
    first: Assessment = assess(profile, card)
    assert assess(profile, card) == first and profile == Profile(years_development=7, years_leadership=4,
                                                                 degree="bachelor", skills=["Python"])
