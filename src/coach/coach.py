"""The conversation: check the question, make it standalone, retrieve, prompt, stream, check, cite."""

from __future__ import annotations

import re
import threading
import time
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from coach import extractive, grounding
from coach.config import Settings
from coach.errors import BackendUnavailableError, CoachError
from coach.guards import CITE, Citations, StreamGuard, leaks, looks_like_injection, secret_ngrams
from coach.llm.base import ChatBackend, Message
from coach.prompts import Prompts
from coach.retrieval import HybridRetriever, Passage


class InputError(CoachError):
    """The question cannot be asked as it is (empty, too long)."""


_FOLLOW_UP = re.compile(
    r"^(and|but|or|so|also|what about|how about|then)\b"
    r"|\b(it|its|that|this one|those|these|they|them|their|he|she|him|her|the (first|second|third|last|"
    r"other|previous|same) (one|ones|item|point)?|one|ones|above|previous(ly)?|earlier|more|else|instead)\b",
    re.IGNORECASE,
)
_DECLINE = re.compile(
    r"(does not|doesn't|do not|don't|cannot|can't) (cover|contain|mention|include|say|provide|answer)"
    r"|not (covered|mentioned|included|available|provided) in|no information (about|on)",
    re.IGNORECASE,
)
# Where an answer that is long enough may stop: after a sentence (and its citation) or a list item.
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)(?<!\bvs)[.!?]\)?(\s*\[[\d,; ]+\])?$")
_LIST_ITEM = re.compile(r"^\s*([-*\u2022]|\d{1,2}[.)])\s+\S.*[^:\s]$")
_CONTROL = re.compile(r"[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-"
                      r"\u2064\ufeff]")



@dataclass
class Answer:
    """A finished answer: text, sources in the order they are cited, timings and provenance."""

    question: str
    standalone: str
    text: str = ""
    sources: list[Passage] = field(default_factory=list)
    backend: str = ""
    model: str = ""
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    out_of_scope: bool = False
    injection: bool = False
    fallback: str | None = None
    removed_figures: list[str] = field(default_factory=list)
    model_ttft_ms: float | None = None  # first token from the model (ttft_ms: first text shown)
    leaked: bool = False
    completion_tokens: int = 0
    generation_s: float = 0.0
    prompt: str = field(default="", repr=False)  # the user message the model was sent
    raw: str = field(default="", repr=False)  # what the model said, before any check or renumbering

    @property
    def tokens_per_second(self) -> float:
        """Generation speed of the model (0 without a model)."""
        return self.completion_tokens / self.generation_s if self.generation_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `coach ask --json` and of `coach eval --out` lines."""
        return {
            "question": self.question, "standalone_question": self.standalone, "answer": self.text,
            "sources": [p.to_dict() for p in self.sources], "latency_ms": round(self.latency_ms, 1),
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 1),
            "model_ttft_ms": None if self.model_ttft_ms is None else round(self.model_ttft_ms, 1),
            "backend": self.backend,
            "model": self.model, "out_of_scope": self.out_of_scope, "injection": self.injection,
            "fallback": self.fallback, "removed_figures": self.removed_figures,
            "completion_tokens": self.completion_tokens, "tokens_per_second": round(self.tokens_per_second, 2),
        }


@dataclass
class Event:
    """One step of a streamed answer.

    kinds: `sources` (retrieval finished: passages and extractive key points, before the model writes),
    `token` (more answer text), `replace` (the whole answer text changed, e.g. a figure was removed
    or the fallback answered), `done` (the final Answer).
    """

    kind: Literal["sources", "token", "replace", "done"]
    text: str = ""
    sources: list[Passage] = field(default_factory=list)
    answer: Answer | None = None


def clean_question(text: str, limit: int) -> str:
    """The question normalised (NFC, no control or zero-width characters); raises InputError if unusable."""
    if text is None:
        text = ""
    if len(text) > limit:
        raise InputError(f"Your message is {len(text):,} characters long; the limit is {limit:,}. "
                         "Please shorten it and ask again.")
    text = _CONTROL.sub("", unicodedata.normalize("NFC", text)).strip()
    if not text:
        raise InputError("The question is empty: type a question about the role, e.g. “What does it pay?”")
    return text


def _reply_key(text: str) -> str:
    return " ".join(text.split())


def unit_end(said: str, piece: str) -> int | None:
    """Where in the next piece an answer may stop: just after a sentence or a list item ends (or None).

    Pieces are model tokens, so a sentence's full stop may arrive with the white space after it (".\n").
    """
    for i, char in enumerate(piece):
        if not char.isspace():
            continue
        last_line = (said + piece[:i]).rstrip().rsplit("\n", 1)[-1]
        if not last_line:
            continue
        if _SENTENCE_END.search(last_line):
            return i
        if char == "\n" and _LIST_ITEM.match(last_line):
            return i
    return None


class Coach:
    """Answers questions about a role from the index, with one chat backend (or none: extractive)."""

    def __init__(self, settings: Settings, retriever: HybridRetriever, backend: ChatBackend | None,
                 prompts: Prompts, backend_name: str | None = None) -> None:
        self.settings = settings
        self.retriever = retriever
        self.backend = backend
        self.prompts = prompts
        self.backend_name = backend_name or (backend.name if backend else "extractive")
        self._kb_lock = threading.Lock()
        self._kb: tuple[Any, list[Passage], dict[str, int], str] | None = None
        self._kb_checked = 0.0  # the index is re-checked for changes at most every few seconds
        self.warm_error: str | None = None
        self._secret_grams: set[str] | None = None
        embedder = retriever.index.embedder
        self.similarity = extractive.UnitSimilarity(embedder.embed_query, embedder.embed_documents)
        # Shown answer -> (question, user message sent, raw reply): lets a follow-up send the model the
        # earlier turn exactly as it was, so llama.cpp finds it still in its KV cache.
        self._replies: OrderedDict[str, tuple[str, str, str]] = OrderedDict()
        self._replies_lock = threading.Lock()

    @property
    def model_name(self) -> str:
        """The model answering (or `none` for the extractive backend)."""
        return self.backend.model if self.backend else "none"

    # -- the knowledge base as a prompt prefix ---------------------------------------------------------
    def _knowledge(self) -> tuple[list[Passage], dict[str, int], str]:
        """Every passage in a stable order, its number, and the knowledge text of the system prompt."""
        with self._kb_lock:
            now = time.monotonic()
            if self._kb is not None and now - self._kb_checked < 5.0:
                return self._kb[1], self._kb[2], self._kb[3]
            self._kb_checked = now
            key = self.retriever.index.revision()
            if self._kb is None or self._kb[0] != key:
                _, ids, docs, metas = self.retriever.index.all_passages()
                order = sorted(range(len(ids)), key=lambda i: (metas[i].get("source", ""), ids[i]))
                passages = [Passage(ids[i], docs[i], metas[i].get("section", ""), metas[i].get("subsection", ""),
                                    metas[i].get("source", ""), metas[i].get("role", ""), 0.0) for i in order]
                numbers = {p.id: n for n, p in enumerate(passages, 1)}
                text = "\n\n".join(f"[{n}] {p.label}\n{p.text}" for n, p in enumerate(passages, 1))
                self._kb = (key, passages, numbers, text)
            return self._kb[1], self._kb[2], self._kb[3]

    def role(self) -> str:
        """The role (or roles) the knowledge base describes."""
        passages, _, _ = self._knowledge()
        roles = Counter(p.role for p in passages if p.role)
        return " / ".join(r for r, _ in roles.most_common(3)) or "this role"

    def topics(self) -> str:
        """What the coach can help with: the knowledge base's section titles."""
        passages, _, _ = self._knowledge()
        seen: list[str] = []
        for p in passages:
            if p.section and p.section not in seen:
                seen.append(p.section)
        return ", ".join(seen)

    def context_mode(self) -> str:
        """`knowledge` (whole knowledge base as a cached prefix) or `passages` (retrieved passages only)."""
        mode = self.settings.context_mode
        if mode != "auto":
            return mode
        if self.backend is None or not self.backend.caches_prefix:
            return "passages"
        _, _, text = self._knowledge()
        fits = self.backend.count_tokens(text) <= self.settings.knowledge_prefix_max_tokens
        return "knowledge" if fits else "passages"

    def system_prompt(self) -> str:
        """The system prompt of the current context mode."""
        if self.context_mode() == "knowledge":
            _, _, text = self._knowledge()
            return self.prompts.render("system_knowledge", role=self.role(), topics=self.topics(), knowledge=text,
                                       examples=self._examples())
        return self.prompts.render("system_passages", role=self.role(), topics=self.topics())

    def _user_knowledge(self, question: str, number: int | None, passage: Passage, lead: str = "") -> str:
        """The user message of knowledge mode: the question and the number and title of its best passage.

        One short reference: every token after the cached prefix adds about 25 ms to the first token. A
        title that several passages share (a long section split in parts) gets the best unit's first words.
        """
        title = passage.subsection or passage.section
        everything, _, _ = self._knowledge()
        if lead and sum(p.label == passage.label for p in everything) > 1:
            title = f"{title}: {lead}"
        refs = f"[{number}] {title}" if number else title
        named = {"refs": refs} if "refs" in self.prompts.variables("user_knowledge") else {}
        return self.prompts.render("user_knowledge", question=question, **named)

    def _examples(self) -> str:
        """Worked examples (prompts/examples_knowledge.txt) with their [@Section > Subsection] citations
        numbered as in the knowledge text; an example citing a passage that no longer exists is left out."""
        passages, numbers, _ = self._knowledge()
        by_label: dict[str, Passage] = {}
        for p in passages:
            by_label.setdefault(p.label, p)
        blocks = []
        for block in re.split(r"\n\s*\n", self.prompts.render("examples_knowledge").strip()):
            match = re.fullmatch(r"Question:\s*(.+?)\s*\nAnswer:\s*(.+)", block.strip(), re.DOTALL)
            labels = re.findall(r"\[@([^\]]+)\]", block)
            if not match or not labels or any(label not in by_label for label in labels):
                continue
            first = by_label[labels[0]]
            user = self._user_knowledge(match.group(1), numbers[first.id], first)
            reply = re.sub(r"\[@([^\]]+)\]", lambda m: f"[{numbers[by_label[m.group(1)].id]}]", match.group(2))
            blocks.append(f"User: {user.strip()}\nCoach: {reply.strip()}")
        return "\n\n".join(blocks)

    def warm(self) -> None:
        """Load the model and prepare its cached prompt prefix (run in the background at start-up)."""
        try:
            self.retriever.warm()
            if self.context_mode() == "knowledge":  # a small knowledge base: embed its units now
                self.similarity.prepare(self._knowledge()[0])
        except CoachError as exc:
            self.warm_error = str(exc)
            return
        if self.backend is None:
            return
        try:
            self.backend.prepare(self.system_prompt())
        except BackendUnavailableError as exc:
            self.warm_error = str(exc)
        except CoachError as exc:
            self.warm_error = str(exc)

    def warm_in_background(self) -> threading.Thread:
        """Start warm() on a daemon thread."""
        thread = threading.Thread(target=self.warm, name="coach-warm", daemon=True)
        thread.start()
        return thread

    # -- conversation -----------------------------------------------------------------------------------
    def _history(self, history: list[dict[str, Any]] | None, replay: bool = False) -> list[Message]:
        """User/assistant turns only: sources blocks and notices (messages with a title) are dropped.

        With `replay`, an answer this coach gave in knowledge mode is replaced by the model's own words and
        its question by the message the model was sent: the prompt then starts as the conversation that
        llama.cpp still holds in its KV cache, and only the new question is evaluated.
        """
        reuse = replay and bool(self._replies) and self.context_mode() == "knowledge"
        out: list[Message] = []
        for m in history or []:
            role, content = m.get("role"), m.get("content")
            if role not in ("user", "assistant") or not isinstance(content, str) or not content.strip():
                continue
            if (m.get("metadata") or {}).get("title"):
                continue
            if role == "assistant":
                with self._replies_lock:
                    said = self._replies.get(_reply_key(content)) if reuse else None
                if said and out and out[-1]["role"] == "user" and out[-1]["content"].strip() == said[0]:
                    out[-1] = {"role": "user", "content": said[1]}
                    out.append({"role": "assistant", "content": said[2]})
                    continue
                # Citation numbers of an earlier answer refer to that answer's sources, not this prompt's.
                content = CITE.sub("", content)
            out.append({"role": str(role), "content": content})
        return out

    def _trim(self, turns: list[Message]) -> list[Message]:
        """The most recent turns that fit the history token budget."""
        count = self.backend.count_tokens if self.backend else (lambda t: max(1, len(t) // 4))
        kept: list[Message] = []
        budget = self.settings.history_tokens
        for m in reversed(turns):
            cost = count(m["content"]) + 4
            if cost > budget:
                break
            kept.insert(0, m)
            budget -= cost
        while kept and kept[0]["role"] != "user":
            kept.pop(0)
        return kept

    def standalone(self, question: str, turns: list[Message]) -> str:
        """The question rewritten so that it can be searched without the conversation."""
        previous = [m["content"] for m in turns if m["role"] == "user"]
        if not previous or not _FOLLOW_UP.search(question):
            return question
        use_model = self.backend is not None and not self.backend.caches_prefix
        if use_model and self.backend is not None:
            # A remote model rewrites cheaply; for the local model an extra call would cost a whole
            # uncached prompt, so the previous question is prepended instead (enough for retrieval,
            # and the model itself still sees the conversation).
            history = "\n".join(f"{m['role']}: {m['content'][:400]}" for m in turns[-4:])
            prompt = self.prompts.render("rewrite", history=history, question=question)
            try:
                text = "".join(self.backend.stream([{"role": "user", "content": prompt}], 60, 0.0)).strip()
                text = text.splitlines()[0].strip().strip('"') if text else ""
                if 3 <= len(text) <= 400:
                    return text
            except BackendUnavailableError:
                pass
        return f"{previous[-1]} {question}"

    def stream(self, question: str, history: list[dict[str, Any]] | None = None,
               top_k: int | None = None) -> Iterator[Event]:
        """Answer one question in the context of history, as a stream of events ending with `done`."""
        start = time.perf_counter()
        question = clean_question(question, self.settings.max_question_chars)
        turns = self._trim(self._history(history))
        answer = Answer(question, question, backend=self.backend_name, model=self.model_name)

        def finish(text: str) -> Iterator[Event]:
            answer.text = text
            answer.latency_ms = (time.perf_counter() - start) * 1000
            if answer.ttft_ms is None:
                answer.ttft_ms = answer.latency_ms
            yield Event("done", text=text, sources=answer.sources, answer=answer)

        if looks_like_injection(question):
            answer.injection = True
            yield from finish(self.prompts.render("injection", role=self.role(), topics=self.topics()))
            return

        answer.standalone = self.standalone(question, turns)
        passages = self.retriever.search(answer.standalone, k=top_k or self.settings.top_k)
        if not self.retriever.covered(passages):
            answer.out_of_scope = True
            yield from finish(self.prompts.render("out_of_scope", role=self.role(), topics=self.topics()))
            return
        answer.sources = list(passages)
        points = extractive.key_points(answer.standalone, passages, similarity=self.similarity)
        key_facts = extractive.format_points(points, self.prompts.render("extractive_intro"))
        yield Event("sources", text=key_facts, sources=list(answer.sources))

        if self.backend is None:
            answer.ttft_ms = (time.perf_counter() - start) * 1000
            yield Event("token", text=key_facts)
            yield from finish(key_facts)
            return

        streamed: list[str] = []
        try:
            replayed = self._trim(self._history(history, replay=True))
            best = max(points, key=lambda k: k.score, default=None)
            text = yield from self._generate(answer, replayed, start, streamed, best)
        except BackendUnavailableError as exc:
            answer.fallback = str(exc)
            note = self.prompts.render("fallback_note", backend=self.backend_name, reason=str(exc))
            text = f"{note}\n\n{key_facts}" if key_facts else note
            yield Event("replace", text=text)
            yield from finish(text)
            return

        checked = self._check(text, answer, key_facts)
        if checked != "".join(streamed).strip():
            yield Event("replace", text=checked, sources=list(answer.sources))
        if (answer.raw and not (answer.fallback or answer.injection or answer.removed_figures)
                and self.context_mode() == "knowledge"):
            self._remember(checked, answer)
        yield from finish(checked)

    def _remember(self, shown: str, answer: Answer) -> None:
        with self._replies_lock:
            self._replies[_reply_key(shown)] = (answer.question, answer.prompt, answer.raw)
            while len(self._replies) > 512:
                self._replies.popitem(last=False)

    def _generate(self, answer: Answer, turns: list[Message], start: float, streamed: list[str],
                  best: extractive.KeyPoint | None = None) -> Generator[Event, None, str]:
        """Stream the model's answer, checked and with citations renumbered; returns all the model said.

        What was shown is appended to `streamed`. In knowledge mode the question names the passage that
        holds `best`, the unit most like the question (else the top passage).
        """
        assert self.backend is not None
        mode = self.context_mode()
        shown = {p.id: n for n, p in enumerate(answer.sources, 1)}
        if mode == "knowledge":
            everything, numbers, _ = self._knowledge()
            by_number = {numbers[p.id]: p for p in everything}
            mapping = {numbers[pid]: n for pid, n in shown.items() if pid in numbers}
            # Number and short title: with numbers alone the small model often failed to find the passage,
            # and every prompt token here costs time to first token (the title is in the cached text).
            top = answer.sources[best.source - 1] if best else answer.sources[0]
            lead = extractive.lead(best.text) if best else ""
            user = self._user_knowledge(answer.question, numbers.get(top.id), top, lead)
        else:
            by_number = {n: p for n, p in enumerate(answer.sources, 1)}
            mapping = {n: n for n in by_number}
            passages = "\n\n".join(f"[{n}] {p.label}\n{p.text}" for n, p in enumerate(answer.sources, 1))
            user = self.prompts.render("user_passages", passages=passages, question=answer.question)

        guard = StreamGuard(self._grounding_text(answer.sources), self._secret())

        def cite_extra(number: int) -> int | None:
            passage = by_number.get(number)
            if passage is None:
                return None  # a citation of a passage that does not exist is dropped
            answer.sources.append(passage)
            guard.add_source(f"{passage.label}\n{passage.text}")
            return len(answer.sources)

        citations = Citations(mapping, cite_extra)
        messages = [{"role": "system", "content": self.system_prompt()}, *turns, {"role": "user", "content": user}]
        said: list[str] = []
        raw: list[str] = []
        first: float | None = None
        answer.prompt = user

        def show(text: str) -> Iterator[Event]:
            if text:
                streamed.append(text)
                if answer.ttft_ms is None:
                    answer.ttft_ms = (time.perf_counter() - start) * 1000
                yield Event("token", text=text)

        soft = self.settings.answer_soft_tokens
        stream = self.backend.stream(messages, self.settings.max_answer_tokens, self.settings.temperature)
        try:
            for piece in stream:
                cut = unit_end("".join(raw), piece) if answer.completion_tokens >= soft else None
                if cut is not None:
                    piece = piece[:cut]  # long enough: stop where a sentence or list item ends
                if first is None:
                    first = time.perf_counter()
                    answer.model_ttft_ms = (first - start) * 1000
                answer.completion_tokens += 1
                raw.append(piece)
                mapped = citations.feed(piece)
                said.append(mapped)
                yield from show(guard.feed(mapped))
                if guard.leaked or cut is not None:
                    break
            if not guard.leaked:
                tail = citations.flush()
                said.append(tail)
                yield from show(guard.feed(tail) + guard.flush())
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # stop the model when the answer is abandoned (leak, client gone)
        if first is not None:
            answer.generation_s = time.perf_counter() - first
        answer.leaked = guard.leaked
        answer.raw = "".join(raw)
        return "".join(said).strip()

    def _grounding_text(self, sources: list[Passage]) -> str:
        """What an answer's figures may come from: its sources and the topic list the prompt offers.

        The model is told to repeat the topics, so their "2024" is no invention. The stream guard and the
        final check both use this, so they agree on what is grounded.
        """
        return self.topics() + "\n" + "\n".join(f"{p.label}\n{p.text}" for p in sources)

    def _secret(self) -> set[str]:
        """N-grams of the system prompts' own wording, which an answer must never repeat."""
        if self._secret_grams is None:
            self._secret_grams = secret_ngrams(
                self.prompts.template(name).template for name in ("system_knowledge", "system_passages"))
        return self._secret_grams

    def _check(self, text: str, answer: Answer, key_facts: str) -> str:
        """Grounding and safety checks on a finished model answer."""
        if answer.leaked or leaks(text, self._secret()):
            answer.injection = True
            return self.prompts.render("injection", role=self.role(), topics=self.topics())
        if not text:
            answer.fallback = "the model returned an empty answer"
            return key_facts
        cleaned, removed = grounding.strip_ungrounded(text, self._grounding_text(answer.sources))
        if removed:
            answer.removed_figures = sorted(removed)
            if len(CITE.sub("", cleaned).strip()) < 25:
                answer.fallback = "the model stated figures that are not in the sources"
                return key_facts
            text = cleaned
        if _DECLINE.search(text):
            answer.out_of_scope = True
        elif not CITE.search(text):
            numbered = [(n, f"{p.label}\n{p.text}") for n, p in enumerate(answer.sources, 1)]
            text = grounding.cite_missing(text, numbered)
        return text

