"""The database of what people create: profiles, ticked plan items and feedback, in one schema.

SQLite in the data folder by default; any SQLAlchemy URL through COACH_DATABASE_URL, e.g. PostgreSQL
(`postgresql+psycopg://user:password@host/coach`) when several instances of the coach share their state.
The tables are created on first use. A failure is a StoreError with one sentence for the person; the URL is
logged without its password, and the password is never part of a message.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Connection,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from coach.errors import CoachError

log = logging.getLogger("coach.database")
T = TypeVar("T")

METADATA = MetaData()
PROFILES = Table(
    "coach_profiles", METADATA,
    Column("person", String(200), primary_key=True),
    Column("profile", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
PLAN_ITEMS = Table(
    "coach_plan_items", METADATA,
    Column("person", String(200), primary_key=True),
    Column("item", String(500), primary_key=True),
    Column("done", Boolean, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
FEEDBACK = Table(  # one row per like or dislike of an answer
    "coach_feedback", METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("verdict", String(20), nullable=False),
    Column("question", Text, nullable=False),
    Column("answer", Text, nullable=False),
    Column("sources", JSON, nullable=False),  # the cited passages: n, label, source, text
    Column("backend", String(100)),
)


class StoreError(CoachError):
    """The database cannot be opened, read or written."""


class Database:
    """One database URL and its engine, opened (and its tables created) on first use, shared by the stores."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._file: Path | None = None  # the SQLite file, watched for being deleted or replaced
        self._identity: tuple[int, int] | None = None
        self.lost: str | None = None  # what a person must be told since the file went away (until a restart)

    def engine(self, unavailable: str) -> Engine:
        """The engine; StoreError(unavailable) when the database cannot be opened (tried again on the next call).

        A SQLite file deleted or replaced while the coach runs is noticed here, before every read and write
        (SQLite would go on writing to the deleted file, and every save would vanish): the engine is opened
        again on the file now at that path (a new, empty one when there is none) and `lost` says what happened.
        """
        with self._lock:
            now = _identity(self._file) if self._engine is not None and self._file is not None else self._identity
            if now != self._identity:
                gone = now is None
                assert self._engine is not None
                self._engine.dispose()
                self._engine = None
                log.error("the database file %s was %s while the coach ran; opened again", self._file,
                          "deleted" if gone else "replaced")
                self.lost = (f"The database file was deleted at {time.strftime('%H:%M')} while the coach ran: what "
                             "was saved before then is gone; what you save now is kept." if gone else
                             f"The database file was replaced at {time.strftime('%H:%M')} while the coach ran; "
                             "what is saved is now the new file's.")
            if self._engine is None:
                try:
                    url = make_url(self.url)
                    if url.drivername in ("postgresql", "postgres"):  # the installed driver, not psycopg2
                        url = url.set(drivername="postgresql+psycopg")
                    if url.drivername.startswith("sqlite") and url.database not in (None, "", ":memory:"):
                        self._file = Path(url.database)
                        self._file.parent.mkdir(parents=True, exist_ok=True)
                        # Profiles are personal: readable by the coach's own user only (SQLite's journals copy it).
                        os.close(os.open(self._file, os.O_CREAT | os.O_WRONLY, 0o600))
                    engine = create_engine(url, pool_pre_ping=True)
                    METADATA.create_all(engine)
                    self._identity = _identity(self._file) if self._file is not None else None
                except (SQLAlchemyError, OSError, ImportError) as exc:
                    hint = ("install the database's driver" if isinstance(exc, ImportError)
                            else "check COACH_DATABASE_URL and that the database server runs, or move a damaged "
                                 "SQLite file away")
                    log.error("cannot open the database %s (%s): %s", safe_url(self.url), why(exc), hint)
                    raise StoreError(unavailable) from None
                self._engine = engine
            return self._engine

    def close(self) -> None:
        """Release the connections."""
        with self._lock:
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


class Store:
    """A view of the database for one kind of data; its messages say what could not be kept."""

    unavailable = "This cannot be kept right now because the database is unavailable (the details are in the " \
                  "server's log)."

    def __init__(self, database: Database | str) -> None:
        self.database = database if isinstance(database, Database) else Database(database)

    @property
    def url(self) -> str:
        """The database URL (it may hold a password: never show it)."""
        return self.database.url

    def _read(self, work: Callable[[Connection], T], failed: str) -> T:
        """work(connection); StoreError(failed, `{why}` filled) when the database cannot be read."""
        try:
            with self.database.engine(self.unavailable).connect() as conn:
                return work(conn)
        except SQLAlchemyError as exc:
            log.error("reading %s failed: %s", safe_url(self.url), why(exc))
            raise StoreError(failed.format(why=why(exc))) from None

    def _write(self, work: Callable[[Connection], Any], failed: str) -> None:
        """work(connection) in one transaction; StoreError(failed) and nothing written when it fails."""
        try:
            with self.database.engine(self.unavailable).begin() as conn:
                work(conn)
        except SQLAlchemyError as exc:
            log.error("writing to %s failed: %s", safe_url(self.url), why(exc))
            raise StoreError(failed.format(why=why(exc))) from None

    def close(self) -> None:
        """Release the connections."""
        self.database.close()


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file, or None when there is none: a file replaced at the same path has another."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def why(exc: BaseException) -> str:
    """The kind of a database failure, for a message (never its text, which may quote values)."""
    return type(getattr(exc, "orig", None) or exc).__name__


def safe_url(url: str) -> str:
    """The database URL without a password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URL)"
