"""The checks stage: model text made safe to show while it streams, then the finished answer checked.

While streaming, citations are renumbered to the order of the sources shown and every sentence passes
the stream guard (no invented figure, no run of the system prompt). At the end, the whole text is
checked once more: a leak becomes the refusal, an answer of invented figures becomes the key points,
a sentence that cites nothing gets the passage it came from.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from coach import faithfulness, grounding
from coach.guards import Citations, StreamGuard, leaks
from coach.prompting import Prompt
from coach.retrieval import Passage
from coach.shape import Shape, missing
from coach.text import CITATION, is_list_item, strip_citations

DECLINE = re.compile(
    r"(does not|doesn't|do not|don't|cannot|can't) (cover|contain|mention|include|say|provide|answer)"
    r"|not (covered|mentioned|included|available|provided) in|no information (about|on)",
    re.IGNORECASE,
)


def grounding_text(topics: str, sources: list[Passage]) -> str:
    """What an answer's figures may come from: its sources and the topic list the prompt offers.

    The model is told to repeat the topics, so their "2024" is no invention. The stream guard and the
    final check both use this, so they agree on what is grounded.
    """
    return topics + "\n" + "\n".join(p.quoted for p in sources)


_PATH = re.compile(r"^[^.!?\n]+\s>\s[^.!?\n]+$")  # "Market Demand > Challenges and Considerations"
_MARKS = re.compile(r"^[\s#*>:-]*(?:\[\s*\d+\s*\]\s*)?|[\s*:]+$")
_CITED = re.compile(r"\[\s*\d+(?:\s*[,;]\s*\d+)*\s*\]$")


class Scaffolding:
    """Drops what copies the prompt's layout instead of answering: a passage's number and heading path
    ("[5] Market Demand > Challenges and Considerations"), on a line of its own or right after a citation, and a
    bare heading of the knowledge base on a line of its own.

    Text is held back only while it could still be one of these (a line's start, or what follows a citation,
    that is so far the beginning of a heading); a line that starts like a sentence passes at once, so the
    first words are not delayed.
    """

    def __init__(self, labels: Iterable[str]) -> None:
        names: set[str] = set()
        for label in labels:
            names.add(label.lower())
            names.update(part.strip().lower() for part in label.split(">"))
        self.names = {n for n in names if n}
        self.held = ""  # text that may be scaffolding
        self.where: str | None = "line"  # held at a line's start ("line"), after a citation ("after"), or passing
        self.recent = ""  # the last characters let through, to see a citation end

    @staticmethod
    def _core(text: str) -> str:
        return _MARKS.sub("", text).strip().lower()

    def _maybe(self) -> bool:
        """Whether the held text may still turn out to be scaffolding."""
        stripped = self.held.lstrip()
        if self.where == "line" and re.match(r"[#*]|\[\s*(\d|$)", stripped):
            return not re.search(r"[.!?]\s", stripped) and len(stripped) < 160
        core = self._core(self.held)
        return not core or any(name.startswith(core) for name in self.names) or self._headed(core)

    def _headed(self, core: str) -> bool:
        """A heading path that starts with a heading of the knowledge base ("industry trends > ...")."""
        head, sep, _ = core.partition(">")
        return bool(sep) and head.strip() in self.names and not re.search(r"[.!?]", core)

    def _is(self, text: str) -> bool:
        core = self._core(text)
        if not core:
            return False
        if core in self.names:
            return self.where == "line" or text.strip()[:1] not in ".,;"
        if self._headed(core):
            return True
        path = re.match(r"\s*\[\s*\d+\s*\]\s*(.*)$", text) if self.where == "line" else None
        return bool(path and _PATH.match(path.group(1).strip()))

    def _release(self, text: str) -> str:
        self.recent = (self.recent + text)[-24:]
        return text

    def feed(self, piece: str) -> str:
        """The text that may pass now."""
        out = []
        for char in piece:
            if self.where is None:
                out.append(self._release(char))
                if char == "\n":
                    self.where = "line"
                elif char == "]" and _CITED.search(self.recent):
                    self.where = "after"
                continue
            self.held += char
            if char == "\n":
                body = self.held[:-1]
                if body.strip() and self._is(body):
                    self.held = "" if self.where == "line" else "\n"  # a line of its own goes with its break
                out.append(self._release(self.held))
                self.held, self.where = "", "line"
            elif not self._maybe():
                out.append(self._release(self.held))
                self.held = ""
                self.where = "after" if _CITED.search(self.recent) else None
        return "".join(out)

    def flush(self) -> str:
        """The held text, unless it is scaffolding."""
        held, self.held = self.held, ""
        return "" if held.strip() and self._is(held) else held


class StreamChecks:
    """Model pieces in, text safe to show out; the sources grow when the model cites a passage not shown yet."""

    def __init__(self, prompt: Prompt, sources: list[Passage], topics: str, secret: set[str]) -> None:
        self.sources = list(sources)
        self.topics = topics
        self.secret = secret
        self._citable = prompt.citable
        self._guard = StreamGuard(grounding_text(topics, self.sources), secret)
        self._citations = Citations(prompt.mapping, self._cite_extra)
        self._scaffolding = Scaffolding(p.label for p in {**prompt.citable, **dict(enumerate(sources))}.values())
        self._said: list[str] = []
        self.shown = ""  # what was let through so far

    def _cite_extra(self, number: int) -> int | None:
        passage = self._citable.get(number)
        if passage is None:
            return None  # a citation of a passage that does not exist is dropped
        self.sources.append(passage)
        self._guard.add_source(passage.quoted)
        return len(self.sources)

    def cite(self, passage: Passage) -> int:
        """The number a statement from this passage cites (a passage not shown yet joins the sources)."""
        for n, shown in enumerate(self.sources, 1):
            if shown.id == passage.id:
                return n
        self.sources.append(passage)
        self._guard.add_source(passage.quoted)
        return len(self.sources)

    @property
    def leaked(self) -> bool:
        """Whether the model began to repeat the system prompt (the stream must stop)."""
        return self._guard.leaked

    @property
    def text(self) -> str:
        """Everything the model said, renumbered (shown or held back)."""
        return "".join(self._said).strip()

    def feed(self, piece: str) -> str:
        """The text that may be shown now ('' while a citation or a figure sentence is incomplete)."""
        mapped = self._citations.feed(self._scaffolding.feed(piece))
        self._said.append(mapped)
        return self._release(self._guard.feed(mapped))

    def _release(self, text: str) -> str:
        self.shown += text
        return text

    def flush(self) -> str:
        """The rest, once the model has finished."""
        if self.leaked:
            return ""
        tail = self._citations.feed(self._scaffolding.flush()) + self._citations.flush()
        self._said.append(tail)
        return self._release(self._guard.feed(tail) + self._guard.flush())


@dataclass
class Checked:
    """A finished answer after the final checks, and what they found."""

    text: str
    injection: bool = False
    fallback: str | None = None
    removed_figures: list[str] = field(default_factory=list)
    out_of_scope: bool = False


def final_check(stream: StreamChecks, key_facts: str, refusal: str, not_covered: str) -> Checked:
    """Grounding and safety checks on a finished model answer.

    `refusal` replaces an answer that leaks the prompt; `key_facts` (or `not_covered` when there are
    none) replaces an empty answer or one made only of invented figures.
    """
    text = stream.text
    if stream.leaked or leaks(text, stream.secret):
        return Checked(refusal, injection=True)
    if not text and not key_facts:
        return Checked(not_covered, out_of_scope=True)  # nothing to say, nothing to quote
    if not text:
        return Checked(key_facts, fallback="the model returned an empty answer")
    cleaned, removed = grounding.strip_ungrounded(text, grounding_text(stream.topics, stream.sources))
    checked = Checked(text, removed_figures=sorted(removed))
    if removed:
        if len(strip_citations(cleaned).strip()) < 25:
            return Checked(key_facts or not_covered, fallback="the model stated figures that are not in the sources",
                           removed_figures=sorted(removed), out_of_scope=not key_facts)
        checked.text = cleaned
    if DECLINE.search(checked.text):
        checked.out_of_scope = True
    elif not CITATION.search(checked.text):
        checked.text = grounding.cite_missing(checked.text, [(n, p.quoted) for n, p in enumerate(stream.sources, 1)])
    checked.text = faithfulness.repoint(checked.text, stream.sources)  # a citation to the passage that holds it
    return checked


def completion(text: str, shape: Shape, cite: Callable[[Passage], int]) -> str:
    """What the answer lacks for its shape, in the passages' own words and cited ('' when it is complete):
    every item of an asked-for list, each named item, the best unit of each part of the question."""
    lacking = missing(strip_citations(text), shape)
    if not lacking:
        return ""
    lines = [f"- {u.text} [{cite(u.passage)}]" if u.bullet else f"{u.text} [{cite(u.passage)}]" for u in lacking]
    last = text.rstrip().rsplit("\n", 1)[-1]
    gap = "\n" if is_list_item(last) and all(u.bullet for u in lacking) else "\n\n"
    return gap + "\n".join(lines) if text.strip() else "\n".join(lines)
