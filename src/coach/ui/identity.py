"""Who is on the page: issued and verified by the server, never a value the browser chooses.

Without a log-in, a person is a random id in a cookie the server signs (HMAC-SHA256 with a key kept in
DATA_DIR/.identity-key, mode 0600, never sent anywhere): `HttpOnly` (no script reads it), `SameSite=Strict`
(no other site's page sends it), `Secure` over HTTPS. With a log-in, a person is the user name Gradio
verified. A request without a valid cookie is nobody until the page's first response gives it one: nothing
is read or written under an id a client made up.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any

from coach.config import Settings

log = logging.getLogger("coach.ui")

COOKIE = "coach_person"
MAX_AGE_S = 400 * 24 * 3600  # the longest lifetime browsers keep a cookie
API_PATHS = ("/v1", "/healthz")  # clients of the API carry keys, not cookies
_KNOWN: dict[Path, Identity] = {}  # Identity.of, per key file
_KNOWN_LOCK = threading.Lock()
Scope = MutableMapping[str, Any]
Asgi = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class Identity:
    """Issues and verifies the signed person cookie."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def of(cls, settings: Settings) -> Identity:
        """The identity of this data folder: its key file, made on first use (several instances share it).

        One object per folder in a process: the page's handlers and the middleware that issues the cookie must
        hold the same key, also when the folder cannot keep one and the key is random.
        """
        path = (Path(settings.data_dir) / ".identity-key").resolve()
        with _KNOWN_LOCK:
            if path not in _KNOWN:
                _KNOWN[path] = cls._load(path)
            return _KNOWN[path]

    @classmethod
    def _load(cls, path: Path) -> Identity:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:  # made once, by whichever instance comes first; the others read it
                handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except FileExistsError:
                pass
            else:
                with os.fdopen(handle, "w") as out:
                    out.write(secrets.token_hex(32))
            key = path.read_text().strip()
            if key:
                return cls(key.encode())
        except OSError as exc:
            log.warning("no identity key in %s (%s): people are known until the server restarts", path,
                        type(exc).__name__)
        return cls(secrets.token_bytes(32))

    def _sign(self, ident: str) -> str:
        return hmac.new(self._key, ident.encode(), hashlib.sha256).hexdigest()[:32]

    def issue(self, ident: str | None = None) -> str:
        """A cookie value for a new person (or, in tests, the one named)."""
        ident = ident or secrets.token_hex(16)
        return f"{ident}.{self._sign(ident)}"

    def verify(self, value: str | None) -> str | None:
        """The person's id in a cookie value, or None when it is missing or not signed by this key."""
        ident, _, signature = (value or "").rpartition(".")
        if not ident or not hmac.compare_digest(signature.encode(), self._sign(ident).encode()):
            return None
        return ident

    def person(self, request: Any) -> str:
        """The key of the person making a Gradio request: `user:NAME` with a log-in, `browser:ID` with a valid
        cookie, else "" (nobody yet)."""
        if request is None:
            return ""
        username = getattr(request, "username", None)
        if username:
            return f"user:{username}"
        try:
            headers = request.headers
        except AttributeError:
            return ""
        ident = self.verify(_cookies(headers.get("cookie", "") if headers is not None else "").get(COOKIE))
        return f"browser:{ident}" if ident else ""


def _cookies(header: str) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}


class IdentityMiddleware:
    """ASGI middleware (Starlette's `Middleware(IdentityMiddleware, identity=...)`): a response to a request
    without a valid person cookie sets a new one."""

    def __init__(self, app: Asgi, identity: Identity) -> None:
        self.app = app
        self.identity = identity

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        app, identity = self.app, self.identity
        if scope["type"] != "http" or scope.get("path", "").startswith(API_PATHS):
            await app(scope, receive, send)
            return
        raw = b"; ".join(v for k, v in scope.get("headers", []) if k == b"cookie").decode("latin-1")
        if identity.verify(_cookies(raw).get(COOKIE)):
            await app(scope, receive, send)
            return
        value = identity.issue()
        # This request already counts as the new person's (its handlers read the cookie from its headers).
        merged = f"{raw}; {COOKIE}={value}" if raw else f"{COOKIE}={value}"
        scope = {**scope, "headers": [*(h for h in scope.get("headers", []) if h[0] != b"cookie"),
                                      (b"cookie", merged.encode("latin-1"))]}
        secure = "; Secure" if scope.get("scheme") == "https" else ""
        header = f"{COOKIE}={value}; Path=/; Max-Age={MAX_AGE_S}; HttpOnly; SameSite=Strict{secure}"

        async def send_with_cookie(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"set-cookie", header.encode("latin-1"))]}
            await send(message)

        await app(scope, receive, send_with_cookie)
