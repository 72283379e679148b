"""Experience entries: how long a person did what, read by a small grammar of durations and activities.

A sentence is cut into clauses (at . ; ! ? and at commas; a clause holding two durations is cut again at
"and", "but", "while" or "then" between them). In each clause every duration is read, in any of the forms
people write:

- a number of years and/or months: digits, decimals, number words ("twelve", "twenty-five"), fractions
  ("four and a half years", "4 1/2 years", "a year and a half"), "4 years 11 months", "8 months", "a decade";
- a span of dates: "since 2017", "since March 2020", "from 2015 to 2020", "2018-present", "between 2016 and
  2021" (against today's date);
- a part of an earlier span: "three of them", "of which two", "the last five", "for the past 3";
- a number after the activity: "leading teams for three" (a bare number after "for" ending the clause);
- "N years ago" for something still going on since then.

The activity of a duration is what is left of its clause once the duration and filler words ("I've been",
"as a", "of ... experience") are removed: "I've been a product manager since 2017" -> "product manager".
A clause that says the person never did something ("I've never had a product title") is an entry of 0
years for that activity. Nothing is borrowed between entries: an activity nobody stated has no entry.

Matching an entry to a requirement's activity (`match_years`) works on concepts and words:
- Concepts are kinds of work written many ways (lists below): development ("writing Python", "backend
  engineer", "data engineering"), leadership ("leading teams", "engineering manager"), product management
  ("PM", "product work"), machine learning ("LLM", "computer vision", "recommendation"). When the
  requirement names concepts, an entry matches when it names all of them.
- Otherwise an entry matches when it shares two content words with the requirement (or its only one):
  two specific words in common ("pipeline design" / "designing large-scale data pipelines") is a claim
  about the same work; one generic word ("data") is not.
The best match is the one sharing most words, then the longest; none is `None` (unknown, never a guess).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from pydantic import BaseModel, ConfigDict, Field

MAX_YEARS = 60  # a working life: more than this is a typo, not a career

_UNITS = {"zero": 0, "no": 0, "one": 1, "a": 1, "an": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
          "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
          "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "couple": 2,
          "a couple of": 2, "a few": 3, "few": 3, "several": 3}
_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50}
_WORD = (r"(?:(?:twenty|thirty|forty|fifty)(?:[- ](?:one|two|three|four|five|six|seven|eight|nine))?|"
         + "|".join(sorted((re.escape(w) for w in _UNITS if w not in ("no", "couple")), key=len, reverse=True)) + ")")
NUMBER = rf"(?:\d+(?:\.\d+)?(?:\s+\d/\d)?|\d/\d|{_WORD})"
_HALF = r"(?:\s+and\s+a\s+half|\s*½)"
_YEAR_UNIT = r"(?:years?|yrs?|y)\b"
_MONTH_UNIT = r"(?:months?|mos?)\b"
_MONTHS = "jan feb mar apr may jun jul aug sep oct nov dec".split()
_MONTH_NAME = r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|" \
              r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
_YEAR = r"(?:19[5-9]\d|20[0-4]\d)"
_NOW = r"(?:present|now|today|current|date)"

# "4 years", "four and a half years", "4 years 11 months", "a year ago"
_AMOUNT = re.compile(rf"(?<![\w$.])(?P<years>{NUMBER})(?P<half>{_HALF})?\s*\+?\s*(?:-\s*)?{_YEAR_UNIT}"
                     rf"(?:\s*(?:,|and)?\s*(?P<months>{NUMBER})\s*{_MONTH_UNIT})?(?P<ago>\s+ago)?", re.I)
# Each duration form, in the order tried (spans of dates before amounts); named groups say how to read it.
_DURATIONS = [
    re.compile(rf"\b(?P<span_from>{_YEAR})\s*(?:-|–|to|until)\s*(?P<span_to>{_YEAR}|{_NOW})\b", re.I),
    re.compile(rf"\bfrom\s+(?:{_MONTH_NAME}\s+)?(?P<span_from>{_YEAR})\s+(?:to|until|till)\s+(?:{_MONTH_NAME}\s+)?"
               rf"(?P<span_to>{_YEAR}|{_NOW})\b", re.I),
    re.compile(rf"\bbetween\s+(?P<span_from>{_YEAR})\s+and\s+(?P<span_to>{_YEAR})\b", re.I),
    re.compile(rf"\bsince\s+(?:(?P<since_month>{_MONTH_NAME})\s+)?(?P<since>{_YEAR})\b", re.I),
    re.compile(r"\b(?:a|one)\s+year\s+and\s+a\s+half\b", re.I),
    re.compile(r"\bhalf\s+a\s+year\b", re.I),
    re.compile(r"\b(?P<decades>a|one|two|three|\d)\s+decades?\b", re.I),
    _AMOUNT,
    re.compile(rf"(?<![\w$.])(?P<only_months>{NUMBER})\s*{_MONTH_UNIT}", re.I),
    re.compile(rf"\b(?P<part>{NUMBER})\s+of\s+(?:them|those|these)\b|\bof\s+which\s+(?P<part2>{NUMBER})\b", re.I),
    re.compile(rf"\bthe\s+(?:last|past|latest|most\s+recent)\s+(?P<last>{NUMBER})\b(?!\s+(?:{_MONTH_UNIT}))"
               r"(?!\s+[a-z]+s\b)", re.I),  # "the last two projects" counts projects, not years
    re.compile(rf"\bfor\s+(?:about\s+|around\s+|roughly\s+)?(?P<bare>{NUMBER})\s*(?=$|[.,;!?)])", re.I),
    # "10 years in software and 5 as a manager", "..., 4 leading teams": the unit said once, for both numbers
    re.compile(rf"(?:^\s*|(?<=\band )|(?<=\bwith )|(?<=\bplus )|(?<=\bincluding ))(?!an?\b)(?P<elided>{NUMBER})"
               r"\s+(?=(?:as|in|on|at|"
               r"spent|of\s+(?!them|those|these|which)\w+|[a-z]+ing)\b)", re.I),
]

_NEGATED = re.compile(r"\b(?:never|not yet|haven't|have not|hasn't|has not|didn't|did not|don't|do not|no)\b", re.I)

# Concepts: kinds of work, each written many ways. A phrase is matched before its words are.
CONCEPTS: dict[str, list[str]] = {
    "product": [r"product[\s-]+(?:manag\w*|work|role|title|owner|ownership|lead\w*|side|career)", r"\bpms?\b",
                r"\bin\s+product\b", r"\bproduct\s+(?:experience|jobs?|titles?|teams?)\b", r"^\s*product\s*$"],
    "leadership": [r"\blead(?:ing|er|ers|ership)?\b(?!-)", r"\bled\b", r"\bmentor\w*", r"\bcoach\w*",
                   r"\bmanag\w*\s+(?:a\s+|the\s+|my\s+)?"
                   r"(?:teams?|people|engineers|developers|reports|staff|groups?|squads?|departments?)",
                   r"(?:engineering|team|people|development|software|technical|tech)\s+manag\w*",
                   r"\bhead\s+of\b", r"\bdirector\b", r"\bvp\b", r"\bsupervis\w*", r"\bmanager\b",
                   r"\b(?:people|team|engineering|line)\s+management\b", r"^\s*(?:in\s+)?management\s*$"],
    "development": [r"\bdevelop\w*", r"\bengineer(?:s|ing)?\b", r"\bprogramm\w*", r"\bcod(?:e|ing|er)\b",
                    r"\bsoftware\b", r"\bback[\s-]?end\b", r"\bfront[\s-]?end\b", r"\bfull[\s-]?stack\b",
                    r"\bpython\b", r"\bjava(?:script)?\b", r"\bc\+\+|\bc#|\bgolang\b|\brust\b|\btypescript\b|"
                    r"\bscala\b|\bkotlin\b|\bswift\b|\bruby\b|\bphp\b", r"\bdevops\b", r"\bsre\b"],
    "ml": [r"machine[\s-]+learning", r"\bml\b", r"\bai\b", r"\bllms?\b", r"\bmodels?\b", r"deep[\s-]+learning",
           r"\bneural\b", r"\bnlp\b", r"computer[\s-]+vision", r"\brecommend\w*", r"\branking\b", r"\bpersonali[sz]\w*",
           r"\bpredict\w*", r"\bforecast\w*", r"\bclassif\w*", r"\bgenerative\b", r"\bgenai\b", r"\bdata\s+scien\w*"],
}
# Engineering titles that are leadership, not development ("engineering manager", "director of engineering").
_LEAD_NOT_DEV = re.compile(r"engineering\s+manag\w*|manag\w*\s+(?:of\s+)?(?:\w+\s+){0,2}engineer\w*|"
                           r"(?:director|head|vp)\s+of\s+"
                           r"(?:\w+\s+)?engineering|lead(?:ing)?\s+(?:\w+\s+)?engineers", re.I)
_FILLER = frozenset("""i i've ive i'm im me my we our us you your a an the of in on at for with as to and or by from
have has had been be being was were am is are do did done doing having get got years year yrs months month
experience experiences professional hands-on industry total overall work worked working job role roles career
them those these which who that this last past since now currently also still about around roughly nearly almost
including
over more than some close plus full time full-time then while but so all""".split())
_SUFFIXES = ("ments", "ment", "ings", "ing", "ions", "ion", "ers", "er", "ed", "es", "s")


def _stem(word: str) -> str:
    """A light stem: one suffix off, then a final e ("pipelines", "pipeline" -> "pipelin"; "managed" -> "manag")."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[:-len(suffix)]
            break
    return word.rstrip("e") if len(word) > 3 else word


def content_words(text: str) -> set[str]:
    """The stems of a phrase's content words (filler and numbers left out)."""
    return {_stem(w) for w in re.findall(r"[a-z][a-z+#-]*", text.lower()) if w not in _FILLER and len(w) > 1}


def concepts_of(text: str) -> set[str]:
    """The kinds of work a phrase names (see CONCEPTS)."""
    low = text.lower()
    found = {name for name, patterns in CONCEPTS.items() if any(re.search(p, low) for p in patterns)}
    if "development" in found and _LEAD_NOT_DEV.search(low) and not re.search(
            r"\bdevelop\w*|\bprogramm\w*|\bcod(?:e|ing)\b|\bsoftware\s+(?:engineer|develop)", low):
        found.discard("development")
    if "product" in found and "leadership" in found and not re.search(
            r"\blead\w*|\bled\b|head of|director|vp|supervis|manag\w*\s+(?:a\s+)?(?:team|people|pms)", low):
        found.discard("leadership")  # "product manager" is product management, not people leadership
    return found


def number(text: str) -> float:
    """The value of a number in digits, words ("twenty-five", "a couple of") or a fraction ("4 1/2", "1/2")."""
    text = text.lower().strip()
    if m := re.fullmatch(r"(\d+)?\s*(\d)/(\d)", text):
        return float(m.group(1) or 0) + int(m.group(2)) / int(m.group(3))
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    if text in _UNITS:
        return float(_UNITS[text])
    parts = re.split(r"[- ]", text)
    return float(_TENS.get(parts[0], 0) + (_UNITS.get(parts[1], 0) if len(parts) > 1 else 0))


class Entry(BaseModel):
    """How long the person did something, and the words it was read from."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    activity: str = Field(max_length=200, description="What the person did, in their words.")
    years: float = Field(ge=0, le=MAX_YEARS, description="For how long, in years.")
    quote: str = Field("", max_length=400, description="The words of the text it was read from.")


@dataclass(frozen=True)
class _Duration:
    years: float
    start: int
    end: int
    ago: bool = False  # "a year ago": since then, and the activity is the sentence's
    elided: bool = False  # a number whose unit an earlier duration gave ("... and 5 as a manager")


def _months_between(year: int, month: int, today: date) -> float:
    return max(0.0, ((today.year - year) * 12 + today.month - month) / 12)


def _value(m: re.Match[str], today: date) -> float:
    g = m.groupdict()
    if g.get("span_from"):
        to = g["span_to"]
        end = today.year + (today.month - 1) / 12 if not re.fullmatch(r"\d{4}", to) else float(to)
        return round(max(0.0, end - int(g["span_from"])), 2)
    if g.get("since"):
        # a year alone counts whole years (2017 in 2026 is 9), as people do; with a month, months count too
        if not g.get("since_month"):
            return float(today.year - int(g["since"]))
        month = _MONTHS.index(g["since_month"][:3].lower()) + 1
        return round(_months_between(int(g["since"]), month, today), 2)
    if g.get("decades"):
        return 10 * number(g["decades"])
    if g.get("years"):
        years = number(g["years"]) + (0.5 if g.get("half") else 0)
        if g.get("months"):
            years += number(g["months"]) / 12
        return round(years, 2)
    if g.get("only_months"):
        return round(number(g["only_months"]) / 12, 2)
    for name in ("part", "part2", "last", "bare", "elided"):
        if g.get(name):
            return number(g[name])
    text = m.group(0).lower()
    return 1.5 if "half" in text and "year and" in text else 0.5


def durations(text: str, today: date | None = None) -> list[_Duration]:
    """Every duration in a piece of text, leftmost first, none overlapping."""
    today = today or date.today()
    found: list[_Duration] = []
    for pattern in _DURATIONS:
        for m in pattern.finditer(text):
            if any(d.start < m.end() and m.start() < d.end for d in found):
                continue
            groups = m.groupdict()
            found.append(_Duration(_value(m, today), m.start(), m.end(), bool(groups.get("ago")),
                                   bool(groups.get("elided"))))
    return sorted(found, key=lambda d: d.start)


_LEAD_VERBS = re.compile(r"(?:mentor|coach|manag|lead|led|supervis)\w*(?:\s*(?:,|or|and|nor)\s*"
                         r"(?:mentor|coach|manag|lead|led|supervis)\w*)*", re.I)
_CLAUSE = re.compile(r"\.(?!\d)|[;!?\n]+|,\s+|\s+\(|\)")
_JOIN = re.compile(r"\s+(?:and|but|while|then|plus|after|who|which|that|where)\s+", re.I)
# Between two durations a clause is also cut at "with" and "including" ("ten years of backend work with 4 in
# management"); not elsewhere, where "never worked with Kubernetes" must stay one clause.
_JOIN_BETWEEN = re.compile(r"\s+(?:and|but|while|then|plus|after|who|which|that|where|with|including)\s+", re.I)


def _clauses(text: str) -> list[tuple[int, str]]:
    out, at = [], 0
    for m in _CLAUSE.finditer(text + "\n"):
        piece = text[at:m.start()]
        if piece.strip():
            out.append((at, piece))
        at = m.end()
    return out


def _activity(clause: str, spans: list[tuple[int, int]]) -> str:
    for start, end in sorted(spans, reverse=True):
        clause = clause[:start] + " " + clause[end:]
    clause = re.sub(r"\b(?:i've|i have|i'm|i am|i)\s+(?:been\s+|done\s+|worked\s+|spent\s+)?", " ", clause, flags=re.I)
    clause = re.sub(r"^\W*(?:and|but|then|plus|with|for|of|in|as|on|the|a|an|my|our)\b\s*", " ", clause.strip(),
                    flags=re.I)
    clause = re.sub(r"(?:\s+(?:experience|in total|overall|for|from|since|over|during|with|of))+\s*$", "",
                    clause.strip(), flags=re.I)
    return re.sub(r"\s+", " ", clause).strip(" ,.;:-")


def _sentence_of(text: str, clause: str) -> str:
    at = text.find(clause)
    start = max(text.rfind(c, 0, at) for c in ".;!?\n") + 1
    ends = [e for e in (text.find(c, at + len(clause)) for c in ".;!?\n") if e >= 0]
    return text[start:min(ends) if ends else len(text)]


def _never(clause: str) -> list[Entry]:
    """0 years of what a clause says the person never did ("I've never had a product title")."""
    negation = _NEGATED.search(clause)
    if not negation or not concepts_of(clause) & {"product", "leadership"}:
        return []
    # "I haven't mentored or managed other PMs": never led people, which says nothing of product years
    verbs = _LEAD_VERBS.search(clause, negation.end())
    near = verbs and len(clause[negation.end():verbs.start()].split()) <= 2
    activity = f"{verbs.group(0)} people" if verbs and near else _activity(_NEGATED.sub(" ", clause), [])
    return [Entry(activity=activity[:200], years=0, quote=clause.strip()[:400])] if activity else []


def read_entries(text: str, today: date | None = None) -> list[Entry]:
    """The experience entries stated in text (see the module's docstring for the grammar)."""
    today = today or date.today()
    entries: list[Entry] = []
    unit_said = False  # an elided number is a duration only after one with its unit
    for _, clause in _clauses(text):
        every = durations(clause, today)
        found = [d for d in every if not d.elided or unit_said or any(not e.elided and e.start < d.start
                                                                        for e in every)]
        unit_said = unit_said or any(not d.elided for d in found)
        if not found:
            entries += _never(clause)
            continue
        pieces = [(0, clause)]
        if len(found) > 1 or _NEGATED.search(clause):
            # "coding for 10 years and leading teams for 3", "never led a team and have been coding for 10 years":
            # one piece per duration, cut at the last joining word between two durations (else right after the first)
            cuts = []
            for left, right in zip(found, found[1:], strict=False):
                joins = [m.start() for m in _JOIN_BETWEEN.finditer(clause, left.end, right.start)]
                cuts.append(joins[-1] if joins else left.end)
            if _NEGATED.search(clause):
                cuts += [m.start() for m in _JOIN.finditer(clause)]
            bounds = sorted({0, *cuts, len(clause)})
            pieces = [(a, clause[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
        for offset, piece in pieces:
            inside = [d for d in found if offset <= d.start and d.end <= offset + len(piece)]
            if not inside:
                entries += _never(piece)
                continue
            activity = _activity(piece, [(d.start - offset, d.end - offset) for d in inside])
            if inside[0].ago:  # "I shipped our first ML feature, a lead-scoring model, a year ago": the sentence says
                sentence = _sentence_of(text, clause)
                activity = _activity(sentence, [(m.start(), m.end()) for m in _AMOUNT.finditer(sentence)])
            if not content_words(activity):
                continue
            years = inside[0].years
            if years > MAX_YEARS:
                continue
            entries.append(Entry(activity=activity[:200], years=years, quote=piece.strip()[:400]))
    return entries


def match_years(activity: str, entries: list[Entry]) -> Entry | None:
    """The entry that states the requirement's activity (rule in the module's docstring), or None."""
    wanted_kinds = concepts_of(activity)
    wanted = content_words(activity)
    best: tuple[int, float, Entry] | None = None
    for entry in entries:
        shared = len(wanted & content_words(entry.activity))
        if wanted_kinds:
            ok = wanted_kinds <= concepts_of(entry.activity)
        else:
            ok = shared >= 2 or (shared >= 1 and len(wanted) == 1)
        if ok and (best is None or (shared, entry.years) > best[:2]):
            best = (shared, entry.years, entry)
    return best[2] if best else None
