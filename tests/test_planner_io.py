"""What the planner keeps and reads from files: the profile store, résumés, and the `coach plan` command."""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import docx
import pytest
from helpers import REPO
from planner_support import make_pdf
from pypdf import PdfReader, PdfWriter

from coach.planner.profile import Profile
from coach.planner.resume import MAX_BYTES, ResumeError, resume_text
from coach.planner.store import PlanStore, StoreError

Cli = Callable[..., subprocess.CompletedProcess[str]]
RESUME_LINES = ["Jane Doe - Engineering Manager", "I have 9 years of software development experience.",
                "I led a team of six for 6 years.", "MSc in Computer Science.", "Skills: Python, PyTorch, AWS"]


def one_sentence(message: str) -> bool:
    """One line, one sentence, no traceback."""
    return ("\n" not in message and "Traceback" not in message and message.endswith(".")
            and not re.search(r"[.!?]\s+[A-Z]", message))


# -- the store ----------------------------------------------------------------------------------------------
def test_profiles_and_ticked_items_round_trip_and_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nested' / 'plans.db'}"
    ann = Profile(years_development=6, years_leadership=2, degree="master", skills=["Python", "AWS"])
    store = PlanStore(url)
    assert store.profile("ann") is None and store.done("ann") == set()
    store.save_profile("ann", ann)
    store.save_profile("bob", Profile(years_development=1))
    store.set_done("ann", {"Gain 2 more years of software development", "Mentor junior engineers"})
    assert store.profile("ann") == ann and store.done("bob") == set()
    store.save_profile("ann", ann.model_copy(update={"years_development": 7}))  # saving replaces
    store.set_done("ann", {"Mentor junior engineers"})
    store.close()

    again = PlanStore(url)  # a restart: a new store on the same file
    assert again.profile("ann") == ann.model_copy(update={"years_development": 7})
    assert again.done("ann") == {"Mentor junior engineers"}
    assert again.profile("bob") == Profile(years_development=1)
    again.close()


def test_a_corrupt_database_file_is_one_clear_sentence(tmp_path: Path) -> None:
    db = tmp_path / "plans.db"
    db.write_bytes(os.urandom(8192))
    store = PlanStore(f"sqlite:///{db}")
    for action in (lambda: store.profile("ann"), lambda: store.done("ann"),
                   lambda: store.save_profile("ann", Profile(years_development=3))):
        with pytest.raises(StoreError) as caught:
            action()
        message = str(caught.value)
        assert one_sentence(message), message
        assert "database" in message and caught.value.__suppress_context__


def test_a_failed_save_keeps_what_was_saved_before(tmp_path: Path) -> None:
    db = tmp_path / "plans.db"
    store = PlanStore(f"sqlite:///{db}")
    before = Profile(years_development=6, skills=["Python"])
    store.save_profile("ann", before)
    store.set_done("ann", {"first item"})
    with sqlite3.connect(db) as conn:  # the disk "fills up": every new row is refused
        for table in ("coach_profiles", "coach_plan_items"):
            conn.execute(f"CREATE TRIGGER full_{table} BEFORE INSERT ON {table} "
                         "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
    with pytest.raises(StoreError) as caught:
        store.save_profile("ann", Profile(years_development=9))
    assert one_sentence(str(caught.value)) and "saved before is kept" in str(caught.value)
    with pytest.raises(StoreError):
        store.set_done("ann", {"second item"})
    assert store.profile("ann") == before and store.done("ann") == {"first item"}
    store.close()


# -- résumés ------------------------------------------------------------------------------------------------
def test_a_pdf_resume(tmp_path: Path) -> None:
    data = make_pdf(RESUME_LINES)
    assert "9 years of software development" in PdfReader(io.BytesIO(data)).pages[0].extract_text()
    path = tmp_path / "cv.pdf"
    path.write_bytes(data)
    text = resume_text(path).text
    assert all(line in text for line in RESUME_LINES)


def test_an_encrypted_pdf_is_refused_with_the_reason(tmp_path: Path) -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(RESUME_LINES))))
    writer.encrypt("secret", algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    assert PdfReader(io.BytesIO(out.getvalue())).is_encrypted
    path = tmp_path / "locked.pdf"
    path.write_bytes(out.getvalue())
    with pytest.raises(ResumeError, match="password-protected") as caught:
        resume_text(path)
    assert one_sentence(str(caught.value)), str(caught.value)


def test_a_docx_resume_with_a_table(tmp_path: Path) -> None:
    document = docx.Document()
    for line in RESUME_LINES[:3]:
        document.add_paragraph(line)
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text, table.rows[0].cells[1].text = "Degree", "MSc in Computer Science"
    path = tmp_path / "cv.docx"
    document.save(str(path))
    text = resume_text(path).text
    assert RESUME_LINES[1] in text and "Degree | MSc in Computer Science" in text


@pytest.mark.parametrize("name", ["cv.md", "cv.txt", "cv"])
def test_markdown_and_text_resumes(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("# Jane Doe\n\n" + "\n".join(f"- {line}" for line in RESUME_LINES) + "\n", encoding="utf-8")
    assert RESUME_LINES[2] in resume_text(path).text


def test_a_latin1_text_resume_is_read(tmp_path: Path) -> None:
    path = tmp_path / "cv.txt"
    path.write_bytes("Résumé: 7 years of développement".encode("latin-1"))
    assert resume_text(path).text == "Résumé: 7 years of développement"


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde" + bytes(64)


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("empty.md", b"", "is empty"),
    ("blank.txt", b"  \n\n\t ", "is empty"),
    ("photo.pdf", PNG, "is not a document I can read"),
    ("binary.txt", b"\x00\x01\x02\x03ELF\x00" * 50, "is not a document I can read"),
    ("photo.png", PNG, "is not a document I can read"),
    ("damaged.pdf", make_pdf(RESUME_LINES)[:180], "is damaged or not a real PDF"),
    ("fake.pdf", b"%PDF-1.7\n" + bytes(range(256)) * 8, "is damaged or not a real PDF"),
    ("fake.docx", b"PK\x03\x04 this is not a zip", "is not a Word document I can read"),
])
def test_unusable_files_are_one_clear_sentence(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ResumeError) as caught:
        resume_text(path)
    message = str(caught.value)
    assert message.startswith(name) and reason in message and "\n" not in message and "Traceback" not in message


def test_a_file_over_ten_megabytes_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.txt"
    with path.open("wb") as f:
        f.truncate(MAX_BYTES + 1)  # sparse: over the limit without writing 10 MB
    assert MAX_BYTES == 10 * 1024 * 1024
    with pytest.raises(ResumeError, match=r"huge\.txt is 10\.5 MB; résumés up to 10 MB can be read\."):
        resume_text(path)
    with pytest.raises(ResumeError, match="cannot be opened"):
        resume_text(tmp_path / "missing.pdf")


# -- coach plan ----------------------------------------------------------------------------------------------
def plan_json(coach_cli: Cli, *args: str) -> dict:
    result = coach_cli("plan", *args, "--json", "--backend", "extractive")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # one JSON object, nothing else on stdout
    assert isinstance(data, dict)
    return data


@pytest.mark.integration
def test_coach_plan_json(coach_cli: Cli) -> None:
    data = plan_json(coach_cli, "I have 6 years as a developer and 2 years leading a small team. "
                                "I have a bachelor's in mathematics and I know Python, PyTorch and AWS.")
    profile = data["profile"]
    assert (profile["years_development"], profile["years_leadership"], profile["degree"]) == (6, 2, "bachelor")
    assert profile["skills"] == ["Python", "PyTorch", "AWS"]
    assert data["verdict"] == "not_yet" and data["verdict"] in {"ready", "close", "not_yet", "unknown"}
    rows = {r["requirement"]: r for r in data["requirements"]}
    assert all({"requirement", "status", "have", "required", "source"} <= set(r) for r in data["requirements"])
    assert {r["status"] for r in data["requirements"]} <= {"met", "partly", "missing", "unknown"}
    development = rows["8+ years of software development experience."]
    assert (development["status"], development["have"], development["required"]) == ("partly", "6 years", "8+ years")
    assert development["source"] == "Requirements > Technical Expertise (03-requirements.md)"
    assert rows["5+ years in technical leadership roles."]["status"] == "partly"
    assert data["ladder"]["current"]["title"] is None and data["ladder"]["current"]["pay"] is None
    assert (data["ladder"]["next"]["title"], data["ladder"]["next"]["pay"]) == ("Entry Level", "$150,000 - $180,000")
    assert 1 <= len(data["priorities"]) <= 3 and all(p["text"] and p["source"] for p in data["priorities"])
    assert "**Verdict: not yet.**" in data["answer"]


@pytest.mark.integration
def test_coach_plan_with_a_profile_file(coach_cli: Cli, tmp_path: Path) -> None:
    me = tmp_path / "me.yaml"
    me.write_text("years_development: 9\nyears_leadership: 6\ndegree: master\ncurrent_level: Mid-Level\n",
                  encoding="utf-8")
    data = plan_json(coach_cli, "--profile", str(me))
    assert data["verdict"] == "ready"
    assert data["ladder"]["current"]["title"] == "Mid-Level"
    assert (data["ladder"]["next"]["title"], data["ladder"]["next"]["pay"]) == ("Senior Level", "$220,000 - $280,000")
    told = plan_json(coach_cli, "Actually I have only 7 years of development.", "--profile", str(me))
    assert told["verdict"] == "close" and told["profile"]["years_leadership"] == 6  # the text wins over the file

    resume = tmp_path / "resume.md"
    resume.write_text("# Jane Doe\n\n" + "\n".join(f"- {line}" for line in RESUME_LINES) + "\n", encoding="utf-8")
    data = plan_json(coach_cli, "--profile", str(resume))
    assert (data["profile"]["years_development"], data["profile"]["years_leadership"]) == (9, 6)
    assert data["profile"]["degree"] == "master" and "PyTorch" in data["profile"]["skills"]
    assert data["verdict"] in {"ready", "close"}

    text = coach_cli("plan", "--profile", str(me), "--backend", "extractive")
    assert text.returncode == 0 and "**Verdict: ready.**" in text.stdout and "\nSources:\n[1] " in text.stdout


@pytest.mark.integration
@pytest.mark.parametrize(("name", "content", "says"), [
    ("bad.yaml", "years_development: [9\n", "cannot be read as YAML or JSON"),
    ("absurd.yaml", "years_development: 900\n", "years_development"),
    ("empty.md", "", "is empty"),
])
def test_coach_plan_with_an_unusable_file_is_one_line(coach_cli: Cli, tmp_path: Path, name: str, content: str,
                                                      says: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    result = coach_cli("plan", "--profile", str(path), "--backend", "extractive")
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_coach_plan_without_anything_is_a_usage_error(coach_cli: Cli) -> None:
    result = coach_cli("plan", "--backend", "extractive")
    assert result.returncode == 2 and result.stdout == ""
    assert "coach plan" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.integration
def test_coach_plan_json_on_a_second_role_through_the_real_index(coach_cli: Cli, tmp_path: Path) -> None:
    """Another role in the knowledge format, indexed with COACH_KNOWLEDGE_DIR: its own thresholds, activity, ladder."""
    role = REPO / "tests" / "data" / "roles" / "staff-data-engineer"
    env = {"COACH_KNOWLEDGE_DIR": str(role), "COACH_DATA_DIR": str(tmp_path / "data")}
    result = coach_cli("plan", "--json", "--backend", "extractive", "I'm a Senior Data Engineer with eight years of "
                       "software development, two of them designing large-scale data pipelines. BS in Statistics. "
                       "I mentor a junior engineer.", env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["role"] == "Staff Data Engineer" and data["verdict"] == "close"
    pipelines = next(r for r in data["requirements"] if r.get("activity") == "designing large-scale data pipelines")
    assert (pipelines["kind"], pipelines["min_years"], pipelines["status"], pipelines["optional"]) == (
        "years", 3, "partly", False)
    master = next(r for r in data["requirements"] if "master" in r["requirement"].lower())
    assert master["optional"] is True and master["kind"] == "degree"
    assert {(e["activity"], e["years"]) for e in data["profile"]["experience"]} >= {
        ("designing large-scale data pipelines", 2.0)}
    assert data["profile"]["years_development"] == 8
    assert (data["ladder"]["current"]["title"], data["ladder"]["next"]["title"]) == ("Senior Data Engineer",
                                                                                   "Staff Data Engineer")
