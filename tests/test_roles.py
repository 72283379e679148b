"""Several roles in one coach: a folder per role (or `role:` front matter) in one real index, each role with
its own retrieval, card, prompt examples and plan; the CLI's --role, the API's model per role, the page's
conversation that keeps its role.

The roles are the seed (knowledge/), `tests/data/roles/staff-data-engineer` and, where ../shared is present,
`../shared/roles/senior-product-manager-ai`: copied into one temporary knowledge folder, never into knowledge/.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from helpers import REPO

from coach import knowledge, roles
from coach.api import build_api
from coach.coach import Coach
from coach.config import Settings
from coach.errors import CoachError
from coach.factory import build_coach, build_retriever_for
from coach.prompting import Prompter, example_holds, role_examples
from coach.prompts import Prompts
from coach.retrieval import HybridRetriever, Passage
from coach.ui import chat
from coach.ui.answering import Backends, answer_steps

SEED = "Senior Software Engineering Manager in AI"
DATA = "Staff Data Engineer"
DATA_ROLE = REPO / "tests" / "data" / "roles" / "staff-data-engineer"
SHARED_ROLE = REPO.parent / "shared" / "roles" / "senior-product-manager-ai"


def two_roles(root: Path) -> Path:
    """A knowledge folder holding the seed (folder `a-seed`, sorted first: the default) and the data role."""
    folder = root / "knowledge"
    shutil.copytree(REPO / "knowledge", folder / "a-seed")
    shutil.copytree(DATA_ROLE, folder / "staff-data-engineer")
    return folder


# --- the knowledge folder ---------------------------------------------------------------------------------------

def test_a_folder_per_role_names_its_role_once_or_not_at_all(tmp_path: Path) -> None:
    folder = two_roles(tmp_path)
    # a file without front matter takes its folder's role; a folder with none takes its own name
    (folder / "staff-data-engineer" / "09-best-practices.md").write_text("# Best Practices\n\n- Test the data.\n")
    (folder / "ux-researcher").mkdir()
    (folder / "ux-researcher" / "01-overview.md").write_text("# Overview\n\nResearchers study users.\n")
    kb = knowledge.load(folder)
    by_source = {c.source: c.role for c in kb.chunks}
    assert by_source["a-seed/01-overview.md"] == SEED
    assert by_source["staff-data-engineer/09-best-practices.md"] == DATA
    assert by_source["ux-researcher/01-overview.md"] == "Ux Researcher"
    assert not kb.warnings


def test_the_flat_layout_of_one_role_keeps_working() -> None:
    kb = knowledge.load(REPO / "knowledge")
    assert {c.role for c in kb.chunks} == {SEED}


@pytest.mark.parametrize("name", [DATA, DATA.upper(), "staff-data-engineer", "coach:staff-data-engineer",
                                  "  Staff data engineer "])
def test_a_role_is_named_by_its_name_slug_or_model_id(name: str) -> None:
    assert roles.resolve(name, (SEED, DATA)) == DATA


def test_an_unknown_role_is_one_sentence_naming_the_roles() -> None:
    with pytest.raises(CoachError) as err:
        roles.resolve("Astronaut", (SEED, DATA))
    assert "Astronaut" in str(err.value) and "staff-data-engineer" in str(err.value)
    assert roles.resolve("coach", (SEED, DATA)) == SEED  # the API's default id: the default role
    assert roles.ordered((SEED, DATA), "staff-data-engineer") == (DATA, SEED)


# --- one index, several roles (real Chroma, real MiniLM) --------------------------------------------------------

@pytest.fixture(scope="module")
def two_role_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    from conftest import make_settings

    root = tmp_path_factory.mktemp("roles")
    data = root / "data"
    data.mkdir()
    return make_settings(two_roles(root), data)


@pytest.fixture(scope="module")
def retriever(two_role_settings: Settings, real_embedder: Any) -> HybridRetriever:
    return build_retriever_for(two_role_settings, real_embedder, say=lambda _: None)


@pytest.fixture(scope="module")
def coach(two_role_settings: Settings, retriever: HybridRetriever) -> Coach:
    return build_coach(two_role_settings, "extractive", retriever=retriever, say=lambda _: None)


@pytest.mark.integration
def test_retrieval_keeps_to_the_role_asked_about(retriever: HybridRetriever) -> None:
    assert retriever.roles() == (SEED, DATA) and retriever.role == SEED  # the first file's role is the default
    data = retriever.scoped(DATA)
    for question in ("What degree do I need?", "What is the base salary?", "How do careers progress?"):
        assert {p.role for p in retriever.search(question, k=6)} == {SEED}
        assert {p.role for p in data.search(question, k=6)} == {DATA}
    assert {p.role for p in data.library().passages} == {DATA}
    assert data.library().revision != retriever.library().revision  # caches keyed by it tell roles apart
    assert data.scoped(SEED).role == SEED and retriever.scoped(SEED) is retriever


@pytest.mark.integration
def test_coach_role_picks_the_default_and_an_unknown_one_is_refused(two_role_settings: Settings,
                                                                     real_embedder: Any) -> None:
    chosen = two_role_settings.model_copy(update={"role": "staff-data-engineer"})
    assert build_retriever_for(chosen, real_embedder, sync=False).role == DATA
    wrong = two_role_settings.model_copy(update={"role": "astronaut"})
    with pytest.raises(CoachError, match="astronaut"):
        build_retriever_for(wrong, real_embedder, sync=False)


@pytest.mark.integration
def test_each_role_has_its_own_card_and_plan(coach: Coach) -> None:
    data = coach.for_role("staff-data-engineer")
    assert data is coach.for_role(DATA) and data.for_role(SEED) is coach  # siblings, made once
    assert (coach.role(), data.role()) == (SEED, DATA)
    assert data.roles() == coach.roles() == (SEED, DATA)
    seed_titles = {r.title for r in coach.planner.card(coach.retriever.library()).ladder}
    data_titles = {r.title for r in data.planner.card(data.retriever.library()).ladder}
    assert "Staff Data Engineer" in data_titles and not seed_titles & data_titles
    person = ("I'm a Senior Data Engineer with eight years of software development, two of them designing "
              "large-scale data pipelines. BS in Statistics. I mentor a junior engineer. Am I ready for the next step?")
    answer = data.answer(person)
    assert answer.route == "plan" and answer.plan is not None
    assert answer.plan["role"] == DATA and answer.plan["verdict"] == "close"
    assert {p.role for p in answer.sources} == {DATA}
    assert coach.answer("What is the base salary range?").sources[0].role == SEED


@pytest.mark.integration
def test_few_shot_examples_carry_only_the_roles_own_facts(coach: Coach, prompts: Prompts) -> None:
    prompter = Prompter(coach.settings, prompts)
    seed = prompter.system("knowledge", coach.retriever.library())
    data_coach = coach.for_role(DATA)
    data = Prompter(coach.settings, prompts).system("knowledge", data_coach.retriever.library())
    # The shipped examples hold for the seed's own passages: its prompt is what it was.
    assert "AI Strategy Lead, AI Operations Manager and AI Ethics Officer" in seed
    assert "Machine Learning, Mathematics" in seed
    examples = data.split("User:", 1)[1] if "User:" in data else ""
    assert examples, "the data role's model gets examples made from its own passages"
    for fact in ("Machine Learning, Mathematics", "AI Ethics Officer", "$500,000"):
        assert fact not in examples
    texts = " ".join(p.text for p in data_coach.retriever.library().passages)
    for line in examples.splitlines():
        if line.startswith("Coach:"):
            said = line.removeprefix("Coach:").split("[")[0].split(":", 1)[-1].strip().rstrip(".")
            assert said.split(",")[0].strip() in texts


def test_example_holds_needs_the_passage_to_say_it() -> None:
    passage = Passage("p", "- Bachelor's degree in Computer Science or Statistics.", "Requirements",
                      "Educational Background", "r.md", DATA, 0.0)
    assert example_holds("A Bachelor's degree in Computer Science or Statistics [@x].", [passage])
    assert not example_holds("A Bachelor's degree in Computer Science, Machine Learning, Mathematics [@x].",
                             [passage])
    salary = Passage("s", "- Base Salary: $150,000 - $180,000", "Salary", "Entry Level", "s.md", DATA, 0.0)
    assert not example_holds("Base Salary: $150,000 - $190,000 [@x].", [salary])
    made = role_examples((salary,), 3, set())
    assert made == [("What does Entry Level say about Base Salary?",
                     "Base Salary: $150,000 - $180,000 [@Salary > Entry Level].")]
    listed = Passage("l", "- AI Product Lead: owns the plan.\n- Product Manager, AI Platform: builds tools.\n"
                     "- Product Manager, Trust and Safety: guards users.", "Market Demand", "New Titles", "m.md", DATA,
                     0.0)
    assert role_examples((listed,), 1, set()) == [(
        "What does New Titles list?", "New Titles: AI Product Lead; Product Manager, AI Platform; Product Manager, "
        "Trust and Safety [@Market Demand > New Titles].")]


# --- the interfaces ---------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_the_api_has_one_model_per_role(coach: Coach) -> None:
    with TestClient(build_api(coach, coach.settings)) as client:
        listed = client.get("/models").json()["data"]
        assert [(m["id"], m["metadata"]["role"]) for m in listed] == [
            ("coach", SEED), (roles.model_id(SEED), SEED), ("coach:staff-data-engineer", DATA)]
        assert client.get("/models/coach:staff-data-engineer").json()["metadata"]["role"] == DATA
        body = {"model": "coach:staff-data-engineer",
                "messages": [{"role": "user", "content": "What is the base salary range?"}]}
        reply = client.post("/chat/completions", json=body).json()
        assert reply["model"] == "coach:staff-data-engineer"
        seed_text = " ".join(p.text for p in coach.retriever.library().passages)
        data_text = " ".join(p.text for p in coach.for_role(DATA).retriever.library().passages)
        for source in reply["choices"][0]["sources"]:
            assert source["text"] in data_text and source["text"] not in seed_text
        missing = client.post("/chat/completions", json={**body, "model": "coach:astronaut"})
        assert missing.status_code == 404 and "coach:staff-data-engineer" in missing.json()["error"]["message"]


@pytest.mark.integration
def test_a_conversation_keeps_its_role(coach: Coach) -> None:
    backends = Backends(coach, coach.settings)

    def last(steps: Iterator[Any]) -> Any:
        *_, final = steps
        return final

    first = last(answer_steps(backends, coach.settings, "What is the base salary range?", None, None, None,
                              role=DATA))
    conversation = first[-1]
    assert chat.role_of(conversation) == DATA
    # the picker shows another role now: the conversation's follow-up still answers from its own
    follow = last(answer_steps(backends, coach.settings, "And for a staff engineer?", conversation, None, None,
                               role=SEED))
    turn = follow[-1]["turns"][-1]
    data_text = " ".join(p.text for p in coach.for_role(DATA).retriever.library().passages)
    assert turn["sources"] and all(s["text"] in data_text for s in turn["sources"])
    assert chat.role_of(follow[-1]) == DATA


@pytest.mark.integration
def test_coach_plan_role_flag(two_role_settings: Settings, coach_cli: Callable[..., Any]) -> None:
    env = {"COACH_KNOWLEDGE_DIR": str(two_role_settings.knowledge_dir),
           "COACH_DATA_DIR": str(two_role_settings.data_dir)}
    said = "I have eight years of software development, two of them designing large-scale data pipelines."
    result = coach_cli("plan", "--json", "--backend", "extractive", "--role", "staff-data-engineer", said, env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["role"] == DATA
    default = coach_cli("plan", "--json", "--backend", "extractive", said, env=env)
    assert json.loads(default.stdout)["role"] == SEED
    wrong = coach_cli("plan", "--backend", "extractive", "--role", "astronaut", said, env=env)
    assert wrong.returncode == 1 and "astronaut" in wrong.stderr and "Traceback" not in wrong.stderr
