"""Chat backends behind one interface: local (llama.cpp in-process), openai-compatible, extractive, fake."""

from __future__ import annotations

from coach.config import Settings
from coach.llm.base import ChatBackend, Message, Request


def make_backend(name: str, settings: Settings) -> ChatBackend:
    """The backend called `name`; heavy SDKs are imported only when chosen."""
    if name == "extractive":
        from coach.llm.extractive import ExtractiveBackend

        return ExtractiveBackend()
    if name == "local":
        from coach.llm.local import LocalLlamaBackend

        return LocalLlamaBackend.from_settings(settings)
    if name == "openai":
        from coach.llm.openai_compat import OpenAIBackend

        return OpenAIBackend.from_settings(settings)
    if name == "fake":
        from coach.llm.fake import FakeChat

        return FakeChat()
    raise ValueError(f"unknown backend {name!r}; choose local, openai, extractive or fake")


__all__ = ["ChatBackend", "Message", "Request", "make_backend"]
