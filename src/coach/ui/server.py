"""Running the chat page: where it listens (loopback unless allowed), log-in, start-up; `serve` is `coach serve`."""

from __future__ import annotations

import re
import secrets
import sys
from pathlib import Path

import gradio as gr
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware
from starlette.routing import Mount

from coach.coach import Coach
from coach.config import Settings, is_loopback
from coach.errors import CoachError
from coach.ui.identity import Identity, IdentityMiddleware
from coach.watch import KnowledgeWatch


def browser_storage_key(settings: Settings) -> str | None:
    """A stable key for the conversations kept in the browser, so they survive a server restart.

    Not a secret: Gradio sends it to every page (/config) to encrypt what that browser keeps. Nothing that
    needs secrecy uses it; who a person is comes from the signed cookie (coach.ui.identity).
    """
    path = Path(settings.data_dir) / ".ui-secret"
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path.read_text().strip() or None
    except OSError:
        return None  # a random key: conversations then last until the server restarts


# -- running it --------------------------------------------------------------------------------
def launch(demo: gr.Blocks, settings: Settings, block: bool = True, quiet: bool = False,
           coach: Coach | None = None) -> str:
    """Start the server on settings.host:port (blocking unless block=False); returns the local URL.

    With `coach`, the same server also answers the OpenAI-compatible API under /v1 and /healthz.
    """
    auth = settings.ui_login()  # CoachError when only one of user name and password is set
    # Answers have their own limit (set in build_ui); light events of several people run side by side.
    demo.queue(default_concurrency_limit=max(4, settings.concurrency))
    app, url, _ = demo.launch(
        server_name=settings.host, server_port=settings.port, auth=auth, prevent_thread_lock=True,
        show_error=False, quiet=quiet, share=False, inbrowser=False, ssr_mode=False, pwa=False,
        mcp_server=False, enable_monitoring=False, footer_links=["api", "settings"],
        max_file_size="10mb",  # a résumé larger than this is refused before it is uploaded
        app_kwargs={"middleware": [Middleware(IdentityMiddleware, identity=Identity.of(settings))]},
    )
    if coach is not None:
        mount_api(app, coach, settings)
    if block:
        demo.block_thread()
    return str(url)


def mount_api(app: FastAPI, coach: Coach, settings: Settings) -> None:
    """The OpenAI-compatible API at /v1 and the readiness check at /healthz, on the page's own server."""
    from coach.api import build_api, health

    v1 = build_api(coach, settings)

    def healthz() -> JSONResponse:
        status, body = health(coach)
        slots = v1.state.slots
        body["api"] = {"in_flight": slots.taken, "limit": slots.limit}  # answering or waiting, and how many may
        status_of = getattr(coach.backend, "status", None)
        if status_of is not None:  # the local model's batch: slots, line, tokens written
            body["model"]["batch"] = status_of()
        return JSONResponse(body, status_code=status)

    api = Mount("/v1", app=v1)
    # Starlette's pattern stops at a line break: a path holding an encoded one (%0A) would miss the API and get the
    # page's 404 ({"detail": ...}) instead of an error in OpenAI's shape.
    api.path_regex = re.compile(api.path_regex.pattern, re.DOTALL)
    app.router.routes.append(api)
    app.add_api_route("/healthz", healthz, methods=["GET", "HEAD"], include_in_schema=False)  # balancers use HEAD


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def serve(settings: Settings) -> int:
    """`coach serve` / `python app.py`: build the index if needed, warm the model, run the chat; exit code."""
    from coach.factory import build_coach
    from coach.ui.app import build_ui

    try:  # half-configured protection refuses to start: it would otherwise run open
        keys = settings.api_key_set()
        login = settings.ui_login() is not None
    except CoachError as exc:
        _say(f"error: {exc}")
        return 2
    if not is_loopback(settings.host) and not (settings.allow_remote and (login or keys)):
        _say(f"error: refusing to listen on {settings.host}: it is reachable from other machines; set "
             "COACH_ALLOW_REMOTE=true and a log-in (COACH_AUTH_USERNAME / COACH_AUTH_PASSWORD) or API keys "
             "(COACH_API_KEYS) to allow it.")
        return 2
    if (login or not is_loopback(settings.host)) and not keys:
        where = "behind the log-in" if is_loopback(settings.host) else f"on {settings.host}"
        _say(f"warning: no COACH_API_KEYS: the API at /v1 answers nobody {where} (401) until keys are set.")
    try:
        coach = build_coach(settings, say=_say)
        demo = build_ui(coach, settings)
    except CoachError as exc:
        _say(f"error: {exc}")
        return 1
    try:
        url = launch(demo, settings, block=False, quiet=True, coach=coach)
    except OSError as exc:
        _say(f"error: cannot listen on {settings.host}:{settings.port} ({exc}); set COACH_PORT to a free port.")
        return 1
    _say(f"coach: chat ready at {url} and the OpenAI-compatible API at {url.rstrip('/')}/v1 (backend "
         f"{coach.backend_name}, model {coach.model_name}); Ctrl-C stops it.")
    # Only now: llama.cpp silences the whole process's stdout/stderr while it loads the model.
    coach.warm_in_background()
    KnowledgeWatch(settings, coach.retriever.index, say=_say).start()  # edits to the knowledge folder are followed
    try:
        demo.block_thread()  # until Ctrl-C, which closes the server
    except KeyboardInterrupt:  # a second Ctrl-C while it closes
        pass
    return 0
