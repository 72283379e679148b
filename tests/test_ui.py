"""The chat page through its public `/chat` API (a real Gradio server on a free port, driven by gradio_client),
and the conversation data it is drawn from."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import SlowChat
from test_ui_fixtures import FAKE_QUESTION, FAKE_REPLY, UiIndex, UiServer, fake, ui_coach

from coach.errors import BackendUnavailableError, BusyError, CoachError
from coach.feedback import FeedbackStore
from coach.ui import APOLOGY, serve
from coach.ui import chat as ui_chat
from coach.ui.answering import Backends, answer_steps, available_backends
from coach.ui.app import ANSWERING
from coach.ui.chat import Turn, escape_text, feedback_row, history_for_coach, render
from coach.ui.feedback import record_feedback
from coach.ui.server import is_loopback

pytest_plugins = ["test_ui_fixtures"]
pytestmark = pytest.mark.integration

QUESTION = FAKE_QUESTION


@pytest.fixture(scope="module")
def fake_server(server_factory: Callable[..., UiServer]) -> UiServer:
    """A server whose default backend is the streaming fake (extractive is offered beside it)."""
    return server_factory(SlowChat(delay=0.02, default=FAKE_REPLY))


def client(server: UiServer, **kwargs: Any) -> Any:
    """A new API client: a new person, with a session of their own."""
    from gradio_client import Client

    return Client(server.url, verbose=False, **kwargs)


def text(message: dict[str, Any]) -> str:
    """The text of a chatbot message as the API returns it (a list of parts, or a string)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def users(messages: list[dict[str, Any]]) -> list[str]:
    return [text(m) for m in messages if m["role"] == "user"]


def test_a_streamed_answer_comes_with_its_sources_first(fake_server: UiServer) -> None:
    job = client(fake_server).submit(QUESTION, api_name="/chat")
    outputs = list(job)
    messages, status, details = job.result()

    # Retrieval is shown first: the sources (and the key points) before the model has written a word.
    steps = [o for o in outputs if isinstance(o[2], dict)]
    first = steps[0][2]
    assert first["answer"] == "" and first["sources"] and not first["done"]
    assert "Writing the answer" in text(steps[0][0][1])
    assert steps[0][0][-1]["metadata"]["title"] == f"Sources ({len(first['sources'])})"
    # Then the answer, in several pieces, each the start of the final one.
    partial = [o[2]["answer"] for o in steps if not o[2]["done"] and o[2]["answer"]]
    assert len(set(partial)) >= 3, f"the answer should arrive in several pieces, got {partial}"
    assert all(FAKE_REPLY.startswith(p) for p in partial)

    assert details["done"] and details["error"] is None
    assert details["answer"] == FAKE_REPLY and details["backend"] == "fake"
    assert [s["n"] for s in details["sources"]] == list(range(1, len(details["sources"]) + 1))
    assert all(s["label"] and s["source"].endswith(".md") and s["text"] for s in details["sources"])
    assert any(s["section"] == "Core Responsibilities" for s in details["sources"])

    question, answer, block = messages
    assert text(question) == QUESTION and text(answer) == FAKE_REPLY
    assert block["metadata"]["title"] == f"Sources ({len(details['sources'])})"
    one = details["sources"][0]
    assert f"**[1] {one['label']}** · `{one['source']}`" in text(block)
    assert "Backend **fake**" in status and "passages indexed" in status and "answered in" in status


def test_a_follow_up_in_the_same_session_uses_the_history_and_another_client_has_none(
        fake_server: UiServer) -> None:
    person = client(fake_server)
    person.predict(QUESTION, api_name="/chat")
    messages, _, _ = person.predict("And what does it pay?", api_name="/chat")
    assert users(messages) == [QUESTION, "And what does it pay?"]
    sent = fake(fake_server).calls[-1]
    assert sent[-1]["role"] == "user" and "And what does it pay?" in sent[-1]["content"]
    earlier = sent[1:-1]
    assert [m["role"] for m in earlier] == ["user", "assistant"]
    assert earlier[0]["content"] == QUESTION
    assert earlier[1]["content"].startswith("The role leads teams of engineers")
    assert not any("Sources (" in m["content"] or "**[1]" in m["content"] for m in sent), "sources fed back"

    # Another client is another person: none of that history.
    messages, _, _ = client(fake_server).predict("And what does it pay?", api_name="/chat")
    assert users(messages) == ["And what does it pay?"]
    assert [m["role"] for m in fake(fake_server).calls[-1]] == ["system", "user"]


def test_an_empty_message_is_ignored(fake_server: UiServer) -> None:
    person = client(fake_server)
    calls = len(fake(fake_server).calls)
    messages, _, _ = person.predict("   ", api_name="/chat")
    assert not isinstance(messages, list), "an empty message should leave the chat as it was"
    assert len(fake(fake_server).calls) == calls, "the model must not be asked"
    messages, _, _ = person.predict(QUESTION, api_name="/chat")
    assert users(messages) == [QUESTION]
    assert [m["role"] for m in fake(fake_server).calls[-1]] == ["system", "user"], "an empty turn was kept"


def test_an_over_long_message_is_refused_with_the_limit_and_left_out_of_the_history(fake_server: UiServer) -> None:
    limit = fake_server.settings.max_question_chars
    calls = len(fake(fake_server).calls)
    person = client(fake_server)
    messages, _, details = person.predict("x" * (limit + 1), api_name="/chat")
    assert len(messages) == 2 and f"the limit is {limit:,}" in text(messages[1])
    assert details["error"] and f"the limit is {limit:,}" in details["error"] and not details["sources"]
    assert len(fake(fake_server).calls) == calls, "the model must not be asked"

    messages, _, details = person.predict(QUESTION, api_name="/chat")
    assert details["answer"] == FAKE_REPLY and len(users(messages)) == 2  # the refusal stays on screen ...
    assert [m["role"] for m in fake(fake_server).calls[-1]] == ["system", "user"], "... but not in the history"


def test_a_backend_failure_falls_back_and_the_status_says_so(fake_server: UiServer) -> None:
    fake(fake_server).replies.append(BackendUnavailableError("cannot reach http://127.0.0.1:9/v1"))
    messages, status, details = client(fake_server).predict(QUESTION, api_name="/chat")
    assert details["fallback"] == "cannot reach http://127.0.0.1:9/v1" and details["error"] is None
    answer = text(messages[1])
    assert "fake model was unavailable: cannot reach http://127.0.0.1:9/v1" in answer
    assert re.search(r"\[1\]", answer) and messages[2]["metadata"]["title"].startswith("Sources (")
    assert "extractive fallback answered" in status


def test_a_busy_model_says_when_to_try_again_and_keeps_the_question(fake_server: UiServer) -> None:
    fake(fake_server).replies.append(BusyError(12, 9))
    messages, _status, details = client(fake_server).predict(QUESTION, api_name="/chat")
    error = details["error"] or ""
    assert "busy answering 12 questions" in error and "try again in 9 s" in error
    assert QUESTION in text(messages[0]) and "Traceback" not in json.dumps(messages)
    messages, _, details = client(fake_server).predict(QUESTION, api_name="/chat")
    assert details["answer"] == FAKE_REPLY and details["error"] is None  # the next try is answered


def test_an_unexpected_error_is_an_apology_with_the_traceback_only_in_the_log(
        fake_server: UiServer, caplog: pytest.LogCaptureFixture) -> None:
    fake(fake_server).replies.append(RuntimeError("secret internals"))
    with caplog.at_level(logging.ERROR, logger="coach.ui"):
        messages, status, details = client(fake_server).predict(QUESTION, api_name="/chat")
    assert text(messages[-1]) == APOLOGY and details["error"] == APOLOGY
    assert "secret internals" not in json.dumps([messages, status, details])
    logged = [r for r in caplog.records if r.name == "coach.ui" and r.exc_info]
    assert any("secret internals" in str(r.exc_info[1]) for r in logged if r.exc_info)


def test_backend_and_passages_are_chosen_per_chat(fake_server: UiServer) -> None:
    calls = len(fake(fake_server).calls)
    _, status, details = client(fake_server).predict(QUESTION, "extractive", 2, api_name="/chat")
    assert details["backend"] == "extractive" and details["model"] == "none"
    assert 1 <= len(details["sources"]) <= 2
    assert "Backend **extractive**" in status and "model `none`" in status
    assert len(fake(fake_server).calls) == calls, "the fake model was asked"

    _, status, details = client(fake_server).predict(QUESTION, "fake", 6, api_name="/chat")
    assert details["backend"] == "fake" and len(details["sources"]) == 6
    assert "Backend **fake**" in status
    # The choice is not sticky: a chat that does not choose gets the defaults.
    _, _, details = client(fake_server).predict(QUESTION, api_name="/chat")
    assert details["backend"] == "fake" and len(details["sources"]) == fake_server.settings.top_k


def answered(server: UiServer, *questions: str) -> dict[str, Any]:
    """The conversation data after asking these questions on the server's coach (as the page does)."""
    backends = Backends(server.coach, server.settings)
    conversation = None
    for question in questions:
        for step in answer_steps(backends, server.settings, question, conversation, None, None):
            conversation = step[-1]
    assert conversation is not None
    return conversation


def test_a_like_is_kept_in_the_database_with_its_sources_as_data(fake_server: UiServer, tmp_path: Path) -> None:
    conversation = answered(fake_server, "x" * (fake_server.settings.max_question_chars + 1), QUESTION)
    last = ui_chat.turns(conversation)[-1]
    assert last.status == "answered" and last.sources
    store = FeedbackStore(f"sqlite:///{tmp_path / 'missing' / 'folder' / 'coach.db'}")
    # Messages as drawn: refused question, its notice, then question, answer, sources block.
    assert record_feedback(store, feedback_row(conversation, 1, True)) == "", "a refusal cannot be liked"
    assert "like was recorded" in record_feedback(store, feedback_row(conversation, 3, True))
    assert "dislike was recorded" in record_feedback(store, feedback_row(conversation, [4], False))
    rows = list(store.rows())
    store.close()
    assert [r["verdict"] for r in rows] == ["like", "dislike"]
    row = rows[0]
    assert row["question"] == QUESTION and row["answer"] == FAKE_REPLY == last.answer
    assert row["backend"] == "fake" and row["time"]
    assert row["sources"] == last.sources
    assert all(set(s) >= {"n", "label", "source", "text"} for s in row["sources"])


def test_a_feedback_write_failure_never_breaks_the_chat(fake_server: UiServer, tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the folder should be")
    conversation = answered(fake_server, QUESTION)
    with caplog.at_level(logging.ERROR, logger="coach.ui"):
        store = FeedbackStore(f"sqlite:///{blocker / 'coach.db'}")
        notice = record_feedback(store, feedback_row(conversation, 1, True))
    assert notice == ("*Your feedback could not be saved because the database is unavailable (the details are in "
                      "the server's log).*")
    assert any("feedback" in r.getMessage() for r in caplog.records if r.name == "coach.ui")
    # The chat goes on.
    conversation = answered(fake_server, QUESTION, "And what does it pay?")
    assert [t.status for t in ui_chat.turns(conversation)] == ["answered", "answered"]


def test_html_in_questions_and_sources_is_escaped() -> None:
    payload = '<script>alert(1)</script><img src=x onerror="x()"> R&D ![pixel](http://example.com/p.png) &lt;'
    escaped = escape_text(payload)
    assert "<" not in escaped and "![" not in escaped
    assert "&lt;script>" in escaped and "R&amp;D" in escaped and "&amp;lt;" in escaped

    source = {"n": 1, "label": "Office <b>Mascot</b>", "section": "Office", "subsection": "", "source": "m.md",
              "text": 'Rex <img src=x onerror="window.__pwned=1"> sign'}
    turn = Turn("<script>alert(1)</script> what?", "Rex is a beagle [1].", [source], "answered")
    messages = render({"id": "x", "title": "", "turns": [turn.to_dict()]})
    assert [m["role"] for m in messages] == ["user", "assistant", "assistant"]
    assert all("<" not in m["content"] for m in messages)
    assert messages[0]["content"] == "&lt;script>alert(1)&lt;/script> what?"
    assert "**[1] Office &lt;b>Mascot&lt;/b>** · `m.md`" in messages[2]["content"]
    assert '> Rex &lt;img src=x onerror="window.__pwned=1"> sign' in messages[2]["content"]


def test_the_history_for_the_coach_leaves_out_refused_failed_and_unfinished_turns() -> None:
    conversation: dict[str, Any] = {"id": "x", "title": "", "turns": [
        Turn("first?", "answer [1]", [], "answered").to_dict(),
        Turn("x" * 50, "", [], "refused", note="Your message is 50 characters long; the limit is 20.").to_dict(),
        Turn("broken?", "half an ans", [], "error", note=APOLOGY).to_dict(),
        Turn("stopped?", "half", [], "answering").to_dict(),
        Turn("second?", "answer two", [], "answered").to_dict(),
    ]}
    assert history_for_coach(conversation) == [
        {"role": "user", "content": "first?"}, {"role": "assistant", "content": "answer [1]"},
        {"role": "user", "content": "second?"}, {"role": "assistant", "content": "answer two"}]
    assert history_for_coach(None) == []


def test_only_working_backends_are_offered(ui_index: UiIndex, tmp_path: Path) -> None:
    coach = ui_coach(ui_index, tmp_path)
    settings = coach.settings
    names = [n for _, n in available_backends(coach, settings)]
    assert "extractive" in names and "openai" not in names
    assert ("local" in names) == (settings.models_dir / settings.local_model_file).is_file()

    elsewhere = settings.model_copy(update={"models_dir": tmp_path, "openai_base_url": "http://127.0.0.1:9/v1"})
    assert [n for _, n in available_backends(coach, elsewhere)] == ["openai", "extractive"]
    with pytest.raises(CoachError, match="not available"):
        Backends(coach, settings.model_copy(update={"models_dir": tmp_path})).get("local")


def test_serve_refuses_a_non_loopback_host_with_one_line(ui_index: UiIndex, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert serve(ui_index.settings(tmp_path, host="0.0.0.0")) == 2
    err = capsys.readouterr().err
    assert "refusing to listen on 0.0.0.0" in err and "COACH_ALLOW_REMOTE" in err
    assert len(err.strip().splitlines()) == 1
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")


def test_answers_share_one_concurrency_group_and_likes_skip_the_queue(fake_server: UiServer) -> None:
    fns = list(fake_server.demo.fns.values())
    answering = [f for f in fns if f.name in ("on_submit", "on_example", "on_api")]
    assert sorted(f.name for f in answering) == ["on_api", "on_example", "on_submit"]
    assert {(f.concurrency_id, f.concurrency_limit, f.queue) for f in answering} == {
        (ANSWERING, fake_server.settings.concurrency, True)}
    likes = [f for f in fns if f.name == "on_like"]
    assert len(likes) == 1 and likes[0].queue is False


def test_a_login_is_required_when_username_and_password_are_set(server_factory: Callable[..., UiServer]) -> None:
    server = server_factory(None, auth_username="coach", auth_password="s3cret-pass")
    with pytest.raises(Exception, match="credentials were not provided"):
        client(server)
    with pytest.raises(ValueError, match="Could not login"):
        client(server, auth=("coach", "wrong"))
    _, _, details = client(server, auth=("coach", "s3cret-pass")).predict(QUESTION, api_name="/chat")
    assert details["backend"] == "extractive" and details["sources"] and details["answer"]
