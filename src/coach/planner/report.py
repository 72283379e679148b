"""An assessment in words (the chat answer, cited) and as data (`coach plan --json`, the UI panel).

The words are written here from the assessment alone: the verdict and every figure are the assessment's,
each requirement and action is cited by the passage it comes from, and the parts follow what the person
asked about first (experience, education, skills, the ladder, priorities, or the verdict).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from coach.planner.assess import VERDICT_WORDS, Assessment, Row
from coach.planner.card import Cite, Rung

_FOCUS = [
    ("ladder", re.compile(r"\bnext (?:step|band|level|rung|role|salary)|salary band|above (?:me|this)|ladder|"
                          r"promot|steps? up|after this role|what (?:does|would) (?:it|each|that) pay|earn|pay",
                          re.IGNORECASE)),
    ("priorities", re.compile(r"priorit|focus|what should i|what do i need|get there|close the gap|improve|plan\b|"
                              r"work on|next steps", re.IGNORECASE)),
    ("skills", re.compile(r"\bskills?\b|missing|\bknow\b|learn|technolog", re.IGNORECASE)),
    ("education", re.compile(r"degree|bachelor|master|ph\.?d|education|enough", re.IGNORECASE)),
    ("experience", re.compile(r"experience|years|\bmeet\b|qualif", re.IGNORECASE)),
]
_PARTS = ("verdict", "experience", "education", "skills", "ladder", "priorities")


@dataclass
class Report:
    """The answer text and the passages it cites, in citation order."""

    text: str
    cites: list[Cite] = field(default_factory=list)


class _Citer:
    def __init__(self) -> None:
        self.cites: list[Cite] = []

    def __call__(self, *cites: Cite) -> str:
        numbers = []
        for cite in cites:
            if cite not in self.cites:
                self.cites.append(cite)
            n = self.cites.index(cite) + 1
            if n not in numbers:
                numbers.append(n)
        return "".join(f"[{n}]" for n in numbers)


def focus_of(question: str) -> list[str]:
    """What the person asked about, first things first (the verdict leads unless they asked something else)."""
    asked = [name for name, pattern in _FOCUS if pattern.search(question)]
    if re.search(r"\bready\b|how far|\bgap\b|qualif|\bfit\b|chance", question, re.IGNORECASE) or not asked:
        asked.insert(0, "verdict")
    return list(dict.fromkeys([*asked, *_PARTS]))


def _label(row: Row) -> str:
    req = row.requirement
    if req.years is not None:
        if req.years_of is None and req.activity:  # an activity of its own: named as the role's text names it
            return req.activity[:1].upper() + req.activity[1:]
        return "Technical leadership" if req.years_of == "leadership" else "Software development"
    return "Education" if req.degree else req.group


def _years_line(row: Row, cite: _Citer) -> str:
    req = row.requirement
    line = f"- {_label(row)}: {req.years}+ years asked {cite(req.cite)}; you have {row.have}"
    return line + (f": {row.gap}." if row.gap else ("." if row.status != "met" else ": met."))


def _verdict(a: Assessment, cite: _Citer) -> list[str]:
    word = VERDICT_WORDS[a.verdict]
    hard = [r for r in a.rows if r.must and r.requirement.kind in ("years", "education") and r.status != "unknown"]
    refs = cite(*(r.requirement.cite for r in hard)) if hard else ""
    if a.verdict == "ready":
        return [f"**Verdict: {word}.** You meet every years and education requirement of the role {refs}"
                " (skills you did not mention are listed to confirm)."]
    if a.verdict == "unknown":
        need = [r for r in a.rows if r.must and r.requirement.kind in ("years", "education") and r.status == "unknown"]
        asks = [f"years of {_label(r).lower()}" if r.requirement.kind == "years" else "highest degree and its field"
                for r in need]
        told = " and ".join([", ".join(asks[:-1]), asks[-1]] if len(asks) > 1 else asks)
        return [f"**Verdict: {word} yet.** For a full verdict, tell me your {told}."]
    what = "close, but not there yet" if a.verdict == "close" else "not yet ready for this role"
    return [f"**Verdict: {word}.** Measured against the role's requirements you are {what} {refs}."]


def _experience(a: Assessment, cite: _Citer) -> list[str]:
    rows = [r for r in a.rows if r.requirement.kind == "years" and r.must]
    known = [r for r in rows if r.status != "unknown"]
    if not known:
        return []
    return ["Experience:", *(_years_line(r, cite) for r in rows)]


def _education(a: Assessment, cite: _Citer) -> list[str]:
    rows = [r for r in a.rows if r.requirement.kind == "education"]
    if not rows or all(r.status == "unknown" for r in rows):
        return []
    out = ["Education:"]
    for r in rows:
        if r.requirement.must:
            verdict = {"met": "met", "partly": "met on the level only", "missing": "not met"}[r.status] \
                if r.status != "unknown" else "not stated"
            verdict += f" ({r.gap})" if r.gap else ""
            out.append(f"- Asked: {r.requirement.text.rstrip('.')} {cite(r.requirement.cite)}; you have "
                       f"{r.have}: {verdict}.")
        else:
            out.append(f"- Preferred, not required: {r.requirement.text.rstrip('.')} {cite(r.requirement.cite)}.")
    return out


def _skills(a: Assessment, cite: _Citer) -> list[str]:
    leading = a.card.minimum_years("leadership")
    rows = [r for r in a.rows if r.requirement.kind == "skill" and r.requirement.terms
            and r.requirement.group != (leading.group if leading else None)]
    if not a.profile.skills:
        return []
    met = [r for r in rows if r.status == "met"]
    # a skill not named is listed as not among what was named (to confirm), not as lacking: the verdict ignores it
    gaps = [r for r in rows
            if r.status in ("partly", "missing") or (r.status == "unknown" and r.have == "not mentioned")]
    out = []
    if met:
        out.append("Skills you named that the role asks for: " + "; ".join(
            f"{r.have} {cite(r.requirement.cite)}" for r in met) + ".")
    if gaps:
        out.append("Still missing from what you named:")
        for r in gaps:
            extra = f" ({r.gap})" if r.gap else ""
            kind = "" if r.requirement.must else " (nice to have)"
            out.append(f"- {r.requirement.text.rstrip('.')}{kind}{extra} {cite(r.requirement.cite)}")
    return out


def _pay(rung: Rung) -> str:
    return f"{rung.title} ({rung.pay})"


def _salary(a: Assessment, cite: _Citer) -> list[str]:
    """Where the person's base salary sits: in their rung's band, or the band it falls in."""
    pay = a.profile.current_base_salary
    if not pay:
        return []
    bands = [r for r in a.card.ladder if not r.tier and not r.above_role]
    rung = a.current or next((r for r in bands if r.low <= pay <= r.high), None)
    if rung is None:
        return []
    where = "within" if rung.low <= pay <= rung.high else "below" if pay < rung.low else "above"
    return [f"Your base salary of ${pay:,} is {where} the {rung.title} range ({rung.pay}) {cite(rung.cite)}."]


def _ladder(a: Assessment, cite: _Citer, question: str) -> list[str]:
    return _salary(a, cite) + _rungs(a, cite, question)


def _rungs(a: Assessment, cite: _Citer, question: str) -> list[str]:
    steps = a.card.steps()
    if a.current is not None:
        at = steps.index(a.current) if a.current in steps else -1
        above = steps[at + 1:] if at >= 0 else []
        if not above:
            return [f"You are at the top of this ladder: {_pay(a.current)} {cite(a.current.cite)}."]
        here = f"You are at {_pay(a.current)} {cite(a.current.cite)}; "
        if len(above) > 1 and re.search(r"steps|ladder|each|all", question, re.IGNORECASE):
            rungs = ", then ".join(_pay(r) for r in above)
            return [here + f"above you: {rungs} {cite(*(r.cite for r in above))}."]
        return [here + f"the next rung is {_pay(above[0])} {cite(above[0].cite)}."]
    beyond = [r for r in steps if r.above_role]
    if re.search(r"after this role|steps? up|ladder|above this", question, re.IGNORECASE) and beyond:
        return ["After this role the ladder goes: " + ", then ".join(_pay(r) for r in beyond)
                + f" {cite(*(r.cite for r in beyond))}."]
    if a.next is not None:
        return [f"Next rung: {_pay(a.next)} base salary {cite(a.next.cite)}."]
    if steps:
        return [f"Tell me your current title to see the rung above yours; the ladder starts at {_pay(steps[0])} "
                f"base salary {cite(steps[0].cite)}."]
    return []


def _priorities(a: Assessment, cite: _Citer) -> list[str]:
    if not a.priorities:
        return []
    out = ["Top priorities:"]
    for n, p in enumerate(a.priorities, 1):
        first, *rest = p.sources
        action = f"{p.action.rstrip('.')} {cite(rest[0] if rest else first)}."
        out.append(f"{n}. {p.text} {cite(first)}. {action}" if rest else f"{n}. {action}")
    return out


def _years(value: float) -> str:
    return f"{value:g} year{'' if value == 1 else 's'}"


def understood(profile: Any) -> str:
    """What the assessment rests on, in a line the person can check (and correct in My plan)."""
    bits = []
    if profile.years_development is not None:
        bits.append(f"{_years(profile.years_development)} of software development")
    if profile.years_leadership is not None:
        bits.append(f"{_years(profile.years_leadership)} of technical leadership" if profile.years_leadership
                    else "no leadership yet")
    if profile.people_managed:
        bits.append(f"{profile.people_managed} people led")
    if profile.degree:
        degree = {"none": "no degree", "phd": "PhD"}.get(profile.degree, f"{profile.degree}'s")
        bits.append(degree + (f" in {profile.degree_field}" if profile.degree_field else ""))
    if profile.current_level or profile.current_title:
        bits.append(f"now {profile.current_level or profile.current_title}")
    if profile.current_base_salary:
        bits.append(f"base salary ${profile.current_base_salary:,}")
    if profile.location:
        bits.append(f"in {profile.location}")
    if profile.skills:
        bits.append("skills: " + ", ".join(profile.skills))
    return ("I understood: " + "; ".join(bits) + ".") if bits else ""


def summary(a: Assessment) -> str:
    """The answer in one line, for a chat model that sees the conversation later (its prompt stays short)."""
    nxt = f" Next rung: {a.next.title} ({a.next.pay})." if a.next else ""
    return f"(My assessment by the rules: {VERDICT_WORDS[a.verdict]}. {understood(a.profile)}{nxt})".replace(" .", ".")


def render(a: Assessment, question: str, problems: list[str] | None = None) -> Report:
    """The answer to a planning question, with its parts in the order of what was asked."""
    cite = _Citer()
    parts = {"verdict": lambda: _verdict(a, cite), "experience": lambda: _experience(a, cite),
             "education": lambda: _education(a, cite), "skills": lambda: _skills(a, cite),
             "ladder": lambda: _ladder(a, cite, question), "priorities": lambda: _priorities(a, cite)}
    order = focus_of(question)
    if not a.profile.known() and order[0] == "ladder":
        order = ["ladder"]  # a question about the ladder alone, nothing personal to assess
    # A verdict leads; "not enough information" closes the answer, after what can already be said.
    order = ["verdict", *(o for o in order if o != "verdict")] if a.verdict != "unknown" else \
        [*(o for o in order if o != "verdict"), "verdict"][: len(order)]
    blocks = [lines for name in order if (lines := parts[name]())]
    if line := understood(a.profile):
        blocks.insert(0, [f"*{line}*"])
    notes = [*(problems or []), *a.notes]
    text = "\n\n".join("\n".join(lines) for lines in blocks)
    if notes:
        text += "\n\n" + "\n".join(f"Note: {n}" for n in notes)
    return Report(text.strip(), cite.cites)


def to_dict(a: Assessment, problems: list[str] | None = None) -> dict[str, Any]:
    """The assessment as JSON-ready data (the `coach plan --json` object and the UI panel's source)."""
    def cite(c: Cite) -> str:
        return f"{c.label} ({c.source})"

    def rung(r: Rung | None) -> dict[str, Any]:
        if r is None:  # not on this ladder (or at its top): the same keys, empty
            return {"title": None, "pay": None, "low": None, "high": None, "open_ended": None, "source": None}
        return {"title": r.title, "pay": r.pay, "low": r.low, "high": r.high, "open_ended": r.open_ended,
                "source": cite(r.cite)}

    return {
        "role": a.card.role,
        "profile": a.profile.model_dump(),
        "verdict": a.verdict,
        "verdict_text": VERDICT_WORDS[a.verdict],
        "reasons": list(a.reasons),
        "requirements": [{"id": r.requirement.id, "group": r.requirement.group, "requirement": r.requirement.text,
                          "must": r.requirement.must, "optional": not r.requirement.must,
                          "kind": r.requirement.category, "status": r.status, "have": r.have,
                          "required": r.required, "gap": r.gap, "source": cite(r.requirement.cite),
                          **({"activity": r.requirement.activity, "min_years": r.requirement.years}
                             if r.requirement.years is not None else {})} for r in a.rows],
        "ladder": {"current": rung(a.current), "next": rung(a.next),
                   "rungs": [{**rung(r), "tier": r.tier, "above_role": r.above_role} for r in a.card.ladder]},
        "priorities": [{"text": f"{p.text}: {p.action}" if p.text else p.action, "gap": p.text, "action": p.action,
                        "source": cite(p.sources[-1]), "sources": [cite(c) for c in p.sources]}
                       for p in a.priorities],
        "notes": [*(problems or []), *a.notes],
    }
