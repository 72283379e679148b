"""Faults coach already survived when issue 14 was filed, kept that way: a truncated Chroma database, a rebuild
killed part-way, the index folder deleted under a running server, a Chroma server stopped and started again,
truncated model files, thirty people chatting at once, keys that must never show, who may connect at all.

Each fault is injected for real (a truncated file, kill -9, a server process stopped, thirty clients at once, a
server bound to every interface) and each test checks what a person sees and that nothing saved was lost. The
faults fixed for the issue have their own tests beside the fixes.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_openai_server import FakeOpenAIServer
from helpers import REPO, SlowChat, free_port, wait_until
from test_ui_fixtures import FAKE_REPLY, UiIndex, UiServer, fake, start_server

from coach.coach import Coach
from coach.config import Settings
from coach.embeddings import FakeEmbeddings
from coach.factory import build_retriever_for
from coach.feedback import FeedbackStore
from coach.llm import make_backend
from coach.llm.extractive import ExtractiveBackend
from coach.prompts import Prompts
from coach.ui import APOLOGY

pytest_plugins = ["test_ui_fixtures"]
pytestmark = pytest.mark.integration  # the real embedding model, real servers and `coach` processes throughout

Run = Callable[..., subprocess.CompletedProcess[str]]
COACH = Path(sys.executable).parent / "coach"
VP_Q = "What does a VP of AI/ML make?"
VP_FACT = "VP of AI/ML: $400,000 - $600,000+"
ENTRY_Q = "What is the entry-level base salary range?"
ENTRY_FACT = "Entry Level: $150,000 - $180,000"
GGUF = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


# -- helpers ----------------------------------------------------------------------------------------------
def stderr_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """What the command said on stderr, line by line (progress bars and blank lines left out)."""
    return [line for line in result.stderr.replace("\r", "\n").splitlines() if line.strip() and "|" not in line]


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `error:` line of a failed command (no traceback, nothing else)."""
    lines = stderr_lines(result)
    assert result.returncode != 0, result.stdout
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def search(coach_cli: Run, env: dict[str, str], question: str) -> list[dict[str, Any]]:
    """`coach search --json`: the passages retrieved for the question."""
    result = coach_cli("search", question, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def folders(data: Path, knowledge: Path = REPO / "knowledge", models: Path = REPO / "models") -> dict[str, str]:
    """The COACH_* folders of a `coach` process."""
    return {"COACH_DATA_DIR": str(data), "COACH_KNOWLEDGE_DIR": str(knowledge), "COACH_MODELS_DIR": str(models),
            "COACH_PROMPTS_DIR": str(REPO / "prompts")}


def process_env(**coach: str) -> dict[str, str]:
    """The environment of a `coach` process started here: none of the developer's COACH_* or OPENAI_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COACH_", "OPENAI_"))}
    env.update({"HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", "GRADIO_ANALYTICS_ENABLED": "False",
                "PYTHONIOENCODING": "utf-8", **coach})
    return env


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def listening_on_every_interface(port: int) -> bool:
    """Whether a socket listens on 0.0.0.0:port (read from the kernel's table, Linux)."""
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return any(row.split()[1] == f"00000000:{port:04X}" and row.split()[3] == "0A" for row in rows)


def ask_api(server: UiServer, question: str, key: str | None = None) -> httpx.Response:
    """One non-streamed /v1/chat/completions request."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"model": "coach", "messages": [{"role": "user", "content": question}]}
    return httpx.post(f"{server.url}v1/chat/completions", json=body, headers=headers, timeout=60)


def ask_page(url: str, question: str, **client: Any) -> tuple[list[dict[str, Any]], Any, dict[str, Any]]:
    """One question through the page's `/chat` endpoint, as a new person: (messages, status, details)."""
    from gradio_client import Client

    messages, status, details = Client(url, verbose=False, **client).predict(question, api_name="/chat")
    return messages, status, details


def text_of(message: dict[str, Any]) -> str:
    """The text of a chatbot message as the API returns it (a string or a list of parts)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def extractive_coach(settings: Settings, retriever: Any, prompts: Prompts) -> Coach:
    """An extractive coach on this retriever."""
    return Coach(settings, retriever, ExtractiveBackend(), prompts)


@pytest.fixture(scope="module")
def indexed(coach_cli: Run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding the repository's knowledge indexed by `coach index` (tests work on copies)."""
    data = tmp_path_factory.mktemp("indexed") / "data"
    result = coach_cli("index", env=folders(data))
    assert result.returncode == 0, result.stderr
    return data


# -- a damaged or vanished index --------------------------------------------------------------------------
def test_a_truncated_chroma_database_is_one_clear_line_and_coach_index_recovers(
        coach_cli: Run, indexed: Path, tmp_path: Path) -> None:
    data = shutil.copytree(indexed, tmp_path / "data")
    feedback = FeedbackStore(f"sqlite:///{data / 'coach.db'}")
    feedback.add({"verdict": "like", "question": VP_Q, "answer": VP_FACT})
    liked = list(feedback.rows())
    env = folders(data)
    database = data / "chroma" / "chroma.sqlite3"
    os.truncate(database, database.stat().st_size // 2)

    # The command line and the chat server both stop with one line that says where and what to do.
    message = one_error_line(coach_cli("search", VP_Q, env=env))
    assert str(data / "chroma") in message and "coach index" in message
    served = coach_cli("serve", "--backend", "extractive", "--port", str(free_port()), env=env, timeout=90)
    assert "coach index" in one_error_line(served)

    # Doing what the message says brings the index back, with the same answers; the rest of the data folder stays.
    if "move it away" in message:
        shutil.move(data / "chroma", tmp_path / "damaged-chroma")
    repair = coach_cli("index", *(["--rebuild"] if "--rebuild" in message else []), env=env)
    assert repair.returncode == 0, repair.stderr
    assert int(re.search(r"added (\d+)", repair.stdout).group(1)) > 0, repair.stdout
    assert any(VP_FACT in p["text"] for p in search(coach_cli, env, VP_Q))
    assert list(feedback.rows()) == liked and liked[0]["question"] == VP_Q
    feedback.close()


ROOM_Q = "How many people does Room 217 seat?"
ROOMS = 300  # tiny sections, so that the first batch of 256 is stored within seconds and a second one follows


def add_rooms(knowledge: Path) -> None:
    """A knowledge file of ROOMS one-line sections, sorted first so that they fill the rebuild's first batch."""
    lines = ["---", "role: Senior Software Engineering Manager in AI", "---", "", "# Office Rooms", ""]
    for n in range(1, ROOMS + 1):
        lines += [f"## Room {n}", "", f"Room {n} seats {n % 9 + 2} people.", ""]
    (knowledge / "00-office-rooms.md").write_text("\n".join(lines), encoding="utf-8")


def test_a_rebuild_killed_part_way_leaves_the_old_index_answering_and_the_next_index_completes(
        coach_cli: Run, indexed: Path, tmp_path: Path) -> None:
    data = shutil.copytree(indexed, tmp_path / "data")
    knowledge = shutil.copytree(REPO / "knowledge", tmp_path / "knowledge")
    env = folders(data, knowledge)
    before = search(coach_cli, env, VP_Q)
    add_rooms(knowledge)

    rebuild = subprocess.Popen([str(COACH), "index", "--rebuild"], cwd=tmp_path, env=process_env(**env),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    said: list[bytes] = []
    progress_bar = rebuild.stderr
    assert progress_bar is not None

    def read() -> None:
        while piece := progress_bar.read1(512):
            said.append(piece)

    threading.Thread(target=read, daemon=True).start()

    def stored_a_batch() -> bool:
        progress = re.findall(r"(\d+)/(\d+) \[", b"".join(said).decode(errors="replace"))
        return any(0 < int(done) < int(total) for done, total in progress) or rebuild.poll() is not None

    try:
        wait_until(stored_a_batch, "the rebuild to store its first batch", timeout=180)
        assert rebuild.poll() is None, f"the rebuild ended before it could be killed: {b''.join(said)!r}"
        os.kill(rebuild.pid, signal.SIGKILL)
        assert rebuild.wait(timeout=30) == -signal.SIGKILL
    finally:
        if rebuild.poll() is None:
            rebuild.kill()
            rebuild.wait(timeout=30)

    # The index from before the rebuild still answers, exactly as before, and knows nothing of the new rooms.
    assert search(coach_cli, env, VP_Q) == before
    assert not any(p["source"] == "00-office-rooms.md" for p in search(coach_cli, env, ROOM_Q))

    # The next `coach index` completes: the rooms are in.
    synced = coach_cli("index", env=env, timeout=300)
    assert synced.returncode == 0, synced.stderr
    assert int(re.search(r"added (\d+)", synced.stdout).group(1)) >= ROOMS
    rooms = search(coach_cli, env, ROOM_Q)
    assert any("Room 217 seats" in p["text"] for p in rooms), rooms


def test_the_index_folder_deleted_under_a_running_server_is_no_crash_and_a_restart_rebuilds_it(
        coach_cli: Run, indexed: Path, real_embedder: Any, prompts: Prompts,
        settings_factory: Callable[..., Settings], tmp_path: Path) -> None:
    data = shutil.copytree(indexed, tmp_path / "data")
    settings = settings_factory(REPO / "knowledge", data, port=free_port())
    retriever = build_retriever_for(settings, real_embedder, say=lambda _: None)  # the copy is current: no embedding
    server = start_server(extractive_coach(settings, retriever, prompts), api=True)
    try:
        assert ask_api(server, VP_Q).status_code == 200
        shutil.rmtree(settings.chroma_dir)
        assert not settings.chroma_dir.exists()
        for question in (VP_Q, "What are the common challenges of the role?"):
            # Each answer either still comes from the index the server holds open (the right sources) or is a
            # clear message naming the command that rebuilds it; never the apology, a 500 or a dead server.
            _, status, details = ask_page(server.url, question)
            if details.get("sources"):
                assert details["answer"] and not details.get("error")
            else:
                assert "coach index" in str(details.get("error")), details
            assert APOLOGY not in json.dumps(details) and APOLOGY not in str(status)
            response = ask_api(server, question)
            if response.status_code == 200:
                assert response.json()["choices"][0]["sources"]
            else:
                assert response.status_code == 503 and "coach index" in response.json()["error"]["message"]
        vp = ask_api(server, VP_Q)
        if vp.status_code == 200:
            assert VP_FACT in json.dumps(vp.json()["choices"][0]["sources"])
        health = httpx.get(f"{server.url}healthz", timeout=30)
        assert health.status_code in (200, 503) and "index" in health.json()
    finally:
        server.close()

    # The next start (`coach index`, as `coach serve` does first) builds the index anew in the same place.
    rebuilt = coach_cli("index", env=folders(data))
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert int(re.search(r"added (\d+)", rebuilt.stdout).group(1)) > 0, rebuilt.stdout
    assert (settings.chroma_dir / "chroma.sqlite3").is_file()


# -- a Chroma server that goes away and comes back ---------------------------------------------------------
def test_a_chroma_server_stopped_and_started_again_the_api_and_readiness_follow(
        own_chroma_server: Any, prompts: Prompts, settings_factory: Callable[..., Settings], tmp_path: Path) -> None:
    """The API's side of it (the page's, in the same chat, is test_faults_index.py's)."""
    chroma = own_chroma_server
    settings = settings_factory(REPO / "knowledge", tmp_path / "data", port=free_port(), chroma_url=chroma.url,
                                collection="regressions")
    retriever = build_retriever_for(settings, FakeEmbeddings(), say=lambda _: None)
    indexed = retriever.count()
    server = start_server(extractive_coach(settings, retriever, prompts), api=True)
    try:
        before = ask_api(server, ENTRY_Q)
        assert before.status_code == 200, before.text
        sources = [s["text"] for s in before.json()["choices"][0]["sources"]]
        assert any(ENTRY_FACT in s for s in sources)

        chroma.stop()
        down = ask_api(server, ENTRY_Q)  # at once, a refusal naming the index server: no hang, no generic 500
        assert down.status_code == 503, down.text
        assert f"Chroma at {chroma.url}" in down.json()["error"]["message"]
        health = httpx.get(f"{server.url}healthz", timeout=30)
        assert health.status_code == 503 and health.json()["index"]["ok"] is False

        chroma.start()  # same folder, same port: its data survived the restart
        after = ask_api(server, ENTRY_Q)
        assert after.status_code == 200, after.text
        assert [s["text"] for s in after.json()["choices"][0]["sources"]] == sources
        health = httpx.get(f"{server.url}healthz", timeout=30)
        assert health.status_code == 200 and health.json()["index"] == {"ok": True, "passages": indexed}
    finally:
        server.close()


# -- truncated model files ---------------------------------------------------------------------------------
def verified_copy(dest: Path) -> Path:
    """A copy of the embedding model's files with their verification stamps (times kept, so they still match)."""
    shutil.copytree(REPO / "models" / "minilm", dest / "minilm")  # copy2: sizes and modification times kept
    shutil.copy2(REPO / "models" / ".verified.json", dest / ".verified.json")
    return dest


def test_a_truncated_embedding_model_is_one_line_naming_coach_models_install(
        coach_cli: Run, indexed: Path, tmp_path: Path) -> None:
    models = verified_copy(tmp_path / "models")
    env = folders(shutil.copytree(indexed, tmp_path / "data"), models=models)
    check = coach_cli("models", "check", "--embeddings-only", env=env)
    assert check.returncode == 0, check.stderr  # the copy is good: what follows is the truncation's doing

    onnx = models / "minilm" / "model.onnx"
    whole = onnx.read_bytes()
    onnx.write_bytes(whole[: len(whole) // 2])
    for command in (["search", VP_Q], ["index"]):
        message = one_error_line(coach_cli(*command, env=env))
        assert str(onnx) in message and "coach models install" in message

    # Nothing saved was touched: with the file whole again, the same index answers without re-embedding.
    shutil.copy2(REPO / "models" / "minilm" / "model.onnx", onnx)
    assert any(VP_FACT in p["text"] for p in search(coach_cli, env, VP_Q))


@pytest.mark.model  # reads the head of the real GGUF file (never loads it)
def test_a_truncated_chat_model_falls_back_with_a_note_naming_coach_models_install(
        coach_cli: Run, indexed: Path, tmp_path: Path) -> None:
    models = verified_copy(tmp_path / "models")
    with (REPO / "models" / GGUF).open("rb") as whole:
        (models / GGUF).write_bytes(whole.read(1 << 20))  # the first megabyte: a download cut short
    env = folders(shutil.copytree(indexed, tmp_path / "data"), models=models)

    message = one_error_line(coach_cli("models", "check", env=env))
    assert str(models / GGUF) in message and "coach models install" in message

    asked = coach_cli("ask", VP_Q, "--backend", "local", env=env)
    assert asked.returncode == 0 and "Traceback" not in asked.stderr, asked.stderr
    said = asked.stdout + asked.stderr
    assert str(models / GGUF) in said and "coach models install" in said
    assert VP_FACT in asked.stdout  # the answer still comes, from the knowledge base


# -- many people at once ---------------------------------------------------------------------------------
def knowledge_subsections(count: int) -> list[str]:
    """The first `count` distinct subsection titles of the repository's knowledge, for distinct questions."""
    titles: list[str] = []
    for path in sorted((REPO / "knowledge").glob("*.md")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("## ") and line[3:].strip() not in titles:
                titles.append(line[3:].strip())
    assert len(titles) >= count
    return titles[:count]


FOLLOW_UP = "And why does that matter for the role?"


def test_thirty_sessions_at_once_each_keep_only_their_own_turns(server_factory: Callable[..., UiServer]) -> None:
    from gradio_client import Client

    server = server_factory(SlowChat(delay=0.005, default=FAKE_REPLY), concurrency=4)
    questions = [f"What does the knowledge base say about {title}?" for title in knowledge_subsections(30)]
    start = threading.Barrier(len(questions))
    seen: dict[int, list[list[str]]] = {}
    failures: list[str] = []

    def person(n: int) -> None:
        try:
            client = Client(server.url, verbose=False)
            start.wait(timeout=120)  # everyone asks at the same moment
            histories = []
            for question in (questions[n], FOLLOW_UP):
                messages, _, details = client.predict(question, api_name="/chat")
                assert details["answer"] and not details.get("error"), details
                histories.append([text_of(m) for m in messages if m["role"] == "user"])
            seen[n] = histories
        except Exception as exc:  # reported below with the session's number
            failures.append(f"session {n}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=person, args=(n,)) for n in range(len(questions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures
    for n, question in enumerate(questions):
        assert seen[n] == [[question], [question, FOLLOW_UP]], f"session {n} saw {seen[n]}"

    # What the model was sent for each follow-up carries that session's own first question and nothing else.
    # (The answering requests start with the system prompt; a request to rewrite the follow-up quotes the
    # conversation in one user message.)
    calls = [call for call in fake(server).calls if FOLLOW_UP in str(call[-1]["content"])]
    answering = [[m["content"] for m in call[:-1] if m["role"] == "user"] for call in calls
                 if call[0]["role"] == "system"]
    assert all(len(turns) == 1 for turns in answering), answering
    assert sorted(turns[0] for turns in answering) == sorted(questions)
    for call in calls:
        if call[0]["role"] != "system":
            assert len([q for q in questions if q in str(call[-1]["content"])]) == 1, call


# -- secrets -----------------------------------------------------------------------------------------------
UPSTREAM_GOOD = "sk-upstream-GOOD-5e1f0c2b9d"
UPSTREAM_WRONG = "sk-upstream-WRONG-a71c33e0f4"
SERVER_KEY = "coach-key-RIGHT-9b0d7e21c5"
SERVER_WRONG = "coach-key-GUESS-48f6d1aa03"
SECRETS = (UPSTREAM_GOOD, UPSTREAM_WRONG, SERVER_KEY, SERVER_WRONG)


def test_api_keys_never_show_in_answers_errors_status_pages_or_logs(
        server_factory: Callable[..., UiServer], ui_index: UiIndex, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    with FakeOpenAIServer(api_key=UPSTREAM_GOOD, model="fake-gpt") as upstream:
        upstream_settings = {"openai_base_url": upstream.url, "openai_api_key": UPSTREAM_WRONG,
                             "openai_model": "fake-gpt"}
        backend = make_backend("openai", ui_index.settings(tmp_path, **upstream_settings))
        server = server_factory(backend, api=True, api_keys=SERVER_KEY, **upstream_settings)
        shown: list[str] = []

        # The page: the model's endpoint refuses the configured key; the answer falls back and says why.
        messages, status, details = ask_page(server.url, VP_Q)
        assert "key" in str(details.get("fallback") or details["answer"]).lower() and VP_FACT in details["answer"]
        shown += [json.dumps(messages), str(status), json.dumps(details)]
        # The API: the right key answers (with the same fallback), a wrong one is refused without being repeated.
        answered = ask_api(server, VP_Q, key=SERVER_KEY)
        assert answered.status_code == 200 and answered.json()["coach"]["fallback"]
        refused = ask_api(server, VP_Q, key=SERVER_WRONG)
        assert refused.status_code == 401
        shown += [answered.text, refused.text]
        for path, headers in (("config", {}), ("gradio_api/info", {}), ("healthz", {}),
                              ("v1/models", {"Authorization": f"Bearer {SERVER_KEY}"})):
            response = httpx.get(f"{server.url}{path}", headers=headers, timeout=30)
            assert response.status_code == 200, (path, response.text)
            shown.append(response.text)
        assert upstream.requests and upstream.requests[0].header("Authorization") == f"Bearer {UPSTREAM_WRONG}"

    out, err = capfd.readouterr()
    everything = "\n".join([*shown, caplog.text, out, err, repr(server.settings)])
    for secret in SECRETS:
        assert secret not in everything, f"{secret} was shown"
    assert "GOOD" not in everything and "WRONG" not in everything and "GUESS" not in everything


# -- who may connect ---------------------------------------------------------------------------------------
USER, PASSWORD = "ana", "pw-7c1e5b90d2"
API_KEY = "team-key-0e4a9c6b13"


@pytest.mark.parametrize("address", [
    pytest.param({"args": ["--host", "0.0.0.0"]}, id="flag-0.0.0.0"),
    pytest.param({"env": {"COACH_HOST": "::", "COACH_ALLOW_REMOTE": "true"}}, id="allowed-ipv6-any-no-login"),
])
def test_coach_serve_refuses_a_non_loopback_address_unless_explicitly_allowed(
        coach_cli: Run, indexed: Path, tmp_path: Path, address: dict[str, Any]) -> None:
    port = free_port()
    env = {**folders(shutil.copytree(indexed, tmp_path / "data")), **address.get("env", {})}
    result = coach_cli("serve", "--backend", "extractive", "--port", str(port), *address.get("args", []), env=env,
                       timeout=90)
    message = one_error_line(result)
    assert result.returncode == 2 and "refusing to listen on" in message and "COACH_ALLOW_REMOTE" in message
    assert not listening(port)


@pytest.fixture(scope="module")
def remote_server(indexed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """`coach serve` on every interface, explicitly allowed, with a log-in and API keys: (loopback URL, its log)."""
    work = tmp_path_factory.mktemp("remote")
    port = free_port()
    env = process_env(**folders(shutil.copytree(indexed, work / "data")), COACH_ALLOW_REMOTE="true",
                      COACH_AUTH_USERNAME=USER, COACH_AUTH_PASSWORD=PASSWORD, COACH_API_KEYS=API_KEY)
    log = work / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(COACH), "serve", "--backend", "extractive", "--host", "0.0.0.0",
                                 "--port", str(port)], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def ready() -> bool:
        assert proc.poll() is None, f"coach serve exited: {log.read_text(errors='replace')[-2000:]}"
        try:
            return httpx.get(f"{url}healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until(ready, "coach serve on 0.0.0.0", timeout=180)
        yield url, log
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)


# Everything the page does with data (Gradio's own routes) and the whole /v1 API. Static files (styles, icons,
# the page's HTML, which shows the log-in form) and /healthz (readiness for process managers) stay open.
PAGE_ROUTES = [("GET", "config"), ("GET", "gradio_api/info"), ("GET", "gradio_api/openapi.json"),
               ("POST", "gradio_api/queue/join"), ("POST", "gradio_api/call/chat"), ("POST", "gradio_api/run/chat"),
               ("POST", "gradio_api/upload"), ("GET", "gradio_api/queue/data?session_hash=someone"),
               ("GET", f"gradio_api/file={REPO / 'knowledge' / '06-salary-ranges-us-market-2024.md'}")]
API_ROUTES = [("GET", "v1/models"), ("GET", "v1/models/coach"), ("POST", "v1/chat/completions"),
              ("GET", "v1/openapi.json")]
BODY = {"data": [VP_Q], "fn_index": 0, "session_hash": "someone", "model": "coach",
        "messages": [{"role": "user", "content": VP_Q}]}


def request(url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request, a body for a POST."""
    return httpx.request(method, url + path, timeout=30, json=BODY if method == "POST" else None, **kwargs)


def test_an_allowed_remote_server_needs_the_log_in_or_a_key_on_every_endpoint(remote_server: tuple[str, Path]
                                                                               ) -> None:
    from gradio_client import Client

    url, log = remote_server
    assert listening_on_every_interface(int(url.rsplit(":", 1)[1].strip("/")))  # reachable from other machines
    for method, path in PAGE_ROUTES:
        response = request(url, method, path)
        assert response.status_code == 401, (method, path, response.status_code, response.text[:200])
        assert "Salary" not in response.text and "coach" not in response.text.lower()
    basic = httpx.BasicAuth(USER, PASSWORD)
    for method, path in API_ROUTES:
        for auth in ({}, {"auth": basic}, {"headers": {"Authorization": f"Bearer {PASSWORD}"}}):
            response = request(url, method, path, **auth)
            assert response.status_code == 401, (method, path, auth, response.text[:200])
            assert API_KEY not in response.text and PASSWORD not in response.text

    with pytest.raises(Exception, match="credentials were not provided"):
        Client(url, verbose=False)
    with pytest.raises(ValueError, match="Could not login"):
        Client(url, verbose=False, auth=(USER, "not-the-password"))
    _, _, details = ask_page(url, VP_Q, auth=(USER, PASSWORD))
    assert VP_FACT in details["answer"] and details["sources"]
    answered = request(url, "POST", "v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"})
    assert answered.status_code == 200 and VP_FACT in answered.json()["choices"][0]["message"]["content"]
    said = log.read_text(errors="replace")
    assert "chat ready" in said and PASSWORD not in said and API_KEY not in said  # the server's own words


def test_with_a_log_in_on_loopback_the_api_needs_credentials_too(server_factory: Callable[..., UiServer]) -> None:
    server = server_factory(None, api=True, auth_username=USER, auth_password=PASSWORD)
    for method, path in PAGE_ROUTES[:3]:  # the page is closed ...
        assert request(server.url, method, path).status_code == 401
    for method, path in API_ROUTES:  # ... and so must the API be, which answers the same questions
        response = request(server.url, method, path)
        assert response.status_code == 401, (method, path, response.text[:200])
