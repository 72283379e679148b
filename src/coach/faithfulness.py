"""How far an answer's citations hold: the share of cited sentences (and bullets) that the passages they cite
support, and the share of figures in cited sentences that a cited passage states.

A unit (a line's sentence, or a list item) that cites [n] is supported when the passages it cites hold every
figure it states and at least SUPPORT_WORDS of its content words (retrieval.tokenize: lower case, stop words
out, plurals folded). This is the rule an outside reader applies when they click a citation; it is lexical on
purpose, so the figure is the same whoever computes it. Units that cite nothing are not counted here (an
uncited claim is the checks stage's business).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from coach.grounding import figures
from coach.retrieval import Passage, tokenize
from coach.text import CITATION, cited_numbers, split_sentences, strip_citations

SUPPORT_WORDS = 0.5  # half the content words: a paraphrase keeps about that many of its source's words


@dataclass(frozen=True)
class Faithfulness:
    """Counts for one answer (add them up over a question set)."""

    cited: int = 0  # units that cite a passage
    supported: int = 0  # of them, supported by what they cite
    figures: int = 0  # figures stated in cited units
    figures_held: int = 0  # of them, stated by a passage the unit cites

    def __add__(self, other: Faithfulness) -> Faithfulness:
        return Faithfulness(self.cited + other.cited, self.supported + other.supported,
                            self.figures + other.figures, self.figures_held + other.figures_held)


def units(text: str) -> list[str]:
    """The answer's units: each line, and within a line each sentence."""
    return [s for line in text.splitlines() for s in split_sentences(line) if s.strip()]


def supports(unit: str, cited: list[Passage], share: float = SUPPORT_WORDS) -> bool:
    """Whether the cited passages hold the unit (the rule in the module's docstring; `share` of its words)."""
    body = strip_citations(unit)
    source = "\n".join(p.quoted for p in cited)
    if not cited or not figures(body) <= figures(source):
        return False
    words, held = set(tokenize(body)), set(tokenize(source))
    return not words or len(words & held) / len(words) >= share


def measure(text: str, sources: list[Passage]) -> Faithfulness:
    """The counts of one answer whose [n] refer to sources[n - 1]."""
    total = Faithfulness()
    for unit in units(text):
        numbers = cited_numbers(unit)
        if not numbers:
            continue
        cited = [sources[n - 1] for n in dict.fromkeys(numbers) if 1 <= n <= len(sources)]
        stated = figures(strip_citations(unit))
        held = figures("\n".join(p.quoted for p in cited)) if cited else set()
        total += Faithfulness(1, int(supports(unit, cited)), len(stated), len(stated & held))
    return total


REPOINT_WORDS = 3  # content words a passage must share with a unit without figures to take its citation


def _clearly(unit: str, passage: Passage) -> bool:
    """Whether a passage holds a unit clearly enough to take its citation: a figure the unit states, or
    REPOINT_WORDS of its content words (two generic words such as "AI" and "engineering" are in most passages)."""
    body = strip_citations(unit)
    if figures(body) & figures(passage.quoted):
        return True
    return len(set(tokenize(body)) & set(tokenize(passage.quoted))) >= REPOINT_WORDS


def _share(unit: str, passage: Passage) -> float:
    words = set(tokenize(strip_citations(unit)))
    return len(words & set(tokenize(passage.quoted))) / len(words) if words else 0.0


def repoint(text: str, sources: list[Passage]) -> str:
    """The answer with each citation that its passage does not support pointed at the source that does.

    A unit whose cited passages do not hold it (`supports`) while another source alone holds it, clearly
    (`_clearly`), is given that source's number instead (the one holding most of its words when several do).
    The words are never changed; a unit no source supports keeps its citation (removing what nothing supports
    is a later stage).
    """
    out = text
    for unit in units(text):
        numbers = cited_numbers(unit)
        if not numbers:
            continue
        cited = [sources[n - 1] for n in dict.fromkeys(numbers) if 1 <= n <= len(sources)]
        if supports(unit, cited):
            continue
        holders = [(_share(unit, p), n) for n, p in enumerate(sources, 1)
                   if supports(unit, [p]) and _clearly(unit, p)]
        if not holders:
            continue
        number = max(holders)[1]
        first = CITATION.search(unit)
        assert first is not None
        rest = re.sub(r"\s*" + CITATION.pattern, "", unit[first.end():])
        out = out.replace(unit, f"{unit[:first.start()]}[{number}]{rest}", 1)
    return out
