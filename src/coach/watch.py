"""A running server follows its knowledge folder: an edited, added or deleted file is noticed (a poll of the
files' sizes and times every POLL_S seconds), and the index is rebuilt beside the active one and switched to
only when complete (Index.rebuild), so questions asked meanwhile are answered from the old index. Everything
cached per index revision (the lexical index, the role cards, the prompt prefix, the answer shapes) follows
the new revision on the next question. Index writes, here and in `coach index` / `coach ask` from the command
line, take one lock file in DATA_DIR, so a server and a CLI never write the index at once.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from coach import knowledge
from coach.config import Settings
from coach.errors import CoachError
from coach.store import Index, SyncReport

log = logging.getLogger("coach.watch")
POLL_S = 5.0  # a person editing a file sees the change within this (and a stat of each file costs microseconds)
Fingerprint = tuple[tuple[str, int, int], ...]


@contextmanager
def index_lock(settings: Settings) -> Iterator[None]:
    """Held while the index is written: one writer at a time across the processes of this data folder."""
    path = Path(settings.data_dir) / ".index.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fingerprint(folder: Path) -> Fingerprint:
    """Every Markdown file of the folder with its size and modification time."""
    out = []
    for path in sorted(folder.rglob("*.md")):
        try:
            st = path.stat()
        except OSError:
            continue
        out.append((path.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(out)


class KnowledgeWatch:
    """Keeps an index in step with the knowledge folder while a server runs; `note` says when it last did."""

    def __init__(self, settings: Settings, index: Index, say: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.index = index
        self.say = say or (lambda message: log.info("%s", message))
        self.folder = Path(settings.knowledge_dir)
        self._seen = fingerprint(self.folder)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def note(self) -> str | None:
        """What the watch last did ("knowledge re-read at 10:42: ..."), kept on the index for the status line."""
        return self.index.note

    def check(self) -> SyncReport | None:
        """Rebuild the index if the folder changed since the last look; the report, or None when unchanged."""
        now = fingerprint(self.folder)
        if now == self._seen:
            return None
        try:
            kb = knowledge.load(self.folder, self.settings.chunk_max_words)
        except CoachError as exc:  # e.g. every file removed: the old index keeps answering, and the log says why
            self.index.note = (f"the knowledge folder cannot be used ({exc}); answers still come from the last good "
                               "index")
            self._seen = now
            return None
        wanted = {c.id: c.hash for c in kb.chunks}
        _, ids, _, metas = self.index.all_passages()
        have = {i: m.get("hash") for i, m in zip(ids, metas, strict=True)}
        self._seen = now
        if wanted == have:
            return None  # touched, not changed
        with index_lock(self.settings):
            report = self.index.rebuild(kb.chunks, progress=False)
        added, removed = len(wanted.keys() - have.keys()), len(have.keys() - wanted.keys())
        updated = sum(1 for k in wanted.keys() & have.keys() if wanted[k] != have[k])
        self.index.note = (f"knowledge re-read at {time.strftime('%H:%M')}: {updated} passage(s) changed, {added} "
                           f"added, {removed} removed")
        self.say(f"index: {self.index.note}")
        return report

    def start(self, interval: float = POLL_S) -> KnowledgeWatch:
        """Check every `interval` seconds on a daemon thread until stop()."""
        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.check()
                except Exception:  # an unreachable Chroma server: tried again on the next tick
                    log.exception("checking the knowledge folder failed")

        self._thread = threading.Thread(target=run, name="coach-knowledge-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the polling thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
