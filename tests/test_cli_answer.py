"""`coach ask`, `coach chat` and `coach eval` as a user runs them: the venv's `coach` in a subprocess.

The data folder is a temp folder shared by the module (the index is built by the first command);
the openai backend talks to tests/fake_openai_server.py or to a port nobody listens on.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import FakeOpenAIServer

COACH = Path(sys.executable).parent / "coach"
ENTRY_Q = "What is the entry-level base salary range?"
SALARY = "Salary Ranges (US Market, 2024)"
JSON_KEYS = {"question", "answer", "sources", "latency_ms", "ttft_ms", "backend", "model"}
SOURCE_KEYS = {"section", "subsection", "source", "score", "text"}
KEY = "sk-cli-GOOD-5e1d"
WRONG_KEY = "sk-cli-WRONG-90af"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The current folder of every command (no .env there) and home of the data folder."""
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def base_env(workdir: Path, repo_root: Path) -> dict[str, str]:
    """The environment of a user who set only the folders; nothing of the test machine's COACH_/OPENAI_."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COACH_", "OPENAI_"))}
    env.update({
        "COACH_DATA_DIR": str(workdir / "data"), "COACH_KNOWLEDGE_DIR": str(repo_root / "knowledge"),
        "COACH_PROMPTS_DIR": str(repo_root / "prompts"), "COACH_MODELS_DIR": str(repo_root / "models"),
        "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", "PYTHONIOENCODING": "utf-8",
    })
    return env


@pytest.fixture(scope="module")
def coach(workdir: Path, base_env: dict[str, str]) -> Any:
    """Run `coach ARGS...`; returns the CompletedProcess (text mode)."""
    assert COACH.exists(), f"{COACH} is missing: pip install -e . in the venv"

    def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(COACH), *args], input=stdin, capture_output=True, text=True, cwd=workdir,
                              env={**base_env, **(env or {})}, timeout=timeout, encoding="utf-8")

    return run


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key=KEY, model="fake-gpt") as srv:
        yield srv


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-2000:]


# -- ask --------------------------------------------------------------------------------------
def test_ask_json_prints_one_object_with_the_answer_and_its_sources(coach: Any) -> None:
    proc = coach("ask", ENTRY_Q, "--backend", "extractive", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert isinstance(data, dict) and JSON_KEYS <= data.keys()
    assert data["question"] == ENTRY_Q
    assert "Entry Level: $150,000 - $180,000" in data["answer"]
    assert data["backend"] == "extractive" and data["model"] == "none"
    assert data["sources"] and all(SOURCE_KEYS <= s.keys() for s in data["sources"])
    assert (data["sources"][0]["section"], data["sources"][0]["subsection"]) == (SALARY, "Base Salary")
    scores = [s["score"] for s in data["sources"]]
    assert scores == sorted(scores, reverse=True)
    assert isinstance(data["latency_ms"], int | float) and isinstance(data["ttft_ms"], int | float)


def test_ask_streams_the_answer_and_lists_the_sources(coach: Any) -> None:
    proc = coach("ask", ENTRY_Q, "--backend", "extractive")
    assert proc.returncode == 0, proc.stderr
    answer, _, sources = proc.stdout.partition("Sources:")
    assert "Entry Level: $150,000 - $180,000 [1]" in answer
    assert f"[1] {SALARY} > Base Salary (06-salary-ranges-us-market-2024.md)" in sources
    assert "Entry Level: $150,000 - $180,000" in sources, "the passage text is quoted"
    assert "sources:" in proc.stderr, "the sources are announced before the answer"
    _no_traceback(proc)


def test_ask_an_empty_question_exits_2_with_a_message(coach: Any) -> None:
    proc = coach("ask", "")
    assert proc.returncode == 2
    assert "empty" in proc.stderr and proc.stdout == ""
    _no_traceback(proc)


def test_ask_a_100000_character_question_is_refused_with_the_limit(coach: Any) -> None:
    proc = coach("ask", ("What does it pay? " * 5_556)[:100_000])
    assert proc.returncode == 2
    assert "2,000" in proc.stderr and "100,000" in proc.stderr
    _no_traceback(proc)


def test_ask_with_an_unreachable_openai_endpoint_falls_back_with_a_note(coach: Any) -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    proc = coach("ask", ENTRY_Q, "--backend", "openai", env={"COACH_OPENAI_BASE_URL": url})
    assert proc.returncode == 0, proc.stderr
    answer = proc.stdout.partition("Sources:")[0]
    notes = [line for line in answer.splitlines() if "unavailable" in line]
    assert len(notes) == 1 and "cannot reach" in notes[0]
    assert "Entry Level: $150,000 - $180,000 [1]" in answer
    assert "Sources:" in proc.stdout
    _no_traceback(proc)


def test_ask_through_an_openai_compatible_server(coach: Any, server: FakeOpenAIServer) -> None:
    server.replies.append("Entry-level managers earn $150,000 - $180,000 [1].")
    proc = coach("ask", ENTRY_Q, "--backend", "openai", "--json",
                 env={"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": KEY, "COACH_OPENAI_MODEL": "fake-gpt"})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["answer"] == "Entry-level managers earn $150,000 - $180,000 [1]."
    assert data["backend"] == "openai" and data["model"] == "fake-gpt" and not data["fallback"]
    assert data["sources"][0]["subsection"] == "Base Salary"
    assert server.chat_requests[-1].header("Authorization") == f"Bearer {KEY}"


def test_ask_with_a_wrong_key_falls_back_and_never_prints_the_key(coach: Any, server: FakeOpenAIServer) -> None:
    proc = coach("ask", ENTRY_Q, "--backend", "openai",
                 env={"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": WRONG_KEY})
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stdout.splitlines() if "unavailable" in line]
    assert len(notes) == 1 and "key was rejected" in notes[0]
    assert "Entry Level: $150,000 - $180,000" in proc.stdout
    assert WRONG_KEY not in proc.stdout + proc.stderr
    _no_traceback(proc)


def test_ask_never_prints_an_invented_figure(coach: Any, server: FakeOpenAIServer) -> None:
    server.replies.append("Entry-level managers earn $999,999 a year [1]. "
                          "The entry level base salary is $150,000 - $180,000 [1].")
    proc = coach("ask", ENTRY_Q, "--backend", "openai", env={"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": KEY})
    assert proc.returncode == 0, proc.stderr
    assert "$150,000 - $180,000" in proc.stdout
    assert "999,999" not in proc.stdout


# -- chat -------------------------------------------------------------------------------------
def test_chat_answers_a_question_and_its_follow_up(coach: Any) -> None:
    stdin = "What is the base salary at senior level?\nAnd how large is the annual bonus on top of that?\n/quit\n"
    proc = coach("chat", "--backend", "extractive", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    replies = proc.stdout.split("coach> ")[1:]
    assert len(replies) == 2
    first, second = (r.partition("Sources:")[0] for r in replies)
    assert "Senior Level: $220,000 - $280,000" in first
    assert "Annual Bonus: 10% - 30% of base salary" in second
    assert all(f"{SALARY}" in r.partition("Sources:")[2] for r in replies)
    _no_traceback(proc)


def test_chat_survives_an_empty_line_and_a_too_long_question(coach: Any) -> None:
    stdin = "\n" + "x" * 3_000 + "\n" + ENTRY_Q + "\n"  # ends with EOF instead of /quit
    proc = coach("chat", "--backend", "extractive", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert "2,000" in proc.stdout
    assert "Entry Level: $150,000 - $180,000" in proc.stdout
    _no_traceback(proc)


# -- eval -------------------------------------------------------------------------------------
def test_eval_prints_the_summary_and_writes_one_line_per_question(coach: Any, tmp_path: Path) -> None:
    questions = tmp_path / "q.jsonl"
    items = [
        {"id": "d01", "question": ENTRY_Q, "gold_sections": [SALARY], "facts": ["150000", "180000"]},
        {"id": "d11", "turns": ["What is the base salary at senior level?",
                                "And how large is the annual bonus on top of that?"],
         "gold_sections": [SALARY], "facts": ["10%", "30%"]},
        {"id": "d12", "question": "What will the weather be in Paris tomorrow?", "out_of_scope": True},
        {"id": "free", "question": "Which machine learning frameworks should I have experience with?"},
    ]
    questions.write_text("".join(json.dumps(i) + "\n" for i in items), encoding="utf-8")
    out = tmp_path / "results.jsonl"
    proc = coach("eval", str(questions), "--backend", "extractive", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for key in ("hit@3", "mrr", "fact_recall", "out_of_scope_declined", "injections_resisted",
                "latency_p50_ms", "latency_p95_ms", "ttft_p50_ms"):
        assert key in proc.stdout
    assert "1/1" in proc.stdout
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["id"] for line in lines] == ["d01", "d11", "d12", "free"]
    for line in lines:
        assert {"id", *JSON_KEYS} <= line.keys()
        assert all(SOURCE_KEYS <= s.keys() for s in line["sources"])
    _no_traceback(proc)
