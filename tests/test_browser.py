"""The chat in a real browser: Debian's Chromium driven by Playwright, against real Gradio servers.

Never `playwright install` (it downloads a browser): `make browser` installs Debian's chromium.
Everything waited for is waited for with Playwright's `expect` (or a gate the test opens), never a sleep.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, GateChat, SlowChat, free_port, wait_until
from playwright.sync_api import expect
from test_ui_fixtures import FAKE_QUESTION, FAKE_REPLY, HTML_FILE, HTML_QUESTION, UiServer, gate, start_server

from coach.ui import EXAMPLES

pytest_plugins = ["test_ui_fixtures"]
pytestmark = [pytest.mark.browser, pytest.mark.integration]

QUESTION = FAKE_QUESTION
# Other questions get the fake's reply shaped by the coach (shape.py): its lead, then what the answer lacks.
LEADS = re.compile("^" + re.escape(FAKE_REPLY.split(". ")[0] + "."))
SKILLS = "Which technical and soft skills does the role require?"
SCREENSHOT = Path("/tmp/coach_screenshot.png")
# The local model's prepared prompt prefix, shared with the app (as in test_e2e_local.py).
KV_CACHE = Path(os.environ.get("COACH_TEST_KV_CACHE", REPO / "data" / "kv-cache"))
STOPPED = re.compile(r"^\s*The\s+\(stopped\)\s*$")  # the first word, then the mark of a stopped answer
SOURCE_LINE = re.compile(r"^\[(\d+)\] .+ · \d\d-[a-z0-9-]+\.md$", re.MULTILINE)

expect.set_options(timeout=30_000)


@pytest.fixture(scope="module")
def ui(server_factory: Callable[..., UiServer]) -> UiServer:
    """A server answering with the fake model, word by word; extractive can be picked in the page."""
    return server_factory(SlowChat(delay=0.05, default=FAKE_REPLY))


@pytest.fixture(scope="module")
def gated(server_factory: Callable[..., UiServer]) -> Iterator[UiServer]:
    """A server whose fake model holds an answer after its first word until the test opens the gate."""
    server = server_factory(GateChat(default=FAKE_REPLY))
    yield server
    gate(server).gate.set()  # never leave an answer waiting


def hold_next_answer(server: UiServer) -> GateChat:
    """The next answer of this server waits after its first word until `.gate.set()`."""
    backend = gate(server)
    backend.gate.clear()
    backend.waiting.clear()
    backend.gated = True
    return backend


class Chat:
    """One person's tab on the chat page (a browser context of its own: its own cookies and storage)."""

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
        expect(self.textbox).to_be_visible()
        expect(self.status).to_contain_text("passages indexed")
        return self

    def reload(self) -> None:
        self.page.reload(wait_until="load")
        expect(self.textbox).to_be_visible()
        expect(self.status).to_contain_text("passages indexed")

    @property
    def textbox(self) -> Any:
        return self.page.locator("#coach-input textarea")

    @property
    def stop_button(self) -> Any:
        return self.page.locator("#coach-input .stop-button")

    @property
    def submit_button(self) -> Any:
        return self.page.locator("#coach-input .submit-button")

    @property
    def status(self) -> Any:
        return self.page.locator("#coach-status")

    @property
    def notice(self) -> Any:
        return self.page.locator("#coach-notice")

    @property
    def questions(self) -> Any:
        return self.page.locator("#coach-chatbot .user-row")

    @property
    def answers(self) -> Any:
        """Each answer's own bubble (the sources block beside it excluded)."""
        return self.page.locator("#coach-chatbot .bot-row .message:not(.bot):not(.thought)")

    @property
    def sources(self) -> Any:
        return self.page.locator("#coach-chatbot .bot-row .thought-group")

    @property
    def saved(self) -> Any:
        """The list of saved conversations."""
        return self.page.locator("#coach-chats")

    def ask(self, question: str) -> None:
        self.textbox.fill(question)
        self.textbox.press("Enter")

    def wait_answered(self, count: int) -> None:
        """Until `count` answers are on the page and the last one has finished (the send button is back)."""
        expect(self.answers).to_have_count(count)
        expect(self.stop_button).to_have_count(0)
        expect(self.submit_button).to_be_visible()
        expect(self.answers.last).not_to_contain_text("Writing the answer")

    def open_sources(self) -> Any:
        """Expand the last answer's sources block; returns it."""
        block = self.sources.last
        block.locator(".title").click()
        expect(block).to_contain_text(" · ")
        expect(block.locator(".content")).to_have_css("overflow", "visible")  # done unfolding
        return block

    def like_last(self, name: str = "Like") -> None:
        self.page.locator("#coach-chatbot").get_by_role("button", name=name, exact=True).last.click()

    def pwned(self) -> Any:
        return self.page.evaluate("window.__pwned === undefined ? null : window.__pwned")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def chat(chromium: Any, ui: UiServer) -> Iterator[Chat]:
    """A fresh browser context on the chat page."""
    page = Chat(chromium, ui.url).open()
    yield page
    assert not page.off_machine, f"the page contacted other machines: {page.off_machine}"
    page.close()


# -- asking ----------------------------------------------------------------------------------------------
def test_a_question_streams_its_answer_under_its_sources(chat: Chat) -> None:
    # Every state the answer bubble goes through, as the browser draws it.
    chat.page.evaluate("""() => {
        window.__states = [];
        const root = document.querySelector('#coach-chatbot');
        new MutationObserver(() => {
            const answer = root.querySelector('.bot-row .message:not(.bot):not(.thought)');
            if (!answer) return;
            const state = {answer: answer.innerText, sources: !!root.querySelector('.bot-row .thought-group')};
            const last = window.__states[window.__states.length - 1];
            if (!last || last.answer !== state.answer || last.sources !== state.sources) window.__states.push(state);
        }).observe(root, {subtree: true, childList: true, characterData: true});
    }""")
    chat.ask(QUESTION)
    chat.wait_answered(1)
    expect(chat.answers.last).to_have_text(FAKE_REPLY)
    expect(chat.questions).to_have_text([QUESTION])

    states = chat.page.evaluate("window.__states")
    writing = [s for s in states if "Writing the answer" in s["answer"]]
    assert writing and all(s["sources"] for s in writing), "the sources should show while the model writes"
    assert "From the knowledge base" in writing[0]["answer"], "the key points should show before the answer"
    partial = [s["answer"] for s in states if s["answer"] != FAKE_REPLY and FAKE_REPLY.startswith(s["answer"])]
    assert len(partial) >= 2, f"the answer should appear piece by piece, saw {states}"

    block = chat.open_sources()
    expect(block.locator(".title")).to_have_text("Sources (4)")
    shown = block.inner_text()
    assert SOURCE_LINE.findall(shown) == ["1", "2", "3", "4"], shown
    assert re.search(r"^\[1\] [^\n]*Responsibilities[^\n]* · 0\d-[a-z-]+\.md$", shown, re.MULTILINE), shown
    expect(chat.status).to_contain_text(re.compile(r"Backend fake · model fake-model · \d+ passages indexed · "
                                                   r"answered in"))


def test_an_empty_enter_is_ignored(chat: Chat) -> None:
    with chat.page.expect_response(re.compile(r"/queue/join")):
        chat.textbox.press("Enter")
    # That event is over once the textbox's progress tracker is hidden again; then ask a real question.
    expect(chat.page.locator("#coach-input [data-testid=status-tracker]")).to_have_class(re.compile(r"\bhide\b"))
    chat.ask(QUESTION)
    chat.wait_answered(1)
    expect(chat.questions).to_have_count(1)
    expect(chat.questions).to_have_text([QUESTION])
    expect(chat.answers).to_have_text([FAKE_REPLY])


def test_an_extractive_answer_with_sources_looks_right(chat: Chat) -> None:
    settings = chat.page.get_by_text("Settings for this chat")
    settings.click()
    chat.page.get_by_label("Backend").click()
    chat.page.get_by_role("option", name=re.compile("extractive")).click()
    settings.click()  # fold the settings away again
    chat.ask(EXAMPLES[3][1])
    chat.wait_answered(1)
    expect(chat.answers.last).to_contain_text("Entry Level: $150,000 - $180,000 [1]")
    block = chat.open_sources()
    expect(block).to_contain_text("[1] Salary Ranges (US Market, 2024) > Base Salary · "
                                  "06-salary-ranges-us-market-2024.md")
    expect(block).to_contain_text("Entry Level: $150,000 - $180,000")
    expect(chat.status).to_contain_text("Backend extractive · model none")
    chat.page.set_viewport_size({"width": 1280, "height": 1100})
    expect(block).to_contain_text(" · ")  # still open after the re-layout
    chat.page.locator("#coach-chatbot [role=log]").evaluate("e => { e.scrollTop = 0; }")  # from the question
    chat.page.screenshot(path=str(SCREENSHOT), full_page=True, animations="disabled")
    print(f"\nscreenshot: {SCREENSHOT}")


def test_an_example_can_be_clicked(chat: Chat) -> None:
    chat.page.get_by_role("button", name="Progression").click()
    chat.wait_answered(1)
    expect(chat.questions).to_have_text([EXAMPLES[2][1]])
    expect(chat.answers).to_have_text([LEADS])
    # the four retrieved, and the passage of any item the coach added
    expect(chat.sources.locator(".title")).to_have_text([re.compile(r"Sources \([4-9]\)")])


def test_a_like_is_kept_in_the_database(chat: Chat, ui: UiServer) -> None:
    chat.ask(QUESTION)
    chat.wait_answered(1)
    rows = len(ui.feedback())
    chat.like_last("Like")
    expect(chat.notice).to_have_text("Thanks: your like was recorded.")
    row = ui.feedback()[rows]
    assert row["verdict"] == "like" and row["question"] == QUESTION and row["answer"] == FAKE_REPLY
    assert [s["n"] for s in row["sources"]] == [1, 2, 3, 4]
    assert all(s["source"].endswith(".md") and s["text"] and s["label"] for s in row["sources"])


# -- what is shown is text ---------------------------------------------------------------------------------
def test_html_in_a_question_or_in_the_knowledge_is_shown_as_text(chat: Chat) -> None:
    payload = ("<script>window.__pwned='script'</script><img src=x onerror=\"window.__pwned='img'\"> "
               + HTML_QUESTION)
    chat.ask(payload)
    chat.wait_answered(1)
    block = chat.open_sources()
    expect(block).to_contain_text(f"· {HTML_FILE}")
    expect(block).to_contain_text("<b>Chief Morale Officer</b>")
    expect(block).to_contain_text("<img src=x onerror=\"window.__pwned='knowledge'\">")
    expect(chat.questions).to_have_text([payload])
    expect(chat.page.locator("#coach-chatbot img, #coach-chatbot script, #coach-chatbot b")).to_have_count(0)
    assert chat.pwned() is None

    # The conversation kept in the browser comes back as text too, in the list and in the chat.
    expect(chat.saved).to_contain_text("<script>window.__pwned")
    chat.reload()
    expect(chat.questions).to_have_count(0)
    chat.saved.get_by_text("<script>window.__pwned").click()
    expect(chat.questions).to_have_text([payload])
    chat.open_sources()
    expect(chat.sources.last).to_contain_text("<b>Chief Morale Officer</b>")
    expect(chat.page.locator("#coach-chatbot img, #coach-chatbot script, #coach-chatbot b")).to_have_count(0)
    expect(chat.saved.locator("img, script, b")).to_have_count(0)
    assert chat.pwned() is None


# -- conversations -----------------------------------------------------------------------------------------
def test_conversations_survive_a_reload_and_new_chat_starts_over(chat: Chat, ui: UiServer) -> None:
    backend = ui.coach.backend
    assert isinstance(backend, SlowChat)
    chat.ask(QUESTION)
    chat.wait_answered(1)
    chat.ask("And what does it pay?")
    chat.wait_answered(2)
    expect(chat.saved).to_contain_text(QUESTION)

    chat.reload()
    expect(chat.questions).to_have_count(0)
    chat.saved.get_by_text(QUESTION).click()
    expect(chat.questions).to_have_text([QUESTION, "And what does it pay?"])
    expect(chat.answers.first).to_have_text(FAKE_REPLY)
    # The restored conversation is the one the coach sees, not only what is drawn.
    chat.ask("And which skills does it need?")
    chat.wait_answered(3)
    sent = json.dumps(backend.calls[-1])
    assert QUESTION in sent and "And what does it pay?" in sent

    chat.page.get_by_role("button", name="New chat").click()
    expect(chat.questions).to_have_count(0)
    chat.ask(SKILLS)
    chat.wait_answered(1)
    assert [m["role"] for m in backend.calls[-1]] == ["system", "user"], "New chat kept the old history"
    expect(chat.questions).to_have_text([SKILLS])
    expect(chat.saved.get_by_text(SKILLS)).to_have_count(1)
    expect(chat.saved.get_by_text(QUESTION)).to_have_count(1)


def test_two_people_chatting_at_once_keep_separate_histories(chromium: Any, ui: UiServer) -> None:
    alice, bob = Chat(chromium, ui.url).open(), Chat(chromium, ui.url).open()
    try:
        first = {alice: "What are the key responsibilities of the role? (Alice)", bob: SKILLS + " (Bob)"}
        follow = {alice: "And what does it pay for Alice?", bob: "And what does it pay for Bob?"}
        for n, step in enumerate((first, follow), 1):
            for person, question in step.items():  # both asked before either answer is done
                person.ask(question)
            for person in step:
                person.wait_answered(n)
        backend = ui.coach.backend
        assert isinstance(backend, SlowChat)
        for person, other in ((alice, bob), (bob, alice)):
            expect(person.questions).to_have_text([first[person], follow[person]])
            call = next(c for c in reversed(backend.calls) if follow[person] in c[-1]["content"])
            sent = json.dumps(call)
            assert first[person] in sent and first[other] not in sent
            assert not person.off_machine
    finally:
        alice.close()
        bob.close()


def test_a_like_does_not_wait_behind_another_persons_long_answer(chromium: Any, gated: UiServer) -> None:
    alice, bob = Chat(chromium, gated.url).open(), Chat(chromium, gated.url).open()
    backend = gate(gated)
    try:
        alice.ask(QUESTION)
        alice.wait_answered(1)
        hold_next_answer(gated)
        bob.ask(SKILLS)
        assert backend.waiting.wait(30), "Bob's answer never started"
        alice.like_last("Like")
        # Bob's answer cannot finish before the gate opens: a like queued behind it would never show this.
        expect(alice.notice).to_have_text("Thanks: your like was recorded.")
        expect(bob.stop_button).to_be_visible()
        backend.gate.set()
        bob.wait_answered(1)
        expect(bob.answers).to_have_text([LEADS])
        assert gated.feedback()[-1]["question"] == QUESTION
    finally:
        backend.gate.set()
        alice.close()
        bob.close()


def test_the_stop_button_stops_an_answer(chromium: Any, gated: UiServer) -> None:
    person = Chat(chromium, gated.url).open()
    backend = hold_next_answer(gated)
    try:
        person.ask(QUESTION)
        assert backend.waiting.wait(30), "the answer never started"
        expect(person.sources).to_have_count(1)  # the sources are there while the answer waits at the gate
        expect(person.answers.last).to_have_text("The")  # and the first word of the answer
        person.stop_button.click()
        expect(person.answers.last).to_have_text(STOPPED)
        expect(person.stop_button).to_have_count(0)
        expect(person.submit_button).to_be_visible()
        backend.gate.set()  # the model could go on now: nobody listens any more

        # The stopped turn is no part of what the coach is sent next.
        person.ask(SKILLS)
        person.wait_answered(2)
        expect(person.answers.last).to_have_text(LEADS)
        assert [m["role"] for m in backend.calls[-1]] == ["system", "user"]
        expect(person.answers.first).to_have_text(STOPPED)  # it did not come back
    finally:
        backend.gate.set()
        person.close()


def test_new_chat_during_an_answer_stops_it_and_starts_over(chromium: Any, gated: UiServer) -> None:
    person = Chat(chromium, gated.url).open()
    backend = hold_next_answer(gated)
    try:
        person.ask(QUESTION)
        assert backend.waiting.wait(30), "the answer never started"
        expect(person.sources).to_have_count(1)
        person.page.get_by_role("button", name="New chat").click()
        expect(person.questions).to_have_count(0)
        expect(person.submit_button).to_be_visible()
        backend.gate.set()  # the abandoned answer could go on now: it must not come back
        person.ask(SKILLS)
        person.wait_answered(1)
        expect(person.questions).to_have_text([SKILLS])
        expect(person.answers).to_have_text([LEADS])
        assert [m["role"] for m in backend.calls[-1]] == ["system", "user"]
    finally:
        backend.gate.set()
        person.close()


# -- start-up and the real model (measured, not asserted) ------------------------------------------------------
def _time_app_start(chromium: Any, data: Path, log_file: Path) -> float:
    """Seconds from starting `python app.py` (extractive backend) to its textbox visible in Chromium."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COACH_", "OPENAI_"))}
    env.update(COACH_BACKEND="extractive", COACH_PORT=str(port), COACH_DATA_DIR=str(data),
               COACH_KNOWLEDGE_DIR=str(REPO / "knowledge"), COACH_MODELS_DIR=str(REPO / "models"),
               COACH_PROMPTS_DIR=str(REPO / "prompts"), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               ANONYMIZED_TELEMETRY="False")
    with log_file.open("wb") as log:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        person = Chat(chromium, f"http://127.0.0.1:{port}/")
        try:
            def loaded() -> bool:
                assert proc.poll() is None, log_file.read_text()[-2000:]
                try:
                    person.page.goto(person.url, wait_until="load", timeout=5_000)
                    return True
                except Exception:  # not listening yet
                    return False

            wait_until(loaded, "python app.py to answer", timeout=180)
            expect(person.textbox).to_be_visible()
            seconds = time.perf_counter() - start
            assert not person.off_machine, person.off_machine
            return seconds
        finally:
            person.close()
            proc.terminate()
            proc.wait(timeout=30)


def test_page_ready_time_of_python_app_py(chromium: Any, tmp_path: Path) -> None:
    """Measured, not asserted: from `python app.py` (extractive) to the textbox visible in Chromium."""
    cold = _time_app_start(chromium, tmp_path / "data", tmp_path / "first.log")
    warm = _time_app_start(chromium, tmp_path / "data", tmp_path / "second.log")
    print(f"\npage ready after `python app.py`: {cold:.1f} s on a first start (builds the index), "
          f"{warm:.1f} s once the index exists")


@pytest.mark.model
def test_time_to_first_token_of_the_local_model_in_the_browser(chromium: Any, real_retriever: Any, prompts: Any,
                                                               settings_factory: Any, tmp_path: Path) -> None:
    """Measured, not asserted: the real local model answering in the page (its prompt prefix warmed first).

    On the shipped knowledge (not the UI tests' extra file), so the app's prepared prefix in KV_CACHE fits it.
    """
    from coach.coach import Coach
    from coach.llm import make_backend

    settings = settings_factory(REPO / "knowledge", tmp_path, backend="local", kv_cache_dir=KV_CACHE,
                                port=free_port())
    coach = Coach(settings, real_retriever, make_backend("local", settings), prompts)
    started = time.perf_counter()
    coach.warm()
    assert coach.warm_error is None, coach.warm_error
    warm_s = time.perf_counter() - started
    server = start_server(coach)
    person = Chat(chromium, server.url).open()
    try:
        sent = time.perf_counter()
        person.ask(EXAMPLES[3][1])
        expect(person.sources).to_have_count(1, timeout=60_000)
        sources_s = time.perf_counter() - sent
        expect(person.answers.last).not_to_contain_text("Writing the answer", timeout=120_000)
        first_s = time.perf_counter() - sent
        expect(person.stop_button).to_have_count(0, timeout=300_000)
        total_s = time.perf_counter() - sent
        expect(person.answers.last).to_contain_text(re.compile(r"\[\d+\]|does not cover"))
    finally:
        person.close()
        server.close()
    print(f"\nlocal model in the browser: warm-up {warm_s:.1f} s; after Enter: sources and key points "
          f"{sources_s:.2f} s, first model token {first_s:.2f} s, whole answer {total_s:.1f} s")


# -- several roles -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_role_server(tmp_path_factory: pytest.TempPathFactory, real_embedder: Any) -> Iterator[UiServer]:
    """A page over a knowledge folder of two roles (the seed and tests/data/roles/staff-data-engineer)."""
    import shutil

    from conftest import make_settings

    from coach.factory import build_coach

    root = tmp_path_factory.mktemp("two-roles")
    shutil.copytree(REPO / "knowledge", root / "knowledge" / "a-seed")
    shutil.copytree(REPO / "tests" / "data" / "roles" / "staff-data-engineer", root / "knowledge" / "data-eng")
    (root / "data").mkdir()
    settings = make_settings(root / "knowledge", root / "data", port=free_port())
    server = start_server(build_coach(settings, "extractive", embedder=real_embedder, say=lambda _: None))
    yield server
    server.close()


def test_the_role_picker_starts_a_conversation_that_keeps_its_role(chromium: Any, two_role_server: UiServer) -> None:
    chat = Chat(chromium, two_role_server.url).open()
    picker = chat.page.locator("#coach-role")
    expect(picker).to_be_visible()
    picker.locator("input").click()
    chat.page.get_by_role("option", name="Staff Data Engineer").click()
    chat.ask("What is the base salary range?")
    chat.wait_answered(1)
    expect(chat.answers.last).to_contain_text("$160,000")  # the data role's Senior band, not the seed's
    expect(chat.answers.last).not_to_contain_text("$150,000")
    chat.ask("And the top of the ladder?")
    chat.wait_answered(2)
    expect(chat.answers.last).not_to_contain_text("Chief AI Officer")
    assert not chat.off_machine
    chat.close()


def test_one_role_shows_no_picker(chat: Chat) -> None:
    expect(chat.page.locator("#coach-role")).to_be_hidden()
