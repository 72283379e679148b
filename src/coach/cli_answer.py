"""`coach ask`, `coach chat`, `coach eval`, `coach serve`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

from coach.config import BACKENDS, Settings
from coach.errors import CoachError


def _settings(args: argparse.Namespace) -> Settings:
    from coach.cli import _settings as settings_from_args

    return settings_from_args(args)


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _coach(args: argparse.Namespace) -> Any:
    from coach.factory import build_coach

    settings = _settings(args)
    return build_coach(settings, say=_err)


def print_sources(sources: list[Any], out: TextIO, full: bool = True) -> None:
    """Sources as `[n] Section > Subsection (file)`, with the passage quoted when full."""
    for n, p in enumerate(sources, 1):
        print(f"[{n}] {p.label} ({p.source})", file=out)
        if full:
            for line in p.text.splitlines():
                print(f"      {line}", file=out)


def stream_answer(coach: Any, question: str, history: list[dict[str, Any]], out: TextIO) -> Any:
    """Print an answer as it streams: sources first (the moment retrieval ends), then the text."""
    final = None
    wrote = False
    for event in coach.stream(question, history):
        if event.kind == "sources":
            labels = "; ".join(f"[{n}] {p.label}" for n, p in enumerate(event.sources, 1))
            _err(f"sources: {labels}")
        elif event.kind == "token":
            out.write(event.text)
            out.flush()
            wrote = True
        elif event.kind == "replace":
            # The streamed text was revised (a figure removed, or the fallback answered): print it whole.
            out.write("\n\n(revised answer)\n" if wrote else "")
            out.write(event.text)
            out.flush()
            wrote = True
        elif event.kind == "done":
            final = event.answer
            if not wrote:
                out.write(event.text)
    out.write("\n")
    if final is not None and final.sources:
        print("\nSources:", file=out)
        print_sources(final.sources, out)
    if final is not None and final.fallback:
        _err(f"note: {final.fallback}")
    return final


def cmd_ask(args: argparse.Namespace) -> int:
    """`coach ask QUESTION [--backend B] [--json]`."""
    from coach.coach import InputError, clean_question

    settings = _settings(args)
    try:
        clean_question(args.question, settings.max_question_chars)
    except InputError as exc:
        _err(f"error: {exc}")
        return 2
    coach = _coach(args)
    if args.json:
        final = None
        for event in coach.stream(args.question, []):
            if event.kind == "done":
                final = event.answer
        print(json.dumps(final.to_dict() if final else {}, ensure_ascii=False, indent=1))
        return 0
    stream_answer(coach, args.question, [], sys.stdout)
    return 0


def _leave(code: int, warming: threading.Thread) -> int:
    """The exit code; if the background warm-up is still running, the process ends here at once.

    Native code (onnxruntime, llama.cpp) busy in a daemon thread aborts the interpreter's shutdown
    ("terminate called without an active exception"); nothing of the warm-up needs to be kept.
    """
    if warming.is_alive():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def cmd_chat(args: argparse.Namespace) -> int:
    """`coach chat`: a conversation in the terminal (/new starts over, /quit or Ctrl-D leaves)."""
    from coach.coach import InputError

    coach = _coach(args)
    warming = coach.warm_in_background()
    _err(f"coach ({coach.backend_name}, {coach.model_name}) — ask about the {coach.role()} role. "
         "/new starts over, /quit leaves.")
    history: list[dict[str, Any]] = []
    while True:
        try:
            question = input("\nyou> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return _leave(0, warming)
        if question.strip() in {"/quit", "/exit"}:
            return _leave(0, warming)
        if question.strip() == "/new":
            history = []
            _err("(new conversation)")
            continue
        if not question.strip():
            continue
        print("coach> ", end="", flush=True)
        try:
            final = stream_answer(coach, question, history, sys.stdout)
        except InputError as exc:
            print(f"\n{exc}")
            continue
        if final is not None:
            history += [{"role": "user", "content": question}, {"role": "assistant", "content": final.text}]


def cmd_eval(args: argparse.Namespace) -> int:
    """`coach eval FILE.jsonl [--backend B] [--out RESULTS.jsonl]`."""
    from coach import evaluation

    path = Path(args.file)
    if not path.is_file():
        raise CoachError(f"{path} does not exist")
    coach = _coach(args)
    coach.warm()
    summary = evaluation.run(coach, path, Path(args.out) if args.out else None)
    print(f"backend {coach.backend_name} ({coach.model_name}), context {coach.context_mode()}")
    print(evaluation.format_summary(summary))
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=1))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """`coach serve`: the chat UI (builds the index first if needed)."""
    from coach.ui import serve

    return serve(_settings(args))


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Register the answer commands."""
    backend = argparse.ArgumentParser(add_help=False)
    backend.add_argument("--backend", choices=[*BACKENDS, "fake"], help="chat backend (COACH_BACKEND)")
    backend.add_argument("--k", type=int, help="passages retrieved per question (COACH_TOP_K)")

    p = sub.add_parser("ask", parents=[common, backend], help="answer one question, with its sources")
    p.add_argument("question")
    p.add_argument("--json", action="store_true", help="one JSON object instead of streamed text")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("chat", parents=[common, backend], help="a conversation in the terminal")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("eval", parents=[common, backend], help="score the coach on a JSONL question set")
    p.add_argument("file")
    p.add_argument("--out", help="write one JSON line per question here")
    p.add_argument("--summary-json", help="write the summary as JSON here")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve", parents=[common, backend], help="start the chat UI")
    p.add_argument("--host", help="address to listen on (COACH_HOST; non-loopback needs COACH_ALLOW_REMOTE)")
    p.add_argument("--port", type=int, help="port (COACH_PORT)")
    p.set_defaults(func=cmd_serve)
