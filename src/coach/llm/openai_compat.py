"""Any OpenAI-compatible endpoint (OpenAI, Ollama, vLLM, LM Studio, a llama.cpp server) through the `openai` client.

Each request is watched: the server may stay silent for at most the first-byte timeout (before its reply and
between two pieces), the whole request may take at most the total timeout, a stop asked from another thread
(llm.base.Stop) ends it at once, and a stream that ends before its finish_reason is an answer cut short. Each
of these closes the request's own connection and raises BackendUnavailableError with a one-line reason.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from coach.config import Settings
from coach.errors import BackendUnavailableError
from coach.llm.base import Request, current_stop
from coach.text import estimate_tokens

log = logging.getLogger("coach.llm.openai")
STOPPED = "the answer was stopped"
TOO_LONG = "total timeout"  # the watch's reason when the request took longer than the total timeout
CONNECT_TIMEOUT_S = 10.0


def safe_url(url: str) -> str:
    """The URL without credentials or query (either may hold a key): scheme, host, port and path only."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _reason(exc: Exception, base_url: str, model: str) -> str:
    """A one-line reason for a failed request that never repeats the server's text (it may echo the key)."""
    import openai

    base_url = safe_url(base_url)
    if isinstance(exc, openai.AuthenticationError):
        return f"the API key was rejected by {base_url} (401)"
    if isinstance(exc, openai.PermissionDeniedError):
        return f"access denied by {base_url} (403)"
    if isinstance(exc, openai.NotFoundError):
        return f"model {model!r} or its endpoint was not found at {base_url} (404)"
    if isinstance(exc, openai.RateLimitError):
        return f"rate limited or out of quota at {base_url} (429)"
    if isinstance(exc, openai.APITimeoutError):
        return f"{base_url} did not answer in time"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot reach {base_url}"
    if isinstance(exc, openai.APIStatusError):
        return f"{base_url} answered with HTTP {exc.status_code}"
    return f"{type(exc).__name__} while talking to {base_url}"


class _Watch:
    """One request's watchdog: the sockets its connection uses, shut down when the request must end now.

    Shutting a socket down (not closing it) from another thread wakes the read that waits on it, and the
    connection then closes on its own thread; a socket object already closed refuses it harmlessly.
    """

    def __init__(self) -> None:
        self.reason: str | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._over = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's `trace` extension: note the socket of each connection the request opens (plain and TLS)."""
        if not event.endswith(("connect_tcp.complete", "start_tls.complete")):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with self._lock:
                self._sockets.append(sock)
                if self.reason is not None and not self._over:
                    _shut(sock)

    def cut(self, reason: str) -> None:
        """End the request now (from any thread), for this reason; a request already over is left alone."""
        with self._lock:
            if self._over or self.reason is not None:
                return
            self.reason = reason
            for sock in self._sockets:
                _shut(sock)

    def end(self) -> None:
        """The request is over: a late cut changes nothing."""
        with self._lock:
            self._over = True


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


# The watch of the request being sent on this thread, for the client's request hook (one client serves all).
_WATCH: ContextVar[_Watch | None] = ContextVar("coach_openai_watch", default=None)


def _attach_watch(request: Any) -> None:
    """httpx request hook: let the watch of this thread's request see its connections."""
    watch = _WATCH.get()
    if watch is not None:
        request.extensions["trace"] = watch.trace


class OpenAIBackend:
    """Streams chat completions from an OpenAI-compatible server, within a first-byte and a total timeout."""

    name = "openai"
    caches_prefix = False
    generative = True

    def __init__(self, base_url: str | None, api_key: str | None, model: str, timeout: float = 60.0,
                 first_byte_timeout: float = 20.0) -> None:
        self.base_url = (base_url or "https://api.openai.com/v1").rstrip("/")
        self.model = model
        self.timeout = timeout
        self.first_byte_timeout = first_byte_timeout
        self._api_key = api_key
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIBackend:
        """Base URL, key, model and timeouts from settings (OPENAI_BASE_URL / OPENAI_API_KEY honoured)."""
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return cls(settings.openai_base_url, key, settings.openai_model, settings.request_timeout,
                   settings.first_byte_timeout)

    def _openai(self) -> Any:
        with self._lock:
            if self._client is None:
                import httpx2
                import openai

                key = self._api_key
                if not key:
                    if "api.openai.com" in self.base_url:
                        raise BackendUnavailableError("no API key: set OPENAI_API_KEY or COACH_OPENAI_API_KEY")
                    key = "not-needed"  # local servers (Ollama, llama.cpp, vLLM) accept any key
                silence = self.first_byte_timeout
                http = httpx2.Client(
                    # `read` bounds every wait for the server: its first byte and each later piece.
                    timeout=httpx2.Timeout(silence, connect=min(silence, CONNECT_TIMEOUT_S)),
                    # A connection of its own for each request: a stop or timeout closes that one only.
                    limits=httpx2.Limits(max_keepalive_connections=0),
                    follow_redirects=True, event_hooks={"request": [_attach_watch]})
                # No retries: a retry would double the wait on a hung server; the next question tries again.
                self._client = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0, http_client=http)
            return self._client

    def stream(self, request: Request) -> Iterator[str]:
        """Yield the reply's text as the server streams it; BackendUnavailableError when it fails or stalls."""
        client = self._openai()
        options: dict[str, Any] = {"model": self.model, "messages": request.messages, "stream": True,
                                   "max_completion_tokens": request.max_tokens, "temperature": request.temperature}
        if request.json_schema is not None:
            options["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "reply", "schema": request.json_schema, "strict": False}}
        watch = _Watch()
        stop = current_stop()
        unhook = stop.on_stop(lambda: watch.cut(STOPPED)) if stop is not None else (lambda: None)
        timer = threading.Timer(self.timeout, watch.cut, (TOO_LONG,))
        timer.daemon = True
        timer.start()
        chunks, said, finished, stream = 0, False, False, None
        try:
            token = _WATCH.set(watch)
            try:
                stream = client.chat.completions.create(**options)
            finally:
                _WATCH.reset(token)
            for chunk in stream:
                chunks += 1
                for choice in getattr(chunk, "choices", None) or []:
                    text = getattr(choice.delta, "content", None) if choice.delta is not None else None
                    if isinstance(text, str) and text:
                        said = True
                        yield text
                    finished = finished or bool(choice.finish_reason)
        except Exception as exc:
            why = self._why(exc, watch.reason, said)
            log.info("openai backend: %s", why)
            raise BackendUnavailableError(why) from None
        finally:
            watch.end()
            timer.cancel()
            unhook()
            if stream is not None:
                stream.close()  # also when the reader leaves early (the soft stop): the server stops writing
        if not finished:
            why = self._cut(watch.reason, said) if watch.reason else self._unfinished(chunks)
            log.info("openai backend: %s", why)
            raise BackendUnavailableError(why)

    def _unfinished(self, chunks: int) -> str:
        """Why a stream that ended without a finish_reason is not an answer."""
        url = safe_url(self.base_url)
        if not chunks:
            return f"{url} sent a reply that is not an OpenAI chat stream"
        return f"{url} stopped mid-answer: the stream ended before the answer was complete"

    def _cut(self, reason: str, said: bool) -> str:
        """Why the watch ended the request: a stop, or the total timeout."""
        if reason != TOO_LONG:
            return reason
        url, limit = safe_url(self.base_url), f"{self.timeout:g} s (COACH_REQUEST_TIMEOUT)"
        if said:
            return f"{url} did not finish its answer in time: it took longer than {limit}"
        return f"{url} did not answer in time: nothing came within {limit}"

    def _why(self, exc: Exception, cut: str | None, said: bool) -> str:
        """The one-line reason for a request that failed (the watch's reason first: it caused the failure)."""
        import httpx2
        import openai

        if cut is not None:
            return self._cut(cut, said)
        url, cause = safe_url(self.base_url), exc.__cause__ or exc
        if isinstance(cause, httpx2.ReadTimeout):
            silence = f"{self.first_byte_timeout:g} s (COACH_FIRST_BYTE_TIMEOUT)"
            if said:
                return f"{url} stopped mid-answer: nothing came for {silence}"
            return f"{url} did not answer in time: nothing came within {silence}"
        if isinstance(cause, httpx2.RemoteProtocolError | httpx2.ReadError):
            if said or not isinstance(exc, openai.APIConnectionError):
                return f"{url} stopped mid-answer: the connection closed before the answer was complete"
            return f"{url} closed the connection without answering"
        if isinstance(exc, ValueError | TypeError | AttributeError | KeyError):  # JSONDecodeError too
            return f"{url} sent a reply that is not an OpenAI chat stream"
        if isinstance(exc, openai.APIError) and not isinstance(exc, openai.APIStatusError | openai.APIConnectionError):
            return f"{url} reported an error mid-answer"
        return _reason(exc, self.base_url, self.model)

    def prepare(self, system: str) -> None:
        """Nothing to warm for a remote server."""

    def count_tokens(self, text: str) -> int:
        """About four characters a token (tiktoken would fetch its tables from the network)."""
        return estimate_tokens(text)
