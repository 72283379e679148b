"""Fixtures of the UI tests: a real index (real embedding model, embedded Chroma) and real Gradio servers.

Used by test_ui.py and test_browser.py through `pytest_plugins = ["test_ui_fixtures"]`; it holds no tests.
Both fixtures load the real embedding model, so conftest.NEEDS_MARKER makes a test using them say
`integration`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, GateChat, free_port

from coach.coach import Coach
from coach.config import Settings
from coach.llm.fake import FakeChat
from coach.prompts import Prompts
from coach.retrieval import HybridRetriever

# A knowledge file whose text carries HTML: it must reach the browser as text, never as markup.
HTML_FILE = "99-office-mascot.md"
HTML_KNOWLEDGE = """---
role: Senior Software Engineering Manager in AI
---

# Office Mascot

## Mascot Policy

The office mascot is a beagle called Rex. Rex's badge reads <b>Chief Morale Officer</b> and the
welcome sign says <img src=x onerror="window.__pwned='knowledge'"> in the lobby.
"""
HTML_QUESTION = "What is the office mascot policy for Rex the beagle?"

# A question and what the fake model says to it (word by word), citing the sources it is given. The reply is
# the whole answer: the question asks for no list and names no item, so the coach adds nothing to it (shape.py).
FAKE_QUESTION = "What is this role about?"
FAKE_REPLY = ("The role leads teams of engineers and applied scientists [1] and oversees the architecture "
              "of AI systems [2]. It also manages AI engineering projects [1].")


@dataclass
class UiIndex:
    """A knowledge folder (the repository's plus HTML_FILE) and one retriever over its index."""

    knowledge: Path
    retriever: HybridRetriever
    prompts: Prompts
    make_settings: Callable[..., Settings]  # conftest's settings_factory

    def settings(self, data: Path, **extra: Any) -> Settings:
        """Settings on this knowledge folder with their own data folder (blind to .env and COACH_*)."""
        return self.make_settings(self.knowledge, data, **extra)


@pytest.fixture(scope="session")
def ui_index(tmp_path_factory: pytest.TempPathFactory, real_embedder: Any, prompts: Prompts,
             settings_factory: Callable[..., Settings]) -> UiIndex:
    """The repository's knowledge plus HTML_KNOWLEDGE, indexed with the real MiniLM in an embedded Chroma."""
    from coach.factory import build_retriever_for

    root = tmp_path_factory.mktemp("ui-index")
    knowledge = root / "knowledge"
    shutil.copytree(REPO / "knowledge", knowledge)
    (knowledge / HTML_FILE).write_text(HTML_KNOWLEDGE, encoding="utf-8")
    settings = settings_factory(knowledge, root / "data")
    retriever = build_retriever_for(settings, real_embedder, say=lambda _: None)
    retriever.warm()
    return UiIndex(knowledge, retriever, prompts, settings_factory)


def ui_coach(index: UiIndex, data: Path, backend: Any = None, **extra: Any) -> Coach:
    """A Coach on the shared index with this backend object (extractive when None) and its own data folder."""
    from coach.llm.extractive import ExtractiveBackend

    backend = backend if backend is not None else ExtractiveBackend()
    settings = index.settings(data, **{"port": free_port(), **extra})
    return Coach(settings, index.retriever, backend, index.prompts)


@dataclass
class UiServer:
    """A running chat page."""

    url: str
    coach: Coach
    demo: Any

    @property
    def settings(self) -> Settings:
        return self.coach.settings

    def feedback(self) -> list[dict[str, Any]]:
        """The likes and dislikes given on this server's page, oldest first."""
        from coach.feedback import FeedbackStore

        store = FeedbackStore(self.settings.database)
        try:
            return list(store.rows())
        finally:
            store.close()

    def close(self) -> None:
        self.demo.close()


def start_server(coach: Coach, api: bool = False) -> UiServer:
    """build_ui + launch on the coach's (free, loopback) port, without blocking; with `api`, also /v1 and /healthz."""
    from coach.ui import build_ui, launch

    demo = build_ui(coach, coach.settings)
    url = launch(demo, coach.settings, block=False, quiet=True, coach=coach if api else None)
    return UiServer(url.rstrip("/") + "/", coach, demo)


@pytest.fixture(scope="module")
def server_factory(ui_index: UiIndex, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Callable[..., UiServer]]:
    """server_factory(backend=None, api=False, **settings): a running server (its own data folder), with the
    OpenAI-compatible API when `api`; closed with the module."""
    started: list[UiServer] = []

    def start(backend: Any = None, api: bool = False, **extra: Any) -> UiServer:
        server = start_server(ui_coach(ui_index, tmp_path_factory.mktemp("ui-data"), backend, **extra), api=api)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def fake(server: UiServer) -> FakeChat:
    """The server's fake chat model (it records what it was sent)."""
    backend = server.coach.backend
    assert isinstance(backend, FakeChat)
    return backend


def gate(server: UiServer) -> GateChat:
    """The server's gated fake chat model."""
    backend = server.coach.backend
    assert isinstance(backend, GateChat)
    return backend


# -- Debian's Chromium, never a browser downloaded by `playwright install` ------------------------------
CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, for the whole module."""
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: run `make browser` (installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
    yield browser
    browser.close()
    playwright.stop()
