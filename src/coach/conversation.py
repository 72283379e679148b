"""The conversation stage: a clean question, the earlier turns that fit, replayed as the model saw them,
and the question made standalone for retrieval."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from coach.errors import BackendUnavailableError, CoachError
from coach.guards import looks_like_injection, neutralise_roles
from coach.llm.base import ChatBackend, Message, Request
from coach.prompts import Prompts
from coach.text import strip_citations, without_invisible

_FOLLOW_UP = re.compile(
    r"^(and|but|or|so|also|what about|how about|then)\b"
    r"|\b(it|its|that|this one|those|these|they|them|their|he|she|him|her|the (first|second|third|last|"
    r"other|previous|same) (one|ones|item|point)?|one|ones|above|previous(ly)?|earlier|more|else|instead)\b",
    re.IGNORECASE,
)


class InputError(CoachError):
    """The question cannot be asked as it is (empty, too long)."""


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """Text with the stand-ins of invalid bytes replaced by U+FFFD.

    Bytes that are not UTF-8 reach Python as lone surrogates (a command-line argument, stdin, a JSON
    "\\udcff"); the tokenizers and every encoder refuse those.
    """
    return _SURROGATE.sub("\ufffd", text)


def user_text(text: str) -> str:
    """A person's message as the model may see it: valid, visible characters, role markers quoted."""
    return neutralise_roles(without_invisible(valid_text(text))).strip()


def clean_question(text: str | None, limit: int) -> str:
    """The question normalised (valid UTF-8, NFC, no control or zero-width characters, role markers quoted,
    see guards.neutralise_roles); raises InputError if unusable."""
    text = text or ""
    if len(text) > limit:
        raise InputError(f"Your message is {len(text):,} characters long; the limit is {limit:,}. "
                         "Please shorten it and ask again.")
    text = user_text(text)
    if not text:
        raise InputError("The question is empty: type a question about the role, e.g. “What does it pay?”")
    return text


def is_follow_up(question: str) -> bool:
    """Whether the question leans on the conversation ("and what does it pay?")."""
    return bool(_FOLLOW_UP.search(question))


# Words that point back at the conversation: a follow-up holding one needs it to be understood.
_REFERS = re.compile(r"\b(it|its|that|this one|those|these|they|them|their|he|she|him|her|one|ones|above|"
                     r"previous(ly)?|earlier|else|instead|the (first|second|third|last|other|previous|same))\b",
                     re.IGNORECASE)
_LEAD = re.compile(r"^\s*(?:(?:and|but|or|so|also|then|ok(?:ay)?|now|what about|how about)\b[\s,]*)+", re.IGNORECASE)
# A follow-up that goes on with a preposition modifies the previous question ("and for a director?").
_MODIFIER = re.compile(r"^(?:for|in|at|with|as|on|by|from|to|of|over|under|after|before|without|within|per|"
                       r"across|outside|inside)\b", re.IGNORECASE)


def new_subject(question: str) -> bool:
    """Whether a follow-up names a subject of its own ("And what about the bonus?"): content words, nothing
    pointing back, and not a phrase that modifies the previous question ("and for a director?"). Such a
    question is searched as written; taking the previous question along would search the old topic."""
    from coach.retrieval import tokenize

    rest = _LEAD.sub("", question).strip()
    return bool(tokenize(rest)) and not _REFERS.search(rest) and not _MODIFIER.match(rest)


def _key(text: str) -> str:
    return " ".join(text.split())


class Said(NamedTuple):
    """An answered turn as the model saw it."""

    question: str  # as the person asked it
    sent: str  # the user message the model was sent
    raw: str  # the model's own reply, or a summary of an answer no model wrote
    summary: bool = False  # raw is a one-line summary (the planner's answer): sent as plain history too


class ReplayMemory:
    """Shown answer -> the turn as the model saw it (Said).

    A follow-up then sends the model the earlier turn exactly as it was, so llama.cpp still finds it
    in its KV cache and evaluates only the new question.
    """

    def __init__(self, size: int = 512) -> None:
        self._turns: OrderedDict[str, Said] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def remember(self, shown: str, said: Said) -> None:
        """Keep one answered turn (the oldest are forgotten beyond the size)."""
        with self._lock:
            self._turns[_key(shown)] = said
            while len(self._turns) > self._size:
                self._turns.popitem(last=False)

    def recall(self, shown: str) -> Said | None:
        """The turn behind an answer this coach showed, if it is remembered."""
        with self._lock:
            return self._turns.get(_key(shown))


@dataclass
class History:
    """The earlier turns of a conversation, two ways."""

    plain: list[Message] = field(default_factory=list)  # as shown, citations dropped: for the rewrite
    replayed: list[Message] = field(default_factory=list)  # as the model saw them, where remembered


def history(messages: list[dict[str, Any]] | None, replay: ReplayMemory | None = None) -> History:
    """User and assistant turns of a chat history; sources blocks and notices (messages with a title) are dropped.

    In `replayed`, an answer the replay memory knows is the model's own words and its question the
    message the model was sent. Elsewhere answers lose their citation numbers: those referred to that
    answer's sources, not to the next prompt's.
    """
    out = History()
    refused = False
    for m in messages or []:
        role, content = m.get("role"), m.get("content")
        if role not in ("user", "assistant") or not isinstance(content, str) or not content.strip():
            continue
        if (m.get("metadata") or {}).get("title"):
            continue
        if role == "user":
            content = user_text(content)  # cleaned as the question was: a remembered turn is still recognised
            # An injection attempt was refused: neither it nor the refusal goes back to the model.
            refused = looks_like_injection(content)
            if not refused:
                out.plain.append({"role": "user", "content": content})
                out.replayed.append({"role": "user", "content": content})
            continue
        if refused:
            continue
        said = replay.recall(content) if replay is not None else None
        # An answer as shown (an API client may send any text as one) gets the question's treatment too.
        shown = said.raw if said and said.summary else neutralise_roles(without_invisible(valid_text(content)))
        plain = {"role": "assistant", "content": strip_citations(shown)}
        out.plain.append(plain)
        last = out.replayed[-1] if out.replayed else None
        if said and last is not None and last["role"] == "user" and last["content"].strip() == said.question:
            out.replayed[-1] = {"role": "user", "content": said.sent}
            out.replayed.append({"role": "assistant", "content": said.raw})
        else:
            out.replayed.append(plain)
    return out


def trim(messages: list[Message], budget: int, count: Callable[[str], int]) -> list[Message]:
    """The most recent turns that fit the token budget, starting with a user turn."""
    kept: list[Message] = []
    for m in reversed(messages):
        cost = count(m["content"]) + 4
        if cost > budget:
            break
        kept.insert(0, m)
        budget -= cost
    while kept and kept[0]["role"] != "user":
        kept.pop(0)
    return kept


def standalone(question: str, history: list[Message], backend: ChatBackend, prompts: Prompts) -> str:
    """The question rewritten so that it can be searched without the conversation.

    A remote model rewrites a follow-up cheaply; for a local model with a cached prefix an extra call
    would cost a whole uncached prompt, so the previous question is prepended instead (enough for
    retrieval, and the model itself still sees the conversation).
    """
    previous = [m["content"] for m in history if m["role"] == "user"]
    if not previous or not is_follow_up(question) or new_subject(question):
        return question
    if backend.generative and not backend.caches_prefix:
        lines = "\n".join(f"{m['role']}: {m['content'][:400]}" for m in history[-4:])
        prompt = prompts.render("rewrite", history=lines, question=question)
        try:
            text = "".join(backend.stream(Request([{"role": "user", "content": prompt}], 60))).strip()
            text = text.splitlines()[0].strip().strip('"') if text else ""
            if 3 <= len(text) <= 400:
                return text
        except BackendUnavailableError:
            pass
    return f"{previous[-1]} {question}"
