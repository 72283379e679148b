"""The one interface every chat backend implements, and the request it is given."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from coach.extractive import Evidence

Message = dict[str, str]


@dataclass
class Request:
    """What a backend is asked: the messages and limits, and the evidence they were built from.

    A language model reads `messages`; the extractive backend answers from `evidence` alone.
    `json_schema`, when set, asks for one JSON object of that shape (where the backend supports it).
    """

    messages: list[Message]
    max_tokens: int
    temperature: float = 0.0
    evidence: Evidence | None = None
    json_schema: dict[str, Any] | None = None


class ChatBackend(Protocol):
    """A chat model that streams a reply to a Request.

    Raises coach.errors.BackendUnavailableError (with a one-line reason, never a secret) when the
    model cannot answer: server down, key rejected, model file missing, crash.
    """

    name: str
    model: str
    caches_prefix: bool  # True when a long fixed system prompt is cheap after the first request
    generative: bool  # False for a backend that only quotes the evidence (no model writes)

    def stream(self, request: Request) -> Iterator[str]:
        """Yield the reply's text pieces as they are generated."""
        ...

    def prepare(self, system: str) -> None:
        """Get ready to answer under this system prompt (load the model, warm caches); may be slow."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of text in this model's tokenizer (an estimate where it has none)."""
        ...
