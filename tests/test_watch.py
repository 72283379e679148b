"""A running server follows its knowledge folder (the second probe: edited figures kept being served, the status
line counted a deleted file's passages, and a CLI sync switched a live server's answers mid-write).

A real embedded Chroma over a private copy of knowledge/, the fake embedder (the watch's logic, not the
model's, is under test), and the real retriever, planner card and status line on top."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from helpers import SALARY, wait_until

from coach.coach import Coach
from coach.config import Settings
from coach.embeddings import FakeEmbeddings
from coach.factory import build_coach, sync_index
from coach.ui.answering import status_line
from coach.watch import KnowledgeWatch, index_lock

ENTRY = "- Entry Level: $150,000 - $180,000"
EDITED = "- Entry Level: $151,000 - $181,000"


def coach_on(settings: Settings) -> Coach:
    return build_coach(settings, "extractive", embedder=FakeEmbeddings(), say=lambda _: None)


def salary_file(settings: Settings) -> Path:
    return next(Path(settings.knowledge_dir).glob("06-*.md"))


def test_an_edited_figure_is_served_after_the_watch_rereads(tmp_settings: Settings) -> None:
    coach = coach_on(tmp_settings)
    watch = KnowledgeWatch(tmp_settings, coach.retriever.index)
    assert watch.check() is None  # nothing changed
    before = coach.answer("What is the entry level base salary?")
    assert "$150,000" in before.text
    path = salary_file(tmp_settings)
    path.write_text(path.read_text().replace(ENTRY, EDITED))
    assert watch.check() is not None
    after = coach.answer("What is the entry level base salary?")
    assert "$151,000" in after.text and "$150,000" not in after.text
    card = coach.planner.card(coach.retriever.library())  # the card follows the new revision
    assert next(r for r in card.ladder if r.title == "Entry Level").low == 151_000
    assert "knowledge re-read at" in status_line(coach) and "1 passage(s) changed" in status_line(coach)


def test_a_deleted_file_leaves_the_index_and_the_count(tmp_settings: Settings) -> None:
    coach = coach_on(tmp_settings)
    watch = KnowledgeWatch(tmp_settings, coach.retriever.index)
    count = coach.retriever.count()
    salary = salary_file(tmp_settings)
    salary.unlink()
    watch.check()
    assert coach.retriever.count() < count
    assert f"{coach.retriever.count():,} passages indexed" in status_line(coach)
    assert all(p.section != SALARY for p in coach.retriever.library().passages)


def test_a_touched_file_costs_no_rebuild_and_a_broken_folder_keeps_the_old_index(tmp_settings: Settings) -> None:
    coach = coach_on(tmp_settings)
    watch = KnowledgeWatch(tmp_settings, coach.retriever.index)
    revision = coach.retriever.index.revision()
    path = salary_file(tmp_settings)
    path.write_text(path.read_text())  # same text, new time
    assert watch.check() is None and coach.retriever.index.revision() == revision
    for md in Path(tmp_settings.knowledge_dir).glob("*.md"):
        md.unlink()
    assert watch.check() is None
    assert watch.note and "cannot be used" in watch.note
    assert coach.retriever.count() > 0 and "$150,000" in coach.answer("What is the entry level base salary?").text


def test_the_watch_polls_on_its_own(tmp_settings: Settings) -> None:
    coach = coach_on(tmp_settings)
    watch = KnowledgeWatch(tmp_settings, coach.retriever.index).start(interval=0.2)
    try:
        path = salary_file(tmp_settings)
        path.write_text(path.read_text().replace(ENTRY, EDITED))
        wait_until(lambda: "$151,000" in coach.answer("What is the entry level base salary?").text,
                   "the edit served", timeout=30)
    finally:
        watch.stop()


def test_a_cli_sync_waits_for_the_servers_rebuild(tmp_settings: Settings) -> None:
    coach = coach_on(tmp_settings)
    order: list[str] = []
    held = threading.Event()

    def server_writing() -> None:
        with index_lock(tmp_settings):
            held.set()
            time.sleep(0.5)
            order.append("server done")

    thread = threading.Thread(target=server_writing)
    thread.start()
    held.wait(5)
    sync_index(tmp_settings, coach.retriever.index, say=lambda _: None)  # `coach index` from the command line
    order.append("cli done")
    thread.join()
    assert order == ["server done", "cli done"]



def test_questions_asked_during_rebuilds_are_answered(tmp_settings: Settings) -> None:
    """The old index answers until the new one is complete; the switch itself loses no question."""
    coach = coach_on(tmp_settings)
    watch = KnowledgeWatch(tmp_settings, coach.retriever.index)
    errors: list[BaseException] = []
    answered = []
    done = threading.Event()

    def ask() -> None:
        while not done.is_set():
            try:
                answered.append(coach.answer("What is the entry level base salary?").text)
            except BaseException as exc:  # noqa: BLE001 - every failure is what the test looks for
                errors.append(exc)

    thread = threading.Thread(target=ask)
    thread.start()
    path = salary_file(tmp_settings)
    try:
        for n in range(6):
            path.write_text(path.read_text().replace("$180,000", f"$18{n + 1},000", 1) if n == 0 else
                            path.read_text().replace(f"$18{n},000", f"$18{n + 1},000", 1))
            assert watch.check() is not None
    finally:
        done.set()
        thread.join()
    assert errors == [] and answered
    assert "$186,000" in coach.answer("What is the entry level base salary?").text
