"""Every prompt in prompts/ renders strictly: the variables it declares, no more, no fewer."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from coach.errors import CoachError
from coach.prompts import Prompts

# What the code fills in for each prompt (coach.py); a prompt file edited to need something else breaks answers.
FILLED_BY_THE_CODE = {
    "examples_knowledge": set(),
    "extractive_intro": set(),
    "fallback_note": {"backend", "reason"},
    "injection": {"role", "topics"},
    "out_of_scope": {"role", "topics"},
    "rewrite": {"history", "question"},
    "system_knowledge": {"role", "topics", "knowledge", "examples"},
    "system_passages": {"role", "topics"},
    "user_knowledge": {"refs", "question"},
    "user_passages": {"passages", "question"},
}


@pytest.fixture(scope="module")
def prompts(repo_root: Path) -> Prompts:
    return Prompts(repo_root / "prompts")


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
