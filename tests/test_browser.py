"""The chat in a real browser: Debian's Chromium driven by Playwright, against real Gradio servers.

Never `playwright install` (it downloads a browser): `apt-get install chromium` (see `make browser`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_ui_fixtures import (
    FAKE_REPLY,
    HTML_QUESTION,
    REPO,
    SlowChat,
    UiIndex,
    UiServer,
    free_port,
    make_coach,
    start_server,
    ui_settings,
)

from coach.ui import EXAMPLES

pytest_plugins = ["test_ui_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
QUESTION = "What are the key responsibilities of the role?"
SCREENSHOT_COPY = Path("/tmp/coach_screenshot.png")
# The local model's prepared prompt prefix, shared with the app (as in test_e2e_local.py).
KV_CACHE = Path(os.environ.get("COACH_TEST_KV_CACHE", REPO / "data" / "kv-cache"))


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's Chromium, headless, for the whole module."""
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: run `make browser` (apt-get install chromium chromium-driver)")
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture(scope="module")
def ui(server_factory: Callable[..., UiServer]) -> UiServer:
    """A server answering with the streaming fake; extractive can be picked in the page."""
    return server_factory(SlowChat(delay=0.03, default=FAKE_REPLY), "fake")


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll condition until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.03)


class Chat:
    """One person's tab on the chat page."""

    def __init__(self, browser: Any, url: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.page = self.context.new_page()
        self.url = url
        self.off_machine: list[str] = []
        self.page.on("request", self._request)

    def _request(self, request: Any) -> None:
        if not request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
            self.off_machine.append(request.url)

    def open(self) -> Chat:
        self.page.goto(self.url, wait_until="load")  # never "networkidle": a Gradio page never settles
        self.textbox.wait_for(state="visible", timeout=30_000)
        return self

    @property
    def textbox(self) -> Any:
        return self.page.locator("#coach-input textarea")

    def rows(self, who: str) -> Any:
        return self.page.locator(f"#coach-chatbot .{who}-row")

    def ask(self, question: str) -> int:
        """Type and send a question; returns how many answers were on the page before."""
        before = self.rows("bot").count()
        self.textbox.fill(question)
        self.textbox.press("Enter")
        return before

    def idle(self) -> bool:
        buttons = self.page.locator("#coach-input button")
        return self.page.locator("#coach-input .stop-button").count() == 0 and buttons.count() > 0

    def wait_answer(self, before: int, timeout: float = 30.0) -> str:
        """The text of the new answer (with its sources block title) once it has finished."""
        wait_until(lambda: self.rows("bot").count() > before and self.idle(), "the answer", timeout)
        return str(self.rows("bot").last.inner_text())

    def open_sources(self) -> str:
        """Expand the last answer's sources block; returns its text."""
        block = self.rows("bot").last.locator(".thought-group").last
        block.locator(".title").click()
        wait_until(lambda: "·" in block.inner_text(), "the sources to open")
        return str(block.inner_text())

    def stored(self) -> int:
        """Size of the (encrypted) conversations kept in the browser's local storage."""
        return int(self.page.evaluate(
            "Object.keys(localStorage).filter(k => k.includes('saved_conversations'))"
            ".reduce((n, k) => n + localStorage.getItem(k).length, 0)"))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def chat(chromium: Any, ui: UiServer) -> Iterator[Chat]:
    """A fresh browser context (its own cookies and storage) on the chat page."""
    page = Chat(chromium, ui.url).open()
    yield page
    assert not page.off_machine, f"the page contacted other machines: {page.off_machine}"
    page.close()


def test_a_question_streams_its_answer_under_its_sources(chat: Chat, ui: UiServer) -> None:
    chat.textbox.press("Enter")  # an empty message is ignored
    time.sleep(0.5)
    assert chat.rows("user").count() == 0 and chat.rows("bot").count() == 0

    before = chat.ask(QUESTION)
    seen: list[str] = []

    def finished() -> bool:
        if chat.rows("bot").count() > before:
            seen.append(chat.rows("bot").last.inner_text())
        return bool(seen) and chat.idle()

    wait_until(finished, "the streamed answer")
    final = chat.wait_answer(before)
    assert FAKE_REPLY in final.replace("\n", " ")
    assert any("Sources (4)" in s and FAKE_REPLY[:40] not in s.replace("\n", " ") for s in seen), \
        "the sources should show before the model writes"
    partial = [s for s in seen if "The role leads" in s and "projects [1]." not in s]
    assert partial, "the answer should appear piece by piece"
    assert chat.rows("user").last.inner_text().strip() == QUESTION

    sources = chat.open_sources()
    assert re.search(r"^\[1\] [^\n]*Responsibilities[^\n]* · \d\d-[a-z0-9-]+\.md$", sources, re.MULTILINE)
    assert "[4]" in sources and "[5]" not in sources
    status = chat.page.locator("#coach-status").inner_text()
    assert "Backend fake" in status and "passages indexed" in status and "answered in" in status


def test_an_extractive_answer_with_sources_looks_right(chat: Chat, ui: UiServer, tmp_path: Path) -> None:
    chat.page.get_by_text("Settings for this chat").click()
    chat.page.get_by_label("Backend").click()
    chat.page.get_by_role("option", name=re.compile("extractive")).click()
    answer = chat.wait_answer(chat.ask(EXAMPLES[3]))
    assert "$150,000 - $180,000 [1]" in answer
    sources = chat.open_sources()
    assert "[1] Salary Ranges (US Market, 2024) > Base Salary · 06-salary-ranges-us-market-2024.md" in sources
    assert "Entry Level: $150,000 - $180,000" in sources
    assert "Backend extractive" in chat.page.locator("#coach-status").inner_text()
    chat.page.get_by_text("Settings for this chat").click()  # fold the settings away for the picture
    chat.page.set_viewport_size({"width": 1280, "height": 1400})
    time.sleep(0.3)
    block = chat.rows("bot").last.locator(".thought-group").last
    if "·" not in block.inner_text():  # a re-layout may fold the sources again
        chat.open_sources()
    chat.page.evaluate("document.querySelectorAll('#coach-chatbot *').forEach(e => { e.scrollTop = 0; })")
    time.sleep(0.3)
    shot = tmp_path / "finished-answer.png"
    chat.page.screenshot(path=str(shot), full_page=True)
    shutil.copy(shot, SCREENSHOT_COPY)
    print(f"\nscreenshot: {shot} (copied to {SCREENSHOT_COPY})")


def test_an_example_can_be_clicked(chat: Chat) -> None:
    chat.page.get_by_role("button", name="Progression").click()
    answer = chat.wait_answer(0)
    assert chat.rows("user").last.inner_text().strip() == EXAMPLES[2]
    assert FAKE_REPLY in answer.replace("\n", " ") and "Sources (" in answer


def test_a_like_is_written_to_the_feedback_file(chat: Chat, ui: UiServer) -> None:
    chat.wait_answer(chat.ask(QUESTION))
    chat.page.locator("#coach-chatbot").get_by_role("button", name="Like").last.click()
    wait_until(lambda: "recorded" in chat.page.locator("#coach-notice").inner_text(), "the feedback notice")
    rows = [json.loads(line) for line in ui.feedback_file.read_text().splitlines()]
    row = rows[-1]
    assert row["verdict"] == "like" and row["question"] == QUESTION and row["answer"] == FAKE_REPLY
    assert [s["n"] for s in row["sources"]] == [1, 2, 3, 4]
    assert row["sources"][0]["source"].endswith(".md") and row["sources"][0]["text"]


def test_html_in_a_question_or_in_the_knowledge_is_shown_as_text(chat: Chat) -> None:
    payload = ("<script>window.__pwned='script'</script><img src=x onerror=\"window.__pwned='img'\"> "
               + HTML_QUESTION)
    empty = chat.stored()
    chat.wait_answer(chat.ask(payload))
    sources = chat.open_sources()
    time.sleep(0.3)  # give an injected handler the time to run, if there were one
    assert chat.page.evaluate("typeof window.__pwned") == "undefined"
    assert chat.rows("user").last.inner_text().strip() == payload
    assert "<b>Chief Morale Officer</b>" in sources
    assert "<img src=x onerror=\"window.__pwned='knowledge'\">" in sources
    assert chat.page.locator("#coach-chatbot img, #coach-chatbot script, #coach-chatbot b").count() == 0

    # The conversation kept in the browser comes back as text too.
    wait_until(lambda: chat.stored() > empty, "the conversation to be saved")
    chat.page.reload(wait_until="load")
    chat.textbox.wait_for(state="visible")
    chat.page.get_by_text("<script>window.__pwned").first.click()
    wait_until(lambda: chat.rows("user").count() == 1, "the saved conversation")
    assert chat.rows("user").last.inner_text().strip() == payload
    assert chat.page.evaluate("typeof window.__pwned") == "undefined"


def test_conversations_survive_a_reload_and_new_chat_starts_over(chat: Chat) -> None:
    empty = chat.stored()
    chat.wait_answer(chat.ask(QUESTION))
    one = wait_until(lambda: chat.stored() > empty and chat.stored(), "the conversation to be saved")
    chat.wait_answer(chat.ask("And what does it pay?"))
    wait_until(lambda: chat.stored() > one, "the longer conversation to be saved")
    chat.page.reload(wait_until="load")
    chat.textbox.wait_for(state="visible")
    assert chat.rows("user").count() == 0
    chat.page.get_by_text(QUESTION[:30]).first.click()
    wait_until(lambda: chat.rows("user").count() == 2, "the saved conversation to load")
    assert "And what does it pay?" in chat.rows("user").last.inner_text()
    assert FAKE_REPLY[:40] in chat.rows("bot").first.inner_text().replace("\n", " ")
    chat.page.get_by_role("button", name="New chat").click()
    wait_until(lambda: chat.rows("user").count() == 0, "an empty chat")


def test_two_people_chatting_at_once_keep_separate_histories(chromium: Any, ui: UiServer) -> None:
    alice, bob = Chat(chromium, ui.url).open(), Chat(chromium, ui.url).open()
    try:
        first = {alice: "What are the key responsibilities of the role? (Alice)",
                 bob: "Which technical and soft skills does the role require? (Bob)"}
        follow = {alice: "And what does it pay for Alice?", bob: "And what does it pay for Bob?"}
        for step in (first, follow):
            before = {person: person.ask(question) for person, question in step.items()}  # both at once
            for person in step:
                person.wait_answer(before[person])
        for person, other in ((alice, bob), (bob, alice)):
            text = person.page.locator("#coach-chatbot").inner_text()
            assert first[person] in text and follow[person] in text
            assert first[other] not in text and follow[other] not in text
            assert not person.off_machine
        backend = ui.coach.backend
        assert isinstance(backend, SlowChat)
        for person, other in ((alice, bob), (bob, alice)):
            call = next(c for c in reversed(backend.calls) if follow[person] in c[-1]["content"])
            sent = json.dumps(call)
            assert first[person] in sent and first[other] not in sent
    finally:
        alice.close()
        bob.close()


def test_a_like_does_not_wait_behind_another_persons_long_answer(chromium: Any, ui: UiServer) -> None:
    alice, bob = Chat(chromium, ui.url).open(), Chat(chromium, ui.url).open()
    try:
        alice.wait_answer(alice.ask(QUESTION))
        backend = ui.coach.backend
        assert isinstance(backend, SlowChat)
        backend.replies.append("This answer takes a while to write [1]. " * 25)  # about 6 s of streaming
        bob_before = bob.ask("Which technical and soft skills does the role require?")
        wait_until(lambda: bob.rows("bot").count() > bob_before, "Bob's answer to start")
        alice.page.locator("#coach-chatbot").get_by_role("button", name="Like").last.click()
        wait_until(lambda: "recorded" in alice.page.locator("#coach-notice").inner_text(), "Alice's notice", 10)
        assert not bob.idle(), "the like should have been recorded while Bob's answer was still streaming"
        bob.wait_answer(bob_before)
    finally:
        alice.close()
        bob.close()


def _time_app_start(chromium: Any, data: Path, log_file: Path) -> float:
    """Seconds from starting `python app.py` (extractive backend) to its textbox visible in Chromium."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COACH_")}
    env.update(COACH_BACKEND="extractive", COACH_PORT=str(port), COACH_DATA_DIR=str(data),
               COACH_KNOWLEDGE_DIR=str(REPO / "knowledge"), COACH_MODELS_DIR=str(REPO / "models"),
               COACH_PROMPTS_DIR=str(REPO / "prompts"))
    with log_file.open("wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        chat = Chat(chromium, f"http://127.0.0.1:{port}/")
        try:
            def loaded() -> bool:
                assert proc.poll() is None, log_file.read_text()[-2000:]
                try:
                    chat.page.goto(chat.url, wait_until="load", timeout=5_000)
                    return True
                except Exception:  # not listening yet
                    time.sleep(0.1)
                    return False

            wait_until(loaded, "python app.py to answer", timeout=120)
            chat.textbox.wait_for(state="visible", timeout=30_000)
            seconds = time.perf_counter() - start
            assert not chat.off_machine, chat.off_machine
            return seconds
        finally:
            chat.close()
            proc.terminate()
            proc.wait(timeout=30)


def test_page_ready_time_of_python_app_py(chromium: Any, tmp_path: Path) -> None:
    """Measured, not asserted: from `python app.py` (extractive) to the textbox visible in Chromium."""
    cold = _time_app_start(chromium, tmp_path / "data", tmp_path / "first.log")
    warm = _time_app_start(chromium, tmp_path / "data", tmp_path / "second.log")
    print(f"\npage ready after `python app.py`: {cold:.1f} s on a first start (builds the index), "
          f"{warm:.1f} s once the index exists")


@pytest.mark.model
def test_time_to_first_token_of_the_local_model_in_the_browser(chromium: Any, tmp_path: Path) -> None:
    """Measured, not asserted: the real local model answering in the page (its prompt prefix warmed first)."""
    from coach.embeddings import MiniLMEmbeddings
    from coach.factory import ensure_index
    from coach.llm import make_backend
    from coach.store import open_index

    knowledge = tmp_path / "knowledge"
    shutil.copytree(REPO / "knowledge", knowledge)  # the shipped knowledge: the app's prepared prefix fits it
    index = UiIndex(knowledge, tmp_path / "chroma", MiniLMEmbeddings(REPO / "models"), tmp_path)
    settings = ui_settings(knowledge, tmp_path / "data", index.chroma)
    ensure_index(settings, open_index(settings, index.embedder), say=lambda _: None)
    coach = make_coach(index, tmp_path / "data", None, "local", kv_cache_dir=KV_CACHE)
    coach.backend = make_backend("local", coach.settings)
    started = time.perf_counter()
    coach.warm()
    assert coach.warm_error is None, coach.warm_error
    warm_s = time.perf_counter() - started
    server = start_server(coach)
    chat = Chat(chromium, server.url).open()
    try:
        before = chat.rows("bot").count()
        sent = time.perf_counter()
        chat.ask(EXAMPLES[3])
        wait_until(lambda: chat.rows("bot").count() > before, "the sources", timeout=60)
        sources_s = time.perf_counter() - sent
        wait_until(lambda: "Writing the answer" not in chat.rows("bot").last.inner_text(), "the first token", 120)
        first_s = time.perf_counter() - sent
        answer = chat.wait_answer(before, timeout=300)
        total_s = time.perf_counter() - sent
        assert re.search(r"\[\d+\]", answer) or "does not cover" in answer
    finally:
        chat.close()
        server.demo.close()
    print(f"\nlocal model in the browser: warm-up {warm_s:.1f} s; after Enter: sources and key facts "
          f"{sources_s:.2f} s, first model token {first_s:.2f} s, whole answer {total_s:.1f} s")
