"""The one interface every chat backend implements, the request it is given, and how an answer is stopped."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from coach.config import Settings
    from coach.extractive import Evidence

Message = dict[str, str]
log = logging.getLogger("coach.llm")


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


# -- stopping an answer from another thread -------------------------------------------------------
class Stop:
    """A stop asked for the answer written on one thread, from another (Stop pressed, the client gone).

    The thread writing the answer cannot be interrupted from outside while it waits on a server, so a
    backend that waits registers how to end that wait (`on_stop`: close its connection); a stop then ends
    the wait at once instead of when the server next speaks.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], None]] = []
        self._set = False

    def is_set(self) -> bool:
        """Whether the stop was asked."""
        return self._set

    def set(self) -> None:
        """Ask for the stop: run every hook once (from the calling thread)."""
        with self._lock:
            if self._set:
                return
            self._set = True
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            try:
                hook()
            except Exception:  # a hook that fails must not keep the others from running
                log.exception("a stop hook failed")

    def on_stop(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run hook when the stop is asked (now, if it was); returns a function that removes it."""
        with self._lock:
            if not self._set:
                self._hooks.append(hook)
                return lambda: self._remove(hook)
        hook()
        return lambda: None

    def _remove(self, hook: Callable[[], None]) -> None:
        with self._lock:
            if hook in self._hooks:
                self._hooks.remove(hook)


_STOP: ContextVar[Stop | None] = ContextVar("coach_stop", default=None)


def stop_this_thread_with(stop: Stop) -> None:
    """Make `stop` the stop of the answer this (worker) thread writes from now on."""
    _STOP.set(stop)


def current_stop() -> Stop | None:
    """The stop of the answer this thread writes, if whoever started it can stop it."""
    return _STOP.get()


def parallel_answers(settings: Settings, backend: str) -> int:
    """How many answers may be under way at once with `backend`: a remote server serves several people at a
    time, so one slow or hung request holds one place, not the line; the local model's scheduler takes
    COACH_PARALLEL into its batch and COACH_QUEUE in line (and tells the next one it is busy)."""
    if backend == "openai":
        return max(settings.concurrency, settings.openai_concurrency)
    if backend == "local":
        return max(settings.concurrency, settings.parallel + settings.queue)
    return settings.concurrency
