"""Answers without a model: the retrieved passages' most relevant bullets and sentences, cited."""

from __future__ import annotations

import re
from dataclasses import dataclass

from coach.retrieval import Passage, tokenize

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


@dataclass(frozen=True)
class KeyPoint:
    """One bullet or sentence of a passage, with the 1-based number of the passage it came from."""

    text: str
    source: int
    score: float


def units(text: str) -> list[str]:
    """A passage's bullets, and the sentences of its paragraphs."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith(("- ", "* ")):
            out.append(line[2:].strip())
        else:
            out.extend(s.strip() for s in _SENTENCE.split(line) if s.strip())
    return out


def key_points(question: str, passages: list[Passage], limit: int = 4) -> list[KeyPoint]:
    """The units that share the most content words with the question, best passages first."""
    terms = set(tokenize(question))
    scored: list[KeyPoint] = []
    for rank, passage in enumerate(passages):
        heading_terms = set(tokenize(passage.label))
        for unit in units(passage.text):
            if unit.endswith(":"):
                continue  # a lead-in to a list says nothing by itself
            words = set(tokenize(unit))
            overlap = len(terms & words) + 0.5 * len(terms & heading_terms)
            # Earlier passages are more relevant; a small bonus keeps their units ahead on ties.
            scored.append(KeyPoint(unit, rank + 1, overlap + 0.3 / (rank + 1)))
    best = sorted(scored, key=lambda k: -k.score)[:limit]
    if not best:
        return []
    top = best[0].score
    kept = [k for k in best if k.score >= max(0.3, top * 0.4)]
    order = {id(k): i for i, k in enumerate(scored)}
    return sorted(kept, key=lambda k: order[id(k)])


def compose(question: str, passages: list[Passage], intro: str, limit: int = 4) -> str:
    """A short cited answer built only from the passages' own words."""
    points = key_points(question, passages, limit)
    if not points:
        return ""
    lines = [intro] + [f"- {p.text} [{p.source}]" for p in points]
    return "\n".join(lines)
