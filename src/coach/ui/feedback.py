"""Likes and dislikes of answers, appended as JSON lines."""

from __future__ import annotations

import html
import json
import logging
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger("coach.ui")


class FeedbackLog:
    """Likes and dislikes appended as JSON lines; the folder is created when missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, row: dict[str, Any]) -> None:
        """Append one row (raises OSError when the file cannot be written)."""
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)


def record_feedback(feedback: FeedbackLog, row: dict[str, Any] | None) -> str:
    """Record a like/dislike; returns the notice to show (a write failure is logged, never raised)."""
    if row is None:
        return ""
    try:
        feedback.append(row)
    except OSError as exc:
        log.exception("could not write feedback to %s", feedback.path)
        return f"*Your feedback could not be saved ({html.escape(exc.strerror or type(exc).__name__)}).*"
    return f"*Thanks: your {row['verdict']} was recorded.*"
