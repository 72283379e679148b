"""What people create, kept over time: profiles and ticked plan items (coach.database: SQLite or PostgreSQL).

Rows are keyed by the person: their browser's session id, or their user name when the UI has log-in.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, select

from coach.database import PLAN_ITEMS, PROFILES, Store, StoreError
from coach.planner.profile import Profile

__all__ = ["PlanStore", "StoreError"]


class PlanStore(Store):
    """Profiles and plan checklists by person."""

    unavailable = ("Your profile cannot be kept right now because the database is unavailable (the details are in "
                   "the server's log), but the chat still works.")

    def profile(self, person: str) -> Profile | None:
        """The saved profile of a person (None when there is none, or it no longer validates)."""
        row = self._read(lambda conn: conn.execute(select(PROFILES.c.profile).where(PROFILES.c.person == person))
                         .first(), "The saved profile could not be read ({why}).")
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
                                                  updated_at=datetime.now(UTC)))), SAVE_FAILED)

    def done(self, person: str) -> set[str]:
        """The plan items a person has ticked."""
        rows = self._read(lambda conn: conn.execute(select(PLAN_ITEMS.c.item).where(
            PLAN_ITEMS.c.person == person, PLAN_ITEMS.c.done.is_(True))).all(), "The plan could not be read ({why}).")
        return {r[0] for r in rows}

    def set_done(self, person: str, items: set[str]) -> None:
        """Replace the set of ticked items of a person."""
        now = datetime.now(UTC)
        self._write(lambda conn: (
            conn.execute(delete(PLAN_ITEMS).where(PLAN_ITEMS.c.person == person)),
            [conn.execute(PLAN_ITEMS.insert().values(person=person, item=i[:500], done=True, updated_at=now))
             for i in sorted(items)]), SAVE_FAILED)


SAVE_FAILED = "Your changes could not be saved ({why}); what was saved before is kept."
