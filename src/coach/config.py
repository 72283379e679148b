"""Settings: one typed object; COACH_* environment variables and .env override defaults, CLI flags both."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr
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
    data_dir: Path = Field(Path("data"), description="Index, feedback log and model caches live here.")
    models_dir: Path = Field(Path("models"), description="Folder that `coach models install` fills.")
    chroma_path: Path | None = Field(None, description="Embedded Chroma folder; default DATA_DIR/chroma.")
    chroma_url: str | None = Field(
        None, description="URL of a Chroma server (`chroma run`), e.g. http://127.0.0.1:8000; "
        "when set, the index lives there instead of on disk."
    )
    collection: str = Field("coach", description="Name prefix of the Chroma collections.")

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
    n_ctx: int = Field(8192, description="Context window of the local model.")
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
        None, description="SQLAlchemy URL of the database for profiles and plan progress (default: SQLite "
        "DATA_DIR/coach.db; e.g. postgresql+psycopg://user@host/coach)."
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
    port: int = Field(7860, description="Port of the chat UI.")
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

    @property
    def chroma_dir(self) -> Path:
        """The embedded Chroma folder."""
        return self.chroma_path or self.data_dir / "chroma"

    def api_key_set(self) -> frozenset[str]:
        """Every accepted API key (from api_keys and api_keys_file); empty when the API is open."""
        keys = set(self.api_keys.get_secret_value().split(",")) if self.api_keys else set()
        if self.api_keys_file is not None:
            try:
                lines = self.api_keys_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise CoachError(f"COACH_API_KEYS_FILE {self.api_keys_file} cannot be read ({exc.strerror}).") from None
            keys |= {line.split("#", 1)[0] for line in lines}
        return frozenset(k.strip() for k in keys if k.strip())

    @property
    def database(self) -> str:
        """The database URL (SQLite in the data folder unless COACH_DATABASE_URL is set)."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'coach.db').resolve()}"

    @property
    def feedback_file(self) -> Path:
        """Where likes and dislikes are appended, one JSON object a line."""
        return self.data_dir / "feedback.jsonl"


def is_loopback(host: str) -> bool:
    """Whether host is only reachable from this machine."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(**overrides: Any) -> Settings:
    """Settings from defaults, .env and COACH_* variables, with non-None overrides (CLI flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
