"""A spelling pass for queries, against the knowledge base's own vocabulary.

"ai mngr salry rnge for senior lvl??" retrieves nothing useful as written. A word that is neither in the
knowledge base nor a known English word (the embedding model's word list) is replaced by the knowledge base's
word it most plausibly stands for: one or two edits away ("salry" -> salary, "rnge" -> range), or its consonant
skeleton, as in a common abbreviation ("mngr" -> manager, "lvl" -> level). Known words are never changed, so a
question about Germany stays about Germany.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable

# A word with its accents (precomposed or combining): only a word in plain ASCII letters is ever corrected.
_WORD = re.compile(r"[A-Za-z\u00c0-\u024f\u0300-\u036f]+")
_VOWELS = re.compile(r"[aeiouy]")


def skeleton(word: str) -> str:
    """The word's consonants with repeats collapsed, the first letter always kept ("manager" -> mngr)."""
    rest = _VOWELS.sub("", word[1:])
    out = word[0]
    for char in rest:
        if char != out[-1]:
            out += char
    return out


def distance(a: str, b: str, limit: int) -> int:
    """Edit distance with transpositions (optimal string alignment), or limit + 1 once it exceeds limit."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], prev2[j - 2] + 1)
        if min(row) > limit:
            return limit + 1
        prev2, prev = prev, row
    return prev[-1]


def _subsequence(short: str, long: str) -> bool:
    it = iter(long)
    return all(char in it for char in short)


class Speller:
    """Corrects the words of a query that the knowledge base and the word list both do not know."""

    def __init__(self, texts: Iterable[str], known: Iterable[str] = (),
                 fold: Callable[[str], str] = lambda word: word) -> None:
        """`texts`: the knowledge base; `known`: a word list; `fold`: a word's base form ("ranges" -> range),
        which the knowledge base is taken to know as well."""
        words = [w.lower() for text in texts for w in _WORD.findall(text) if w.isascii()]
        self.counts: Counter[str] = Counter(words)
        self.counts.update(fold(w) for w in words if fold(w) != w)
        self.known = frozenset(w.lower() for w in known) | frozenset(self.counts)
        self._by_letter: dict[str, list[str]] = {}
        for word in self.counts:
            if len(word) >= 3:
                self._by_letter.setdefault(word[0], []).append(word)

    def suggest(self, word: str) -> str | None:
        """The knowledge base's word this unknown word stands for (None when it is known or nothing fits)."""
        low = word.lower()
        if len(low) < 3 or low in self.known:
            return None
        limit = 1 if len(low) <= 5 else 2
        shape = skeleton(low)
        best: tuple[int, int, str] | None = None
        for candidate in self._by_letter.get(low[0], ()):
            cost = distance(low, candidate, limit)
            if cost > limit and not (len(shape) >= 3 and shape == skeleton(candidate)
                                     and _subsequence(low, candidate)):
                continue
            key = (min(cost, limit + 1), -self.counts[candidate], candidate)
            if best is None or key < best:
                best = key
        return best[2] if best else None

    def correct(self, text: str) -> str:
        """The text with its unknown words corrected (unchanged when every word is known)."""
        def fix(match: re.Match[str]) -> str:
            word = match.group()
            better = self.suggest(word) if word.isascii() else None
            if better is None:
                return word
            return better.capitalize() if word[0].isupper() else better
        return _WORD.sub(fix, text)
