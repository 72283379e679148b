"""The scheduler on the real local model: a cancelled answer frees its slot, a burst beyond the line is told
to come back, and two hundred questions leave memory where it was. (Answers alone and batched being the
same is in test_e2e_local, on the coach's real prompts.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coach.config import Settings
from coach.errors import BusyError
from coach.llm.base import Request
from coach.llm.local import LocalLlamaBackend

pytestmark = [pytest.mark.model, pytest.mark.integration]


@pytest.fixture(scope="module")
def one_slot(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalLlamaBackend]:
    """One answer at a time and one place in line, so the limits are reached with two or three questions."""
    backend = LocalLlamaBackend(models_dir / Settings().local_model_file, models_dir,
                                tmp_path_factory.mktemp("kv"), n_ctx=4096, parallel=1, queue=1)
    yield backend
    backend.close()


def ask(text: str, max_tokens: int) -> Request:
    return Request([{"role": "user", "content": text}], max_tokens)


def settle(backend: LocalLlamaBackend) -> dict[str, int]:
    deadline = time.time() + 10
    while backend.status().get("in_flight") and time.time() < deadline:
        time.sleep(0.02)
    return backend.status()


def test_a_cancelled_answer_frees_its_slot_at_once(one_slot: LocalLlamaBackend) -> None:
    long = one_slot.stream(ask("Count from 1 to 300, one number a line.", 400))
    next(long)  # it is being written: the one slot is taken
    got: list[str] = []
    waiting = threading.Thread(target=lambda: got.extend(one_slot.stream(ask("Say hello.", 8))))
    waiting.start()
    time.sleep(0.5)
    assert not got  # waiting in line
    before = one_slot.status()["generated"]
    long.close()  # the browser tab closed
    waiting.join(timeout=60)
    assert got and not waiting.is_alive()
    status = settle(one_slot)
    assert status["cancelled"] >= 1 and status["in_flight"] == 0
    assert status["generated"] - before <= 8 + 3  # the long answer stopped at once: the rest was the short one's


def test_a_burst_beyond_the_line_gets_the_busy_answer(one_slot: LocalLlamaBackend) -> None:
    first = one_slot.stream(ask("Count from 1 to 300, one number a line.", 400))
    next(first)
    second = one_slot.stream(ask("Say hello.", 4))
    waiting = threading.Thread(target=lambda: list(second))
    waiting.start()
    time.sleep(0.3)
    with pytest.raises(BusyError) as busy:
        list(one_slot.stream(ask("Say goodbye.", 4)))
    assert "busy answering 2 questions" in str(busy.value) and busy.value.retry_after >= 1
    first.close()
    waiting.join(timeout=60)
    assert settle(one_slot)["in_flight"] == 0
    assert "".join(one_slot.stream(ask("Say hello.", 4)))  # served again once there is room


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096 / 2**20


def test_memory_stays_flat_over_two_hundred_questions(one_slot: LocalLlamaBackend) -> None:
    def run(n: int, offset: int) -> None:
        for i in range(n):
            reply = "".join(one_slot.stream(ask(f"Question {offset + i}: name a colour.", 3)))
            assert reply

    run(20, 0)  # warm: buffers, caches
    start = rss_mb()
    run(200, 100)
    grown = rss_mb() - start
    status = settle(one_slot)
    assert status["in_flight"] == 0 and status["waiting"] == 0
    assert grown < 25, f"resident memory grew {grown:.1f} MB over 200 questions"
