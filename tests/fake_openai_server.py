"""A real OpenAI-compatible HTTP server for tests, on the standard library only.

It listens on 127.0.0.1 on a free port, answers POST /v1/chat/completions (streamed as server-sent
events or as one JSON body), checks `Authorization: Bearer <key>`, records every request and replies
from a queue. Like the real API, a rejected key is echoed back in the 401 body, so a client that
prints the server's error text would leak it.

A `Fault` queued in place of a reply makes it misbehave for real, on its socket: hang before the headers
or after them (until the client hangs up, which it records), stream part of the answer and close the
connection, answer an HTTP error or a body that is not a chat stream, or stream slowly.
"""

from __future__ import annotations

import json
import re
import select
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

FaultKind = Literal["hang", "hang_after_headers", "cut", "status", "garbage", "slow"]


@dataclass
class Fault:
    """A way to misbehave, queued in `replies` in place of a reply.

    hang: read the request, then send nothing at all; hang_after_headers: send the headers of an event stream
    and the text (if any), then nothing; cut: stream `text`, then close the connection (no finish_reason, no
    [DONE]); status: answer HTTP `status` with an OpenAI-shaped error; garbage: answer 200 with `text` as the
    body (not server-sent events); slow: stream `text` properly, `delay` seconds between pieces.
    A hanging reply ends when the client hangs up (counted in `FakeOpenAIServer.hung_up`) or the server stops.
    """

    kind: FaultKind
    text: str = ""
    status: int = 500
    delay: float = 0.0


@dataclass
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict[str, Any]

    def header(self, name: str) -> str | None:
        """A request header, by case-insensitive name."""
        return self.headers.get(name.lower())

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages of a chat-completions request."""
        return list(self.body.get("messages") or [])


@dataclass
class FakeOpenAIServer:
    """A running server; `url` is its OpenAI base URL (ending in /v1)."""

    api_key: str = "sk-test-good-key"
    model: str = "fake-gpt"
    replies: list[str | Fault] = field(default_factory=list)
    default_reply: str = "I can help with that."
    requests: list[RecordedRequest] = field(default_factory=list)
    hanging: int = 0  # replies hanging right now
    hung_up: int = 0  # hanging replies whose client closed the connection
    released: threading.Event = field(default_factory=threading.Event)  # set: every hanging reply ends
    _httpd: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL to give an OpenAI client."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The chat-completions requests that got past the key check."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def next_reply(self) -> str | Fault:
        """The next queued reply (or fault), or the default reply."""
        with self._lock:
            return self.replies.pop(0) if self.replies else self.default_reply

    def count(self, name: str, step: int) -> None:
        """Add step to the counter `hanging` or `hung_up` (handlers run on threads of their own)."""
        with self._lock:
            setattr(self, name, getattr(self, name) + step)

    def start(self) -> FakeOpenAIServer:
        """Bind a free loopback port and serve on a daemon thread."""
        handler = type("Handler", (_Handler,), {"owner": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down and release its port (hanging replies end)."""
        self.released.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet when a client hangs up mid-reply (as the coach does on a stop or a timeout); loud otherwise."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _pieces(text: str) -> list[str]:
    """The reply cut into word-sized stream chunks (whitespace kept)."""
    return re.findall(r"\S+\s*|\s+", text) or [""]


def _peek(sock: socket.socket) -> bytes:
    """What the client sent that is not read yet; b"" when it closed the connection."""
    try:
        return sock.recv(1, socket.MSG_PEEK)
    except OSError:  # reset by the client
        return b""


class _Handler(BaseHTTPRequestHandler):
    owner: FakeOpenAIServer
    server_version = "FakeOpenAI/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `requests` instead of the access log."""

    # -- helpers ------------------------------------------------------------------------------
    def _json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _authorised(self) -> bool:
        given = self.headers.get("Authorization", "")
        if given == f"Bearer {self.owner.api_key}":
            return True
        key = given.removeprefix("Bearer ")
        # The real API names the rejected key in its message; so does this fake.
        self._json(401, {"error": {"message": f"Incorrect API key provided: {key}.",
                                   "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
        return False

    def _record(self, body: dict[str, Any]) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.owner.requests.append(RecordedRequest(self.command, self.path, headers, body))

    # -- endpoints ----------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._record({})
        if not self._authorised():
            return
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": self.owner.model, "object": "model"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._record({"raw": raw.decode("utf-8", "replace")})
            self._json(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
            return
        self._record(body)
        if not self._authorised():
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
            return
        reply = self.owner.next_reply()
        if isinstance(reply, Fault):
            self._fault(reply, body)
        elif body.get("stream"):
            self._stream(reply, body)
        else:
            self._complete(reply, body)

    def _complete(self, reply: str, body: dict[str, Any]) -> None:
        self._json(200, {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model") or self.owner.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": len(_pieces(reply)),
                      "total_tokens": 10 + len(_pieces(reply))},
        })

    def _stream_headers(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()

    def _events(self, body: dict[str, Any]) -> Any:
        """A function sending one chunk event of this reply."""
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model") or self.owner.model}

        def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            event = dict(base, choices=choices, **extra)
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()

        return send

    def _stream(self, reply: str, body: dict[str, Any], delay: float = 0.0) -> None:
        self._stream_headers()
        send = self._events(body)
        send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        for piece in _pieces(reply):
            time.sleep(delay)
            send([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        send([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        if (body.get("stream_options") or {}).get("include_usage"):
            send([], usage={"prompt_tokens": 10, "completion_tokens": len(_pieces(reply)),
                            "total_tokens": 10 + len(_pieces(reply))})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()

    # -- faults -------------------------------------------------------------------------------------
    def _fault(self, fault: Fault, body: dict[str, Any]) -> None:
        if fault.kind == "status":
            self._json(fault.status, {"error": {"message": f"internal failure {fault.status}", "type": "server_error",
                                                "param": None, "code": None}})
        elif fault.kind == "garbage":
            raw = fault.text.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(raw)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(raw)
        elif fault.kind == "slow":
            self._stream(fault.text, body, fault.delay)
        elif fault.kind == "hang":
            self._hang()
        else:  # hang_after_headers, cut: part of an answer first
            self._stream_headers()
            send = self._events(body)
            send([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            for piece in _pieces(fault.text) if fault.text else []:
                send([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
            if fault.kind == "hang_after_headers":
                self._hang()
            else:  # the connection closes now, mid-answer
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

    def _hang(self) -> None:
        """Send nothing until the client hangs up or the server is released."""
        owner, sock = self.owner, self.connection
        owner.count("hanging", 1)
        try:
            while not owner.released.is_set():
                readable, _, _ = select.select([sock], [], [], 0.05)
                if readable and not _peek(sock):
                    owner.count("hung_up", 1)
                    return
        finally:
            owner.count("hanging", -1)
            self.close_connection = True
