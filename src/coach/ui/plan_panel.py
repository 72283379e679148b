"""The "My plan" panel beside the chat: profile form, résumé upload, gap table, ladder chart, checklist.

The panel shows the planner's assessment of the person (coach.planner); nothing here decides anything.
Profiles and ticked items are kept in the database (coach.planner.store), keyed by the person: their
user name when the page has a log-in, else the random id of the server's signed cookie (coach.ui.identity).
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from pydantic import ValidationError

from coach.coach import Coach
from coach.errors import CoachError
from coach.planner import Profile, Reading, RoleCard, assess, to_dict
from coach.planner.assess import VERDICT_WORDS, Assessment
from coach.planner.store import PlanStore
from coach.ui.identity import Identity

log = logging.getLogger("coach.ui")

NOT_SAID = "(not said)"
NOT_READY = "the page has not finished loading; try again in a moment."
DEGREE_CHOICES = [NOT_SAID, "none", "bachelor", "master", "phd"]
STATUS_MARK = {"met": "✓ met", "partly": "◐ partly", "missing": "✗ missing", "unknown": "? unknown"}
TABLE_HEADERS = ["Requirement", "You", "Required", "Status", "Source"]
BELOW = "below the range"  # the grey part of each bar, from zero to the range's low end
CHART_COLORS = {"your rung": "#f97316", "next rung": "#16a34a", "other rungs": "#93c5fd", BELOW: "#e5e7eb"}
# The form's names of the profile's fields, for the notice about a value that cannot be right.
LABELS = {"years_development": "Years of software development", "years_leadership": "Years of technical leadership",
          "people_managed": "People led", "degree": "Highest degree", "degree_field": "Field of study",
          "skills": "Skills", "current_title": "Current title", "current_level": "Rung on this ladder",
          "current_base_salary": "Base salary", "location": "Location"}


@dataclass
class PlanPanel:
    """The panel's components, in the order the handlers read and write them."""

    fields: list[Any]  # years dev, years lead, people, degree, field, skills, title, level, salary, location
    save: gr.Button
    resume: gr.UploadButton
    verdict: gr.Markdown
    table: gr.Dataframe
    chart: gr.BarPlot
    checklist: gr.CheckboxGroup
    notice: gr.Markdown

    @property
    def views(self) -> list[Any]:
        """What an assessment updates."""
        return [self.verdict, self.table, self.chart, self.checklist]


def build_panel(card: RoleCard, initial: list[Any]) -> PlanPanel:
    """The panel's components (call inside a layout block); `initial` is panel_views() of an empty profile."""
    levels = [NOT_SAID, *(r.title for r in card.steps())]
    verdict = gr.Markdown(initial[0], elem_id="plan-verdict")
    notice = gr.Markdown(elem_id="plan-notice")
    with gr.Tabs(elem_id="plan-tabs"):
        with gr.Tab("Profile", id="profile"):
            # No minimum/maximum on the numbers: Gradio would refuse an out-of-range value with a bare "Error"
            # before on_save runs; profile_from_form checks them and says what is wrong.
            with gr.Row():
                years_dev = gr.Number(label=LABELS["years_development"], precision=1, elem_id="plan-years-dev")
                years_lead = gr.Number(label=LABELS["years_leadership"], precision=1, elem_id="plan-years-lead")
                people = gr.Number(label="People led (most at once)", precision=0, elem_id="plan-people")
            with gr.Row():
                degree = gr.Dropdown(DEGREE_CHOICES, value=NOT_SAID, label="Highest degree", elem_id="plan-degree")
                field = gr.Textbox(label="Field of study", elem_id="plan-field")
            skills = gr.Dropdown(list(card.vocabulary), multiselect=True, allow_custom_value=True, label="Skills",
                                 elem_id="plan-skills")
            with gr.Row():
                title = gr.Textbox(label="Current title", elem_id="plan-title")
                level = gr.Dropdown(levels, value=NOT_SAID, label="Rung on this ladder", elem_id="plan-level")
            with gr.Row():
                salary = gr.Number(label="Base salary (US$, optional)", precision=0, elem_id="plan-salary")
                location = gr.Textbox(label="Location (optional)", elem_id="plan-location")
            with gr.Row():
                resume = gr.UploadButton("Read a résumé (PDF, DOCX, MD, TXT)", type="filepath", size="md",
                                         file_types=[".pdf", ".docx", ".md", ".markdown", ".txt"],
                                         elem_id="plan-resume")
                save = gr.Button("Save and assess", variant="primary", elem_id="plan-save")
        with gr.Tab("Gaps", id="gaps"):
            table = gr.Dataframe(initial[1], headers=TABLE_HEADERS, interactive=False, wrap=True, max_height=520,
                                 label="Requirements and you", elem_id="plan-table",
                                 # wide enough for each column's longest word in the table's monospace font
                                 column_widths=["25%", "14%", "20%", "19%", "22%"])
        with gr.Tab("Ladder", id="ladder"):
            # The title is drawn inside the chart: a label above it would push the legend out of its fixed height.
            chart = gr.BarPlot(initial[2], x="rung", y="pay", color="part", color_map=CHART_COLORS, x_title="Rung",
                               color_title="", y_title="Base salary, US$ (2024)",
                               title="Career ladder: pay range of each rung", show_label=False,
                               sort=[r.title for r in card.ladder], height=360, elem_id="plan-ladder",
                               x_label_angle=-30, tooltip=["rung", "range"])
        with gr.Tab("Plan", id="plan"):
            checklist = gr.CheckboxGroup(choices=initial[3].choices, label="My plan: tick what you have done",
                                         elem_id="plan-checklist")
    return PlanPanel([years_dev, years_lead, people, degree, field, skills, title, level, salary, location],
                     save, resume, verdict, table, chart, checklist, notice)


# -- between the form and a Profile ------------------------------------------------------------------
def form_values(profile: Profile | None) -> list[Any]:
    """The form's values for a profile (empty where unknown)."""
    p = profile or Profile()
    return [p.years_development, p.years_leadership, p.people_managed, p.degree or NOT_SAID, p.degree_field or "",
            list(p.skills), p.current_title or "", p.current_level or NOT_SAID, p.current_base_salary,
            p.location or ""]


def profile_from_form(*values: Any) -> Profile:
    """The profile the form shows; raises CoachError with one sentence for a value that cannot be right."""
    years_dev, years_lead, people, degree, field, skills, title, level, salary, location = values

    def text(v: Any) -> str | None:
        if v is None or v == NOT_SAID:
            return None
        return str(v).strip() or None

    data = {"years_development": years_dev, "years_leadership": years_lead, "people_managed": people,
            "degree": text(degree), "degree_field": text(field), "skills": [str(s).strip() for s in skills or []
                                                                            if str(s).strip()],
            "current_title": text(title), "current_level": text(level), "current_base_salary": salary,
            "location": text(location)}
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise CoachError(f"{_problem(exc.errors()[0])}. Nothing was changed.") from None


def _problem(err: Any) -> str:
    """What is wrong with one value of the form, in the form's words."""
    name = str(err["loc"][0]) if err.get("loc") else ""
    label = LABELS.get(name, name.replace("_", " ").capitalize())
    limits, value = err.get("ctx") or {}, err.get("input")

    def number(v: Any) -> str:
        return f"{v:,.0f}" if float(v).is_integer() else f"{v:g}"

    if err.get("type") == "less_than_equal" and isinstance(value, int | float):
        return f"{label} can be at most {number(limits['le'])}, not {number(value)}"
    if err.get("type") == "greater_than_equal" and isinstance(value, int | float):
        return f"{label} cannot be below {number(limits['ge'])}"
    return f"{label}: {str(err.get('msg', 'not a valid value')).lower()}"


# -- the assessment on screen -------------------------------------------------------------------------
def verdict_markdown(a: Assessment) -> str:
    """The verdict and the reasons in a few lines."""
    word = VERDICT_WORDS[a.verdict]
    lines = [f"### Verdict: {word}"]
    lines += [f"- {r}" for r in a.reasons[:4]]
    if a.next is not None:
        lines.append(f"\n**Next rung:** {a.next.title}, {a.next.pay}"
                     + (f" (you are at {a.current.title}, {a.current.pay})" if a.current else ""))
    elif a.current is not None:
        lines.append(f"\n**{a.current.title}** is the top of this ladder.")
    lines += [f"\n*{n}*" for n in a.notes]
    return "\n".join(lines)


def _required(row: Any) -> str:
    req = row.requirement
    if req.degree:
        return {"phd": "PhD"}.get(req.degree, f"{req.degree}'s") + " or higher"
    if req.kind != "skill" or not req.terms:
        return str(row.required)
    if req.need >= len(req.terms) and len(req.terms) > 1:
        return "all of: " + ", ".join(req.terms)
    return (f"{req.need} of: " if len(req.terms) > 1 else "") + ", ".join(req.terms)


def gap_table(a: Assessment) -> pd.DataFrame:
    """Requirement, you, required, status, source: must-haves first, then the nice-to-haves."""
    rows = sorted(a.rows, key=lambda r: not r.must)
    return pd.DataFrame([[r.requirement.text.rstrip(".") + ("" if r.must else " (nice to have)"),
                          r.have, _required(r), STATUS_MARK[r.status] + (f": {r.gap}" if r.gap else ""),
                          r.requirement.cite.label.split(" > ")[-1]] for r in rows], columns=TABLE_HEADERS)


def ladder_frame(a: Assessment) -> pd.DataFrame:
    """Each rung's pay range as a stacked bar: from zero to its low end (grey), then the range (coloured).

    Every range row comes before every grey row: the stack follows the order in which the parts first
    appear (the first on top), so the grey always ends up at the bottom of the bar.
    """
    ranges, below = [], []
    for rung in a.card.ladder:
        part = "your rung" if rung == a.current else "next rung" if rung == a.next else "other rungs"
        ranges.append({"rung": rung.title, "pay": rung.high - rung.low, "part": part, "range": rung.pay})
        below.append({"rung": rung.title, "pay": rung.low, "part": BELOW, "range": rung.pay})
    return pd.DataFrame(ranges + below)


def plan_items(a: Assessment) -> list[str]:
    """The checklist: each priority as one line, action included."""
    return [f"{p.text}: {p.action}" if p.text else p.action for p in a.priorities]


def panel_views(a: Assessment, done: set[str]) -> list[Any]:
    """The verdict, table, chart and checklist for an assessment (ticked items kept)."""
    items = plan_items(a)
    return [verdict_markdown(a), gap_table(a), ladder_frame(a),
            gr.CheckboxGroup(choices=items, value=[i for i in items if i in done])]


# -- the person and their saved plan ------------------------------------------------------------------
class PlanService:
    """What the panel's handlers do, over one coach and one store; a store failure becomes a notice."""

    def __init__(self, coach: Coach, store: PlanStore, identity: Identity | None = None) -> None:
        self.coach = coach
        self.store = store
        self.identity = identity or Identity.of(coach.settings)

    def person(self, request: gr.Request | None) -> str:
        """The key of the person on this page: the log-in's user name, or the server's signed cookie."""
        return self.identity.person(request)

    def saved_profile(self, person: str) -> Profile | None:
        """The person's saved profile, or None (also when the database cannot be read: the chat goes on)."""
        try:
            return self.saved(person)[0]
        except CoachError:
            log.exception("could not read the saved profile")
            return None

    def views(self, profile: Profile | None, done: set[str]) -> list[Any]:
        """The panel's views for a profile."""
        return panel_views(self.assess(profile or Profile()), done)

    def lost(self) -> str:
        """A notice when the database file was deleted or replaced while the coach ran (else empty)."""
        lost = self.store.database.lost
        return f"**Note:** {lost}" if lost else ""

    # -- handlers ------------------------------------------------------------------------------------
    def on_load(self, request: gr.Request) -> list[Any]:
        """A page opened: the saved profile in the form and its assessment."""
        try:
            profile, done = self.saved(self.person(request))
            note = self.lost()
        except CoachError as exc:
            profile, done, note = None, set(), str(exc)
        return [*form_values(profile), *self.views(profile, done), note]

    def on_save(self, years_dev: Any, years_lead: Any, people: Any, degree: Any, field: Any,
                skills: Any, title: Any, level: Any, salary: Any, location: Any, request: gr.Request) -> list[Any]:
        """The form saved: the profile kept and assessed (a bad value changes nothing and says why)."""
        person = self.person(request)
        if not person:  # a request without the page's cookie: nobody's row to write
            return [*(gr.skip() for _ in range(4)), f"**Not saved:** {NOT_READY}"]
        try:
            profile = profile_from_form(years_dev, years_lead, people, degree, field, skills, title, level, salary,
                                        location)
            self.store.save_profile(person, profile)
            done = self.store.done(person)
        except CoachError as exc:
            return [*(gr.skip() for _ in range(4)), f"**Not saved:** {exc}"]
        return [*self.views(profile, done), f"*Saved.* {self.lost()}".strip()]

    def on_resume(self, path: str | None) -> list[Any]:
        """A résumé uploaded: what was read, in the form, for the person to check before saving."""
        try:
            reading = self.read_resume(path)
        except CoachError as exc:
            return [*(gr.skip() for _ in range(10)), f"**The résumé could not be read:** {exc}"]
        profile = reading.profile
        known = ", ".join(k.replace("_", " ") for k in profile.known()) or "nothing I could use"
        notes = "".join(f" {p}" for p in reading.problems)
        return [*form_values(profile), f"*Read from the résumé: {known}.{notes} Check it, then Save and assess.*"]

    def on_tick(self, ticked: list[str] | None, request: gr.Request) -> str:
        """Plan items ticked or unticked: kept."""
        person = self.person(request)
        if not person:
            return f"**Not saved:** {NOT_READY}"
        try:
            self.store.set_done(person, set(ticked or []))
        except CoachError as exc:
            return f"**Not saved:** {exc}"
        return f"*Kept: {len(ticked or [])} of your plan's items done.*"

    def on_chat_answer(self, details: dict[str, Any] | None, request: gr.Request) -> list[Any]:
        """After a chat answer: a planning answer fills the form and the panel (and is kept)."""
        plan = (details or {}).get("plan")
        if not plan:
            return [gr.skip() for _ in range(15)]
        person = self.person(request)
        try:
            profile = self.from_chat(person, plan) or Profile.model_validate(plan["profile"])
            done = self.store.done(person)
            note = ""
        except CoachError as exc:
            profile, done, note = Profile.model_validate(plan["profile"]), set(), f"**Not saved:** {exc}"
        return [*form_values(profile), *self.views(profile, done), note]

    def card(self) -> RoleCard:
        """The role card of the index."""
        return self.coach.planner.card(self.coach.retriever.library())

    def assess(self, profile: Profile) -> Assessment:
        """The assessment of a profile."""
        return assess(profile, self.card())

    def saved(self, person: str) -> tuple[Profile | None, set[str]]:
        """A person's saved profile and ticked items (nothing for an unknown person)."""
        if not person:
            return None, set()
        return self.store.profile(person), self.store.done(person)

    def read_resume(self, path: str | None) -> Reading:
        """The profile a résumé states and what could not be taken (raises CoachError when it cannot be read)."""
        if not path:
            raise CoachError("No file was uploaded.")
        try:
            return self.coach.read_resume(path)
        finally:
            _forget_upload(Path(path))

    def from_chat(self, person: str, plan: dict[str, Any] | None) -> Profile | None:
        """Keep the profile a planning answer rested on (the chat's reading, merged into the saved one)."""
        if not person or not plan or "profile" not in plan:
            return None
        profile = Profile.model_validate(plan["profile"])
        saved = self.store.profile(person)
        merged = saved.merged(profile) if saved else profile
        self.store.save_profile(person, merged)
        return merged

    def as_dict(self, profile: Profile) -> dict[str, Any]:
        """The assessment as data (for the API's details)."""
        return to_dict(self.assess(profile))


def _forget_upload(path: Path) -> None:
    """An uploaded résumé is deleted once read: Gradio keeps uploads in its temporary folder otherwise. Only a
    file inside that folder is deleted (never one the page did not receive)."""
    uploads = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()
    try:
        if path.resolve().is_relative_to(uploads):
            path.unlink(missing_ok=True)
            if path.parent != uploads and not any(path.parent.iterdir()):
                path.parent.rmdir()  # Gradio's folder of this one upload
    except OSError:
        log.warning("an uploaded résumé could not be deleted from %s", uploads)


def wire_panel(demo: gr.Blocks, panel: PlanPanel, service: PlanService) -> None:
    """The panel's events (none of them waits behind an answer)."""
    private: dict[str, Any] = {"queue": False, "api_visibility": "private"}
    demo.load(service.on_load, None, [*panel.fields, *panel.views, panel.notice], **private)
    panel.save.click(service.on_save, panel.fields, [*panel.views, panel.notice], **private)
    panel.resume.upload(service.on_resume, [panel.resume], [*panel.fields, panel.notice], **private)
    panel.checklist.input(service.on_tick, [panel.checklist], [panel.notice], **private)
