"""Hybrid retrieval: dense (Chroma) and lexical (BM25) rankings fused by reciprocal rank -> passages."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from rank_bm25 import BM25Okapi

from coach.config import Settings
from coach.errors import CoachError
from coach.spelling import Speller
from coach.store import Index

_STOP = frozenset("""a an and are as at be been but by can could do does for from has have how i if in into
is it its me my of on or our should so than that the their them there these they this to was we what when
where which who whom why will with would you your about also any more most other such then too very just
tell give please role job""".split())
REVISION_CHECK_S = 0.5  # a library at most this old is used as it is (see HybridRetriever.library)
DOMINANCE = 1.7  # a lexical score this many times the next one's: the query quotes that passage
_WORD = re.compile(r"[a-z0-9][a-z0-9+#/.-]*[a-z0-9+#]|[a-z0-9]")


def _singular(word: str) -> str:
    """A light plural fold so that "practice" matches "practices" and "bonus" matches "bonuses"."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith(("ss", "us", "is")):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "zes", "ches", "shes")) or (word.endswith("uses") and len(word) > 6):
        return word[:-2]  # processes, boxes, matches, bonuses
    return word[:-1]  # skills, practices, courses


def tokenize(text: str) -> list[str]:
    """Lower-cased content words with a light plural/suffix fold, for BM25."""
    out = []
    for word in _WORD.findall(text.lower()):
        if word in _STOP:
            continue
        out.append(_singular(word))
    return out


@dataclass
class Passage:
    """A retrieved passage, its provenance and its scores."""

    id: str
    text: str
    section: str
    subsection: str
    source: str
    role: str
    score: float
    dense: float = 0.0
    lexical: float = 0.0
    position: int = 0  # place in its file

    @classmethod
    def from_metadata(cls, pid: str, text: str, meta: dict[str, Any], score: float = 0.0,
                      dense: float = 0.0) -> Passage:
        """A passage from what the index stores beside its vector."""
        return cls(pid, text, meta.get("section", ""), meta.get("subsection", ""), meta.get("source", ""),
                   meta.get("role", ""), score, dense=dense, position=int(meta.get("position", 0)))

    @property
    def label(self) -> str:
        """Section > Subsection."""
        return f"{self.section} > {self.subsection}" if self.subsection else self.section

    @property
    def quoted(self) -> str:
        """The label and the text: what a statement citing this passage may draw on."""
        return f"{self.label}\n{self.text}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (section, subsection, source, score, text, ...)."""
        data = asdict(self)
        data["score"] = round(self.score, 6)
        data["dense"] = round(self.dense, 4)
        data["lexical"] = round(self.lexical, 4)
        return data


@dataclass(frozen=True)
class Library:
    """Every passage of the active index in a stable order (file, then id) and the index revision it is of."""

    revision: tuple[str, str, int]
    passages: tuple[Passage, ...]


class HybridRetriever:
    """Dense + BM25 over the active index, fused with reciprocal rank fusion."""

    def __init__(self, index: Index, candidates: int = 20, rrf_k: int = 60, min_relevance: float = 0.22,
                 lexical_weight: float = 0.5, role: str | None = None) -> None:
        self.index = index
        self.role = role  # None: every passage of the index; else only this role's
        self.candidates = candidates
        self.rrf_k = rrf_k
        self.min_relevance = min_relevance
        self.lexical_weight = lexical_weight
        self._lock = threading.Lock()
        self._loaded: tuple[str, str, int] | None = None
        self._ids: list[str] = []
        self._docs: list[str] = []
        self._metas: list[dict[str, Any]] = []
        self._bm25: BM25Okapi | None = None
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._library: Library | None = None
        self._speller: Speller | None = None
        self._roles: tuple[str, ...] = ()
        self._checked = 0.0  # when the index's revision was last looked at
        self._writes = -1  # the index's write count then
        self._scoped: dict[str | None, HybridRetriever] = {}

    @property
    def embedder(self) -> Any:
        """The embedding model of the index (the key points reuse it)."""
        return self.index.embedder

    def count(self) -> int:
        """Passages in the active index (0 when there is none), of this retriever's role when it has one."""
        total = self.index.count()  # raises when the index is damaged or unreachable
        return total if self.role is None or not total else len(self.library().passages)

    def roles(self) -> tuple[str, ...]:
        """The roles the index holds, in the order of their files (the first is the default role)."""
        if self._loaded is None:
            self._refresh()
        return self._roles

    def scoped(self, role: str | None) -> HybridRetriever:
        """A retriever over one role's passages of the same index (this one when the role is its own)."""
        if role == self.role:
            return self
        with self._lock:
            if role not in self._scoped:
                self._scoped[role] = HybridRetriever(self.index, self.candidates, self.rrf_k, self.min_relevance,
                                                     self.lexical_weight, role)
            return self._scoped[role]

    def library(self) -> Library:
        """Every passage of the index as it is now: reloaded when its revision changed (a re-read knowledge
        folder, another instance's sync), looked at no more than every REVISION_CHECK_S (a look costs a few
        milliseconds, and one question asks for the library several times)."""
        if (self._library is None or self.index.writes != self._writes
                or time.monotonic() - self._checked >= REVISION_CHECK_S):
            try:
                self._refresh()
            except CoachError:
                if self._library is None:
                    raise
                # The index went away mid-answer: the answer goes on from what is loaded; the next search says so.
        assert self._library is not None
        return self._library

    def _refresh(self) -> None:
        """(Re)load the lexical index when the active collection changed (another instance may sync)."""
        writes = self.index.writes
        key = self.index.revision()
        self._checked, self._writes = time.monotonic(), writes
        with self._lock:
            if key == self._loaded:
                return
            _, ids, docs, metas = self.index.all_passages()
            self._roles = tuple(dict.fromkeys(str(m.get("role", ""))
                                              for m in sorted(metas, key=lambda m: str(m.get("source", "")))))
            if self.role is not None:
                keep = [i for i, m in enumerate(metas) if m.get("role", "") == self.role]
                ids, docs, metas = [ids[i] for i in keep], [docs[i] for i in keep], [metas[i] for i in keep]
                # Caches keyed by the library's revision (the card, the prompt prefix) must tell roles apart.
                revision = (key[0], f"{key[1]}|{self.role}", len(ids))
            else:
                revision = key
            corpus = [tokenize(f"{m.get('heading_path', '')} {d}") for d, m in zip(docs, metas, strict=True)]
            self._ids, self._docs, self._metas = ids, docs, metas
            self._bm25 = BM25Okapi(corpus) if corpus else None
            self._postings = _postings(corpus)
            order = sorted(range(len(ids)), key=lambda i: (metas[i].get("source", ""), ids[i]))
            self._library = Library(revision, tuple(Passage.from_metadata(ids[i], docs[i], metas[i]) for i in order))
            # Without a word list a real word the knowledge base lacks ("rule") would be "corrected" ("role").
            words = getattr(self.index.embedder, "words", None)
            self._speller = Speller([*docs, *(m.get("heading_path", "") for m in metas)], words(),
                                    _singular) if callable(words) else None
            self._loaded = key

    def correct(self, query: str) -> str:
        """The query with words that neither the knowledge base nor the word list knows corrected (spelling.py),
        against the vocabulary of the last search (loaded now if there was none, as `library`)."""
        if self._loaded is None:
            self._refresh()
        return self._speller.correct(query) if self._speller is not None else query

    def lexical(self, query: str, n: int) -> list[tuple[int, float]]:
        """(position, BM25 score) of the n best lexical matches with a positive score."""
        self._refresh()
        terms = tokenize(query)
        if not terms or self._bm25 is None:
            return []
        scores = self._scores(terms)
        n = min(n, len(scores))
        top = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        order = sorted(top.tolist(), key=lambda i: -scores[i])
        return [(i, float(scores[i])) for i in order if scores[i] > 0]

    def _scores(self, terms: list[str]) -> np.ndarray:
        """BM25 scores of every passage, from postings (rank_bm25's own loop visits every passage per term)."""
        bm25 = self._bm25
        assert bm25 is not None
        scores = np.zeros(len(self._ids))
        norm = bm25.k1 * (1 - bm25.b + bm25.b * np.asarray(bm25.doc_len) / bm25.avgdl)
        for term in terms:
            if term not in self._postings:
                continue
            where, tf = self._postings[term]
            scores[where] += bm25.idf.get(term, 0.0) * tf * (bm25.k1 + 1) / (tf + norm[where])
        return scores

    def warm(self) -> None:
        """Load the lexical index now rather than on the first question."""
        self._refresh()

    def search(self, query: str, k: int = 4, mode: Literal["hybrid", "dense"] = "hybrid") -> list[Passage]:
        """The k best passages for query, best first."""
        dense = self.index.query(query, self.candidates, self.role)
        fused: dict[str, float] = {}
        info: dict[str, Passage] = {}
        for rank, hit in enumerate(dense):
            fused[hit.id] = 1.0 / (self.rrf_k + rank + 1)
            info[hit.id] = Passage.from_metadata(hit.id, hit.text, hit.metadata, dense=hit.similarity)
        if mode == "hybrid":
            for rank, (pos, score) in enumerate(self.lexical(query, self.candidates)):
                cid = self._ids[pos]
                fused[cid] = fused.get(cid, 0.0) + self.lexical_weight / (self.rrf_k + rank + 1)
                if cid not in info:
                    info[cid] = Passage.from_metadata(cid, self._docs[pos], self._metas[pos])
                info[cid].lexical = score
        ranked = sorted(fused, key=lambda c: -fused[c])
        ranked = self._quoted_first(query, ranked, fused, info) if mode == "hybrid" else ranked
        out = []
        for cid in ranked[:k]:
            passage = info[cid]
            passage.score = fused[cid]
            out.append(passage)
        return out

    def _quoted_first(self, query: str, ranked: list[str], fused: dict[str, float],
                      info: dict[str, Passage]) -> list[str]:
        """Rank fusion ignores margins: a passage whose words the query repeats far more than any other's (BM25
        DOMINANCE times the next) is kept at the second place at least, even when its meaning ranks it low."""
        top = self.lexical(query, 2)
        if not top or (len(top) == 2 and top[0][1] < DOMINANCE * top[1][1]):
            return ranked
        cid = self._ids[top[0][0]]
        if cid in ranked[:2]:
            return ranked
        if cid not in info:
            info[cid] = Passage.from_metadata(cid, self._docs[top[0][0]], self._metas[top[0][0]])
            info[cid].lexical = top[0][1]
        rest = [c for c in ranked if c != cid]
        fused[cid] = (fused[rest[0]] + fused[rest[1]]) / 2 if len(rest) > 1 else fused[rest[0]]
        return rest[:1] + [cid] + rest[1:]

    def covered(self, passages: list[Passage]) -> bool:
        """Whether the knowledge base has something relevant: a close enough dense match."""
        return any(p.dense >= self.min_relevance for p in passages)


def _postings(corpus: list[list[str]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """term -> (positions of the passages containing it, its frequency in each)."""
    lists: dict[str, tuple[list[int], list[int]]] = {}
    for pos, words in enumerate(corpus):
        for term, count in Counter(words).items():
            where, tf = lists.setdefault(term, ([], []))
            where.append(pos)
            tf.append(count)
    return {t: (np.array(w, dtype=np.int64), np.array(f, dtype=np.float64)) for t, (w, f) in lists.items()}


def build_retriever(index: Index, settings: Settings) -> HybridRetriever:
    """A retriever tuned by the settings."""
    return HybridRetriever(index, settings.candidates, settings.rrf_k, settings.min_relevance,
                           settings.lexical_weight)
