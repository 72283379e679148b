"""Answering in the chat page: the backends a person may pick, one question's steps as the chat changes,
and a blocking stream run off the event loop so that a stop is felt at once."""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from coach.coach import Coach
from coach.config import Settings
from coach.conversation import InputError
from coach.errors import CoachError
from coach.planner import Profile
from coach.ui import chat
from coach.ui.chat import Conversation, Turn

log = logging.getLogger("coach.ui")

APOLOGY = "Sorry, something went wrong while answering (the details were logged). Please try again."
Step = tuple[Any, Any, Any, Any]  # chatbot messages, status line, details, conversation
T = TypeVar("T")


# -- backends a person may pick -----------------------------------------------------------------
def available_backends(default: Coach, settings: Settings) -> list[tuple[str, str]]:
    """(label, name) of the backends that can work here: extractive always, the others when configured."""
    names = ["local", "openai", "extractive"]
    if default.backend_name not in names:
        names.append(default.backend_name)
    works = {
        "local": (Path(settings.models_dir) / settings.local_model_file).is_file(),
        "openai": bool(settings.openai_base_url or settings.openai_api_key),
        "extractive": True,
    }
    labels = {
        "local": f"local model ({Path(settings.local_model_file).stem})",
        "openai": f"OpenAI-compatible ({settings.openai_model})",
        "extractive": "extractive (quotes the sources, no model)",
    }
    return [(labels.get(n, n), n) for n in names if n == default.backend_name or works.get(n)]


class Backends:
    """The coaches a person may choose from, built on first use; all share the default coach's index."""

    def __init__(self, default: Coach, settings: Settings) -> None:
        self.default = default
        self.choices = available_backends(default, settings)
        self._coaches = {default.backend_name: default}
        self._lock = threading.Lock()

    def get(self, name: str | None) -> Coach:
        """The coach answering with backend `name` (the default one when None)."""
        from coach.factory import sibling

        name = name or self.default.backend_name
        if name not in {n for _, n in self.choices}:
            raise CoachError(f"The {name} backend is not available here.")
        with self._lock:
            if name not in self._coaches:
                coach = sibling(self.default, name)
                coach.warm_in_background()
                self._coaches[name] = coach
            return self._coaches[name]


def status_line(coach: Coach, took_ms: float | None = None, fallback: str | None = None) -> str:
    """Backend and model in use, indexed passages, and a note when the extractive fallback answered."""
    try:
        indexed = f"{coach.retriever.count():,} passages indexed"
    except Exception:  # a Chroma server that went away must not break the page
        indexed = "index unavailable"
    parts = [f"Backend **{html.escape(coach.backend_name)}**", f"model `{html.escape(coach.model_name)}`", indexed]
    if took_ms is not None:
        parts.append(f"answered in {took_ms / 1000:.1f} s" if took_ms >= 1000 else f"answered in {took_ms:.0f} ms")
        if fallback:
            parts.append(f"**note:** the extractive fallback answered ({html.escape(fallback)})")
    elif coach.warm_error:
        parts.append(f"**note:** the model is not ready ({html.escape(coach.warm_error)})")
    elif notice := getattr(coach.backend, "notice", None):  # e.g. the local model rebuilding its prompt cache
        parts.append(f"**note:** {html.escape(str(notice))}")
    if coach.retriever.index.note:  # the knowledge folder changed and was re-read (coach.watch)
        parts.append(html.escape(coach.retriever.index.note))
    return " · ".join(parts)


# -- answering ------------------------------------------------------------------------------------
def answer_steps(backends: Backends, settings: Settings, message: str, conversation: Conversation | None,
                 backend: str | None, top_k: float | None, profile: Profile | None = None,
                 role: str | None = None) -> Iterator[Step]:
    """The chat as it changes while one question is answered; the conversation data is the last item.

    A conversation keeps the role it was started with (its `role`); `role` (the page's picker) names the
    role of a conversation that has none yet.
    """
    question = message or ""
    turn = Turn(question)
    try:
        role = chat.role_of(conversation) or role
        coach = backends.get(backend).for_role(role)
        conversation = chat.with_role(conversation, coach.retriever.role)
        turn.backend = coach.backend_name
        history = chat.history_for_coach(conversation)
        shown = chat.with_turn(conversation, turn)
        for event in coach.stream(question, history, top_k=int(top_k) if top_k else None, profile=profile):
            if event.kind == "sources":
                turn.sources = chat.source_dicts(event.sources)
                if not coach.backend.generative:
                    continue  # its answer is the key points themselves, which come next
                interim = Turn(question, event.text, turn.sources, "answering", note="writing", backend=turn.backend)
                shown = chat.with_turn(conversation, interim)
            elif event.kind in ("token", "replace"):
                turn.answer = turn.answer + event.text if event.kind == "token" else event.text
                turn.sources = chat.source_dicts(event.sources) if event.sources else turn.sources
                shown = chat.with_turn(conversation, turn)
            elif event.kind == "done" and event.answer is not None:
                answer = event.answer
                turn.answer, turn.sources, turn.status = answer.text, chat.source_dicts(answer.sources), "answered"
                done = chat.with_turn(conversation, turn)
                yield (chat.render(done), status_line(coach, answer.latency_ms, answer.fallback),
                       chat.details(turn, answer), done)
                return
            yield chat.render(shown), gr.skip(), chat.details(turn), shown
    except InputError as exc:
        turn.status, turn.note = "refused", str(exc)
    except CoachError as exc:  # e.g. the index became unreachable: what was shown stays, then the reason
        turn.status, turn.note = "error", f"{turn.answer}\n\n{exc}".strip()
    except Exception:
        log.exception("answering %r failed", question[:200])
        turn.status, turn.note = "error", APOLOGY
    done = chat.with_turn(conversation, turn)
    yield chat.render(done), gr.skip(), chat.details(turn, error=turn.note), done


def settle(conversation: Conversation | None) -> Conversation | None:
    """After an answer stopped by the person: its last turn is kept as stopped, not as still answering."""
    last = chat.turns(conversation)[-1:] if conversation else []
    if last and last[0].status == "answering":
        turn = last[0]
        turn.status, turn.note = "error", (turn.answer + "\n\n*(stopped)*").strip()
        return chat.with_turn(conversation, turn, replace_last=True)
    return conversation


def forget(conversation: Conversation | None, saved: list[Conversation] | None) -> tuple[Conversation, list[Any]]:
    """The chat was cleared: a new conversation, and the cleared one removed from the saved ones."""
    gone = (conversation or {}).get("id")
    return chat.new_conversation(), [c for c in saved or [] if isinstance(c, dict) and c.get("id") != gone]


def save_conversation(conversation: Conversation | None, saved: list[Conversation] | None) -> list[Conversation]:
    """The saved conversations with this one first (replacing its older copy)."""
    saved = [c for c in (saved or []) if isinstance(c, dict)]
    if not conversation or not conversation.get("turns"):
        return saved
    return [conversation, *(c for c in saved if c.get("id") != conversation.get("id"))][:50]
