"""What people create, kept over time: profiles and ticked plan items, in SQLite (or any SQLAlchemy database).

Rows are keyed by the person: their browser's session id, or their user name when the UI has log-in.
The same code runs on PostgreSQL when COACH_DATABASE_URL points there.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, Column, DateTime, MetaData, String, Table, Text, create_engine, delete, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from coach.errors import CoachError
from coach.planner.profile import Profile

log = logging.getLogger("coach.store")
_META = MetaData()
PROFILES = Table(
    "coach_profiles", _META,
    Column("person", String(200), primary_key=True),
    Column("profile", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
PLAN_ITEMS = Table(
    "coach_plan_items", _META,
    Column("person", String(200), primary_key=True),
    Column("item", String(500), primary_key=True),
    Column("done", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


class StoreError(CoachError):
    """The database cannot be opened, read or written."""


class PlanStore:
    """Profiles and plan checklists by person."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._lock = threading.Lock()

    def _db(self) -> Engine:
        with self._lock:
            if self._engine is None:
                try:
                    if self.url.startswith("sqlite:///"):
                        Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                    engine = create_engine(self.url, pool_pre_ping=True)
                    _META.create_all(engine)
                except (SQLAlchemyError, OSError) as exc:
                    log.error("cannot open the database %s (%s): check COACH_DATABASE_URL or move a damaged "
                              "SQLite file away", _safe(self.url), _why(exc))
                    raise StoreError("Your profile cannot be kept right now because the database is unavailable "
                                     "(the details are in the server's log), but the chat still works.") from None
                self._engine = engine
            return self._engine

    def profile(self, person: str) -> Profile | None:
        """The saved profile of a person (None when there is none, or it no longer validates)."""
        try:
            with self._db().connect() as conn:
                row = conn.execute(select(PROFILES.c.profile).where(PROFILES.c.person == person)).first()
        except SQLAlchemyError as exc:
            raise StoreError(f"The saved profile could not be read ({_why(exc)}).") from None
        if row is None:
            return None
        try:
            return Profile.model_validate_json(row[0])
        except ValueError:
            return None

    def save_profile(self, person: str, profile: Profile) -> None:
        """Save (replace) a person's profile."""
        self._write(lambda conn: (
            conn.execute(delete(PROFILES).where(PROFILES.c.person == person)),
            conn.execute(PROFILES.insert().values(person=person, profile=profile.model_dump_json(),
                                                  updated_at=datetime.now(UTC)))))

    def done(self, person: str) -> set[str]:
        """The plan items a person has ticked."""
        try:
            with self._db().connect() as conn:
                rows = conn.execute(select(PLAN_ITEMS.c.item).where(
                    PLAN_ITEMS.c.person == person, PLAN_ITEMS.c.done.is_(True))).all()
        except SQLAlchemyError as exc:
            raise StoreError(f"The plan could not be read ({_why(exc)}).") from None
        return {r[0] for r in rows}

    def set_done(self, person: str, items: set[str]) -> None:
        """Replace the set of ticked items of a person."""
        now = datetime.now(UTC)
        self._write(lambda conn: (
            conn.execute(delete(PLAN_ITEMS).where(PLAN_ITEMS.c.person == person)),
            [conn.execute(PLAN_ITEMS.insert().values(person=person, item=i[:500], done=True, updated_at=now))
             for i in sorted(items)]))

    def _write(self, work: Any) -> None:
        try:
            with self._db().begin() as conn:
                work(conn)
        except SQLAlchemyError as exc:
            raise StoreError(f"Your changes could not be saved ({_why(exc)}); what was saved before is kept.") \
                from None

    def close(self) -> None:
        """Release the connections."""
        if self._engine is not None:
            self._engine.dispose()


def _why(exc: BaseException) -> str:
    return type(getattr(exc, "orig", None) or exc).__name__


def _safe(url: str) -> str:
    """The database URL without a password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"
