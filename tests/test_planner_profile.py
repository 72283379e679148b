"""The planner's profile reader on varied wordings (unknown stays unknown), and a model's help with it."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from planner_support import card_of

from coach.errors import BackendUnavailableError
from coach.llm.extractive import ExtractiveBackend
from coach.llm.fake import FakeChat
from coach.planner import MODEL_FIELDS, Profile, with_model_help
from coach.planner.card import RoleCard
from coach.planner.profile import Reading, from_model_json, matches_term, profile_schema, read_profile, skills_in

NUMBERS = ("years_development", "years_leadership", "people_managed", "current_base_salary")


@pytest.fixture(scope="module")
def card() -> RoleCard:
    """The card of the repository's knowledge folder."""
    return card_of()


# text -> the fields it states (every field not listed must stay unknown)
WORDINGS: list[tuple[str, dict[str, Any]]] = [
    ("I have 6 years as a developer and 2 years leading a small team",
     {"years_development": 6, "years_leadership": 2}),
    ("I've been coding for ten years", {"years_development": 10}),
    ("12 yrs programming", {"years_development": 12}),
    ("Eight years of software engineering, three years as a team lead",
     {"years_development": 8, "years_leadership": 3}),
    ("I have 7.5 years of experience as a software engineer", {"years_development": 7.5}),
    ("I led a team of five for 2 years", {"years_leadership": 2, "people_managed": 5}),
    ("I've managed 12 engineers for 3 years", {"years_leadership": 3, "people_managed": 12}),
    ("I have never led a team", {"years_leadership": 0, "people_managed": 0}),
    ("6 years of experience as an engineering manager", {"years_leadership": 6}),
    ("I worked with 200 engineers on one product", {}),
    ("Can I become a manager without a degree?", {}),
    ("I have a B.Sc. in Physics", {"degree": "bachelor", "degree_field": "Physics"}),
    ("I hold a master of science in machine learning", {"degree": "master", "degree_field": "machine learning"}),
    ("I have no leadership experience", {"years_leadership": 0, "people_managed": 0}),
    # a leadership phrase says nothing of development years
    ("I have 4 years of leadership experience", {"years_leadership": 4}),
    ("I have 3 years of management experience", {"years_leadership": 3}),
    ("I have 5 years of experience managing engineers", {"years_leadership": 5}),
    ("I was a developer for 8 years and a manager for 5 years", {"years_development": 8, "years_leadership": 5}),
    # "never led" stays none, even with a development phrase after it in the same sentence
    ("I have never led a team, I've been coding for 10 years",
     {"years_development": 10, "years_leadership": 0, "people_managed": 0}),
    ("I have never led a team and have been coding for 10 years",
     {"years_development": 10, "years_leadership": 0, "people_managed": 0}),
    ("I'd like to lead a team, and I've been programming for 6 years", {"years_development": 6}),
    ("I have a bachelor's in mathematics. Is that enough, or should I get a master's?",
     {"degree": "bachelor", "degree_field": "mathematics"}),
    ("I'm thinking of getting a PhD", {}),
    ("I have an MSc in Computer Science", {"degree": "master", "degree_field": "Computer Science"}),
    ("I have a master's degree in statistics", {"degree": "master", "degree_field": "statistics"}),
    ("I have a PhD", {"degree": "phd"}),
    ("I have no degree, I'm self-taught", {"degree": "none"}),
    ("I know Python, PyTorch, AWS and MLflow", {"skills": ["Python", "PyTorch", "AWS", "MLFlow"]}),
    ("I work with sklearn and GCP", {"skills": ["scikit-learn", "Google Cloud"]}),
    ("I'm a VP of AI/ML", {"current_level": "VP of AI/ML", "current_title": "VP of AI/ML"}),
    ("I'm a mid-level manager in this role", {"current_level": "Mid-Level", "current_title": "mid-level manager"}),
    ("I work as a Director of AI Engineering",
     {"current_level": "Director of AI Engineering", "current_title": "Director of AI Engineering"}),
    ("I'm a senior engineer", {"current_title": "senior engineer"}),  # an engineer, not the Senior Level band
    ("I want to know the salary for a VP", {}),
    ("What does a Senior Software Engineering Manager in AI earn?", {}),
    ("I earn $190k", {"current_base_salary": 190_000}),
    ("My salary is $210,000", {"current_base_salary": 210_000}),
    ("I'm based in Seattle", {"location": "Seattle"}),
    ("I live in New York", {"location": "New York"}),
    ("", {}),
]


@pytest.mark.parametrize(("text", "expected"), WORDINGS, ids=[t[:45] or "empty" for t, _ in WORDINGS])
def test_profile_reader(card: RoleCard, text: str, expected: dict[str, Any]) -> None:
    reading = read_profile(text, card)
    assert {k: v for k, v in reading.profile.known().items() if k != "experience"} == expected
    assert reading.problems == []


@pytest.mark.parametrize(("text", "field", "words"), [
    ("I have 200 years of software development experience", "years_development", "200 years"),
    ("I've led teams for 99 years", "years_leadership", "99 years"),
    ("I have 10 years of development, 2 years of experience in total", "years_development", "10 years"),
    ("I have 30 years of team leadership and 12 years of experience overall", "years_leadership", "30 years"),
])
def test_absurd_numbers_and_contradictions_are_one_sentence_and_stay_unknown(card: RoleCard, text: str, field: str,
                                                                             words: str) -> None:
    reading = read_profile(text, card)
    assert getattr(reading.profile, field) is None
    (problem,) = reading.problems
    assert words in problem and "\n" not in problem and problem.endswith((".", "?"))
    assert len(re.findall(r"[.!?](?:\s|$)", problem)) <= 2  # one statement (a question may follow it)


def test_a_real_number_beside_an_absurd_one_is_kept(card: RoleCard) -> None:
    reading = read_profile("I have 200 years of software development and 3 years of technical leadership", card)
    assert reading.profile.years_development is None and reading.profile.years_leadership == 3
    assert len(reading.problems) == 1


def test_an_empty_text_gives_an_empty_profile(card: RoleCard) -> None:
    reading = read_profile("", card)
    assert reading.profile == Profile() and reading.profile.known() == {} and reading.problems == []
    assert Profile().degree is None and Profile().years_leadership is None  # unknown is None, never "none"/0


def test_the_evidence_is_the_words_read(card: RoleCard) -> None:
    reading = read_profile("Hi! I have 6 years as a developer and 2 years leading a small team.", card)
    assert reading.evidence["years_development"] == "6 years as a developer"
    assert reading.evidence["years_leadership"] == "2 years leading"


def test_skills_outside_the_vocabulary_are_kept_as_said(card: RoleCard) -> None:
    skills = skills_in("I know Rust, Kubernetes and PyTorch", card)
    assert skills == ["PyTorch", "Rust", "Kubernetes"]
    assert skills_in("We talked about the weather", card) == []


@pytest.mark.parametrize(("term", "text", "named"), [
    ("Google Cloud", "Which cloud platforms should I know?", False),
    ("AWS SageMaker", "I deployed models with SageMaker", True),
    ("MLFlow", "I use mlflow daily", True),
    ("AWS SageMaker", "deployed on SageMaker", True),
    ("C++", "modern C++ and Go", True),
    ("Java", "JavaScript only", False),
    ("AI ethics", "ai-ethics reviews", True),
    ("Python", "pythonic", False),
])
def test_matches_term(term: str, text: str, named: bool) -> None:
    assert matches_term(term, text) is named


def test_profiles_merge_newer_over_older_and_add_skills() -> None:
    older = Profile(years_development=5, degree="bachelor", skills=["Python"])
    newer = Profile(years_development=7, skills=["AWS", "Python"])
    merged = older.merged(newer)
    assert (merged.years_development, merged.degree, merged.skills) == (7, "bachelor", ["Python", "AWS"])


# -- a model's help ----------------------------------------------------------------------------------------
TEXT = "I have 6 years of development experience. Currently at Acme in Berlin, aiming for an AI manager role."


def helped(card: RoleCard, *replies: str | Exception, text: str = TEXT) -> tuple[Reading, Reading, FakeChat]:
    chat = FakeChat(list(replies))
    before = read_profile(text, card)
    return before, with_model_help(before, f"Fill in the JSON.\n\nText:\n{text}", chat), chat


def test_a_model_fills_only_the_fields_it_may(card: RoleCard) -> None:
    reply = json.dumps({"current_title": "Staff Engineer", "location": "Berlin", "target_role": "AI manager",
                        "degree_field": "Physics", "years_development": 15, "years_leadership": 9, "degree": "phd",
                        "skills": ["Rust"], "current_level": "VP of AI/ML", "current_base_salary": 900_000})
    before, after, _ = helped(card, reply)
    assert set(MODEL_FIELDS) == {"current_title", "location", "target_role", "degree_field"}
    assert after.profile.current_title == "Staff Engineer" and after.profile.location == "Berlin"
    assert after.profile.target_role == "AI manager" and after.profile.degree_field == "Physics"
    for name in ("years_development", "years_leadership", "degree", "skills", "current_level",
                 "current_base_salary", "people_managed"):
        assert getattr(after.profile, name) == getattr(before.profile, name), name
    assert after.profile.years_development == 6
    assert after.evidence["location"] == "read with the model's help"


def test_a_model_cannot_set_years_the_rules_did_not_read(card: RoleCard) -> None:
    _, after, _ = helped(card, json.dumps({"years_development": 12, "years_leadership": 6, "location": "Paris"}),
                         text="Currently at Acme.")
    assert after.profile.years_development is None and after.profile.years_leadership is None
    assert after.profile.location == "Paris"


@pytest.mark.parametrize("reply", ["Sure! The person lives in Berlin.", '{"location": "Berlin"', "[]",
                                   '{"location": "' + "x" * 500 + '"}', '{"years_development": 500}'])
def test_a_reply_that_is_not_valid_json_of_the_schema_is_ignored(card: RoleCard, reply: str) -> None:
    before, after, chat = helped(card, reply)
    assert after.profile == before.profile and after.evidence == before.evidence
    assert len(chat.requests) == 1


def test_a_model_that_is_down_leaves_the_reading_as_it_was(card: RoleCard) -> None:
    before, after, chat = helped(card, BackendUnavailableError("the server at http://127.0.0.1:9 is down"))
    assert after.profile == before.profile and after.problems == before.problems
    assert len(chat.requests) == 1


def test_the_request_carries_the_json_schema_of_a_profile(card: RoleCard) -> None:
    _, _, chat = helped(card, "{}")
    (request,) = chat.requests
    assert request.json_schema == profile_schema()
    assert set(MODEL_FIELDS) <= set(request.json_schema["properties"])
    assert TEXT in request.messages[-1]["content"] and request.temperature == 0.0


def test_no_model_call_when_nothing_is_left_to_fill_or_the_backend_cannot_write(card: RoleCard) -> None:
    full = Reading(Profile(current_title="Manager", location="Oslo", target_role="VP", degree_field="Math"))
    chat = FakeChat(['{"location": "Berlin"}'])
    assert with_model_help(full, "prompt", chat) is full and chat.requests == []
    reading = read_profile(TEXT, card)
    assert with_model_help(reading, "prompt", ExtractiveBackend()) is reading


def test_from_model_json() -> None:
    assert from_model_json('{"location": "Oslo", "unknown_field": 1}') == Profile(location="Oslo")
    assert from_model_json("not json") is None
    assert from_model_json('{"degree": "diploma"}') is None
