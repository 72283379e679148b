"""The extractive backend: no model; the answer is the evidence's key points, quoted and cited."""

from __future__ import annotations

from collections.abc import Iterator

from coach.llm.base import Request
from coach.text import estimate_tokens


class ExtractiveBackend:
    """Answers with the most relevant bullets and sentences of the retrieved passages, in their own words."""

    name = "extractive"
    model = "none"
    caches_prefix = False
    generative = False

    def stream(self, request: Request) -> Iterator[str]:
        """Yield the key points of the request's evidence (nothing when there are none)."""
        if request.evidence is not None and request.evidence.key_facts:
            yield request.evidence.key_facts

    def prepare(self, system: str) -> None:
        """Nothing to load."""

    def count_tokens(self, text: str) -> int:
        """About four characters a token."""
        return estimate_tokens(text)
