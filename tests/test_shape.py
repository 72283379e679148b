"""The answer's shape: a list asked for gets all its items, named items and the parts of a question their units.

Unit tests on a small made-up library (scores given, no embedding model); the coach-level tests run the
pipeline with a fake chat model over the fake-embedder index; the last ones use the real embedding model on the
repository's knowledge base (marked `integration`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from helpers import SALARY, ask, shown

from coach.coach import Coach
from coach.extractive import KeyPoint, units
from coach.llm.fake import FakeChat
from coach.retrieval import Library, Passage
from coach.shape import Shape, Structure, Unit, covers, decide, missing, parts, qualified, related, terms
from coach.text import cited_numbers

BENEFITS = Passage("ben", "- Health, dental, and vision insurance\n- 401(k) matching\n- Professional development "
                   "budgets\n- Flexible work arrangements\n- Extended parental leave", SALARY, "Additional Benefits",
                   "06.md", "r", 1.0, position=4)
LADDER = Passage("lad", "- Director of AI Engineering: $300,000 - $400,000+\n- VP of AI/ML: $400,000 - $600,000+\n"
                 "- Chief AI Officer: $500,000 - $1,000,000+", SALARY, "Career Progression", "06.md", "r", 1.0,
                 position=5)
CHALLENGES_1 = Passage("ch0", "Managers face several challenges when integrating AI:\n\n- Skill Gaps: a steep "
                       "curve\n- Ethical Considerations: biases in AI systems", "Common Challenges", "", "10.md", "r",
                       1.0, position=0)
CHALLENGES_2 = Passage("ch1", "- Quality Control: review AI-generated code\n- Rapid Technological Change: keeping pace"
                       "\n\nBy addressing these challenges, managers succeed.", "Common Challenges", "", "10.md", "r",
                       1.0, position=1)
LEARNING = Passage("cl", "- Attend conferences, workshops, and seminars.\n- Pursue advanced certifications.",
                   "Career Development", "Continuous Learning", "04.md", "r", 1.0, position=1)
SOFT = Passage("soft", "- Accountability: Take ownership of work outcomes.\n- Continuous Learning: Stay updated "
               "through online courses.", "Essential Soft Skills", "", "08.md", "r", 1.0, position=1)
BASE = Passage("base", "- Entry Level: $150,000 - $180,000\n- Mid-Level: $180,000 - $220,000", SALARY, "Base Salary",
               "06.md", "r", 1.0, position=1)
SIGN_ON = Passage("sign", "Sign-on Bonus: $20,000 - $100,000 (for sought-after candidates)", SALARY,
                  "Total Compensation", "06.md", "r", 1.0, position=2)
LIBRARY = Library(("c", "m", 1), (BASE, SIGN_ON, BENEFITS, LADDER, CHALLENGES_1, CHALLENGES_2, LEARNING, SOFT))


def scored(passages: list[Passage], best: str | tuple[str, ...], score: float = 0.8,
           rest: float = 0.5) -> list[KeyPoint]:
    """Every unit of the passages scored `rest`, the units starting with `best` scored `score`."""
    return [KeyPoint(u, n, score if u.startswith(best) else rest)
            for n, p in enumerate(passages, 1) for u in units(p.text) if not u.endswith(":")]


def shape_of(question: str, passages: list[Passage], best: str | tuple[str, ...], **kwargs: Any) -> Shape:
    return decide(question, scored(passages, best), passages, Structure(LIBRARY), **kwargs)


def texts(shape: Shape) -> list[str]:
    return [u.text for u in shape.must]


# -- words ------------------------------------------------------------------------------------
def test_words_of_one_family_are_related_and_others_are_not() -> None:
    assert related("mentoring", "mentorship") and related("strategic", "strategy") and related("learn", "learning")
    assert not related("technical", "technology") and not related("team", "teams2") and not related("art", "arts")
    assert terms("entry-level AI/ML") == ["entry", "level", "ai", "ml"]


def test_a_question_splits_into_its_parts_and_a_bare_tail_stays_with_its_part() -> None:
    assert parts("What is the next step up, and what does it pay?") == ["What is the next step up", "what does it pay"]
    assert parts("Who pays more: a Director or a Chief AI Officer, and by how much?") == [
        "Who pays more: a Director or a Chief AI Officer by how much"]
    assert parts("What is the salary? And the bonus?") == ["What is the salary", "And the bonus"]
    assert parts("Which skills and qualifications matter?") == ["Which skills and qualifications matter"]


# -- lists ------------------------------------------------------------------------------------
def test_a_list_runs_over_the_passages_of_its_heading_and_keeps_its_lead_in() -> None:
    (block,) = [b for b in Structure(LIBRARY).blocks if b.heading == "Common Challenges"]
    assert [u.text.split(":")[0] for u in block.items] == ["Skill Gaps", "Ethical Considerations", "Quality Control",
                                                            "Rapid Technological Change"]
    assert block.intro.startswith("Managers face several challenges")
    assert {u.passage.id for u in block.items} == {"ch0", "ch1"}


def test_a_question_naming_a_lists_heading_gets_every_item() -> None:
    shape = shape_of("Which benefits come on top of the salary?", [BENEFITS, LADDER], "Health")
    assert shape.kind == "list" and shape.lead_only
    assert texts(shape) == units(BENEFITS.text)


def test_a_list_cue_gets_the_whole_list_even_when_retrieval_found_part_of_it() -> None:
    shape = shape_of("What are the four common challenges?", [CHALLENGES_2], "Quality")
    assert shape.kind == "list" and len(shape.must) == 4, "the items of the passage not retrieved are included"


def test_a_named_item_is_answered_alone_not_its_whole_list() -> None:
    shape = shape_of("What does a Director of AI Engineering earn?", [LADDER, BENEFITS], "Director")
    assert shape.kind == "items" and texts(shape) == ["Director of AI Engineering: $300,000 - $400,000+"]
    both = shape_of("What pays more: a Director of AI Engineering or a Chief AI Officer?", [LADDER],
                    ("Director", "Chief"))
    assert both.kind == "items" and [t.split(":")[0] for t in texts(both)] == ["Director of AI Engineering",
                                                                                "Chief AI Officer"]


def test_a_heading_that_names_the_question_beats_an_equally_good_item_elsewhere() -> None:
    def headings(question: str, labels: list[str]) -> list[float]:
        return [0.9 if label.endswith("Continuous Learning") else 0.1 for label in labels]

    passages = [SOFT, LEARNING]
    points = [KeyPoint(u, n, 0.55) for n, p in enumerate(passages, 1) for u in units(p.text)]
    shape = decide("How can I keep learning in this job?", points, passages, Structure(LIBRARY), headings=headings)
    assert shape.kind == "list" and shape.block is not None and shape.block.label.endswith("Continuous Learning")


def test_a_plain_question_must_cover_its_best_unit() -> None:
    shape = shape_of("How much do health plans cost?", [BENEFITS], "Health")
    assert shape.kind in ("free", "list") and "Health, dental, and vision insurance" in texts(shape)
    assert decide("anything", [], [], Structure(LIBRARY)).must == ()


# -- what is missing ----------------------------------------------------------------------------
def test_an_answer_covers_a_unit_with_its_figures_and_most_of_its_words() -> None:
    director = Unit("Director of AI Engineering: $300,000 - $400,000+", LADDER)
    assert covers("A Director of AI Engineering earns $300K - $400K+ [1].", director)
    assert not covers("A Director of AI Engineering earns a lot [1].", director), "the figures are missing"
    assert not covers("The pay is $300,000 - $400,000+ [1].", director), "the title is missing"


def test_missing_lists_only_the_items_the_answer_left_out_in_their_order() -> None:
    shape = Shape("list", tuple(Unit(t, BENEFITS) for t in units(BENEFITS.text)))
    lacking = missing("Benefits include health, dental, and vision insurance and 401(k) matching [1].", shape)
    assert [u.text for u in lacking] == ["Professional development budgets", "Flexible work arrangements",
                                         "Extended parental leave"]


# -- through the coach ---------------------------------------------------------------------------
def test_a_list_answer_is_the_models_lead_and_every_item_cited(make_coach: Callable[..., Coach]) -> None:
    fake = FakeChat(["The benefits include health, dental, and vision insurance [1]. They also include more. "
                     "And even more benefits, written at length by the model."])
    events, answer = ask(make_coach(fake), "Which benefits come on top of the salary?")
    lead, *items = answer.text.split("\n\n")
    assert lead.startswith("The benefits include health, dental, and vision insurance")
    assert "even more" not in answer.text, "the model writes the lead only"
    lines = "\n\n".join(items).splitlines()
    assert [line.split(" [")[0] for line in lines] == ["- 401(k) matching", "- Professional development budgets",
                                                        "- Flexible work arrangements", "- Extended parental leave"]
    for line in lines:
        (n,) = cited_numbers(line)
        assert answer.sources[n - 1].subsection == "Additional Benefits"
    assert shown(events) == answer.text and answer.shape == "list"


@pytest.mark.integration
def test_a_two_part_question_gets_the_part_the_model_skipped(make_real_coach: Callable[..., Coach]) -> None:
    coach = make_real_coach(FakeChat(["A Director of AI Engineering is paid well [1]."]))
    _, answer = ask(coach, "What does a Director of AI Engineering earn, and what does a Chief AI Officer earn?")
    assert "Director of AI Engineering: $300,000 - $400,000+" in answer.text
    assert "Chief AI Officer: $500,000 - $1,000,000+" in answer.text


def test_a_refusal_or_a_decline_is_not_completed(make_coach: Callable[..., Coach]) -> None:
    coach = make_coach(FakeChat(["The knowledge base does not cover salaries in Germany."]))
    _, answer = ask(coach, "Which benefits come on top of the salary in Germany?")
    assert answer.out_of_scope and "401(k)" not in answer.text


# -- the real embedding model on the real knowledge base ----------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize(("question", "heading", "count"), [
    ("List the essential soft skills", "Essential Soft Skills", 11),
    ("What are the ten common challenges of integrating AI into engineering workflows?", "Common Challenges", 10),
    ("How can I keep learning and growing once I'm in this role?", "Continuous Learning", 3),
    ("Which benefits come on top of the salary?", "Additional Benefits", 5),
])
def test_real_lists_are_found_whole(make_real_coach: Callable[..., Coach],
                                    question: str, heading: str, count: int) -> None:
    coach = make_real_coach(FakeChat(["Here they are."]))
    _, answer = ask(coach, question)
    assert answer.shape == "list"
    items = [line for line in answer.text.splitlines() if line.startswith("- ")]
    assert len(items) == count, answer.text
    assert all(answer.sources[cited_numbers(line)[0] - 1].label.endswith(heading) for line in items)


# -- questions about what the knowledge base never mentions -------------------------------------
def test_a_place_or_company_the_knowledge_base_never_mentions_is_named() -> None:
    structure = Structure(LIBRARY)
    assert structure.unknown_names("What does a Director earn in Germany?") == ["Germany"]
    assert structure.unknown_names("What do managers at Acme or in Tokyo earn?") == ["Acme", "Tokyo"]
    assert structure.unknown_names("Which benefits come with the Salary?") == [], "a word the knowledge base has"
    assert structure.unknown_names("I'm Bob. What is the salary?") == [], "only what the question asks about"


def test_an_answer_about_an_unknown_place_says_so_and_drops_what_it_attributed_to_it() -> None:
    answer = ("Salaries in Germany vary by location [1]. The bands are listed below [1].\n"
              "- Entry Level: $150,000 - $180,000 [1]")
    text = qualified(answer, ["Germany"], BASE)
    assert text.startswith(f"The knowledge base does not cover Germany; what it says comes from {SALARY}.")
    assert "Salaries in Germany" not in text
    assert "The bands are listed below [1].\n- Entry Level: $150,000 - $180,000 [1]" in text


def test_the_coach_qualifies_an_answer_about_an_unknown_place(make_coach: Callable[..., Coach]) -> None:
    fake = FakeChat(["In Germany, an entry-level manager earns $150,000 - $180,000 [1]."])
    events, answer = ask(make_coach(fake), "What is the entry-level base salary in Germany?")
    assert answer.text.startswith("The knowledge base does not cover Germany; what it says comes from Salary Ranges")
    assert shown(events) == answer.text, "the page ends on the qualified answer"
    assert "In Germany" not in answer.text and "Entry Level: $150,000 - $180,000" in answer.text


def test_a_sentence_of_a_paragraph_is_appended_as_a_sentence_and_a_bullet_as_a_bullet() -> None:
    from coach.checks import completion

    shape = shape_of("What does addressing them bring?", [CHALLENGES_2], "By addressing")
    (unit,) = shape.must
    assert unit.text == "By addressing these challenges, managers succeed." and not unit.bullet
    assert completion("Managers plan ahead [1].", shape, lambda p: 1) == (
        "\n\nBy addressing these challenges, managers succeed. [1]")
    items = shape_of("What are the four common challenges?", [CHALLENGES_2], "Quality")
    assert completion("Here they are.", items, lambda p: 2).splitlines()[2] == "- Skill Gaps: a steep curve [2]"
