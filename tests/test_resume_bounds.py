"""Résumés built to exhaust the server (the second outside probe): zip bombs, endless text, slow files, encrypted
and old Word files, HTML in the text. Real files, read as the page and the CLI read them: in a process of its
own (read_resume_file), within its bounds, each refusal one clear sentence."""

from __future__ import annotations

import io
import resource
import zipfile
from pathlib import Path
from typing import Any

import docx
import pytest

from coach.planner.profile import read_profile
from coach.planner.resume import MAX_MEMBERS, MAX_TEXT, ResumeError, read_resume_file, resume_text

RESUME = "I have 9 years of software development and 4 years leading a team. MSc in Computer Science."


def word_file(extra: dict[str, bytes] | None = None) -> bytes:
    """A real DOCX (python-docx) with members added to its zip."""
    document = docx.Document()
    document.add_paragraph(RESUME)
    out = io.BytesIO()
    document.save(out)
    if not extra:
        return out.getvalue()
    again = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as old, zipfile.ZipFile(again, "w", zipfile.ZIP_DEFLATED) as new:
        for item in old.infolist():
            new.writestr(item, old.read(item.filename))
        for name, data in extra.items():
            new.writestr(name, data)
    return again.getvalue()


def one_sentence(message: str) -> bool:
    return "\n" not in message and "Traceback" not in message and message.rstrip().endswith(".")


def test_a_real_docx_is_read_in_its_own_process(tmp_path: Path) -> None:
    path = tmp_path / "cv.docx"
    path.write_bytes(word_file())
    read = read_resume_file(path)
    assert RESUME in read.text and not read.cut


@pytest.mark.parametrize(("what", "members"), [
    ("a member that unpacks to 1 GB", {"word/media/bomb.xml": b"\0" * (1024 * 1024 * 1024)}),
    ("a member of ratio 1000:1", {"word/media/pad.bin": b"\0" * (3 * 1024 * 1024)}),
    ("too many members", {f"word/media/{n}.bin": b"x" for n in range(MAX_MEMBERS + 1)}),
])
def test_a_zip_bomb_is_refused_before_it_is_unpacked(tmp_path: Path, what: str, members: dict[str, bytes]) -> None:
    data = word_file(members)
    assert len(data) < 10 * 1024 * 1024, "the bomb is a small file"
    path = tmp_path / "cv.docx"
    path.write_bytes(data)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ResumeError) as caught:
        read_resume_file(path)
    message = str(caught.value)
    assert message.startswith("cv.docx") and "not read" in message and one_sentence(message), (what, message)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 50, f"reading {what} grew the server by {grown_mb:.0f} MB"


def test_a_huge_text_resume_is_cut_and_says_so(tmp_path: Path) -> None:
    path = tmp_path / "cv.txt"
    path.write_text(RESUME + "\n" + "Worked on many systems. " * 400_000, encoding="utf-8")  # 9.6 MB
    read = read_resume_file(path)
    assert read.cut and len(read.text) == MAX_TEXT and read.text.startswith(RESUME)
    assert read.note("cv.txt") == f"Only the first {MAX_TEXT:,} characters of cv.txt were read."


def test_a_read_that_takes_too_long_is_stopped(tmp_path: Path) -> None:
    path = tmp_path / "cv.docx"
    path.write_bytes(word_file())
    with pytest.raises(ResumeError) as caught:
        read_resume_file(path, seconds=0.01)  # not even the interpreter starts within this
    assert "took more than" in str(caught.value) and "stopped" in str(caught.value)


def test_a_reader_killed_for_memory_is_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cv.txt"
    path.write_text(RESUME, encoding="utf-8")
    # The reading process dies (as the system kills a process over its memory limit): nothing on stdout.
    monkeypatch.setattr("sys.executable", "/bin/false")
    with pytest.raises(ResumeError, match="needs more memory"):
        read_resume_file(path)


@pytest.mark.parametrize(("data", "reason"), [
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500) + "EncryptedPackage".encode("utf-16-le") + bytes(500),
     "password-protected"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(2000), r"old Word \(\.doc\) file"),
])
def test_encrypted_and_old_word_files_say_what_they_are(tmp_path: Path, data: bytes, reason: str) -> None:
    path = tmp_path / "cv.docx"
    path.write_bytes(data)
    with pytest.raises(ResumeError, match=reason):
        read_resume_file(path)


def test_html_in_a_resume_is_text_not_skills(tmp_path: Path) -> None:
    from planner_support import card_of

    path = tmp_path / "cv.md"
    path.write_text("<h1>Jane</h1><p>I know <b>Python</b>, <img src=x onerror=alert(1)> Kubernetes and "
                    "<i>PyTorch</i>.</p><!-- hidden --> &amp; 9 years of software development.", encoding="utf-8")
    text = resume_text(path).text
    assert "<" not in text and ">" not in text and "& 9 years" in text
    skills = read_profile(text, card_of()).profile.skills
    assert skills and all("<" not in s and ">" not in s and "=" not in s for s in skills), skills


def test_an_uploaded_resume_is_deleted_once_read_and_no_other_file(tmp_path: Path, make_coach: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from coach.planner.store import PlanStore
    from coach.ui.plan_panel import PlanService

    uploads = tmp_path / "gradio"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    coach = make_coach(data_dir=tmp_path / "data")
    service = PlanService(coach, PlanStore(coach.settings.database))
    sent = uploads / "3f2a" / "cv.md"
    sent.parent.mkdir(parents=True)
    sent.write_text(RESUME, encoding="utf-8")
    assert service.read_resume(str(sent)).profile.years_development == 9
    assert not sent.exists() and not sent.parent.exists()
    own = tmp_path / "mine.md"  # a file the page did not receive is never deleted
    own.write_text(RESUME, encoding="utf-8")
    service.read_resume(str(own))
    assert own.exists()
    broken = uploads / "9c1d" / "cv.docx"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(ResumeError):
        service.read_resume(str(broken))
    assert not broken.exists()  # deleted when it could not be read, too
