"""Checks of an embedded Chroma index's vector files, made before Chroma reads them.

Chroma's HNSW library trusts its segment files: random bytes in one crash the process with a segmentation
fault (which no `except` can catch), a truncated one fails deep inside Chroma, and a deleted folder
makes it answer from what is left, silently. So before an embedded collection is used, its vector
segment is checked here: the files Chroma has persisted must be present, their sizes must agree with
the counts in their header, and they must match the fingerprint (sizes and sha256) recorded after the
last successful sync. A server's files are its own business and are not checked.
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coach.models import sha256_of

FINGERPRINTS = "coach-fingerprints.json"
_FILES = ("header.bin", "data_level0.bin", "length.bin", "link_lists.bin")
# hnswlib's header as Chroma 1.5 writes it: version, offset of level 0, max elements, element count,
# bytes per element, then fields not checked here; 100 bytes in all.
_HEADER = struct.Struct("<IQQQQ")
_HEADER_SIZE = 100


@dataclass(frozen=True)
class Segment:
    """The vector segment of one collection: its folder and how far Chroma has persisted it."""

    id: str
    folder: Path
    persisted: int | None  # last log position written to the files; None while everything is still in the log


def vector_segment(chroma_dir: Path, collection_id: str) -> Segment | None:
    """The collection's vector segment, read from Chroma's catalogue (None when it is not there)."""
    try:
        db = sqlite3.connect(f"file:{chroma_dir / 'chroma.sqlite3'}?mode=ro", uri=True, timeout=10)
        try:
            row = db.execute(
                "SELECT s.id, m.seq_id FROM segments s LEFT JOIN max_seq_id m ON m.segment_id = s.id "
                "WHERE s.collection = ? AND s.scope = 'VECTOR'", (collection_id,)).fetchone()
        finally:
            db.close()
    except sqlite3.Error:
        return None  # Chroma itself says what is wrong with its catalogue
    if row is None:
        return None
    seq = row[1]
    persisted = int.from_bytes(seq, "big") if isinstance(seq, bytes) else seq
    return Segment(str(row[0]), chroma_dir / str(row[0]), persisted or None)


def fingerprint(folder: Path) -> dict[str, list[Any]]:
    """{file name: [size, sha256]} of the segment's files."""
    out: dict[str, list[Any]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file():
            out[path.name] = [path.stat().st_size, sha256_of(path)]
    return out


def _recorded(chroma_dir: Path) -> dict[str, Any]:
    try:
        data = json.loads((chroma_dir / FINGERPRINTS).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def problem(chroma_dir: Path, collection_id: str) -> str | None:
    """What is wrong with the collection's vector files (a few words), or None when Chroma may read them."""
    segment = vector_segment(chroma_dir, collection_id)
    if segment is None or segment.persisted is None:
        return None  # nothing persisted yet: Chroma rebuilds the vectors from its log
    if not segment.folder.is_dir():
        return f"its vector folder {segment.id} is missing"
    missing = [name for name in _FILES if not (segment.folder / name).is_file()]
    if missing:
        return f"{', '.join(missing)} missing from its vector folder {segment.id}"
    try:
        wrong = _header_problem(segment)
        if wrong:
            return wrong
        recorded = _recorded(chroma_dir).get(collection_id)
        if isinstance(recorded, dict) and recorded.get("segment") == segment.id:
            now = fingerprint(segment.folder)
            changed = sorted(name for name, print_ in recorded.get("files", {}).items() if now.get(name) != print_)
            if changed:
                return f"{', '.join(changed)} in its vector folder changed since the last sync"
    except OSError as exc:
        return f"its vector files cannot be read ({type(exc).__name__})"
    return None


def _header_problem(segment: Segment) -> str | None:
    """Whether the header's counts agree with the files' sizes and with what Chroma says it persisted."""
    raw = (segment.folder / "header.bin").read_bytes()
    if len(raw) != _HEADER_SIZE:
        return "header.bin has the wrong size"
    version, _offset, capacity, count, per_element = _HEADER.unpack_from(raw)
    if version != 1 or per_element == 0 or not 0 < count <= capacity:
        return "header.bin is damaged"
    if segment.persisted is not None and count > segment.persisted:
        return "header.bin counts more vectors than were ever written"
    sizes = {"data_level0.bin": capacity * per_element, "length.bin": capacity * 4}
    for name, size in sizes.items():
        if (segment.folder / name).stat().st_size != size:
            return f"{name} is truncated or has the wrong size"
    return None


def record(chroma_dir: Path, collection_id: str, keep: set[str]) -> None:
    """Remember the collection's vector files as they are after a successful sync (others not in keep are forgotten)."""
    segment = vector_segment(chroma_dir, collection_id)
    recorded = {k: v for k, v in _recorded(chroma_dir).items() if k in keep}
    if segment is not None and segment.folder.is_dir():
        recorded[collection_id] = {"segment": segment.id, "files": fingerprint(segment.folder)}
    else:
        recorded.pop(collection_id, None)
    tmp = chroma_dir / f".{FINGERPRINTS}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        tmp.write_text(json.dumps(recorded, indent=1))
        tmp.replace(chroma_dir / FINGERPRINTS)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only index cannot change either: its header checks remain
