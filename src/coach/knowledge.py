"""Knowledge files (Markdown) -> section-aware chunks with metadata."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from coach.errors import CoachError
from coach.text import split_sentences


@dataclass(frozen=True)
class Chunk:
    """A passage of the knowledge base and where it comes from."""

    id: str
    text: str
    role: str
    section: str
    subsection: str
    source: str
    position: int = 0  # the chunk's place in its file (the planner reads requirements in the order written)

    @property
    def heading_path(self) -> str:
        """Role > Section > Subsection, the breadcrumb embedded with the text."""
        return " > ".join(p for p in (self.role, self.section, self.subsection) if p)

    @property
    def embed_text(self) -> str:
        """What is embedded: Section > Subsection, then the passage.

        The role is left out: it is the same for every chunk of a file and would pull all vectors
        together, making an off-topic question look as close as an on-topic one.
        """
        return f"{self.label}\n{self.text}"

    @property
    def hash(self) -> str:
        """Content hash: changes whenever the text, its heading path (role included) or its place changes."""
        return hashlib.sha256(f"{self.heading_path}\n{self.position}\n{self.text}".encode()).hexdigest()[:32]

    @property
    def label(self) -> str:
        """Section > Subsection, as shown to a person."""
        return f"{self.section} > {self.subsection}" if self.subsection else self.section

    def metadata(self) -> dict[str, str | int]:
        """Flat metadata stored beside the vector."""
        return {"role": self.role, "section": self.section, "subsection": self.subsection,
                "source": self.source, "heading_path": self.heading_path, "hash": self.hash,
                "position": self.position}


@dataclass
class KnowledgeBase:
    """All chunks of a knowledge folder, plus warnings about files that were skipped."""

    chunks: list[Chunk] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: int = 0


def _front_matter(text: str) -> tuple[dict[str, str], str]:
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---", 4)
    if end < 0:
        return {}, text
    meta = {}
    for line in text[4:end].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            meta[key.strip().lower()] = value.strip().strip("\"'")
    return meta, text[end + 4:].lstrip("\n")


def _blocks(lines: list[str]) -> list[str]:
    """Units that must not be split across chunks: a bullet, or a paragraph."""
    units: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            units.append(" ".join(para))
            para.clear()

    for line in lines:
        stripped = line.strip()
        if not stripped:
            flush()
        elif re.match(r"^([-*+]|\d+[.)])\s", stripped):
            flush()
            units.append(stripped)
        elif units and not para and re.match(r"^([-*+]|\d+[.)])\s", units[-1]) and line.startswith("  "):
            units[-1] += " " + stripped  # continuation of a bullet
        else:
            para.append(stripped)
    flush()
    return units


def _words(text: str) -> int:
    return len(text.split())


def _split_long(unit: str, max_words: int) -> list[str]:
    """A unit longer than the limit, split at sentence ends (never mid-sentence)."""
    pieces, current = [], ""
    for sentence in split_sentences(unit):
        if current and _words(current) + _words(sentence) > max_words:
            pieces.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    if current:
        pieces.append(current)
    return pieces


def _pack(units: list[str], max_words: int) -> list[str]:
    """Group units into chunks of at most max_words, splitting only between units."""
    flat = [piece for unit in units for piece in (_split_long(unit, max_words)
                                                  if _words(unit) > max_words else [unit])]
    total = sum(_words(u) for u in flat)
    if total <= max_words:
        return ["\n".join(flat)] if flat else []
    # Balance the pieces so no chunk ends up as a lonely last bullet.
    n_chunks = -(-total // max_words)
    target = total / n_chunks
    chunks: list[list[str]] = [[]]
    count = 0
    for unit in flat:
        size = _words(unit)
        if chunks[-1] and (count + size > max_words or count + size / 2 > target):
            chunks.append([])
            count = 0
        chunks[-1].append(unit)
        count += size
    return ["\n".join(c) for c in chunks]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "_"


def parse_file(path: Path, root: Path, max_words: int, default_role: str = "") -> list[Chunk]:
    """Chunks of one Markdown file; raises CoachError when the file cannot be used."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CoachError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__}); skipped") from None
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark must not hide the front matter
    except UnicodeDecodeError as exc:
        raise CoachError(f"{path}: not valid UTF-8 (byte {exc.start}); skipped") from None
    meta, body = _front_matter(text.replace("\r\n", "\n"))
    if not body.strip():
        raise CoachError(f"{path}: empty; skipped")
    role = meta.get("role", default_role)
    source = path.relative_to(root).as_posix()
    groups: list[tuple[str, str, list[str]]] = []
    section = subsection = ""
    lines: list[str] = []
    seen_heading = False
    for line in body.splitlines():
        heading = re.match(r"^(#{1,6})\s+(.+?)\s*#*\s*$", line)
        if heading:
            seen_heading = True
            groups.append((section, subsection, lines))
            lines = []
            level, title = len(heading.group(1)), heading.group(2).strip()
            if level == 1:
                section, subsection = title, ""
            elif level == 2:
                subsection = title
            else:
                lines.append(title)  # deeper headings stay with their subsection as text
        else:
            lines.append(line)
    groups.append((section, subsection, lines))
    if not seen_heading:
        raise CoachError(f"{path}: has no headings; skipped")
    chunks: list[Chunk] = []
    counters: dict[tuple[str, str], int] = {}  # a (section, subsection) may come back after a deeper heading
    for sec, sub, group_lines in groups:
        for piece in _pack(_blocks(group_lines), max_words):
            if not sec and not sub:
                sec = path.stem
            n = counters.get((sec, sub), 0)
            counters[(sec, sub)] = n + 1
            chunk_id = f"{source}#{_slug(sec)}/{_slug(sub)}/{n}"
            chunks.append(Chunk(chunk_id, piece, role, sec, sub, source, len(chunks)))
    return chunks


def _folder_roles(paths: list[Path], root: Path) -> dict[Path, str]:
    """The role of each folder below the root: the first `role:` a file directly in it declares, else the
    folder's name in words ("staff-data-engineer" -> "Staff Data Engineer"). A file there without front matter
    takes its folder's role, so a folder per role needs the role named once, or not at all. Files at the root
    (the flat layout) keep their own front matter's role or none."""
    roles: dict[Path, str] = {}
    for path in paths:
        if path.parent in roles or path.parent == root:
            continue
        try:
            meta, _ = _front_matter(path.read_bytes().decode("utf-8-sig", "replace").replace("\r\n", "\n"))
        except OSError:
            continue
        if meta.get("role"):
            roles[path.parent] = meta["role"]
    for path in paths:
        if path.parent not in roles and path.parent != root:
            roles[path.parent] = re.sub(r"[-_]+", " ", path.parent.name).strip().title()
    return roles


def load(folder: Path, max_words: int = 70) -> KnowledgeBase:
    """Every Markdown file under folder as chunks; unusable files become warnings, not failures.

    The folder holds one role (files at its top, flat) or several: a folder per role, or files each naming
    their own `role:` in front matter.
    """
    if not folder.is_dir():
        raise CoachError(f"Knowledge folder {folder} does not exist; set COACH_KNOWLEDGE_DIR or --knowledge.")
    kb = KnowledgeBase()
    paths = []
    for path in sorted(folder.rglob("*.md")):
        if path.name.lower() == "readme.md":
            continue
        if not path.is_file():  # a folder named *.md, or a link to nothing: say so and go on
            what = ("a folder, not a file" if path.is_dir() else "a link to nothing" if path.is_symlink()
                    else "not a regular file")
            kb.warnings.append(f"{path}: is {what}; skipped")
            continue
        paths.append(path)
    roles = _folder_roles(paths, folder)
    for path in paths:
        kb.files += 1
        try:
            kb.chunks.extend(parse_file(path, folder, max_words, roles.get(path.parent, "")))
        except CoachError as exc:
            kb.warnings.append(str(exc))
    if not kb.chunks:
        raise CoachError(f"No usable knowledge in {folder}: " + ("; ".join(kb.warnings) or "no .md files"))
    return kb
