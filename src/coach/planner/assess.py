"""The assessment: profile x role card -> statuses, gaps, a verdict, the ladder position and priorities.

A pure function of its inputs, by rules written down here (and in the README), never a model's opinion:

Requirement status
- years ("8+ years of ..."): met when the person has at least that many; partly when fewer but more than
  none (the gap in years is stated); missing at none; unknown when not told.
- education: met when the person's degree is at least the one asked (a field not among those named is
  flagged, and counts when the text accepts a "related field", else makes it partly); missing for a lower
  degree or none; unknown when not told.
- leadership practice (the bullets listed beside the leadership years: "lead, mentor, grow teams",
  "people management"): met when the person has led people or led for some years; missing when they
  have never led; else unknown.
- skills: met when the person named enough of its terms (two for "multiple"; every one for an "and"
  list); partly when some; unknown when they named none of them (not naming a skill is not lacking it).

Verdict (only requirements that are must-haves count; nice-to-haves never change it)
- years items are compared with the person's years of the item's own activity: the development or
  leadership years for those kinds, else the experience entry whose activity matches (see
  `experience.match_years`); an activity the person never mentioned is unknown, never borrowed.
- not_yet: a years or education requirement is not met and the gap is more than a year, or it is a degree;
  or two or more must-haves among years, education and leading people (the practice items) are unmet.
- close: exactly one of those is unmet, and it is a years gap of at most one year or a practice item (it
  can be closed soon); or all of them are met but a must-have skill is missing or partly there.
- unknown ("not enough information"): nothing is unmet, but a years or education requirement is unknown.
- ready: every years and education requirement is met and no must-have skill is missing or partly there
  (skills the person did not mention are listed to confirm).
So nobody with a years requirement unmet is ever called ready.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from coach.planner.card import Cite, Requirement, RoleCard, Rung
from coach.planner.experience import match_years
from coach.planner.profile import Profile, degree_rank, matches_term

Status = Literal["met", "partly", "missing", "unknown"]
Verdict = Literal["ready", "close", "not_yet", "unknown"]
VERDICT_WORDS = {"ready": "ready", "close": "close", "not_yet": "not yet", "unknown": "not enough information"}


@dataclass(frozen=True)
class Row:
    """One requirement against the person: what they have, what is asked, the status, the source."""

    requirement: Requirement
    status: Status
    have: str
    required: str
    gap: str = ""  # e.g. "3 more years"

    @property
    def must(self) -> bool:
        """Whether the requirement is a must-have."""
        return self.requirement.must


@dataclass(frozen=True)
class Priority:
    """Something to work on first: the gap, and what the knowledge base says to do about it."""

    text: str
    action: str
    sources: tuple[Cite, ...]


@dataclass(frozen=True)
class Assessment:
    """Everything the planner concludes about one person for one role."""

    profile: Profile
    card: RoleCard
    rows: tuple[Row, ...]
    verdict: Verdict
    reasons: tuple[str, ...]
    current: Rung | None
    next: Rung | None
    priorities: tuple[Priority, ...]
    notes: tuple[str, ...] = field(default=())  # where the text disagrees with itself, and it matters here

    def row(self, kind: str, of: str | None = None) -> Row | None:
        """The first row of a kind (years/education/skill), of development or leadership for years."""
        return next((r for r in self.rows if r.requirement.kind == kind
                     and (of is None or r.requirement.years_of == of)), None)


def _years_text(value: float) -> str:
    return f"{value:g} year{'' if value == 1 else 's'}"


def _years_row(req: Requirement, have: float | None) -> Row:
    assert req.years is not None
    required = f"{req.years}+ years"
    if have is None:
        return Row(req, "unknown", "not stated", required)
    if have >= req.years:
        return Row(req, "met", _years_text(have), required)
    short = req.years - have
    gap = f"{short:g} more year{'' if short == 1 else 's'}"
    return Row(req, "partly" if have > 0 else "missing", _years_text(have) if have else "none", required, gap)


def _education_row(req: Requirement, profile: Profile) -> Row:
    assert req.degree is not None
    fields = ", ".join(req.fields)
    required = f"{req.degree}'s degree" if req.degree != "phd" else "PhD"
    if fields:
        required += f" in {fields} or a related field"
    if profile.degree is None:
        return Row(req, "unknown", "not stated", required)
    have: str = profile.degree if profile.degree != "none" else "no degree"
    if profile.degree_field:
        have += f" in {profile.degree_field}"
    if degree_rank(profile.degree) < degree_rank(req.degree):
        return Row(req, "missing", have, required)
    if profile.degree_field and req.fields and not any(matches_term(f, profile.degree_field) for f in req.fields):
        if "related" in req.text.lower():  # rules cannot judge "related": the level counts, the field is flagged
            return Row(req, "met", have, required, f"{profile.degree_field} is not named; a related field is accepted")
        return Row(req, "partly", have, required, f"{profile.degree_field} is not among the fields asked")
    return Row(req, "met", have, required)


def _skill_row(req: Requirement, profile: Profile, leadership_group: str | None) -> Row:
    required = req.text.rstrip(".")
    # listed beside the leadership years, or about leading or mentoring people: shown by having led people
    if req.group == leadership_group or req.category == "practice":
        led = [v for v in (profile.people_managed, profile.years_leadership) if v is not None]
        if any(v > 0 for v in led):
            people = (f"led {profile.people_managed} {'person' if profile.people_managed == 1 else 'people'}"
                      if profile.people_managed else "")
            years = f"{_years_text(profile.years_leadership)} leading" if profile.years_leadership else ""
            return Row(req, "met", ", ".join(x for x in (people, years) if x), required)
        if led:
            return Row(req, "missing", "no leadership yet", required)
        return Row(req, "unknown", "not stated", required)
    if not profile.skills:
        return Row(req, "unknown", "no skills named", required)
    named = " | ".join(profile.skills)
    hits = [t for t in req.terms if matches_term(t, named)]
    have = ", ".join(hits) if hits else "none of these named"
    if len(hits) >= min(req.need, len(req.terms)) and hits:
        return Row(req, "met", have, required)
    if hits:
        return Row(req, "partly", have, required, f"{req.need - len(hits)} more of: "
                   + ", ".join(t for t in req.terms if t not in hits))
    # Not naming a skill is not lacking it: unknown (to confirm), so silence never changes a verdict.
    return Row(req, "unknown", "not mentioned", required)


def years_for(req: Requirement, profile: Profile) -> float | None:
    """The person's years of the requirement's activity: the development or leadership years for those kinds (read
    from the entries, or given in the form), else the entry whose activity matches it; None when nobody said."""
    if req.years_of == "leadership":
        return profile.years_leadership
    if req.years_of == "development":
        return profile.years_development
    entry = match_years(req.activity or req.text, profile.experience)
    return entry.years if entry else None


def rows_for(profile: Profile, card: RoleCard) -> list[Row]:
    """Every requirement of the card against the profile."""
    out = []
    leading = card.minimum_years("leadership")
    for req in card.requirements:
        if req.years is not None:
            out.append(_years_row(req, years_for(req, profile)))
        elif req.degree:
            out.append(_education_row(req, profile))
        else:
            out.append(_skill_row(req, profile, leading.group if leading else None))
    return out


def verdict_of(rows: list[Row]) -> tuple[Verdict, list[str]]:
    """The verdict by the rules in this module's docstring, with the reasons in words."""
    hard = [r for r in rows if r.must and r.requirement.kind in ("years", "education")]
    practice = [r for r in rows
                if r.must and r.requirement.category == "practice" and r.status in ("partly", "missing")]
    unmet = [r for r in hard if r.status in ("partly", "missing")]
    reasons = [f"{r.requirement.text.rstrip('.')}: you have {r.have}" + (f" ({r.gap})" if r.gap else "")
               for r in [*unmet, *practice]]
    if unmet:
        small = all(r.requirement.kind == "years" and r.status == "partly" and _gap_years(r) <= 1 for r in unmet)
        # two gaps are not "close", even small ones; a gap in leading people counts beside a years gap
        return ("close" if small and len(unmet) + len(practice) == 1 else "not_yet"), reasons
    unknown = [r for r in hard if r.status == "unknown"]
    if unknown:
        return "unknown", [f"not stated: {r.requirement.text.rstrip('.')}" for r in unknown]
    if len(practice) > 1:
        return "not_yet", reasons
    weak = [r for r in rows if r.must and r.requirement.kind == "skill" and r.status in ("partly", "missing")]
    if weak:
        return "close", [f"{r.requirement.text.rstrip('.')}: {r.have}" for r in weak]
    return "ready", ["every years and education requirement is met"]


def _gap_years(row: Row) -> float:
    match = re.match(r"([\d.]+)", row.gap)
    return float(match.group(1)) if match else float("inf")


def ladder_position(profile: Profile, card: RoleCard, verdict: Verdict) -> tuple[Rung | None, Rung | None]:
    """The person's rung (when they said it) and the next one up; for someone not on the ladder (a title not on
    it, or a verdict on the role: short of it, or ready to enter it), its first band; else none: the rung of
    someone who said neither a title nor enough for a verdict is not known ("I lead 3 engineers" may be said
    by a director), and the first band could be a step down for them."""
    steps = card.steps()
    current = card.rung(profile.current_level) if profile.current_level else None
    if current is None:
        outside = bool(profile.current_title) or verdict != "unknown"
        return None, steps[0] if steps and outside else None
    at = steps.index(current) if current in steps else -1
    return current, steps[at + 1] if 0 <= at < len(steps) - 1 else None


def _priorities(rows: list[Row], card: RoleCard, verdict: Verdict, nxt: Rung | None, k: int = 3) -> list[Priority]:
    order = {"years": 0, "education": 1, "skill": 2}
    gaps = [r for r in rows if r.status in ("partly", "missing")]
    gaps.sort(key=lambda r: (not r.must, order[r.requirement.kind], r.status != "missing"))
    used: set[int] = set()
    out: list[Priority] = []
    for row in gaps:
        action = next((a for a in row.requirement.actions if a not in used), None)
        if action is None:
            continue
        used.add(action)
        step = card.actions[action]
        req = row.requirement
        if req.kind == "years":
            what = {"leadership": "technical leadership", "development": "software development"}.get(
                req.years_of or "", req.activity or "the work asked for")
            text = f"Gain {row.gap} of {what} ({req.years}+ years asked; you have {row.have})"
        elif req.kind == "education":
            text = f"Education: {row.required} ({'nice to have' if not req.must else 'asked'}; you have {row.have})"
        else:
            have = "not among the skills you named" if row.have == "none of these named" else f"you have {row.have}"
            text = f"{req.text.rstrip('.')} ({'nice to have' if not req.must else have})"
        out.append(Priority(text, step.text, (req.cite, step.cite)))
        if len(out) == k:
            return out
    # Nothing (more) to close: what the knowledge base says helps towards the next rung.
    for i, step in enumerate(card.actions):
        if len(out) == k:
            break
        if i not in used and "career" in step.cite.label.lower():
            used.add(i)
            out.append(Priority("", step.text, (step.cite,)))  # no gap: an action the knowledge base recommends
    return out


def _notes(rows: list[Row], card: RoleCard, profile: Profile) -> list[str]:
    out = []
    for conflict in card.conflicts:
        first, *others = conflict.statements
        req = next((r for r in card.requirements if r.text == first.text), None)
        have = years_for(req, profile) if req else None
        if req is None or req.years is None or have is None or have >= req.years:
            continue
        lows = [int(m.group(1)) for s in others if (m := re.search(r"(\d+)\s*[-–]\s*\d+\s*years?", s.text))]
        if any(have >= low for low in lows):
            out.append(f"The knowledge base disagrees with itself here: {first.cite.label} asks for "
                       f"{req.years}+ years, while {others[0].cite.label} says \"{others[0].text.rstrip('.')}\". "
                       f"By the first you are short; by the second you are within the range.")
    return out


def assess(profile: Profile, card: RoleCard) -> Assessment:
    """The whole assessment of a profile against a role card (pure: same inputs, same result)."""
    rows = rows_for(profile, card)
    verdict, reasons = verdict_of(rows)
    current, nxt = ladder_position(profile, card, verdict)
    return Assessment(profile, card, tuple(rows), verdict, tuple(reasons), current, nxt,
                      tuple(_priorities(rows, card, verdict, nxt)), tuple(_notes(rows, card, profile)))
