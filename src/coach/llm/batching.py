"""Continuous batching for the local model: one worker thread decodes every active answer at once.

A single worker owns the engine (llama.cpp) and, step after step, advances every answer being written by
one token and evaluates a chunk of the prompt of a question just admitted (continuous batching: a new
question joins the running answers at the next step instead of waiting for them to finish). Where decoding
is bound by memory bandwidth, one call for all of them (`fused`) reads the weights once per step; on the
2-core machines measured here the cores are the limit, a step costs nearly as much per answer in one call
as in separate ones, and `exact` (a call per answer, the same answer alone or batched) is the default.

Each answer runs in a sequence (a slot) of its own. The knowledge prefix lives in sequence 0 and is
shared with a slot by tagging its cells, so it is evaluated once for everybody. A slot that finished
keeps its cells as a cache: the next question whose prompt starts the same way (a follow-up replays the
conversation's earlier turns) reuses them and evaluates only what is new. Those caches are dropped,
oldest first, when a new question needs the room.

Limits: `n_seq` answers in the batch; `queue` more may wait; beyond that a question is told the coach is
busy and when to try again (BusyError). A cancelled answer (Stop pressed, browser tab closed, API
connection dropped) leaves the batch at the next step and frees its slot.
"""

from __future__ import annotations

import codecs
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from coach.errors import BackendUnavailableError, BusyError
from coach.llm.engine import PREFIX_SEQ, DecodeError, Item, Sampling

log = logging.getLogger("coach.llm")
T = TypeVar("T")
_END = object()
PROMPT_CHUNK = 128  # prompt tokens per step: others' answers go on between two chunks of a long prompt


class Sampler(Protocol):
    """Picks the next token of one sequence from the batch's logits."""

    def sample(self, index: int) -> int: ...

    def close(self) -> None: ...


class Engine(Protocol):
    """What the scheduler needs of a model runtime (coach.llm.engine.LlamaEngine, or a fake in unit tests)."""

    n_ctx: int
    n_batch: int
    n_seq: int

    def decode(self, items: Sequence[Item]) -> None: ...

    def remove(self, seq: int, start: int = -1, end: int = -1) -> None: ...

    def share(self, source: int, target: int, end: int) -> None: ...

    def sampler(self, sampling: Sampling) -> Sampler: ...

    def piece(self, token: int) -> bytes: ...

    def is_end(self, token: int) -> bool: ...

    def save(self, seq: int) -> bytes: ...

    def load(self, seq: int, data: bytes) -> bool: ...


class Job:
    """One answer asked of the scheduler: its prompt, its limits, and the pieces it streams back."""

    def __init__(self, tokens: list[int], max_tokens: int, sampling: Sampling, wake: Callable[[], None]) -> None:
        self.tokens = tokens
        self.max_tokens = max_tokens
        self.sampling = sampling
        self.out: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.cancelled = False
        self.done = False
        self.submitted = time.perf_counter()
        self.reused = 0  # prompt tokens whose cells were already in the cache
        self._wake = wake

    def cancel(self) -> None:
        """Stop this answer: it leaves the batch (or the line) at the worker's next step."""
        if not self.done and not self.cancelled:
            self.cancelled = True
            self._wake()


@dataclass(eq=False)
class _Slot:
    seq: int
    tokens: list[int] = field(default_factory=list)  # tokens whose cells this sequence holds, positions 0..n-1
    shared: int = 0  # how many of them are the prefix sequence's cells, tagged for this one too
    job: Job | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to evaluate
    chunks: list[int] = field(default_factory=list)  # where each prompt chunk evaluated into it began
    next_token: int | None = None  # sampled, to be evaluated at the next step
    generated: int = 0
    sampler: Sampler | None = None
    text: Any = None  # an incremental UTF-8 decoder: a character may span tokens
    last_used: float = 0.0

    @property
    def own_cells(self) -> int:
        return len(self.tokens) - self.shared


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two sequences share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Scheduler:
    """The worker thread that owns an engine; `submit` from any thread, then iterate `pieces(job)`."""

    def __init__(self, engine: Engine, queue_limit: int, fused: bool = False) -> None:
        self.engine = engine
        self.queue_limit = queue_limit
        self.fused = fused
        self._slots = [_Slot(seq) for seq in range(1, engine.n_seq + 1)]
        self._prefix: list[int] = []
        self._waiting: deque[Job] = deque()
        self._tasks: list[tuple[Callable[[Engine], Any], Future[Any]]] = []
        self._in_flight = 0  # admitted or waiting, not finished
        self._cond = threading.Condition()
        self._closed = False
        self._answer_s = 6.0  # a moving average of how long an answer takes, for "try again in N s"
        self.stats: dict[str, float] = {"steps": 0, "generated": 0, "prompt_evaluated": 0, "prompt_reused": 0,
                                        "busy": 0, "cancelled": 0, "max_batch": 0}
        self._thread = threading.Thread(target=self._run, name="coach-batching", daemon=True)
        self._thread.start()

    # -- called from any thread -----------------------------------------------------------------------
    def submit(self, tokens: list[int], max_tokens: int, sampling: Sampling) -> Job:
        """Queue an answer; raises BusyError when the batch and the line are full."""
        job = Job(tokens, max_tokens, sampling, self._wake)
        with self._cond:
            if self._closed:
                raise BackendUnavailableError("the local model was shut down")
            self._check()
            self._in_flight += 1
            self._waiting.append(job)
            self._cond.notify()
        return job

    def check(self) -> None:
        """Raise BusyError if a question asked now would be refused (nothing is reserved)."""
        with self._cond:
            self._check()

    def _check(self) -> None:
        if self._in_flight >= len(self._slots) + self.queue_limit:
            self.stats["busy"] += 1
            ahead = self._in_flight - len(self._slots) + 1
            wait = math.ceil(self._answer_s * math.ceil(ahead / len(self._slots)))
            raise BusyError(self._in_flight, max(1, min(wait, 120)))

    def pieces(self, job: Job) -> Iterator[str]:
        """The answer's text as it is written; leaving the loop early cancels the job."""
        try:
            while True:
                item = job.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancel()

    def call(self, work: Callable[[Engine], T]) -> T:
        """Run work(engine) on the worker thread between two steps, and return its result (or raise)."""
        future: Future[T] = Future()
        with self._cond:
            if self._closed:
                raise BackendUnavailableError("the local model was shut down")
            self._tasks.append((work, future))
            self._cond.notify()
        return future.result()

    def restore_prefix(self, tokens: list[int], state: bytes) -> bool:
        """Make sequence 0 hold `tokens` from a saved state; False (and nothing changed) when llama.cpp refuses it."""
        def restore(engine: Engine) -> bool:
            self._forget_prefix()
            if not engine.load(PREFIX_SEQ, state):
                return False
            self._prefix = list(tokens)
            return True

        return self.call(restore)

    def evaluate_prefix(self, tokens: list[int]) -> bytes:
        """Make sequence 0 hold `tokens` by evaluating them (minutes for the knowledge base); returns its state."""
        def evaluate(engine: Engine) -> bytes:
            self._forget_prefix()
            for start in range(0, len(tokens), engine.n_batch):
                chunk = tokens[start:start + engine.n_batch]
                engine.decode([Item(t, start + i, PREFIX_SEQ, False) for i, t in enumerate(chunk)])
            self._prefix = list(tokens)
            return engine.save(PREFIX_SEQ)

        return self.call(evaluate)

    def _forget_prefix(self) -> None:
        for slot in self._slots:  # cells they shared with the old prefix are theirs alone from now on
            slot.shared = 0
        self._prefix = []
        self.engine.remove(PREFIX_SEQ)

    def status(self) -> dict[str, Any]:
        """What the worker is doing, for /healthz and benchmarks."""
        with self._cond:
            waiting = len(self._waiting)
            in_flight = self._in_flight
        return {"slots": len(self._slots), "queue": self.queue_limit, "in_flight": in_flight, "waiting": waiting,
                **{k: int(v) for k, v in self.stats.items()}}

    def close(self) -> None:
        """Stop the worker; answers still running end with an error."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    # -- the worker ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                while not (self._closed or self._tasks or self._waiting or self._busy_slots()):
                    self._cond.wait()
                if self._closed:
                    break
                tasks, self._tasks = self._tasks, []
            for work, future in tasks:
                try:
                    future.set_result(work(self.engine))
                except BaseException as exc:  # the caller gets it
                    future.set_exception(exc)
            try:
                self._reap()
                self._admit()
                if self._busy_slots():
                    self._step()
            except Exception as exc:  # never leave a caller waiting on a dead worker
                log.exception("the batching worker failed")
                self._fail_all(BackendUnavailableError(f"the local model failed ({type(exc).__name__})"))
        self._fail_all(BackendUnavailableError("the local model was shut down"))
        with self._cond:
            for _, future in self._tasks:
                future.set_exception(BackendUnavailableError("the local model was shut down"))
            self._tasks = []

    def _busy_slots(self) -> list[_Slot]:
        return [s for s in self._slots if s.job is not None]

    def _reap(self) -> None:
        """Cancelled answers leave the batch and the line now."""
        for slot in self._busy_slots():
            if slot.job is not None and slot.job.cancelled:
                self.stats["cancelled"] += 1
                self._finish(slot)
        with self._cond:
            gone = [job for job in self._waiting if job.cancelled]
        self._drop_waiting(gone, _END)

    def _admit(self) -> None:
        while True:
            with self._cond:
                job = self._waiting[0] if self._waiting else None
            if job is None or not any(s.job is None for s in self._slots) or not self._place(job):
                return
            if job.done:  # refused: it could never fit
                continue
            with self._cond:
                self._waiting.popleft()

    def _used(self) -> int:
        return len(self._prefix) + sum(s.own_cells for s in self._slots)

    def _reserved(self) -> int:
        """Cells the answers being written will still take (their prompts' rest, their longest answers)."""
        return sum(len(s.pending) + s.job.max_tokens - s.generated for s in self._slots if s.job is not None)

    def _place(self, job: Job) -> bool:
        """Start the job in the free slot that already holds most of its prompt; False when there is no room yet."""
        free = [s for s in self._slots if s.job is None]
        limit = len(job.tokens) - 1  # at least one token is evaluated: its logits give the first token
        held = {s.seq: min(common_prefix(s.tokens, job.tokens), limit) for s in free}
        best = max(free, key=lambda s: (held[s.seq], -s.last_used))
        reuse = held[best.seq]
        from_prefix = min(common_prefix(self._prefix, job.tokens), limit)
        use_prefix = from_prefix > reuse
        if use_prefix:  # start from the shared prefix, in the free slot whose cache is oldest
            best, reuse = min(free, key=lambda s: (bool(s.tokens), s.last_used)), from_prefix
            shared = reuse
        else:
            if reuse == limit and len(best.tokens) > limit:
                # The same prompt again: its last token is evaluated again in the chunk it was first evaluated
                # in, so its logits (and the answer) are exactly those of the first time.
                reuse = max((c for c in best.chunks if c <= reuse), default=reuse)
            shared = min(best.shared, reuse)
        after = self._used() - best.own_cells + (reuse - shared)
        need = len(job.tokens) - reuse + job.max_tokens
        others = sorted((s for s in free if s is not best and s.tokens), key=lambda s: s.last_used)
        while after + self._reserved() + need > self.engine.n_ctx and others:
            victim = others.pop(0)  # the oldest conversation's cache goes first
            after -= victim.own_cells
            self.engine.remove(victim.seq)
            victim.tokens, victim.shared, victim.chunks = [], 0, []
        if after + self._reserved() + need > self.engine.n_ctx:
            if self._busy_slots():
                return False  # it waits for answers being written to end
            self._drop_waiting([job], BackendUnavailableError(  # it will never fit: say so rather than wait for ever
                f"the prompt ({len(job.tokens)} tokens) does not fit the context window ({self.engine.n_ctx})"))
            return True
        if use_prefix:
            self.engine.remove(best.seq)
            self.engine.share(PREFIX_SEQ, best.seq, reuse)
            best.tokens, best.chunks = self._prefix[:reuse], []
        else:
            self.engine.remove(best.seq, reuse, -1)
            best.tokens, best.chunks = best.tokens[:reuse], [c for c in best.chunks if c < reuse]
        best.shared = shared
        best.job, best.pending, best.next_token, best.generated = job, job.tokens[reuse:], None, 0
        best.sampler = self.engine.sampler(job.sampling)
        best.text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        job.reused = reuse
        self.stats["prompt_reused"] += reuse
        return True

    def _step(self) -> None:
        """Advance every answer being written by one token, and evaluate one chunk of a new prompt.

        `exact`: each sequence is its own llama_decode call, so every token is computed exactly as it would be
        alone (greedy answers do not depend on who else is asking). `fused`: all of them in one call, which
        reads the weights once per step; on a CPU whose cores are the limit it gains little, and its results
        change with the batch's size (logits up to 0.4 apart; see the README's figures).
        """
        writing = [s for s in self._slots if s.job is not None and s.next_token is not None]
        prompts = sorted((s for s in self._slots if s.job is not None and s.pending),
                         key=lambda s: s.job.submitted if s.job else 0.0)
        work: list[tuple[_Slot, list[int]]] = [(s, [s.next_token]) for s in writing if s.next_token is not None]
        if self.fused:
            room = self.engine.n_batch - len(work)
            for slot in prompts:
                if room > 0:
                    work.append((slot, slot.pending[:min(room, PROMPT_CHUNK)]))
                    room -= len(work[-1][1])
            self._evaluate(work)
        else:
            for one in work:
                self._evaluate([one])
            if prompts:  # the oldest question's next chunk; chunks are the same size alone or not
                self._evaluate([(prompts[0], prompts[0].pending[:PROMPT_CHUNK])])
        self.stats["steps"] += 1
        self.stats["max_batch"] = max(self.stats["max_batch"], len(writing))

    def _evaluate(self, work: list[tuple[_Slot, list[int]]]) -> None:
        """One llama_decode of these slots' tokens; then the next token of each slot whose prompt is complete."""
        items: list[Item] = []
        outputs: list[tuple[_Slot, int]] = []
        for slot, tokens in work:
            ends_prompt = not slot.pending or len(tokens) == len(slot.pending)
            start = len(slot.tokens)
            items.extend(Item(t, start + i, slot.seq, ends_prompt and i == len(tokens) - 1)
                         for i, t in enumerate(tokens))
            if ends_prompt:
                outputs.append((slot, len(items) - 1))
        try:
            self.engine.decode(items)
        except DecodeError as exc:
            self._decode_failed(exc, [slot for slot, _ in work])
            return
        for slot, tokens in work:
            if slot.pending:
                slot.chunks.append(len(slot.tokens))
            slot.tokens.extend(tokens)
            if slot.pending:
                del slot.pending[:len(tokens)]
                self.stats["prompt_evaluated"] += len(tokens)
        for slot, index in outputs:
            self._next(slot, index)

    def _next(self, slot: _Slot, index: int) -> None:
        job, sampler = slot.job, slot.sampler
        assert job is not None and sampler is not None
        token = sampler.sample(index)
        if self.engine.is_end(token):
            self._finish(slot)
            return
        slot.generated += 1
        self.stats["generated"] += 1
        text = slot.text.decode(self.engine.piece(token))
        if text:
            job.out.put(text)
        if slot.generated >= job.max_tokens:
            self._finish(slot)
        else:
            slot.next_token = token

    def _finish(self, slot: _Slot, error: BaseException | None = None) -> None:
        """The answer ends (done, cancelled or failed); the slot is free and keeps its cells as a cache."""
        job = slot.job
        if job is None:
            return
        if error is None and not job.cancelled:
            rest = slot.text.decode(b"", final=True)
            if rest:
                job.out.put(rest)
            self._answer_s = 0.8 * self._answer_s + 0.2 * (time.perf_counter() - job.submitted)
        if slot.pending:  # a prompt cut short: the cells hold exactly slot.tokens
            slot.pending = []
        if slot.sampler is not None:
            slot.sampler.close()
        slot.job, slot.sampler, slot.next_token, slot.text = None, None, None, None
        slot.last_used = time.perf_counter()
        job.done = True
        self._in_flight_done()  # before the caller hears the end: it may look at the counts at once
        job.out.put(error if error is not None else _END)

    def _in_flight_done(self) -> None:
        with self._cond:
            self._in_flight -= 1

    def _decode_failed(self, exc: DecodeError, slots: list[_Slot]) -> None:
        """No room in the cache, or a failed computation: those answers end with an error, their cells cleared."""
        why = ("the model's context is full; please try again" if exc.no_room
               else f"the local model failed ({exc})")
        log.warning("a batch of %d answers failed: %s", len(slots), exc)
        for slot in slots:
            self.engine.remove(slot.seq, len(slot.tokens), -1)
            self._finish(slot, BackendUnavailableError(why))

    def _fail_all(self, error: BaseException) -> None:
        for slot in self._busy_slots():
            self.engine.remove(slot.seq)
            slot.tokens, slot.shared, slot.chunks = [], 0, []
            self._finish(slot, error)
        with self._cond:
            waiting = list(self._waiting)
        self._drop_waiting(waiting, error)

    def _drop_waiting(self, jobs: list[Job], item: object) -> None:
        """Take jobs out of the line (not started): they end with `item` (the end, or an error)."""
        with self._cond:
            for job in jobs:
                self._waiting.remove(job)
                job.done = True
            self._in_flight -= len(jobs)
        for job in jobs:
            job.out.put(item)
