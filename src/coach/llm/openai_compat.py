"""Any OpenAI-compatible endpoint (OpenAI, Ollama, vLLM, LM Studio, a llama.cpp server) via langchain-openai."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from coach.config import Settings
from coach.errors import BackendUnavailableError
from coach.llm.base import Request
from coach.text import estimate_tokens


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


class OpenAIBackend:
    """Streams chat completions from an OpenAI-compatible server."""

    name = "openai"
    caches_prefix = False
    generative = True

    def __init__(self, base_url: str | None, api_key: str | None, model: str, timeout: float = 60.0) -> None:
        self.base_url = (base_url or "https://api.openai.com/v1").rstrip("/")
        self.model = model
        self._api_key = api_key
        self._timeout = timeout
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIBackend:
        """Base URL, key and model from settings (OPENAI_BASE_URL / OPENAI_API_KEY honoured)."""
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        return cls(settings.openai_base_url, key, settings.openai_model, settings.request_timeout)

    def _chat(self) -> Any:
        if self._client is None:
            from langchain_openai import ChatOpenAI

            key = self._api_key
            if not key:
                if "api.openai.com" in self.base_url:
                    raise BackendUnavailableError("no API key: set OPENAI_API_KEY or COACH_OPENAI_API_KEY")
                key = "not-needed"  # local servers (Ollama, llama.cpp, vLLM) accept any key
            self._client = ChatOpenAI(base_url=self.base_url, api_key=key, model=self.model,
                                      timeout=self._timeout, max_retries=1, streaming=True)
        return self._client

    def stream(self, request: Request) -> Iterator[str]:
        """Yield the reply's text as the server streams it."""
        chat = self._chat()
        options: dict[str, Any] = {"max_tokens": request.max_tokens, "temperature": request.temperature}
        if request.json_schema is not None:
            options["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "reply", "schema": request.json_schema, "strict": False}}
        try:
            for chunk in chat.stream(request.messages, **options):
                text = chunk.content if isinstance(chunk.content, str) else ""
                if text:
                    yield text
        except BackendUnavailableError:
            raise
        except Exception as exc:
            raise BackendUnavailableError(_reason(exc, self.base_url, self.model)) from None

    def prepare(self, system: str) -> None:
        """Nothing to warm for a remote server."""

    def count_tokens(self, text: str) -> int:
        """About four characters a token (tiktoken would fetch its tables from the network)."""
        return estimate_tokens(text)
