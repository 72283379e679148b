"""The embedded local model: a GGUF file run in-process by llama.cpp (llama-cpp-python).

Why in-process rather than `llama_cpp.server`: the answer prompt starts with a long fixed prefix (the
knowledge base); in-process we can evaluate it once, save llama.cpp's state to disk and restore it in a
fraction of a second after a restart. One model is shared by every conversation: a scheduler
(coach.llm.batching) writes up to COACH_PARALLEL answers at once in one batch, each in a sequence of its
own that shares the prefix's cells, so several people asking at once each see their answer start within
a step or two instead of waiting for the others to finish.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coach.config import Settings
from coach.errors import BackendUnavailableError, ModelMissingError
from coach.llm.base import Request, current_stop
from coach.llm.batching import Scheduler
from coach.llm.engine import Sampling
from coach.models import CHAT_FILES, ModelFile, Verification, check
from coach.text import estimate_tokens

_STOP = ["<|im_end|>", "<|endoftext|>", "<|im_start|>"]
_USER_HEAD = "<|im_start|>user\n"  # every conversation goes on with a user turn: cached with the system prompt
_ASSISTANT_HEAD = "<|im_start|>assistant\n"


def _chatml(role: str, content: str) -> str:
    return f"<|im_start|>{role}\n{content}<|im_end|>\n"


@dataclass(frozen=True, eq=False)
class SavedPrefix:
    """A prompt prefix's llama.cpp state as kept on disk (without logits: the next prompt recomputes them)."""

    n_tokens: int
    input_ids: np.ndarray
    llama_state: bytes
    seed: int

    def digest(self) -> str:
        """sha256 of everything restored from the file."""
        sha = hashlib.sha256(np.int64(self.n_tokens).tobytes())
        sha.update(np.asarray(self.input_ids, dtype=np.intc).tobytes())
        sha.update(self.llama_state)
        sha.update(np.int64(self.seed).tobytes())
        return sha.hexdigest()


class PrefixCache:
    """Saved prefix states, one file per key, each with a sha256 of its contents that is checked before use.

    llama.cpp restores whatever bytes it is given: a file garbled in place either fails to load ("Failed to
    set llama state data") or, worse, loads and makes the model write nonsense. A file that does not match
    its digest is removed, so it is rebuilt once and never tried again.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, key: str) -> Path:
        """The file of this key."""
        return self.folder / f"prefix-{key}.npz"

    def read(self, key: str) -> tuple[SavedPrefix | None, str | None]:
        """(the saved state, None), or (None, why it was discarded), or (None, None) when there is none."""
        path = self.path(key)
        if not path.is_file():
            return None, None
        try:
            with np.load(path) as data:
                saved = SavedPrefix(int(data["n_tokens"]), np.array(data["input_ids"], dtype=np.intc),
                                    data["llama_state"].tobytes(), int(data["seed"]))
                digest = str(data["sha256"]) if "sha256" in data.files else None
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile):  # torn, truncated or foreign
            return None, self.discard(key, "the saved one was unreadable")
        if digest is None:
            return None, self.discard(key, "the saved one carries no checksum")
        if digest != saved.digest():
            return None, self.discard(key, "the saved one was damaged")
        return saved, None

    def discard(self, key: str, why: str) -> str:
        """Remove the key's file (it is not to be tried again); returns why."""
        self.path(key).unlink(missing_ok=True)
        return why

    def write(self, key: str, saved: SavedPrefix) -> None:
        """Save a state with its digest; keep the newest few files. A read-only folder only costs time."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            target = self.path(key)
            # A name of its own per process: two processes preparing at once must not tear each other's file.
            tmp = self.folder / f".prefix-{key}.{os.getpid()}.tmp.npz"
            np.savez(tmp, n_tokens=saved.n_tokens, input_ids=saved.input_ids,
                     llama_state=np.frombuffer(saved.llama_state, dtype=np.uint8), seed=saved.seed,
                     sha256=np.array(saved.digest()))
            tmp.replace(target)
            # Keep the newest few (another instance may run other prompts); older ones are stale.
            others = sorted((p for p in self.folder.glob("prefix-*.npz") if p != target),
                            key=lambda p: p.stat().st_mtime, reverse=True)
            for old in others[2:]:
                old.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only data folder only costs the next start-up the prefix evaluation


class LocalLlamaBackend:
    """Qwen2.5-Coder-1.5B-Instruct (ChatML) on llama.cpp: answers batched by a scheduler over a shared prefix."""

    name = "local"
    caches_prefix = True
    generative = True

    def __init__(self, model_path: Path, models_dir: Path, cache_dir: Path, n_ctx: int = 16384,
                 n_threads: int = 2, n_batch: int = 512, files: tuple[ModelFile, ...] = CHAT_FILES,
                 parallel: int = 4, queue: int = 8, fused: bool = False) -> None:
        self.model_path = model_path
        self.model = model_path.stem
        self._models_dir = models_dir
        self._specs = tuple(f for f in files if models_dir / f.path == model_path)  # pinned: verified by sha256
        self._verification: Verification | None = None
        self._damaged: str | None = None
        self._cache = PrefixCache(cache_dir)
        self.notice: str | None = None  # what a person should know while the backend gets ready (status line)
        self._n_ctx = n_ctx
        self._n_threads = n_threads
        self._n_batch = n_batch
        self.parallel = parallel
        self.queue = queue
        self.fused = fused
        self._engine: Any = None
        self._scheduler: Scheduler | None = None
        self._lock = threading.Lock()  # loading, and installing a new prefix
        self._prefix_key: str | None = None
        self._prefix_tokens: list[int] = []
        self.stats: dict[str, float] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalLlamaBackend:
        """The backend for the configured GGUF file."""
        models_dir = Path(settings.models_dir)
        cache_dir = settings.kv_cache_dir or Path(settings.data_dir) / "kv-cache"
        return cls(models_dir / settings.local_model_file, models_dir, cache_dir, settings.n_ctx, settings.n_threads,
                   parallel=settings.parallel, queue=settings.queue, fused=settings.batching == "fused")

    # -- loading --------------------------------------------------------------------------------
    def _load(self) -> Scheduler:
        if self._damaged:
            raise BackendUnavailableError(self._damaged)
        if self._scheduler is not None:
            return self._scheduler
        try:
            if self._specs:
                check(self._models_dir, self._specs)
            elif not self.model_path.is_file():
                raise ModelMissingError(f"Model file {self.model_path} is missing")
        except ModelMissingError as exc:
            raise BackendUnavailableError(str(exc).rstrip(".")) from None  # a reason, inside a sentence
        if self._specs and self._verification is None:  # the full sha256, beside the loading
            self._verification = Verification(self._models_dir, self._specs)
        try:
            from coach.llm.engine import LlamaEngine
        except ImportError:
            raise BackendUnavailableError(
                "llama-cpp-python is not installed: run `make run` (it builds it with CMAKE_ARGS=-DGGML_NATIVE=OFF)"
            ) from None
        start = time.perf_counter()
        try:
            engine = LlamaEngine(self.model_path, self._n_ctx, self.parallel, self._n_threads, self._n_batch,
                                 flash_attention=not self.fused)  # fused gives exactness up: the faster attention
        except Exception as exc:
            self._trust()  # a file that does not load may be a damaged one: say so rather than "could not load"
            raise BackendUnavailableError(f"the local model could not be loaded ({type(exc).__name__})") from None
        for stop in _STOP:  # a turn's end however it is spelt
            engine.ends.update(engine.tokenize(stop))
        self.stats["load_s"] = time.perf_counter() - start
        self._engine, self._scheduler = engine, Scheduler(engine, self.queue, self.fused)
        return self._scheduler

    def _trust(self) -> None:
        """Wait for the model file's verification; raise, and answer no more with it, if it is damaged."""
        problem = self._verification.problem() if self._verification is not None else None
        if problem:
            self._damaged = problem.rstrip(".")
            self.close()
            raise BackendUnavailableError(self._damaged)

    def close(self) -> None:
        """Stop the worker and free the model (answers being written end with an error)."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.close()
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
        self._prefix_key, self._prefix_tokens = None, []

    def _tokens(self, text: str) -> list[int]:
        return list(self._engine.tokenize(text))

    def count_tokens(self, text: str) -> int:
        """Tokens in the model's own tokenizer (an estimate until the model is loaded).

        Counts are remembered: the coach asks for the whole knowledge text's count several times per
        question (about 10 ms each to tokenize), and history turns come back with every follow-up.
        """
        if self._engine is None:
            return estimate_tokens(text)
        return self._count(text)

    @functools.lru_cache(maxsize=256)  # noqa: B019 - one backend per process; the cache is its to keep
    def _count(self, text: str) -> int:
        return len(self._engine.tokenize(text, special=False))

    @property
    def capacity(self) -> int:
        """Answers it takes at once: those in the batch and those waiting in line."""
        return self.parallel + self.queue

    def check_capacity(self) -> None:
        """Raise BusyError if a question asked now would be refused."""
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.check()

    def status(self) -> dict[str, Any]:
        """The scheduler's figures (slots, line, tokens), or {} before the model is loaded."""
        scheduler = self._scheduler
        return scheduler.status() if scheduler is not None else {}

    # -- the cached prefix ------------------------------------------------------------------------
    def _key(self, system: str) -> str:
        stat = self.model_path.stat() if self.model_path.exists() else None
        identity = f"{stat.st_size}|{stat.st_mtime_ns}" if stat else "0"  # a replaced model never meets old states
        attention = "no-fa" if self.fused else "flash-attn"  # the cells' values differ
        material = (f"{self.model_path.name}|{identity}|{self._n_ctx}|{self._n_batch}|seq-state|{attention}|"
                    f"{_USER_HEAD}|{system}")
        return hashlib.sha256(material.encode("utf-8")).hexdigest()[:20]

    def prepare(self, system: str) -> None:
        """Make the shared prefix hold the system prompt: from disk, or by evaluating it once.

        Run at start-up in the background: it also waits for the model file's sha256 check, so a damaged
        file is reported before anyone asks.
        """
        with self._lock:
            self._load()
            self._trust()
            self._ensure_prefix(system)

    def _ensure_prefix(self, system: str) -> None:
        scheduler = self._load()
        key = self._key(system)
        if key == self._prefix_key:
            return
        tokens = self._tokens(_chatml("system", system)) + self._tokens(_USER_HEAD)
        saved, discarded = self._cache.read(key)
        if saved is not None and (saved.n_tokens != len(tokens) or list(saved.input_ids) != tokens):
            saved, discarded = None, self._cache.discard(key, "the saved one does not fit this model")
        start = time.perf_counter()
        if saved is not None:
            if scheduler.restore_prefix(tokens, saved.llama_state):
                self.stats["prefix_restore_s"] = time.perf_counter() - start
                self._prefix_key, self._prefix_tokens = key, tokens
                return
            # "Failed to set llama state data": a state llama.cpp refuses; never tried again
            discarded = self._cache.discard(key, "the saved one could not be restored")
        self._trust()  # never spend minutes on a damaged model file, nor keep a state it computed
        if discarded:
            self.notice = f"rebuilding the prompt cache ({discarded}); the first answer waits for it"
        start = time.perf_counter()
        try:
            state = scheduler.evaluate_prefix(tokens)
        finally:
            self.notice = None
        self.stats["prefix_eval_s"] = time.perf_counter() - start
        self.stats["prefix_tokens"] = len(tokens)
        self._cache.write(key, SavedPrefix(len(tokens), np.asarray(tokens, dtype=np.intc), state, 0))
        self._prefix_key, self._prefix_tokens = key, tokens

    # -- generation -----------------------------------------------------------------------------------
    def stream(self, request: Request) -> Iterator[str]:
        """Yield the reply, written in the shared batch; the system message is served from the shared prefix."""
        messages, max_tokens = request.messages, request.max_tokens
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        rest = "".join(_chatml(m["role"], m["content"]) for m in messages if m["role"] != "system")
        with self._lock:
            scheduler = self._load()
            if system:
                self._ensure_prefix(system)
            prefix = self._prefix_tokens if system else []
        if system and rest.startswith(_USER_HEAD):
            rest = rest[len(_USER_HEAD):]
        elif system:  # not a user turn next: the scheduler reuses the prefix up to where the prompts differ
            prefix = prefix[: len(prefix) - len(self._tokens(_USER_HEAD))]
        tokens = prefix + self._tokens(rest + _ASSISTANT_HEAD)
        if len(tokens) + max_tokens > self._n_ctx:
            raise BackendUnavailableError(
                f"the prompt ({len(tokens)} tokens) does not fit the context window ({self._n_ctx})")
        self.stats["prompt_tokens"] = len(tokens)
        # Nothing is written with a model file not known to be good. The check runs beside loading and is
        # long done by now, except on the first answer after the file changed, which waits for the rest.
        self._trust()
        grammar = _grammar(request.json_schema) if request.json_schema is not None else None
        job = scheduler.submit(tokens, max_tokens, Sampling(request.temperature, grammar))
        stop = current_stop()
        forget = stop.on_stop(job.cancel) if stop is not None else None
        try:
            yield from scheduler.pieces(job)
        finally:
            job.cancel()
            if forget is not None:
                forget()


@functools.lru_cache(maxsize=8)
def _grammar_cached(schema_json: str) -> Any:
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_json_schema(schema_json, verbose=False)


def _grammar(schema: dict[str, Any]) -> Any:
    """A llama.cpp grammar that only lets the model write JSON of this schema (built once per schema)."""
    import json

    return _grammar_cached(json.dumps(schema, sort_keys=True))
