"""The prompting stage: every prompt in prompts/ renders strictly, and the Prompter picks the context (the
whole knowledge base or the retrieved passages), numbers it, and maps the model's citations to the sources."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import SALARY, CachingChat, turn

from coach.coach import Coach
from coach.config import Settings
from coach.conversation import History, history
from coach.embeddings import FakeEmbeddings
from coach.errors import CoachError
from coach.extractive import gather
from coach.factory import build_retriever_for
from coach.llm.extractive import ExtractiveBackend
from coach.llm.fake import FakeChat
from coach.prompting import KnowledgeText
from coach.prompts import Prompts
from coach.retrieval import Passage

INTRO = "From the knowledge base:"
# What the code fills in for each prompt (prompting.py, coach.py, conversation.py); a prompt file edited to
# need something else breaks answers.
FILLED_BY_THE_CODE = {
    "examples_knowledge": set(),
    "extractive_intro": set(),
    "fallback_note": {"backend", "reason"},
    "injection": {"role", "topics"},
    "out_of_scope": {"role", "topics"},
    "not_english": {"role"},
    "plan_phrase": {"role", "question", "assessment"},
    "profile_extract": {"text"},
    "rewrite": {"history", "question"},
    "system_knowledge": {"role", "topics", "knowledge", "examples"},
    "system_passages": {"role", "topics"},
    "user_knowledge": {"refs", "question"},
    "user_passages": {"passages", "question"},
}


# -- the templates -----------------------------------------------------------------------------
def _files(repo_root: Path) -> list[str]:
    return sorted(p.stem for p in (repo_root / "prompts").iterdir() if p.is_file())


def test_every_file_in_prompts_is_a_template(prompts: Prompts, repo_root: Path) -> None:
    assert prompts.names() == _files(repo_root)
    assert set(prompts.names()) == set(FILLED_BY_THE_CODE)


@pytest.mark.parametrize("name", sorted(FILLED_BY_THE_CODE))
def test_each_prompt_renders_with_the_variables_it_declares(prompts: Prompts, name: str) -> None:
    declared = prompts.variables(name)
    assert declared == FILLED_BY_THE_CODE[name]
    values = {v: f"<<{v.upper()}>>" for v in declared}
    text = prompts.render(name, **values)
    assert text.strip()
    for value in values.values():
        assert value in text
    assert not re.search(r"\$\{?[A-Za-z_]", text), "a placeholder was left unfilled"


@pytest.mark.parametrize("name", [n for n in sorted(FILLED_BY_THE_CODE) if FILLED_BY_THE_CODE[n]])
def test_a_missing_variable_is_an_error(prompts: Prompts, name: str) -> None:
    values = {v: "x" for v in prompts.variables(name)}
    dropped = sorted(values)[0]
    del values[dropped]
    with pytest.raises(CoachError, match=rf"{name}.*missing.*{dropped}"):
        prompts.render(name, **values)


@pytest.mark.parametrize("name", sorted(FILLED_BY_THE_CODE))
def test_an_unexpected_variable_is_an_error(prompts: Prompts, name: str) -> None:
    values = {v: "x" for v in prompts.variables(name)}
    with pytest.raises(CoachError, match=rf"{name}.*unexpected.*surplus"):
        prompts.render(name, surplus="y", **values)


def test_values_are_inserted_literally(prompts: Prompts) -> None:
    question = "What is $role? ${topics} costs $$150K"
    text = prompts.render("user_passages", passages="[1] A > B\n$passages", question=question)
    assert question in text and "$passages" in text


def test_a_missing_prompt_or_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CoachError, match="does not exist"):
        Prompts(tmp_path / "nowhere")
    with pytest.raises(CoachError, match="missing"):
        Prompts(tmp_path).render("system_passages", role="r", topics="t")


def test_a_literal_dollar_in_a_prompt_file_is_a_clear_coach_error(tmp_path: Path) -> None:
    (tmp_path / "example.txt").write_text("Copy figures exactly, e.g. $150,000 - $180,000, for the $role role.\n")
    prompts = Prompts(tmp_path)
    with pytest.raises(CoachError, match="example"):
        prompts.render("example", role="r")


# -- the context mode ----------------------------------------------------------------------------
@pytest.mark.parametrize(("backend", "overrides", "mode"), [
    (FakeChat, {}, "passages"),
    (ExtractiveBackend, {}, "passages"),
    (CachingChat, {}, "knowledge"),
    (CachingChat, {"knowledge_prefix_max_tokens": 1000}, "passages"),
    (CachingChat, {"context_mode": "passages"}, "passages"),
    (FakeChat, {"context_mode": "knowledge"}, "knowledge"),
], ids=["remote", "extractive", "caching-fits", "caching-too-big", "forced-passages", "forced-knowledge"])
def test_auto_mode_sends_the_knowledge_base_only_to_a_caching_backend_it_fits(
        make_coach: Callable[..., Coach], backend: type, overrides: dict[str, object], mode: str) -> None:
    coach = make_coach(backend(), **overrides)
    assert coach.context_mode() == mode
    kt = coach.prompter.knowledge(coach.retriever.library())
    assert ("Knowledge base:" in coach.system_prompt()) is (mode == "knowledge")
    assert (kt.passages[0].text in coach.system_prompt()) is (mode == "knowledge")


def test_the_knowledge_base_fits_with_room_to_spare(make_coach: Callable[..., Coach]) -> None:
    """The limit auto mode compares with: the repository's knowledge base, counted the fake's way."""
    coach = make_coach(CachingChat())
    kt = coach.prompter.knowledge(coach.retriever.library())
    assert 1000 < coach.backend.count_tokens(kt.text) <= coach.settings.knowledge_prefix_max_tokens


# -- the knowledge text --------------------------------------------------------------------------
def test_the_knowledge_text_numbers_every_passage_in_file_order(make_coach: Callable[..., Coach]) -> None:
    coach = make_coach(CachingChat())
    library = coach.retriever.library()
    kt = coach.prompter.knowledge(library)
    assert kt.passages == library.passages and len(kt.passages) > 20
    assert sorted(kt.numbers.values()) == list(range(1, len(kt.passages) + 1))
    sources = [p.source for p in kt.passages]
    assert sources == sorted(sources), "numbered file by file"
    positions = [kt.text.index(f"[{kt.numbers[p.id]}] {p.label}\n{p.text}") for p in kt.passages]
    assert positions == sorted(positions)
    assert kt.role == "Senior Software Engineering Manager in AI"
    assert kt.topics.split(", ")[0] == "Overview" and SALARY in kt.topics


def test_knowledge_numbering_is_stable(make_coach: Callable[..., Coach]) -> None:
    first, second = make_coach(CachingChat()), make_coach(FakeChat())
    library = first.retriever.library()
    kt = first.prompter.knowledge(library)
    assert first.prompter.knowledge(library) is kt, "made once per index revision"
    assert KnowledgeText.of(library) == kt
    assert second.prompter.knowledge(second.retriever.library()).numbers == kt.numbers
    first.answer("What is the entry-level base salary range?")
    assert first.prompter.knowledge(first.retriever.library()).numbers == kt.numbers, "no question changes them"


def number_of(coach: Coach, label: str) -> int:
    kt = coach.prompter.knowledge(coach.retriever.library())
    (passage,) = [p for p in kt.passages if p.label == label]
    return kt.numbers[passage.id]


def test_worked_examples_are_cited_by_the_numbers_of_the_knowledge_text(make_coach: Callable[..., Coach]) -> None:
    coach = make_coach(CachingChat(), context_mode="knowledge")
    system = coach.system_prompt()
    stock = number_of(coach, f"{SALARY} > Total Compensation")
    degree = number_of(coach, "Requirements > Educational Background")
    assert f"User: How much stock comes with the job?\n(See [{stock}] Total Compensation)" in system
    assert f"Stock Options/RSUs range from $50,000 to $500,000+ and vary widely by company [{stock}]." in system
    assert f"related field [{degree}]. A Master's or PhD" in system
    assert f"[{stock}] {SALARY} > Total Compensation\n" in system, "the same number in the knowledge text"
    assert "[@" not in system and "$$" not in system


def build_on(settings: Settings, backend: object) -> Coach:
    retriever = build_retriever_for(settings, FakeEmbeddings(), say=lambda _: None)
    return Coach(settings, retriever, backend, Prompts(Path(settings.prompts_dir)))  # type: ignore[arg-type]


def test_an_example_citing_a_passage_that_is_gone_is_left_out(tmp_settings: Settings, repo_root: Path,
                                                              tmp_path: Path) -> None:
    (Path(tmp_settings.knowledge_dir) / "05-market-demand.md").unlink()
    shutil.copytree(repo_root / "prompts", tmp_path / "prompts")
    examples = tmp_path / "prompts" / "examples_knowledge.txt"
    examples.write_text(examples.read_text(encoding="utf-8")
                        + "\nQuestion: What about gone things?\nAnswer: Gone [@Nowhere > Gone].\n", encoding="utf-8")
    coach = build_on(tmp_settings.model_copy(update={"prompts_dir": tmp_path / "prompts"}), CachingChat())
    system = coach.system_prompt()
    assert coach.context_mode() == "knowledge"
    assert "Which new roles are opening up?" not in system and "Emerging roles include" not in system
    assert "gone things" not in system
    stock = number_of(coach, f"{SALARY} > Total Compensation")
    assert f"vary widely by company [{stock}]." in system, "the other examples stay, renumbered"
    assert "What degree do I need?" in system


# -- the prompt of one answer ---------------------------------------------------------------------
def test_a_shared_title_gets_the_first_words_of_the_best_unit(make_coach: Callable[..., Coach]) -> None:
    """Common Challenges is split in parts with one title: the reference names the bullet that answers."""
    coach = make_coach(CachingChat(), context_mode="knowledge")
    library = coach.retriever.library()
    kt = coach.prompter.knowledge(library)
    (part,) = [p for p in library.passages if "Resource Constraints:" in p.text]
    assert kt.sharing_label(part) > 1
    question = "Which resource constraints come with the high costs of AI implementation?"
    evidence = gather(question, [part], INTRO)
    prompt = coach.prompter.build(question, evidence, History(), coach.backend, library)
    assert prompt.user == f"{question}\n(See [{kt.numbers[part.id]}] Common Challenges: Resource Constraints)"


def test_a_title_of_its_own_is_named_alone(make_coach: Callable[..., Coach]) -> None:
    coach = make_coach(CachingChat(), context_mode="knowledge")
    library = coach.retriever.library()
    (base,) = [p for p in library.passages if p.label == f"{SALARY} > Base Salary"]
    question = "What is the entry-level base salary range?"
    prompt = coach.prompter.build(question, gather(question, [base], INTRO), History(), coach.backend, library)
    assert prompt.user == f"{question}\n(See [{number_of(coach, base.label)}] Base Salary)"


def retrieved(coach: Coach, question: str) -> list[Passage]:
    return coach.retriever.search(question, k=coach.settings.top_k)


def test_knowledge_mode_maps_the_knowledge_numbers_to_the_sources_shown(make_coach: Callable[..., Coach]) -> None:
    coach = make_coach(CachingChat(), context_mode="knowledge")
    library = coach.retriever.library()
    kt = coach.prompter.knowledge(library)
    question = "What is the entry-level base salary range?"
    passages = retrieved(coach, question)
    earlier = history(turn("What degree do I need?", "A Bachelor's degree [1]."))
    prompt = coach.prompter.build(question, gather(question, passages, INTRO), earlier, coach.backend, library)
    assert prompt.mode == "knowledge"
    assert prompt.mapping == {kt.numbers[p.id]: n for n, p in enumerate(passages, 1)}
    assert prompt.citable == {kt.numbers[p.id]: p for p in kt.passages}, "any passage of the knowledge text"
    assert [m["role"] for m in prompt.messages] == ["system", "user", "assistant", "user"]
    assert prompt.messages[0]["content"] == coach.system_prompt()
    assert prompt.messages[-1]["content"] == prompt.user
    assert "Entry Level: $150,000" not in prompt.user, "references, not passage text"


def test_passages_mode_numbers_the_retrieved_passages_in_the_user_message(make_coach: Callable[..., Coach]) -> None:
    coach = make_coach(FakeChat())
    library = coach.retriever.library()
    question = "What is the entry-level base salary range?"
    passages = retrieved(coach, question)
    earlier = history(turn("What degree do I need?", "A Bachelor's degree [1]."))
    prompt = coach.prompter.build(question, gather(question, passages, INTRO), earlier, coach.backend, library)
    assert prompt.mode == "passages"
    assert prompt.mapping == {n: n for n in range(1, len(passages) + 1)}
    assert prompt.citable == dict(enumerate(passages, 1))
    positions = [prompt.user.index(f"[{n}] {p.label}\n{p.text}") for n, p in enumerate(passages, 1)]
    assert positions == sorted(positions)
    assert prompt.user.rstrip().endswith(f"Question: {question}")
    assert prompt.messages[1:3] == [{"role": "user", "content": "What degree do I need?"},
                                    {"role": "assistant", "content": "A Bachelor's degree ."}]
    assert "Knowledge base:" not in prompt.messages[0]["content"]


def test_the_history_in_the_prompt_fits_the_budget(make_coach: Callable[..., Coach]) -> None:
    coach = make_coach(FakeChat(), history_tokens=50)
    library = coach.retriever.library()
    question = "What is the entry-level base salary range?"
    earlier = history(turn("OLD " + "word " * 60, "OLD ANSWER") + turn("Which skills matter?", "Empathy [2]."))
    prompt = coach.prompter.build(question, gather(question, retrieved(coach, question), INTRO), earlier,
                                  coach.backend, library)
    assert [m["content"] for m in prompt.messages[1:-1]] == ["Which skills matter?", "Empathy ."]
