"""The coach: one question flows one way through the stages, from the question to a checked, cited answer.

    conversation (clean, history, standalone) -> retrieval (passages, evidence) -> prompting (mode, messages,
    citation map) -> generation (backend stream, soft stop, timing) -> checks (stream guard, final check)

A personal career-planning question takes the planner's route instead (planner/: role card, profile,
assessment by rules, cited report). Each stage is a module of its own; this one calls them in order and
reports events.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coach import conversation, extractive, roles, shape
from coach.answer import Answer, Event
from coach.checks import StreamChecks, completion, final_check
from coach.config import Settings
from coach.errors import BackendUnavailableError, BusyError, CoachError
from coach.generation import Response
from coach.guards import StreamGuard, looks_like_injection, secret_ngrams
from coach.language import not_english
from coach.llm.base import ChatBackend, Request
from coach.planner import Planner, Profile, Reading, read_profile, with_model_help
from coach.planner.phrasing import contradiction, denied
from coach.planner.resume import read_resume_file
from coach.prompting import Prompt, Prompter
from coach.prompts import Prompts
from coach.retrieval import HybridRetriever, Library

SYSTEM_PROMPTS = ("system_knowledge", "system_passages")
PREPARED_PASSAGES = 2000  # a knowledge base up to this size has its units embedded at start-up
MAX_TEMPERATURE = 1.0  # above this the small local model strays from its sources
_FAMILY_LOCK = threading.Lock()


@dataclass(frozen=True)
class Limits:
    """What one request may ask of generation, kept within the settings (the API's max_tokens, temperature)."""

    max_tokens: int | None = None
    temperature: float | None = None

    def within(self, settings: Settings) -> tuple[int, float]:
        """The answer-token cap and the temperature to use."""
        cap = settings.max_answer_tokens if self.max_tokens is None else max(1, min(self.max_tokens,
                                                                                    settings.max_answer_tokens))
        heat = settings.temperature if self.temperature is None else min(max(self.temperature, 0.0), MAX_TEMPERATURE)
        return cap, heat


class Coach:
    """Answers questions about a role from the index with one chat backend."""

    def __init__(self, settings: Settings, retriever: HybridRetriever, backend: ChatBackend, prompts: Prompts,
                 similarity: extractive.UnitSimilarity | None = None) -> None:
        self.settings = settings
        self.retriever = retriever
        self.backend = backend
        self.prompts = prompts
        self.prompter = Prompter(settings, prompts)
        self.replay = conversation.ReplayMemory()
        embedder = retriever.embedder
        self.similarity = similarity or extractive.UnitSimilarity(embedder.embed_query, embedder.embed_documents)
        self.secret = secret_ngrams(prompts.template(name).template for name in SYSTEM_PROMPTS)
        self.planner = Planner(embedder.embed_documents)
        plain = getattr(self.similarity, "plain", None)
        self.shaper = shape.Shaper(self.similarity, plain)
        self.warm_error: str | None = None
        self.warming = False  # True while warm() runs: the model is loading or preparing its prefix
        self._family: dict[str, Coach] = {}  # this coach's siblings for the other roles of the index
        self._default_role: str | None = None

    @property
    def backend_name(self) -> str:
        """The backend answering: local, openai, extractive or fake."""
        return self.backend.name

    @property
    def model_name(self) -> str:
        """The model answering (`none` for the extractive backend)."""
        return self.backend.model

    def role(self) -> str:
        """The role (or roles) the knowledge base describes."""
        return self.prompter.knowledge(self.retriever.library()).role

    def roles(self) -> tuple[str, ...]:
        """Every role of the index, the default one (this coach's, unless it is a sibling) first."""
        found = self.retriever.roles()
        first = self._default_role or self.retriever.role
        return (first, *(r for r in found if r != first)) if first in found else found

    def for_role(self, name: str | None) -> Coach:
        """The coach answering from the role `name` names (its name, slug or API id; empty: this one).

        Siblings share the backend, prompts and embedded units; each has its own retrieval over its role's
        passages, prompt prefix, card and replay memory. Raises CoachError when no role has that name.
        """
        if not name:
            return self
        found = self.roles()
        role = roles.resolve(name, found)
        if len(found) <= 1 or role == self.retriever.role:
            return self
        with _FAMILY_LOCK:  # two first questions to a role at once make one sibling, not two
            return self._sibling(role, found[0])

    def _sibling(self, role: str, default: str) -> Coach:
        """The family's coach of `role`, made now if it has none (the default role's coach is this one's root)."""
        family = self._family
        if role not in family:
            sibling = Coach(self.settings, self.retriever.scoped(role), self.backend, self.prompts,
                            similarity=self.similarity)
            sibling._family, sibling._default_role = family, default
            family[role] = sibling
            if self.retriever.role == default:
                family.setdefault(default, self)
        return family[role]

    def topics(self) -> str:
        """What the coach can help with: the knowledge base's section titles."""
        return self.prompter.knowledge(self.retriever.library()).topics

    def read_resume(self, path: str | Path) -> Reading:
        """The profile a résumé states: read by rules, and by the chat model only where the settings let it
        (job title, location: planner.with_model_help). Raises CoachError when the file cannot be read."""
        read = read_resume_file(Path(path))
        text = read.text
        reading = read_profile(text, self.planner.card(self.retriever.library()))
        if note := read.note(Path(path).name):
            reading.problems.append(note)
        if self.settings.profile_model_help and self.backend.generative:
            prompt = self.prompts.render("profile_extract", text=text[:2000])
            reading = with_model_help(reading, prompt, self.backend)
        return reading

    def context_mode(self) -> str:
        """`knowledge` (the whole knowledge base is the prompt prefix) or `passages`, for this backend."""
        return self.prompter.mode(self.backend, self.retriever.library())

    def system_prompt(self) -> str:
        """The system prompt this backend is sent."""
        library = self.retriever.library()
        return self.prompter.system(self.prompter.mode(self.backend, library), library)

    # -- start-up -----------------------------------------------------------------------------------------
    def warm(self) -> None:
        """Load the index and the model, prepare the cached prompt prefix (run in the background at start-up)."""
        self.warming = True
        try:
            self.retriever.warm()
            library = self.retriever.library()
            mode = self.prompter.mode(self.backend, library)
            if mode == "knowledge" or len(library.passages) <= PREPARED_PASSAGES:
                self.similarity.prepare(list(library.passages))  # every unit and heading embedded now, once
            self.shaper.structure(library)
            self.planner.card(library)
            self.backend.prepare(self.prompter.system(mode, library))
        except CoachError as exc:
            self.warm_error = str(exc)
        finally:
            self.warming = False

    def check_capacity(self) -> None:
        """Raise BusyError when the model would refuse a question asked now (its batch and line are full)."""
        check = getattr(self.backend, "check_capacity", None)
        if check is not None:
            check()

    def warm_in_background(self) -> threading.Thread:
        """Start warm() on a daemon thread."""
        thread = threading.Thread(target=self.warm, name="coach-warm", daemon=True)
        thread.start()
        return thread

    # -- answering ------------------------------------------------------------------------------------------
    def answer(self, question: str, history: list[dict[str, Any]] | None = None, top_k: int | None = None,
               profile: Profile | None = None, limits: Limits | None = None) -> Answer:
        """The finished answer to one question (the stream, consumed)."""
        final = None
        for event in self.stream(question, history, top_k, profile, limits):
            final = event.answer or final
        assert final is not None
        return final

    def stream(self, question: str, history: list[dict[str, Any]] | None = None, top_k: int | None = None,
               profile: Profile | None = None, limits: Limits | None = None) -> Iterator[Event]:
        """Answer one question in the context of history, as a stream of events ending with `done`.

        `profile` is what the person saved about themselves (the UI's form); the planner reads the rest
        from the conversation. `limits` (an API client's max_tokens and temperature) can only tighten the
        settings' own.
        """
        start = time.perf_counter()
        question = conversation.clean_question(question, self.settings.max_question_chars)
        answer = Answer(question, question, backend=self.backend_name, model=self.model_name)
        if looks_like_injection(question):
            answer.injection, answer.route = True, "refusal"
            yield self._done(answer, self._refusal(), start)
            return
        if not_english(question):  # said before the spelling pass would turn its words into English ones
            answer.out_of_scope, answer.route = True, "not_english"
            yield self._done(answer, self.prompts.render("not_english", role=self.role()), start)
            return
        library = self.retriever.library()
        if self.planner.wants(question, history, self.planner.card(library), profile):
            yield from self._plan(answer, history, profile, library, start)
            return

        earlier = conversation.history(history, self.replay)
        recent = conversation.trim(earlier.plain, self.settings.history_tokens, self.backend.count_tokens)
        # Misspelt words the knowledge base and the word list both do not know are corrected ("salry" -> salary).
        asked = self.retriever.correct(question)
        standalone = conversation.standalone(question, recent, self.backend, self.prompts)
        answer.standalone = asked if standalone == question else self.retriever.correct(standalone)
        passages = self.retriever.search(answer.standalone, k=top_k or self.settings.top_k)
        if not self.retriever.covered(passages):
            answer.out_of_scope, answer.route = True, "not_covered"
            yield self._done(answer, self._not_covered(), start)
            return
        evidence = extractive.gather(answer.standalone, passages, self.prompts.render("extractive_intro"),
                                     self.similarity)
        answer.sources = list(evidence.passages)
        yield Event("sources", text=evidence.key_facts, sources=list(answer.sources))

        library = self.retriever.library()
        prompt = self.prompter.build(asked, evidence, earlier, self.backend, library)
        checks = StreamChecks(prompt, evidence.passages, self.prompter.knowledge(library).topics, self.secret)
        # The shape follows the words the person wrote: a follow-up names what it asks about now.
        scored = evidence.scored if asked == answer.standalone else extractive.score_units(
            asked, evidence.passages, self.similarity)
        form = self.shaper.decide(asked, scored, evidence.passages, library)
        answer.shape = form.kind
        max_tokens, temperature = (limits or Limits()).within(self.settings)
        request = Request(prompt.messages, max_tokens, temperature, evidence)
        # A list's items come from the passage: the model writes its lead, one sentence or item.
        response = Response(self.backend, request, 1 if form.lead_only else self.settings.answer_soft_tokens)
        try:
            yield from self._write(answer, response, checks, start)
        except BackendUnavailableError as exc:
            answer.fallback = str(exc)
            note = self.prompts.render("fallback_note", backend=self.backend_name, reason=str(exc))
            text = f"{note}\n\n{evidence.key_facts}" if evidence.key_facts else note
            yield Event("replace", text=text, sources=answer.sources)
            yield self._done(answer, text, start)
            return

        checked = final_check(checks, evidence.key_facts, self._refusal(), self._not_covered())
        answer.sources = checks.sources
        answer.injection = checked.injection
        answer.fallback = checked.fallback
        answer.removed_figures = checked.removed_figures
        answer.out_of_scope = checked.out_of_scope
        text = checked.text
        if not (answer.injection or answer.out_of_scope or answer.fallback):
            unknown = self.shaper.structure(library).unknown_names(asked)
            if unknown:  # "... in Germany?": say what is not covered, and where the answer's facts come from
                best = evidence.best
                text = shape.qualified(text, unknown, evidence.passages[best.source - 1] if best else None)
            text += completion(text, form, checks.cite)
            text = self._requirement_kept(text, library, checks)
            answer.sources = checks.sources
        self._account(answer, response, prompt, checks, start)
        if checked.text != checks.shown.strip() or not text.startswith(checked.text):
            yield Event("replace", text=text, sources=list(answer.sources))
        elif text != checked.text:
            yield Event("token", text=text[len(checked.text):], sources=list(answer.sources))
        if answer.replayable and prompt.mode == "knowledge":
            self.replay.remember(text, conversation.Said(answer.question, prompt.user, answer.raw))
        yield self._done(answer, text, start)

    def _requirement_kept(self, text: str, library: Library, checks: StreamChecks) -> str:
        """A sentence calling a required item of the role not required is replaced by the requirement, cited."""
        wrong = denied(text, self.planner.card(library).requirements)
        by_id = {p.id: p for p in library.passages} if wrong else {}
        for sentence, req in wrong:
            passage = by_id.get(req.cite.passage_id)
            cite = f" [{checks.cite(passage)}]" if passage is not None else ""
            text = text.replace(sentence, f"It is required: the role's requirements list \"{req.text.rstrip('.')}\""
                                f"{cite}.", 1)
        return text

    def _plan(self, answer: Answer, history: list[dict[str, Any]] | None, profile: Profile | None,
              library: Library, start: float) -> Iterator[Event]:
        """The planner's answer: the assessment by rules, in words, citing the passages it rests on."""
        plan = self.planner.answer(answer.question, history, library, profile)
        by_id = {p.id: p for p in library.passages}
        answer.route, answer.plan = "plan", plan.to_dict()
        answer.sources = [by_id[c.passage_id] for c in plan.report.cites if c.passage_id in by_id]
        yield Event("sources", text="", sources=list(answer.sources))
        text = plan.report.text
        if self._phrases_plans():
            text = yield from self._phrased(answer, plan.report.text, plan.assessment.verdict, start)
        else:
            answer.ttft_ms = (time.perf_counter() - start) * 1000
            yield Event("token", text=text, sources=list(answer.sources))
        # A later turn shows the model this answer as one line: a long report would slow its prompt and invite
        # the model to imitate the report's layout.
        self.replay.remember(text, conversation.Said(answer.question, answer.question, plan.summary, summary=True))
        yield self._done(answer, text, start)

    def _phrases_plans(self) -> bool:
        mode = self.settings.plan_phrasing
        return self.backend.generative and (mode == "model" or (mode == "auto" and not self.backend.caches_prefix))

    def _phrased(self, answer: Answer, plain: str, verdict: Any, start: float) -> Generator[Event, None, str]:
        """The model's wording of the plain report, streamed through the figure guard; replaced if it contradicts."""
        prompt = self.prompts.render("plan_phrase", role=self.role(), question=answer.question, assessment=plain)
        guard = StreamGuard(plain, self.secret)
        said: list[str] = []
        try:
            for piece in self.backend.stream(Request([{"role": "user", "content": prompt}],
                                                     self.settings.max_answer_tokens * 3, self.settings.temperature)):
                said.append(piece)
                yield from self._show(answer, guard.feed(piece), None, start)
                if guard.leaked:
                    break
            yield from self._show(answer, guard.flush(), None, start)
        except (BackendUnavailableError, BusyError) as exc:
            answer.fallback = str(exc)
        leaked = "the phrasing repeated the coach's instructions" if guard.leaked else None
        why = answer.fallback or leaked or contradiction("".join(said), plain, verdict)
        if why:
            answer.fallback = answer.fallback or f"the plain assessment was shown: {why}"
            yield Event("replace", text=plain, sources=list(answer.sources))
            return plain
        return "".join(said).strip()

    def _write(self, answer: Answer, response: Response, checks: StreamChecks, start: float) -> Iterator[Event]:
        """Stream the model's pieces through the checks; stop the model if it starts to leak the prompt."""
        pieces = response.pieces_stream()
        try:
            for piece in pieces:
                yield from self._show(answer, checks.feed(piece), checks, start)
                if checks.leaked:
                    break
        finally:
            pieces.close()
        yield from self._show(answer, checks.flush(), checks, start)

    @staticmethod
    def _show(answer: Answer, text: str, checks: StreamChecks | None, start: float) -> Iterator[Event]:
        if text:
            if answer.ttft_ms is None:
                answer.ttft_ms = (time.perf_counter() - start) * 1000
            yield Event("token", text=text, sources=list(checks.sources if checks else answer.sources))

    def _account(self, answer: Answer, response: Response, prompt: Prompt, checks: StreamChecks,
                 start: float) -> None:
        """What the model was sent and said, with its timings and token counts."""
        answer.prompt = prompt.user
        answer.raw = response.text
        answer.leaked = checks.leaked
        if self.backend.generative:
            answer.prompt_tokens = response.prompt_tokens
            answer.completion_tokens = response.completion_tokens
            answer.generation_s = response.generation_s
            if response.first_token_at is not None:
                answer.model_ttft_ms = (response.first_token_at - start) * 1000

    def _refusal(self) -> str:
        kt = self.prompter.knowledge(self.retriever.library())
        return self.prompts.render("injection", role=kt.role, topics=kt.topics)

    def _not_covered(self) -> str:
        kt = self.prompter.knowledge(self.retriever.library())
        return self.prompts.render("out_of_scope", role=kt.role, topics=kt.topics)

    @staticmethod
    def _done(answer: Answer, text: str, start: float) -> Event:
        answer.text = text
        answer.latency_ms = (time.perf_counter() - start) * 1000
        if answer.ttft_ms is None:
            answer.ttft_ms = answer.latency_ms
        return Event("done", text=text, sources=answer.sources, answer=answer)
