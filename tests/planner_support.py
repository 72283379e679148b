"""Plain helpers for the planner tests: the role card of a knowledge folder (no index), a hand-made PDF."""

from __future__ import annotations

import re
from pathlib import Path

from helpers import REPO

from coach import knowledge
from coach.planner.card import RoleCard, build_card
from coach.retrieval import Passage

KNOWLEDGE = REPO / "knowledge"
CITED = re.compile(r"\[(\d+)\]")


def passages_of(folder: Path) -> list[Passage]:
    """Every chunk of a knowledge folder as a passage, as the index would hold it."""
    kb = knowledge.load(folder)
    return [Passage(c.id, c.text, c.section, c.subsection, c.source, c.role, 0.0, position=c.position)
            for c in kb.chunks]


def card_of(folder: Path = KNOWLEDGE) -> RoleCard:
    """The role card of a knowledge folder, built from its Markdown (shared-word similarity, no model)."""
    return build_card(passages_of(folder))


def cited(text: str) -> list[int]:
    """The [n] citation numbers in a text, in order."""
    return [int(n) for n in CITED.findall(text)]


def make_pdf(lines: list[str]) -> bytes:
    """A minimal valid one-page PDF whose content stream writes these lines (xref offsets computed)."""
    def escape(line: str) -> str:
        return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    content = "BT /F1 12 Tf 14 TL 72 720 Td " + " ".join(f"({escape(line)}) Tj T*" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content.encode('latin-1'))} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{n} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)
