"""The chat page: build_ui(coach, settings) -> gr.Blocks (never launches by itself); serve(settings) runs it.

Built from Gradio's public components and events only: a Chatbot drawn from the conversation kept as
data (coach.ui.chat), a Textbox, the saved conversations in the browser (BrowserState), and an `/chat`
API endpoint for gradio_client.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import logging
import secrets
import sys
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import gradio as gr

from coach.coach import Coach
from coach.config import Settings
from coach.conversation import InputError
from coach.errors import CoachError
from coach.ui import chat
from coach.ui.chat import Conversation, Turn
from coach.ui.feedback import FeedbackLog, record_feedback

log = logging.getLogger("coach.ui")

API_NAME = "chat"
ANSWERING = "coach-answer"  # the concurrency group of everything that asks the model
APOLOGY = "Sorry, something went wrong while answering (the details were logged). Please try again."
EXAMPLES = [
    ("Responsibilities", "What are the key responsibilities of the role?"),
    ("Skills", "Which technical and soft skills does the role require?"),
    ("Progression", "How does career progression work in this role?"),
    ("Pay", "What is the base salary range in the US?"),
]
Step = tuple[Any, Any, Any, Any]  # chatbot messages, status line, details, conversation
T = TypeVar("T")


# -- backends a person may pick -----------------------------------------------------------------
def available_backends(default: Coach, settings: Settings) -> list[tuple[str, str]]:
    """(label, name) of the backends that can work here: extractive always, the others when configured."""
    names = ["local", "openai", "extractive"]
    if default.backend_name not in names:
        names.append(default.backend_name)
    works = {
        "local": (Path(settings.models_dir) / settings.local_model_file).is_file(),
        "openai": bool(settings.openai_base_url or settings.openai_api_key),
        "extractive": True,
    }
    labels = {
        "local": f"local model ({Path(settings.local_model_file).stem})",
        "openai": f"OpenAI-compatible ({settings.openai_model})",
        "extractive": "extractive (quotes the sources, no model)",
    }
    return [(labels.get(n, n), n) for n in names if n == default.backend_name or works.get(n)]


class Backends:
    """The coaches a person may choose from, built on first use; all share the default coach's index."""

    def __init__(self, default: Coach, settings: Settings) -> None:
        self.default = default
        self.choices = available_backends(default, settings)
        self._coaches = {default.backend_name: default}
        self._lock = threading.Lock()

    def get(self, name: str | None) -> Coach:
        """The coach answering with backend `name` (the default one when None)."""
        from coach.factory import sibling

        name = name or self.default.backend_name
        if name not in {n for _, n in self.choices}:
            raise CoachError(f"The {name} backend is not available here.")
        with self._lock:
            if name not in self._coaches:
                coach = sibling(self.default, name)
                coach.warm_in_background()
                self._coaches[name] = coach
            return self._coaches[name]


def status_line(coach: Coach, took_ms: float | None = None, fallback: str | None = None) -> str:
    """Backend and model in use, indexed passages, and a note when the extractive fallback answered."""
    try:
        indexed = f"{coach.retriever.count():,} passages indexed"
    except Exception:  # a Chroma server that went away must not break the page
        indexed = "index unavailable"
    parts = [f"Backend **{html.escape(coach.backend_name)}**", f"model `{html.escape(coach.model_name)}`", indexed]
    if took_ms is not None:
        parts.append(f"answered in {took_ms / 1000:.1f} s" if took_ms >= 1000 else f"answered in {took_ms:.0f} ms")
        if fallback:
            parts.append(f"**note:** the extractive fallback answered ({html.escape(fallback)})")
    elif coach.warm_error:
        parts.append(f"**note:** the model is not ready ({html.escape(coach.warm_error)})")
    return " · ".join(parts)


def _browser_secret(settings: Settings) -> str | None:
    """A stable key for the conversations kept in the browser, so they survive a server restart."""
    path = Path(settings.data_dir) / ".ui-secret"
    try:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(24))
            path.chmod(0o600)
        return path.read_text().strip() or None
    except OSError:
        return None  # a random key: conversations then last until the server restarts


# -- answering ------------------------------------------------------------------------------------
def answer_steps(backends: Backends, settings: Settings, message: str, conversation: Conversation | None,
                 backend: str | None, top_k: float | None) -> Iterator[Step]:
    """The chat as it changes while one question is answered; the conversation data is the last item."""
    question = message or ""
    turn = Turn(question)
    try:
        coach = backends.get(backend)
        turn.backend = coach.backend_name
        history = chat.history_for_coach(conversation)
        shown = chat.with_turn(conversation, turn)
        for event in coach.stream(question, history, top_k=int(top_k) if top_k else None):
            if event.kind == "sources":
                turn.sources = chat.source_dicts(event.sources)
                if not coach.backend.generative:
                    continue  # its answer is the key points themselves, which come next
                interim = Turn(question, event.text, turn.sources, "answering", note="writing", backend=turn.backend)
                shown = chat.with_turn(conversation, interim)
            elif event.kind in ("token", "replace"):
                turn.answer = turn.answer + event.text if event.kind == "token" else event.text
                turn.sources = chat.source_dicts(event.sources) if event.sources else turn.sources
                shown = chat.with_turn(conversation, turn)
            elif event.kind == "done" and event.answer is not None:
                answer = event.answer
                turn.answer, turn.sources, turn.status = answer.text, chat.source_dicts(answer.sources), "answered"
                done = chat.with_turn(conversation, turn)
                yield (chat.render(done), status_line(coach, answer.latency_ms, answer.fallback),
                       chat.details(turn, answer), done)
                return
            yield chat.render(shown), gr.skip(), chat.details(turn), shown
    except InputError as exc:
        turn.status, turn.note = "refused", str(exc)
    except CoachError as exc:  # e.g. the index became unreachable: what was shown stays, then the reason
        turn.status, turn.note = "error", f"{turn.answer}\n\n{exc}".strip()
    except Exception:
        log.exception("answering %r failed", question[:200])
        turn.status, turn.note = "error", APOLOGY
    done = chat.with_turn(conversation, turn)
    yield chat.render(done), gr.skip(), chat.details(turn, error=turn.note), done


async def in_background(steps: Callable[[], Generator[T, None, None]]) -> AsyncIterator[T]:
    """The items of a blocking generator, produced on a worker thread.

    A stop (the event cancelled: the stop button, a closed tab) is felt at once, even while the model is
    silent; the generator is then closed on its own thread at its next item, which stops the model.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
    stop = threading.Event()

    def put(item: tuple[bool, Any]) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the server's loop is gone
            pass

    def produce() -> None:
        items = steps()
        try:
            for item in items:
                if stop.is_set():
                    break
                put((False, item))
        except Exception as exc:  # handed to the event, as if raised there
            put((True, exc))
        finally:
            items.close()  # GeneratorExit in the coach's stream: the model stops
            put((True, None))

    threading.Thread(target=produce, name="coach-answer", daemon=True).start()
    try:
        while True:
            done, item = await queue.get()
            if done:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()


def settle(conversation: Conversation | None) -> Conversation | None:
    """After an answer stopped by the person: its last turn is kept as stopped, not as still answering."""
    last = chat.turns(conversation)[-1:] if conversation else []
    if last and last[0].status == "answering":
        turn = last[0]
        turn.status, turn.note = "error", (turn.answer + "\n\n*(stopped)*").strip()
        return chat.with_turn(conversation, turn, replace_last=True)
    return conversation


def forget(conversation: Conversation | None, saved: list[Conversation] | None) -> tuple[Conversation, list[Any]]:
    """The chat was cleared: a new conversation, and the cleared one removed from the saved ones."""
    gone = (conversation or {}).get("id")
    return chat.new_conversation(), [c for c in saved or [] if isinstance(c, dict) and c.get("id") != gone]


def save_conversation(conversation: Conversation | None, saved: list[Conversation] | None) -> list[Conversation]:
    """The saved conversations with this one first (replacing its older copy)."""
    saved = [c for c in (saved or []) if isinstance(c, dict)]
    if not conversation or not conversation.get("turns"):
        return saved
    return [conversation, *(c for c in saved if c.get("id") != conversation.get("id"))][:50]


# -- the page ---------------------------------------------------------------------------------------
def build_ui(coach: Coach, settings: Settings) -> gr.Blocks:
    """The chat page for this coach; call launch()/serve() to run it."""
    backends = Backends(coach, settings)
    feedback = FeedbackLog(settings.feedback_file)
    try:
        role = coach.role()
    except CoachError:
        role = "this role"

    def submit_steps(message: str, conversation: Conversation | None, backend: str | None, top_k: float | None
                     ) -> Generator[tuple[Any, ...], None, None]:
        if not (message or "").strip():
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        busy = gr.Textbox(value="", submit_btn=False, stop_btn=True)
        for step in answer_steps(backends, settings, message, conversation, backend, top_k):
            yield busy, *step

    def api_steps(message: str, conversation: Conversation | None, backend: str | None, top_k: float | None
                  ) -> Generator[Step, None, None]:
        if not (message or "").strip():
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        yield from answer_steps(backends, settings, message, conversation, backend, top_k)

    # Async generators, so that a stop is felt while the model is silent (see in_background).
    async def on_submit(message: str, conversation: Conversation | None, backend: str | None,
                        top_k: float | None) -> AsyncIterator[tuple[Any, ...]]:
        async for step in in_background(lambda: submit_steps(message, conversation, backend, top_k)):
            yield step

    async def on_api(message: str, conversation: Conversation | None, backend: str | None, top_k: float | None
                     ) -> AsyncIterator[Step]:
        async for step in in_background(lambda: api_steps(message, conversation, backend, top_k)):
            yield step

    async def on_example(conversation: Conversation | None, backend: str | None, top_k: float | None,
                         data: gr.SelectData) -> AsyncIterator[tuple[Any, ...]]:
        value = data.value if isinstance(data.value, dict) else {}
        question = str(value.get("text", ""))
        async for step in in_background(lambda: submit_steps(question, conversation, backend, top_k)):
            yield step

    def on_like(conversation: Conversation | None, data: gr.LikeData) -> str:
        return record_feedback(feedback, chat.feedback_row(conversation, data.index, data.liked))

    with gr.Blocks(title="Career coach", fill_height=True) as demo:
        conversation = gr.State(None)
        saved = gr.BrowserState([], storage_key="coach_conversations", secret=_browser_secret(settings))
        gr.Markdown(f"### Career coach: {html.escape(role)}\nAnswers come only from the knowledge base, "
                    "with their sources under each answer.")
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=180):
                new_chat = gr.Button("New chat", variant="primary", elem_id="coach-new-chat")
                chats = gr.Dataset(components=[gr.Textbox(visible=False)], samples=[], type="index",
                                   layout="table", label="Conversations", elem_id="coach-chats")
            with gr.Column(scale=4):
                chatbot = gr.Chatbot(label="Coach", height=560, elem_id="coach-chatbot", buttons=["copy"],
                                     sanitize_html=True, render_markdown=True,
                                     placeholder="Ask about the role, or pick an example below.",
                                     examples=[{"display_text": label, "text": q} for label, q in EXAMPLES])
                textbox = gr.Textbox(placeholder="Ask a question about the role…", show_label=False, autofocus=True,
                                     submit_btn=True, stop_btn=False, elem_id="coach-input", max_lines=8)
                with gr.Accordion("Settings for this chat", open=False):
                    backend_choice = gr.Dropdown(backends.choices, value=coach.backend_name, label="Backend",
                                                 info="Which model writes the answers")
                    top_k = gr.Slider(1, 10, value=min(settings.top_k, 10), step=1, label="Passages",
                                      info="How many passages to retrieve for each question")
                status = gr.Markdown(status_line(coach), elem_id="coach-status")
                notice = gr.Markdown(elem_id="coach-notice")
                details = gr.JSON(label="details", visible=False)
                api_trigger = gr.Button(visible=False)

        inputs = [textbox, conversation, backend_choice, top_k]
        page_outputs = [textbox, chatbot, status, details, conversation]
        answering: dict[str, Any] = {"concurrency_id": ANSWERING, "concurrency_limit": settings.concurrency}
        asked = textbox.submit(on_submit, inputs, page_outputs, api_visibility="private", **answering)
        picked = chatbot.example_select(on_example, inputs[1:], page_outputs, api_visibility="private", **answering)
        api_trigger.click(on_api, inputs, [chatbot, status, details, conversation], api_name=API_NAME, **answering)
        for event in (asked, picked):
            event.then(settle, [conversation], [conversation], queue=False, api_visibility="private").then(
                lambda c: (gr.Textbox(submit_btn=True, stop_btn=False), chat.render(c)), [conversation],
                [textbox, chatbot], queue=False, api_visibility="private").then(
                save_conversation, [conversation, saved], [saved], queue=False, api_visibility="private")
        textbox.stop(None, None, None, cancels=[asked, picked], api_visibility="private")

        chatbot.like(on_like, [conversation], [notice], queue=False, api_visibility="private")
        new_chat.click(lambda: (chat.new_conversation(), []), None, [conversation, chatbot], queue=False,
                       api_visibility="private")
        chatbot.clear(forget, [conversation, saved], [conversation, saved], queue=False, api_visibility="private")
        gr.on([demo.load, saved.change], lambda s: gr.Dataset(samples=[[c.get("title", "")] for c in s or []]),
              [saved], [chats], queue=False, api_visibility="private")
        chats.click(lambda i, s: (s[i], chat.render(s[i])) if s and 0 <= i < len(s) else (gr.skip(), gr.skip()),
                    [chats, saved], [conversation, chatbot], queue=False, api_visibility="private")
        demo.load(lambda: status_line(coach), None, [status], queue=False, api_visibility="private")
    return demo


# -- running it --------------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether host is only reachable from this machine."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def launch(demo: gr.Blocks, settings: Settings, block: bool = True, quiet: bool = False) -> str:
    """Start the server on settings.host:port (blocking unless block=False); returns the local URL."""
    auth = None
    if settings.auth_username and settings.auth_password:
        auth = (settings.auth_username, settings.auth_password.get_secret_value())
    # Answers have their own limit (set in build_ui); light events of several people run side by side.
    demo.queue(default_concurrency_limit=max(4, settings.concurrency))
    _, url, _ = demo.launch(
        server_name=settings.host, server_port=settings.port, auth=auth, prevent_thread_lock=not block,
        show_error=False, quiet=quiet, share=False, inbrowser=False, ssr_mode=False, pwa=False,
        mcp_server=False, enable_monitoring=False, footer_links=["api", "settings"],
    )
    return str(url)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def serve(settings: Settings) -> int:
    """`coach serve` / `python app.py`: build the index if needed, warm the model, run the chat; exit code."""
    from coach.factory import build_coach

    if not is_loopback(settings.host) and not settings.allow_remote:
        _say(f"error: refusing to listen on {settings.host}: it is reachable from other machines; "
             "set COACH_ALLOW_REMOTE=true (and COACH_AUTH_USERNAME / COACH_AUTH_PASSWORD) to allow it.")
        return 2
    if bool(settings.auth_username) != bool(settings.auth_password):
        _say("warning: set both COACH_AUTH_USERNAME and COACH_AUTH_PASSWORD to require a login; serving without one.")
    elif not is_loopback(settings.host) and not settings.auth_username:
        _say(f"warning: serving on {settings.host} without a login (COACH_AUTH_USERNAME / COACH_AUTH_PASSWORD).")
    try:
        coach = build_coach(settings, say=_say)
        demo = build_ui(coach, settings)
    except CoachError as exc:
        _say(f"error: {exc}")
        return 1
    try:
        url = launch(demo, settings, block=False, quiet=True)
    except OSError as exc:
        _say(f"error: cannot listen on {settings.host}:{settings.port} ({exc}); set COACH_PORT to a free port.")
        return 1
    _say(f"coach: chat ready at {url} (backend {coach.backend_name}, model {coach.model_name}); Ctrl-C stops it.")
    # Only now: llama.cpp silences the whole process's stdout/stderr while it loads the model.
    coach.warm_in_background()
    try:
        demo.block_thread()  # until Ctrl-C, which closes the server
    except KeyboardInterrupt:  # a second Ctrl-C while it closes
        pass
    return 0
