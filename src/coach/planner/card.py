"""The role card: the knowledge base's requirements and career ladder as data, parsed from its own Markdown.

Nothing here is a second copy of the facts: every value is read from the passages of the index, and
every item keeps the passage it comes from, so the planner can cite it. The rules that read the text:

- Requirements are the bullets of the section whose title says "Requirement", grouped by subsection. A
  group whose title says desirable, preferred, nice or plus holds nice-to-haves; so does a bullet that
  says "preferred".
- "N+ years of ..." (or "N-M years in ...") is a years threshold: of leadership when the bullet speaks of
  leadership or management, else of software development.
- An education bullet names a degree (bachelor, master, PhD) and the fields after "in".
- Vocabulary: the items of an "(e.g., A, B, C)" list, else the phrases the bullet joins with commas,
  "and" and "or" once its lead-in ("Knowledge of", "Experience with", ...) is dropped.
- The ladder: bullets "Title: $low - $high" of the salary section's base-salary subsection (the bands of
  the role) and of its progression subsection (the roles above it), in the order written. A band named
  for a kind of company ("Top Tier/FAANG Companies") is a company tier beside the levels, not a step.
- Where two passages state different years for the same thing, the card keeps both (a conflict).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from coach.planner.experience import concepts_of
from coach.retrieval import Passage

DEGREES = ("bachelor", "master", "phd")  # in order: a higher one satisfies a lower one
YearsOf = Literal["development", "leadership"]
# text pairs -> similarity of each pair (the embedding model's cosine, or shared words without it)
Similarity = Callable[[list[str], list[str]], list[list[float]]]

_BULLET = re.compile(r"^\s*[-*+]\s+(.*\S)\s*$")
_YEARS = re.compile(r"(\d{1,2})\s*(?:\+|(?:-|–|to)\s*(\d{1,2}))?\s*\+?\s*years?\b", re.IGNORECASE)
_EXAMPLES = re.compile(r"\((?:e\.g\.|for example|such as),?\s*([^)]*)\)", re.IGNORECASE)
_MONEY_RANGE = re.compile(r"^(?P<title>[^:]{2,60}):\s*\$(?P<low>[\d,]+)\s*(?:-|–|to)\s*\$(?P<high>[\d,]+)(?P<plus>\+)?")
_LEAD_IN = re.compile(
    r"^(?:(?:proven|strong|excellent|extensive|deep|solid|good|basic)\s+)?"
    r"(?:knowledge of|familiarity with|understanding of|experience (?:with|in)|expertise in|proficiency in|"
    r"foundation in|ability to|skill in|skills in|capabilities in)?\s*",
    re.IGNORECASE)
_TAIL_WORDS = re.compile(r"\s+(?:skills|abilities|capabilities|practices|technologies|disciplines)$", re.IGNORECASE)
_LEADERSHIP = re.compile(r"leader|leadership|manag|supervis|mentor", re.IGNORECASE)
_DEGREE_WORDS = {"bachelor": re.compile(r"bachelor|\bbsc?\b|\bb\.s\.", re.IGNORECASE),
                 "master": re.compile(r"master|\bmsc?\b|\bm\.s\.", re.IGNORECASE),
                 "phd": re.compile(r"\bph\.?d\b|doctora", re.IGNORECASE)}
# Words that make an item optional, on the bullet (its own clause) or on its heading.
OPTIONAL = re.compile(r"\bpreferred\b|\ba plus\b|\bnice[\s-]to[\s-]have\b|\bnice\b|\boptional\b|\bvalued\b|\bbonus\b|"
                      r"\bnot (?:a )?(?:strictly )?(?:required|requirement|necessary|mandatory)\b|\bdesirable\b|"
                      r"\ban? advantage\b|\badvantageous\b|\bhelpful\b|\bwelcome\b|\bappreciated\b|\bideally\b",
                      re.IGNORECASE)
# Leading or mentoring people, with no years attached ("Experience managing or mentoring other product managers").
_PRACTICE = re.compile(r"\b(?:lead|leading|mentor\w*|coach\w*|grow|supervis\w*)\b[^.]{0,40}?\b(?:teams?|people|"
                       r"engineers|managers|members|reports|others?|staff)\b|\bpeople management\b|"
                       r"\bteam supervision\b|\bmanag\w*\s+(?:or\s+\w+\s+)?(?:other|a team|teams|people)\b",
                       re.IGNORECASE)
_CERTIFICATION = re.compile(r"\bcertifi\w*|\bcredential", re.IGNORECASE)
_STOP = frozenset("a an the of in for with and or to on at by its their".split())


@dataclass(frozen=True)
class Cite:
    """The passage an item of the card comes from."""

    passage_id: str
    label: str
    source: str

    @classmethod
    def of(cls, passage: Passage) -> Cite:
        """The citation of a passage."""
        return cls(passage.id, passage.label, passage.source)


@dataclass(frozen=True)
class Requirement:
    """One requirement bullet, read."""

    id: str
    group: str  # the subsection it is listed under
    text: str  # the bullet as written
    must: bool  # False: nice to have (desirable, preferred)
    cite: Cite
    years: int | None = None  # a minimum number of years ("8+ years")
    years_of: YearsOf | None = None  # development or leadership; None for any other activity
    degree: str | None = None  # the lowest degree that satisfies it (bachelor, master, phd)
    fields: tuple[str, ...] = ()  # fields of study named for the degree
    terms: tuple[str, ...] = ()  # skills or topics that show it
    need: int = 1  # how many of the terms make it met
    actions: tuple[int, ...] = ()  # indexes into RoleCard.actions: what the knowledge base says to do about it
    activity: str | None = None  # for a years item: what the years are of ("designing large-scale data pipelines")

    @property
    def kind(self) -> str:
        """years, education, or skill (the three ways a requirement is compared with a person)."""
        return "years" if self.years is not None else "education" if self.degree else "skill"

    @property
    def category(self) -> str:
        """What the item is, as data: years, degree, certification, practice (leading or mentoring people, no
        years attached) or skill."""
        if self.years is not None:
            return "years"
        if self.degree:
            return "degree"
        if _CERTIFICATION.search(self.text):
            return "certification"
        return "practice" if _PRACTICE.search(self.text) else "skill"


@dataclass(frozen=True)
class Rung:
    """A step of the career ladder with its base pay range (US dollars)."""

    title: str
    low: int
    high: int
    open_ended: bool  # "$350,000+"
    tier: bool  # a company tier beside the levels, not a step up
    above_role: bool  # a role above this one (the progression), not a band of this role
    cite: Cite

    @property
    def pay(self) -> str:
        """The range as written: $220,000 - $280,000, with a + when it is open-ended."""
        return f"${self.low:,} - ${self.high:,}{'+' if self.open_ended else ''}"


@dataclass(frozen=True)
class Statement:
    """Something the knowledge base says, where it says it."""

    text: str
    cite: Cite


@dataclass(frozen=True)
class Conflict:
    """Two passages that disagree (e.g. on the years of development asked for)."""

    about: str
    statements: tuple[Statement, ...]


@dataclass(frozen=True)
class RoleCard:
    """The role's requirements, ladder and the actions its knowledge base recommends."""

    role: str
    requirements: tuple[Requirement, ...]
    ladder: tuple[Rung, ...]
    actions: tuple[Statement, ...]
    conflicts: tuple[Conflict, ...] = ()
    mentions: tuple[Statement, ...] = field(default=(), repr=False)  # every years statement, for conflicts

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """Every skill or topic term of the requirements, in order, once."""
        return tuple(dict.fromkeys(t for r in self.requirements for t in r.terms))

    def minimum_years(self, of: YearsOf) -> Requirement | None:
        """The requirement that sets the years of this kind."""
        return next((r for r in self.requirements if r.years_of == of and r.must), None)

    def rung(self, title: str) -> Rung | None:
        """The rung with this title (case-insensitive)."""
        return next((r for r in self.ladder if r.title.lower() == title.lower()), None)

    def steps(self) -> list[Rung]:
        """The rungs one climbs, in order (company tiers left out)."""
        return [r for r in self.ladder if not r.tier]


def bullets(text: str) -> list[str]:
    """The bullet items of a passage."""
    return [m.group(1) for m in map(_BULLET.match, text.splitlines()) if m]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _clean_term(text: str) -> str:
    text = re.sub(r"^(?:e\.g\.,?|and|or|including)\s+", "", text.strip(" .;:"), flags=re.IGNORECASE)
    return text.strip(" .;:")


def terms_of(bullet: str) -> tuple[tuple[str, ...], int]:
    """The skill or topic terms a bullet names, and how many of them make it met."""
    examples = _EXAMPLES.search(bullet)
    multiple = bool(re.search(r"\bmultiple\b|\bseveral\b", bullet, re.IGNORECASE))
    if examples:
        items = re.split(r",\s*|\s+or\s+|\s+and\s+", examples.group(1))
        return tuple(t for t in (_clean_term(i) for i in items) if t), 2 if multiple else 1
    body = re.sub(r"[.;]\s*$", "", bullet)
    body = re.split(r",?\s+including\s+", body, maxsplit=1)[-1] if " including " in body else body
    body = _TAIL_WORDS.sub("", _LEAD_IN.sub("", body, count=1).strip())
    either = bool(re.search(r"\bor\b", body))
    # Commas separate items only in a list joined by "and"/"or" ("manage complex, large-scale AI projects" is one).
    joined = r",\s*|\s+and\s+|\s+or\s+" if re.search(r"\b(?:and|or)\b", body) else r"\s+and\s+|\s+or\s+"
    parts = [p for p in (_clean_term(p) for p in re.split(joined, body)) if p]
    # A list of single verbs ("designing, building, and scaling ML systems", "lead, mentor, and grow engineering
    # teams") names one topic: its last part.
    if len(parts) > 2 and all(" " not in p for p in parts[:-1]):
        parts = [parts[-1]]
    parts = [re.sub(r"^(?:the|a|an)\s+", "", p, flags=re.IGNORECASE) for p in parts]
    terms = tuple(p for p in parts if 0 < len(p.split()) <= 5 and p.lower() not in _STOP)
    return terms, 1 if either or multiple else max(1, len(terms))


def _degree(bullet: str) -> tuple[str | None, tuple[str, ...]]:
    found = [d for d in DEGREES if _DEGREE_WORDS[d].search(bullet)]
    if not found:
        return None, ()
    match = re.search(r"\bin\s+(.+?)(?:\.|$)", bullet)
    fields: tuple[str, ...] = ()
    if match and not re.match(r"ai-related|related|any\b", match.group(1), re.IGNORECASE):
        fields = tuple(t for t in (_clean_term(p) for p in re.split(r",\s*|\s+or\s+", match.group(1)))
                       if t and "related" not in t.lower())
    return found[0], fields


def activity_of(bullet: str) -> str | None:
    """What a years bullet's years are of: the words after "years", without "of", "in" and "experience"."""
    match = _YEARS.search(bullet)
    if not match:
        return None
    after = re.split(r"[.;:(]|,\s+(?:and|or|with|including|ideally|preferably|especially|focusing|focused|mostly|"
                     r"mainly|"
                     r"primarily|such as|at least)\b|\s+(?:with|including|where)\s",
                     bullet[match.end():], maxsplit=1)[0]
    after = re.sub(r"^\s*(?:of\s+(?:professional\s+|hands-on\s+|relevant\s+)?(?:experience\s+)?"
                   r"(?:in\s+|as\s+(?:an?\s+)?)?"
                   r"|in\s+|as\s+(?:an?\s+)?|experience\s+(?:in\s+|with\s+)?|spent\s+)", "", after, flags=re.IGNORECASE)
    after = re.sub(r"\s+(?:experience|background|roles?|positions?)\s*$", "", after.strip(), flags=re.IGNORECASE)
    return after.strip(" ,") or None


def _years(bullet: str) -> tuple[int | None, YearsOf | None]:
    """The years a bullet asks for and of what kind: development or leadership when its activity names that kind
    (and no other), else None (an activity of its own, compared only with what the person says of it)."""
    match = _YEARS.search(bullet)
    if not match:
        return None, None
    activity = activity_of(bullet) or ""
    kinds = concepts_of(activity)
    if not activity.strip() or re.fullmatch(r"(?:professional|relevant|work|industry)?\s*", activity, re.I):
        kinds = {"development"}  # "8+ years of experience": of the role's work, development in the seed's terms
    # leadership alone, or leadership beside development words when the activity says lead/manage/mentor
    if "leadership" in kinds and kinds <= {"leadership", "development"} and (
            kinds == {"leadership"} or _LEADERSHIP.search(activity)):
        return int(match.group(1)), "leadership"
    if kinds == {"development"}:
        return int(match.group(1)), "development"
    return int(match.group(1)), None


def _requirements(passages: Iterable[Passage]) -> list[Requirement]:
    out: list[Requirement] = []
    counts: dict[str, int] = {}
    for p in passages:
        if "requirement" not in p.section.lower():
            continue
        group = p.subsection or p.section
        nice_group = bool(OPTIONAL.search(group)) or bool(re.search(r"\bplus\b|\bbonus", group, re.IGNORECASE))
        for text in _items(bullets(p.text)):
            n = counts.get(group, 0)
            counts[group] = n + 1
            years, years_of = _years(text)
            degree, fields = _degree(text)
            terms, need = ((), 1) if years is not None or degree else terms_of(text)
            must = not nice_group and not OPTIONAL.search(text)
            out.append(Requirement(f"{_slug(group)}/{n}", group, text, must, Cite.of(p), years, years_of, degree,
                                   fields, terms, need, activity=activity_of(text) if years is not None else None))
    return out


# A sentence that speaks of the whole list, not of its item: a section's closing summary glued onto the last
# bullet ("... developers. Taken together, these requirements describe a product leader ...").
_SUMMARY = re.compile(r"[.!]\s+(?:taken together|together|overall|in (?:short|summary|sum)|all (?:of )?(?:these|this)"
                      r"|these (?:requirements|skills|qualifications|items)|this (?:combination|mix|set)|combined)"
                      r"\b.*$", re.IGNORECASE | re.DOTALL)


def _items(texts: list[str]) -> list[str]:
    """Bullets as requirement items: a bullet whose later clause alone is optional ("Bachelor's degree in X; an MBA
    is valued but optional") is two items, the required one and the optional one; a closing summary sentence
    glued onto a bullet (_SUMMARY) is not part of its item."""
    out = []
    for text in texts:
        text = _SUMMARY.sub(".", text)
        head, sep, tail = text.partition("; ")
        if sep and OPTIONAL.search(tail) and not OPTIONAL.search(head):
            out += [head.rstrip(" ;") + ".", tail]
        else:
            out.append(text)
    return out


def _ladder(passages: Iterable[Passage]) -> list[Rung]:
    out: list[Rung] = []
    for p in passages:
        sub = p.subsection.lower()
        if "salary" not in p.section.lower() or not ("base" in sub or "progression" in sub or "ladder" in sub):
            continue
        for text in bullets(p.text):
            match = _MONEY_RANGE.match(text)
            if match:
                title = match["title"].strip()
                out.append(Rung(title, int(match["low"].replace(",", "")), int(match["high"].replace(",", "")),
                                bool(match["plus"]), bool(re.search(r"compan|tier", title, re.IGNORECASE)),
                                "base" not in sub, Cite.of(p)))
    return out


def _mentions(passages: Iterable[Passage]) -> list[Statement]:
    """Every sentence or bullet that states years of experience, anywhere in the knowledge base."""
    out = []
    for p in passages:
        for line in p.text.splitlines():
            line = line.strip().lstrip("-*+ ").strip()
            if _YEARS.search(line) and re.search(r"experience|development|leadership|years in", line, re.I):
                out.append(Statement(line, Cite.of(p)))
    return out


def _span(text: str) -> tuple[int, int | None] | None:
    match = _YEARS.search(text)
    return (int(match.group(1)), int(match.group(2)) if match.group(2) else None) if match else None


def _conflicts(requirements: list[Requirement], mentions: list[Statement]) -> list[Conflict]:
    """Requirements whose years another passage states differently ("8+" here, "5-10" there)."""
    out = []
    for req in requirements:
        if req.years is None or not req.must:
            continue
        others = [m for m in mentions if m.cite.passage_id != req.cite.passage_id
                  and _years(m.text)[1] == req.years_of and _span(m.text) != _span(req.text)
                  and (req.years_of is not None
                       or concepts_of(activity_of(m.text) or "") == concepts_of(req.activity or ""))]
        if others:
            out.append(Conflict(f"years of {req.years_of or req.activity}", (Statement(req.text, req.cite), *others)))
    return out


def _word_overlap(left: list[str], right: list[str]) -> list[list[float]]:
    def words(t: str) -> set[str]:
        return {w for w in re.findall(r"[a-z]+", t.lower()) if w not in _STOP and len(w) > 2}

    rights = [words(r) for r in right]
    return [[len(words(a) & b) / (1 + len(b)) for b in rights] for a in left]


def _actions(passages: Iterable[Passage]) -> list[Statement]:
    out = []
    for p in passages:
        if re.search(r"career|development|best practice", p.section, re.I) and "salary" not in p.section.lower():
            out += [Statement(text, Cite.of(p)) for text in bullets(p.text)]
    return out


def build_card(passages: Iterable[Passage], similarity: Similarity | None = None, per_requirement: int = 2
               ) -> RoleCard:
    """The card of the passages' role; `similarity` links each requirement to the actions most like it."""
    passages = sorted(passages, key=lambda p: (p.source, p.position))  # in the order written
    roles = [p.role for p in passages if p.role]
    requirements = _requirements(passages)
    actions = _actions(passages)
    mentions = _mentions(passages)
    if requirements and actions:
        queries = [_YEARS.sub("", r.text) for r in requirements]  # the subject, not the number of years
        scores = (similarity or _word_overlap)(queries, [a.text for a in actions])
        requirements = [_with_actions(r, row, per_requirement) for r, row in zip(requirements, scores, strict=True)]
    return RoleCard(max(set(roles), key=roles.count) if roles else "this role", tuple(requirements),
                    tuple(_ladder(passages)), tuple(actions), tuple(_conflicts(requirements, mentions)),
                    tuple(mentions))


def _with_actions(req: Requirement, scores: list[float], k: int) -> Requirement:
    best = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
    return Requirement(**{**req.__dict__, "actions": tuple(best)})
