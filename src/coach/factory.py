"""Wiring, in one place: settings -> embedder, index (synced when needed), retriever, backend, prompts -> Coach."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from coach import knowledge, roles
from coach.coach import Coach
from coach.config import Settings
from coach.llm import make_backend
from coach.prompts import Prompts
from coach.retrieval import HybridRetriever, build_retriever
from coach.store import Embedder, Index, SyncReport, default_embedder, open_index
from coach.watch import index_lock

Say = Callable[[str], None]


def sync_index(settings: Settings, index: Index, rebuild: bool = False, progress: bool = False,
               say: Say = print) -> SyncReport:
    """Bring the index up to date with the knowledge folder (cheap when nothing changed); warn about skipped files."""
    kb = knowledge.load(Path(settings.knowledge_dir), settings.chunk_max_words)
    for warning in kb.warnings:
        say(f"warning: {warning}")
    with index_lock(settings):  # a running server's watch may be writing it (coach.watch)
        return index.rebuild(kb.chunks, progress) if rebuild else index.sync(kb.chunks, progress)


def build_retriever_for(settings: Settings, embedder: Embedder | None = None, sync: bool = True,
                        say: Say = print) -> HybridRetriever:
    """The retriever over the configured index; `sync` first brings the index up to date."""
    index = open_index(settings, embedder or default_embedder(settings))
    if sync:
        report = sync_index(settings, index, say=say)
        if report.embedded + report.removed:
            say(f"index: {report.summary()}")
    return scoped_to_default(build_retriever(index, settings), settings)


def scoped_to_default(retriever: HybridRetriever, settings: Settings) -> HybridRetriever:
    """The retriever of the default role when the index holds several roles (COACH_ROLE, else the first
    file's); the whole index when it holds one. Raises CoachError when COACH_ROLE names no role."""
    found = retriever.roles()
    if len(found) <= 1 and not settings.role:
        return retriever
    return retriever.scoped(roles.ordered(found, settings.role)[0])


def build_coach(settings: Settings, backend: str | None = None, sync: bool = True,
                embedder: Embedder | None = None, retriever: HybridRetriever | None = None,
                say: Say = print) -> Coach:
    """A ready Coach for these settings, answering with `backend` (default: settings.backend).

    Give `retriever` to share one index and one lexical index between coaches of several backends.
    """
    if retriever is None:
        retriever = build_retriever_for(settings, embedder, sync, say)
    return Coach(settings, retriever, make_backend(backend or settings.backend, settings),
                 Prompts(Path(settings.prompts_dir)))


def sibling(coach: Coach, backend: str) -> Coach:
    """A coach answering with another backend that shares this one's index, prompts and embedded units."""
    return Coach(coach.settings, coach.retriever, make_backend(backend, coach.settings), coach.prompts,
                 similarity=coach.similarity)
