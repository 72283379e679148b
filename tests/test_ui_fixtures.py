"""Fixtures of the UI tests: a real index (real embedding model, embedded Chroma) and real Gradio servers.

Imported by test_ui.py and test_browser.py; it holds no tests itself.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_OFFLINE"] = "1"

from coach.coach import Coach  # noqa: E402
from coach.config import Settings  # noqa: E402
from coach.llm.base import Message  # noqa: E402
from coach.llm.fake import FakeChat  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# A knowledge file whose text carries HTML: it must reach the browser as text, never as markup.
HTML_KNOWLEDGE = """---
role: Senior Software Engineering Manager in AI
---

# Office Mascot

## Mascot Policy

The office mascot is a beagle called Rex. Rex's badge reads <b>Chief Morale Officer</b> and the
welcome sign says <img src=x onerror="window.__pwned='knowledge'"> in the lobby.
"""
HTML_QUESTION = "What is the office mascot policy for Rex the beagle?"

FAKE_REPLY = ("The role leads teams of engineers and applied scientists [1] and oversees the architecture "
              "of AI systems [2]. It also manages AI engineering projects [1].")


class SlowChat(FakeChat):
    """The queued-reply fake, streaming word by word with a pause so that streaming can be seen."""

    def __init__(self, delay: float = 0.04, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay = delay

    def stream(self, messages: list[Message], max_tokens: int, temperature: float) -> Iterator[str]:
        for piece in super().stream(messages, max_tokens, temperature):
            time.sleep(self.delay)
            yield piece


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ui_settings(knowledge: Path, data: Path, chroma: Path, **extra: Any) -> Settings:
    """Settings that ignore .env and COACH_* variables, with the index in a shared folder."""
    return Settings(_env_file=None, knowledge_dir=knowledge, data_dir=data,  # type: ignore[call-arg]
                    models_dir=REPO / "models", prompts_dir=REPO / "prompts", chroma_path=chroma, **extra)


@dataclass
class UiIndex:
    """A knowledge folder and its index, built once per test session."""

    knowledge: Path
    chroma: Path
    embedder: Any
    root: Path


@pytest.fixture(scope="session")
def ui_index(tmp_path_factory: pytest.TempPathFactory) -> UiIndex:
    """The repository's knowledge plus HTML_KNOWLEDGE, indexed with the real embedding model."""
    from coach.embeddings import MiniLMEmbeddings
    from coach.factory import ensure_index
    from coach.store import open_index

    root = tmp_path_factory.mktemp("ui-index")
    knowledge = root / "knowledge"
    shutil.copytree(REPO / "knowledge", knowledge)
    (knowledge / "99-office-mascot.md").write_text(HTML_KNOWLEDGE, encoding="utf-8")
    embedder = MiniLMEmbeddings(REPO / "models")
    settings = ui_settings(knowledge, root / "data", root / "chroma")
    ensure_index(settings, open_index(settings, embedder), say=lambda _: None)
    return UiIndex(knowledge, root / "chroma", embedder, root)


def make_coach(index: UiIndex, data: Path, backend: Any = None, name: str = "extractive",
               **extra: Any) -> Coach:
    """A Coach wired as factory.build_coach does, on the shared index, with a given backend object."""
    from coach.prompts import Prompts
    from coach.retrieval import build_retriever
    from coach.store import open_index

    settings = ui_settings(index.knowledge, data, index.chroma, backend=name, port=free_port(), **extra)
    retriever = build_retriever(open_index(settings, index.embedder), settings)
    return Coach(settings, retriever, backend, Prompts(settings.prompts_dir), backend_name=name)


@dataclass
class UiServer:
    """A running chat UI."""

    url: str
    coach: Coach
    settings: Settings
    demo: Any

    @property
    def feedback_file(self) -> Path:
        return self.settings.feedback_file


def start_server(coach: Coach) -> UiServer:
    """build_ui + launch on a free loopback port, without blocking."""
    from coach.ui import build_ui, launch

    demo = build_ui(coach, coach.settings)
    url = launch(demo, coach.settings, block=False, quiet=True)
    return UiServer(url.rstrip("/") + "/", coach, coach.settings, demo)


@pytest.fixture(scope="module")
def server_factory(ui_index: UiIndex, tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[Callable[..., UiServer]]:
    """Start servers for a module (each with its own data folder); all are closed at the end."""
    started: list[UiServer] = []

    def start(backend: Any = None, name: str = "extractive", **extra: Any) -> UiServer:
        data = tmp_path_factory.mktemp(f"ui-data-{name}")
        server = start_server(make_coach(ui_index, data, backend, name, **extra))
        started.append(server)
        return server

    yield start
    for server in started:
        server.demo.close()
