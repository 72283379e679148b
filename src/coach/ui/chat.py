"""A conversation of the chat page as data: turns with their answers, sources and status, JSON-ready.

The page keeps conversations as this data (in the session, and in the browser across reloads) and
draws the chat from it; nothing is ever parsed back from the rendered Markdown. Everything shown is
escaped: a question or a passage with HTML in it appears as typed, never as markup.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from coach.answer import Answer
from coach.retrieval import Passage

SOURCES_TITLE = "Sources"
Status = Literal["answering", "answered", "refused", "error"]
Conversation = dict[str, Any]  # {"id", "title", "turns": [Turn as dict]}


def escape_text(text: str) -> str:
    """Text made inert for the chat's Markdown renderer: tags appear literally, images are not fetched."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("![", "&#33;[")


def source_dicts(sources: list[Passage]) -> list[dict[str, Any]]:
    """Sources as data, numbered as the answer cites them."""
    return [{"n": n, "label": p.label, "section": p.section, "subsection": p.subsection, "source": p.source,
             "text": p.text} for n, p in enumerate(sources, 1)]


def new_conversation(role: str | None = None) -> Conversation:
    """An empty conversation with a fresh id (of `role` when the knowledge base holds several)."""
    return {"id": uuid.uuid4().hex, "title": "", "turns": [], **({"role": role} if role else {})}


def role_of(conversation: Conversation | None) -> str | None:
    """The role a conversation is about (None: the default role, or a conversation from before roles)."""
    role = (conversation or {}).get("role")
    return role if isinstance(role, str) and role else None


def with_role(conversation: Conversation | None, role: str | None) -> Conversation | None:
    """The conversation tied to `role` (unchanged when it has one, or there is no role to tie it to)."""
    if not role or role_of(conversation):
        return conversation
    return {**(conversation or new_conversation()), "role": role}


@dataclass
class Turn:
    """One question and what came of it."""

    question: str
    answer: str = ""
    sources: list[dict[str, Any]] | None = None
    status: Status = "answering"
    note: str = ""  # why a question was refused or failed (shown instead of an answer), or "writing"
    backend: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"question": self.question, "answer": self.answer, "sources": self.sources or [],
                "status": self.status, "note": self.note, "backend": self.backend}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Turn:
        """From to_dict() output (unknown keys ignored, so older saved chats still load)."""
        return cls(str(data.get("question", "")), str(data.get("answer", "")), list(data.get("sources") or []),
                   data.get("status", "answered"), str(data.get("note", "")), str(data.get("backend", "")))


def turns(conversation: Conversation | None) -> list[Turn]:
    """The turns of a conversation."""
    return [Turn.from_dict(t) for t in (conversation or {}).get("turns", [])]


def with_turn(conversation: Conversation | None, turn: Turn, replace_last: bool = False) -> Conversation:
    """A copy of the conversation with the turn added (or replacing the last one)."""
    base = dict(conversation or new_conversation())
    kept = list(base.get("turns", []))
    if replace_last and kept:
        kept.pop()
    base["turns"] = [*kept, turn.to_dict()]
    base["title"] = base.get("title") or turn.question[:80]
    return base


def history_for_coach(conversation: Conversation | None) -> list[dict[str, str]]:
    """The question/answer pairs the coach should see: refused and failed turns are left out."""
    out: list[dict[str, str]] = []
    for turn in turns(conversation):
        if turn.status == "answered" and turn.answer.strip():
            out += [{"role": "user", "content": turn.question}, {"role": "assistant", "content": turn.answer}]
    return out


def sources_markdown(sources: list[dict[str, Any]]) -> str:
    """The sources block: `[n] Section > Subsection · file`, then the passage quoted (all escaped)."""
    blocks = []
    for s in sources:
        quoted = "\n".join(f"> {escape_text(line)}" if line.strip() else ">" for line in s["text"].strip().splitlines())
        blocks.append(f"**[{s['n']}] {escape_text(s['label'])}** · `{s['source']}`\n\n{quoted}")
    return "\n\n".join(blocks)


def render(conversation: Conversation | None, writing: str = "*Writing the answer…*") -> list[dict[str, Any]]:
    """The chatbot's messages for a conversation: each question, its answer and, under it, its sources."""
    messages: list[dict[str, Any]] = []
    for turn in turns(conversation):
        messages.append({"role": "user", "content": escape_text(turn.question)})
        if turn.status in ("refused", "error"):
            messages.append({"role": "assistant", "content": escape_text(turn.note)})
            continue
        text = escape_text(turn.answer)
        if turn.status == "answering" and (turn.note == "writing" or not text):
            text = f"{text}\n\n{writing}" if text else writing
        messages.append({"role": "assistant", "content": text})
        if turn.sources:
            messages.append({"role": "assistant", "content": sources_markdown(turn.sources),
                             "metadata": {"title": f"{SOURCES_TITLE} ({len(turn.sources)})", "status": "done"}})
    return messages


def turn_of_message(conversation: Conversation | None, index: int) -> int | None:
    """Which turn the chatbot message at `index` belongs to (as drawn by render)."""
    position = 0
    for n, turn in enumerate(turns(conversation)):
        size = 2 + (1 if turn.sources and turn.status not in ("refused", "error") else 0)
        if position <= index < position + size:
            return n
        position += size
    return None


def feedback_row(conversation: Conversation | None, index: Any, liked: Any) -> dict[str, Any] | None:
    """The feedback record of the answer drawn at message `index` (None if there is no answer there)."""
    i = index[0] if isinstance(index, list | tuple) else index
    if not isinstance(i, int):
        return None
    n = turn_of_message(conversation, i)
    if n is None:
        return None
    turn = turns(conversation)[n]
    if turn.status != "answered":
        return None
    verdict = {True: "like", False: "dislike"}.get(liked, str(liked or "unset"))
    return {"question": turn.question, "answer": turn.answer, "sources": turn.sources or [], "verdict": verdict,
            "backend": turn.backend}


def details(turn: Turn, answer: Answer | None = None, error: str | None = None) -> dict[str, Any]:
    """What the API returns beside the chat messages: the answer and its sources as data."""
    data: dict[str, Any] = {"answer": turn.answer, "done": turn.status != "answering", "error": error,
                            "sources": turn.sources or []}
    if answer is not None:
        data.update(backend=answer.backend, model=answer.model, fallback=answer.fallback, route=answer.route,
                    out_of_scope=answer.out_of_scope, ttft_ms=answer.ttft_ms, latency_ms=round(answer.latency_ms, 1))
        if answer.plan is not None:
            data["plan"] = answer.plan
    return data
