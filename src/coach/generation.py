"""The generation stage: the backend's stream, stopped where the answer is long enough, timed and counted."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator

from coach.llm.base import ChatBackend, Request
from coach.text import ends_sentence, is_list_item


def unit_end(said: str, piece: str) -> int | None:
    """Where in the next piece an answer may stop: just after a sentence or a list item ends (or None).

    Pieces are model tokens, so a sentence's full stop may arrive with the white space after it (".\\n").
    """
    for i, char in enumerate(piece):
        if not char.isspace():
            continue
        last_line = (said + piece[:i]).rstrip().rsplit("\n", 1)[-1]
        if not last_line:
            continue
        if ends_sentence(last_line):
            return i
        if char == "\n" and is_list_item(last_line) and not last_line.rstrip().endswith(":"):
            return i
    return None


class Response:
    """One reply of a backend, as it streams: its text, token counts and timings (as `llm`'s Response).

    `pieces_stream()` yields the pieces. After `soft_tokens` pieces the reply ends at the next end of a sentence
    or list item; closing it (or leaving the loop) stops the model.
    """

    def __init__(self, backend: ChatBackend, request: Request, soft_tokens: int | None = None) -> None:
        self.backend = backend
        self.request = request
        self.soft_tokens = soft_tokens
        self.pieces: list[str] = []
        self.started = time.perf_counter()
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self.stopped_early = False
        self._stream: Iterator[str] | None = None

    @property
    def text(self) -> str:
        """Everything the model said so far (after the soft stop's cut)."""
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        """Pieces received: one per token for the model backends."""
        return len(self.pieces)

    @property
    def prompt_tokens(self) -> int:
        """Tokens of the prompt by the backend's own count."""
        return sum(self.backend.count_tokens(m["content"]) + 4 for m in self.request.messages)

    @property
    def generation_s(self) -> float:
        """Seconds from the first token to the last."""
        if self.first_token_at is None:
            return 0.0
        return (self.finished_at or time.perf_counter()) - self.first_token_at

    def pieces_stream(self) -> Generator[str, None, None]:
        """The reply's pieces as they arrive; closing this generator stops the model."""
        self._stream = self.backend.stream(self.request)
        awaiting = False  # a sentence ended with the last piece: stop unless a citation of it follows
        try:
            for piece in self._stream:
                if awaiting:
                    if not piece.lstrip().startswith("["):
                        self.stopped_early = True
                        break
                    awaiting = False
                cut = None
                if self.soft_tokens is not None and self.completion_tokens >= self.soft_tokens:
                    cut = unit_end(self.text, piece)
                if cut is not None and piece[cut:].lstrip().startswith("["):
                    cut = None  # "... well. [1]": the citation belongs to the sentence
                if cut is not None:
                    awaiting = not piece[cut:].strip()
                    piece = piece[:cut]
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                self.pieces.append(piece)
                yield piece
                if cut is not None and not awaiting:
                    self.stopped_early = True
                    break
        finally:
            self.close()

    def close(self) -> None:
        """Stop the model (an answer abandoned: a leak, the client gone) and note the end time."""
        if self.finished_at is None:
            self.finished_at = time.perf_counter()
        stream, self._stream = self._stream, None
        close = getattr(stream, "close", None)
        if close is not None:
            close()
