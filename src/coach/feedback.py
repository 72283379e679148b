"""Likes and dislikes of answers, one row per verdict in the database (coach.database), and their export."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

from coach.database import FEEDBACK, Store


class FeedbackStore(Store):
    """Every verdict given on an answer: question, answer, sources, verdict, backend and when."""

    unavailable = "Your feedback could not be saved because the database is unavailable (the details are in the " \
                  "server's log)."

    def add(self, row: dict[str, Any]) -> None:
        """Keep one verdict (a feedback row as coach.ui.chat.feedback_row makes it); StoreError when it cannot."""
        values = {"created_at": datetime.now(UTC), "verdict": str(row["verdict"])[:20],
                  "question": row.get("question") or "", "answer": row.get("answer") or "",
                  "sources": list(row.get("sources") or []), "backend": row.get("backend")}
        self._write(lambda conn: conn.execute(FEEDBACK.insert().values(**values)),
                    "Your feedback could not be saved ({why}).")

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every verdict kept, oldest first, as JSON-ready dicts (`time` in ISO 8601, UTC)."""
        order = (FEEDBACK.c.created_at, FEEDBACK.c.id)
        found = self._read(lambda conn: conn.execute(select(FEEDBACK).order_by(*order)).mappings().all(),
                           "The feedback could not be read ({why}).")
        for r in found:
            stamp = r["created_at"] if r["created_at"].tzinfo else r["created_at"].replace(tzinfo=UTC)  # SQLite
            yield {"time": stamp.astimezone(UTC).isoformat(timespec="seconds"), "verdict": r["verdict"],
                   "question": r["question"], "answer": r["answer"], "sources": r["sources"], "backend": r["backend"]}
