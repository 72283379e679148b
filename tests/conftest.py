"""Shared fixtures: settings on tmp_path, the embedders, indexes (fake and real), coaches, a `chroma run`
server, a network guard, and markers that tell the truth.

Markers: a test that uses the real embedding model (or anything built on it) must be marked
`integration`; one that uses the local chat model must be marked `model`. Collection fails for a test
that uses such a fixture unmarked, and an unmarked test that constructs the model itself fails, so
`pytest -m "not integration"` runs with no embedding model and `-m "not model"` with no GGUF file.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# Before anything imports gradio, huggingface_hub or chromadb: nothing may phone home.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["ANONYMIZED_TELEMETRY"] = "False"
# A COACH_* or OPENAI_* variable of the developer's shell must not reach settings or `coach` subprocesses.
for _name in [n for n in os.environ if n.startswith(("COACH_", "OPENAI_"))]:
    del os.environ[_name]

from helpers import REPO, NetworkGuard, free_port  # noqa: E402

from coach.coach import Coach  # noqa: E402
from coach.config import Settings  # noqa: E402
from coach.embeddings import FakeEmbeddings  # noqa: E402
from coach.prompts import Prompts  # noqa: E402
from coach.retrieval import HybridRetriever  # noqa: E402

VENV_BIN = Path(sys.executable).parent
# Fixtures that load a real model or start a real server, by the marker a test using them must carry.
NEEDS_MARKER = {
    "integration": {"real_embedder", "real_retriever", "make_real_coach", "coach_cli", "ui_index", "server_factory",
                    "local_coach", "own_chroma_server", "postgres_server"},
    "model": {"local_coach"},
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Fail collection when a test uses a real model's fixture without the marker that says so."""
    wrong = []
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        for marker, fixtures in NEEDS_MARKER.items():
            if used & fixtures and item.get_closest_marker(marker) is None:
                wrong.append(f"{item.nodeid} uses {sorted(used & fixtures)} but is not marked `{marker}`")
    if wrong:
        raise pytest.UsageError("markers do not tell the truth:\n  " + "\n  ".join(wrong))


@pytest.fixture(autouse=True)
def _markers_tell_the_truth(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unmarked test that loads a real model itself fails with a message saying which marker it needs."""
    from coach.embeddings import MiniLMEmbeddings
    from coach.llm.local import LocalLlamaBackend

    def refuse(marker: str) -> Callable[..., Any]:
        def fail(*_args: Any, **_kwargs: Any) -> Any:
            raise AssertionError(f"{request.node.nodeid} loads a real model: mark it `{marker}`")
        return fail

    if request.node.get_closest_marker("integration") is None:
        monkeypatch.setattr(MiniLMEmbeddings, "__init__", refuse("integration"))
    if request.node.get_closest_marker("model") is None:
        monkeypatch.setattr(LocalLlamaBackend, "_load", refuse("model"))


@pytest.fixture(autouse=True)
def _no_coach_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A COACH_* or OPENAI_* variable set during the session must not change what a test sees."""
    for name in list(os.environ):
        if name.startswith(("COACH_", "OPENAI_")):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    """Fail any test that opens a connection to anything but loopback or a Unix socket."""
    guard = NetworkGuard()
    guard.install(monkeypatch)
    yield guard
    # Code under test may swallow the exception (e.g. "server unreachable"): fail here regardless.
    if guard.attempts:
        pytest.fail(f"off-machine connection attempted: {', '.join(guard.attempts)}")


# -- paths and settings ---------------------------------------------------------------------------
def make_settings(knowledge_dir: Path, data_dir: Path, **extra: Any) -> Settings:
    """Settings with these folders and the repository's prompts and models, blind to any .env file."""
    base: dict[str, Any] = {"prompts_dir": REPO / "prompts", "models_dir": REPO / "models"}
    return Settings(_env_file=None, knowledge_dir=knowledge_dir, data_dir=data_dir, **{**base, **extra})


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The project folder (the one holding pyproject.toml)."""
    return REPO


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The real models folder filled by `coach models install`."""
    return REPO / "models"


@pytest.fixture(scope="session")
def settings_factory() -> Callable[..., Settings]:
    """make_settings(knowledge_dir, data_dir, **extra): Settings blind to .env and COACH_*."""
    return make_settings


@pytest.fixture
def knowledge_copy(tmp_path: Path) -> Path:
    """A private copy of the repository's knowledge folder, safe to edit."""
    dest = tmp_path / "knowledge"
    shutil.copytree(REPO / "knowledge", dest)
    return dest


@pytest.fixture
def tmp_settings(tmp_path: Path, knowledge_copy: Path) -> Settings:
    """Settings on tmp_path: a copy of knowledge/, an empty data folder, the real models folder."""
    data = tmp_path / "data"
    data.mkdir()
    return make_settings(knowledge_copy, data)


@pytest.fixture(scope="session")
def prompts() -> Prompts:
    """The repository's prompts."""
    return Prompts(REPO / "prompts")


# -- embedders and indexes ----------------------------------------------------------------------
@pytest.fixture
def fake_embedder() -> FakeEmbeddings:
    """The deterministic hashed bag-of-words embedder."""
    return FakeEmbeddings()


@pytest.fixture(scope="session")
def real_embedder() -> Any:
    """The real offline MiniLM model, loaded once per session (integration tests only)."""
    from coach.embeddings import MiniLMEmbeddings

    return MiniLMEmbeddings(REPO / "models")


def _retriever(tmp: Path, embedder: Any) -> HybridRetriever:
    from coach.factory import build_retriever_for

    return build_retriever_for(make_settings(REPO / "knowledge", tmp), embedder, say=lambda _: None)


@pytest.fixture(scope="session")
def fake_retriever(tmp_path_factory: pytest.TempPathFactory) -> HybridRetriever:
    """Hybrid retrieval over the repository's knowledge in an embedded Chroma, with the fake embedder."""
    return _retriever(tmp_path_factory.mktemp("fake-index"), FakeEmbeddings())


@pytest.fixture(scope="session")
def real_retriever(tmp_path_factory: pytest.TempPathFactory, real_embedder: Any) -> HybridRetriever:
    """Hybrid retrieval over the repository's knowledge in an embedded Chroma, with the real MiniLM."""
    return _retriever(tmp_path_factory.mktemp("real-index"), real_embedder)


def _coach_factory(retriever: HybridRetriever, prompts: Prompts, data: Path) -> Callable[..., Coach]:
    base = make_settings(REPO / "knowledge", data)

    def make(backend: Any = None, **overrides: Any) -> Coach:
        from coach.llm.extractive import ExtractiveBackend

        settings = Settings(_env_file=None, **{**base.model_dump(), **overrides})  # validated, unlike model_copy
        return Coach(settings, retriever, backend or ExtractiveBackend(), prompts)

    return make


@pytest.fixture
def make_coach(fake_retriever: HybridRetriever, prompts: Prompts, tmp_path: Path) -> Callable[..., Coach]:
    """make_coach(backend=None, **settings): a Coach over the fake-embedder index (extractive without a backend)."""
    return _coach_factory(fake_retriever, prompts, tmp_path)


@pytest.fixture
def make_real_coach(real_retriever: HybridRetriever, prompts: Prompts, tmp_path: Path) -> Callable[..., Coach]:
    """make_real_coach(backend=None, **settings): a Coach over the real-embedder index."""
    return _coach_factory(real_retriever, prompts, tmp_path)


# -- a real Chroma server -------------------------------------------------------------------------
class ChromaServer:
    """A `chroma run` process on a free loopback port over its own folder; it can be stopped and started again."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ChromaServer:
        """Start it (on the same port and folder as before) and wait for its heartbeat."""
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        exe = VENV_BIN / "chroma"
        if not exe.exists():
            pytest.fail(f"{exe} not found: the venv has no `chroma` executable")
        log_path = self.workdir / "server.log"
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(exe), "run", "--path", str(self.workdir / "db"), "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"chroma run exited with {self.proc.returncode}: "
                            f"{log_path.read_text(errors='replace')[-2000:]}")
            try:
                chromadb.HttpClient(host="127.0.0.1", port=self.port,
                                    settings=ChromaSettings(anonymized_telemetry=False)).heartbeat()
                return self
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail("chroma run did not answer a heartbeat within 60 s")
                time.sleep(0.25)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL after 15 s) and wait until it is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=15)


@pytest.fixture(scope="session")
def chroma_server() -> Iterator[str]:
    """A `chroma run` server on a free loopback port for the whole session; yields its URL."""
    server = ChromaServer(Path(tempfile.mkdtemp(prefix="coach-chroma-server-")))
    try:
        yield server.start().url
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture
def own_chroma_server(tmp_path: Path) -> Iterator[ChromaServer]:
    """A `chroma run` server of this test's own, which the test may stop and start again (.stop(), .start())."""
    server = ChromaServer(tmp_path / "chroma-server")
    server.workdir.mkdir()
    try:
        yield server.start()
    finally:
        server.stop()


# -- a real PostgreSQL server ----------------------------------------------------------------------
POSTGRES_ROOT = Path("/usr/lib/postgresql")  # Debian's layout: /usr/lib/postgresql/<major>/bin


def postgres_bin() -> Path | None:
    """The bin folder of the newest PostgreSQL installed from Debian's packages (None when there is none)."""
    found = [p.parent for p in POSTGRES_ROOT.glob("*/bin/postgres") if p.parent.parent.name.isdigit()]
    return max(found, key=lambda p: int(p.parent.name), default=None)


class PostgresServer:
    """A PostgreSQL server of the test's own: a fresh cluster in a temporary folder, on a free loopback port, with
    a password; the server refuses to run as root, so as root it runs as the `postgres` user Debian creates."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.workdir = Path(tempfile.mkdtemp(prefix="coach-pg-"))  # short: its socket path must fit 107 bytes
        self.port = free_port()
        self.user, self.password, self.database = "coach", secrets.token_urlsafe(16), "coach"
        self.url = f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root needs the `postgres` user (Debian's postgresql package creates it)")
            os.chown(self.workdir, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        done = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120, cwd=self.workdir)
        if done.returncode != 0:
            log = self.workdir / "server.log"
            pytest.fail(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr[-1500:]}"
                        f"{log.read_text(errors='replace')[-1500:] if log.exists() else ''}")

    def start(self) -> PostgresServer:
        """initdb (password login over TCP), start the server and create the database."""
        import psycopg

        secret = self.workdir / "pwfile"
        secret.write_text(self.password)  # readable by the server's user, in a folder only that user can open
        self._run(str(self.bindir / "initdb"), "-D", str(self.workdir / "db"), "-U", self.user,
                  f"--pwfile={secret}", "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        secret.unlink()
        options = f"-k {self.workdir} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.workdir / "db"), "-l", str(self.workdir / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")
        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {self.database}")
        return self

    def stop(self) -> None:
        """Stop it (fast: clients are disconnected) and remove its folder."""
        if (self.workdir / "db" / "postmaster.pid").exists():
            subprocess.run([*self._as, str(self.bindir / "pg_ctl"), "-D", str(self.workdir / "db"), "-m", "fast",
                            "-w", "stop"], capture_output=True, timeout=60, cwd=self.workdir)
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL of this test's own (.url for SQLAlchemy); skipped when PostgreSQL is not installed."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip(f"PostgreSQL is not installed (no {POSTGRES_ROOT}/*/bin/postgres): `make postgres` installs "
                    "Debian's postgresql package")
    server = PostgresServer(bindir)
    try:
        yield server.start()
    finally:
        server.stop()


# -- the `coach` command in a subprocess -------------------------------------------------------
@pytest.fixture(scope="module")
def coach_cli(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., subprocess.CompletedProcess[str]]:
    """coach_cli(*args, stdin=None, env=None): run the venv's `coach` as a user would (module-shared data folder).

    A lone surrogate in an argument or in stdin ("\\udcff") reaches `coach` as the byte it stands for (0xff).
    """
    exe = VENV_BIN / "coach"
    assert exe.exists(), f"{exe} is missing: pip install -e . in the venv"
    workdir = tmp_path_factory.mktemp("cli")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("COACH_", "OPENAI_"))}
    base.update({
        "COACH_DATA_DIR": str(workdir / "data"), "COACH_KNOWLEDGE_DIR": str(REPO / "knowledge"),
        "COACH_PROMPTS_DIR": str(REPO / "prompts"), "COACH_MODELS_DIR": str(REPO / "models"),
        "HF_HUB_OFFLINE": "1", "ANONYMIZED_TELEMETRY": "False", "PYTHONIOENCODING": "utf-8",
    })

    def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *args], input=stdin, capture_output=True, text=True, cwd=workdir,
                              env={**base, **(env or {})}, timeout=timeout, encoding="utf-8",
                              errors="surrogateescape")

    return run
