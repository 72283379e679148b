"""A résumé as text: PDF (pypdf), DOCX (python-docx), Markdown or plain text, read offline and bounded.

Every way a file can be unusable is one clear sentence (ResumeError), never a traceback. A file is read in a
process of its own (`read_resume_file`: `python -m coach.planner.resume PATH`) with a memory limit and a time
limit, so that a file built to exhaust memory or time (a zip bomb, a PDF of endless pages) costs that process,
never the server. Before any parsing, a DOCX's zip directory is checked against bounds on members, declared
sizes and compression ratio (zipfile never reads more than a member's declared size, so the declared sizes
bound the real ones); a PDF is read for its first MAX_PAGES pages; the text is cut at MAX_TEXT characters and
the reader says so.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from coach.errors import CoachError

MAX_BYTES = 10 * 1024 * 1024  # the upload itself
MAX_TEXT = 100_000  # characters read: a long résumé is about 15,000; beyond this the reading slows to seconds
MAX_PAGES = 20  # PDF pages read
MAX_MEMBERS = 1_000  # zip members of a DOCX (a long résumé with images has under 100)
MAX_UNPACKED = 50 * 1024 * 1024  # declared unpacked size of all members together
MAX_RATIO = 100  # unpacked / packed size of a member over 1 MB (XML packs about 10:1; a bomb 1000:1)
READ_SECONDS = 20.0  # wall time for one file in its process (a 10 MB PDF reads in about 3 s)
READ_MEMORY = 1024 * 1024 * 1024  # address space of that process: python, pypdf and python-docx fit in a third
KINDS = "PDF, DOCX, Markdown or plain text"
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # an old .doc, or an Office file saved with a password
_ENCRYPTED = "EncryptedPackage".encode("utf-16-le")
_TAG = re.compile(r"<!--.*?-->|<(?:script|style)\b.*?</(?:script|style)\s*>|</?[a-zA-Z][^<>]*>", re.S | re.I)


class ResumeError(CoachError):
    """The file cannot be read as a résumé."""


@dataclass(frozen=True)
class ResumeText:
    """The text read from a résumé, and whether it was cut at MAX_TEXT."""

    text: str
    cut: bool = False

    def note(self, name: str) -> str | None:
        """One sentence saying the text was cut, or None."""
        return f"Only the first {MAX_TEXT:,} characters of {name} were read." if self.cut else None


def read_resume_file(path: Path, seconds: float = READ_SECONDS) -> ResumeText:
    """The text of a résumé, read in a process of its own within READ_MEMORY and `seconds`.

    Raises ResumeError with the reason when the file cannot be read, is too big for those bounds, or takes
    too long.
    """
    _check_size(path)
    try:
        done = subprocess.run([sys.executable, "-m", "coach.planner.resume", str(path)], capture_output=True,
                              timeout=seconds, env={**os.environ, "PYTHONIOENCODING": "utf-8"}, check=False)
    except subprocess.TimeoutExpired:
        raise ResumeError(f"{path.name} took more than {seconds:.0f} s to read; it was stopped. "
                          "Save it as a smaller PDF or as text and upload it again.") from None
    try:
        reply = json.loads(done.stdout.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        # killed by its memory limit (MemoryError, or the system's kill), or crashed inside a parser
        raise ResumeError(_too_much_memory(path.name)) from None
    if "error" in reply:
        raise ResumeError(str(reply["error"]))
    return ResumeText(str(reply["text"]), bool(reply.get("cut")))


def _too_much_memory(name: str) -> str:
    return f"{name} needs more memory to read than a résumé may; it was stopped."


def _check_size(path: Path) -> None:
    try:
        size = path.stat().st_size
    except OSError:
        raise ResumeError(f"{path.name}: the file cannot be opened.") from None
    if size > MAX_BYTES:
        raise ResumeError(f"{path.name} is {size / 1e6:.1f} MB; résumés up to 10 MB can be read.")


def resume_text(path: Path) -> ResumeText:
    """The text of a résumé file, in this process (bounded as above except for memory and time)."""
    _check_size(path)
    data = path.read_bytes()
    if not data.strip():
        raise ResumeError(f"{path.name} is empty.")
    if data.startswith(b"%PDF"):
        text = _pdf(data, path.name)
    elif data.startswith(b"PK"):
        text = _docx(data, path.name)
    elif data.startswith(_OLE):
        if _ENCRYPTED in data:
            raise ResumeError(f"{path.name} is password-protected; save it without a password and upload it again.")
        raise ResumeError(f"{path.name} is an old Word (.doc) file; save it as .docx or PDF and upload it again.")
    elif path.suffix.lower() in (".md", ".markdown", ".txt", ".text", "") and b"\x00" not in data[:4096]:
        text = _plain(data[: MAX_TEXT * 4 + 4])  # no character takes more than 4 bytes
    else:
        raise ResumeError(f"{path.name} is not a document I can read ({KINDS}).")
    text = _markup_removed(text)
    if not text.strip():
        raise ResumeError(f"{path.name} has no text I can read (a scanned PDF has only pictures of text).")
    return ResumeText(text[:MAX_TEXT], len(text) > MAX_TEXT)


def _markup_removed(text: str) -> str:
    """HTML pasted into a résumé or saved from a page: tags and comments out, entities as characters."""
    if "<" not in text:
        return text
    return html.unescape(_TAG.sub(" ", text))


def _pdf(data: bytes, name: str) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ResumeError(f"{name} is password-protected; save it without a password and upload it again.")
        parts, length = [], 0
        for page in reader.pages[:MAX_PAGES]:
            parts.append(page.extract_text() or "")
            length += len(parts[-1])
            if length > MAX_TEXT:
                break
        return "\n".join(parts)
    except ResumeError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError, RecursionError):
        raise ResumeError(f"{name} is damaged or not a real PDF.") from None


def check_zip(data: bytes, name: str) -> None:
    """Raise ResumeError when a DOCX's zip directory exceeds the bounds (before anything is unpacked)."""
    try:
        members = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise ResumeError(f"{name} is not a Word document I can read ({KINDS}).") from None
    too_big = f"{name} unpacks to more than a résumé can hold; it was not read."
    if len(members) > MAX_MEMBERS:
        raise ResumeError(f"{name} holds {len(members):,} files; a Word document holds far fewer. It was not read.")
    if sum(m.file_size for m in members) > MAX_UNPACKED:
        raise ResumeError(too_big)
    for m in members:
        if m.file_size > 1024 * 1024 and m.file_size > MAX_RATIO * max(m.compress_size, 1):
            raise ResumeError(too_big)


def _docx(data: bytes, name: str) -> str:
    import docx

    check_zip(data, name)
    try:
        document = docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        raise ResumeError(f"{name} is not a Word document I can read ({KINDS}).") from None
    except Exception as exc:  # python-docx raises its own types for a zip that is no Word file
        raise ResumeError(f"{name} is not a Word document I can read ({type(exc).__name__}).") from None
    lines = [p.text for p in document.paragraphs]
    for table in document.tables:
        lines += [" | ".join(cell.text for cell in row.cells) for row in table.rows]
    return "\n".join(lines)


def _plain(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start >= len(data) - 3:  # the cut at MAX_TEXT fell inside a character
            return data[:exc.start].decode("utf-8-sig")
        return data.decode("latin-1")


def _main(argv: list[str]) -> int:
    """`python -m coach.planner.resume PATH`: one JSON object on stdout, {"text", "cut"} or {"error"}."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (READ_MEMORY, READ_MEMORY))
    except (ImportError, ValueError, OSError):
        pass  # no limit where the system has none to set; the time limit still holds
    try:
        read = resume_text(Path(argv[0]))
        reply: dict[str, object] = {"text": read.text, "cut": read.cut}
    except ResumeError as exc:
        reply = {"error": str(exc)}
    except MemoryError:
        reply = {"error": _too_much_memory(Path(argv[0]).name)}
    sys.stdout.write(json.dumps(reply, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
