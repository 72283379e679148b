"""The database of what people create (coach.database): feedback kept beside the profiles, exported by
`coach feedback`, and a database that cannot be reached is one sentence that never shows its password.

Unit tests: SQLite files in tmp_path, and a PostgreSQL URL on a loopback port nobody listens on. The real
PostgreSQL server, with several coach instances, is tests/test_multi_instance.py's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from helpers import free_port

from coach import cli
from coach.database import Database
from coach.feedback import FeedbackStore
from coach.planner import Profile
from coach.planner.store import PlanStore, StoreError

SOURCE = {"n": 1, "label": "Salary Ranges > Base Salary", "source": "06-salary.md", "text": "Entry Level: $150,000"}


def test_likes_and_profiles_share_one_database_and_survive_a_restart(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'data' / 'coach.db'}")
    plans, feedback = PlanStore(database), FeedbackStore(database)
    plans.save_profile("user:ann", Profile(years_development=6))
    feedback.add({"question": "What is the entry-level pay?", "answer": "$150,000 [1]", "sources": [SOURCE],
                  "verdict": "like", "backend": "extractive"})
    feedback.add({"question": "Who leads the team?", "answer": "The manager [1]", "sources": [], "verdict": "dislike",
                  "backend": "local"})
    database.close()

    again = FeedbackStore(f"sqlite:///{tmp_path / 'data' / 'coach.db'}")  # a restart: a new store on the same file
    rows = list(again.rows())
    assert [(r["verdict"], r["question"], r["backend"]) for r in rows] == [
        ("like", "What is the entry-level pay?", "extractive"), ("dislike", "Who leads the team?", "local")]
    assert rows[0]["sources"] == [SOURCE] and rows[0]["answer"] == "$150,000 [1]"
    assert rows[0]["time"].endswith("+00:00") and rows[0]["time"] <= rows[1]["time"]
    assert PlanStore(again.database).profile("user:ann") == Profile(years_development=6)
    again.close()


def test_coach_feedback_exports_every_verdict_as_json_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the developer's
    store = FeedbackStore(f"sqlite:///{(tmp_path / 'data' / 'coach.db').resolve()}")
    store.add({"question": "Q1", "answer": "A1", "sources": [SOURCE], "verdict": "like", "backend": "extractive"})
    store.add({"question": "Q2 «ü»", "answer": "A2", "sources": [], "verdict": "dislike", "backend": "fake"})
    store.close()
    assert cli.main(["feedback", "--data", str(tmp_path / "data")]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [json.loads(line) for line in lines]
    assert [(r["question"], r["verdict"]) for r in rows] == [("Q1", "like"), ("Q2 «ü»", "dislike")]
    assert set(rows[0]) == {"time", "verdict", "question", "answer", "sources", "backend"}
    assert "«ü»" in lines[1], "non-ASCII text is written as itself"

    assert cli.main(["feedback", "--data", str(tmp_path / "empty")]) == 0  # nothing given yet: nothing printed
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("scheme", ["postgresql", "postgresql+psycopg"])
def test_a_database_server_nobody_answers_is_one_sentence_and_never_shows_its_password(
        scheme: str, caplog: pytest.LogCaptureFixture) -> None:
    password = "pg-Secret-4f1c9e"
    url = f"{scheme}://coach:{password}@127.0.0.1:{free_port()}/coach?connect_timeout=5"
    database = Database(url)
    with caplog.at_level(logging.DEBUG):
        for action in (lambda: PlanStore(database).profile("user:ann"),
                       lambda: FeedbackStore(database).add({"question": "q", "answer": "a", "verdict": "like"}),
                       lambda: PlanStore(database).save_profile("user:ann", Profile())):  # tried again each time
            with pytest.raises(StoreError) as caught:
                action()
            message = str(caught.value)
            assert "database is unavailable" in message and "\n" not in message and password not in message
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"cannot open the database {scheme}://coach:***@127.0.0.1" in logged, logged
    assert "OperationalError" in logged and password not in logged


def test_a_url_whose_driver_is_not_installed_names_the_fix(caplog: pytest.LogCaptureFixture) -> None:
    store = FeedbackStore("mysql+pymysql://coach:hunter2-secret@127.0.0.1/coach")
    with caplog.at_level(logging.ERROR, logger="coach.database"), pytest.raises(StoreError) as caught:
        store.add({"question": "q", "answer": "a", "verdict": "like"})
    assert str(caught.value).startswith("Your feedback could not be saved because the database is unavailable")
    logged = caplog.records[-1].getMessage()
    assert "install the database's driver" in logged and "hunter2-secret" not in logged


def test_the_database_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "data" / "coach.db"
    PlanStore(f"sqlite:///{path}").save_profile("user:ann", Profile(years_development=6))
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_database_file_deleted_while_serving_is_noticed_said_and_recovered(tmp_path: Path) -> None:
    path = tmp_path / "data" / "coach.db"
    plans = PlanStore(f"sqlite:///{path}")
    feedback = FeedbackStore(plans.database)
    plans.save_profile("user:ann", Profile(years_development=6))
    assert plans.database.lost is None
    path.unlink()  # as the probe did, while the server runs with its connections open
    plans.save_profile("user:bob", Profile(years_development=3))  # kept in a new file, not in the deleted one
    assert path.exists() and plans.database.lost and "deleted" in plans.database.lost
    assert "gone" in plans.database.lost and "\n" not in plans.database.lost
    assert plans.profile("user:ann") is None  # the truth: it was lost, and the coach says so
    assert plans.profile("user:bob") == Profile(years_development=3)
    feedback.add({"question": "q", "answer": "a", "verdict": "like"})
    plans.close()
    again = PlanStore(f"sqlite:///{path}")  # what was saved after the loss survives a restart
    assert again.profile("user:bob") == Profile(years_development=3) and again.database.lost is None
    again.close()


def test_a_database_file_put_back_is_used_without_a_restart(tmp_path: Path) -> None:
    import shutil

    path = tmp_path / "coach.db"
    plans = PlanStore(f"sqlite:///{path}")
    plans.save_profile("user:ann", Profile(years_development=6))
    plans.database.close()
    shutil.copy(path, tmp_path / "backup.db")
    plans.profile("user:ann")  # serving again
    path.unlink()
    plans.save_profile("user:bob", Profile(years_development=3))
    shutil.copy(tmp_path / "backup.db", tmp_path / "restored.db")
    (tmp_path / "restored.db").replace(path)  # the backup put back in its place
    assert plans.profile("user:ann") == Profile(years_development=6)
    assert plans.database.lost and "replaced" in plans.database.lost
    plans.close()
