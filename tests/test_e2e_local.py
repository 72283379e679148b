"""End to end with the real local model (Qwen2.5-Coder-1.5B on llama.cpp), the real embedder and Chroma.

Assertions are properties any good answer has: it cites a gold section, every figure it states is in
its sources, an out-of-scope question is declined, a follow-up is understood in context.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from coach import grounding
from coach.coach import Answer, Coach
from coach.factory import build_coach

pytestmark = [pytest.mark.model, pytest.mark.integration]


@pytest.fixture(scope="module")
def local_coach(tmp_path_factory: pytest.TempPathFactory, repo_root: Path, models_dir: Path,
                settings_factory: Any) -> Coach:
    data = tmp_path_factory.mktemp("e2e-data")
    # The prepared prompt prefix is shared by every test of the session (and kept between runs in
    # the repository's data folder, as the app does), so it is evaluated at most once.
    kv = Path(os.environ.get("COACH_TEST_KV_CACHE", repo_root / "data" / "kv-cache"))
    settings = settings_factory(repo_root / "knowledge", data, models_dir, backend="local", kv_cache_dir=kv,
                                prompts_dir=repo_root / "prompts")
    coach = build_coach(settings, say=lambda _m: None)
    coach.warm()
    assert coach.warm_error is None, coach.warm_error
    return coach


def ask(coach: Coach, question: str, history: list[dict[str, str]] | None = None) -> Answer:
    final = None
    kinds = []
    for event in coach.stream(question, history or []):
        kinds.append(event.kind)
        if event.kind == "done":
            final = event.answer
    assert final is not None and kinds[-1] == "done"
    return final


def assert_grounded(answer: Answer) -> None:
    sources = "\n".join(f"{p.label}\n{p.text}" for p in answer.sources)
    assert not grounding.ungrounded(answer.text, sources), (answer.text, sources)


def test_salary_answer_cites_salary_section_and_states_only_sourced_figures(local_coach: Coach) -> None:
    answer = ask(local_coach, "What is the entry-level base salary range?")
    assert answer.fallback is None
    assert answer.backend == "local" and answer.model
    assert any(p.section == "Salary Ranges (US Market, 2024)" for p in answer.sources[:3])
    assert_grounded(answer)
    assert "150" in answer.text and "180" in answer.text


def test_skills_answer_names_frameworks_from_requirements(local_coach: Coach) -> None:
    answer = ask(local_coach, "Which machine learning frameworks should I have experience with?")
    assert {"Requirements", "Overview"} & {p.section for p in answer.sources[:3]}
    assert "tensorflow" in answer.text.lower() or "pytorch" in answer.text.lower()
    assert_grounded(answer)


def test_out_of_scope_question_is_declined_without_inventing(local_coach: Coach) -> None:
    answer = ask(local_coach, "What will the weather be in Paris tomorrow?")
    assert answer.out_of_scope
    assert "does not cover" in answer.text.lower()
    assert not grounding.ungrounded(answer.text, local_coach.topics()), "no figure beyond the topic list"


def test_follow_up_is_understood_in_context(local_coach: Coach) -> None:
    first = "What is the base salary at senior level?"
    a1 = ask(local_coach, first)
    history = [{"role": "user", "content": first}, {"role": "assistant", "content": a1.text}]
    a2 = ask(local_coach, "And how large is the annual bonus on top of that?", history)
    assert any(p.subsection == "Total Compensation" for p in a2.sources)
    assert "10" in a2.text and "30" in a2.text
    assert_grounded(a2)


def test_the_prepared_prefix_is_restored_from_disk_by_a_new_process(local_coach: Coach) -> None:
    from coach.llm.local import LocalLlamaBackend

    backend = local_coach.backend
    assert isinstance(backend, LocalLlamaBackend)
    fresh = LocalLlamaBackend(backend.model_path, backend._models_dir, backend._cache_dir)
    system = local_coach.system_prompt()
    fresh.prepare(system)
    assert "prefix_restore_s" in fresh.stats and "prefix_eval_s" not in fresh.stats, fresh.stats
    reply = "".join(fresh.stream([{"role": "system", "content": system},
                                  {"role": "user", "content": "What is the entry-level base salary range?\n"
                                                              "(See [37] Base Salary)"}],
                                 60, 0.0))
    assert "150" in reply
