"""The career planner: a person's profile against the role card, by rules (card -> profile -> assess -> report).

`Planner` is the stage the coach routes personal planning questions to: it decides which questions are
its own, reads the profile from the conversation (and any saved profile), assesses it and writes the
cited answer.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from coach.errors import BackendUnavailableError, BusyError
from coach.llm.base import ChatBackend, Request
from coach.planner.assess import Assessment, assess
from coach.planner.card import RoleCard, build_card
from coach.planner.profile import Profile, Reading, from_model_json, profile_schema, read_profile
from coach.planner.report import Report, render, summary, to_dict
from coach.retrieval import Library

__all__ = ["Planner", "Plan", "Profile", "RoleCard", "assess", "build_card", "read_profile", "render", "to_dict"]

_PERSONAL = re.compile(r"\b(?:i|i'm|im|i've|ive|i'd|my|me|myself)\b", re.IGNORECASE)
_ASKS_ABOUT_SELF = re.compile(
    r"\bam i\b|\bdo i\b|\bshould i\b|\bcan i\b|\bwould i\b|\bwill i\b|\bhow far\b|\bready\b|qualif|"
    r"\bmy (?:next|top|priorit\w*|chances|gap|gaps|plan|path|career|profile|rung|level|band|salary|pay)\b|"
    r"\bwhat (?:do|would|should|can) i\b|\bfor me\b|\babove me\b|\bget there\b|\bfocus on\b|\bclose the gap\b|"
    r"\bwhere do i stand\b|\bwhat next\b", re.IGNORECASE)
_VERDICT_ASK = re.compile(r"\bam i (?:ready|qualified|a (?:good )?fit)\b|\bdo i (?:meet|qualify|have what)\b|"
                          r"\bhow far (?:am i|away)\b|\bwhere do i stand\b", re.IGNORECASE)
_LADDER = re.compile(r"\bsteps? up\b|\bladder\b|\bafter this role\b|\babove (?:me|this role)\b|\bnext rung\b",
                     re.IGNORECASE)
# A question about the role itself ("What skills do I need for this role?", "Which frameworks should I know?")
# goes to the knowledge base even after the person described themselves, unless it asks about them.
_ABOUT_THE_ROLE = re.compile(r"\b(?:the|this) (?:role|job|position)\b|^\s*(?:which|what)\s+(?:\w+\s+){0,3}?"
                             r"(?:skills?|frameworks?|languages?|tools?|technologies|certifications?|degrees?|"
                             r"qualifications?|requirements?|responsibilities|platforms?|methodologies|practices)\b",
                             re.IGNORECASE)
_ABOUT_ME = re.compile(r"\bmy\b|\bam i\b|\bready\b|priorit|\bgaps?\b|\bmissing\b|\bstill\b|\bnext step|"
                       r"\bfocus\b|\bhow far\b|\bqualif", re.IGNORECASE)
_SKILL_STATEMENT = re.compile(r"\bi (?:know|use|work with|have used|am proficient|'m proficient)\b|\bmy skills\b",
                              re.IGNORECASE)
Embed = Callable[[list[str]], list[list[float]]]
# What a model may add to a profile: words the rules do not read. Numbers, degrees and skills never come from it.
MODEL_FIELDS = ("current_title", "location", "target_role", "degree_field")


@dataclass
class Plan:
    """A planning answer: the report (text and cited passages), the assessment and how the profile was read."""

    report: Report
    assessment: Assessment
    reading: Reading

    @property
    def summary(self) -> str:
        """The answer in one line (what a chat model is shown of this turn later)."""
        return summary(self.assessment)

    def to_dict(self) -> dict[str, Any]:
        """The assessment as data, with what could not be read."""
        return to_dict(self.assessment, self.reading.problems)


class Planner:
    """Routes and answers personal career-planning questions."""

    def __init__(self, embed: Embed | None = None) -> None:
        self._embed = embed
        self._card: RoleCard | None = None
        self._revision: tuple[str, str, int] | None = None
        self._lock = threading.Lock()

    def _similarity(self, left: list[str], right: list[str]) -> list[list[float]]:
        assert self._embed is not None
        a, b = np.asarray(self._embed(left), dtype=np.float32), np.asarray(self._embed(right), dtype=np.float32)
        return (a @ b.T).tolist()

    def card(self, library: Library) -> RoleCard:
        """The role card of the index's passages (built once per index revision)."""
        with self._lock:
            if self._card is None or self._revision != library.revision:
                self._card = build_card(library.passages, self._similarity if self._embed else None)
                self._revision = library.revision
            return self._card

    def reading(self, question: str, history: list[dict[str, Any]] | None, card: RoleCard,
                saved: Profile | None = None) -> Reading:
        """The profile as of this question: the earlier user turns, then the saved profile, then the question."""
        profile = Profile()
        for message in history or []:
            if message.get("role") == "user" and isinstance(message.get("content"), str):
                profile = profile.merged(read_profile(message["content"], card).profile)
        if saved is not None:
            profile = profile.merged(saved)
        now = read_profile(question, card)
        return Reading(profile.merged(now.profile), now.problems, now.evidence)

    def wants(self, question: str, history: list[dict[str, Any]] | None, card: RoleCard,
              saved: Profile | None = None) -> bool:
        """Whether the question is the planner's: about the ladder, or about the person and their career."""
        if not card.requirements:
            return False
        if _LADDER.search(question):
            return True
        if not _PERSONAL.search(question):
            return False
        said = read_profile(question, card)
        stated = {k for k in said.profile.known() if k not in ("skills", "current_title")}
        if stated or said.problems or (said.profile.skills and _SKILL_STATEMENT.search(question)):
            return True
        if not _ASKS_ABOUT_SELF.search(question):
            return False
        if _VERDICT_ASK.search(question):
            return True
        if _ABOUT_THE_ROLE.search(question) and not _ABOUT_ME.search(question):
            return False
        earlier = self.reading("", history, card, saved).profile.known()
        return bool({k for k in earlier if k != "current_title"})

    def answer(self, question: str, history: list[dict[str, Any]] | None, library: Library,
               saved: Profile | None = None) -> Plan:
        """The assessment of the person as of this question, in words and as data."""
        card = self.card(library)
        reading = self.reading(question, history, card, saved)
        assessment = assess(reading.profile, card)
        return Plan(render(assessment, question, reading.problems), assessment, reading)


def with_model_help(reading: Reading, prompt: str, backend: ChatBackend) -> Reading:
    """The reading, with the fields the rules left empty and a model may fill (MODEL_FIELDS) asked of the model.

    `prompt` is prompts/profile_extract.txt rendered with the text. The model must reply with JSON of the
    Profile schema (constrained where the backend supports it); a reply that is not valid JSON of that
    schema is ignored, and nothing it says overrides the rules.
    """
    missing = [f for f in MODEL_FIELDS if getattr(reading.profile, f) in (None, "")]
    if not missing or not backend.generative:
        return reading
    request = Request([{"role": "user", "content": prompt}], 300, 0.0, json_schema=profile_schema())
    try:
        helped = from_model_json("".join(backend.stream(request)))
    except (BackendUnavailableError, BusyError):  # the rules' reading stands
        return reading
    if helped is None:
        return reading
    extra = {f: getattr(helped, f) for f in missing if getattr(helped, f)}
    profile = Profile.model_validate({**reading.profile.model_dump(), **extra})
    return Reading(profile, reading.problems, {**reading.evidence, **{f: "read with the model's help" for f in extra}})
