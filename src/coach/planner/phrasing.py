"""A model may phrase the planner's answer; it may not change it.

The plain report is the answer of record. A model's phrasing of it is shown only if it states the same
verdict, calls nobody ready who is not, and states no figure the report does not (the same rule as the
figure check of ordinary answers); otherwise the plain report replaces it.
"""

from __future__ import annotations

import re

from coach import grounding
from coach.planner.assess import Verdict

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
