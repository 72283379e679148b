"""Concurrency benchmark: 1, 2, 4 and 8 conversations at once against the real server, before and after batching.

Issue 13's figures. Each configuration is its own `coach serve`, started in turn on a free loopback port with
its own data folder (the index built there from the knowledge folder) and the repository's data/kv-cache as
COACH_KV_CACHE_DIR (the prepared prompt prefix; each revision's key differs, so their files coexist):

- `lock`: the baseline revision (default 77fb04f: one answer at a time behind a lock), from a temporary
  `git worktree` with its own knowledge, prompts and a hard-linked copy of the models folder;
- `exact`: this working tree with COACH_BATCHING=exact (each sequence's token its own llama_decode call);
- `fused`: this working tree with COACH_BATCHING=fused (all sequences in one call).

Once /healthz says ready and a few questions have warmed it, each level runs `--conversations` conversations
(default 8), N at a time. A conversation is two questions from the public eval files: a conversation of the
files (its first two turns), else a question and the next question of the same file as a follow-up, the
first answer sent as history. Questions the model never sees (out of scope, injections, planning questions the
career planner's rules answer) are left out: they would measure the rules, not generation. Every answer goes
through `/v1/chat/completions` streamed with `stream_options.include_usage`, so the server's completion token
count comes back (the model's own count; an estimate from the text for answers it did not write).

    python bench/concurrency_bench.py                                  # lock, exact, fused at 1, 2, 4, 8
    python bench/concurrency_bench.py --configs exact,fused --levels 1,4
    python bench/concurrency_bench.py --backend extractive --configs exact   # the plumbing, in seconds

Per level: time to first text and whole answer (p50/p95), aggregate generated tokens per second (completion
tokens of the answers served over the level's wall time), answers and conversations served, errors by kind.
Then a comparison of the configurations and whether issue 13's targets hold as measured. Results, with every
answer's timings, go to bench/results/concurrency.json after each level (a partial run keeps what it measured).

The run stops by itself: no question starts after `--level-seconds` in a level, one answer gets at most
`--timeout` s, a server gets `--startup` s to become ready and is stopped (Ctrl-C, then killed) after its levels.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import load_bench  # noqa: E402  (starting, warming and stopping a server; the question files)
from eval_compare import _linked_models  # noqa: E402  (the models folder as hard links)
from load_bench import ROOT, free_port, stop, wait_ready  # noqa: E402

CONFIGS = ("lock", "exact", "fused")
RESULTS = ROOT / "bench" / "results" / "concurrency.json"
KV_CACHE = ROOT / "data" / "kv-cache"
MODEL_FREE_FILES = ("planning.jsonl",)  # answered by the career planner's rules with the local backend
TTFT_TARGET_S = 2.5
SPEEDUP_TARGET = 2.0
ERROR_KINDS = ("429 busy", "other HTTP", "stream error", "timeout", "connection", "stream cut", "empty answer")


def say(message: str) -> None:
    """Progress on stderr, so stdout keeps only the figures."""
    print(message, file=sys.stderr, flush=True)


# -- what is asked --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Conversation:
    """Two questions, the second asked with the first and its answer as history."""

    id: str
    turns: tuple[str, str]


def conversation_pool(paths: list[Path]) -> list[Conversation]:
    """The files' own conversations spread evenly among pairs of consecutive single questions of one file."""
    own: list[Conversation] = []
    pairs: list[Conversation] = []
    for path in paths:
        if path.name in MODEL_FREE_FILES:
            continue
        singles: list[tuple[str, str]] = []
        for line in path.read_text(encoding="utf-8").splitlines():
            item = json.loads(line) if line.strip() else {}
            if not item or item.get("out_of_scope") or item.get("injection"):
                continue
            ident = str(item.get("id", f"{path.stem}:{len(singles)}"))
            if len(item.get("turns") or []) >= 2:
                own.append(Conversation(ident, (str(item["turns"][0]), str(item["turns"][1]))))
            elif item.get("question"):
                singles.append((ident, str(item["question"])))
        pairs += [Conversation(f"{a[0]}+{b[0]}", (a[1], b[1])) for a, b in zip(singles[::2], singles[1::2],
                                                                                strict=False)]
    pool = list(pairs)
    for n, conv in enumerate(own):  # every level gets some of the files' real follow-ups
        pool.insert(round(n * len(pool) / max(1, len(own))) + n, conv)
    return pool


# -- one answer ----------------------------------------------------------------------------------------
@dataclass
class Reply:
    """One question asked: `ok` or an error kind, its timings (s, from the level's start) and completion tokens."""

    conversation: str
    turn: int
    kind: str = "ok"
    detail: str = ""
    started: float = 0.0
    first_text: float | None = None  # time to the first answer text, from this question's start
    seconds: float = 0.0
    completion_tokens: int = 0
    text: str = field(default="", repr=False)


def sse(response: httpx.Response) -> Iterator[dict[str, Any] | None]:
    """The stream's JSON events in order; None for `data: [DONE]`."""
    for line in response.iter_lines():
        if line == "data: [DONE]":
            yield None
            return
        if line.startswith("data: {"):
            yield json.loads(line[len("data: "):])


def ask(http: httpx.Client, url: str, history: list[dict[str, str]], question: str, reply: Reply,
        timeout: float) -> Reply:
    """Stream one answer into `reply`: text, time to first text, whole time, usage, or what went wrong."""
    body = {"model": "coach", "stream": True, "stream_options": {"include_usage": True},
            "messages": [*history, {"role": "user", "content": question}]}
    t0 = time.perf_counter()
    ended = False
    try:
        with http.stream("POST", f"{url}v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                reply.kind = "429 busy" if response.status_code == 429 else "other HTTP"
                reply.detail = f"HTTP {response.status_code}"
            else:
                for event in sse(response):
                    if event is None:
                        ended = True
                        break
                    if "error" in event:
                        reply.kind, reply.detail = "stream error", str(event["error"].get("message", ""))[:200]
                        break
                    if event.get("usage"):
                        reply.completion_tokens = int(event["usage"].get("completion_tokens") or 0)
                    choice = (event.get("choices") or [{}])[0]
                    piece = (choice.get("delta") or {}).get("content") or ""
                    if piece and reply.first_text is None:
                        reply.first_text = time.perf_counter() - t0
                    # a revision after the final checks carries the whole corrected text
                    reply.text = (choice.get("coach") or {}).get("replace") or reply.text + piece
                    if time.perf_counter() - t0 > timeout:
                        reply.kind, reply.detail = "timeout", f"over {timeout:g} s"
                        break
    except httpx.TimeoutException:
        reply.kind, reply.detail = "timeout", f"silent for {timeout:g} s"
    except httpx.TransportError as exc:
        reply.kind, reply.detail = "connection", type(exc).__name__
    reply.seconds = time.perf_counter() - t0
    if reply.kind == "ok" and not ended:
        reply.kind = "stream cut"
    elif reply.kind == "ok" and not reply.text.strip():
        reply.kind = "empty answer"
    return reply


# -- one level --------------------------------------------------------------------------------------------
def run_level(url: str, at_once: int, convs: list[Conversation], seconds: float, timeout: float
              ) -> tuple[list[Reply], float]:
    """`at_once` people, each taking the next conversation until none is left or `seconds` have passed."""
    todo = deque(convs)
    replies: list[Reply] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + seconds

    def person() -> None:
        with httpx.Client(timeout=httpx.Timeout(timeout, connect=10)) as http:
            while True:
                with lock:
                    if not todo or time.perf_counter() >= deadline:
                        return
                    conv = todo.popleft()
                history: list[dict[str, str]] = []
                for turn, question in enumerate(conv.turns):
                    if time.perf_counter() >= deadline:
                        break
                    reply = Reply(conv.id, turn, started=time.perf_counter() - start)
                    ask(http, url, history, question, reply, timeout)
                    with lock:
                        replies.append(reply)
                    if reply.kind != "ok":
                        break
                    history += [{"role": "user", "content": question}, {"role": "assistant", "content": reply.text}]

    people = [threading.Thread(target=person, daemon=True) for _ in range(at_once)]
    for p in people:
        p.start()
    for p in people:  # a read that stays silent ends after `timeout`; daemon threads never keep the process
        p.join(max(0.0, deadline + 2 * timeout + 10 - time.perf_counter()))
    with lock:
        done = list(replies)
    wall = max((r.started + r.seconds for r in done), default=time.perf_counter() - start)
    return done, wall


def quantile(values: list[float], q: float) -> float | None:
    """The q-th percentile, linear between the two nearest values; None for no values."""
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarise(at_once: int, convs: list[Conversation], replies: list[Reply], wall: float) -> dict[str, Any]:
    """The figures of one level."""
    ok = [r for r in replies if r.kind == "ok"]
    first = [r.first_text for r in ok if r.first_text is not None]
    whole = [r.seconds for r in ok]
    served = Counter(r.conversation for r in ok)
    tokens = sum(r.completion_tokens for r in ok)
    errors = Counter(r.kind for r in replies if r.kind != "ok")
    return {
        "at_once": at_once, "conversations": len(convs),
        "conversations_served": sum(1 for c in convs if served[c.id] >= len(c.turns)),
        "conversations_started": len({r.conversation for r in replies}),
        "answers_asked": len(replies), "answers_served": len(ok),
        "ttft_p50_s": quantile(first, 50), "ttft_p95_s": quantile(first, 95),
        "answer_p50_s": quantile(whole, 50), "answer_p95_s": quantile(whole, 95),
        "completion_tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": tokens / wall if wall > 0 else None,
        "errors": {kind: errors[kind] for kind in ERROR_KINDS if errors[kind]},
    }


# -- the servers ------------------------------------------------------------------------------------------
@contextmanager
def baseline_checkout(revision: str, work: Path) -> Iterator[tuple[Path, Path]]:
    """The revision's code in a temporary worktree and a models folder of hard links it verified itself."""
    found = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"], cwd=ROOT,
                           capture_output=True, text=True, check=False)
    if found.returncode != 0:
        raise SystemExit(f"--baseline {revision!r} is not a commit of this repository")
    tree = work / "baseline"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), found.stdout.strip()], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        models = _linked_models(work / "models-lock")
        env = {**os.environ, "PYTHONPATH": str(tree / "src"), "COACH_MODELS_DIR": str(models), "HF_HUB_OFFLINE": "1"}
        done = subprocess.run([sys.executable, "-m", "coach.cli", "models", "install"], cwd=work, env=env,
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the baseline's `coach models install` failed: {done.stderr.strip()[-400:]}")
        yield tree, models
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False,
                       capture_output=True)


def server_env(config: str, source: Path, models: Path, data: Path, args: argparse.Namespace) -> dict[str, str]:
    """The started server's environment: none of the caller's COACH_ or OPENAI_ settings, the bench's instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COACH_", "OPENAI_"))}
    settings = {
        "DATA_DIR": data, "KNOWLEDGE_DIR": source / "knowledge", "PROMPTS_DIR": source / "prompts",
        "MODELS_DIR": models, "KV_CACHE_DIR": KV_CACHE, "BACKEND": args.backend,
        "CONCURRENCY": args.concurrency, "API_QUEUE": args.api_queue,
    }
    if config != "lock":
        settings["BATCHING"] = config
        settings.update({k: v for k, v in (("PARALLEL", args.parallel), ("QUEUE", args.queue)) if v is not None})
    env.update({f"COACH_{name}": str(value) for name, value in settings.items()})
    env.update(PYTHONPATH=str(source / "src"), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False",
               ANONYMIZED_TELEMETRY="False")
    return env


@contextmanager
def started(config: str, source: Path, models: Path, work: Path, args: argparse.Namespace
            ) -> Iterator[tuple[str, float]]:
    """`coach serve` of `source` for one configuration; yields its URL and seconds to ready, then stops it."""
    port = free_port()
    log_path = work / f"server-{config}.log"
    command = [sys.executable, "-m", "coach.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    env = server_env(config, source, models, work / f"data-{config}", args)
    t0 = time.perf_counter()
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(command, cwd=work, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_ready(url, proc, args.startup, log_path)
            yield url, time.perf_counter() - t0
        finally:
            stop(proc)


# -- the figures ----------------------------------------------------------------------------------------------
def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


LEVEL_HEADER = ("| config | at once | first text p50 | p95 | whole answer p50 | p95 | tok/s | answers served "
                "| conversations served | 429 busy | other HTTP | stream error | other errors |\n"
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")


def level_row(config: str, s: dict[str, Any]) -> str:
    """One level's figures as a row under LEVEL_HEADER."""
    errors = dict(s["errors"])
    named = [errors.pop(kind, 0) for kind in ("429 busy", "other HTTP", "stream error")]
    rest = ", ".join(f"{kind} {n}" for kind, n in errors.items()) or "0"
    return (f"| {config} | {s['at_once']} | {secs(s['ttft_p50_s'])} | {secs(s['ttft_p95_s'])} "
            f"| {secs(s['answer_p50_s'])} | {secs(s['answer_p95_s'])} | {rate(s['tokens_per_s'])} "
            f"| {s['answers_served']}/{s['answers_asked']} | {s['conversations_served']}/{s['conversations']} "
            f"| {named[0]} | {named[1]} | {named[2]} | {rest} |")


def targets(levels: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Issue 13's targets for one configuration, as measured: None where a level was not run."""
    single, four, eight = levels.get(1), levels.get(4), levels.get(8)
    ratio = (four["tokens_per_s"] / single["tokens_per_s"]
             if single and four and single["tokens_per_s"] and four["tokens_per_s"] is not None else None)
    ttft_ok = None if four is None else (four["ttft_p95_s"] is not None and four["ttft_p95_s"] <= TTFT_TARGET_S)
    eight_ok = None if eight is None else (not eight["errors"]
                                           and eight["conversations_served"] == eight["conversations"])
    return {"ratio_4_to_1": ratio, "ttft_p95_at_4_ok": ttft_ok,
            "tokens_at_4_ok": None if ratio is None else ratio >= SPEEDUP_TARGET, "at_8_ok": eight_ok}


def verdict(ok: bool | None, figure: str = "") -> str:
    if ok is None:
        return "not measured"
    return ("met" if ok else "not met") + (f" ({figure})" if figure else "")


def comparison(results: dict[str, dict[str, Any]], levels: list[int]) -> str:
    """Per level, each configuration's TTFT p95 and tok/s; then each one's targets."""
    names = [c for c in results if results[c]["levels"]]
    lines = ["| at once | " + " | ".join(f"{c}: first text p95 | {c}: tok/s" for c in names) + " |",
             "|---:|" + "---:|---:|" * len(names)]
    for n in levels:
        cells = []
        for c in names:
            s = results[c]["levels"].get(n)
            cells += [secs(s["ttft_p95_s"]), rate(s["tokens_per_s"])] if s else ["-", "-"]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    lines += ["", f"| config | tok/s at 4 / at 1 | 4 at once: first text p95 <= {TTFT_TARGET_S} s "
              f"| 4 at once: tok/s >= {SPEEDUP_TARGET:g}x single | 8 at once: no errors, every conversation served |",
              "|---|---:|---|---|---|"]
    for c in names:
        t, by_level = results[c]["targets"], results[c]["levels"]
        four, eight = by_level.get(4), by_level.get(8)
        ratio = "-" if t["ratio_4_to_1"] is None else f"{t['ratio_4_to_1']:.2f}x"
        at_4 = secs(four["ttft_p95_s"]) if four else ""
        at_8 = (f"{eight['conversations_served']}/{eight['conversations']} served, "
                f"{sum(eight['errors'].values())} errors") if eight else ""
        lines.append(f"| {c} | {ratio} | {verdict(t['ttft_p95_at_4_ok'], at_4)} | {verdict(t['tokens_at_4_ok'])} "
                     f"| {verdict(t['at_8_ok'], at_8)} |")
    return "\n".join(lines)


def write(data: dict[str, Any], path: Path) -> None:
    """The results so far, replaced whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    part.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    part.replace(path)


def revision() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=False).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True,
                           text=True, check=False).stdout.strip()
    return head + (" with uncommitted changes in src/" if dirty else "")


# -- the run ------------------------------------------------------------------------------------------------
def run_config(config: str, source: Path, models: Path, work: Path, pool: list[Conversation],
               args: argparse.Namespace, out: dict[str, Any]) -> None:
    """Start the configuration's server, warm it, run every level, record as it goes."""
    record: dict[str, Any] = {"source": str(source), "levels": {}, "replies": {}, "load_average_start":
                              round(os.getloadavg()[0], 2)}
    out["configs"][config] = record
    say(f"--- {config}: starting `coach serve` ({source}) ...")
    try:
        with started(config, source, models, work, args) as (url, ready_s):
            record["ready_s"] = round(ready_s, 1)
            say(f"{config}: ready in {ready_s:.0f} s; warming with {args.warmup} question(s)")
            load_bench.warm(url, [list(c.turns) for c in pool[-args.warmup:]] if args.warmup else [], "api",
                            args.warmup, args.timeout)
            for n in args.levels:
                # The same conversations at every level: the work is the same, only how many ask at once changes
                # (so tok/s at 4 over tok/s at 1 compares like with like).
                count = max(n, args.conversations)
                convs = [pool[i % len(pool)] for i in range(count)]
                say(f"{config}: {n} at once, {count} conversations (load average {os.getloadavg()[0]:.2f})")
                replies, wall = run_level(url, n, convs, args.level_seconds, args.timeout)
                summary = summarise(n, convs, replies, wall)
                record["levels"][n] = summary
                record["replies"][n] = [{k: v for k, v in asdict(r).items() if k != "text"} for r in replies]
                print(level_row(config, summary), flush=True)
                write(out, args.out)
            try:
                record["health"] = httpx.get(f"{url}healthz", timeout=10).json()
            except (httpx.HTTPError, ValueError):
                pass
    except SystemExit as exc:  # the server did not start: the other configurations still run
        record["error"] = str(exc)[-2000:]
        say(f"{config}: {record['error']}")
        print(f"| {config} | server did not start: see {args.out.name} | | | | | | | | | | | |", flush=True)
    log_path = work / f"server-{config}.log"
    if log_path.exists():  # its warnings (a failed batch, a restored or rebuilt prefix) explain odd figures
        record["server_log_tail"] = log_path.read_text(errors="replace")[-3000:]
    record["load_average_end"] = round(os.getloadavg()[0], 2)
    record["targets"] = targets(record["levels"])
    write(out, args.out)


def parse_list(text: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items or (allowed and any(t not in allowed for t in items)):
        raise argparse.ArgumentTypeError(f"a comma-separated list of {', '.join(allowed or ('numbers',))}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=lambda t: parse_list(t, CONFIGS), default=list(CONFIGS),
                        help="which servers, in this order (default: lock,exact,fused)")
    parser.add_argument("--levels", type=lambda t: [int(x) for x in parse_list(t)], default=[1, 2, 4, 8],
                        help="conversations at once (default: 1,2,4,8)")
    parser.add_argument("--baseline", default="77fb04f", help="revision of `lock` (default: 77fb04f)")
    parser.add_argument("--backend", default="local", choices=["local", "extractive"],
                        help="chat backend of every server (default: local; extractive tests the plumbing)")
    parser.add_argument("--conversations", type=int, default=8,
                        help="conversations per level, at least the level (default: 8)")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="COACH_CONCURRENCY of every server: the API admits this many answers at once for the "
                             "local backend, the rest wait in COACH_API_QUEUE (default: 4, COACH_PARALLEL's default)")
    parser.add_argument("--api-queue", type=int, default=8, help="COACH_API_QUEUE of every server (default: 8)")
    parser.add_argument("--parallel", type=int, help="COACH_PARALLEL of exact and fused (default: the server's)")
    parser.add_argument("--queue", type=int, help="COACH_QUEUE of exact and fused (default: the server's)")
    parser.add_argument("--level-seconds", type=float, default=300.0,
                        help="no question starts after this many seconds of a level (default: 300)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds one answer may take (default: 120)")
    parser.add_argument("--warmup", type=int, default=2, help="questions asked first, not counted (default: 2)")
    parser.add_argument("--startup", type=float, default=600.0,
                        help="seconds a server gets to become ready (default: 600; a prefix not yet on disk takes "
                             "about 100 s to prepare)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    args = parser.parse_args(argv)
    if min(args.levels) < 1 or args.conversations < 1:
        parser.error("levels and --conversations must be at least 1")

    pool = conversation_pool(load_bench.QUESTION_FILES)
    out: dict[str, Any] = {"meta": {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"), "revision": revision(), "baseline": args.baseline,
        "backend": args.backend, "configs": args.configs, "levels": args.levels,
        "conversations_per_level": args.conversations, "conversation_pool": len(pool),
        "question_files": [p.name for p in load_bench.QUESTION_FILES if p.name not in MODEL_FREE_FILES],
        "server_settings": {"COACH_CONCURRENCY": args.concurrency, "COACH_API_QUEUE": args.api_queue,
                            "COACH_PARALLEL": args.parallel, "COACH_QUEUE": args.queue,
                            "COACH_KV_CACHE_DIR": str(KV_CACHE)},
        "level_seconds": args.level_seconds, "timeout_s": args.timeout, "python": platform.python_version(),
        "cpus": os.cpu_count(), "load_average_start": round(os.getloadavg()[0], 2)}, "configs": {}}

    print(f"\n## Concurrency: {', '.join(args.configs)} at {', '.join(map(str, args.levels))} conversations at once "
          f"({args.backend} backend)\n")
    print(f"{len(pool)} two-question conversations from {', '.join(out['meta']['question_files'])}; "
          f"{args.conversations} per level (at least the level); this tree {out['meta']['revision']}, lock = "
          f"{args.baseline}; COACH_CONCURRENCY={args.concurrency}, COACH_API_QUEUE={args.api_queue}; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores at the start\n")
    print(LEVEL_HEADER, flush=True)
    with tempfile.TemporaryDirectory(prefix="concurrency-bench-") as tmp:
        work = Path(tmp)
        for config in args.configs:
            if config == "lock":
                with baseline_checkout(args.baseline, work) as (tree, models):
                    run_config(config, tree, models, work, pool, args, out)
            else:
                run_config(config, ROOT, ROOT / "models", work, pool, args, out)
    out["meta"]["load_average_end"] = round(os.getloadavg()[0], 2)
    write(out, args.out)

    print("\n### Comparison\n")
    print(comparison(out["configs"], args.levels))
    print(f"\nTok/s: completion tokens of the answers served over the level's wall time (first question sent to "
          f"last answer ended). First text: from sending the question to the first piece of answer text. Figures "
          f"from one run on a shared machine (load average {out['meta']['load_average_start']} at the start, "
          f"{out['meta']['load_average_end']} at the end on {os.cpu_count()} cores); compare medians, and rerun "
          f"before drawing a conclusion.")
    print(f"Every answer's timings: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
