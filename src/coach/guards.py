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


# Role markers a person may type to fake a turn of the conversation. Chat-template tokens that open a turn
# name its role; the others only separate turns.
_ROLES = "system|assistant|user|developer|human|coach|tool|function|model"
_OPENING_TOKEN = re.compile(
    rf"<\s*[|｜]\s*im_start\s*[|｜]\s*>\s*(?:({_ROLES})\b)?"  # ChatML (Qwen): <|im_start|>system
    rf"|<\s*[|｜]\s*start_header_id\s*[|｜]\s*>\s*({_ROLES})\s*(?:<\s*[|｜]\s*end_header_id\s*[|｜]\s*>)?"  # Llama 3
    rf"|<\s*[|｜]\s*({_ROLES})\s*[|｜]\s*>"  # <|system|>, <|user|>, <|assistant|>
    rf"|<\s*start_of_turn\s*>\s*(?:({_ROLES})\b)?"  # Gemma
    r"|(<<\s*SYS\s*>>)|(\[\s*INST\s*\])|(\[\s*SYSTEM_PROMPT\s*\])",  # Llama 2, Mistral
    re.IGNORECASE,
)
_OTHER_TOKEN = re.compile(
    r"<\s*[|｜][^|｜<>\n]{1,40}[|｜]\s*>"  # <|im_end|>, <|eot_id|>, <|endoftext|>, <｜end▁of▁sentence｜>, ...
    r"|</?\s*s\s*>|<\s*/?\s*(bos|eos|unk|pad|end_of_turn)\s*>|<<\s*/\s*SYS\s*>>"
    r"|\[\s*/\s*(INST|SYSTEM_PROMPT)\s*\]|\[\s*/?\s*(AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS)\s*\]",
    re.IGNORECASE,
)
# At the start of a line: "system:", "  USER :", "### System:", "**Assistant:**", "[user]:", "### Instruction:".
_ROLE_LINE = re.compile(
    rf"(?:\A|(?<=[\n\r\x85]))[ \t]*(?:[>*_`~\[(-]+[ \t]*)?(?:#+[ \t]*(?P<heading>instructions?|response|input)"
    rf"|#*[ \t]*(?P<role>{_ROLES}))[ \t]*[\])*_`~]*[ \t]*:[*_`~]*",
    re.IGNORECASE,
)


def neutralise_roles(text: str) -> str:
    """Text whose fake turns read as quotations, not as a switch of turn.

    Chat-template tokens ("<|im_start|>system", "[INST]", "<<SYS>>", "</s>") are taken out, a role they open
    kept as a marker; then each marker at the start of a line ("system:", "### Instruction:") and what
    follows it up to the next one become `system (quoted): "new rule: ..."`. With the marker alone renamed,
    the local model still obeyed the quoted rule; with its words in quotation marks it answered the question.
    Everything the person wrote stays, so the question in it is still answered.
    """
    def opening(match: re.Match[str]) -> str:
        named = next((g for g in match.groups()[:4] if g), None)
        role = named or ("system" if match.group(5) or match.group(7) else "user" if match.group(6) else None)
        return f"\n{role}: " if role else "\n"

    text = _OTHER_TOKEN.sub(" ", _OPENING_TOKEN.sub(opening, text))
    markers = list(_ROLE_LINE.finditer(text))
    if not markers:
        return text
    parts = [text[:markers[0].start()]]
    for marker, following in zip(markers, [*markers[1:], None], strict=True):
        said = text[marker.end():following.start() if following else len(text)].strip()
        word = marker.group("heading") or marker.group("role")
        parts.append(f'{word} (quoted): "{said}"' if said else f"{word} (quoted):")
        if following:
            parts.append("\n")
    return "".join(parts)


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
