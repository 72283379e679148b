"""The local model's scheduler (coach.llm.batching) on a fake engine that checks every cell it is given.

The fake "model" is deterministic: a sequence's next token is a function of exactly the tokens its cells
hold, in position order, so an answer comes out the same alone or batched only if the scheduler kept each
sequence's cells right (the shared prefix, reused caches, positions). The engine refuses a token at a
position that does not follow the sequence's last one, and a batch that needs more cells than it has.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from coach.errors import BackendUnavailableError, BusyError
from coach.llm.batching import Scheduler, common_prefix
from coach.llm.engine import PREFIX_SEQ, DecodeError, Item, Sampling

END = 0
VOCAB = 50


class FakeSampler:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.closed = False
        engine.samplers += 1

    def sample(self, index: int) -> int:
        return self.engine.next_of(index)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.engine.samplers -= 1


class FakeEngine:
    """Cells per sequence; `length` tokens per answer (then END); `step_s` seconds per decode call."""

    def __init__(self, n_seq: int = 4, n_ctx: int = 4096, n_batch: int = 64, length: int = 12,
                 step_s: float = 0.0) -> None:
        self.n_seq, self.n_ctx, self.n_batch = n_seq, n_ctx, n_batch
        self.length, self.step_s = length, step_s
        self.cells: dict[int, list[int]] = {}
        self.rows: list[Item] = []
        self.calls: list[int] = []  # rows per decode call
        self.shared: list[tuple[int, int, int]] = []
        self.samplers = 0
        self.fail_next: int | None = None
        self.refuse = False  # load() refuses every state, as llama.cpp does a damaged one

    def used(self) -> int:
        prefix = self.cells.get(PREFIX_SEQ, [])
        return len(prefix) + sum(len(c) - common_prefix(c, prefix) for s, c in self.cells.items() if s != PREFIX_SEQ)

    def decode(self, items: Sequence[Item]) -> None:
        if self.fail_next is not None:
            code, self.fail_next = self.fail_next, None
            raise DecodeError(code)
        assert 0 < len(items) <= self.n_batch
        for item in items:
            cells = self.cells.setdefault(item.seq, [])
            assert item.pos == len(cells), f"seq {item.seq}: token at {item.pos} after {len(cells)} cells"
            cells.append(item.token)
        if self.used() > self.n_ctx:
            for item in items:
                self.cells[item.seq].pop()
            raise DecodeError(1)
        self.rows = list(items)
        self.calls.append(len(items))
        if self.step_s:
            time.sleep(self.step_s)

    def next_of(self, index: int) -> int:
        row = self.rows[index]
        assert row.logits
        history = self.cells[row.seq][: row.pos + 1]
        answered = len(history) - history.index(VOCAB + 1) - 1 if VOCAB + 1 in history else 0
        if answered >= self.length:
            return END
        return 1 + (sum((i + 1) * t for i, t in enumerate(history)) % (VOCAB - 1))

    def remove(self, seq: int, start: int = -1, end: int = -1) -> None:
        assert end == -1
        cells = self.cells.setdefault(seq, [])
        del cells[max(start, 0):]

    def share(self, source: int, target: int, end: int) -> None:
        self.shared.append((source, target, end))
        assert not self.cells.get(target), "shared into a sequence that still holds cells"
        self.cells[target] = list(self.cells[source][:end])

    def sampler(self, sampling: Sampling) -> FakeSampler:
        return FakeSampler(self)

    def piece(self, token: int) -> bytes:
        return f"<{token}>".encode()

    def is_end(self, token: int) -> bool:
        return token == END

    def save(self, seq: int) -> bytes:
        return bytes(self.cells[seq])

    def load(self, seq: int, data: bytes) -> bool:
        if self.refuse:
            return False
        self.cells[seq] = list(data)
        return True


ASK = VOCAB + 1  # the token that opens an answer (like "<|im_start|>assistant\n")
PREFIX = [7, 3, 9, 4, 4, 2, 8, 1] * 4


def prompt(*words: int) -> list[int]:
    return [*PREFIX, *words, ASK]


def answer(scheduler: Scheduler, tokens: list[int], max_tokens: int = 100) -> str:
    return "".join(scheduler.pieces(scheduler.submit(tokens, max_tokens, Sampling())))


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def scheduler(engine: FakeEngine) -> Scheduler:
    s = Scheduler(engine, queue_limit=4)
    s.evaluate_prefix(PREFIX)
    yield s
    s.close()


QUESTIONS = [prompt(11, 12), prompt(13), prompt(14, 15, 16), prompt(17, 18)]


@pytest.mark.parametrize("fused", [False, True])
def test_answers_are_the_same_alone_and_in_a_batch(fused: bool) -> None:
    engine = FakeEngine(length=30, step_s=0.002)
    scheduler = Scheduler(engine, queue_limit=4, fused=fused)
    scheduler.evaluate_prefix(PREFIX)
    alone = [answer(scheduler, q) for q in QUESTIONS]
    assert scheduler.stats["max_batch"] == 1
    together: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i: together.__setitem__(i, answer(scheduler, QUESTIONS[i])))
               for i in range(len(QUESTIONS))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [together[i] for i in range(len(QUESTIONS))] == alone
    assert len(set(alone)) == len(alone) and all(a.count("<") == 30 for a in alone)
    assert scheduler.stats["max_batch"] == 4  # they were written side by side
    if fused:
        assert max(engine.calls) >= 4  # one call held every answer's token
    else:
        assert all(n == 1 for n in engine.calls[-40:])  # each answer's token in a call of its own
    scheduler.close()


def test_the_prefix_is_evaluated_once_and_shared_by_tagging_its_cells(scheduler: Scheduler,
                                                                      engine: FakeEngine) -> None:
    answer(scheduler, prompt(20))
    answer(scheduler, prompt(21))
    # The first is given the prefix's cells; the second reuses that slot's, which still hold the prefix.
    assert [end for source, _target, end in engine.shared if source == PREFIX_SEQ] == [len(PREFIX)]
    assert len(engine.cells[PREFIX_SEQ]) == len(PREFIX)  # evaluated once, into sequence 0
    assert scheduler.stats["prompt_reused"] == 2 * len(PREFIX)
    assert scheduler.stats["prompt_evaluated"] == 2 * 2  # each question's own two tokens only


def test_a_follow_up_is_evaluated_on_top_of_its_conversations_cells(scheduler: Scheduler) -> None:
    first = prompt(30, 31)
    said = answer(scheduler, first, max_tokens=5)
    tokens = [int(t) for t in said.strip("<>").split("><")]
    follow_up = [*first, *tokens, 32, ASK]
    job = scheduler.submit(follow_up, 5, Sampling())
    "".join(scheduler.pieces(job))
    assert job.reused == len(first) + len(tokens) - 1  # the last token answered was never evaluated


def test_a_cancelled_answer_frees_its_slot_for_the_next_in_line() -> None:
    engine = FakeEngine(n_seq=1, length=10_000, step_s=0.005)
    scheduler = Scheduler(engine, queue_limit=1)
    long = scheduler.submit(prompt(1), 2000, Sampling())
    pieces = scheduler.pieces(long)
    next(pieces)
    waiting = scheduler.submit(prompt(2), 3, Sampling())
    time.sleep(0.05)
    assert waiting.out.empty()  # the one slot is taken
    started = time.perf_counter()
    long.cancel()
    assert "".join(scheduler.pieces(waiting)).count("<") == 3
    assert time.perf_counter() - started < 5
    assert len(list(pieces)) < 2000  # the cancelled stream ended, long before its limit
    assert scheduler.stats["cancelled"] == 1 and scheduler.status()["in_flight"] == 0
    assert engine.samplers == 0
    scheduler.close()


def test_leaving_the_loop_cancels_the_answer(scheduler: Scheduler, engine: FakeEngine) -> None:
    engine.length, engine.step_s = 10_000, 0.002
    pieces = scheduler.pieces(scheduler.submit(prompt(3), 2000, Sampling()))
    for _ in zip(range(3), pieces, strict=False):
        pass
    pieces.close()
    deadline = time.time() + 5
    while scheduler.status()["in_flight"] and time.time() < deadline:
        time.sleep(0.01)
    assert scheduler.status()["in_flight"] == 0 and scheduler.stats["cancelled"] == 1


def test_a_burst_beyond_the_line_is_told_to_come_back() -> None:
    engine = FakeEngine(n_seq=1, length=10_000, step_s=0.005)
    scheduler = Scheduler(engine, queue_limit=1)
    first = scheduler.submit(prompt(1), 2000, Sampling())
    second = scheduler.submit(prompt(2), 2000, Sampling())
    with pytest.raises(BusyError) as busy:
        scheduler.submit(prompt(3), 5, Sampling())
    assert "busy answering 2 questions" in str(busy.value) and 1 <= busy.value.retry_after <= 120
    with pytest.raises(BusyError):
        scheduler.check()
    first.cancel()
    second.cancel()
    deadline = time.time() + 5
    while scheduler.status()["in_flight"] and time.time() < deadline:
        time.sleep(0.01)
    assert answer(scheduler, prompt(4), 2).count("<") == 2  # room again
    assert scheduler.stats["busy"] == 2
    scheduler.close()


def test_old_conversation_caches_make_room_and_a_prompt_too_long_for_the_cache_is_refused() -> None:
    engine = FakeEngine(n_seq=2, n_ctx=len(PREFIX) + 40, length=5)
    scheduler = Scheduler(engine, queue_limit=2)
    scheduler.evaluate_prefix(PREFIX)
    for word in range(10, 20):  # each leaves ~8 cells of cache in its slot; the oldest go as needed
        assert answer(scheduler, prompt(word, word + 1), 5).count("<") == 5
    assert engine.used() <= engine.n_ctx
    with pytest.raises(BackendUnavailableError, match="does not fit"):
        answer(scheduler, prompt(*range(1, 45)), 5)
    assert scheduler.status()["in_flight"] == 0


def test_a_failed_decode_ends_those_answers_with_a_reason_and_the_next_one_is_answered(
        scheduler: Scheduler, engine: FakeEngine) -> None:
    engine.fail_next = -3
    with pytest.raises(BackendUnavailableError, match="local model failed"):
        answer(scheduler, prompt(5))
    assert answer(scheduler, prompt(5)).count("<") == engine.length
    assert engine.samplers == 0


def test_two_hundred_answers_leave_nothing_behind(scheduler: Scheduler, engine: FakeEngine) -> None:
    engine.length = 3
    results: list[str] = []

    def ask(i: int) -> None:
        results.append(answer(scheduler, prompt(100 + i % 37)))

    for batch in range(20):
        threads = [threading.Thread(target=ask, args=(batch * 10 + i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    for i in range(80):
        ask(i)
    assert len(results) == 200 and all(r.count("<") == 3 for r in results)
    assert scheduler.status()["in_flight"] == 0 and scheduler.status()["waiting"] == 0
    assert engine.samplers == 0  # every sampler chain was freed
    assert engine.used() <= len(PREFIX) + engine.n_seq * (len(prompt(1)) + 3)  # only the slots' last caches


def test_a_closed_scheduler_refuses_new_answers(engine: FakeEngine) -> None:
    scheduler = Scheduler(engine, queue_limit=1)
    scheduler.close()
    with pytest.raises(BackendUnavailableError, match="shut down"):
        scheduler.submit(prompt(1), 3, Sampling())


def test_the_same_prompt_again_reevaluates_the_chunk_its_last_token_was_in(scheduler: Scheduler,
                                                                           engine: FakeEngine) -> None:
    question = prompt(40, 41, 42)
    first = answer(scheduler, question, 4)
    job = scheduler.submit(question, 4, Sampling())
    assert "".join(scheduler.pieces(job)) == first
    assert job.reused == len(PREFIX)  # its prompt chunk began just after the prefix: that chunk again
    assert engine.calls[-4] == len(question) - len(PREFIX)  # evaluated as one chunk, as the first time


def test_a_saved_prefix_is_restored_and_one_llama_cpp_refuses_is_not_used(engine: FakeEngine) -> None:
    scheduler = Scheduler(engine, queue_limit=1)
    assert scheduler.restore_prefix(PREFIX, bytes(PREFIX))
    assert answer(scheduler, prompt(5), 3).count("<") == 3 and scheduler.stats["prompt_reused"] == len(PREFIX)
    engine.refuse = True
    assert not scheduler.restore_prefix(PREFIX, b"garbled")
    assert engine.cells[PREFIX_SEQ] == []  # nothing half-restored is left to share
    engine.refuse = False
    assert bytes(engine.cells[PREFIX_SEQ]) == b"" and scheduler.evaluate_prefix(PREFIX) == bytes(PREFIX)
    scheduler.close()
