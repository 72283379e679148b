"""Settings: one typed object; COACH_* environment variables and .env override defaults, CLI flags both."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from coach.errors import CoachError

BackendName = Literal["local", "openai", "extractive", "fake"]
BACKENDS: tuple[str, ...] = ("local", "openai", "extractive")


class Settings(BaseSettings):
    """Everything coach can be configured with. Build it in an entry point and pass it down."""

    model_config = SettingsConfigDict(
        env_prefix="COACH_", env_file=".env", env_file_encoding="utf-8", extra="ignore",
        populate_by_name=True,
    )

    # Where things live
    knowledge_dir: Path = Field(Path("knowledge"), description="Folder of Markdown knowledge files.")
    prompts_dir: Path = Field(Path("prompts"), description="Folder of prompt templates.")
    data_dir: Path = Field(Path("data"), description="Index, database (SQLite) and model caches live here.")
    models_dir: Path = Field(Path("models"), description="Folder that `coach models install` fills.")
    chroma_path: Path | None = Field(None, description="Embedded Chroma folder; default DATA_DIR/chroma.")
    chroma_url: str | None = Field(
        None, description="URL of a Chroma server (`chroma run`), e.g. http://127.0.0.1:8000; "
        "when set, the index lives there instead of on disk."
    )
    collection: str = Field("coach", description="Name prefix of the Chroma collections.")

    role: str | None = Field(
        None, description="Default role when the knowledge folder holds several (its name or slug); "
        "default: the role of the first file.")

    # Chunking and retrieval
    chunk_max_words: int = Field(70, ge=20, description="Longest chunk, in words, before splitting.")
    top_k: int = Field(4, ge=1, le=20, description="Passages returned by a search.")
    candidates: int = Field(20, ge=1, description="Candidates taken from each retriever before fusion.")
    rrf_k: int = Field(60, ge=1, description="Reciprocal rank fusion constant.")
    lexical_weight: float = Field(0.5, ge=0, description="Weight of the BM25 ranking in the fusion.")
    min_relevance: float = Field(
        0.22, description="Below this best dense cosine similarity (and with no lexical match) a "
        "question counts as not covered by the knowledge base."
    )

    # Chat
    backend: BackendName = Field("local", description="Chat backend: local, openai, extractive, fake.")
    local_model_file: str = Field(
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", description="GGUF file in MODELS_DIR for `local`."
    )
    n_ctx: int = Field(
        16384, ge=512, description="Cells of the local model's KV cache, shared by the knowledge prefix and every "
        "answer being written (or kept as a conversation's cache).")
    parallel: int = Field(
        4, ge=1, le=64, description="Answers the local model writes at once in one batch (continuous batching).")
    batching: Literal["exact", "fused"] = Field(
        "exact", description="How the local model's batch is evaluated: `exact` (each answer's next token in a call of "
        "its own, with flash attention: an answer is the same alone or among others) or `fused` (all in one call, "
        "without flash attention: fewer passes over the weights and faster attention on a CPU, but an answer may "
        "change with who else is asking).")
    queue: int = Field(
        8, ge=0, description="Questions that may wait for the local model beyond those being answered; more are "
        "told the coach is busy and when to try again (429 in the API).")
    n_threads: int = Field(2, description="Threads for the local model (prompt and generation).")
    context_mode: Literal["auto", "knowledge", "passages"] = Field(
        "auto", description="`knowledge`: whole knowledge base as a cached prompt prefix; `passages`: "
        "only retrieved passages; `auto`: knowledge for the local model when it fits, else passages."
    )
    kv_cache_dir: Path | None = Field(
        None, description="Where the local model's prepared prompt prefix is saved; default DATA_DIR/kv-cache."
    )
    knowledge_prefix_max_tokens: int = Field(
        5500, description="Largest knowledge base (in model tokens) used as a prompt prefix."
    )
    openai_base_url: str | None = Field(
        None, validation_alias=AliasChoices("COACH_OPENAI_BASE_URL", "OPENAI_BASE_URL", "openai_base_url"),
        description="Base URL of an OpenAI-compatible API (OpenAI, Ollama, vLLM, llama.cpp server).",
    )
    openai_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("COACH_OPENAI_API_KEY", "OPENAI_API_KEY", "openai_api_key"),
        description="API key for the openai backend (never printed).",
    )
    openai_model: str = Field("gpt-4o-mini", description="Model name for the openai backend.")
    request_timeout: float = Field(
        60.0, gt=0, description="Seconds a request to the openai backend may take in all (the total timeout); "
        "then the extractive fallback answers."
    )
    first_byte_timeout: float = Field(
        20.0, gt=0, description="Seconds the openai backend's server may stay silent: before the first byte of its "
        "reply, and between two pieces of an answer; then the extractive fallback answers."
    )
    openai_concurrency: int = Field(
        4, ge=1, description="Answers the openai backend writes at once (COACH_CONCURRENCY if larger), so that one "
        "slow or hung request holds one place, not everybody's."
    )
    max_answer_tokens: int = Field(120, description="Hard cap on the tokens of one answer.")
    answer_soft_tokens: int = Field(
        45, description="After this many tokens an answer stops at the next end of a sentence or list item."
    )
    temperature: float = Field(0.0, description="Sampling temperature of answers (0: greedy, repeatable).")
    history_tokens: int = Field(600, description="Token budget of the chat history sent to the model.")
    max_question_chars: int = Field(2000, ge=10, description="Longest question accepted, in characters.")

    # Career planner
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the database for profiles, plan progress and feedback (default: "
        "SQLite DATA_DIR/coach.db; e.g. postgresql+psycopg://user:password@host/coach to share it between instances)."
    )
    plan_phrasing: Literal["auto", "model", "plain"] = Field(
        "auto", description="Who words the planner's answers: `plain` (the assessment as written by rules), "
        "`model` (the chat model rephrases it; a phrasing that changes the verdict or a figure is replaced by the "
        "plain text), `auto` (model for remote backends, plain for the local one, whose first token it would delay)."
    )
    profile_model_help: bool = Field(
        True, description="Let the chat model help read a résumé (job title, location) through JSON of the "
        "profile schema; numbers, degrees and skills are always read by rules."
    )

    # Web UI
    host: str = Field("127.0.0.1", description="Address the chat UI listens on.")
    port: int = Field(7860, description="Port of the chat UI (1-65535).")
    allow_remote: bool = Field(False, description="Must be true to listen on anything but loopback.")
    auth_username: str | None = Field(None, description="Username for the chat UI (with a password).")
    auth_password: SecretStr | None = Field(None, description="Password for the chat UI.")
    concurrency: int = Field(1, ge=1, description="Answers generated at once by the UI's queue.")

    # OpenAI-compatible API (/v1 on the same server as the page)
    api_keys: SecretStr | None = Field(
        None, description="Comma-separated keys; when set (or api_keys_file), every /v1 call needs "
        "`Authorization: Bearer KEY`. Never printed."
    )
    api_keys_file: Path | None = Field(None, description="A file of API keys, one a line (# comments allowed).")
    api_queue: int = Field(8, ge=0, description="API requests that may wait for a free answering slot; more get 429.")

    @field_validator("port")
    @classmethod
    def _port(cls, port: int) -> int:
        if not 1 <= port <= 65535:
            raise ValueError(f"must be a port number from 1 to 65535, not {port}")
        return port

    @field_validator("chroma_url", "openai_base_url")
    @classmethod
    def _url_port(cls, url: str | None) -> str | None:
        # The URL itself is not repeated: it may carry a user name and password.
        try:
            parts = urlsplit(url or "")
            parts.port  # noqa: B018 -- read for its check: a port out of range raises ValueError
        except ValueError as exc:
            if "port" not in str(exc).lower():
                raise ValueError("is not a valid URL") from None
            raise ValueError("has a port that is not a number from 1 to 65535") from None
        if parts.port == 0:
            raise ValueError("has a port that is not a number from 1 to 65535")
        return url

    @property
    def chroma_dir(self) -> Path:
        """The embedded Chroma folder."""
        return self.chroma_path or self.data_dir / "chroma"

    def api_key_set(self) -> frozenset[str]:
        """Every accepted API key (from api_keys and api_keys_file); empty when the API is open.

        Keys asked for but not found (a file that is missing, unreadable or holds no key, COACH_API_KEYS of
        commas only) raise CoachError: the API must not run open by mistake.
        """
        keys: set[str] = set()
        if self.api_keys:
            keys = {k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()}
            if not keys:
                raise CoachError("COACH_API_KEYS is set but holds no key; give keys separated by commas, or unset it.")
        if self.api_keys_file is not None:
            try:
                lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise CoachError(f"COACH_API_KEYS_FILE {self.api_keys_file} cannot be read ({why}).") from None
            in_file = {k for k in (line.split("#", 1)[0].strip() for line in lines) if k}
            if not in_file:
                raise CoachError(f"COACH_API_KEYS_FILE {self.api_keys_file} holds no key; put one key on each line.")
            keys |= in_file
        return frozenset(keys)

    def ui_login(self) -> tuple[str, str] | None:
        """The chat page's user name and password, or None for no log-in; CoachError when only one is set."""
        user = (self.auth_username or "").strip()
        password = self.auth_password.get_secret_value() if self.auth_password else ""
        if bool(user) != bool(password):
            missing = "COACH_AUTH_PASSWORD" if user else "COACH_AUTH_USERNAME"
            raise CoachError(f"the log-in is half configured: {missing} is not set; set both COACH_AUTH_USERNAME and "
                             "COACH_AUTH_PASSWORD to require a log-in, or neither.")
        return (user, password) if user else None

    @property
    def database(self) -> str:
        """The database URL (SQLite in the data folder unless COACH_DATABASE_URL is set)."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'coach.db').resolve()}"


def is_loopback(host: str) -> bool:
    """Whether host is only reachable from this machine."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SettingsError(CoachError):
    """A setting has a value coach cannot use (the message names it, never its value when secret)."""


def describe(error: ValidationError) -> str:
    """A settings validation error as one line: the variable and what is wrong with it."""
    problems = []
    for err in error.errors():
        field = ".".join(str(p) for p in err.get("loc", ())) or "setting"
        name = field if field.isupper() else f"COACH_{field.upper()}"
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        phrase = msg.startswith(("must ", "has ", "is "))  # our own validators' words read after the name
        problems.append(f"{name} {msg}" if phrase else f"invalid setting {name}: {msg}")
    return "; ".join(problems)


def load_settings(**overrides: Any) -> Settings:
    """Settings from defaults, .env and COACH_* variables, with non-None overrides (CLI flags) on top.

    Raises SettingsError (one line) when a value cannot be used.
    """
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None
