"""The chat UI: build_ui(coach, settings) -> gr.Blocks (never launches by itself); serve(settings) runs it."""

from __future__ import annotations

import html
import ipaddress
import json
import logging
import os
import re
import secrets
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

# Before gradio is imported: no analytics, no version check, no Hugging Face look-ups.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402
from gradio import component_meta  # noqa: E402
from gradio.components.chatbot import TextMessage  # noqa: E402

from coach.coach import Answer, Coach, InputError, clean_question  # noqa: E402
from coach.config import Settings  # noqa: E402
from coach.errors import CoachError  # noqa: E402
from coach.llm import make_backend  # noqa: E402
from coach.retrieval import Passage  # noqa: E402

log = logging.getLogger("coach.ui")

API_NAME = "chat"
SOURCES_TITLE = "Sources"
APOLOGY = "Sorry, something went wrong while answering (the details were logged). Please try again."
EXAMPLES = [
    "What are the key responsibilities of the role?",
    "Which technical and soft skills does the role require?",
    "How does career progression work in this role?",
    "What is the base salary range in the US?",
]
_HEADER = re.compile(r"^\*\*\[(\d+)\] (.*)\*\* · `([^`]*)`$")


# -- HTML in messages is shown as text ----------------------------------------------------------
def escape_text(text: str) -> str:
    """Text made inert for the chat's Markdown renderer: tags appear literally, images are not fetched."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("![", "&#33;[")


def unescape_text(text: str) -> str:
    """The inverse of escape_text."""
    return text.replace("&#33;[", "![").replace("&lt;", "<").replace("&amp;", "&")


@contextmanager
def _no_stub_files() -> Iterator[None]:
    """Gradio writes a .pyi stub beside the module of every Component subclass; not beside ours."""
    real = component_meta.create_or_modify_pyi
    setattr(component_meta, "create_or_modify_pyi", lambda *args, **kwargs: None)  # noqa: B010
    try:
        yield
    finally:
        setattr(component_meta, "create_or_modify_pyi", real)  # noqa: B010


with _no_stub_files():

    class SafeChatbot(gr.Chatbot):
        """The Chatbot, escaping message text on its way to the browser and restoring it on its way back.

        Sanitising alone (sanitize_html) would drop a `<script>` silently; escaping shows it as typed. A
        subclass (not a patched instance): Gradio rebuilds a session's component from its class on updates.
        """

        is_template = True  # drawn by the frontend's own chatbot component

        def _postprocess_content(self, chat_message: Any) -> Any:
            out = super()._postprocess_content(chat_message)
            if isinstance(out, TextMessage):
                return TextMessage(text=escape_text(out.text))
            return out

        def preprocess(self, payload: Any) -> list[Any]:
            messages = super().preprocess(payload)
            for message in messages:
                for part in message["content"]:
                    if part.get("type") == "text":
                        text_part = cast(dict[str, Any], part)
                        text_part["text"] = unescape_text(text_part["text"])
            return messages


class CoachChatInterface(gr.ChatInterface):
    """ChatInterface that ignores an empty message instead of adding an empty bubble to the chat."""

    def _append_message_to_history(self, message: Any, history: list[Any], role: Any = "user") -> list[Any]:
        if role == "user" and isinstance(message, str) and not message.strip():
            return list(history)
        return super()._append_message_to_history(message, history, role)


# -- conversation plumbing ----------------------------------------------------------------------
def _text(content: Any) -> str:
    """The text of a message's content in any of Gradio's shapes (str, part dicts, lists of them)."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, list | tuple):
        return "".join(_text(part) for part in content)
    return ""


def _title(message: dict[str, Any]) -> str:
    return str((message.get("metadata") or {}).get("title") or "")


def turns_for_coach(history: list[dict[str, Any]] | None, limit: int) -> list[dict[str, str]]:
    """Question/answer pairs of a Gradio history; sources blocks and refused questions are left out."""
    out: list[dict[str, str]] = []
    question: str | None = None
    for message in history or []:
        role, text = message.get("role"), _text(message.get("content"))
        if role == "user":
            question = text
        elif role == "assistant" and question is not None and not _title(message) and text.strip():
            if text != APOLOGY and _usable(question, limit):
                out += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
            question = None
    return out


def _usable(question: str, limit: int) -> bool:
    try:
        clean_question(question, limit)
        return True
    except InputError:
        return False


def sources_markdown(sources: list[Passage]) -> str:
    """The sources block: `[n] Section > Subsection · file`, then the passage quoted."""
    blocks = []
    for n, p in enumerate(sources, 1):
        quoted = "\n".join(f"> {line}" if line.strip() else ">" for line in p.text.strip().splitlines())
        blocks.append(f"**[{n}] {p.label}** · `{p.source}`\n\n{quoted}")
    return "\n\n".join(blocks)


def parse_sources(block: str) -> list[dict[str, Any]]:
    """The sources listed in a sources block (for the feedback log)."""
    out: list[dict[str, Any]] = []
    for line in block.splitlines():
        match = _HEADER.match(line)
        if match:
            out.append({"n": int(match[1]), "label": match[2], "source": match[3], "text": ""})
        elif out and line.startswith(">"):
            out[-1]["text"] = (out[-1]["text"] + "\n" + line[1:].removeprefix(" ")).strip("\n")
    return out


def _messages(text: str, sources: list[Passage]) -> list[gr.ChatMessage]:
    """An answer and, under it, its sources as a collapsed block."""
    out = [gr.ChatMessage(content=text)]
    if sources:
        out.append(gr.ChatMessage(content=sources_markdown(sources),
                                  metadata={"title": f"{SOURCES_TITLE} ({len(sources)})", "status": "done"}))
    return out


def _details(text: str, sources: list[Passage], answer: Answer | None = None, error: str | None = None
             ) -> dict[str, Any]:
    """What the API returns beside the chat messages: the answer and its sources as data."""
    data: dict[str, Any] = {
        "answer": text, "done": answer is not None or error is not None, "error": error,
        "sources": [{"n": n, "label": p.label, "section": p.section, "subsection": p.subsection,
                     "source": p.source, "text": p.text} for n, p in enumerate(sources, 1)],
    }
    if answer is not None:
        data.update(backend=answer.backend, model=answer.model, fallback=answer.fallback,
                    out_of_scope=answer.out_of_scope, ttft_ms=answer.ttft_ms, latency_ms=round(answer.latency_ms, 1))
    return data


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
    """The coaches a person may choose from, built on first use; all share the default coach's retriever."""

    def __init__(self, default: Coach, settings: Settings) -> None:
        self.default = default
        self.settings = settings
        self.choices = available_backends(default, settings)
        self._coaches = {default.backend_name: default}
        self._lock = threading.Lock()

    def get(self, name: str | None) -> Coach:
        """The coach answering with backend `name` (the default one when None)."""
        name = name or self.default.backend_name
        if name not in {n for _, n in self.choices}:
            raise CoachError(f"The {name} backend is not available here.")
        with self._lock:
            coach = self._coaches.get(name)
            if coach is None:
                backend = make_backend(name, self.settings)
                coach = Coach(self.settings, self.default.retriever, backend, self.default.prompts, backend_name=name)
                if backend is not None:
                    coach.warm_in_background()
                self._coaches[name] = coach
            return coach


def status_line(coach: Coach, answer: Answer | None = None) -> str:
    """Backend and model in use, indexed passages, and a note when the extractive fallback answered."""
    try:
        indexed = f"{coach.retriever.index.count():,} passages indexed"
    except Exception:  # a Chroma server that went away must not break the page
        indexed = "index unavailable"
    parts = [f"Backend **{html.escape(coach.backend_name)}**", f"model `{html.escape(coach.model_name)}`", indexed]
    if answer is not None:
        took = answer.latency_ms
        parts.append(f"answered in {took / 1000:.1f} s" if took >= 1000 else f"answered in {took:.0f} ms")
        if answer.fallback:
            parts.append(f"**note:** the extractive fallback answered ({html.escape(answer.fallback)})")
    elif coach.warm_error:
        parts.append(f"**note:** the model is not ready ({html.escape(coach.warm_error)})")
    return " · ".join(parts)


# -- feedback ----------------------------------------------------------------------------------
class FeedbackLog:
    """Likes and dislikes appended as JSON lines; the folder is created when missing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, row: dict[str, Any]) -> None:
        """Append one row (raises OSError when the file cannot be written)."""
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)


def feedback_row(history: list[dict[str, Any]], index: int | tuple[int, ...] | list[int], liked: Any
                 ) -> dict[str, Any] | None:
    """The feedback record of the answer at `index` in the history (None if there is no answer there)."""
    i = index[0] if isinstance(index, list | tuple) else int(index)
    if not 0 <= i < len(history):
        return None
    start = i
    while start >= 0 and history[start].get("role") != "user":
        start -= 1
    answer, block = "", ""
    for message in history[start + 1:]:
        if message.get("role") == "user":
            break
        if _title(message).startswith(SOURCES_TITLE):
            block = block or _text(message.get("content"))
        elif not _title(message) and not answer:
            answer = _text(message.get("content"))
    if not answer:
        return None
    verdict = {True: "like", False: "dislike"}.get(liked, str(liked or "unset"))
    return {"question": _text(history[start].get("content")) if start >= 0 else "", "answer": answer,
            "sources": parse_sources(block), "verdict": verdict,
            "time": datetime.now(UTC).isoformat(timespec="seconds")}


def record_feedback(feedback: FeedbackLog, history: list[dict[str, Any]], index: Any, liked: Any) -> str:
    """Record a like/dislike; returns the notice to show (a write failure is logged, never raised)."""
    row = feedback_row(history, index, liked)
    if row is None:
        return ""
    try:
        feedback.append(row)
    except OSError as exc:
        log.exception("could not write feedback to %s", feedback.path)
        return f"*Your feedback could not be saved ({html.escape(exc.strerror or type(exc).__name__)}).*"
    return f"*Thanks: your {row['verdict']} was recorded.*"


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


# -- the page ----------------------------------------------------------------------------------
def build_ui(coach: Coach, settings: Settings) -> gr.Blocks:
    """The chat page for this coach; call launch()/serve() to run it."""
    backends = Backends(coach, settings)
    feedback = FeedbackLog(settings.feedback_file)
    try:
        role = coach.role()
    except CoachError:
        role = "this role"

    def respond(message: str, history: list[dict[str, Any]], backend: str | None, top_k: float | None
                ) -> Iterator[tuple[list[gr.ChatMessage], Any, dict[str, Any]]]:
        text, sources = "", []
        try:
            chosen = backends.get(backend)
            turns = turns_for_coach(history, settings.max_question_chars)
            writing = chosen.backend is not None
            for event in chosen.stream(message or "", turns, top_k=int(top_k) if top_k else None):
                if event.kind == "sources":
                    sources = event.sources
                    interim = event.text + ("\n\n*Writing the answer…*" if writing else "")
                    yield _messages(interim or "*Writing the answer…*", sources), gr.skip(), _details("", sources)
                elif event.kind in ("token", "replace"):
                    text = text + event.text if event.kind == "token" else event.text
                    sources = event.sources or sources
                    yield _messages(text, sources), gr.skip(), _details(text, sources)
                elif event.kind == "done" and event.answer is not None:
                    answer = event.answer
                    yield (_messages(answer.text, answer.sources), status_line(chosen, answer),
                           _details(answer.text, answer.sources, answer))
        except InputError as exc:
            if not (message or "").strip():
                return  # an empty message is ignored
            yield [gr.ChatMessage(content=str(exc))], gr.skip(), _details("", [], error=str(exc))
        except CoachError as exc:  # e.g. the index became unreachable: what was shown stays, then the reason
            shown = _messages(text, sources) if text else []
            yield [*shown, gr.ChatMessage(content=str(exc))], gr.skip(), _details(text, sources, error=str(exc))
        except Exception:
            log.exception("answering %r failed", (message or "")[:200])
            yield [gr.ChatMessage(content=APOLOGY)], gr.skip(), _details(text, sources, error=APOLOGY)

    def on_like(history: list[dict[str, Any]], data: gr.LikeData) -> str:
        return record_feedback(feedback, history, data.index, data.liked)

    with gr.Blocks(title="Career coach", fill_height=True) as demo:
        gr.Markdown(f"### Career coach: {html.escape(role)}\nAnswers come only from the knowledge base, "
                    "with their sources under each answer.")
        status = gr.Markdown(status_line(coach), label="status", elem_id="coach-status", render=False)
        details = gr.JSON(label="details", visible=False, render=False)
        backend_choice = gr.Dropdown(backends.choices, value=coach.backend_name, label="Backend",
                                     info="Which model writes the answers", render=False)
        top_k = gr.Slider(1, 10, value=min(settings.top_k, 10), step=1, label="Passages",
                          info="How many passages to retrieve for each question", render=False)
        chat = CoachChatInterface(
            respond,
            chatbot=SafeChatbot(label="Coach", sanitize_html=True, render_markdown=True, scale=1,
                                placeholder="Ask about the role, or pick an example below.",
                                buttons=["copy"], elem_id="coach-chatbot"),
            textbox=gr.Textbox(placeholder="Ask a question about the role…", show_label=False, scale=7,
                               autofocus=True, submit_btn=True, stop_btn=True, elem_id="coach-input"),
            additional_inputs=[backend_choice, top_k],
            additional_inputs_accordion=gr.Accordion("Settings for this chat", open=False, render=False),
            additional_outputs=[status, details],
            examples=[[q] for q in EXAMPLES], example_labels=["Responsibilities", "Skills", "Progression", "Pay"],
            save_history=True, flagging_mode="never", api_name=API_NAME,
            concurrency_limit=settings.concurrency, fill_height=True,
        )
        status.render()
        notice = gr.Markdown(elem_id="coach-notice")
        details.render()
        chat.chatbot.like(on_like, [chat.chatbot], [notice], queue=False, api_visibility="private")
        demo.load(lambda: status_line(coach), None, [status], queue=False, api_visibility="private")

    secret = _browser_secret(settings)
    if secret:
        chat.saved_conversations.secret = secret
    # Answers from the page and from the API share one limit: the local model is one instance.
    for fn in demo.fns.values():
        if fn.name == "_submit_fn" or fn.api_name == API_NAME:
            fn.concurrency_id = "coach-answer"
            fn.concurrency_limit = settings.concurrency
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
