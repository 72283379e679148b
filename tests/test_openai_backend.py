"""The openai backend against a real local OpenAI-compatible HTTP server (tests/fake_openai_server.py).

Streaming, a rejected key, an unreachable endpoint, the whole coach through that server, and the
OPENAI_* variables; an API key must never show up in an answer, an error, a log or stderr.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_openai_server import FakeOpenAIServer
from helpers import SALARY, free_port

from coach.answer import Answer
from coach.coach import Coach
from coach.config import Settings
from coach.errors import BackendUnavailableError
from coach.llm import make_backend
from coach.llm.base import Request
from coach.llm.openai_compat import OpenAIBackend

GOOD_KEY = "sk-test-GOOD-3f9a1c7e5b"
WRONG_KEY = "sk-test-WRONG-77d1e0b4aa"
ENTRY_Q = "What is the entry-level base salary range?"
HELLO = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]


def hello(max_tokens: int = 50, temperature: float = 0.1) -> Request:
    return Request([dict(m) for m in HELLO], max_tokens, temperature)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    """A fresh OpenAI-compatible server on a free loopback port that accepts only GOOD_KEY."""
    with FakeOpenAIServer(api_key=GOOD_KEY, model="fake-gpt") as srv:
        yield srv


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No OPENAI_* / COACH_OPENAI_* variable of the machine leaks into Settings."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "COACH_OPENAI_API_KEY", "COACH_OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def openai_coach(make_real_coach: Callable[..., Coach], **settings: Any) -> Coach:
    """A coach over the real index answering through the openai backend, as `--backend openai` wires it."""
    base = make_real_coach(**settings).settings
    return make_real_coach(make_backend("openai", base), **settings)


def _answer(coach: Coach, question: str) -> Answer:
    events = list(coach.stream(question))
    assert events[-1].kind == "done" and events[-1].answer is not None
    return events[-1].answer


# -- the backend on its own -------------------------------------------------------------------
def test_the_reply_streams_in_pieces(server: FakeOpenAIServer) -> None:
    server.replies.append("Hello there, I am the coach.")
    backend = OpenAIBackend(server.url, GOOD_KEY, "fake-gpt", timeout=10)
    pieces = list(backend.stream(hello(50, 0.1)))
    assert "".join(pieces) == "Hello there, I am the coach."
    assert len(pieces) > 1, "streamed, not one block"
    [request] = server.chat_requests
    assert request.header("Authorization") == f"Bearer {GOOD_KEY}"
    assert request.body["stream"] is True and request.body["model"] == "fake-gpt"
    assert request.messages == HELLO
    assert request.body.get("max_completion_tokens", request.body.get("max_tokens")) == 50


def test_a_wrong_api_key_says_the_key_was_rejected_without_repeating_it(server: FakeOpenAIServer) -> None:
    backend = OpenAIBackend(server.url, WRONG_KEY, "fake-gpt", timeout=10)
    with pytest.raises(BackendUnavailableError) as info:
        list(backend.stream(hello(50, 0.1)))
    message = str(info.value)
    assert "key" in message and "rejected" in message
    assert WRONG_KEY not in message and "WRONG" not in message
    assert len(server.requests) == 1, "a rejected key is not retried"


def test_an_unreachable_endpoint_fails_quickly_with_a_clear_reason() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend(url, GOOD_KEY, "fake-gpt", timeout=5)
    with pytest.raises(BackendUnavailableError, match="cannot reach") as info:
        list(backend.stream(hello(50, 0.1)))
    assert url in str(info.value) and GOOD_KEY not in str(info.value)


def test_a_server_that_never_answers_times_out_with_a_clear_reason() -> None:
    with socket.socket() as hung:  # accepts connections (the kernel does) but never replies
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}/v1"
        backend = OpenAIBackend(url, GOOD_KEY, "fake-gpt", timeout=0.5)
        with pytest.raises(BackendUnavailableError, match="did not answer in time"):
            list(backend.stream(hello(50, 0.1)))


@pytest.mark.parametrize("template", ["http://coach:{key}@127.0.0.1:{port}/v1",
                                      "http://127.0.0.1:{port}/v1?api-key={key}"], ids=["userinfo", "query"])
def test_credentials_in_the_base_url_are_not_repeated_in_the_error(template: str) -> None:
    url = template.format(key=WRONG_KEY, port=free_port())
    with pytest.raises(BackendUnavailableError) as info:
        list(OpenAIBackend(url, GOOD_KEY, "fake-gpt", timeout=5).stream(hello(50, 0.1)))
    assert WRONG_KEY not in str(info.value)


def test_no_key_for_the_real_openai_api_is_a_hint_not_a_request() -> None:
    backend = OpenAIBackend(None, None, "gpt-4o-mini")
    with pytest.raises(BackendUnavailableError, match="OPENAI_API_KEY"):
        list(backend.stream(hello(50, 0.1)))  # the network guard fails the test if it tried to connect


def test_a_local_server_needs_no_key(server: FakeOpenAIServer) -> None:
    server.api_key = "not-needed"
    assert "".join(OpenAIBackend(server.url, None, "fake-gpt").stream(hello(20, 0.0))) == server.default_reply


def test_the_fake_server_also_answers_without_streaming(server: FakeOpenAIServer) -> None:
    import openai

    server.replies.append("One block.")
    client = openai.OpenAI(base_url=server.url, api_key=GOOD_KEY, max_retries=0)
    reply = client.chat.completions.create(model="fake-gpt", messages=HELLO)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == "One block."
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url, api_key=WRONG_KEY, max_retries=0).models.list()


# -- the whole coach through the server -------------------------------------------------------
@pytest.mark.integration
def test_the_coach_answers_with_sources_through_the_server(server: FakeOpenAIServer,
                                                           make_real_coach: Callable[..., Coach],
                                                           clean_env: pytest.MonkeyPatch) -> None:
    server.replies.append("Entry-level managers earn $150,000 - $180,000 [1].")
    coach = openai_coach(make_real_coach, openai_base_url=server.url, openai_api_key=GOOD_KEY,
                         openai_model="fake-gpt")
    answer = _answer(coach, ENTRY_Q)
    assert answer.text == "Entry-level managers earn $150,000 - $180,000 [1]."
    assert answer.backend == "openai" and answer.model == "fake-gpt" and answer.fallback is None
    assert (answer.sources[0].section, answer.sources[0].subsection) == (SALARY, "Base Salary")
    assert answer.ttft_ms is not None and answer.completion_tokens > 1
    [request] = server.chat_requests
    assert request.header("Authorization") == f"Bearer {GOOD_KEY}"
    assert request.messages[0]["role"] == "system"
    assert ENTRY_Q in request.messages[-1]["content"]
    assert "Entry Level: $150,000 - $180,000" in request.messages[-1]["content"]


@pytest.mark.integration
def test_the_coach_rewrites_a_follow_up_through_the_server(server: FakeOpenAIServer,
                                                           make_real_coach: Callable[..., Coach],
                                                           clean_env: pytest.MonkeyPatch) -> None:
    server.replies += ["What is the annual bonus of a senior-level manager?",
                       "The annual bonus is 10% - 30% of base salary [1]."]
    coach = openai_coach(make_real_coach, openai_base_url=server.url, openai_api_key=GOOD_KEY)
    history = [{"role": "user", "content": "What is the base salary at senior level?"},
               {"role": "assistant", "content": "Senior Level: $220,000 - $280,000 [1]"}]
    events = list(coach.stream("And how large is the annual bonus on top of that?", history))
    answer = events[-1].answer
    assert answer is not None and answer.text == "The annual bonus is 10% - 30% of base salary [1]."
    assert len(server.chat_requests) == 2
    assert answer.standalone == "What is the annual bonus of a senior-level manager?"
    assert answer.sources[0].section == SALARY


@pytest.mark.integration
def test_a_wrong_key_falls_back_and_the_key_is_never_shown(server: FakeOpenAIServer,
                                                           make_real_coach: Callable[..., Coach],
                                                           clean_env: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    coach = openai_coach(make_real_coach, openai_base_url=server.url, openai_api_key=WRONG_KEY,
                         openai_model="fake-gpt")
    settings = coach.settings
    events = list(coach.stream(ENTRY_Q))
    answer = events[-1].answer
    assert answer is not None
    note, _, rest = answer.text.partition("\n")
    assert "unavailable" in note and "key was rejected" in note
    assert sum("unavailable" in line for line in answer.text.splitlines()) == 1
    assert rest.strip() == events[0].text and "Entry Level: $150,000 - $180,000" in rest
    assert answer.fallback and "key" in answer.fallback
    out, err = capsys.readouterr()
    everything = "\n".join([json.dumps(answer.to_dict()), *(e.text for e in events), caplog.text, out, err,
                            repr(settings), settings.model_dump_json(), answer.fallback])
    assert WRONG_KEY not in everything and "WRONG" not in everything
    assert server.requests and server.requests[0].header("Authorization") == f"Bearer {WRONG_KEY}"


@pytest.mark.integration
def test_the_coach_falls_back_when_the_server_is_down(make_real_coach: Callable[..., Coach],
                                                      clean_env: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    coach = openai_coach(make_real_coach, openai_base_url=url, openai_api_key=GOOD_KEY, request_timeout=5)
    answer = _answer(coach, ENTRY_Q)
    assert answer.fallback and "cannot reach" in answer.fallback
    assert answer.text.splitlines()[0].count("unavailable") == 1
    assert "Entry Level: $150,000 - $180,000" in answer.text
    assert GOOD_KEY not in answer.text


# -- settings from the usual environment variables ----------------------------------------------
def test_openai_api_key_and_base_url_are_honoured(server: FakeOpenAIServer, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_API_KEY", GOOD_KEY)
    clean_env.setenv("OPENAI_BASE_URL", server.url)
    settings = Settings(_env_file=None, openai_model="fake-gpt")
    assert settings.openai_base_url == server.url
    assert settings.openai_api_key is not None and settings.openai_api_key.get_secret_value() == GOOD_KEY
    assert GOOD_KEY not in repr(settings) and GOOD_KEY not in str(settings)
    backend = OpenAIBackend.from_settings(settings)
    assert "".join(backend.stream(hello(20, 0.0))) == server.default_reply
    assert server.chat_requests[0].header("Authorization") == f"Bearer {GOOD_KEY}"


def test_coach_variables_win_over_the_openai_ones(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OPENAI_API_KEY", "sk-generic")
    clean_env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    clean_env.setenv("COACH_OPENAI_API_KEY", "sk-coach")
    clean_env.setenv("COACH_OPENAI_BASE_URL", "http://127.0.0.1:2/v1")
    settings = Settings(_env_file=None)
    assert settings.openai_base_url == "http://127.0.0.1:2/v1"
    assert settings.openai_api_key is not None and settings.openai_api_key.get_secret_value() == "sk-coach"
