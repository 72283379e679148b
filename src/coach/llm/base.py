"""The one interface every chat backend implements."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

Message = dict[str, str]


class ChatBackend(Protocol):
    """A chat model that streams a reply to OpenAI-style messages.

    Raises coach.errors.BackendUnavailableError (with a one-line reason, never a secret) when the
    model cannot answer: server down, key rejected, model file missing, crash.
    """

    name: str
    model: str
    caches_prefix: bool  # True when a long fixed system prompt is cheap after the first request

    def stream(self, messages: list[Message], max_tokens: int, temperature: float) -> Iterator[str]:
        """Yield the reply's text pieces as they are generated."""
        ...

    def prepare(self, system: str) -> None:
        """Get ready to answer under this system prompt (load the model, warm caches); may be slow."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens of text in this model's tokenizer (an estimate where it has none)."""
        ...
