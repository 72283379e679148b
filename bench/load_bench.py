"""Load benchmark: many concurrent chat sessions against the real server for a fixed time, then requests per
second, latency and time to first text (p50/p95/p99) and errors by kind, as a table.

Starts `coach serve` in a subprocess on a free loopback port (its own data folder, a fresh index), waits until
/healthz says ready, warms it with a few questions, then runs the sessions and stops the server. Each session
is a loop of conversations drawn from ../shared/eval/*.jsonl and bench/extra_questions.jsonl: a single
question, or a conversation's turns asked one after the other as follow-ups (the history sent with each).
The bulk goes through the OpenAI-compatible API (`/v1/chat/completions`, streamed, read to `data: [DONE]`);
`--via ui` drives the page's `/chat` endpoint with gradio_client instead (one client per session).

    python bench/load_bench.py                                   # 30 sessions, extractive backend, 120 s
    python bench/load_bench.py --backend local                   # 4 sessions on the local model, 60 s
    python bench/load_bench.py --url http://127.0.0.1:7860/      # an already running server (loopback only)

Nothing leaves the machine: only loopback URLs are accepted. The run stops by itself: no request starts
after `--seconds`, the ones still running get `--grace` seconds, and the server it started is then stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

import httpx  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
QUESTION_FILES = [*sorted((ROOT.parent / "shared" / "eval").glob("*.jsonl")), ROOT / "bench" / "extra_questions.jsonl"]
DEFAULTS = {"extractive": {"sessions": 30, "seconds": 120.0, "concurrency": 4},
            "local": {"sessions": 4, "seconds": 60.0, "concurrency": 1}}


# -- what is asked --------------------------------------------------------------------------------------
def conversations(paths: list[Path]) -> list[list[str]]:
    """Every line of the question sets as a conversation: [question], or its turns in order."""
    found = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line) if line.strip() else {}
            turns = item.get("turns") or ([item["question"]] if item.get("question") else [])
            if turns:
                found.append([str(t) for t in turns])
    return found


# -- one request ----------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """One question asked: its kind (`ok` or the error's kind), whole time and time to the first answer text."""

    kind: str
    seconds: float
    first_text: float | None = None
    answer: str = ""
    retry_after: float = 0.0


def _status_kind(status: int) -> str:
    if status == 429:
        return "429 busy"
    if status == 503:
        return "503 not ready"
    return f"{status // 100}xx" if status >= 500 else f"{status} refused"


def ask_api(http: httpx.Client, url: str, history: list[dict[str, str]], question: str, timeout: float) -> Outcome:
    """One streamed /v1/chat/completions request, read to `data: [DONE]`."""
    body = {"model": "coach", "stream": True, "messages": [*history, {"role": "user", "content": question}]}
    start = time.perf_counter()
    first, text, done = None, "", False
    try:
        with http.stream("POST", f"{url}v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                retry = float(response.headers.get("retry-after", 0) or 0)
                return Outcome(_status_kind(response.status_code), time.perf_counter() - start, retry_after=retry)
            for line in response.iter_lines():
                if time.perf_counter() - start > timeout:
                    return Outcome("timeout", time.perf_counter() - start)
                if line == "data: [DONE]":
                    done = True
                    break
                if not line.startswith("data: {"):
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    return Outcome("error in stream", time.perf_counter() - start)
                choice = (data.get("choices") or [{}])[0]
                piece = choice.get("delta", {}).get("content") or ""
                if piece and first is None:
                    first = time.perf_counter() - start
                text = (choice.get("coach") or {}).get("replace") or text + piece
    except httpx.TimeoutException:
        return Outcome("timeout", time.perf_counter() - start)
    except httpx.TransportError as exc:
        return Outcome(f"connection ({type(exc).__name__})", time.perf_counter() - start)
    seconds = time.perf_counter() - start
    if not done:
        return Outcome("stream cut", seconds)
    if not text.strip():
        return Outcome("empty answer", seconds)
    return Outcome("ok", seconds, first, text)


def ask_ui(client: Any, question: str, timeout: float) -> Outcome:
    """One question through the page's `/chat` endpoint (gradio_client keeps the session's history)."""
    start = time.perf_counter()
    first = None
    try:
        job = client.submit(question, api_name="/chat")
        for output in job:  # each streamed step: (messages, status, details)
            details = output[2] if len(output) > 2 else None
            if first is None and isinstance(details, dict) and details.get("answer"):
                first = time.perf_counter() - start
            if time.perf_counter() - start > timeout:
                job.cancel()
                return Outcome("timeout", time.perf_counter() - start)
        _, _, details = job.result(timeout=timeout)
    except TimeoutError:
        return Outcome("timeout", time.perf_counter() - start)
    except Exception as exc:  # gradio_client raises its own types for a failed event
        return Outcome(f"ui error ({type(exc).__name__})", time.perf_counter() - start)
    seconds = time.perf_counter() - start
    if not isinstance(details, dict) or details.get("error"):
        return Outcome("error in answer", seconds)
    answer = str(details.get("answer") or "")
    return Outcome("ok" if answer.strip() else "empty answer", seconds, first, answer)


# -- sessions ---------------------------------------------------------------------------------------------
@dataclass
class Run:
    """What every session recorded."""

    outcomes: list[Outcome] = field(default_factory=list)
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)
            self.in_flight -= 1

    def started(self) -> None:
        with self.lock:
            self.in_flight += 1


def api_session(n: int, url: str, convs: list[list[str]], deadline: float, timeout: float, run: Run) -> None:
    """One person on the API: conversations one after the other until the deadline."""
    rng = random.Random(n)
    with httpx.Client(timeout=httpx.Timeout(timeout, connect=10)) as http:
        while time.monotonic() < deadline:
            history: list[dict[str, str]] = []
            for question in rng.choice(convs):
                if time.monotonic() >= deadline:
                    return
                run.started()
                outcome = ask_api(http, url, history, question, timeout)
                run.record(outcome)
                if outcome.kind != "ok":
                    # A busy server says when to come back; anything else: a short pause, then a new conversation.
                    time.sleep(min(outcome.retry_after or 0.5, max(0.0, deadline - time.monotonic())))
                    break
                history += [{"role": "user", "content": question}, {"role": "assistant", "content": outcome.answer}]


def ui_session(n: int, url: str, convs: list[list[str]], deadline: float, timeout: float, run: Run) -> None:
    """One person on the page's `/chat` endpoint: a new session for each conversation."""
    from gradio_client import Client

    rng = random.Random(n)
    try:
        client = Client(url, verbose=False)
    except Exception as exc:
        run.started()
        run.record(Outcome(f"ui connect ({type(exc).__name__})", 0.0))
        return
    while time.monotonic() < deadline:
        client.reset_session()
        for question in rng.choice(convs):
            if time.monotonic() >= deadline:
                return
            run.started()
            outcome = ask_ui(client, question, timeout)
            run.record(outcome)
            if outcome.kind != "ok":
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
                break


def load(url: str, convs: list[list[str]], sessions: int, seconds: float, grace: float, timeout: float,
         via: str) -> tuple[Run, float]:
    """Run the sessions for `seconds`; wait at most `grace` more for the answers in flight; (run, wall time)."""
    run = Run()
    target = api_session if via == "api" else ui_session
    start = time.monotonic()
    deadline = start + seconds
    threads = [threading.Thread(target=target, args=(n, url, convs, deadline, timeout, run), daemon=True)
               for n in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:  # daemon threads: one still stuck after the grace does not keep the process alive
        t.join(max(0.0, deadline + grace - time.monotonic()))
    return run, time.monotonic() - start


# -- the server -----------------------------------------------------------------------------------------
def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def coach_server(backend: str, concurrency: int, queue: int, startup: float) -> Iterator[str]:
    """`coach serve` on a free loopback port with its own data folder; yields its URL once /healthz says ready."""
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmp:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("COACH_", "OPENAI_"))}
        env.update({"COACH_DATA_DIR": str(Path(tmp) / "data"), "COACH_KNOWLEDGE_DIR": str(ROOT / "knowledge"),
                    "COACH_PROMPTS_DIR": str(ROOT / "prompts"), "COACH_MODELS_DIR": str(ROOT / "models"),
                    "COACH_CONCURRENCY": str(concurrency), "COACH_API_QUEUE": str(queue),
                    "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "ANONYMIZED_TELEMETRY": "False"})
        cache = ROOT / "data" / "kv-cache"
        if backend == "local" and cache.is_dir():  # the prepared prompt prefix (else ~80 s to build it once)
            env["COACH_KV_CACHE_DIR"] = str(cache)
        log_path = Path(tmp) / "server.log"
        command = [sys.executable, "-m", "coach.cli", "serve", "--backend", backend, "--host", "127.0.0.1",
                   "--port", str(port)]
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(command, cwd=tmp, env=env, stdout=log_file, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{port}/"
            try:
                wait_ready(url, proc, startup, log_path)
                yield url
            finally:
                stop(proc)


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None, seconds: float, log_path: Path | None = None) -> None:
    """Until /healthz answers 200 (index loaded, model warm); exits with the server's last words if it died."""
    deadline = time.monotonic() + seconds
    while True:
        if proc is not None and proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path else ""
            raise SystemExit(f"the server exited with {proc.returncode}:\n{tail}")
        try:
            if httpx.get(f"{url}healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"{url} was not ready within {seconds:.0f} s")
        time.sleep(0.5)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C, as a person would; killed if it has not ended 15 s later."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


# -- the figures --------------------------------------------------------------------------------------
def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    value = ordered[low] + (ordered[high] - ordered[low]) * (pos - low)
    return f"{value * 1000:,.0f} ms"


def table(label: str, run: Run, wall: float, seconds: float) -> str:
    """The figures of one run as a Markdown table, then the errors by kind."""
    ok = [o for o in run.outcomes if o.kind == "ok"]
    latency = [o.seconds for o in ok]
    first = [o.first_text for o in ok if o.first_text is not None]
    errors = Counter(o.kind for o in run.outcomes if o.kind != "ok")
    lines = [
        "| run | requests | answered | answered/s | latency p50 | p95 | p99 | first text p50 | p95 | p99 | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {label} | {len(run.outcomes)} | {len(ok)} | {len(ok) / seconds:.2f} | {_ms(latency, 50)} | "
        f"{_ms(latency, 95)} | {_ms(latency, 99)} | {_ms(first, 50)} | {_ms(first, 95)} | {_ms(first, 99)} | "
        f"{sum(errors.values())} |",
        "",
        "errors by kind: " + (", ".join(f"{kind} {n}" for kind, n in errors.most_common()) or "none")
        + f"; still unanswered when the run stopped: {max(0, run.in_flight)}",
        f"(the run took {wall:.1f} s wall time; mean latency "
        f"{statistics.fmean(latency) * 1000 if latency else 0:,.0f} ms)",
    ]
    return "\n".join(lines)


def warm(url: str, convs: list[list[str]], via: str, count: int, timeout: float) -> None:
    """A few questions first, not counted: the first answers of a fresh server pay for lazy loading."""
    if via == "ui":
        from gradio_client import Client

        client = Client(url, verbose=False)
        for conv in convs[:count]:
            client.reset_session()
            ask_ui(client, conv[0], timeout)
        return
    with httpx.Client(timeout=timeout) as http:
        for conv in convs[:count]:
            ask_api(http, url, [], conv[0], timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="extractive", choices=["extractive", "local"],
                        help="chat backend of the server started here (default: extractive)")
    parser.add_argument("--sessions", type=int, help="concurrent sessions (default: 30 extractive, 4 local)")
    parser.add_argument("--seconds", type=float, help="how long the load runs (default: 120 extractive, 60 local)")
    parser.add_argument("--via", choices=["api", "ui"], default="api",
                        help="api: /v1/chat/completions, streamed (default); ui: the page's /chat with gradio_client")
    parser.add_argument("--url", help="an already running server on loopback instead of starting one")
    parser.add_argument("--concurrency", type=int,
                        help="COACH_CONCURRENCY of the started server (default: 4 extractive, 1 local)")
    parser.add_argument("--queue", type=int, help="COACH_API_QUEUE of the started server (default: --sessions)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before one request counts as timed out")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds the answers in flight get after the end")
    parser.add_argument("--warmup", type=int, default=3, help="questions asked before the run, not counted")
    parser.add_argument("--startup", type=float, default=300.0, help="seconds the server gets to become ready")
    args = parser.parse_args(argv)
    defaults = DEFAULTS[args.backend]
    sessions = int(args.sessions or defaults["sessions"])
    seconds = float(args.seconds or defaults["seconds"])
    concurrency = int(args.concurrency or defaults["concurrency"])
    queue = args.queue if args.queue is not None else sessions
    convs = conversations(QUESTION_FILES)
    turns = sum(len(c) for c in convs)

    if args.url and (urlparse(args.url).hostname or "") not in ("127.0.0.1", "localhost", "::1"):
        parser.error(f"--url must be on loopback (127.0.0.1, localhost, ::1), not {args.url!r}")
    with ExitStack() as stack:
        if args.url:
            url = args.url.rstrip("/") + "/"
            wait_ready(url, None, args.startup)
        else:
            url = stack.enter_context(coach_server(args.backend, concurrency, queue, args.startup))
        warm(url, convs, args.via, args.warmup, args.timeout)
        where = args.url or f"`coach serve --backend {args.backend}`, COACH_CONCURRENCY={concurrency}, " \
                            f"COACH_API_QUEUE={queue}"
        print(f"\n## Load: {sessions} sessions for {seconds:.0f} s through "
              f"{'/v1/chat/completions (streamed)' if args.via == 'api' else 'the page /chat (gradio_client)'}\n")
        print(f"server: {where}; {len(convs)} conversations ({turns} questions) from "
              f"{', '.join(p.name for p in QUESTION_FILES)}; load average before "
              f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n")
        run, wall = load(url, convs, sessions, seconds, args.grace, args.timeout, args.via)
        label = f"{args.backend if not args.url else 'server'}, {sessions} sessions, {seconds:.0f} s"
        print(table(label, run, wall, seconds))
        print(f"(load average after: {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
