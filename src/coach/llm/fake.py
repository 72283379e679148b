"""A queued-reply fake chat model for unit tests; it records what it was sent."""

from __future__ import annotations

import re
from collections.abc import Iterator

from coach.llm.base import Message, Request
from coach.text import estimate_tokens


class FakeChat:
    """Replies from a queue (a string, or an exception to raise); records every request."""

    name = "fake"
    model = "fake-model"
    caches_prefix = False
    generative = True

    def __init__(self, replies: list[str | Exception] | None = None, default: str = "I can help with that.") -> None:
        self.replies: list[str | Exception] = list(replies or [])
        self.default = default
        self.requests: list[Request] = []
        self.prepared: list[str] = []

    @property
    def calls(self) -> list[list[Message]]:
        """The messages of every request, oldest first."""
        return [r.messages for r in self.requests]

    def stream(self, request: Request) -> Iterator[str]:
        """Yield the next queued reply word by word (or raise the queued exception)."""
        self.requests.append(Request([dict(m) for m in request.messages], request.max_tokens, request.temperature,
                                     request.evidence, request.json_schema))
        reply = self.replies.pop(0) if self.replies else self.default
        if isinstance(reply, Exception):
            raise reply
        yield from re.findall(r"\S+\s*|\s+", reply)

    def prepare(self, system: str) -> None:
        """Remember the system prompt it was prepared with."""
        self.prepared.append(system)

    def count_tokens(self, text: str) -> int:
        """About four characters a token."""
        return estimate_tokens(text)
