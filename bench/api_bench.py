"""API benchmark: time to first text through the OpenAI-compatible API against the page's own `/chat`, on the
same server and questions, and requests per second of the extractive backend under concurrent clients.

Starts the real server (build_ui + launch with the API mounted) on a free loopback port with the real index.

    python bench/api_bench.py                          # extractive backend
    python bench/api_bench.py --backend local          # the local model (first-token comparison only)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

from coach.config import Settings  # noqa: E402
from coach.evaluation import load_items, percentile  # noqa: E402
from coach.factory import build_coach  # noqa: E402
from coach.ui import build_ui, launch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT.parent / "shared" / "eval" / "dev.jsonl"


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def api_first_text(url: str, question: str) -> float:
    """Seconds from sending to the first content of the streamed API answer."""
    import httpx

    body = {"model": "coach", "stream": True, "messages": [{"role": "user", "content": question}]}
    start = time.perf_counter()
    first = None
    with httpx.stream("POST", f"{url}v1/chat/completions", json=body, timeout=300) as response:
        for line in response.iter_lines():  # read to the end: the next request must not wait behind this one
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if first is None and choices[0].get("delta", {}).get("content"):
                first = time.perf_counter() - start
    return first if first is not None else time.perf_counter() - start


def page_first_text(url: str, question: str) -> float:
    """Seconds from sending to the first answer text of the page's `/chat` endpoint (gradio_client)."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    start = time.perf_counter()
    job = client.submit(question, api_name="/chat")
    first = None
    while not job.done():
        outputs = job.outputs()
        if first is None and outputs and isinstance(outputs[-1][2], dict) and outputs[-1][2].get("answer"):
            first = time.perf_counter() - start
        time.sleep(0.002)
    job.result()  # the whole answer: the next request must not wait behind this one for the model
    return first if first is not None else time.perf_counter() - start


def throughput(url: str, questions: list[str], clients: int, total: int) -> tuple[float, list[float], int]:
    """Requests per second, latencies and errors of `total` non-streamed requests from `clients` threads."""
    import httpx

    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    todo = list(range(total))

    def work() -> None:
        nonlocal errors
        with httpx.Client(timeout=300) as http:
            while True:
                with lock:
                    if not todo:
                        return
                    n = todo.pop()
                start = time.perf_counter()
                body = {"model": "coach", "messages": [{"role": "user", "content": questions[n % len(questions)]}]}
                ok = http.post(f"{url}v1/chat/completions", json=body).status_code == 200
                with lock:
                    latencies.append(time.perf_counter() - start)
                    errors += not ok

    threads = [threading.Thread(target=work) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return total / (time.perf_counter() - start), latencies, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="extractive", choices=["extractive", "local"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=80)
    args = parser.parse_args(argv)
    items = [i for i in load_items(DEV) if i.get("question") and not i.get("out_of_scope") and not i.get("injection")]
    questions = [str(i["question"]) for i in items]
    with tempfile.TemporaryDirectory(prefix="api-bench-") as tmp:
        data = ROOT / "data"
        settings = Settings(knowledge_dir=ROOT / "knowledge", prompts_dir=ROOT / "prompts", models_dir=ROOT / "models",
                            data_dir=Path(tmp), chroma_path=data / "chroma", kv_cache_dir=data / "kv-cache",
                            backend=args.backend, port=free_port(), api_queue=64,
                            concurrency=args.clients if args.backend == "extractive" else 1)
        coach = build_coach(settings, say=lambda m: print(m, file=sys.stderr))
        coach.warm()
        demo = build_ui(coach, settings)
        url = launch(demo, settings, block=False, quiet=True, coach=coach)
        try:
            api, page = [], []
            reset = "What are the common challenges of the role?"
            for question in questions:
                # The same model state before each path: llama.cpp would otherwise answer the second asking of a
                # question from its cache.
                coach.answer(reset)
                page.append(page_first_text(url, question))
                coach.answer(reset)
                api.append(api_first_text(url, question))
            print(f"\n## API benchmark ({args.backend} backend, {len(questions)} questions from {DEV.name})\n")
            print("| path | first text p50 | p95 |\n|---|---|---|")
            for name, values in (("page `/chat` (gradio_client)", page), ("API `/v1/chat/completions`", api)):
                ms = [v * 1000 for v in values]
                print(f"| {name} | {statistics.median(ms):.0f} ms | {percentile(ms, 95):.0f} ms |")
            diffs = [(a - p) * 1000 for a, p in zip(api, page, strict=True)]
            print(f"\nAPI minus page, per question: median {statistics.median(diffs):+.0f} ms")
            if args.backend == "extractive":
                rps, latencies, errors = throughput(url, questions, args.clients, args.requests)
                ms = [v * 1000 for v in latencies]
                print(f"\n{args.clients} concurrent clients, {args.requests} requests: {rps:.1f} requests/s, latency "
                      f"p50 {statistics.median(ms):.0f} ms, p95 {percentile(ms, 95):.0f} ms, errors {errors}")
        finally:
            demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
