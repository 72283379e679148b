"""Plain helpers shared by the tests (fixtures live in conftest.py): ports, fake backends, event readers."""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from coach.answer import Answer, Event
from coach.coach import Coach
from coach.errors import BackendUnavailableError
from coach.llm.base import Request
from coach.llm.fake import FakeChat

REPO = Path(__file__).resolve().parent.parent
SALARY = "Salary Ranges (US Market, 2024)"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    """Poll condition until it returns something truthy; fail naming `what` after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.03)


# -- fake backends ----------------------------------------------------------------------------------
class CachingChat(FakeChat):
    """A fake with a cheap cached prefix, like the local llama.cpp backend: knowledge mode, no rewrite call."""

    name = "fake-local"
    caches_prefix = True


class CharChat(CachingChat):
    """Streams one character at a time, so citations and figures arrive split across pieces."""

    def stream(self, request: Request) -> Iterator[str]:
        for piece in super().stream(request):
            yield from piece


class BreaksMidway(FakeChat):
    """Streams a few words, then the connection drops."""

    def stream(self, request: Request) -> Iterator[str]:
        self.requests.append(request)
        yield "Entry level pays "
        yield "$150,000 "
        raise BackendUnavailableError("the connection to http://127.0.0.1:9 was reset")


class SlowChat(FakeChat):
    """The queued-reply fake, streaming word by word with a pause so that streaming can be seen."""

    def __init__(self, delay: float = 0.04, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.delay = delay

    def stream(self, request: Request) -> Iterator[str]:
        for piece in super().stream(request):
            time.sleep(self.delay)
            yield piece


class GateChat(FakeChat):
    """Streams its first word, then waits until the test opens the gate: an answer in progress, on demand."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = threading.Event()
        self.waiting = threading.Event()
        self.gated = False  # set by the test: the next answer waits at the gate

    def stream(self, request: Request) -> Iterator[str]:
        gated, self.gated = self.gated, False
        for i, piece in enumerate(super().stream(request)):
            if gated and i == 1:
                self.waiting.set()
                if not self.gate.wait(60):
                    raise BackendUnavailableError("the test never opened the gate")
            yield piece


# -- reading a streamed answer ------------------------------------------------------------------------
def ask(coach: Coach, question: str, history: list[dict[str, Any]] | None = None) -> tuple[list[Event], Answer]:
    """Every event of one answer, and the final Answer."""
    events = list(coach.stream(question, history))
    assert events[-1].kind == "done" and events[-1].answer is not None
    return events, events[-1].answer


def shown(events: list[Event]) -> str:
    """What a chat window shows at the end: the streamed tokens, overwritten by any `replace`."""
    text = ""
    for e in events:
        if e.kind == "token":
            text += e.text
        elif e.kind == "replace":
            text = e.text
        elif e.kind == "done" and not text:
            text = e.text
    return text


def ever_shown(events: list[Event]) -> str:
    """Everything that was on screen at some point (tokens and replacements)."""
    return "\n".join(e.text for e in events if e.kind in ("token", "replace"))


def plain(text: str) -> str:
    """Text without [n] citations, whitespace collapsed."""
    return " ".join(re.sub(r"\[\d+(?:\s*[,;]\s*\d+)*\]", " ", text).split())


def turn(question: str, answer: str) -> list[dict[str, Any]]:
    """One earlier question and answer, as a chat history."""
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


# -- nothing leaves the machine ---------------------------------------------------------------
class OffMachineConnection(RuntimeError):
    """Raised by the guard when code under test connects to a non-loopback address."""


def is_local(family: int, address: Any) -> bool:
    """Whether a socket address stays on this machine (loopback, localhost, or not an IP socket)."""
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
    """Records every attempted off-machine connection and refuses it."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def check(self, sock: socket.socket, address: Any) -> None:
        """Refuse an off-machine address."""
        if not is_local(sock.family, address):
            self.attempts.append(repr(address))
            raise OffMachineConnection(f"test tried to connect off the machine: {address!r}")

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Route socket.connect and connect_ex through the check."""
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
        guard = self

        def connect(self: socket.socket, address: Any) -> None:
            guard.check(self, address)
            return real_connect(self, address)

        def connect_ex(self: socket.socket, address: Any) -> int:
            guard.check(self, address)
            return real_connect_ex(self, address)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
