"""A person's profile: what they told the coach about themselves, read by rules; unknown stays unknown.

Numbers, degrees, skills and titles that the role card names are read deterministically from what the
person wrote (a chat message, a résumé, a file). A language model may fill fields the rules left empty,
but only as JSON of the Profile schema, validated here (see `with_model`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coach.planner.card import DEGREES, RoleCard
from coach.planner.experience import MAX_YEARS, Entry, concepts_of, match_years, number, read_entries

DegreeLevel = Literal["none", "bachelor", "master", "phd"]

_NUMBER_WORDS = {w: n for n, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_NUMBER_WORDS.update({"a": 1, "an": 1, "a couple of": 2, "a few": 3, "several": 3, "thirty": 30, "forty": 40})
_NUM = r"(\d+(?:\.\d+)?|" + "|".join(sorted(map(re.escape, _NUMBER_WORDS), key=len, reverse=True)) + r")"
_ABOUT = r"(?:about |around |roughly |nearly |almost |over |more than |some |close to )?"
_YEARS = rf"{_ABOUT}{_NUM}\+?\s*(?:years?|yrs?)"
_DEV = r"(?:software |professional |hands-on |industry )?(?:development|developer|engineering|engineer|programming|" \
       r"programmer|coding|coder|software|experience)"
_LEAD = r"(?:technical |team |people |engineering |tech )?" \
        r"(?:leadership|management|managing|leading|manager|lead|leader)"
_PATTERNS_DEV = [
    re.compile(rf"{_YEARS}\s+(?:of\s+|as\s+an?\s+|in\s+|doing\s+)?(?:\w+\s+){{0,2}}?{_DEV}\b", re.IGNORECASE),
    re.compile(rf"\b(?:developer|engineer|programmer|coding|programming|developing)\b[^.;]{{0,30}}?\bfor\s+{_YEARS}",
               re.IGNORECASE),
]
_PATTERNS_LEAD = [
    re.compile(rf"{_YEARS}\s+(?:of\s+|as\s+an?\s+|in\s+)?(?:a\s+)?{_LEAD}\b", re.IGNORECASE),
    # "6 years of experience as an engineering manager"
    re.compile(rf"{_YEARS}\s+(?:of\s+)?(?:\w+\s+)?experience\s+as\s+an?\s+(?:\w+\s+){{0,2}}?"
               rf"(?:manager|lead|leader|director|head|vp)\b", re.IGNORECASE),
    re.compile(rf"{_YEARS}\s+(?:of\s+(?:\w+\s+)?experience\s+)?(?:leading|managing|running)\b", re.IGNORECASE),
    # "led a team of five for 2 years", "a manager for 5 years"; not across a clause ("never led a team, I've been
    # coding for 10 years") nor an aspiration ("I hope to lead a team").
    re.compile(rf"(?<!to )\b(?:led|lead|leading|managed|manage|managing|manager|run|ran|running|supervis\w*)\b"
               rf"(?:(?!\b(?:i|i've|i'm|have|has|been|worked|working|coding|programming|writing|developing|developer|"
               rf"programmer|engineer)\b)[^.;,]){{0,40}}?\bfor\s+{_YEARS}", re.IGNORECASE),
]
_NEVER_LED = re.compile(r"\b(?:never|not yet|haven't|have not|hasn't|didn't|did not|don't|do not)\s+(?:\w+\s+){0,2}?"
                        r"(?:led|lead|managed|manage|supervised|mentor|mentored|coach|coached)\b|"
                        r"\bno (?:leadership|management|people[- ]management)(?: experience)?\b|"
                        r"\b(?:nobody|no one|none of \w+) reports? to me\b|\bno direct reports\b", re.IGNORECASE)
_PEOPLE = [  # people the person led, not people they worked beside ("worked with 200 engineers")
    re.compile(rf"\bteam of {_NUM}\b", re.IGNORECASE),
    re.compile(rf"\b{_NUM}\s+direct reports\b", re.IGNORECASE),
    re.compile(rf"\b(?:led|lead|leading|managed|manage|managing|manager of|supervis\w*|oversee\w*|oversaw|mentor\w*)"
               rf"\s+(?:a\s+(?:group|team)\s+of\s+)?{_NUM}\s+(?:\w+\s+)?(?:engineers|developers|people|scientists|"
               rf"reports|staff|pms?|product managers?|managers?|designers|analysts|members|juniors?|interns?)\b",
               re.IGNORECASE),
    re.compile(rf"\b(?:mentor\w*|coach\w*|manag\w*|lead\w*|supervis\w*)\s+{_NUM}\s+(?:\w+\s+){{0,2}}?"
               rf"(?:pms?|product managers?|engineers?|developers?|people|reports?|designers?|analysts?)\b",
               re.IGNORECASE),
]
_TOTAL = re.compile(rf"{_YEARS}\s+(?:of\s+)?(?:experience|work(?:ing)?)\s+(?:in total|overall|altogether|total)"
                    rf"|{_YEARS}\s+(?:in total|overall|altogether)", re.IGNORECASE)
_DEGREE = {
    "phd": re.compile(r"\bph\.?\s?d\b|\bdoctorate\b|\bdoctoral\b", re.IGNORECASE),
    "master": re.compile(r"\bmaster'?s?\b|\bm\.?sc?\b(?=\s|,|\.|$)|\bmba\b|\bm\.s\.", re.IGNORECASE),
    "bachelor": re.compile(r"\bbachelor'?s?\b|\bb\.?sc?\b(?=\s|,|\.|$)|\bb\.s\.|\bundergraduate degree\b|"
                           r"\bbachelors\b", re.IGNORECASE),
}
# "I have no degree", not "can I become a manager without a degree?" (a question, not a fact)
_NO_DEGREE = re.compile(r"\b(?:no|never got an?|don't have an?|do not have an?|never earned an?|without an?)\s+"
                        r"(?:college |university )?degree\b(?!\s+(?:in|of)\b)(?=[^?]*(?:[.!,;]|$))|"
                        r"\b(?:never|didn't|did not)\s+(?:went|go|attend(?:ed)?|finish(?:ed)?|complete[d]?)\s+"
                        r"(?:to\s+)?(?:college|university|uni)\b|"
                        r"\bdropped out\b|\bself-taught\b", re.IGNORECASE)
# What the person says they hold: a degree named in a question ("is a master's required?") is not one held
# unless the question says so ("with my bachelor's, ...?").
_ASKS_OF_DEGREE = re.compile(r"\b(?:require[sd]?|need(?:ed|s)?|necessary|mandatory|a must|worth|help|matter|count)\b",
                             re.IGNORECASE)
_HOLDS = re.compile(r"\b(?:i\s+(?:have|hold|got|earned|completed|finished)|i've\s+(?:got|earned|completed)|"
                    r"i'm\s+a\s+graduate|with\s+(?:a|an|my)|my)\b", re.IGNORECASE)
_FIELD = re.compile(r"(?:in|of)\s+([A-Za-z][A-Za-z &/-]{2,40}?)(?=[.,;!?)]|\s+(?:and|but|from|at|with|which|"
                    r"is|so|or)\b|$)", re.IGNORECASE)
_SKILL_LIST = re.compile(r"\b(?:i know|i use|i've used|i have used|i work with|"
                         r"i'm (?:good|experienced|proficient) (?:at|in|with)|"
                         r"i am (?:good|experienced|proficient) (?:at|in|with)|my skills(?: are| include)?"
                         r"|skills:|experienced (?:in|with)|proficient (?:in|with)|familiar with)\s*:?\s*"
                         r"([^.;!?\n]+)", re.IGNORECASE)
_SALARY = re.compile(r"\b(?:earn|make|paid|salary(?: is| of)?|base(?: pay| salary)?(?: is| of)?)\s+(?:about |around )?"
                     r"\$?\s?(\d{2,3}(?:,\d{3})+|\d{2,3}\s?[kK]|\d{5,7})\b", re.IGNORECASE)
_LOCATION = re.compile(r"\b(?i:i live in|i'm based in|i am based in|based in|located in|i work in)\s+"
                       r"([A-Z][\w.'-]*(?:[ ,]+[A-Z][\w.'-]*){0,3})")
_TITLE = re.compile(r"\b(?:i'm|i am|i work as|working as|currently)\s+(?:a|an|the)\s+([a-z][\w/ .-]{2,50}?)"
                    r"(?=\s+(?:with|and|who|at|in|for|of \d|,)|[.,;!?]|$)", re.IGNORECASE)
_ALIASES = {"gcp": "Google Cloud", "sklearn": "scikit-learn", "tf": "TensorFlow", "nlp": "natural language processing",
            "ml algorithms": "machine learning algorithms", "cicd": "CI/CD", "ci cd": "CI/CD"}


class Profile(BaseModel):
    """What is known about a person. None (or an empty list) means not known, never "none"."""

    model_config = ConfigDict(extra="ignore")

    years_development: float | None = Field(None, ge=0, le=MAX_YEARS, description="Years of software development.")
    years_leadership: float | None = Field(None, ge=0, le=MAX_YEARS, description="Years in technical leadership.")
    people_managed: int | None = Field(None, ge=0, le=100_000, description="People led or managed at most.")
    degree: DegreeLevel | None = Field(None, description="Highest degree: none, bachelor, master or phd.")
    degree_field: str | None = Field(None, max_length=80, description="Field of the highest degree.")
    skills: list[str] = Field(default_factory=list, max_length=200, description="Skills and technologies named.")
    current_title: str | None = Field(None, max_length=80, description="Current job title, as said.")
    current_level: str | None = Field(None, max_length=80, description="Rung of the role's ladder, if on it.")
    current_base_salary: int | None = Field(None, ge=0, le=100_000_000, description="Current base salary (USD).")
    location: str | None = Field(None, max_length=80, description="Where the person works.")
    target_role: str | None = Field(None, max_length=120, description="The role the person aims for.")
    experience: list[Entry] = Field(default_factory=list, max_length=100,
                                    description="How long the person did what: activity, years, and the quote.")

    def known(self) -> dict[str, Any]:
        """The fields that are known."""
        return {k: v for k, v in self.model_dump().items() if v not in (None, [], "")}

    def merged(self, newer: Profile) -> Profile:
        """This profile updated with what `newer` knows (skills are added, not replaced)."""
        data = {**self.model_dump(), **{k: v for k, v in newer.known().items() if k != "skills"}}
        data["skills"] = list(dict.fromkeys([*self.skills, *newer.skills]))
        # newer entries replace older ones of the same activity; the others stay
        acts = {e.activity.lower() for e in newer.experience}
        data["experience"] = [e.model_dump() for e in self.experience if e.activity.lower() not in acts] + \
            [e.model_dump() for e in newer.experience]
        return Profile.model_validate(data)


@dataclass
class Reading:
    """A profile read from text, and what could not be taken as said (one clear sentence each)."""

    profile: Profile
    problems: list[str] = field(default_factory=list)
    evidence: dict[str, str] = field(default_factory=dict)  # field -> the words it was read from


def _first(patterns: Iterable[re.Pattern[str]], text: str) -> re.Match[str] | None:
    found = [m for m in (p.search(text) for p in patterns) if m]
    return min(found, key=lambda m: m.start()) if found else None


def _years(match: re.Match[str]) -> float:
    return number(next(g for g in match.groups() if g is not None))


def matches_term(term: str, text: str) -> bool:
    """Whether text names the term (whole words, any case; "MLflow" names "MLFlow", "SageMaker" "AWS SageMaker")."""
    words = re.escape(term.lower()).replace(r"\ ", r"[\s-]+").replace(r"\-", r"[\s-]?")
    if re.search(rf"(?<![\w+#]){words}(?![\w+#])", text.lower()):
        return True
    # "AWS SageMaker" is named by "SageMaker" alone: a product name (a capital inside the word), never a common
    # word ("Google Cloud" is not named by "cloud").
    tail = term.split()[-1]
    distinctive = len(term.split()) > 1 and any(c.isupper() for c in tail[1:])
    return distinctive and bool(re.search(rf"(?<!\w){re.escape(tail.lower())}(?!\w)", text.lower()))


def skills_in(text: str, card: RoleCard) -> list[str]:
    """The card's vocabulary named in text, then the rest of any list the person gives ("I know X, Y and Z")."""
    lowered = text.lower()
    for alias, term in _ALIASES.items():
        if re.search(rf"(?<!\w){re.escape(alias)}(?!\w)", lowered):
            text += f" {term}"
    found = [t for t in card.vocabulary if matches_term(t, text)]
    for listed in _SKILL_LIST.finditer(text):
        for item in re.split(r",\s*|\s+and\s+|\s+or\s+|/", listed.group(1)):
            item = re.sub(r"^(?:also |some |a bit of |basic |the |a |an )", "", item.strip(), flags=re.IGNORECASE)
            item = re.sub(r"\s+(?:a lot|every day|daily|too|as well|at work)$", "", item, flags=re.IGNORECASE)
            item = item.strip(" .")
            item = _ALIASES.get(item.lower(), item)
            if 1 <= len(item) <= 40 and len(item.split()) <= 4 and not any(matches_term(t, item) for t in found):
                found.append(item)
    return list(dict.fromkeys(found))


_PLANNED = re.compile(r"(?:get|getting|pursue|pursuing|do|doing|take|taking|consider|considering|start|starting|"
                      r"plan(?:ning)? to|thinking of|worth|need|require[sd]?|should i get)\s+(?:a\s+|an\s+|the\s+)?$",
                      re.IGNORECASE)


def _degrees_held(text: str) -> tuple[str, re.Match[str]] | None:
    """The highest degree the person says they have (one they might get, "should I get a master's?", is not)."""
    held = []
    for level in ("phd", "master", "bachelor"):
        for m in _DEGREE[level].finditer(text):
            if _PLANNED.search(text[max(0, m.start() - 30):m.start()]):
                continue
            begins = max(text.rfind(c, 0, m.start()) for c in ".?!\n") + 1
            ends = min((i for i in (text.find(c, m.end()) for c in ".?!\n") if i >= 0), default=len(text))
            if (text[ends:ends + 1] == "?" and _ASKS_OF_DEGREE.search(text[begins:ends])
                    and not _HOLDS.search(text, begins, m.start())):
                continue
            held.append((level, m))
    return max(held, key=lambda h: degree_rank(h[0])) if held else None


_I_AM = r"(?:i'm|i am|im|i work as|i'm working as|i've been|i have been|as|my (?:current )?(?:role|title|job|" \
        r"position) is|i was promoted to|i got promoted to|promoted to)\s+(?:now\s+|currently\s+|already\s+)*" \
        r"(?:a|an|the)?\s*"
# A band named by its level alone ("Entry Level", "Mid-Level", "Senior Level") is held by a person who names a role
# noun after it ("a mid-level manager"); a rung named as a job title ("Group Product Manager", "Staff Data Engineer",
# "Director of AI Engineering") is held by a person who names that title.
_BAND_WORDS = frozenset("entry junior mid middle senior level top principal staff".split())


def _level(text: str, card: RoleCard) -> str | None:
    """The rung of the ladder the person says they are on ("I'm a mid-level manager", "I'm a VP of AI/ML", "I'm a
    Staff Data Engineer now"); the highest one named when several are."""
    without_role = re.sub(re.escape(card.role), " ", text, flags=re.IGNORECASE)  # naming the role is not holding it
    found = None
    # the role's own noun ("Manager" of "Senior Software Engineering Manager in AI") follows a band's level
    noun = (re.split(r"\s+(?:in|of|for|at)\s+|,", card.role)[0].split() or ["manager"])[-1]
    for rung in card.steps():
        words = [w for w in re.findall(r"[A-Za-z]+", rung.title) if w.lower() not in {"of", "the"}]
        pattern = r"[\s/-]+(?:of\s+)?".join(map(re.escape, words))
        if {w.lower() for w in words} <= _BAND_WORDS:  # a band by level: a role noun must follow
            core = [w for w in words if w.lower() != "level"]
            pattern = r"[\s/-]+".join(map(re.escape, core))
            band = rf"\b{_I_AM}{pattern}(?:[\s-]*level)?\s+(?:\w+\s+){{0,2}}?{re.escape(noun)}s?\b"
            hit = re.search(band, without_role, re.IGNORECASE)
        else:
            hit = re.search(rf"\b{_I_AM}{pattern}\b", text, re.IGNORECASE)
        if hit:
            found = rung.title  # steps are in order: a later match is a higher rung
    return found


def read_profile(text: str, card: RoleCard) -> Reading:
    """The profile stated in text (a message, a résumé); what is not stated stays unknown."""
    reading = Reading(Profile())
    data: dict[str, Any] = {}
    if lead := _first(_PATTERNS_LEAD, text):
        data["years_leadership"], reading.evidence["years_leadership"] = _years(lead), lead.group(0)
    elif m := _NEVER_LED.search(text):
        data["years_leadership"], data["people_managed"] = 0, 0
        reading.evidence["years_leadership"] = m.group(0)
    # Development years: the first years phrase that is not the leadership one.
    for m in sorted((m for p in _PATTERNS_DEV for m in p.finditer(text)), key=lambda m: m.start()):
        # not the leadership phrase again ("4 years of leadership experience" says nothing of development)
        if not (lead and m.start() < lead.end() and lead.start() < m.end()) and not _TOTAL.match(text, m.start()):
            data["years_development"], reading.evidence["years_development"] = _years(m), m.group(0)
            break
    # The grammar of experience entries reads durations in every common form; where it names development or
    # leadership it decides those years, the older patterns above are kept for what it does not read.
    entries = read_entries(text)
    data["experience"] = [e.model_dump() for e in entries]
    for name, activity in (("years_development", "software development"), ("years_leadership", "technical leadership")):
        if (entry := match_years(activity, entries)) and entry.years != data.get(name):
            data[name], reading.evidence[name] = entry.years, entry.quote
    # "Product manager for six years" is product management, not leading people
    kinds = concepts_of(reading.evidence.get("years_leadership", ""))
    if data.get("years_leadership") and "product" in kinds and "leadership" not in kinds:
        data.pop("years_leadership")
        reading.evidence.pop("years_leadership", None)
    if m := _first(_PEOPLE, text):
        data["people_managed"], reading.evidence["people_managed"] = int(number(m.group(1))), m.group(0)
    if _NO_DEGREE.search(text):
        data["degree"] = "none"
    elif held := _degrees_held(text):
        level, m = held
        data["degree"], reading.evidence["degree"] = level, m.group(0)
        rest = re.sub(r"^\.?(?:['’]?s)?(?:\s+degree)?(?:\s+of\s+(?:science|arts|engineering|business administration))?"
                      r"\s*", " ", text[m.end():], flags=re.IGNORECASE)
        if f := _FIELD.match(rest.lstrip()):
            data["degree_field"] = f.group(1).strip()
    data["skills"] = skills_in(text, card)
    if rung := _level(text, card):
        data["current_level"] = rung
    if m := _TITLE.search(text):
        data["current_title"] = re.sub(r"\s+(?:now|currently|already|today|at the moment)$", "", m.group(1).strip(),
                                       flags=re.IGNORECASE)
    if m := _SALARY.search(text):
        raw = m.group(1).replace(",", "").replace(" ", "")
        data["current_base_salary"] = int(float(raw[:-1]) * 1000) if raw[-1] in "kK" else int(raw)
    if m := _LOCATION.search(text):
        data["location"] = m.group(1).strip(" ,")
    _check(text, data, reading)
    try:
        reading.profile = Profile.model_validate(data)
    except ValidationError as exc:  # a value out of range: leave that field unknown, say why
        for err in exc.errors():
            name = str(err["loc"][0])
            reading.problems.append(f"I could not use {name.replace('_', ' ')} = {data.get(name)!r}.")
            data.pop(name, None)
        reading.profile = Profile.model_validate(data)
    return reading


def _check(text: str, data: dict[str, Any], reading: Reading) -> None:
    """Absurd numbers and contradictions: the field stays unknown and the person is told in one sentence."""
    for name, what in (("years_development", "software development"), ("years_leadership", "technical leadership")):
        value = data.get(name)
        if value is not None and value > MAX_YEARS:
            reading.problems.append(f"{value:g} years of {what} is more than a working life, so I left it out: "
                                    "please check the number.")
            data.pop(name)
    total = _TOTAL.search(text)
    if total:
        overall = _years(total)
        for name, what in (("years_development", "software development"), ("years_leadership", "leadership")):
            if data.get(name) is not None and data[name] > overall:
                reading.problems.append(f"You mention {data[name]:g} years of {what} but {overall:g} years of "
                                        f"experience in total; which is right? I left the {what} years out until "
                                        "you tell me.")
                data.pop(name)


def profile_schema() -> dict[str, Any]:
    """The JSON schema a model must follow when it helps read a profile."""
    return Profile.model_json_schema()


def from_model_json(raw: str) -> Profile | None:
    """A profile from a model's JSON reply, validated; None when it is not valid JSON of the schema."""
    try:
        return Profile.model_validate(json.loads(raw))
    except (ValueError, ValidationError):
        return None


def degree_rank(level: str | None) -> int:
    """0 for none, then bachelor < master < phd; -1 when unknown."""
    if level is None:
        return -1
    return 0 if level == "none" else DEGREES.index(level) + 1
