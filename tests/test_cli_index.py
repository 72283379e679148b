"""The `coach` command as a user runs it: index, search, models; errors as one line, never a traceback."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

COACH = Path(sys.executable).parent / "coach"
SALARY_SECTION = "Salary Ranges (US Market, 2024)"


def _env(**coach: Path | str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COACH_")}
    env.update({"HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "ANONYMIZED_TELEMETRY": "False",
                "PYTHONUNBUFFERED": "1"})
    env.update({f"COACH_{k.upper()}": str(v) for k, v in coach.items()})
    return env


def coach(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the installed `coach` command."""
    return subprocess.run([str(COACH), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def free_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    knowledge = root / "knowledge"
    shutil.copytree(repo_root / "knowledge", knowledge)
    return {"root": root, "knowledge": knowledge, "data": root / "data", "models": repo_root / "models"}


@pytest.fixture(scope="module")
def env(workspace: dict[str, Path]) -> dict[str, str]:
    return _env(data_dir=workspace["data"], knowledge_dir=workspace["knowledge"], models_dir=workspace["models"])


@pytest.fixture(scope="module")
def indexed(workspace: dict[str, Path], env: dict[str, str]) -> tuple[str, str]:
    """stdout of a first and of a second `coach index` on the same folders."""
    first = coach("index", env=env, cwd=workspace["root"])
    assert first.returncode == 0, first.stderr
    second = coach("index", env=env, cwd=workspace["root"])
    assert second.returncode == 0, second.stderr
    return first.stdout, second.stdout


def _counts(line: str) -> dict[str, int]:
    return {name: int(n) for name, n in re.findall(r"(added|updated|removed|unchanged) (\d+)", line)}


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
def test_search_json_is_one_array_best_first(workspace: dict[str, Path], env: dict[str, str],
                                             indexed: tuple[str, str]) -> None:
    result = coach("search", "What is the entry-level base salary?", "--json", "--k", "3",
                   env=env, cwd=workspace["root"])
    assert result.returncode == 0, result.stderr
    passages = json.loads(result.stdout)
    assert isinstance(passages, list) and len(passages) == 3
    for passage in passages:
        assert {"section", "subsection", "source", "score", "text"} <= set(passage)
    assert passages[0]["section"] == SALARY_SECTION
    assert "$150,000 - $180,000" in passages[0]["text"]
    assert passages[0]["source"].endswith(".md")
    scores = [p["score"] for p in passages]
    assert scores == sorted(scores, reverse=True)


def test_search_text_output_names_the_section(workspace: dict[str, Path], env: dict[str, str],
                                              indexed: tuple[str, str]) -> None:
    result = coach("search", "Where are the geographic hotspots for AI jobs?", "--k", "2",
                   env=env, cwd=workspace["root"])
    assert result.returncode == 0, result.stderr
    assert "Market Demand > Geographic Hotspots" in result.stdout
    assert "Silicon Valley" in result.stdout


@pytest.mark.parametrize("query", ["", "   ", "\t\n"])
def test_empty_query_is_a_usage_error(workspace: dict[str, Path], env: dict[str, str], query: str) -> None:
    result = coach("search", query, env=env, cwd=workspace["root"])
    assert result.returncode == 2
    lines = _error_lines(result)
    assert lines and "empty" in lines[0].lower()
    assert result.stdout.strip() == ""


def test_search_before_indexing_says_to_run_coach_index(workspace: dict[str, Path], tmp_path: Path) -> None:
    env = _env(data_dir=tmp_path / "data", knowledge_dir=workspace["knowledge"], models_dir=workspace["models"])
    result = coach("search", "What does a VP of AI/ML make?", env=env, cwd=tmp_path)
    assert result.returncode != 0
    lines = _error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:") and "coach index" in lines[0]


# -- errors -----------------------------------------------------------------------------------------
def test_missing_knowledge_folder_is_one_error_line(workspace: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "no-such-knowledge"
    env = _env(data_dir=tmp_path / "data", knowledge_dir=missing, models_dir=workspace["models"])
    result = coach("index", env=env, cwd=tmp_path)
    assert result.returncode != 0
    lines = _error_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:") and str(missing) in lines[0]


@pytest.mark.parametrize("command", [["index"], ["search", "What does a VP of AI/ML make?"]])
def test_unreachable_chroma_server_is_one_error_line(workspace: dict[str, Path], env: dict[str, str],
                                                     command: list[str]) -> None:
    port = free_port()
    result = coach(*command, "--chroma-url", f"http://127.0.0.1:{port}", env=env, cwd=workspace["root"])
    assert result.returncode != 0
    lines = _error_lines(result)
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:") and "Cannot reach the Chroma server" in lines[0] and str(port) in lines[0]


def test_folder_that_is_not_an_index_is_one_error_line(workspace: dict[str, Path], env: dict[str, str],
                                                       tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "holiday.txt").write_text("photos")
    result = coach("index", "--chroma-path", str(junk), env=env, cwd=workspace["root"])
    assert result.returncode != 0
    lines = _error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:") and "not a Chroma index" in lines[0]
    assert sorted(p.name for p in junk.iterdir()) == ["holiday.txt"]


def test_bad_knowledge_file_is_a_warning_and_the_rest_is_indexed(workspace: dict[str, Path], tmp_path: Path) -> None:
    knowledge = tmp_path / "knowledge"
    knowledge.mkdir()
    (knowledge / "good.md").write_text("# Pay\n\n## Base\n\n- Entry Level: $1 - $2\n")
    (knowledge / "latin1.md").write_bytes(b"# Caf\xe9\n\n- cr\xe8me\n")
    env = _env(data_dir=tmp_path / "data", knowledge_dir=knowledge, models_dir=workspace["models"])
    result = coach("index", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in _error_lines(result) if "warning" in line.lower()]
    assert len(warnings) == 1 and "latin1.md" in warnings[0]
    assert _counts(result.stdout)["added"] == 1


# -- settings precedence ----------------------------------------------------------------------------
def test_cli_flags_override_coach_env_vars(workspace: dict[str, Path], tmp_path: Path) -> None:
    good = tmp_path / "good-knowledge"
    good.mkdir()
    (good / "pay.md").write_text("# Pay\n\n## Base\n\n- Entry Level: $1 - $2\n\n## Bonus\n\n- Ten percent.\n")
    env = _env(data_dir=tmp_path / "env-data", knowledge_dir=tmp_path / "missing", models_dir=workspace["models"])
    result = coach("index", "--knowledge", str(good), "--data", str(tmp_path / "flag-data"), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _counts(result.stdout)["added"] == 2
    assert (tmp_path / "flag-data" / "chroma").is_dir()
    assert not (tmp_path / "env-data").exists()


# -- coach models -------------------------------------------------------------------------------------
def test_models_check_passes_on_the_real_models(workspace: dict[str, Path], env: dict[str, str]) -> None:
    result = coach("models", "check", env=env, cwd=workspace["root"])
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_models_check_on_an_empty_folder_names_the_fix(workspace: dict[str, Path], tmp_path: Path) -> None:
    env = _env(models_dir=tmp_path / "empty-models", data_dir=tmp_path / "data")
    result = coach("models", "check", "--embeddings-only", env=env, cwd=tmp_path)
    assert result.returncode != 0
    lines = _error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error:") and "coach models install" in lines[0]


def test_models_install_verifies_files_already_there(workspace: dict[str, Path], tmp_path: Path) -> None:
    # A hand-copied model folder (no verification stamp): install checks sha256 and downloads nothing.
    models = tmp_path / "models"
    shutil.copytree(workspace["models"] / "minilm", models / "minilm")
    env = _env(models_dir=models, data_dir=tmp_path / "data")
    result = coach("models", "install", "--embeddings-only", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "0 file(s) written" in result.stderr
    assert "fetching" not in result.stderr
    check = coach("models", "check", "--embeddings-only", env=env, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
