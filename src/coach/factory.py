"""Wiring: settings -> embedder, index (synced when needed), retriever, backend, prompts -> Coach."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from coach import knowledge
from coach.coach import Coach
from coach.config import Settings
from coach.llm import make_backend
from coach.prompts import Prompts
from coach.retrieval import build_retriever
from coach.store import Embedder, Index, SyncReport, default_embedder, open_index


def ensure_index(settings: Settings, index: Index, say: Callable[[str], None] = print) -> SyncReport | None:
    """Sync the knowledge folder into the index (cheap when nothing changed); warn about skipped files."""
    kb = knowledge.load(Path(settings.knowledge_dir), settings.chunk_max_words)
    for warning in kb.warnings:
        say(f"warning: {warning}")
    return index.sync(kb.chunks, progress=False)


def build_coach(settings: Settings, backend: str | None = None, sync: bool = True,
                embedder: Embedder | None = None, say: Callable[[str], None] = print) -> Coach:
    """A ready Coach for these settings; `sync` first brings the index up to date with the knowledge folder."""
    index = open_index(settings, embedder or default_embedder(settings))
    if sync:
        report = ensure_index(settings, index, say)
        if report is not None and report.embedded + report.removed:
            say(f"index: {report.summary()}")
    name = backend or settings.backend
    return Coach(settings, build_retriever(index, settings), make_backend(name, settings),
                 Prompts(Path(settings.prompts_dir)), backend_name=name)
