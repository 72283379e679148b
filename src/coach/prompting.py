"""The prompting stage: which context the model gets (the whole knowledge base or the retrieved passages),
the messages, and how the numbers the model cites map to the sources a person sees."""

from __future__ import annotations

import re
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from coach.config import Settings
from coach.conversation import History, trim
from coach.extractive import Evidence, lead
from coach.faithfulness import supports
from coach.llm.base import ChatBackend, Message
from coach.prompts import Prompts
from coach.retrieval import Library, Passage, tokenize

Mode = Literal["knowledge", "passages"]


@dataclass(frozen=True)
class KnowledgeText:
    """The knowledge base as the model reads it in knowledge mode: every passage numbered in a stable order."""

    revision: tuple[str, str, int]
    passages: tuple[Passage, ...]
    numbers: dict[str, int]  # passage id -> its number in the text
    text: str
    role: str
    topics: str

    @classmethod
    def of(cls, library: Library) -> KnowledgeText:
        """The numbered text of a library."""
        passages = library.passages
        roles = Counter(p.role for p in passages if p.role)
        sections = list(dict.fromkeys(p.section for p in passages if p.section))
        return cls(library.revision, passages, {p.id: n for n, p in enumerate(passages, 1)},
                   "\n\n".join(f"[{n}] {p.quoted}" for n, p in enumerate(passages, 1)),
                   " / ".join(r for r, _ in roles.most_common(3)) or "this role", ", ".join(sections))

    def sharing_label(self, passage: Passage) -> int:
        """How many passages carry this passage's Section > Subsection."""
        return sum(p.label == passage.label for p in self.passages)


@dataclass
class Prompt:
    """The messages for one answer and what the model's citation numbers refer to."""

    mode: Mode
    messages: list[Message]
    user: str  # the last user message, as sent (remembered for replay)
    mapping: dict[int, int]  # number the model cites -> number of the source shown
    citable: dict[int, Passage] = field(default_factory=dict)  # every passage the model may cite, by its number


class Prompter:
    """Builds prompts from the files in prompts/ for one set of settings."""

    def __init__(self, settings: Settings, prompts: Prompts) -> None:
        self.settings = settings
        self.prompts = prompts
        self._knowledge: KnowledgeText | None = None
        self._systems: dict[tuple[Mode, tuple[str, str, int]], str] = {}
        self._lock = threading.Lock()

    def knowledge(self, library: Library) -> KnowledgeText:
        """The numbered knowledge text of this library (made once per index revision)."""
        with self._lock:
            if self._knowledge is None or self._knowledge.revision != library.revision:
                self._knowledge = KnowledgeText.of(library)
                self._systems.clear()
            return self._knowledge

    def mode(self, backend: ChatBackend, library: Library) -> Mode:
        """`knowledge` (whole knowledge base as a cached prefix) or `passages` (retrieved passages only)."""
        wanted = self.settings.context_mode
        if wanted != "auto":
            return wanted
        if not backend.caches_prefix:
            return "passages"
        text = self.knowledge(library).text
        return "knowledge" if backend.count_tokens(text) <= self.settings.knowledge_prefix_max_tokens else "passages"

    def system(self, mode: Mode, library: Library) -> str:
        """The system prompt of a context mode (rendered once per index revision)."""
        kt = self.knowledge(library)
        key = (mode, kt.revision)
        if key not in self._systems:
            if mode == "knowledge":
                text = self.prompts.render("system_knowledge", role=kt.role, topics=kt.topics, knowledge=kt.text,
                                           examples=self._examples(kt))
            else:
                text = self.prompts.render("system_passages", role=kt.role, topics=kt.topics)
            self._systems[key] = text
        return self._systems[key]

    def build(self, question: str, evidence: Evidence, history: History, backend: ChatBackend,
              library: Library) -> Prompt:
        """The prompt for a question, its evidence and the conversation so far."""
        mode = self.mode(backend, library)
        shown = {p.id: n for n, p in enumerate(evidence.passages, 1)}
        if mode == "knowledge":
            kt = self.knowledge(library)
            citable = {kt.numbers[p.id]: p for p in kt.passages}
            mapping = {kt.numbers[pid]: n for pid, n in shown.items() if pid in kt.numbers}
            # The passage holding the unit most like the question, by number and short title: with numbers
            # alone the small model often missed it, and every token here costs time to the first token.
            best = evidence.best
            top = evidence.passages[best.source - 1] if best else evidence.passages[0]
            user = self._user_knowledge(kt, question, kt.numbers.get(top.id), top, lead(best.text) if best else "")
            earlier = history.replayed
        else:
            citable = {n: p for n, p in enumerate(evidence.passages, 1)}
            mapping = {n: n for n in citable}
            passages = "\n\n".join(f"[{n}] {p.quoted}" for n, p in citable.items())
            user = self.prompts.render("user_passages", passages=passages, question=question)
            earlier = history.plain
        earlier = trim(earlier, self.settings.history_tokens, backend.count_tokens)
        messages = [{"role": "system", "content": self.system(mode, library)}, *earlier,
                    {"role": "user", "content": user}]
        return Prompt(mode, messages, user, mapping, citable)

    def _user_knowledge(self, kt: KnowledgeText, question: str, number: int | None, passage: Passage,
                        unit_lead: str = "") -> str:
        """The user message of knowledge mode: the question and the number and title of its best passage.

        A title that several passages share (a long section split in parts) gets the best unit's first words.
        """
        title = passage.subsection or passage.section
        if unit_lead and kt.sharing_label(passage) > 1:
            title = f"{title}: {unit_lead}"
        refs = f"[{number}] {title}" if number else title
        named = {"refs": refs} if "refs" in self.prompts.variables("user_knowledge") else {}
        return self.prompts.render("user_knowledge", question=question, **named)

    def _examples(self, kt: KnowledgeText) -> str:
        """Worked examples with their [@Section > Subsection] citations numbered as in the knowledge text.

        An example of prompts/examples_knowledge.txt is kept only where this role's own passage holds it
        (examples_hold): written for one role, its facts must never reach the model as another role's, whose
        sections often carry the same titles. Kinds of example none of the file's fit are made from this
        role's passages (role_examples), so every role's model sees the form of an answer.
        """
        by_label: dict[str, Passage] = {}
        for p in kt.passages:
            by_label.setdefault(p.label, p)
        examples = []
        for block in re.split(r"\n\s*\n", self.prompts.render("examples_knowledge").strip()):
            match = re.fullmatch(r"Question:\s*(.+?)\s*\nAnswer:\s*(.+)", block.strip(), re.DOTALL)
            labels = _EXAMPLE_CITE.findall(block)
            if not match or not labels or any(label not in by_label for label in labels):
                continue
            if example_holds(match.group(2), [by_label[label] for label in labels]):
                examples.append((match.group(1), match.group(2)))
        if len(examples) < MIN_EXAMPLES:
            examples += role_examples(kt.passages, MIN_EXAMPLES - len(examples), {q for q, _ in examples})
        blocks = []
        for question, answer in examples:
            first = by_label[_EXAMPLE_CITE.findall(answer)[0]]
            user = self._user_knowledge(kt, question, kt.numbers[first.id], first)
            reply = _EXAMPLE_CITE.sub(lambda m: f"[{kt.numbers[by_label[m.group(1)].id]}]", answer)
            blocks.append(f"User: {user.strip()}\nCoach: {reply.strip()}")
        return "\n\n".join(blocks)


MIN_EXAMPLES = 3  # as many as the shipped file holds: a list, a sentence with a figure, a list of names
EXAMPLE_SUPPORT = 0.8  # share of an example's content words its cited passages must hold (its figures: all)
_EXAMPLE_CITE = re.compile(r"\[@([^\]]+)\]")  # [@Section > Subsection] in prompts/examples_knowledge.txt
_LABELLED = re.compile(r"^\s*[-*+\u2022]\s+([A-Z][^:]{2,60}):\s+(.+)$")


def example_holds(answer: str, cited: list[Passage]) -> bool:
    """Whether the cited passages hold an example answer: every figure, and EXAMPLE_SUPPORT of its content
    words (a rephrased lead such as "Emerging roles include" passes; another role's field names do not): the
    support rule of answers (faithfulness.supports), stricter."""
    text = _EXAMPLE_CITE.sub(" ", answer).replace("$$", "$")
    return bool(tokenize(text)) and supports(text, cited, EXAMPLE_SUPPORT)


def role_examples(passages: tuple[Passage, ...], n: int, asked: set[str]) -> list[tuple[str, str]]:
    """Up to n examples made from a role's own passages: a list of labelled bullets answered by its labels, then
    a labelled bullet with an amount of money answered by its own words. The questions name the subsection and
    the label, the answers quote the passage: they hold by construction and carry no other role's facts."""
    made: list[tuple[str, str]] = []
    for p in passages:
        names = [m.group(1).strip() for m in (_LABELLED.match(line) for line in p.text.splitlines()) if m]
        if len(names) >= 3 and p.subsection:
            listed = "; ".join(names) if any("," in name for name in names) else (
                f"{', '.join(names[:-1])} and {names[-1]}")
            made.append((f"What does {p.subsection} list?", f"{p.subsection}: {listed} [@{p.label}]."))
            break
    for p in passages:
        hit = next((m for m in (_LABELLED.match(line) for line in p.text.splitlines()) if m and "$" in m.group(2)),
                   None)
        if hit is not None:
            label = hit.group(1).strip()
            made.append((f"What does {p.subsection or p.section} say about {label}?",
                         f"{label}: {hit.group(2).strip().rstrip('.')} [@{p.label}]."))
            break
    return [(q, a) for q, a in made if q not in asked][:n]
