"""Hybrid retrieval: tokenizer and fusion with the fake embedder; quality with the real model on both Chromas."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coach import knowledge
from coach.config import Settings
from coach.embeddings import FakeEmbeddings, MiniLMEmbeddings
from coach.retrieval import HybridRetriever, build_retriever, tokenize
from coach.store import Hit, Index, open_index

REPO_ROOT = Path(__file__).resolve().parent.parent


def _dev_path() -> Path:
    shared = REPO_ROOT.parent / "shared" / "eval" / "dev.jsonl"
    return shared if shared.is_file() else REPO_ROOT / "tests" / "data" / "dev.jsonl"


DEV = [json.loads(line) for line in _dev_path().read_text(encoding="utf-8").splitlines() if line.strip()]
GOLD = [item for item in DEV if item.get("gold_sections")]
IN_SCOPE = [
    "What is the entry-level base salary?",
    "Which soft skills matter for this role?",
    "How do I handle resistance from team members worried about job security?",
]
OUT_OF_SCOPE = [
    "What will the weather be in Paris tomorrow?",
    "Write a poem about cats.",
    *[item["question"] for item in DEV if item.get("out_of_scope") and item.get("question")],
]


def _first_question(item: dict[str, Any]) -> str:
    return str(item.get("question") or item["turns"][0])


# -- tokenizer ---------------------------------------------------------------------------------
def test_tokenize_keeps_content_words_lowercased() -> None:
    assert tokenize("What is the entry-level base salary?") == ["entry-level", "base", "salary"]


def test_tokenize_folds_plurals_so_forms_match() -> None:
    assert tokenize("salaries") == tokenize("salary") == ["salary"]
    assert tokenize("Frameworks") == tokenize("framework") == ["framework"]
    assert tokenize("processes") == tokenize("process")
    assert tokenize("business") == ["business"]  # -ss is not a plural


@pytest.mark.parametrize(("plural", "singular"), [("practices", "practice"), ("challenges", "challenge"),
                                                  ("courses", "course"), ("bonuses", "bonus")])
def test_tokenize_matches_plurals_of_words_ending_in_e_or_us(plural: str, singular: str) -> None:
    assert tokenize(plural) == tokenize(singular)


def test_tokenize_keeps_technical_terms() -> None:
    tokens = tokenize("Python, C++ and AI/ML; CI/CD with PyTorch.")
    assert {"python", "c++", "ai/ml", "ci/cd", "pytorch"} <= set(tokens)
    assert "and" not in tokens and "with" not in tokens


def test_tokenize_of_nothing_useful_is_empty() -> None:
    assert tokenize("") == []
    assert tokenize("   ?!  ") == []
    assert tokenize("what is the") == []


# -- fusion, with the fake embedder ---------------------------------------------------------------
FUSION_KB = {
    "x.md": "# Alpha\n\n## One\n\n- Quiet meadow with grazing horses.\n",
    "y.md": "# Beta\n\n## Two\n\n- Zebra zebra zebra herds cross the plains.\n",
    "z.md": "# Gamma\n\n## Three\n\n- A lone zebra near the river.\n",
    "f1.md": "# Delta\n\n## Four\n\n- Budgets and roadmaps for teams.\n",
    "f2.md": "# Epsilon\n\n## Five\n\n- Hiring plans and interviews.\n",
    "f3.md": "# Zeta\n\n## Six\n\n- Cloud platforms and tooling.\n",
}


@pytest.fixture
def fusion_index(tmp_path: Path, models_dir: Path, fake_embedder: FakeEmbeddings, settings_factory: Any) -> Index:
    folder = tmp_path / "kb"
    folder.mkdir()
    for name, text in FUSION_KB.items():
        (folder / name).write_text(text)
    settings = settings_factory(folder, tmp_path / "data")
    index = open_index(settings, fake_embedder)
    index.sync(knowledge.load(folder, 70).chunks, progress=False)
    return index


def _id(index: Index, source: str) -> str:
    _, ids, _, metas = index.all_passages()
    return next(i for i, m in zip(ids, metas, strict=True) if m["source"] == source)


def test_passage_found_by_both_retrievers_ranks_first(fusion_index: Index, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y, z = (_id(fusion_index, s) for s in ("x.md", "y.md", "z.md"))
    real_query = fusion_index.query

    def dense(text: str, n: int, role: str | None = None) -> list[Hit]:
        # The dense retriever ranks X first and Z second, and never finds Y.
        hits = {h.id: h for h in real_query(text, 50)}
        return [hits[x], hits[z]][:n]

    monkeypatch.setattr(fusion_index, "query", dense)
    retriever = HybridRetriever(fusion_index, candidates=5)
    passages = retriever.search("zebra", k=3)
    # BM25 ranks Y (three zebras) first and Z second: Z, found by both, must beat both single finds.
    assert [p.id for p in passages] == [z, x, y]
    assert passages[0].score > passages[1].score > passages[2].score
    by_id = {p.id: p for p in passages}
    assert by_id[z].lexical > 0 and by_id[y].lexical > 0 and by_id[x].lexical == 0
    assert by_id[y].dense == 0.0
    # A lexical-only passage still carries its text and provenance.
    assert by_id[y].section == "Beta" and by_id[y].subsection == "Two" and by_id[y].source == "y.md"
    assert "Zebra zebra zebra" in by_id[y].text


def test_dense_mode_ignores_bm25(fusion_index: Index) -> None:
    passages = HybridRetriever(fusion_index).search("zebra", k=6, mode="dense")
    assert passages and all(p.lexical == 0.0 for p in passages)


def test_search_returns_k_passages_best_first_as_dicts(fusion_index: Index) -> None:
    passages = HybridRetriever(fusion_index).search("A lone zebra near the river", k=3)
    assert len(passages) == 3
    assert passages[0].source == "z.md"
    scores = [p.score for p in passages]
    assert scores == sorted(scores, reverse=True)
    for passage in passages:
        data = passage.to_dict()
        assert {"section", "subsection", "source", "score", "text"} <= set(data)
        assert isinstance(data["score"], float)
        json.dumps(data)
    assert passages[0].to_dict()["text"] == "- A lone zebra near the river."
    assert passages[0].to_dict()["section"] == "Gamma" and passages[0].to_dict()["subsection"] == "Three"


def test_search_sees_text_changed_by_a_later_sync(tmp_path: Path, models_dir: Path, fake_embedder: FakeEmbeddings,
                                                  monkeypatch: pytest.MonkeyPatch, settings_factory: Any) -> None:
    folder = tmp_path / "kb"
    folder.mkdir()
    for name, text in FUSION_KB.items():
        (folder / name).write_text(text)
    settings = settings_factory(folder, tmp_path / "data")
    index = open_index(settings, fake_embedder)
    index.sync(knowledge.load(folder, 70).chunks, progress=False)
    x = _id(index, "x.md")
    real_query = index.query
    # The dense side finds only X, so what else is shown comes from the lexical side.
    monkeypatch.setattr(index, "query", lambda text, n, role=None: [h for h in real_query(text, 50, role) if h.id == x])
    retriever = HybridRetriever(index, candidates=3)
    assert any("zebra" in p.text.lower() for p in retriever.search("zebra", k=3))
    # The knowledge changes: no zebra anywhere any more; same number of chunks.
    for name in ("y.md", "z.md"):
        (folder / name).write_text((folder / name).read_text().replace("zebra", "giraffe").replace("Zebra", "Giraffe"))
    report = index.sync(knowledge.load(folder, 70).chunks, progress=False)
    assert report.updated == 2
    passages = retriever.search("zebra", k=3)
    assert not any("zebra" in p.text.lower() for p in passages), [p.text for p in passages]
    assert {p.source for p in retriever.search("giraffe", k=3)} >= {"y.md", "z.md"}


# -- the real embedding model, on an embedded Chroma and on a `chroma run` server -------------------
@pytest.fixture(scope="module", params=["embedded", pytest.param("server", marks=pytest.mark.integration)])
def real_setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, models_dir: Path,
               real_embedder: MiniLMEmbeddings, settings_factory: Any) -> Iterator[tuple[Settings, HybridRetriever]]:
    """One real-model index per backend for this module: (settings, retriever)."""
    data = tmp_path_factory.mktemp(f"retrieval-{request.param}")
    extra: dict[str, Any] = {"collection": f"r{uuid.uuid4().hex[:10]}"}
    if request.param == "server":
        extra["chroma_url"] = request.getfixturevalue("chroma_server")
    settings = settings_factory(REPO_ROOT / "knowledge", data, **extra)
    index = open_index(settings, real_embedder)
    index.sync(knowledge.load(Path(settings.knowledge_dir), settings.chunk_max_words).chunks, progress=False)
    yield settings, build_retriever(index, settings)


@pytest.mark.integration
@pytest.mark.parametrize("item", GOLD, ids=[item["id"] for item in GOLD])
def test_gold_section_is_in_the_top_3(real_setup: tuple[Settings, HybridRetriever], item: dict[str, Any]) -> None:
    _, retriever = real_setup
    question = _first_question(item)
    top = retriever.search(question, k=3)
    assert len(top) == 3
    sections = [p.section for p in top]
    assert set(sections) & set(item["gold_sections"]), f"{question!r} -> {sections}, wanted {item['gold_sections']}"


@pytest.mark.integration
@pytest.mark.parametrize("question", [_first_question(i) for i in GOLD] + IN_SCOPE)
def test_in_scope_questions_are_covered(real_setup: tuple[Settings, HybridRetriever], question: str) -> None:
    _, retriever = real_setup
    assert retriever.covered(retriever.search(question, k=4))


@pytest.mark.integration
@pytest.mark.parametrize("question", OUT_OF_SCOPE)
def test_out_of_scope_questions_are_not_covered(real_setup: tuple[Settings, HybridRetriever], question: str) -> None:
    _, retriever = real_setup
    assert not retriever.covered(retriever.search(question, k=4))


@pytest.mark.integration
def test_salary_question_finds_base_salary(real_setup: tuple[Settings, HybridRetriever]) -> None:
    _, retriever = real_setup
    top = retriever.search("How much does the job pay?", k=3)
    assert any(p.subsection == "Base Salary" for p in top), [p.label for p in top]


@pytest.mark.integration
def test_two_instances_share_one_server_index(chroma_server: str, tmp_path: Path, models_dir: Path,
                                              real_embedder: MiniLMEmbeddings, settings_factory: Any,
                                              knowledge_copy: Path) -> None:
    settings = settings_factory(knowledge_copy, tmp_path / "data",
                                chroma_url=chroma_server, collection=f"shared{uuid.uuid4().hex[:8]}")
    first = open_index(settings, real_embedder)   # one app instance builds the index ...
    second = open_index(settings, real_embedder)  # ... another, with its own client, only reads it
    assert first.client is not second.client
    assert not second.exists()
    chunks = knowledge.load(Path(settings.knowledge_dir), settings.chunk_max_words).chunks
    first.sync(chunks, progress=False)
    assert second.exists() and second.count() == len(chunks)
    question = "What does a VP of AI/ML make?"
    second_retriever = build_retriever(second, settings)
    seen_by_second = second_retriever.search(question, k=3)
    seen_by_first = build_retriever(first, settings).search(question, k=3)
    assert [p.id for p in seen_by_second] == [p.id for p in seen_by_first]
    assert seen_by_second[0].section == "Salary Ranges (US Market, 2024)"
    # The second instance syncing finds nothing to do: it is the same index.
    report = second.sync(chunks, progress=False)
    assert (report.added, report.updated, report.removed, report.unchanged) == (0, 0, 0, len(chunks))
    # An edit synced by the first instance is what the running second instance finds next.
    path = next(p for p in knowledge_copy.glob("*.md") if "Extended parental leave" in p.read_text())
    path.write_text(path.read_text().replace("Extended parental leave", "Extended sabbatical leave"))
    report = first.sync(knowledge.load(knowledge_copy, settings.chunk_max_words).chunks, progress=False)
    assert report.updated == 1
    texts = [p.text for p in second_retriever.search("Is there extended sabbatical or parental leave?", k=4)]
    assert any("Extended sabbatical leave" in t for t in texts), texts
    assert not any("parental" in t for t in texts), texts
