"""The generation stage: where an answer may stop, the soft stop after N pieces, timings and counts,
and a stream that stops the model when it is closed."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from helpers import CharChat, SlowChat

from coach.errors import BackendUnavailableError
from coach.generation import Response, unit_end
from coach.llm.base import Request
from coach.llm.fake import FakeChat

REQUEST = Request([{"role": "system", "content": "You are Coach."}, {"role": "user", "content": "What does it pay?"}],
                  max_tokens=500)


@pytest.mark.parametrize(("said", "piece", "cut"), [
    ("It pays $150,000 [1]", ". More", 1),
    ("It pays well [1].", " More", 0),
    ("It pays well", ".\n", 1),
    ("It pays well. [1]", " More", 0),
    ("Frameworks, e.g.", " TensorFlow", None),
    ("Pay in the U.S.", " market", None),
    ("A rise of 2.", "5", None),
    ("These include:", "\n", None),
    ("- Skill Gaps: training [1]", "\n", 0),
    ("1. Skill Gaps", "\n\n", 0),
    ("Key points:\n- Skill Gaps", "\n", 0),
    ("It pays", " well", None),
    ("It pays", " well. Then", 6),
    ("", "\n", None),
])
def test_an_answer_may_stop_only_where_a_sentence_or_list_item_ends(said: str, piece: str, cut: int | None) -> None:
    assert unit_end(said, piece) == cut


def run(backend: FakeChat, soft: int | None) -> Response:
    response = Response(backend, REQUEST, soft)
    for _ in response.pieces_stream():
        pass
    return response


def test_without_a_soft_limit_the_whole_reply_streams() -> None:
    reply = "Entry level pays well [1]. Senior level pays more [1]. Top tier pays most [1]."
    response = run(FakeChat([reply]), None)
    assert response.text == reply and not response.stopped_early


def test_a_long_answer_stops_at_the_first_sentence_end_after_the_soft_limit() -> None:
    sentences = ["Entry level pays $150,000 - $180,000 [1].", " Mid-level pays $180,000 - $220,000 [1].",
                 " Senior level pays $220,000 - $280,000 [1]."]
    response = run(CharChat(["".join(sentences)]), len(sentences[0]) + 5)  # one character a piece
    assert response.text == sentences[0] + sentences[1]
    assert response.stopped_early
    assert response.completion_tokens == len(sentences[0] + sentences[1]) + 1, "the last piece is cut to ''"


def test_the_soft_stop_is_not_after_an_abbreviation() -> None:
    reply = "Know frameworks, e.g. TensorFlow and PyTorch. Also know cloud platforms. And more."
    response = run(FakeChat([reply]), 2)
    assert response.text == "Know frameworks, e.g. TensorFlow and PyTorch."
    assert response.stopped_early


def test_the_soft_stop_is_at_the_end_of_a_list_item_not_of_its_lead_in() -> None:
    reply = "The challenges include:\n- Skill Gaps: training [1]\n- Ethics: bias [1]\n- Costs: hardware [1]\n"
    response = run(FakeChat([reply]), 2)
    assert response.text == "The challenges include:\n- Skill Gaps: training [1]"
    assert response.stopped_early


def test_a_reply_shorter_than_the_soft_limit_is_whole() -> None:
    response = run(FakeChat(["Entry level pays well [1]. Senior more [1]."]), 100)
    assert response.text == "Entry level pays well [1]. Senior more [1]." and not response.stopped_early


def test_counts_and_timings() -> None:
    backend = SlowChat(delay=0.02, replies=["Entry level pays well [1]. Senior level pays more [1]."])
    response = Response(backend, REQUEST)
    assert response.generation_s == 0.0 and response.first_token_at is None
    pieces = list(response.pieces_stream())
    assert response.completion_tokens == len(pieces) == 10
    assert response.text == "".join(pieces)
    assert response.prompt_tokens == sum(backend.count_tokens(m["content"]) + 4 for m in REQUEST.messages)
    assert response.first_token_at is not None and response.finished_at is not None
    assert response.first_token_at - response.started >= 0.015, "the first token came after one delay"
    assert response.generation_s == pytest.approx(response.finished_at - response.first_token_at)
    assert response.generation_s >= 0.1, "nine more pieces, 20 ms each"
    assert backend.requests[0].messages == REQUEST.messages and backend.requests[0].max_tokens == 500


class Watched(FakeChat):
    """Counts the pieces the model produced and notes when its stream is closed."""

    def __init__(self, reply: str) -> None:
        super().__init__([reply])
        self.produced = 0
        self.closed = False

    def stream(self, request: Request) -> Iterator[str]:
        try:
            for piece in super().stream(request):
                self.produced += 1
                yield piece
        finally:
            self.closed = True


def test_closing_the_stream_stops_the_model() -> None:
    backend = Watched("one two three four five six seven eight")
    response = Response(backend, REQUEST)
    pieces = response.pieces_stream()
    assert [next(pieces), next(pieces)] == ["one ", "two "]
    assert not backend.closed
    pieces.close()
    assert backend.closed and backend.produced == 2
    assert response.finished_at is not None and response.text == "one two "


def test_the_soft_stop_stops_the_model() -> None:
    backend = Watched("It pays well. More words that nobody will read here.")
    response = run(backend, 1)
    assert response.text == "It pays well."
    # One more piece is read: had it been "[1]", the citation would belong to the sentence.
    assert backend.closed and backend.produced == 4


@pytest.mark.parametrize("reply", ["It pays well. [1] More words nobody reads.", "It pays well.[1] More words."],
                         ids=["next-piece", "same-piece"])
def test_a_citation_after_the_full_stop_is_kept_by_the_soft_stop(reply: str) -> None:
    response = run(Watched(reply), 1)
    assert response.text.rstrip() in ("It pays well. [1]", "It pays well.[1]")
    assert response.stopped_early


def test_a_failing_model_raises_through_the_stream_and_is_timed() -> None:
    response = Response(FakeChat([BackendUnavailableError("cannot reach the model")]), REQUEST)
    with pytest.raises(BackendUnavailableError, match="cannot reach"):
        list(response.pieces_stream())
    assert response.finished_at is not None and response.text == "" and response.generation_s == 0.0


def test_generation_time_grows_while_the_answer_streams() -> None:
    response = Response(SlowChat(delay=0.0, replies=["a b c"]), REQUEST)
    pieces = response.pieces_stream()
    next(pieces)
    before = response.generation_s
    time.sleep(0.02)
    assert response.generation_s > before
    pieces.close()
    frozen = response.generation_s
    time.sleep(0.01)
    assert response.generation_s == frozen, "stops counting once closed"
