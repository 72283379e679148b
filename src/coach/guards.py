"""Safety around the model: injection attempts, prompt leaks, citation numbering, figures while streaming."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from coach import grounding
from coach.text import CITATION, boundaries

INJECTION = re.compile(
    r"(ignore|disregard|forget|override|bypass)\b.{0,30}\b(previous|prior|above|earlier|preceding|all|your|the|"
    r"these|those|any)\b.{0,20}\b(instructions|rules|prompts?|guidelines|directions|restrictions)"
    r"|(reveal|show|print|repeat|output|tell me|give me|display|leak|dump|share|recite)\b.{0,40}"
    r"\b(your|the|hidden|secret|initial|original|internal)\s+(system\s+)?(prompt|instructions|rules|guidelines)"
    r"|\b(what|which) (is|are|were) your (system prompt|instructions|rules|hidden|secret)"
    r"|(pretend|imagine|act as if|behave as if)\b.{0,30}\b(you )?(have|had) no (rules|restrictions|guidelines|limits)"
    r"|\byou are (now|no longer)\s+(an?|the|my|unrestricted|unfiltered|free|DAN)\b"
    r"|developer mode|(?-i:\bDAN\b)|act as (an? )?(unrestricted|unfiltered|jailbroken)",
    re.IGNORECASE,
)
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”")


def looks_like_injection(question: str) -> bool:
    """Whether the question tries to change or reveal the coach's instructions."""
    return bool(INJECTION.search(question))


def secret_ngrams(templates: Iterable[str], window: int = 6) -> set[str]:
    """Word n-grams of the prompts' own wording: variables and the phrases the model is told to say left out."""
    grams: set[str] = set()
    for template in templates:
        for piece in re.split(r"\$\{?\w+\}?", _QUOTED.sub(" | ", template)):
            for part in piece.split("|"):
                words = re.findall(r"\w+", part.lower())
                grams |= {" ".join(words[i:i + window]) for i in range(len(words) - window + 1)}
    return grams


def leaks(text: str, grams: set[str], window: int = 6) -> bool:
    """Whether text repeats `window` consecutive words of the secret prompts."""
    said = re.findall(r"\w+", text.lower())
    return any(" ".join(said[i:i + window]) in grams for i in range(len(said) - window + 1))


class Citations:
    """Renumbers [n] citations while the answer streams, from the model's numbering to the sources' order."""

    def __init__(self, mapping: dict[int, int], extra: Callable[[int], int | None]) -> None:
        self.mapping = dict(mapping)
        self.extra = extra  # called with an unknown model number; returns a display number or None
        self.buffer = ""

    def _convert(self, match: re.Match[str]) -> str:
        shown: list[int] = []
        for raw in re.split(r"\s*[,;]\s*", match.group(1)):
            number = self.mapping.get(int(raw))
            if number is None:
                number = self.extra(int(raw))
                if number is not None:
                    self.mapping[int(raw)] = number
            if number is not None and number not in shown:
                shown.append(number)
        return "".join(f"[{n}]" for n in shown)

    def feed(self, text: str) -> str:
        """Text that is safe to show now (an open bracket is held back until it closes)."""
        self.buffer += text
        cut = self.buffer.rfind("[")
        if cut >= 0 and "]" not in self.buffer[cut:] and len(self.buffer) - cut < 16:
            ready, self.buffer = self.buffer[:cut], self.buffer[cut:]
        else:
            ready, self.buffer = self.buffer, ""
        return CITATION.sub(self._convert, ready)

    def flush(self) -> str:
        """Whatever is still held back."""
        ready, self.buffer = self.buffer, ""
        return CITATION.sub(self._convert, ready)


class StreamGuard:
    """Lets model text through only once it is known to be safe to show.

    - A sentence that states a figure is held until it ends; if the figure is not in the sources, the
      sentence is dropped (and the figure recorded), so an invented number never reaches the screen.
    - Everything said so far is checked for a run of `window` words of the system prompt before any of
      it is shown, so on a leak the stream stops before the run is complete on screen (at most
      `window - 1` words of it were shown, and the final check replaces the answer). Ordinary text is
      not delayed, not even its first word: holding words that might start such a run cost the first
      token about 0.1 s on the local model.
    """

    def __init__(self, source_text: str, secret: set[str], window: int = 6) -> None:
        self.source_figures = grounding.figures(source_text)
        self.secret = secret
        self.window = window
        self.pending = ""
        self.said = ""  # everything the model said (for the leak check), shown or not
        self.removed: set[str] = set()
        self.leaked = False

    def add_source(self, text: str) -> None:
        """A passage the answer cites that was not among the retrieved ones."""
        self.source_figures |= grounding.figures(text)

    def _bad_figures(self, sentence: str) -> set[str]:
        return grounding.figures(sentence) - self.source_figures

    def feed(self, text: str) -> str:
        """Add model text; return what may be shown now ('' when holding; stop when self.leaked)."""
        self.said += text
        if leaks(self.said, self.secret, self.window):
            self.leaked = True
            self.pending = ""
            return ""
        self.pending += text
        out = []
        # Complete sentences: show or drop.
        while True:
            end = next(boundaries(self.pending), None)
            # A sentence is judged once the next word has come: a citation right after its full stop
            # ("... $150,000. [38]") belongs to it and may bring the passage that grounds its figure.
            if end is None or (not self.pending[end:].strip() and not self.pending[:end].endswith("\n")):
                break
            sentence, self.pending = self.pending[:end], self.pending[end:]
            out.append(self._release(sentence))
        # The unfinished sentence: held whole once it has started a figure, else shown.
        if not re.search(r"\d", self.pending):
            out.append(self.pending)
            self.pending = ""
        return "".join(out)

    def _release(self, sentence: str) -> str:
        bad = self._bad_figures(sentence)
        if bad:
            self.removed |= bad
            return "\n" if sentence.endswith("\n") else ""
        return sentence

    def flush(self) -> str:
        """The rest, at the end of the answer, judged sentence by sentence."""
        rest, self.pending = self.pending, ""
        if self.leaked:
            return ""
        out, start = [], 0
        for end in [*boundaries(rest), len(rest)]:
            if end > start:
                out.append(self._release(rest[start:end]))
                start = end
        return "".join(out)
