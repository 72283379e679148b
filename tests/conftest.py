"""Shared fixtures: paths, settings on tmp_path, the embedders, a real `chroma run` server, a network guard."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Before anything imports gradio, huggingface_hub or chromadb: nothing may phone home.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["ANONYMIZED_TELEMETRY"] = "False"
# A COACH_* variable of the developer's shell must not reach the settings (or the `coach` subprocesses).
for _name in [n for n in os.environ if n.startswith("COACH_")]:
    del os.environ[_name]

from coach.config import Settings  # noqa: E402
from coach.embeddings import FakeEmbeddings, MiniLMEmbeddings  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(knowledge_dir: Path, data_dir: Path, models_dir: Path, **extra: Any) -> Settings:
    """Settings with these folders, blind to any .env file (COACH_* variables are cleared above)."""
    return Settings(_env_file=None, knowledge_dir=knowledge_dir, data_dir=data_dir,
                    models_dir=models_dir, **extra)


# -- paths and settings ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The project folder (the one holding pyproject.toml)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def models_dir(repo_root: Path) -> Path:
    """The real models folder filled by `coach models install`."""
    return repo_root / "models"


@pytest.fixture(scope="session")
def settings_factory() -> Any:
    """make_settings(knowledge_dir, data_dir, models_dir, **extra): Settings blind to .env and COACH_*."""
    return make_settings


@pytest.fixture
def knowledge_copy(tmp_path: Path, repo_root: Path) -> Path:
    """A private copy of the repository's knowledge folder, safe to edit."""
    dest = tmp_path / "knowledge"
    shutil.copytree(repo_root / "knowledge", dest)
    return dest


@pytest.fixture
def tmp_settings(tmp_path: Path, knowledge_copy: Path, models_dir: Path) -> Settings:
    """Settings on tmp_path: a copy of knowledge/, an empty data folder, the real models folder."""
    data = tmp_path / "data"
    data.mkdir()
    return make_settings(knowledge_copy, data, models_dir)


@pytest.fixture(autouse=True)
def _no_coach_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A COACH_* variable of the developer's shell must not change what a test sees."""
    for name in list(os.environ):
        if name.startswith("COACH_"):
            monkeypatch.delenv(name)


# -- embedders --------------------------------------------------------------------------------
@pytest.fixture
def fake_embedder() -> FakeEmbeddings:
    """The deterministic hashed bag-of-words embedder."""
    return FakeEmbeddings()


@pytest.fixture(scope="session")
def real_embedder(models_dir: Path) -> MiniLMEmbeddings:
    """The real offline MiniLM model, loaded once per session."""
    return MiniLMEmbeddings(models_dir)


# -- a real Chroma server -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chroma_server() -> Iterator[str]:
    """A `chroma run` server on a free loopback port for the whole session; yields its URL."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    exe = VENV_BIN / "chroma"
    if not exe.exists():
        pytest.fail(f"{exe} not found: the venv has no `chroma` executable")
    workdir = Path(tempfile.mkdtemp(prefix="coach-chroma-server-"))
    port = free_port()
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(exe), "run", "--path", str(workdir / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"chroma run exited with {proc.returncode}: "
                            f"{(workdir / 'server.log').read_text(errors='replace')[-2000:]}")
            try:
                chromadb.HttpClient(host="127.0.0.1", port=port,
                                    settings=ChromaSettings(anonymized_telemetry=False)).heartbeat()
                break
            except Exception:
                if time.monotonic() > deadline:
                    pytest.fail("chroma run did not answer a heartbeat within 60 s")
                time.sleep(0.25)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


# -- nothing leaves the machine ---------------------------------------------------------------
class OffMachineConnection(RuntimeError):
    """Raised by the guard when code under test connects to a non-loopback address."""


def _is_local(family: int, address: Any) -> bool:
    if family not in (socket.AF_INET, socket.AF_INET6):
        return True  # AF_UNIX and friends never leave the machine
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host).split("%", 1)[0]  # drop an IPv6 zone id
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a host name other than localhost: it would be resolved and reached off-machine
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


class NetworkGuard:
    """Records every attempted off-machine connection; the test fails if there was one."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def check(self, sock: socket.socket, address: Any) -> None:
        if not _is_local(sock.family, address):
            self.attempts.append(repr(address))
            raise OffMachineConnection(f"test tried to connect off the machine: {address!r}")


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[NetworkGuard]:
    """Fail any test that opens a connection to anything but loopback or a Unix socket."""
    guard = NetworkGuard()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        guard.check(self, address)
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        guard.check(self, address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    yield guard
    # Code under test may swallow the exception (e.g. "server unreachable"): fail here regardless.
    if guard.attempts:
        pytest.fail(f"off-machine connection attempted: {', '.join(guard.attempts)}")
