"""Beyond one machine: two identical `coach serve` instances, as behind a load balancer, sharing a real PostgreSQL
(COACH_DATABASE_URL) and a real `chroma run` (COACH_CHROMA_URL), each with its own data folder as on its own machine.

One person, logged in with the same user name on both, in Debian's Chromium: the profile saved through one instance
is read through the other, likes given on both land in the one table, and stopping an instance loses nothing (the
other still answers, still reads the profile, still keeps likes). The database is read with psycopg directly,
not through the coach's own code.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import PostgresServer
from helpers import REPO, free_port, wait_until
from playwright.sync_api import expect
from test_faults_regressions import folders, process_env
from test_plan_ui import PlanPage
from test_ui_fixtures import UiServer

from coach.coach import Coach
from coach.config import Settings
from coach.factory import build_retriever_for
from coach.llm.extractive import ExtractiveBackend
from coach.planner.assess import VERDICT_WORDS
from coach.prompts import Prompts
from coach.ui import build_ui

pytest_plugins = ["test_ui_fixtures"]
pytestmark = [pytest.mark.integration, pytest.mark.browser]  # real servers and processes, a real Chromium

COACH = Path(sys.executable).parent / "coach"
USER, PASSWORD = "dana", "pw-5d2e8a71c3"
SALARY_Q = "What is the entry-level base salary range?"
SKILLS_Q = "Which technical skills does the role require?"
PROGRESSION_Q = "How does career progression work in this role?"


class Instance:
    """One `coach serve` process on a free loopback port, with its own data folder and log."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        workdir.mkdir(parents=True)
        self.workdir, self.port = workdir, free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = workdir / "serve.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen([str(COACH), "serve", "--port", str(self.port)], cwd=workdir,
                                         env=process_env(**folders(workdir / "data"), **env), stdout=out,
                                         stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        """Whether /healthz says ready (the index answers, the backend is warm); fails if the process died."""
        assert self.proc.poll() is None, f"coach serve exited: {self.log.read_text(errors='replace')[-3000:]}"
        try:
            return httpx.get(f"{self.url}healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        """Stop it with this signal (SIGKILL after 20 s) and wait until it is gone; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        return self.proc.returncode


@pytest.fixture
def instances(postgres_server: PostgresServer, own_chroma_server: Any, tmp_path: Path
              ) -> Iterator[Callable[[str], Instance]]:
    """instances(name): a `coach serve` on the shared PostgreSQL and Chroma server (extractive answers, a log-in);
    every one stopped after the test."""
    shared = {"COACH_BACKEND": "extractive", "COACH_CHROMA_URL": own_chroma_server.url,
              "COACH_DATABASE_URL": postgres_server.url, "COACH_AUTH_USERNAME": USER, "COACH_AUTH_PASSWORD": PASSWORD}
    started: list[Instance] = []

    def start(name: str) -> Instance:
        started.append(Instance(tmp_path / name, shared))
        return started[-1]

    try:
        yield start
    finally:
        for instance in started:
            instance.stop(signal.SIGKILL)


def table(pg: PostgresServer, query: str) -> list[tuple[Any, ...]]:
    """Rows of a query on the shared database, read with psycopg."""
    with psycopg.connect(host="127.0.0.1", port=pg.port, user=pg.user, password=pg.password,
                         dbname=pg.database) as conn:
        return conn.execute(query).fetchall()


def likes(pg: PostgresServer) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in table(pg, "SELECT verdict, question FROM coach_feedback ORDER BY id")]


def profiles(pg: PostgresServer) -> dict[str, dict[str, Any]]:
    return {r[0]: json.loads(r[1]) for r in table(pg, "SELECT person, profile FROM coach_profiles")}


def rate(person: PlanPage, question: str, verdict: str) -> None:
    """Ask, wait for the whole answer, then like or dislike it; the page says it was kept."""
    person.ask(question)
    person.wait_answered(person.answers.count() + 1)
    person.like_last(verdict.capitalize())
    expect(person.notice).to_have_text(f"Thanks: your {verdict} was recorded.")


def test_two_instances_share_profiles_and_likes_and_stopping_one_loses_nothing(
        instances: Callable[[str], Instance], postgres_server: PostgresServer, own_chroma_server: Any,
        real_embedder: Any, prompts: Prompts, settings_factory: Callable[..., Settings], chromium: Any,
        tmp_path: Path) -> None:
    pg = postgres_server
    # The index is built once, on the Chroma server, before the instances start (`coach index` in a deployment).
    settings = settings_factory(REPO / "knowledge", tmp_path / "indexer", chroma_url=own_chroma_server.url,
                                database_url=pg.url, backend="extractive")
    coach = Coach(settings, build_retriever_for(settings, real_embedder, say=lambda _: None), ExtractiveBackend(),
                  prompts)
    a, b = instances("a"), instances("b")
    wait_until(lambda: a.ready() and b.ready(), "both instances to be ready", timeout=180)
    # Every instance serves the same page, whose events PlanPage recognises by their handlers' names.
    page = build_ui(coach, settings)
    on_a, on_b = UiServer(a.url, coach, page), UiServer(b.url, coach, page)
    opened: list[PlanPage] = []

    def log_in(server: UiServer) -> PlanPage:
        opened.append(PlanPage(chromium, server))
        return opened[-1].log_in(USER, PASSWORD)

    try:
        # A profile saved through A is read through B (the same person on another device, or moved by the balancer).
        laptop = log_in(on_a)
        laptop.expect_empty_form()
        laptop.fill("years-dev", "9")
        laptop.fill("years-lead", "6")
        laptop.choose("degree", "phd")
        laptop.save()
        expect(laptop.plan_notice).to_have_text("Saved.")
        verdict = laptop.verdict.inner_text()
        assert verdict != f"Verdict: {VERDICT_WORDS['unknown']}", verdict
        phone = log_in(on_b)
        expect(phone.field("years-dev")).to_have_value("9")
        expect(phone.field("years-lead")).to_have_value("6")
        expect(phone.field("degree")).to_have_value("phd")
        expect(phone.verdict).to_have_text(verdict)
        saved = profiles(pg)
        assert list(saved) == [f"user:{USER}"] and saved[f"user:{USER}"]["years_development"] == 9

        # Likes given on both instances land in the one table.
        rate(laptop, SALARY_Q, "like")
        rate(phone, SKILLS_Q, "dislike")
        assert likes(pg) == [("like", SALARY_Q), ("dislike", SKILLS_Q)]

        # A stops as a process manager stops it; nothing it kept is lost, and B goes on.
        a.stop(signal.SIGTERM)
        assert likes(pg) == [("like", SALARY_Q), ("dislike", SKILLS_Q)] and profiles(pg) == saved
        rate(phone, PROGRESSION_Q, "like")
        moved = log_in(on_b)  # the laptop's person, sent to B now that A is gone
        expect(moved.field("years-dev")).to_have_value("9")
        expect(moved.field("degree")).to_have_value("phd")
        expect(moved.verdict).to_have_text(verdict)
        assert likes(pg) == [("like", SALARY_Q), ("dislike", SKILLS_Q), ("like", PROGRESSION_Q)]
        assert b.ready(), "B stopped answering its readiness check"
    finally:
        for person in opened:
            person.close()
    assert not [url for person in opened for url in person.off_machine], "the page contacted other machines"

    # What an operator exports is every instance's feedback; no log ever shows the database's password.
    exported = subprocess.run([str(COACH), "feedback"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              env=process_env(COACH_DATABASE_URL=pg.url))
    assert exported.returncode == 0, exported.stderr
    assert [json.loads(line)["question"] for line in exported.stdout.splitlines()] == [SALARY_Q, SKILLS_Q,
                                                                                      PROGRESSION_Q]
    b.stop(signal.SIGTERM)
    for instance in (a, b):
        assert pg.password not in instance.log.read_text(errors="replace")
