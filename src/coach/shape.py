"""The answer's shape: what a complete answer to a question must hold, read from the knowledge base's own structure.

- A question about a list as a whole ("Which benefits come on top of the salary?", "List the soft skills") gets
  every item of that list, even where the list runs over several passages.
- A question that names items ("a Director of AI Engineering or a Chief AI Officer?") gets each named item.
- A question in several parts ("What is the next step up, and what does it pay?") gets the best unit of each part.
- Any other question gets at least the unit of the knowledge base most like it: a concrete sentence of the
  passage beats a generic one.

The model writes the answer (for a whole list only its lead: the items come from the passage itself);
`missing()` then names the units the model's words did not cover, and they are appended in the passage's own
words, cited. The rules read only the question, the retrieved evidence and the knowledge base's headings and
bullets, never a particular question.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from coach.extractive import KeyPoint, Similarity, units
from coach.grounding import figures
from coach.retrieval import Library, Passage, tokenize
from coach.text import split_sentences

Kind = Literal["list", "items", "parts", "free"]
Headings = Callable[[str, list[str]], list[float]]  # (question, heading paths) -> similarity of each

# Words that ask for a whole list whatever its heading: "list", "all", "every", "the ten ...".
_LIST_CUE = re.compile(r"\b(list|all|every|each|enumerate|two|three|four|five|six|seven|eight|nine|ten|eleven|"
                       r"twelve)\b", re.IGNORECASE)
# Where a question asks a second thing: "..., and what does it pay?", "...? And how ...", "...; ..."
_PART_BREAK = re.compile(r"\?\s+(?=\S)|;\s+|,?\s+\band\s+(?=(?:what|how|which|who|where|when|why|is|are|does|do|"
                         r"can|should|by)\b)", re.IGNORECASE)
_PRONOUN = re.compile(r"\b(it|its|they|them|their|that|this|those|these|one)\b", re.IGNORECASE)
_QUESTION_WORDS = frozenset("much many long big large often far more less".split())
_NAME = re.compile(r"[^\W\d_][\w'-]*")
_PLACE = re.compile(r"\b(?:in|at|for|from|within|across|inside|outside|with|like)\s+(?:the\s+)?([A-Z][\w'-]*)")
_HEAD = re.compile(r"^([^:]{2,60}):\s+\S")  # the term of a "Term: description" bullet
CLOSE = 3  # a list is asked for by name when its heading is among this many closest to the question
TIE = 0.01  # units this close in score are equally good answers
NEAR = 0.08  # a unit this close to the best one is as good an answer
COVERED = 0.6  # share of a unit's content words an answer must hold to cover it
GENERIC = 0.3  # a term in more than this share of passages names nothing in particular ("ai", "manager")


def terms(text: str) -> list[str]:
    """Content words, hyphenated and slashed words split ("entry-level" -> entry, level)."""
    return tokenize(re.sub(r"[-/]", " ", text))


def related(a: str, b: str) -> bool:
    """Same word, or one word's family ("mentoring" ~ "mentorship", "strategic" ~ "strategy")."""
    if a == b:
        return True
    shortest = min(len(a), len(b))
    if shortest < 5:
        return False
    common = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        common += 1
    return common >= max(5, shortest - 3)


def _shares(words: Iterable[str], others: Iterable[str]) -> list[str]:
    others = list(others)
    return [w for w in words if any(related(w, o) for o in others)]


@dataclass(frozen=True, eq=False)
class Unit:
    """One bullet or sentence of the knowledge base and the passage it is in."""

    text: str
    passage: Passage
    bullet: bool = True

    @property
    def head(self) -> str:
        """The term of a "Term: description" bullet ('' for other units)."""
        match = _HEAD.match(self.text)
        return match.group(1).strip() if match and len(match.group(1).split()) <= 6 else ""


@dataclass(frozen=True, eq=False)
class Block:
    """A list in the knowledge base: its heading, the line leading into it and its items (over passages)."""

    label: str
    heading: str
    intro: str
    items: tuple[Unit, ...]


@dataclass(frozen=True)
class Shape:
    """What a complete answer holds: the units it must cover, and whether the model writes only the lead."""

    kind: Kind
    must: tuple[Unit, ...] = ()
    block: Block | None = None

    @property
    def lead_only(self) -> bool:
        """The model introduces the list; its items come from the passage."""
        return self.kind == "list"


class Structure:
    """The lists of a library and the words that say nothing in particular in it (made once per revision)."""

    def __init__(self, library: Library) -> None:
        self.revision = library.revision
        self.blocks = tuple(_blocks(library.passages))
        df: Counter[str] = Counter()
        for p in library.passages:
            df.update(set(terms(p.quoted)))
        n = max(1, len(library.passages))
        self.generic = frozenset(t for t, c in df.items() if c / n > GENERIC)
        self._by_unit = {(item.passage.id, item.text): block for block in self.blocks for item in block.items}
        self.vocabulary = frozenset(w.lower() for p in library.passages for w in _NAME.findall(p.quoted))

    def unknown_names(self, question: str) -> list[str]:
        """Names the question asks about that the knowledge base never mentions: a capitalised word after "in",
        "at", "for" and the like ("in Germany", "at Acme"), found in no passage."""
        found = []
        for match in _PLACE.finditer(question):
            word = match.group(1)
            if len(word) > 2 and word.lower() not in self.vocabulary:
                found.append(word)
        return list(dict.fromkeys(found))

    def block_of(self, passage: Passage, text: str) -> Block | None:
        """The list a unit is an item of."""
        return self._by_unit.get((passage.id, text))

    def specific(self, words: Iterable[str]) -> list[str]:
        """The words that are not generic in this knowledge base."""
        return [w for w in words if w not in self.generic]


def _blocks(passages: Iterable[Passage]) -> list[Block]:
    """Every run of bullets in the knowledge base, a run continued across the passages of one heading."""
    groups: dict[tuple[str, str, str], list[Passage]] = {}
    for p in passages:
        groups.setdefault((p.source, p.section, p.subsection), []).append(p)
    out: list[Block] = []
    for group in groups.values():
        group.sort(key=lambda p: p.position)
        intro, items = "", []
        for passage in group:
            for line in passage.text.splitlines():
                line = line.strip()
                if not line:
                    continue
                if line.startswith(("- ", "* ")):
                    items.append(Unit(line[2:].strip(), passage))
                    continue
                if items:
                    out.append(_block(group[0], intro, items))
                    items = []
                intro = line
        if items:
            out.append(_block(group[0], intro, items))
    return out


def _block(first: Passage, intro: str, items: list[Unit]) -> Block:
    return Block(first.label, first.subsection or first.section, intro, tuple(items))


def parts(question: str) -> list[str]:
    """The questions inside a question; a part with no content word of its own joins the one before."""
    out: list[str] = []
    for piece in _PART_BREAK.split(question.strip()):
        piece = piece.strip(" ,;?")
        if not piece:
            continue
        if out and not [w for w in terms(piece) if w not in _QUESTION_WORDS]:
            out[-1] = f"{out[-1]} {piece}"
        else:
            out.append(piece)
    return out


def decide(question: str, scored: Iterable[KeyPoint], passages: list[Passage], structure: Structure,
           similarity: Similarity | None = None, headings: Headings | None = None) -> Shape:
    """The shape of the answer to a question, from its evidence (every unit of its passages, scored).

    `headings` (question, heading paths -> similarities) ranks the knowledge base's headings by meaning; without
    it a list is chosen by the words of its heading alone.
    """
    points = [k for k in scored if 0 < k.source <= len(passages)]
    if not points:
        return Shape("free")
    asked = structure.specific(terms(question))
    best = max(points, key=lambda k: k.score)
    found = [_unit(k.text, passages[k.source - 1]) for k in points]

    heads = {id(u): structure.specific(terms(u.head)) for u in found}
    scores = {id(u): k.score for u, k in zip(found, points, strict=True)}
    near = [u for u, k in zip(found, points, strict=True) if k.score >= best.score - NEAR]
    named = [u for u in near if u.head and _names(u, heads[id(u)], asked, structure)]
    cue = bool(_LIST_CUE.search(question))
    block = _asked_block(question, asked, cue, found, scores, best.score, structure, headings)
    if block is not None and (cue or not named or _outside(block, named, found, scores)):
        return Shape("list", block.items, block)
    if named:
        return Shape("items", _unique(named))
    if cue:
        items = [u for u in sorted(found, key=lambda u: -scores[id(u)]) if structure.block_of(u.passage, u.text)]
        top = structure.block_of(items[0].passage, items[0].text) if items else None
        if top is not None and len(top.items) > 2:
            return Shape("list", top.items, top)

    questions = parts(question)
    if len(questions) > 1 and similarity is not None:
        chosen = []
        for i, part in enumerate(questions):
            own = [w for w in terms(part) if w not in _QUESTION_WORDS]
            query = question if i and (_PRONOUN.search(part) or len(own) < 2) else part
            chosen.append(_best_unit(query, passages, similarity))
        must = _unique(u for u in chosen if u is not None)
        if len(must) > 1:
            return Shape("parts", must)
    # The unit most like the question (and any as good), when it shares a word with it: a concrete sentence of
    # the passage beats a generic one.
    ties = [u for u, k in zip(found, points, strict=True) if k.score >= best.score - TIE]
    return Shape("free", _unique(u for u in ties[:3] if _shares(asked, structure.specific(terms(u.text)))))


def _unit(text: str, passage: Passage) -> Unit:
    """A unit of a passage, a bullet or a sentence of a paragraph as it is there."""
    bullet = any(line.strip()[2:].strip() == text for line in passage.text.splitlines()
                 if line.strip().startswith(("- ", "* ")))
    return Unit(text, passage, bullet)


def _unique(found: Iterable[Unit]) -> tuple[Unit, ...]:
    seen: dict[tuple[str, str], Unit] = {}
    for unit in found:
        seen.setdefault((unit.passage.id, unit.text), unit)
    return tuple(seen.values())


def _names(unit: Unit, head: list[str], asked: list[str], structure: Structure) -> bool:
    """Whether a question names an item by its term: a word that sets it apart in its list, and more than half of
    the term's words ("Chief AI Officer" is named by "chief officer", not by "officer"; a hyphenated word counts
    once, so "human skills" names "Human-Centered Skills")."""
    groups = [g for g in (structure.specific(terms(word)) for word in re.split(r"[\s/]+", unit.head)) if g]
    if not head or not groups:
        return False
    hits = _shares(head, asked)
    block = structure.block_of(unit.passage, unit.text)
    others = [w for item in (block.items if block else ()) if item is not unit and item.text != unit.text
              for w in terms(item.head)]
    own = [w for w in hits if not any(related(w, o) for o in others)]
    named = [g for g in groups if _shares(g, asked)]
    return bool(own) and len(named) * 2 > len(groups)


def _asked_block(question: str, asked: list[str], cue: bool, found: list[Unit], scores: dict[int, float],
                 best: float, structure: Structure, headings: Headings | None) -> Block | None:
    """The list whose heading the question names: its heading shares a specific word with the question, and it is
    among the CLOSE headings closest in meaning to the question (or, on a list cue, holds a unit near the best one).
    Any list of the knowledge base qualifies, retrieved or not: a heading can name what retrieval missed."""
    near = {u.passage.label for u in found if scores[id(u)] >= best - NEAR}
    own = {u.passage.label: max(scores[id(v)] for v in found if v.passage.label == u.passage.label) for u in found}
    labels = list(dict.fromkeys(b.label for b in structure.blocks))
    meaning = dict(zip(labels, headings(question, labels), strict=True)) if headings and labels else {}
    close = set(sorted(meaning, key=lambda label: -meaning[label])[:CLOSE])
    chosen: tuple[tuple[int, bool, float, int, float], Block] | None = None
    for block in structure.blocks:
        if len(block.items) < 2:
            continue
        hits = len(_shares(structure.specific(terms(block.heading)), asked))
        holds_best = own.get(block.label, -1.0) >= best
        if not hits or not (block.label in close or holds_best or ((cue or not meaning) and block.label in near)):
            continue
        said = len(_shares(asked, structure.specific(terms(" ".join(u.text for u in block.items)))))
        rank = (hits, holds_best, meaning.get(block.label, 0.0), said, own.get(block.label, -1.0))
        if chosen is None or rank > chosen[0]:
            chosen = (rank, block)
    return chosen[1] if chosen else None


def _outside(block: Block, named: list[Unit], found: list[Unit], scores: dict[int, float]) -> bool:
    """Whether the named items lie outside the named list and are no better an answer than its own units."""
    inside = {(i.passage.id, i.text) for i in block.items}
    if any((u.passage.id, u.text) in inside for u in named):
        return False
    own = max((scores[id(u)] for u in found if u.passage.label == block.label), default=-1.0)
    return max(scores[id(u)] for u in named) <= own + NEAR / 2


def _best_unit(query: str, passages: list[Passage], similarity: Similarity) -> Unit | None:
    best: tuple[float, Unit] | None = None
    for passage in passages:
        texts = [u for u in units(passage.text) if not u.endswith(":")]
        if not texts:
            continue
        for text, score in zip(texts, similarity(query, passage, texts), strict=True):
            if best is None or score > best[0]:
                best = (score, _unit(text, passage))
    return best[1] if best else None


def covers(answer: str, unit: Unit) -> bool:
    """Whether an answer already says what a unit says: its figures and most of its content words."""
    if not figures(unit.text) <= figures(answer):
        return False
    want = {w for w in terms(unit.text) if not w[0].isdigit()}  # numbers: compared as figures above
    if not want:
        return True
    said = set(terms(answer))
    return len(_shares(want, said)) >= COVERED * len(want)


def missing(answer: str, shape: Shape) -> list[Unit]:
    """The units of the shape that the answer does not cover yet, in order."""
    return [u for u in shape.must if not covers(answer, u)]


class Shaper:
    """Decides answer shapes for one coach: the library's structure kept per index revision."""

    def __init__(self, similarity: Similarity | None = None, headings: Headings | None = None) -> None:
        self.similarity = similarity
        self.headings = headings
        self._structure: Structure | None = None

    def structure(self, library: Library) -> Structure:
        """The lists and generic words of this library (made once per revision)."""
        if self._structure is None or self._structure.revision != library.revision:
            self._structure = Structure(library)
        return self._structure

    def decide(self, question: str, scored: Iterable[KeyPoint], passages: list[Passage], library: Library) -> Shape:
        """The shape of the answer to question (see `decide`)."""
        return decide(question, scored, passages, self.structure(library), self.similarity, self.headings)


def qualified(answer: str, names: list[str], source: Passage | None) -> str:
    """An answer to a question about something the knowledge base never mentions: a first sentence says so and
    where what follows comes from, and the model's sentences that attribute anything to it are left out."""
    mentions = re.compile("|".join(rf"\b{re.escape(n)}\b" for n in names), re.IGNORECASE)
    kept = []
    for line in answer.splitlines():
        sentences = [s for s in split_sentences(line) if not mentions.search(s)] if mentions.search(line) else [line]
        if sentences:
            kept.append(" ".join(sentences))
    where = f"; what it says comes from {source.section}" if source is not None else ""
    note = f"The knowledge base does not cover {', '.join(names)}{where}."
    rest = "\n".join(kept).strip()
    return f"{note}\n\n{rest}" if rest else note
