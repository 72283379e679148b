"""The coach as an OpenAI-compatible API: /v1/models and /v1/chat/completions (streamed or not), and /healthz.

Served on the same server and port as the chat page (mounted by coach.ui.server.launch). Answers come
from the same pipeline as the page (Coach.stream): retrieval, the checks, refusals, the planner. Sources
come back as data on the choice (and on the stream's chunks) in private-gpt's shape; clients that ignore
them still work. System messages of a client are ignored: they never override the coach's own rules.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Generator
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from coach import roles
from coach.answer import Answer, Event
from coach.background import in_background
from coach.coach import Coach, Limits
from coach.config import Settings, is_loopback
from coach.conversation import InputError, clean_question
from coach.errors import BusyError, CoachError
from coach.llm.base import parallel_answers
from coach.retrieval import Passage
from coach.text import estimate_tokens, strip_citations

log = logging.getLogger("coach.api")
MODEL_ID = roles.MODEL_ID
RETRY_AFTER_S = 5


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        """The JSON error body and status."""
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class ErrorDetail(BaseModel):
    """What went wrong, as OpenAI says it."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every error's body."""

    error: ErrorDetail


class ContentPart(BaseModel):
    """A part of a message's content (only text parts are read)."""

    model_config = ConfigDict(extra="allow")
    type: str = "text"
    text: str | None = None


class ChatMessage(BaseModel):
    """One message of the conversation."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text."""
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    """OpenAI's stream options."""

    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The body of POST /v1/chat/completions (unknown fields are accepted and ignored)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(MODEL_ID, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=500)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=100_000)
    max_completion_tokens: int | None = Field(None, ge=1, le=100_000)


class Slots:
    """At most `running` answers at once, `waiting` more in line; beyond both a request is told to come back (429)."""

    def __init__(self, running: int, waiting: int) -> None:
        self.limit = running + waiting
        self.taken = 0
        self.lock = threading.Lock()
        self.running = threading.BoundedSemaphore(running)  # held while an answer is being written

    def take(self) -> None:
        """Reserve a place, or raise 429."""
        with self.lock:
            if self.taken >= self.limit:
                raise ApiError(429, f"The coach is busy answering {self.taken} questions; try again in "
                               f"{RETRY_AFTER_S} s.", "rate_limit_error", "busy", headers={
                                   "Retry-After": str(RETRY_AFTER_S)})
            self.taken += 1

    def give_back(self) -> None:
        """Release a place."""
        with self.lock:
            self.taken = max(0, self.taken - 1)


def source_dict(n: int, p: Passage) -> dict[str, Any]:
    """A source in private-gpt's shape (context.chunk of an ingest.document), numbered as cited."""
    return {"object": "context.chunk", "index": n, "score": round(p.score, 6), "text": p.text,
            "document": {"object": "ingest.document", "doc_id": p.id,
                         "doc_metadata": {"file_name": p.source, "section": p.section, "subsection": p.subsection,
                                          "label": p.label}},
            "previous_texts": None, "next_texts": None}


def sources_of(passages: list[Passage]) -> list[dict[str, Any]]:
    """The sources of an answer, numbered from 1 as the answer cites them."""
    return [source_dict(n, p) for n, p in enumerate(passages, 1)]


def conversation_of(body: ChatCompletionRequest, limit: int) -> tuple[str, list[dict[str, str]]]:
    """The question (the last user message) and the earlier user/assistant turns; system messages are left out."""
    turns = [{"role": m.role, "content": m.text()} for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1]["role"] != "user":
        raise ApiError(400, "The last message must be the user's question.", param="messages")
    question = turns[-1]["content"]
    if len(question) > limit:
        raise ApiError(400, f"The question is {len(question):,} characters long; the limit is {limit:,}.",
                       param="messages", code="question_too_long")
    return question, turns[:-1]


def usage(answer: Answer, question: str, history: list[dict[str, str]]) -> dict[str, int]:
    """Token counts: the model's own when it wrote the answer, else estimated from the text."""
    prompt = answer.prompt_tokens or estimate_tokens(question + "".join(m["content"] for m in history))
    completion = answer.completion_tokens or estimate_tokens(answer.text)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def coach_fields(answer: Answer) -> dict[str, Any]:
    """What the coach adds beside OpenAI's fields."""
    data: dict[str, Any] = {"route": answer.route, "backend": answer.backend, "model": answer.model,
                            "fallback": answer.fallback, "out_of_scope": answer.out_of_scope,
                            "standalone_question": answer.standalone}
    if answer.plan is not None:
        data["plan"] = answer.plan
    return data


def _same_words(a: str, b: str) -> bool:
    def norm(t: str) -> str:
        return " ".join(re.sub(r"\s+", " ", strip_citations(t)).split())

    return norm(a) == norm(b)


def build_api(coach: Coach, settings: Settings) -> FastAPI:
    """The /v1 application (mounted under /v1 of the page's server)."""
    keys = settings.api_key_set()
    # With no key set, nothing is answered where the page itself is closed to strangers: reachable from other
    # machines (serve() says so at start), or behind a log-in that the API must not bypass.
    closed = not keys and (not is_loopback(settings.host) or settings.ui_login() is not None)
    # The local model's scheduler keeps its own line (COACH_QUEUE): the API adds none in front of it.
    slots = Slots(parallel_answers(settings, coach.backend_name),
                  0 if coach.backend_name == "local" else settings.api_queue)
    # Errors are documented as they are answered (400, not FastAPI's 422, in OpenAI's shape).
    errors: dict[int | str, dict[str, Any]] = {"4XX": {"model": ErrorBody, "description": "A refused request"},
                                               "5XX": {"model": ErrorBody, "description": "Not answered now"}}
    app = FastAPI(title="coach: OpenAI-compatible API", version="1", docs_url=None, redoc_url=None, responses=errors)
    app.state.slots = slots  # the readiness check reports how many answers are in flight

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return ApiError(400, f"Invalid request: {where or 'body'}: {first.get('msg', 'not valid')}.",
                        param=where or None).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return ApiError(exc.status_code, str(exc.detail), kind).response()

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:  # a last resort: see authorize
        log.error("API request failed", exc_info=exc)
        return _server_error()

    @app.middleware("http")
    async def authorize(request: Request, call_next: Any) -> Any:
        if closed:
            where = "behind the page's log-in" if is_loopback(settings.host) else f"on {settings.host}"
            return ApiError(401, f"The API does not answer {where} without keys: set COACH_API_KEYS.",
                            "authentication_error", "api_keys_required").response()
        if keys:
            given = request.headers.get("authorization", "")
            token = given[7:].strip() if given.lower().startswith("bearer ") else ""
            if not any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
                why = "No API key was given" if not token else "The API key is not valid"
                return ApiError(401, f"{why}: send `Authorization: Bearer KEY` with a key from COACH_API_KEYS.",
                                "authentication_error", "invalid_api_key").response()
        try:
            return await call_next(request)
        except Exception as exc:
            # Answered here: an exception left to Starlette's handler is re-raised to the server after the 500,
            # which then closes the connection, and the client's next request on it fails ("connection reset").
            log.error("API request failed", exc_info=exc)
            return _server_error()

    def listed() -> list[tuple[str, str]]:
        """(model id, role) of every model: `coach` for the default role, then, when the knowledge base holds
        several roles, `coach:<slug>` for each."""
        try:
            found = coach.roles()
        except CoachError:
            found = ()
        if len(found) <= 1:
            return [(MODEL_ID, _role(coach))]
        return [(MODEL_ID, found[0]), *((roles.model_id(r), r) for r in found)]

    def picked(model_id: str) -> Coach:
        """The coach of the role a model id names; 404 naming the ids there are."""
        ids = dict(listed())
        if model_id in ids:
            return coach.for_role(ids[model_id]) if model_id != MODEL_ID else coach
        raise ApiError(404, f"The model `{model_id[:80]}` does not exist; use one of: {', '.join(ids)}.",
                       "not_found_error", "model_not_found", "model")

    @app.get("/models", summary="The coach as a model, one per role")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{
            "id": ident, "object": "model", "created": 0, "owned_by": "coach",
            "metadata": {"role": role, "backend": coach.backend_name, "model": coach.model_name}}
            for ident, role in listed()]}

    @app.get("/models/{model_id}", summary="One model")
    def model(model_id: str) -> dict[str, Any]:
        picked(model_id)
        return next(m for m in models()["data"] if m["id"] == model_id)

    @app.post("/chat/completions", summary="Answer the conversation's last question", response_model=None,
              responses={200: {"description": "A chat.completion, or chat.completion.chunk events when `stream`",
                               "content": {"application/json": {}, "text/event-stream": {}}}})
    async def chat_completions(body: ChatCompletionRequest) -> Any:
        answering = picked(body.model)  # the conversation keeps its role: the client sends the same model id
        question, history = conversation_of(body, settings.max_question_chars)
        try:  # the coach's own cleaning: a question of only invisible characters is refused here, not mid-stream
            clean_question(question, settings.max_question_chars)
        except InputError as exc:
            raise ApiError(400, str(exc), param="messages") from None
        if coach.warming:
            raise ApiError(503, f"The model is still loading; try again in {RETRY_AFTER_S} s.", "server_error",
                           "model_not_ready", headers={"Retry-After": str(RETRY_AFTER_S)})
        limits = Limits(body.max_completion_tokens or body.max_tokens, body.temperature)
        try:
            coach.check_capacity()
        except BusyError as exc:
            raise _busy(exc) from None
        slots.take()
        if body.stream:
            return StreamingResponse(_stream(answering, question, history, limits, body, slots),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            final = None
            async for event in in_background(lambda: _events(answering, question, history, limits, slots)):
                final = event.answer or final
        except InputError as exc:
            raise ApiError(400, str(exc), param="messages") from None
        except BusyError as exc:  # filled up by the page's questions since the check above
            raise _busy(exc) from None
        except CoachError as exc:
            raise ApiError(503, str(exc), "server_error", "unavailable") from None
        finally:
            slots.give_back()
        assert final is not None
        return _completion(final, question, history, body.model)

    return app


def _busy(exc: BusyError) -> ApiError:
    return ApiError(429, str(exc), "rate_limit_error", "busy", headers={"Retry-After": str(exc.retry_after)})


def _server_error() -> JSONResponse:
    return ApiError(500, "Something went wrong while answering (the details were logged).", "server_error").response()


def _role(coach: Coach) -> str:
    try:
        return coach.role()
    except CoachError:
        return "this role"


def _events(coach: Coach, question: str, history: list[dict[str, str]], limits: Limits, slots: Slots
            ) -> Generator[Event, None, None]:
    """The coach's events, once an answering slot is free (the wait runs on the worker thread)."""
    with slots.running:
        yield from coach.stream(question, history, limits=limits)


def _completion(answer: Answer, question: str, history: list[dict[str, str]], model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text}, "finish_reason": "stop",
                     "sources": sources_of(answer.sources)}],
        "usage": usage(answer, question, history), "coach": coach_fields(answer),
    }


async def _stream(coach: Coach, question: str, history: list[dict[str, str]], limits: Limits,
                  body: ChatCompletionRequest, slots: Slots) -> AsyncIterator[str]:
    """Server-sent events: the answer's pieces as chat.completion.chunk objects, then `data: [DONE]`."""
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, **extra}
        data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": body.model,
                "choices": [choice]}
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    sent = ""
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for event in in_background(lambda: _events(coach, question, history, limits, slots)):
            if event.kind == "sources":
                yield chunk({}, sources=sources_of(event.sources))
            elif event.kind == "token":
                sent += event.text
                yield chunk({"content": event.text})
            elif event.kind == "replace" and not _same_words(event.text, sent):
                # A stream cannot take text back: the corrected answer follows, and `coach.replace` carries it
                # whole for clients that can show it instead.
                addition = event.text[len(sent):] if event.text.startswith(sent) else f"\n\n{event.text}"
                sent += addition
                yield chunk({"content": addition}, coach={"replace": event.text})
            elif event.kind == "done" and event.answer is not None:
                answer = event.answer
                if not sent and answer.text:  # refusals and declines arrive whole
                    yield chunk({"content": answer.text})
                yield chunk({}, "stop", sources=sources_of(answer.sources), coach=coach_fields(answer))
                if body.stream_options is not None and body.stream_options.include_usage:
                    data = {"id": ident, "object": "chat.completion.chunk", "created": created,
                            "model": body.model, "choices": [], "usage": usage(answer, question, history)}
                    yield f"data: {json.dumps(data)}\n\n"
    except CoachError as exc:  # e.g. the question was refused: an error event in OpenAI's shape
        error = {"error": {"message": str(exc), "type": "invalid_request_error" if isinstance(exc, InputError)
                           else "server_error", "param": None, "code": None}}
        yield f"data: {json.dumps(error)}\n\n"
    except Exception:
        log.exception("streaming an answer failed")
        yield f"data: {json.dumps({'error': {'message': 'Something went wrong (the details were logged).', 'type': 'server_error', 'param': None, 'code': None}})}\n\n"  # noqa: E501
    finally:
        slots.give_back()
    yield "data: [DONE]\n\n"


def health(coach: Coach) -> tuple[int, dict[str, Any]]:
    """Readiness for process managers and load balancers: 200 when the index answers and the model is warm."""
    try:
        index: dict[str, Any] = {"ok": True, "passages": coach.retriever.count()}
    except Exception as exc:  # an unreachable Chroma server, a damaged index
        index = {"ok": False, "error": type(exc).__name__}
    model = {"backend": coach.backend_name, "name": coach.model_name, "warm": not coach.warming,
             "error": coach.warm_error}
    ready = bool(index["ok"]) and index.get("passages", 0) > 0 and not coach.warming
    return (200 if ready else 503), {"status": "ready" if ready else "starting" if coach.warming else "unavailable",
                                     "index": index, "model": model}
