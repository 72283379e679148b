"""The chat UI through its API: a real Gradio server on a free port, driven by gradio_client."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_ui_fixtures import FAKE_REPLY, SlowChat, UiIndex, UiServer, make_coach, ui_settings

from coach import ui
from coach.errors import BackendUnavailableError
from coach.ui import (
    APOLOGY,
    FeedbackLog,
    SafeChatbot,
    available_backends,
    escape_text,
    feedback_row,
    is_loopback,
    parse_sources,
    record_feedback,
    serve,
    turns_for_coach,
    unescape_text,
)

pytest_plugins = ["test_ui_fixtures"]
pytestmark = pytest.mark.integration

QUESTION = "What are the main responsibilities of the role?"


@pytest.fixture(scope="module")
def fake_server(server_factory: Callable[..., UiServer]) -> UiServer:
    """A server whose default backend is the streaming fake (extractive is offered beside it)."""
    return server_factory(SlowChat(delay=0.01, default=FAKE_REPLY), "fake")


def client(server: UiServer) -> Any:
    from gradio_client import Client

    return Client(server.url, verbose=False)


def fake(server: UiServer) -> SlowChat:
    backend = server.coach.backend
    assert isinstance(backend, SlowChat)
    return backend


def test_streamed_answer_with_sources(fake_server: UiServer) -> None:
    job = client(fake_server).submit(QUESTION, api_name="/chat")
    outputs = list(job)
    messages, status, details = job.result()

    # Retrieval is shown first: sources (and the key facts) before the model has written anything.
    first = next(o for o in outputs if isinstance(o[2], dict))[2]
    assert first["answer"] == "" and first["sources"] and not first["done"]
    partial = {o[2]["answer"] for o in outputs if isinstance(o[2], dict) and not o[2]["done"]} - {""}
    assert len(partial) > 3, "the answer should arrive in several pieces"
    assert all(details["answer"].startswith(p) for p in partial)

    assert details["done"] and details["answer"] == FAKE_REPLY and details["backend"] == "fake"
    assert "[1]" in details["answer"]
    assert [s["n"] for s in details["sources"]] == list(range(1, len(details["sources"]) + 1))
    assert all(s["label"] and s["source"].endswith(".md") and s["text"] for s in details["sources"])
    assert any(s["section"] == "Core Responsibilities" for s in details["sources"])

    answer, block = messages
    assert answer["content"] == FAKE_REPLY
    assert block["metadata"]["title"] == f"Sources ({len(details['sources'])})"
    first_source = details["sources"][0]
    assert f"**[1] {first_source['label']}** · `{first_source['source']}`" in block["content"]
    assert "Backend **fake**" in status and "passages indexed" in status


def test_follow_up_in_the_same_session_uses_the_history(fake_server: UiServer) -> None:
    chat = client(fake_server)
    chat.predict(QUESTION, api_name="/chat")
    chat.predict("And what does it pay?", api_name="/chat")
    sent = fake(fake_server).calls[-1]
    assert {"role": "user", "content": QUESTION} in sent
    assert any(m["role"] == "assistant" and m["content"].startswith(FAKE_REPLY[:40]) for m in sent)
    assert not any("Sources (" in m["content"] or "**[1]" in m["content"] for m in sent), "sources fed back"

    # Another client is another person: none of that history.
    client(fake_server).predict("And what does it pay?", api_name="/chat")
    assert [m["role"] for m in fake(fake_server).calls[-1]] == ["system", "user"]


def test_empty_message_is_ignored(fake_server: UiServer) -> None:
    chat = client(fake_server)
    calls = len(fake(fake_server).calls)
    messages, _, _ = chat.predict("   ", api_name="/chat")
    assert messages is None
    assert len(fake(fake_server).calls) == calls
    chat.predict(QUESTION, api_name="/chat")
    assert [m["role"] for m in fake(fake_server).calls[-1]] == ["system", "user"], "empty turn kept"


def test_over_long_message_is_refused_with_the_limit(fake_server: UiServer) -> None:
    limit = fake_server.settings.max_question_chars
    calls = len(fake(fake_server).calls)
    chat = client(fake_server)
    messages, _, details = chat.predict("x" * (limit + 1), api_name="/chat")
    assert f"the limit is {limit:,}" in messages[0]["content"]
    assert details["error"] and not details["sources"]
    assert len(fake(fake_server).calls) == calls, "the model must not be asked"
    chat.predict(QUESTION, api_name="/chat")
    assert [m["role"] for m in fake(fake_server).calls[-1]] == ["system", "user"], "refused turn kept"


def test_backend_failure_falls_back_and_says_so(fake_server: UiServer) -> None:
    fake(fake_server).replies.append(BackendUnavailableError("cannot reach http://127.0.0.1:9/v1"))
    messages, status, details = client(fake_server).predict(QUESTION, api_name="/chat")
    assert details["fallback"] == "cannot reach http://127.0.0.1:9/v1"
    assert "unavailable" in messages[0]["content"] and "[1]" in messages[0]["content"]
    assert "extractive fallback answered" in status


def test_unexpected_error_is_an_apology_and_a_logged_traceback(fake_server: UiServer,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    fake(fake_server).replies.append(RuntimeError("secret internals"))
    with caplog.at_level(logging.ERROR, logger="coach.ui"):
        messages, _, details = client(fake_server).predict(QUESTION, api_name="/chat")
    assert messages[-1]["content"] == APOLOGY and details["error"] == APOLOGY
    assert "secret internals" not in json.dumps(messages)
    assert any(r.exc_info and "secret internals" in str(r.exc_info[1]) for r in caplog.records)


def test_backend_and_passages_can_be_chosen_per_chat(fake_server: UiServer) -> None:
    calls = len(fake(fake_server).calls)
    _, status, details = client(fake_server).predict(QUESTION, "extractive", 2, api_name="/chat")
    assert details["backend"] == "extractive" and len(details["sources"]) == 2
    assert "Backend **extractive**" in status and "model `none`" in status
    assert len(fake(fake_server).calls) == calls
    # The alternative coach shares the default one's retriever (one index, one BM25).
    _, _, details = client(fake_server).predict(QUESTION, api_name="/chat")
    assert details["backend"] == "fake" and len(details["sources"]) == fake_server.settings.top_k


def test_like_is_recorded_as_a_json_line(fake_server: UiServer, tmp_path: Path) -> None:
    messages, _, details = client(fake_server).predict(QUESTION, api_name="/chat")
    history = [{"role": "user", "content": QUESTION}, *messages]
    log = FeedbackLog(tmp_path / "missing" / "folder" / "feedback.jsonl")
    assert "recorded" in record_feedback(log, history, 1, True)
    assert "recorded" in record_feedback(log, history, [2], False)
    rows = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert [r["verdict"] for r in rows] == ["like", "dislike"]
    row = rows[0]
    assert row["question"] == QUESTION and row["answer"] == details["answer"] and row["time"]
    assert [(s["n"], s["label"], s["source"]) for s in row["sources"]] == [
        (s["n"], s["label"], s["source"]) for s in details["sources"]]
    assert row["sources"][0]["text"].strip() == details["sources"][0]["text"].strip()


def test_feedback_write_failure_never_breaks_the_chat(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "data"
    blocker.write_text("a file where the folder should be")
    history = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a [1]"}]
    with caplog.at_level(logging.ERROR, logger="coach.ui"):
        notice = record_feedback(FeedbackLog(blocker / "feedback.jsonl"), history, 1, True)
    assert "could not be saved" in notice
    assert any("feedback" in r.getMessage() for r in caplog.records)


def test_html_is_escaped_on_the_way_to_the_browser_and_restored_on_the_way_back() -> None:
    payload = '<script>alert(1)</script><img src=x onerror="x()"> R&D ![pixel](http://example.com/p.png) &lt;'
    assert "<" not in escape_text(payload) and "![" not in escape_text(payload)
    assert unescape_text(escape_text(payload)) == payload
    bot = SafeChatbot()
    shown = bot.postprocess([{"role": "user", "content": payload},
                             {"role": "assistant", "content": "ok", "metadata": {"title": "Sources (1)"}}])
    assert shown.root[0].content[0].text == escape_text(payload)  # type: ignore[union-attr]
    back = bot.preprocess(shown)
    assert back[0]["content"][0]["text"] == payload  # type: ignore[typeddict-item]
    assert bot.get_block_name() == "chatbot"
    assert not Path(ui.__file__).with_suffix(".pyi").exists(), "Gradio wrote a stub beside the module"


def test_history_for_the_coach_leaves_out_sources_and_refused_turns() -> None:
    history = [
        {"role": "user", "content": [{"type": "text", "text": "first?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "answer [1]"}], "metadata": None},
        {"role": "assistant", "content": "**[1] A > B** · `a.md`\n\n> text", "metadata": {"title": "Sources (1)"}},
        {"role": "user", "content": "x" * 50},
        {"role": "assistant", "content": "Your message is 50 characters long; the limit is 20."},
        {"role": "user", "content": "broken?"},
        {"role": "assistant", "content": APOLOGY},
    ]
    assert turns_for_coach(history, 20) == [{"role": "user", "content": "first?"},
                                            {"role": "assistant", "content": "answer [1]"}]
    row = feedback_row(history, 2, True)
    assert row is not None and row["question"] == "first?" and row["answer"] == "answer [1]"
    assert row["sources"] == [{"n": 1, "label": "A > B", "source": "a.md", "text": "text"}]
    assert parse_sources("") == []


def test_only_working_backends_are_offered(ui_index: UiIndex, tmp_path: Path) -> None:
    coach = make_coach(ui_index, tmp_path)
    names = [n for _, n in available_backends(coach, coach.settings)]
    assert "extractive" in names and "openai" not in names
    assert ("local" in names) == (coach.settings.models_dir / coach.settings.local_model_file).is_file()
    coach.settings.models_dir = tmp_path  # no model file there
    coach.settings.openai_base_url = "http://127.0.0.1:9/v1"
    assert [n for _, n in available_backends(coach, coach.settings)] == ["openai", "extractive"]


def test_serve_refuses_a_non_loopback_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = ui_settings(tmp_path, tmp_path, tmp_path / "chroma", host="0.0.0.0")
    assert serve(settings) == 2
    err = capsys.readouterr().err
    assert "COACH_ALLOW_REMOTE" in err and len(err.strip().splitlines()) == 1
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.com")


def test_answers_share_one_concurrency_limit_and_likes_skip_the_queue(fake_server: UiServer) -> None:
    fns = list(fake_server.demo.fns.values())
    answering = [f for f in fns if f.name == "_submit_fn" or f.api_name == "chat"]
    assert len(answering) >= 2
    assert {(f.concurrency_id, f.concurrency_limit) for f in answering} == {
        ("coach-answer", fake_server.settings.concurrency)}
    likes = [f for f in fns if f.name == "on_like"]
    assert likes and not any(f.queue for f in likes)


def test_a_login_is_required_when_username_and_password_are_set(server_factory: Callable[..., UiServer]) -> None:
    from gradio_client import Client

    server = server_factory(None, "extractive", auth_username="coach", auth_password="s3cret-pass")
    with pytest.raises(Exception, match="credentials were not provided"):
        Client(server.url, verbose=False)
    with pytest.raises(ValueError, match="Could not login"):
        Client(server.url, auth=("coach", "wrong"), verbose=False)
    _, _, details = Client(server.url, auth=("coach", "s3cret-pass"), verbose=False).predict(
        QUESTION, api_name="/chat")
    assert details["backend"] == "extractive" and details["sources"]
