"""A résumé as text: PDF (pypdf), DOCX (python-docx), Markdown or plain text, read offline.

Every way a file can be unusable is one clear sentence (ResumeError), never a traceback.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from coach.errors import CoachError

MAX_BYTES = 10 * 1024 * 1024
KINDS = "PDF, DOCX, Markdown or plain text"


class ResumeError(CoachError):
    """The file cannot be read as a résumé."""


def resume_text(path: Path) -> str:
    """The text of a résumé file; raises ResumeError with the reason when it cannot be read."""
    try:
        size = path.stat().st_size
    except OSError:
        raise ResumeError(f"{path.name}: the file cannot be opened.") from None
    if size > MAX_BYTES:
        raise ResumeError(f"{path.name} is {size / 1e6:.1f} MB; résumés up to 10 MB can be read.")
    data = path.read_bytes()
    if not data.strip():
        raise ResumeError(f"{path.name} is empty.")
    if data.startswith(b"%PDF"):
        text = _pdf(data, path.name)
    elif data.startswith(b"PK"):
        text = _docx(data, path.name)
    elif path.suffix.lower() in (".md", ".markdown", ".txt", ".text", "") and b"\x00" not in data[:4096]:
        text = _plain(data)
    else:
        raise ResumeError(f"{path.name} is not a document I can read ({KINDS}).")
    if not text.strip():
        raise ResumeError(f"{path.name} has no text I can read (a scanned PDF has only pictures of text).")
    return text


def _pdf(data: bytes, name: str) -> str:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ResumeError(f"{name} is password-protected; save it without a password and upload it again.")
        return "\n".join(page.extract_text() or "" for page in reader.pages[:20])
    except ResumeError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, OSError):
        raise ResumeError(f"{name} is damaged or not a real PDF.") from None


def _docx(data: bytes, name: str) -> str:
    import docx

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
    except UnicodeDecodeError:
        return data.decode("latin-1")
