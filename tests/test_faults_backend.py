"""Faults of the model server, injected for real on sockets (tests/fake_openai_server.py): a server that hangs
before or after its headers, closes the stream mid-answer, answers 500 or garbage, or streams too slowly.

What a person sees each time (the extractive answer with a note naming the problem), that the timeouts fire
within their settings, that one hung answer does not hold up another person's (in the page through
gradio_client, and in the API), that Stop or a client leaving frees the place and closes the connection to
the model server, and that nothing saved is lost. Retrieval uses the fake embedder: these are about the backend.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fake_openai_server import FakeOpenAIServer, Fault
from helpers import free_port, shown, wait_until
from test_ui_fixtures import UiServer, start_server

from coach.coach import Coach
from coach.errors import BackendUnavailableError
from coach.feedback import FeedbackStore
from coach.llm.base import Request, Stop, stop_this_thread_with
from coach.llm.openai_compat import STOPPED, OpenAIBackend
from coach.planner import Profile
from coach.planner.store import PlanStore

KEY = "sk-test-faults-9c41e7"
QUESTION = "What is the entry-level base salary?"
KEY_FACT = "Entry Level: $150,000 - $180,000"  # the first of the extractive answer's key facts
GOOD_REPLY = "Entry-level managers earn $150,000 - $180,000 [1]."
# A whole first sentence (shown while streaming), then half of one when the connection closes.
PARTIAL = "Entry-level managers earn $150,000 - $180,000 [1]. The entry-level base salary is [1]"
HALF = "The entry-level base salary is"
LONG = " ".join(["Entry-level managers earn $150,000 - $180,000 [1]."] * 20)
HANG_S = 60.0  # a first-byte timeout no test waits for: only a stop (or the server) can end the wait


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    """An OpenAI-compatible server on a free loopback port (stopping it ends any reply still hanging)."""
    with FakeOpenAIServer(api_key=KEY, model="fake-gpt", default_reply=GOOD_REPLY) as srv:
        yield srv


def hello() -> Request:
    return Request([{"role": "user", "content": "Say hello."}], 50)


def backend(server: FakeOpenAIServer, first_byte: float = 1.0, total: float = 30.0) -> OpenAIBackend:
    return OpenAIBackend(server.url, KEY, "fake-gpt", timeout=total, first_byte_timeout=first_byte)


def openai_coach(make_coach: Callable[..., Coach], server: FakeOpenAIServer, **settings: Any) -> Coach:
    """A coach over the fake-embedder index answering through the openai backend, wired from its settings."""
    settings = {"openai_base_url": server.url, "openai_api_key": KEY, "openai_model": "fake-gpt",
                "first_byte_timeout": 1.0, "request_timeout": 30.0, **settings}
    return make_coach(OpenAIBackend.from_settings(make_coach(**settings).settings), **settings)


def failure(backend: OpenAIBackend) -> tuple[str, float, str]:
    """The reason a request failed with, the seconds it took, and the text streamed before."""
    start, said = time.monotonic(), []
    with pytest.raises(BackendUnavailableError) as info:
        for piece in backend.stream(hello()):
            said.append(piece)
    return str(info.value), time.monotonic() - start, "".join(said)


# -- what each fault looks like to a person ---------------------------------------------------------------
FAULTS = [
    pytest.param(Fault("hang"), "nothing came within 1 s", id="hang-before-headers"),
    pytest.param(Fault("hang_after_headers"), "nothing came within 1 s", id="hang-after-headers"),
    pytest.param(Fault("hang_after_headers", PARTIAL), "stopped mid-answer", id="hang-mid-answer"),
    pytest.param(Fault("cut", PARTIAL), "stopped mid-answer", id="closed-mid-answer"),
    pytest.param(Fault("status", status=500), "answered with HTTP 500", id="http-500"),
    pytest.param(Fault("garbage", "<html><body>Bad gateway</body></html>"), "not an OpenAI chat stream", id="html"),
    pytest.param(Fault("garbage", 'data: {"choices": [oops\n\n'), "not an OpenAI chat stream", id="bad-json"),
    pytest.param(Fault("slow", LONG, delay=0.1), "took longer than 2 s", id="too-slow"),
]


@pytest.mark.parametrize(("fault", "problem"), FAULTS)
def test_each_fault_gets_the_key_facts_with_a_note_naming_the_problem(
        fault: Fault, problem: str, server: FakeOpenAIServer, make_coach: Callable[..., Coach]) -> None:
    server.replies.append(fault)
    coach = openai_coach(make_coach, server, request_timeout=2.0)
    events = list(coach.stream(QUESTION))
    answer = events[-1].answer
    assert answer is not None
    note, _, facts = answer.text.partition("\n")
    assert note.startswith("(The openai model was unavailable:") and problem in note and server.url in note
    assert KEY_FACT in facts and facts.strip() == events[0].text.strip()  # the key facts shown with the sources
    assert shown(events) == answer.text, "the page and the API end on the replacement"
    assert HALF not in answer.text and answer.fallback is not None and problem in answer.fallback
    assert KEY not in json.dumps(answer.to_dict())
    assert len(server.chat_requests) == 1, "a failed request is not retried: the person would wait twice"


def test_an_answer_cut_mid_stream_was_shown_in_part_then_replaced(server: FakeOpenAIServer,
                                                                  make_coach: Callable[..., Coach]) -> None:
    server.replies.append(Fault("cut", PARTIAL))
    events = list(openai_coach(make_coach, server).stream(QUESTION))
    tokens = "".join(e.text for e in events if e.kind == "token")
    assert tokens.startswith("Entry-level managers earn"), "the first sentence was on screen before the cut"
    replace = [e for e in events if e.kind == "replace"]
    assert len(replace) == 1 and "stopped mid-answer" in replace[0].text and KEY_FACT in replace[0].text
    assert HALF in tokens, "the half sentence was on screen before the cut"
    assert shown(events).startswith("(The openai model was unavailable") and HALF not in shown(events)


def test_a_well_behaved_server_still_answers_whole(server: FakeOpenAIServer,
                                                   make_coach: Callable[..., Coach]) -> None:
    server.replies.append(Fault("slow", GOOD_REPLY, delay=0.05))  # slow, but within both timeouts
    events = list(openai_coach(make_coach, server).stream(QUESTION))
    answer = events[-1].answer
    assert answer is not None and answer.fallback is None and answer.text == GOOD_REPLY


# -- the timeouts fire within their settings -------------------------------------------------------------
def test_the_first_byte_timeout_fires_within_its_setting(server: FakeOpenAIServer) -> None:
    server.replies.append(Fault("hang"))
    reason, took, said = failure(backend(server, first_byte=1.0))
    assert "did not answer in time: nothing came within 1 s (COACH_FIRST_BYTE_TIMEOUT)" in reason and not said
    assert 0.9 <= took < 5, f"{took:.1f} s for a 1 s first-byte timeout"
    wait_until(lambda: server.hung_up == 1, "the connection to the hung server to be closed", timeout=5)


def test_silence_mid_answer_is_limited_by_the_first_byte_timeout(server: FakeOpenAIServer) -> None:
    server.replies.append(Fault("hang_after_headers", GOOD_REPLY))
    reason, took, said = failure(backend(server, first_byte=1.0))
    assert "stopped mid-answer: nothing came for 1 s" in reason and said == GOOD_REPLY
    assert 0.9 <= took < 5, f"{took:.1f} s for a 1 s first-byte timeout"


def test_the_total_timeout_fires_within_its_setting_even_while_pieces_keep_coming(server: FakeOpenAIServer) -> None:
    server.replies.append(Fault("slow", LONG, delay=0.1))  # a piece every 0.1 s, for 10 s in all
    reason, took, said = failure(backend(server, first_byte=1.0, total=1.5))
    assert "did not finish its answer in time: it took longer than 1.5 s (COACH_REQUEST_TIMEOUT)" in reason
    assert said and len(said) < len(LONG)
    assert 1.4 <= took < 5, f"{took:.1f} s for a 1.5 s total timeout"


def test_the_defaults_leave_a_hung_server_a_bounded_wait() -> None:
    from coach.config import Settings

    settings = Settings(_env_file=None)
    assert 0 < settings.first_byte_timeout < settings.request_timeout <= 120
    assert OpenAIBackend.from_settings(settings).first_byte_timeout == settings.first_byte_timeout


# -- a stop ends a hung request at once and closes its connection ----------------------------------------
def on_a_worker(stop: Stop, request: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run request on a thread of its own whose answer `stop` stops (as the page and the API run answers);
    the list receives what it returned or the BackendUnavailableError it raised."""
    outcome: list[Any] = []

    def run() -> None:
        stop_this_thread_with(stop)
        try:
            outcome.append(request())
        except BackendUnavailableError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    return worker, outcome


@pytest.mark.parametrize("fault", [Fault("hang"), Fault("hang_after_headers", "The role")],
                         ids=["before-headers", "mid-answer"])
def test_a_stop_from_another_thread_ends_a_hung_request_and_closes_its_connection(
        fault: Fault, server: FakeOpenAIServer) -> None:
    server.replies.append(fault)
    stop = Stop()
    worker, outcome = on_a_worker(stop, lambda: "".join(backend(server, HANG_S, HANG_S).stream(hello())))
    wait_until(lambda: server.hanging == 1, "the server to hang")
    stop.set()
    worker.join(5)
    assert not worker.is_alive(), "the request still waits on the hung server after the stop"
    assert len(outcome) == 1 and isinstance(outcome[0], BackendUnavailableError) and str(outcome[0]) == STOPPED
    wait_until(lambda: server.hung_up == 1, "the connection to the model server to be closed", timeout=5)


def test_a_stop_asked_before_the_request_ends_it_at_once(server: FakeOpenAIServer) -> None:
    server.replies.append(Fault("hang"))
    stop = Stop()
    stop.set()
    worker, outcome = on_a_worker(stop, lambda: "".join(backend(server, HANG_S, HANG_S).stream(hello())))
    worker.join(5)
    assert not worker.is_alive() and [str(o) for o in outcome] == [STOPPED]


# -- the page: other people's answers, Stop, nothing lost (a real Gradio server, gradio_client) -------------
def client(server: UiServer) -> Any:
    """A new person, with a session of their own."""
    from gradio_client import Client

    return Client(server.url, verbose=False)


def text(message: dict[str, Any]) -> str:
    content = message["content"]
    return content if isinstance(content, str) else "".join(p.get("text", "") for p in content if isinstance(p, dict))


def answer_of(messages: list[dict[str, Any]]) -> str:
    """The last answer in the chat (the sources block after it carries a title)."""
    return [text(m) for m in messages if m["role"] == "assistant" and not (m.get("metadata") or {}).get("title")][-1]


class Saved:
    """What a person saved before the faults: a like, a profile; and the index's size."""

    def __init__(self, coach: Coach) -> None:
        settings = coach.settings
        FeedbackStore(settings.database).add({"question": "q", "answer": "a", "verdict": "like"})
        self.store = PlanStore(settings.database)
        self.profile = Profile(years_development=6, years_leadership=2, skills=["Python"])
        self.store.save_profile("person-1", self.profile)
        self.feedback = list(FeedbackStore(settings.database).rows())
        self.passages = coach.retriever.count()
        self.coach = coach

    def intact(self) -> None:
        """Nothing saved was lost or changed by the faults."""
        assert list(FeedbackStore(self.coach.settings.database).rows()) == self.feedback
        assert PlanStore(self.coach.settings.database).profile("person-1") == self.profile
        assert self.coach.retriever.count() == self.passages


@pytest.fixture
def page(server: FakeOpenAIServer, make_coach: Callable[..., Coach]) -> Iterator[Callable[..., UiServer]]:
    """page(api=False, **settings): the chat page (and the API) answering through the fake model server."""
    started: list[UiServer] = []

    def start(api: bool = False, **settings: Any) -> UiServer:
        settings = {"port": free_port(), "first_byte_timeout": HANG_S, "request_timeout": HANG_S, **settings}
        ui = start_server(openai_coach(make_coach, server, **settings), api=api)
        started.append(ui)
        return ui

    yield start
    server.released.set()  # nothing hangs past the test
    for ui in started:
        ui.close()


@pytest.mark.integration
def test_in_the_page_hung_answers_do_not_hold_up_another_person_and_stop_frees_them(
        server: FakeOpenAIServer, page: Callable[..., UiServer]) -> None:
    ui = page()  # the defaults: the openai backend writes up to COACH_OPENAI_CONCURRENCY answers at once
    saved = Saved(ui.coach)
    server.replies += [Fault("hang"), Fault("hang_after_headers", "Entry-level managers")]
    people = [client(ui), client(ui)]
    hung = [person.submit(QUESTION, api_name="/chat") for person in people]
    wait_until(lambda: server.hanging == 2, "two answers to hang, each on a worker of its own")

    messages, status, details = client(ui).predict(QUESTION, api_name="/chat")  # a third person, meanwhile
    assert details["answer"] == GOOD_REPLY and details["fallback"] is None and answer_of(messages) == GOOD_REPLY
    assert server.hanging == 2 and not any(job.done() for job in hung), "the hung answers held a place each, not all"

    for job in hung:
        job.cancel()  # both press Stop
    wait_until(lambda: server.hung_up == 2, "the connections to the model server to be closed after Stop",
               timeout=10)
    assert server.hanging == 0
    messages, _, details = people[0].predict(QUESTION, api_name="/chat")  # the same person asks again
    assert details["answer"] == GOOD_REPLY and details["fallback"] is None
    saved.intact()


@pytest.mark.integration
def test_in_the_page_stop_frees_the_only_place(server: FakeOpenAIServer, page: Callable[..., UiServer]) -> None:
    ui = page(concurrency=1, openai_concurrency=1)
    server.replies.append(Fault("hang_after_headers", "Entry-level managers"))
    person = client(ui)
    hung = person.submit(QUESTION, api_name="/chat")
    wait_until(lambda: server.hanging == 1, "the answer to hang mid-stream")
    hung.cancel()
    wait_until(lambda: server.hung_up == 1, "the connection to the model server to be closed after Stop",
               timeout=10)
    _, _, details = client(ui).predict(QUESTION, api_name="/chat")  # the one place is free again
    assert details["answer"] == GOOD_REPLY


@pytest.mark.integration
def test_in_the_page_an_answer_cut_mid_stream_ends_as_the_key_facts(server: FakeOpenAIServer,
                                                                    page: Callable[..., UiServer]) -> None:
    ui = page(first_byte_timeout=5.0)
    saved = Saved(ui.coach)
    server.replies.append(Fault("cut", PARTIAL))
    job = client(ui).submit(QUESTION, api_name="/chat")
    steps = list(job)
    messages, status, details = job.result()
    final = answer_of(messages)
    assert "(The openai model was unavailable:" in final and "stopped mid-answer" in final
    assert KEY_FACT in final and HALF not in final and details["answer"] == final
    assert "extractive fallback answered" in status and "stopped mid-answer" in status
    streamed = [answer_of(s[0]) for s in steps if s and isinstance(s[0], list) and len(s[0]) > 1]
    assert any(s.startswith("Entry-level managers earn") for s in streamed), "the first sentence was streamed"
    saved.intact()


# -- the API: other clients' answers, a client leaving frees its place --------------------------------------
def ask(stream: bool = False) -> dict[str, Any]:
    return {"model": "coach", "messages": [{"role": "user", "content": QUESTION}], "stream": stream}


def post(ui: UiServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(ui.url + "v1/chat/completions", json=body, timeout=30)


@pytest.mark.integration
def test_in_the_api_a_hung_answer_holds_one_place_and_leaving_frees_it(server: FakeOpenAIServer,
                                                                       page: Callable[..., UiServer]) -> None:
    ui = page(api=True, concurrency=1, openai_concurrency=2, api_queue=0)
    saved = Saved(ui.coach)
    server.replies.append(Fault("hang"))
    with httpx.stream("POST", ui.url + "v1/chat/completions", json=ask(stream=True), timeout=30) as response:
        lines = response.iter_lines()  # kept open: the client is still reading
        wait_until(lambda: server.hanging == 1, "the streamed answer to hang")
        other = post(ui, ask())  # another client meanwhile, in the second place
        assert other.status_code == 200 and other.json()["choices"][0]["message"]["content"] == GOOD_REPLY
        other_stream = [line for line in httpx.post(ui.url + "v1/chat/completions", json=ask(stream=True),
                                                    timeout=30).text.splitlines() if line.startswith("data: ")]
        assert other_stream[-1] == "data: [DONE]"
        assert server.hanging == 1
        assert next(lines).startswith("data: ")  # the hung client has its first chunk, nothing more
    # The client left: the place is free again and the connection to the model server is closed.
    wait_until(lambda: server.hung_up == 1, "the connection to the model server to be closed after the client left",
               timeout=10)
    wait_until(lambda: httpx.get(ui.url + "healthz").json()["api"]["in_flight"] == 0, "the place to be given back",
               timeout=10)
    saved.intact()


@pytest.mark.integration
def test_in_the_api_a_cut_answer_is_the_key_facts_with_the_note(server: FakeOpenAIServer,
                                                                page: Callable[..., UiServer]) -> None:
    ui = page(api=True, first_byte_timeout=5.0)
    server.replies += [Fault("cut", PARTIAL), Fault("status", status=500)]
    for problem in ("stopped mid-answer", "answered with HTTP 500"):
        body = post(ui, ask()).json()
        content = body["choices"][0]["message"]["content"]
        assert problem in content and KEY_FACT in content and HALF not in content
        assert problem in body["coach"]["fallback"]
    server.replies.append(Fault("cut", PARTIAL))
    chunks = [json.loads(line[6:]) for line in post(ui, ask(stream=True)).text.splitlines()
              if line.startswith("data: {")]
    replaced = [c["choices"][0]["coach"]["replace"] for c in chunks
                if c.get("choices") and "replace" in c["choices"][0].get("coach", {})]
    assert replaced and "stopped mid-answer" in replaced[0] and KEY_FACT in replaced[0]
