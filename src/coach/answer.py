"""What a question produces: the streamed events and the finished Answer (text, sources, timings, flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from coach.retrieval import Passage


@dataclass
class Answer:
    """A finished answer: text, sources in the order they are cited, timings and provenance."""

    question: str
    standalone: str
    text: str = ""
    sources: list[Passage] = field(default_factory=list)
    backend: str = ""
    model: str = ""
    latency_ms: float = 0.0
    ttft_ms: float | None = None  # the first text a person sees
    out_of_scope: bool = False
    injection: bool = False
    fallback: str | None = None
    removed_figures: list[str] = field(default_factory=list)
    model_ttft_ms: float | None = None  # the first token from the model
    leaked: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_s: float = 0.0
    route: str = "answer"  # answer (retrieval and the model), plan (the career planner), refusal, not_covered,
    # not_english
    plan: dict[str, Any] | None = None  # the planner's assessment, as data
    shape: str = ""  # the answer's shape (shape.Kind): list, items, parts or free
    prompt: str = field(default="", repr=False)  # the user message the model was sent
    raw: str = field(default="", repr=False)  # what the model said, before any check or renumbering

    @property
    def tokens_per_second(self) -> float:
        """Generation speed of the model (0 without a model)."""
        return self.completion_tokens / self.generation_s if self.generation_s > 0 else 0.0

    @property
    def replayable(self) -> bool:
        """Whether a follow-up may send the model this turn as the model itself wrote it."""
        return bool(self.raw) and not (self.fallback or self.injection or self.removed_figures or self.leaked)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `coach ask --json` and of `coach eval --out` lines."""
        return {
            "question": self.question, "standalone_question": self.standalone, "answer": self.text,
            "sources": [p.to_dict() for p in self.sources], "latency_ms": round(self.latency_ms, 1),
            "ttft_ms": _ms(self.ttft_ms), "model_ttft_ms": _ms(self.model_ttft_ms),
            "backend": self.backend, "model": self.model, "out_of_scope": self.out_of_scope,
            "injection": self.injection, "fallback": self.fallback, "removed_figures": self.removed_figures,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "tokens_per_second": round(self.tokens_per_second, 2), "route": self.route,
            **({"shape": self.shape} if self.shape else {}),
            **({"plan": self.plan} if self.plan is not None else {}),
        }


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass
class Event:
    """One step of a streamed answer.

    kinds: `sources` (retrieval finished: passages and extractive key points, before the model writes),
    `token` (more answer text), `replace` (the whole answer text changed, e.g. a figure was removed
    or the fallback answered), `done` (the final Answer).
    """

    kind: Literal["sources", "token", "replace", "done"]
    text: str = ""
    sources: list[Passage] = field(default_factory=list)
    answer: Answer | None = None
