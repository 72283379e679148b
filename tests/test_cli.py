"""The `coach` command as a user runs it (the venv's `coach` in a subprocess): index, search, models, ask,
chat, eval. Errors are one line, never a traceback; an API key is never printed.

The openai backend talks to tests/fake_openai_server.py or to a port nobody listens on.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_openai_server import FakeOpenAIServer
from helpers import REPO, SALARY, free_port

pytestmark = pytest.mark.integration  # every command runs the real embedding model

Run = Callable[..., subprocess.CompletedProcess[str]]
ENTRY_Q = "What is the entry-level base salary range?"
JSON_KEYS = {"question", "answer", "sources", "latency_ms", "ttft_ms", "backend", "model"}
SOURCE_KEYS = {"section", "subsection", "source", "score", "text"}
KEY = "sk-cli-GOOD-5e1d"
WRONG_KEY = "sk-cli-WRONG-90af"


def folders(tmp_path: Path, **paths: Path) -> dict[str, str]:
    """COACH_* variables naming these folders (data in tmp_path unless given)."""
    paths.setdefault("data_dir", tmp_path / "data")
    return {f"COACH_{k.upper()}": str(v) for k, v in paths.items()}


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout, result.stderr[-2000:]
    return [line for line in result.stderr.splitlines() if line.strip()]


def _no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-2000:]


def _counts(line: str) -> dict[str, int]:
    return {name: int(n) for name, n in re.findall(r"(added|updated|removed|unchanged) (\d+)", line)}


@pytest.fixture(scope="module")
def indexed(coach_cli: Run) -> tuple[str, str]:
    """stdout of a first and of a second `coach index` on the same folders."""
    first = coach_cli("index")
    assert first.returncode == 0, first.stderr
    second = coach_cli("index")
    assert second.returncode == 0, second.stderr
    return first.stdout, second.stdout


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(api_key=KEY, model="fake-gpt") as srv:
        yield srv


# -- coach index ----------------------------------------------------------------------------------
def test_index_prints_what_it_did(indexed: tuple[str, str]) -> None:
    first, _ = indexed
    for word in ("added", "updated", "removed", "unchanged", "chunks/s"):
        assert word in first
    assert re.search(r"\d+(\.\d+)? ?s\b", first), "seconds are printed"
    counts = _counts(first)
    assert counts["added"] > 10
    assert counts["updated"] == counts["removed"] == counts["unchanged"] == 0


def test_second_index_adds_nothing(indexed: tuple[str, str]) -> None:
    first, second = indexed
    assert "added 0" in second
    counts = _counts(second)
    assert counts["updated"] == counts["removed"] == 0
    assert counts["unchanged"] == _counts(first)["added"]


# -- coach search -------------------------------------------------------------------------------
def test_search_json_is_one_array_best_first(coach_cli: Run, indexed: tuple[str, str]) -> None:
    result = coach_cli("search", "What is the entry-level base salary?", "--json", "--k", "3")
    assert result.returncode == 0, result.stderr
    passages = json.loads(result.stdout)
    assert isinstance(passages, list) and len(passages) == 3
    for passage in passages:
        assert {"section", "subsection", "source", "score", "text"} <= set(passage)
    assert passages[0]["section"] == SALARY
    assert "$150,000 - $180,000" in passages[0]["text"]
    assert passages[0]["source"].endswith(".md")
    scores = [p["score"] for p in passages]
    assert scores == sorted(scores, reverse=True)


def test_search_text_output_names_the_section(coach_cli: Run, indexed: tuple[str, str]) -> None:
    result = coach_cli("search", "Where are the geographic hotspots for AI jobs?", "--k", "2")
    assert result.returncode == 0, result.stderr
    assert "Market Demand > Geographic Hotspots" in result.stdout
    assert "Silicon Valley" in result.stdout


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_empty_query_is_a_usage_error(coach_cli: Run, query: str) -> None:
    result = coach_cli("search", query)
    assert result.returncode == 2
    lines = _error_lines(result)
    assert lines and "empty" in lines[0].lower()
    assert result.stdout.strip() == ""


def test_search_before_indexing_says_to_run_coach_index(coach_cli: Run, tmp_path: Path) -> None:
    env = folders(tmp_path)
    result = coach_cli("search", "What does a VP of AI/ML make?", env=env)
    assert result.returncode != 0
    lines = _error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:") and "coach index" in lines[0]


# -- errors -----------------------------------------------------------------------------------------
def test_missing_knowledge_folder_is_one_error_line(coach_cli: Run, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-knowledge"
    env = folders(tmp_path, knowledge_dir=missing)
    result = coach_cli("index", env=env)
    assert result.returncode != 0
    lines = _error_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:") and str(missing) in lines[0]


@pytest.mark.parametrize("command", [["index"], ["search", "What does a VP of AI/ML make?"]])
def test_unreachable_chroma_server_is_one_error_line(coach_cli: Run, command: list[str]) -> None:
    port = free_port()
    result = coach_cli(*command, "--chroma-url", f"http://127.0.0.1:{port}")
    assert result.returncode != 0
    lines = _error_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:") and "Cannot reach the Chroma server" in lines[0] and str(port) in lines[0]


def test_folder_that_is_not_an_index_is_one_error_line(coach_cli: Run, tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "holiday.txt").write_text("photos")
    result = coach_cli("index", "--chroma-path", str(junk))
    assert result.returncode != 0
    lines = _error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:") and "not a Chroma index" in lines[0]
    assert sorted(p.name for p in junk.iterdir()) == ["holiday.txt"]


def test_bad_knowledge_file_is_a_warning_and_the_rest_is_indexed(coach_cli: Run, tmp_path: Path) -> None:
    knowledge = tmp_path / "knowledge"
    knowledge.mkdir()
    (knowledge / "good.md").write_text("# Pay\n\n## Base\n\n- Entry Level: $1 - $2\n")
    (knowledge / "latin1.md").write_bytes(b"# Caf\xe9\n\n- cr\xe8me\n")
    env = folders(tmp_path, knowledge_dir=knowledge)
    result = coach_cli("index", env=env)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in _error_lines(result) if "warning" in line.lower()]
    assert len(warnings) == 1 and "latin1.md" in warnings[0]
    assert _counts(result.stdout)["added"] == 1


# -- settings precedence ----------------------------------------------------------------------------
def test_cli_flags_override_coach_env_vars(coach_cli: Run, tmp_path: Path) -> None:
    good = tmp_path / "good-knowledge"
    good.mkdir()
    (good / "pay.md").write_text("# Pay\n\n## Base\n\n- Entry Level: $1 - $2\n\n## Bonus\n\n- Ten percent.\n")
    env = folders(tmp_path, data_dir=tmp_path / "env-data", knowledge_dir=tmp_path / "missing")
    result = coach_cli("index", "--knowledge", str(good), "--data", str(tmp_path / "flag-data"),
                        env=env)
    assert result.returncode == 0, result.stderr
    assert _counts(result.stdout)["added"] == 2
    assert (tmp_path / "flag-data" / "chroma").is_dir()
    assert not (tmp_path / "env-data").exists()


# -- coach models -------------------------------------------------------------------------------------
@pytest.mark.model  # checks the chat model's file too
def test_models_check_passes_on_the_real_models(coach_cli: Run) -> None:
    result = coach_cli("models", "check")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_models_check_on_an_empty_folder_names_the_fix(coach_cli: Run, tmp_path: Path) -> None:
    env = folders(tmp_path, models_dir=tmp_path / "empty-models")
    result = coach_cli("models", "check", "--embeddings-only", env=env)
    assert result.returncode != 0
    lines = _error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:") and "coach models install" in lines[0]


def test_models_install_verifies_files_already_there(coach_cli: Run, tmp_path: Path) -> None:
    # A hand-copied model folder (no verification stamp): install checks sha256 and downloads nothing.
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "minilm", models / "minilm")
    env = folders(tmp_path, models_dir=models)
    result = coach_cli("models", "install", "--embeddings-only", env=env)
    assert result.returncode == 0, result.stderr
    assert "0 file(s) written" in result.stderr
    assert "fetching" not in result.stderr
    check = coach_cli("models", "check", "--embeddings-only", env=env)
    assert check.returncode == 0, check.stderr


def test_models_check_finds_a_file_garbled_in_place(coach_cli: Run, tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(REPO / "models" / "minilm", models / "minilm")
    env = folders(tmp_path, models_dir=models)
    assert coach_cli("models", "install", "--embeddings-only", env=env).returncode == 0  # verified and stamped
    vocab = models / "minilm" / "vocab.txt"
    before = vocab.stat()
    data = bytearray(vocab.read_bytes())
    data[100:164] = b"#" * 64  # same size; the modification time is put back below
    vocab.write_bytes(bytes(data))
    os.utime(vocab, ns=(before.st_atime_ns, before.st_mtime_ns))
    result = coach_cli("models", "check", "--embeddings-only", env=env)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (line,) = _error_lines(result)
    assert "vocab.txt" in line and "coach models install" in line


# -- ask --------------------------------------------------------------------------------------
def test_ask_json_prints_one_object_with_the_answer_and_its_sources(coach_cli: Run) -> None:
    proc = coach_cli("ask", ENTRY_Q, "--backend", "extractive", "--json")
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


def test_ask_streams_the_answer_and_lists_the_sources(coach_cli: Run) -> None:
    proc = coach_cli("ask", ENTRY_Q, "--backend", "extractive")
    assert proc.returncode == 0, proc.stderr
    answer, _, sources = proc.stdout.partition("Sources:")
    assert "Entry Level: $150,000 - $180,000 [1]" in answer
    assert f"[1] {SALARY} > Base Salary (06-salary-ranges-us-market-2024.md)" in sources
    assert "Entry Level: $150,000 - $180,000" in sources, "the passage text is quoted"
    assert "sources:" in proc.stderr, "the sources are announced before the answer"
    _no_traceback(proc)


def test_ask_an_empty_question_exits_2_with_a_message(coach_cli: Run) -> None:
    proc = coach_cli("ask", "")
    assert proc.returncode == 2
    assert "empty" in proc.stderr and proc.stdout == ""
    _no_traceback(proc)


def test_ask_a_100000_character_question_is_refused_with_the_limit(coach_cli: Run) -> None:
    proc = coach_cli("ask", ("What does it pay? " * 5_556)[:100_000])
    assert proc.returncode == 2
    assert "2,000" in proc.stderr and "100,000" in proc.stderr
    _no_traceback(proc)


def test_ask_with_an_unreachable_openai_endpoint_falls_back_with_a_note(coach_cli: Run) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    proc = coach_cli("ask", ENTRY_Q, "--backend", "openai", env={"COACH_OPENAI_BASE_URL": url})
    assert proc.returncode == 0, proc.stderr
    answer = proc.stdout.partition("Sources:")[0]
    notes = [line for line in answer.splitlines() if "unavailable" in line]
    assert len(notes) == 1 and "cannot reach" in notes[0]
    assert "Entry Level: $150,000 - $180,000 [1]" in answer
    assert "Sources:" in proc.stdout
    _no_traceback(proc)


def test_ask_through_an_openai_compatible_server(coach_cli: Run, server: FakeOpenAIServer) -> None:
    server.replies.append("Entry-level managers earn $150,000 - $180,000 [1].")
    proc = coach_cli("ask", ENTRY_Q, "--backend", "openai", "--json",
                 env={"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": KEY, "COACH_OPENAI_MODEL": "fake-gpt"})
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["answer"] == "Entry-level managers earn $150,000 - $180,000 [1]."
    assert data["backend"] == "openai" and data["model"] == "fake-gpt" and not data["fallback"]
    assert data["sources"][0]["subsection"] == "Base Salary"
    assert server.chat_requests[-1].header("Authorization") == f"Bearer {KEY}"


def test_ask_with_a_wrong_key_falls_back_and_never_prints_the_key(coach_cli: Run, server: FakeOpenAIServer) -> None:
    proc = coach_cli("ask", ENTRY_Q, "--backend", "openai",
                 env={"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": WRONG_KEY})
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stdout.splitlines() if "unavailable" in line]
    assert len(notes) == 1 and "key was rejected" in notes[0]
    assert "Entry Level: $150,000 - $180,000" in proc.stdout
    assert WRONG_KEY not in proc.stdout + proc.stderr
    _no_traceback(proc)


def test_ask_never_prints_an_invented_figure(coach_cli: Run, server: FakeOpenAIServer) -> None:
    server.replies.append("Entry-level managers earn $999,999 a year [1]. "
                          "The entry level base salary is $150,000 - $180,000 [1].")
    proc = coach_cli("ask", ENTRY_Q, "--backend", "openai", env={"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": KEY})
    assert proc.returncode == 0, proc.stderr
    assert "$150,000 - $180,000" in proc.stdout
    assert "999,999" not in proc.stdout


# -- chat -------------------------------------------------------------------------------------
def test_chat_answers_a_question_and_its_follow_up(coach_cli: Run) -> None:
    stdin = "What is the base salary at senior level?\nAnd how large is the annual bonus on top of that?\n/quit\n"
    proc = coach_cli("chat", "--backend", "extractive", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    replies = proc.stdout.split("coach> ")[1:]
    assert len(replies) == 2
    first, second = (r.partition("Sources:")[0] for r in replies)
    assert "Senior Level: $220,000 - $280,000" in first
    assert "Annual Bonus: 10% - 30% of base salary" in second
    assert all(f"{SALARY}" in r.partition("Sources:")[2] for r in replies)
    _no_traceback(proc)


def test_chat_survives_an_empty_line_and_a_too_long_question(coach_cli: Run) -> None:
    stdin = "\n" + "x" * 3_000 + "\n" + ENTRY_Q + "\n"  # ends with EOF instead of /quit
    proc = coach_cli("chat", "--backend", "extractive", stdin=stdin)
    assert proc.returncode == 0, proc.stderr
    assert "2,000" in proc.stdout
    assert "Entry Level: $150,000 - $180,000" in proc.stdout
    _no_traceback(proc)


# -- eval -------------------------------------------------------------------------------------
def test_eval_prints_the_summary_and_writes_one_line_per_question(coach_cli: Run, tmp_path: Path) -> None:
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
    proc = coach_cli("eval", str(questions), "--backend", "extractive", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    header, rule, row = proc.stdout.splitlines()[1:4]
    for column in ("hit@3", "MRR", "facts", "declined", "resisted", "TTFT p50 ms", "answer p95 ms"):
        assert f"| {column} |" in header
    cells = dict(zip(header.strip("|").split("|"), row.strip("|").split("|"), strict=True))
    assert cells[" file "].strip() == "q" and cells[" n "].strip() == "4"
    assert cells[" declined "].strip() == "1/1" and cells[" hit@3 "].strip() == "1.000"
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["id"] for line in lines] == ["d01", "d11", "d12", "free"]
    for line in lines:
        assert {"id", *JSON_KEYS} <= line.keys()
        assert all(SOURCE_KEYS <= s.keys() for s in line["sources"])
    _no_traceback(proc)
