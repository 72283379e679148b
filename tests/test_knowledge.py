"""The knowledge base: faithful to the seed, structured by headings, chunked at whole bullets and sentences."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from coach import knowledge
from coach.errors import CoachError
from coach.knowledge import Chunk

ROLE = "Senior Software Engineering Manager in AI"
TITLES = [
    "Overview", "Core Responsibilities", "Requirements", "Career Development", "Market Demand",
    "Salary Ranges (US Market, 2024)", "Industry Trends", "Essential Soft Skills", "Best Practices",
    "Common Challenges",
]
# Each top-level section of the seed ends with a summary sentence glued to its last bullet.
SUMMARIES = [
    "This role requires a unique blend of technical depth",
    "By effectively balancing these responsibilities",
    "This comprehensive set of requirements ensures",
    "By focusing on these areas",
    "The market for Senior Software Engineering Managers in AI remains",
    "Note: These figures are estimates",
    "By understanding and adapting to these trends",
    "Mastering these soft skills",
    "By implementing these practices",
    "By understanding and proactively addressing these challenges",
]
_BULLET = re.compile(r"^([-*+]|\d+[.)])\s")
_SENTENCE_BOUNDARY = re.compile(r"[.!?]\s+[A-Z0-9\"'(]")


def _md_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.md") if p.name.lower() != "readme.md")


def _body(path: Path) -> str:
    """The file's text without its front matter."""
    text = path.read_text(encoding="utf-8")
    if text.startswith("---\n"):
        end = text.index("\n---", 4)
        text = text[end + 4:]
    return text


def _units(path: Path) -> list[str]:
    """Bullets and paragraphs of a Markdown file, in order (headings left out)."""
    units: list[str] = []
    para: list[str] = []
    for line in _body(path).splitlines() + [""]:
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or _BULLET.match(stripped):
            if para:
                units.append(" ".join(para))
                para = []
            if _BULLET.match(stripped):
                units.append(stripped)
        else:
            para.append(stripped)
    return units


def _words(text: str) -> int:
    return len(text.split())


def _is_sentence_run(piece: str, unit: str) -> bool:
    """Whether piece is one or more whole consecutive sentences of unit."""
    start = unit.find(piece)
    while start >= 0:
        end = start + len(piece)
        starts_clean = start == 0 or re.search(r"[.!?]\s+$", unit[:start]) is not None
        ends_clean = end == len(unit) or (piece[-1] in ".!?" and unit[end].isspace())
        if starts_clean and ends_clean:
            return True
        start = unit.find(piece, start + 1)
    return False


@pytest.fixture(scope="module")
def real_files(repo_root: Path) -> list[Path]:
    files = _md_files(repo_root / "knowledge")
    assert files, "knowledge/ holds no Markdown files"
    return files


@pytest.fixture(scope="module")
def real_kb(repo_root: Path) -> knowledge.KnowledgeBase:
    return knowledge.load(repo_root / "knowledge", 70)


def _write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


GOOD = "# Good Section\n\n## Part\n\n- A first bullet about pay.\n- A second bullet about teams.\n"


# -- the Markdown is faithful to the seed -------------------------------------------------------
def test_markdown_has_exactly_the_words_of_the_seed(repo_root: Path, real_files: list[Path]) -> None:
    seed = (repo_root / "tests" / "data" / "seed.txt").read_text(encoding="utf-8").split()
    markdown: list[str] = []
    for path in real_files:
        for line in _body(path).splitlines():
            line = re.sub(r"^#{1,2}\s+", "", line.strip())
            markdown.extend(line.split())
    if markdown != seed:
        n = next((i for i, (a, b) in enumerate(zip(markdown, seed, strict=False)) if a != b),
                 min(len(markdown), len(seed)))
        pytest.fail(f"knowledge/ differs from the seed at word {n}: markdown has "
                    f"{' '.join(markdown[max(0, n - 8):n + 8])!r}, seed has {' '.join(seed[max(0, n - 8):n + 8])!r} "
                    f"({len(markdown)} vs {len(seed)} words)")


def test_seed_copy_matches_shared_seed_when_present(repo_root: Path) -> None:
    shared = repo_root.parent / "shared" / "seed" / "000_cd5f558d41cd54d6.txt"
    if not shared.is_file():
        pytest.skip("../shared/seed is not on this machine")
    assert (repo_root / "tests" / "data" / "seed.txt").read_bytes() == shared.read_bytes()


def test_top_level_titles_are_the_ten_sections_in_order(repo_root: Path, real_files: list[Path]) -> None:
    readme = repo_root.parent / "shared" / "eval" / "README.md"
    expected = TITLES
    if readme.is_file():
        listed = readme.read_text(encoding="utf-8").split("in order:", 1)[1]
        expected = [t.strip().rstrip(".") for t in re.split(r",\s*(?![^()]*\))", " ".join(listed.split()))]
        assert expected == TITLES
    level1 = [line[2:].strip() for path in real_files for line in _body(path).splitlines()
              if line.startswith("# ")]
    assert level1 == expected


def test_inner_headings_of_the_seed_are_level_2(repo_root: Path, real_files: list[Path]) -> None:
    # In the seed an inner heading is a short line that is neither a title, a bullet nor a sentence.
    # A title can also be an inner heading ("Industry Trends" inside "Market Demand"): titles come in order.
    inner: list[str] = []
    next_title = 0
    for line in (repo_root / "tests" / "data" / "seed.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if next_title < len(TITLES) and line == TITLES[next_title]:
            next_title += 1
        elif line and not line.startswith("- ") and line[-1] not in ".:!?":
            inner.append(line)
    assert next_title == len(TITLES)
    assert {"Key Responsibilities", "Strategic Leadership", "Base Salary", "Career Progression"} <= set(inner)
    level2 = [line[3:].strip() for path in real_files for line in _body(path).splitlines()
              if line.startswith("## ")]
    assert level2 == inner
    deeper = [line for path in real_files for line in _body(path).splitlines() if line.startswith("###")]
    assert deeper == []


def test_bullets_stay_bullets(repo_root: Path, real_files: list[Path]) -> None:
    seed_bullets = sum(1 for line in (repo_root / "tests" / "data" / "seed.txt").read_text().splitlines()
                       if line.startswith("- "))
    md_bullets = sum(1 for path in real_files for line in _body(path).splitlines() if line.startswith("- "))
    assert md_bullets == seed_bullets


@pytest.mark.parametrize("opening", SUMMARIES)
def test_summary_sentence_is_its_own_paragraph(
    opening: str, repo_root: Path, real_files: list[Path], real_kb: knowledge.KnowledgeBase
) -> None:
    seed = (repo_root / "tests" / "data" / "seed.txt").read_text(encoding="utf-8")
    assert any(opening in line and line.startswith("- ") for line in seed.splitlines()), \
        "the seed glues this summary to a bullet"
    hits = [(path, lines, i) for path in real_files
            for lines in [_body(path).splitlines()] for i, line in enumerate(lines) if opening in line]
    assert len(hits) == 1, f"{opening!r} found {len(hits)} times"
    _, lines, i = hits[0]
    assert lines[i].startswith(opening), f"summary is glued to other text: {lines[i][:80]!r}"
    assert i > 0 and lines[i - 1].strip() == "", "summary must be separated from the last bullet by a blank line"
    chunk_lines = [line for c in real_kb.chunks for line in c.text.splitlines() if opening in line]
    assert len(chunk_lines) == 1 and chunk_lines[0].startswith(opening)


# -- chunking -----------------------------------------------------------------------------------
def test_every_chunk_has_its_metadata(real_kb: knowledge.KnowledgeBase, real_files: list[Path],
                                     repo_root: Path) -> None:
    assert real_kb.warnings == []
    assert real_kb.files == len(real_files)
    assert {c.section for c in real_kb.chunks} == set(TITLES)
    for chunk in real_kb.chunks:
        meta = chunk.metadata()
        assert set(meta) >= {"role", "section", "subsection", "source", "heading_path", "hash"}
        assert meta["role"] == ROLE
        assert meta["section"] in TITLES
        assert meta["source"].endswith(".md") and (repo_root / "knowledge" / meta["source"]).is_file()
        assert meta["heading_path"] == " > ".join(p for p in (ROLE, chunk.section, chunk.subsection) if p)
        assert re.fullmatch(r"[0-9a-f]{16,64}", meta["hash"])
        assert isinstance(meta["position"], int) and meta["position"] >= 0
        assert all(isinstance(v, str) for k, v in meta.items() if k != "position")


def test_chunk_ids_are_unique(real_kb: knowledge.KnowledgeBase) -> None:
    ids = [c.id for c in real_kb.chunks]
    assert len(ids) == len(set(ids))


def test_salary_subsections_are_found_by_their_heading(real_kb: knowledge.KnowledgeBase) -> None:
    base = [c for c in real_kb.chunks if c.subsection == "Base Salary"]
    assert len(base) == 1
    assert base[0].section == "Salary Ranges (US Market, 2024)"
    assert "Entry Level: $150,000 - $180,000" in base[0].text
    # The headings are embedded with the text, so a question about "base salary" can find it.
    assert "Base Salary" in base[0].embed_text and "Salary Ranges (US Market, 2024)" in base[0].embed_text


@pytest.mark.parametrize("max_words", [20, 35, 70, 400])
def test_chunks_are_whole_bullets_and_paragraphs(real_files: list[Path], repo_root: Path, max_words: int) -> None:
    kb = knowledge.load(repo_root / "knowledge", max_words)
    for path in real_files:
        units = _units(path)
        chunks = [c for c in kb.chunks if c.source == path.name]
        lines = [line for c in chunks for line in c.text.splitlines()]
        # Nothing dropped, nothing added, order kept.
        assert " ".join(lines).split() == " ".join(units).split(), path.name
        for line in lines:
            if line in units:
                continue
            owners = [u for u in units if _words(u) > max_words and _is_sentence_run(line, u)]
            assert owners, f"{path.name}: chunk line is cut mid-sentence or mid-bullet: {line!r}"


@pytest.mark.parametrize("max_words", [20, 35, 70])
def test_chunk_size_respects_the_limit(repo_root: Path, max_words: int) -> None:
    kb = knowledge.load(repo_root / "knowledge", max_words)
    for chunk in kb.chunks:
        if _words(chunk.text) > max_words:
            # Only a single sentence longer than the limit may exceed it, and it stays whole.
            assert "\n" not in chunk.text, chunk.text
            assert not _SENTENCE_BOUNDARY.search(chunk.text.lstrip("-*+ ")), chunk.text


def test_small_subsections_stay_whole(real_kb: knowledge.KnowledgeBase) -> None:
    groups: dict[tuple[str, str, str], list[Chunk]] = {}
    for chunk in real_kb.chunks:
        groups.setdefault((chunk.source, chunk.section, chunk.subsection), []).append(chunk)
    for key, chunks in groups.items():
        if sum(_words(c.text) for c in chunks) <= 70:
            assert len(chunks) == 1, key


def test_long_subsection_is_split_between_bullets(tmp_path: Path) -> None:
    bullets = [f"- Bullet number {n} says something useful about leading teams well." for n in range(12)]
    _write(tmp_path, "long.md", "# Long\n\n## Many Bullets\n\n" + "\n".join(bullets) + "\n")
    kb = knowledge.load(tmp_path, 30)
    chunks = [c for c in kb.chunks if c.subsection == "Many Bullets"]
    assert len(chunks) > 1
    assert [line for c in chunks for line in c.text.splitlines()] == bullets
    assert all(_words(c.text) <= 30 for c in chunks)


def test_over_long_sentence_is_kept_whole(tmp_path: Path) -> None:
    long_sentence = "This single sentence " + " ".join(f"word{n}" for n in range(40)) + " ends here."
    text = f"# Sec\n\n## Sub\n\nA short opening sentence. {long_sentence} A short closing sentence.\n"
    _write(tmp_path, "s.md", text)
    kb = knowledge.load(tmp_path, 20)
    assert any(c.text == long_sentence for c in kb.chunks), [c.text for c in kb.chunks]
    assert " ".join(c.text for c in kb.chunks).split() == text.split("## Sub", 1)[1].split()


def test_deeper_headings_lose_no_text(tmp_path: Path) -> None:
    _write(tmp_path, "deep.md", "# Sec\n\n## Sub\n\n- First bullet before the deeper heading.\n\n"
                                "### Deeper\n\n- Second bullet after the deeper heading.\n\n"
                                "## Sub\n\n- Third bullet under a repeated heading.\n")
    kb = knowledge.load(tmp_path, 70)
    ids = [c.id for c in kb.chunks]
    assert len(ids) == len(set(ids)), f"duplicate chunk ids {ids}: the index would keep only one of them"
    text = "\n".join(c.text for c in kb.chunks)
    for bullet in ("First bullet", "Second bullet", "Third bullet"):
        assert bullet in text


# -- hashes ------------------------------------------------------------------------------------
def test_hash_is_stable_and_changes_with_the_text(knowledge_copy: Path) -> None:
    before = {c.id: c.hash for c in knowledge.load(knowledge_copy, 70).chunks}
    assert before == {c.id: c.hash for c in knowledge.load(knowledge_copy, 70).chunks}

    path = next(p for p in _md_files(knowledge_copy) if "Extended parental leave" in p.read_text())
    path.write_text(path.read_text().replace("Extended parental leave", "Extended family leave"))
    chunks = knowledge.load(knowledge_copy, 70).chunks
    after = {c.id: c.hash for c in chunks}
    assert after.keys() == before.keys()
    changed = [c for c in chunks if before[c.id] != c.hash]
    assert [c.subsection for c in changed] == ["Additional Benefits"]
    assert "Extended family leave" in changed[0].text


def test_hash_changes_when_a_heading_changes(tmp_path: Path) -> None:
    _write(tmp_path, "a.md", GOOD)
    first = knowledge.load(tmp_path, 70).chunks[0]
    _write(tmp_path, "a.md", GOOD.replace("## Part", "## Pay"))
    second = knowledge.load(tmp_path, 70).chunks[0]
    assert first.text == second.text
    assert first.hash != second.hash


# -- bad files and folders ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.md", b"# Title\n\n- caf\xe9 in Latin-1, not UTF-8 \xff\xfe\n"),
        ("empty.md", b""),
        ("only-front-matter.md", b"---\nrole: Nobody\n---\n\n"),
        ("no-headings.md", b"Just a paragraph of text without any heading.\n\n- and a bullet\n"),
    ],
)
def test_unusable_file_is_a_warning_and_the_rest_loads(tmp_path: Path, name: str, content: bytes) -> None:
    _write(tmp_path, "good.md", GOOD)
    _write(tmp_path, name, content)
    kb = knowledge.load(tmp_path, 70)
    assert len(kb.warnings) == 1
    assert name in kb.warnings[0]
    assert {c.source for c in kb.chunks} == {"good.md"}
    assert any("first bullet about pay" in c.text for c in kb.chunks)


def test_several_bad_files_each_get_a_warning(tmp_path: Path) -> None:
    _write(tmp_path, "a-good.md", GOOD)
    _write(tmp_path, "b-latin1.md", b"# T\n\ncaf\xe9\n")
    _write(tmp_path, "c-empty.md", b"   \n\n")
    _write(tmp_path, "sub/d-plain.md", "no heading here\n")
    _write(tmp_path, "sub/e-good.md", "# Nested\n\nA nested paragraph.\n")
    kb = knowledge.load(tmp_path, 70)
    assert len(kb.warnings) == 3
    for name in ("b-latin1.md", "c-empty.md", "d-plain.md"):
        assert sum(name in w for w in kb.warnings) == 1
    assert {c.source for c in kb.chunks} == {"a-good.md", "sub/e-good.md"}


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(CoachError) as err:
        knowledge.load(missing, 70)
    message = str(err.value)
    assert str(missing) in message
    assert "not exist" in message or "missing" in message or "not found" in message
    assert "\n" not in message


def test_folder_without_usable_files_is_an_error_naming_them(tmp_path: Path) -> None:
    _write(tmp_path, "empty.md", "")
    with pytest.raises(CoachError) as err:
        knowledge.load(tmp_path, 70)
    assert "empty.md" in str(err.value)


def test_front_matter_role_is_applied(tmp_path: Path) -> None:
    _write(tmp_path, "ds.md", "---\nrole: Data Scientist\n---\n\n# Skills\n\n- Statistics and Python.\n")
    _write(tmp_path, "plain.md", GOOD)
    kb = knowledge.load(tmp_path, 70)
    ds = [c for c in kb.chunks if c.source == "ds.md"]
    assert ds and all(c.role == "Data Scientist" for c in ds)
    assert ds[0].heading_path == "Data Scientist > Skills"
    assert ds[0].metadata()["role"] == "Data Scientist"
    assert "role:" not in ds[0].text and "---" not in ds[0].text
    assert all(c.role != "Data Scientist" for c in kb.chunks if c.source == "plain.md")


def test_front_matter_after_a_byte_order_mark(tmp_path: Path) -> None:
    _write(tmp_path, "bom.md", b"\xef\xbb\xbf---\nrole: Data Scientist\n---\n\n# Skills\n\n- Statistics.\n")
    kb = knowledge.load(tmp_path, 70)
    assert [(c.role, c.section, c.text) for c in kb.chunks] == [("Data Scientist", "Skills", "- Statistics.")]


def test_real_files_name_their_role(real_files: list[Path]) -> None:
    for path in real_files:
        text = path.read_text(encoding="utf-8")
        assert text.startswith("---\n") and f"role: {ROLE}" in text.split("\n---", 1)[0], path.name



def test_chunks_keep_their_place_in_the_file(repo_root: Path) -> None:
    chunks = knowledge.load(repo_root / "knowledge", 70).chunks
    by_file: dict[str, list[int]] = {}
    for c in chunks:
        by_file.setdefault(c.source, []).append(c.position)
    assert all(positions == list(range(len(positions))) for positions in by_file.values())
    requirements = [c.subsection for c in chunks if c.source == "03-requirements.md"]
    assert requirements.index("Educational Background") < requirements.index("Additional Desirable Skills")
