"""Evidence for an answer: the retrieved passages' most relevant bullets and sentences (key points), cited.

The key points are shown the moment retrieval ends, are the whole answer of the extractive backend, and
are the fallback when a model cannot answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from coach.retrieval import Passage, tokenize
from coach.text import split_sentences

# (question, passage, its units) -> one similarity per unit
Similarity = Callable[[str, Passage, list[str]], list[float]]


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
            out.extend(split_sentences(line))
    return out


def score_units(question: str, passages: list[Passage], similarity: Similarity | None = None) -> list[KeyPoint]:
    """Every unit of the passages with its relevance to the question, in the order of the passages.

    Without `similarity`: shared content words (the heading's count half). With it (cosine of
    embeddings): meaning first, shared words as a small bonus.
    """
    terms = set(tokenize(question))
    scored: list[KeyPoint] = []
    for rank, passage in enumerate(passages):
        heading_terms = set(tokenize(passage.label))
        texts = [u for u in units(passage.text) if not u.endswith(":")]  # a lead-in says nothing by itself
        dense = similarity(question, passage, texts) if similarity and texts else None
        for i, unit in enumerate(texts):
            overlap = len(terms & set(tokenize(unit)))
            if dense is None:
                score = overlap + 0.5 * len(terms & heading_terms) + 0.3 / (rank + 1)
            else:
                score = dense[i] + 0.15 * overlap / max(1, len(terms)) + 0.02 / (rank + 1)
            # Earlier passages are more relevant; a small bonus keeps their units ahead on ties.
            scored.append(KeyPoint(unit, rank + 1, score))
    return scored


def key_points(question: str, passages: list[Passage], limit: int = 4,
               similarity: Similarity | None = None, scored: list[KeyPoint] | None = None) -> list[KeyPoint]:
    """The units most related to the question, in the order of the passages (`scored`: score_units' result)."""
    if scored is None:
        scored = score_units(question, passages, similarity)
    best = sorted(scored, key=lambda k: -k.score)[:limit]
    if not best:
        return []
    top = best[0].score
    kept = [k for k in best if k.score >= max(0.3, top * 0.4)]
    order = {id(k): i for i, k in enumerate(scored)}
    return sorted(kept, key=lambda k: order[id(k)])


@dataclass(frozen=True)
class Evidence:
    """What retrieval found for a question: the passages shown as sources and their key points."""

    question: str  # the standalone question the passages were retrieved for
    passages: list[Passage]
    points: list[KeyPoint]
    key_facts: str  # the points as a cited list under an intro line ('' without points)
    scored: tuple[KeyPoint, ...] = ()  # every unit of the passages, scored, in passage order

    @property
    def best(self) -> KeyPoint | None:
        """The unit most like the question."""
        return max(self.points, key=lambda k: k.score, default=None)


def gather(question: str, passages: list[Passage], intro: str, similarity: Similarity | None = None,
           limit: int = 4) -> Evidence:
    """The evidence of these passages for the question (by meaning when `similarity` is given)."""
    scored = score_units(question, passages, similarity)
    points = key_points(question, passages, limit, scored=scored)
    return Evidence(question, list(passages), points, format_points(points, intro), tuple(scored))


def format_points(points: list[KeyPoint], intro: str) -> str:
    """Key points as a cited list under an intro line ('' without points)."""
    if not points:
        return ""
    return "\n".join([intro] + [f"- {p.text} [{p.source}]" for p in points])


def lead(text: str, words: int = 5) -> str:
    """A few words that name a unit: the term of a "Term: description" bullet, else its first words."""
    head, sep, _ = text.partition(":")
    if sep and 0 < len(head.split()) <= words:
        return head.strip()
    return " ".join(text.split()[:words]).rstrip(",;:.")


class UnitSimilarity:
    """Cosine similarity of a question to passage units, with each unit embedded once per process."""

    def __init__(self, embed_query: Callable[[str], list[float]],
                 embed_documents: Callable[[list[str]], list[list[float]]]) -> None:
        self._embed_query = embed_query
        self._embed_documents = embed_documents
        self._vectors: dict[str, np.ndarray] = {}
        self._question: tuple[str, np.ndarray] | None = None
        self._lock = threading.Lock()

    def prepare(self, passages: list[Passage]) -> None:
        """Embed the units and headings of these passages now (at start-up), not during a question."""
        missing = [f"{p.label}\n{u}" for p in passages for u in units(p.text)]
        missing += list(dict.fromkeys(p.label for p in passages))
        self._embed([t for t in missing if t not in self._vectors])

    def _embed(self, texts: list[str]) -> None:
        if texts:
            vectors = np.asarray(self._embed_documents(texts), dtype=np.float32)
            with self._lock:
                self._vectors.update(zip(texts, vectors, strict=True))

    def plain(self, question: str, texts: list[str]) -> list[float]:
        """Cosine similarity of a question to texts of any kind (headings, say), each embedded once."""
        self._embed([t for t in dict.fromkeys(texts) if t not in self._vectors])
        with self._lock:
            if self._question is None or self._question[0] != question:
                self._question = (question, np.asarray(self._embed_query(question), dtype=np.float32))
            query = self._question[1]
            return [float(self._vectors[t] @ query) for t in texts]

    def __call__(self, question: str, passage: Passage, texts: list[str]) -> list[float]:
        return self.plain(question, [f"{passage.label}\n{u}" for u in texts])
