"""A model may phrase the planner's answer; it may not change it.

The plain report is the answer of record. A model's phrasing of it is shown only if it states the same
verdict, calls nobody ready who is not, and states no figure the report does not (the same rule as the
figure check of ordinary answers); otherwise the plain report replaces it.
"""

from __future__ import annotations

import re

from coach import grounding
from coach.planner.assess import Verdict
from coach.planner.card import Requirement

_STATES = {
    "ready": re.compile(r"\bready\b", re.IGNORECASE),
    "close": re.compile(r"\bclose\b", re.IGNORECASE),
    "not_yet": re.compile(r"\bnot (?:yet|quite)\b|\bnot ready\b", re.IGNORECASE),
    "unknown": re.compile(r"not enough information|need (?:to know|more)|tell me|can(?:'t|not) (?:yet )?(?:say|tell)",
                          re.IGNORECASE),
}
_CALLED_READY = re.compile(r"\byou(?:'re| are)\s+(?:fully\s+|already\s+|now\s+)?(?:ready|qualified)\b"
                           r"|\byou meet (?:all|every|the) (?:requirements|years)", re.IGNORECASE)
_CALLED_NOT_READY = re.compile(r"\bnot (?:yet )?(?:ready|qualified)\b|\bfall short\b|\bdo(?:n't| not) meet\b",
                               re.IGNORECASE)


def contradiction(phrased: str, plain: str, verdict: Verdict) -> str | None:
    """Why the phrasing cannot stand in for the plain report (None when it can)."""
    if not phrased.strip():
        return "the phrasing was empty"
    invented = grounding.figures(phrased) - grounding.figures(plain)
    if invented:
        return f"the phrasing states figures the assessment does not ({', '.join(sorted(invented))})"
    if verdict != "ready" and _CALLED_READY.search(phrased):
        return "the phrasing calls the person ready"
    if verdict == "ready" and _CALLED_NOT_READY.search(phrased):
        return "the phrasing calls the person not ready"
    if not _STATES[verdict].search(phrased):
        return "the phrasing does not state the verdict"
    return None


# A model's "no, it is not required" about an item the role card lists as required is a wrong answer about a person.
_DENIAL = re.compile(r"\b(?:is|are|was)\s*(?:n't|\s+not)\s+(?:strictly\s+|really\s+|always\s+)?(?:required|needed|"
                     r"necessary|mandatory|a requirement|essential)\b|\b(?:do|does)(?:n't|\s+not)\s+(?:\w+\s+)?"
                     r"(?:need|require)\b|\bno\s+(?:\w+\s+)?(?:degree|years?)\s+(?:is|are)\s+(?:required|needed)\b|"
                     r"\bwithout\s+(?:a|any)\s+(?:\w+\s+)?degree\b[^.]*\b(?:can|could|possible|fine)\b|\boptional\b",
                     re.IGNORECASE)
_SUBJECT = {"bachelor": re.compile(r"\bdegree\b|\bbachelor|\bb\.?sc?\b|\bcollege\b|\buniversity\b", re.IGNORECASE),
            "years": re.compile(r"\byears?\b|\bexperience\b", re.IGNORECASE)}
_HIGHER = re.compile(r"\bmaster|\bph\.?d|\bdoctora|\bmba\b|\bgraduate degree\b|\badvanced degree", re.IGNORECASE)


def denied(text: str, requirements: tuple[Requirement, ...]) -> list[tuple[str, Requirement]]:
    """Sentences of an answer that call a required item of the card not required: (sentence, requirement)."""
    out = []
    for sentence in re.split(r"(?<=[.!?;])\s+|\n+|,\s+(?=but\b|while\b|whereas\b|though\b)", text):
        if not _DENIAL.search(sentence):
            continue
        for req in requirements:
            if not req.must:
                continue
            if req.degree == "bachelor" and _SUBJECT["bachelor"].search(sentence) and not (
                    _HIGHER.search(sentence) and not re.search(r"\bbachelor", sentence, re.IGNORECASE)):
                out.append((sentence, req))
                break
            if req.years is not None and _SUBJECT["years"].search(sentence) and re.search(
                    rf"\b{req.years}\b", sentence):
                out.append((sentence, req))
                break
    return out
