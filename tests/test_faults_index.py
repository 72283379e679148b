"""Faults of the vector index, injected for real: a damaged embedded index (garbled, truncated or deleted
vector files), a data folder that cannot be written, and a Chroma server that stops in the middle of a chat.

Each test checks what the person sees: one line naming the problem and the command or setting that fixes
it (never a traceback or a crash), that `coach index` repairs a damaged index rather than calling it
unchanged, and that the repaired index finds the right passage again.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import VENV_BIN
from helpers import REPO, SALARY

from coach.embeddings import FakeEmbeddings
from coach.factory import build_coach
from coach.ui.answering import APOLOGY

pytestmark = pytest.mark.integration
Run = Callable[..., subprocess.CompletedProcess[str]]
SALARY_QUESTION = "What is the entry-level base salary?"
# Chroma writes the vectors to its HNSW files only once 1,000 have been added; below that it keeps them
# in its log and the files do not matter. The fault cases need a knowledge base past that mark.
EXTRA_SECTIONS = 1100
FILLER = ("harbor meadow copper violet orbit lantern pebble canyon willow falcon ember glacier tundra "
          "marble thistle saffron quartz").split()


def big_knowledge(folder: Path) -> Path:
    """The repository's knowledge plus a file of short filler sections, enough for Chroma to persist vectors."""
    shutil.copytree(REPO / "knowledge", folder)
    rnd = random.Random(14)
    sections = [f"## Filler Topic {n}\n\n{' '.join(rnd.choice(FILLER) for _ in range(8))}.\n"
                for n in range(EXTRA_SECTIONS)]
    (folder / "99-filler.md").write_text("# Filler\n\n" + "\n".join(sections), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, coach_cli: Run) -> dict[str, str]:
    """A data folder with a complete embedded index of the big knowledge base, built by `coach index`."""
    root = tmp_path_factory.mktemp("big-index")
    env = {"COACH_KNOWLEDGE_DIR": str(big_knowledge(root / "knowledge")), "COACH_DATA_DIR": str(root / "data")}
    result = coach_cli("index", env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    return env


@pytest.fixture
def index_copy(built: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The environment of a private copy of the built index, safe to damage."""
    shutil.copytree(built["COACH_DATA_DIR"], tmp_path / "data")
    return {**built, "COACH_DATA_DIR": str(tmp_path / "data")}


def vector_folder(env: dict[str, str]) -> Path:
    """The one vector segment folder of the index (the one Chroma has persisted to)."""
    folders = [p for p in (Path(env["COACH_DATA_DIR"]) / "chroma").iterdir() if p.is_dir()]
    assert len(folders) == 1, folders
    assert (folders[0] / "data_level0.bin").stat().st_size > 0
    return folders[0]


def garble(path: Path) -> None:
    """Random bytes over the middle of the file, same size, modification time put back."""
    stat = path.stat()
    with path.open("r+b") as fh:
        fh.seek(stat.st_size // 8)
        fh.write(random.Random(1).randbytes(stat.st_size // 2))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def truncate(path: Path) -> None:
    """Cut the file to a tenth of its size."""
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 10)


DAMAGES: dict[str, Callable[[Path], None]] = {
    "garbled": lambda folder: garble(folder / "data_level0.bin"),
    "truncated": lambda folder: truncate(folder / "data_level0.bin"),
    "deleted": lambda folder: shutil.rmtree(folder),
}


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `error:` line of a failed command that neither crashed nor printed a traceback."""
    assert result.returncode == 1, (result.returncode, result.stderr[-2000:])  # not -11: no segmentation fault
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


def top_section(coach_cli: Run, env: dict[str, str]) -> str:
    """The section of the best passage `coach search` finds for the salary question."""
    result = coach_cli("search", SALARY_QUESTION, "--json", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return str(json.loads(result.stdout)[0]["section"])


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_index_is_reported_and_coach_index_repairs_it(coach_cli: Run, index_copy: dict[str, str],
                                                                damage: str) -> None:
    assert top_section(coach_cli, index_copy) == SALARY  # the copy works before it is damaged
    DAMAGES[damage](vector_folder(index_copy))

    line = one_error_line(coach_cli("search", SALARY_QUESTION, env=index_copy))
    assert "is damaged" in line and "run `coach index` to rebuild it" in line, line
    assert str(Path(index_copy["COACH_DATA_DIR"]) / "chroma") in line

    repair = coach_cli("index", env=index_copy, timeout=600)
    assert repair.returncode == 0, repair.stderr[-2000:]
    assert "rebuilt a damaged index" in repair.stdout and "unchanged 0" in repair.stdout, repair.stdout
    assert top_section(coach_cli, index_copy) == SALARY
    again = coach_cli("index", env=index_copy, timeout=600)  # and the repaired index is whole: nothing to do
    assert again.returncode == 0 and "rebuilt" not in again.stdout and "added 0," in again.stdout, again.stdout


def test_coach_ask_repairs_a_damaged_index_before_answering(coach_cli: Run, index_copy: dict[str, str]) -> None:
    """Commands that sync first (ask, chat, serve) rebuild a damaged index themselves, and say so."""
    garble(vector_folder(index_copy) / "data_level0.bin")
    result = coach_cli("ask", SALARY_QUESTION, "--backend", "extractive", env=index_copy, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "index: rebuilt a damaged index (data_level0.bin" in result.stderr, result.stderr
    assert "$150,000" in result.stdout and SALARY in result.stdout, result.stdout


# -- a data folder that cannot be written -----------------------------------------------------------
def read_only_run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `coach` as a user to whom folders without write permission are read-only (root ignores them,
    so as root the command runs without the capabilities that let it)."""
    command = [str(VENV_BIN / "coach"), *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: a folder without write permission is still writable")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all", *command]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("COACH_", "OPENAI_"))}
    base.update({"COACH_PROMPTS_DIR": str(REPO / "prompts"), "COACH_MODELS_DIR": str(REPO / "models"),
                 "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", "PYTHONIOENCODING": "utf-8"})
    return subprocess.run(command, capture_output=True, text=True, env={**base, **env}, timeout=120,
                          encoding="utf-8")


def make_read_only(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)


def make_writable(folder: Path) -> None:
    for path in [folder, *folder.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)


@pytest.mark.parametrize("state", ["with an index", "empty"])
def test_a_read_only_data_folder_gets_the_true_advice(coach_cli: Run, tmp_path: Path, state: str) -> None:
    data = tmp_path / "data"
    env = {"COACH_DATA_DIR": str(data), "COACH_KNOWLEDGE_DIR": str(REPO / "knowledge")}
    if state == "with an index":
        assert coach_cli("index", env=env).returncode == 0
    else:
        data.mkdir()
    make_read_only(data)
    try:
        for command in (["index"], ["search", SALARY_QUESTION]):
            line = one_error_line(read_only_run(command, env))
            assert "is not writable" in line and "fix its permissions" in line and "COACH_DATA_DIR" in line, line
            assert "move it away" not in line
    finally:
        make_writable(data)


# -- a Chroma server that stops in the middle of a chat -------------------------------------------
def test_a_chroma_server_that_stops_mid_session_is_named_in_the_chat(own_chroma_server: Any, tmp_path: Path,
                                                                    settings_factory: Callable[..., Any]) -> None:
    from gradio_client import Client
    from helpers import free_port
    from test_ui_fixtures import start_server

    server = own_chroma_server
    secret_url = server.url.replace("http://", "http://coach:s3cret-pass@")  # credentials never shown
    settings = settings_factory(REPO / "knowledge", tmp_path / "data", chroma_url=secret_url, backend="extractive",
                                collection=f"faults{uuid.uuid4().hex[:8]}", port=free_port())
    coach = build_coach(settings, embedder=FakeEmbeddings(), say=lambda _m: None)
    page = start_server(coach)
    try:
        person = Client(page.url, verbose=False)
        _, _, details = person.predict(SALARY_QUESTION, api_name="/chat")
        assert details["error"] is None and details["sources"][0]["section"] == SALARY

        server.stop()
        messages, status, details = person.predict(SALARY_QUESTION, api_name="/chat")
        content = messages[-1]["content"]  # a list of parts, or a string
        shown = content if isinstance(content, str) else "".join(part.get("text", "") for part in content)
        assert f"index server (Chroma at {server.url})" in shown and "is unreachable" in shown, shown
        assert shown != APOLOGY and details["error"] == shown
        assert "s3cret" not in json.dumps([messages, status, details])

        server.start()  # back again: the same chat answers
        _, _, details = person.predict(SALARY_QUESTION, api_name="/chat")
        assert details["error"] is None and details["sources"][0]["section"] == SALARY
    finally:
        page.close()
