"""Likes and dislikes from the page: kept in the database (coach.feedback), a notice either way."""

from __future__ import annotations

import html
import logging
from typing import Any

from coach.database import StoreError
from coach.feedback import FeedbackStore

log = logging.getLogger("coach.ui")


def record_feedback(feedback: FeedbackStore, row: dict[str, Any] | None) -> str:
    """Record a like/dislike; returns the notice to show (a write failure is logged, never raised)."""
    if row is None:
        return ""
    try:
        feedback.add(row)
    except StoreError as exc:
        log.error("could not record feedback: %s", exc)
        return f"*{html.escape(str(exc), quote=False)}*"
    lost = feedback.database.lost
    return f"*Thanks: your {row['verdict']} was recorded.*" + (f" **Note:** {lost}" if lost else "")
