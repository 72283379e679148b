"""The `coach` command: models, index, search, ask, chat, plan, eval, serve, feedback."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from coach.config import BACKENDS, Settings, SettingsError, load_settings
from coach.conversation import valid_text
from coach.errors import CoachError

EXIT_USAGE = 2


def _settings(args: argparse.Namespace) -> Settings:
    """Settings with the flags that were given on top (flags override COACH_* and .env)."""
    return load_settings(
        knowledge_dir=getattr(args, "knowledge", None), data_dir=getattr(args, "data", None),
        models_dir=getattr(args, "models", None), chroma_url=getattr(args, "chroma_url", None),
        chroma_path=getattr(args, "chroma_path", None), backend=getattr(args, "backend", None),
        top_k=getattr(args, "k", None), host=getattr(args, "host", None), port=getattr(args, "port", None),
        role=getattr(args, "role", None),
    )


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _coach(args: argparse.Namespace) -> Any:
    from coach.factory import build_coach

    return build_coach(_settings(args), say=_say)


# -- models / index / search --------------------------------------------------------------------
def cmd_models(args: argparse.Namespace) -> int:
    """`coach models install|check`."""
    from coach import models

    settings = _settings(args)
    wanted = models.EMBEDDING_FILES if args.embeddings_only else models.ALL_FILES
    if args.action == "install":
        written = models.install(Path(settings.models_dir), wanted, say=_say)
        _say(f"models ready in {settings.models_dir} ({written} file(s) written)")
    else:
        models.check(Path(settings.models_dir), wanted)
        models.verify(Path(settings.models_dir), wanted)  # the sha256 too: a file garbled in place is caught
        _say(f"all {len(wanted)} model files present and verified in {settings.models_dir}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    """`coach index [--rebuild]`."""
    from coach.factory import sync_index
    from coach.store import default_embedder, open_index

    settings = _settings(args)
    index = open_index(settings, default_embedder(settings))
    report = sync_index(settings, index, rebuild=args.rebuild, progress=True, say=_say)
    where = settings.chroma_url or settings.chroma_dir
    print(f"{'rebuilt' if args.rebuild else 'synced'} {where}: {report.summary()}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """`coach search QUESTION [--k N] [--json]`."""
    query = valid_text(args.query or "").strip()  # bytes that are not UTF-8 come in as lone surrogates
    if not query:
        _say("error: the query is empty; ask something, e.g. coach search \"What does the role pay?\"")
        return EXIT_USAGE
    from coach.factory import build_retriever_for

    settings = _settings(args)
    retriever = build_retriever_for(settings, sync=False)
    passages = retriever.search(query, k=settings.top_k, mode=args.mode)
    if args.json:
        print(json.dumps([p.to_dict() for p in passages], ensure_ascii=False, indent=1))
        return 0
    if not retriever.covered(passages):
        print("(nothing in the knowledge base is close to this question)")
    for n, p in enumerate(passages, 1):
        print(f"[{n}] {p.label}  ({p.source}, score {p.score:.4f}, dense {p.dense:.2f})")
        for line in p.text.splitlines():
            print(f"    {line}")
    return 0


# -- ask / chat / eval / serve ------------------------------------------------------------------
def print_sources(sources: list[Any], out: TextIO) -> None:
    """Sources as `[n] Section > Subsection (file)`, each with its passage quoted."""
    for n, p in enumerate(sources, 1):
        print(f"[{n}] {p.label} ({p.source})", file=out)
        for line in p.text.splitlines():
            print(f"      {line}", file=out)


def stream_answer(coach: Any, question: str, history: list[dict[str, Any]], out: TextIO) -> Any:
    """Print an answer as it streams: sources first (the moment retrieval ends), then the text."""
    final, wrote = None, False
    for event in coach.stream(question, history):
        if event.kind == "sources":
            _say("sources: " + "; ".join(f"[{n}] {p.label}" for n, p in enumerate(event.sources, 1)))
        elif event.kind in ("token", "replace"):
            if event.kind == "replace":  # the streamed text was revised (a figure removed, the fallback answered)
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
        _say(f"note: {final.fallback}")
    return final


def cmd_ask(args: argparse.Namespace) -> int:
    """`coach ask QUESTION [--backend B] [--json]`."""
    from coach.conversation import InputError, clean_question

    try:
        clean_question(args.question, _settings(args).max_question_chars)
    except InputError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    coach = _coach(args)
    question = valid_text(args.question)
    if args.json:
        print(json.dumps(coach.answer(question).to_dict(), ensure_ascii=False, indent=1))
    else:
        stream_answer(coach, question, [], sys.stdout)
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
    if isinstance(sys.stdin, io.TextIOWrapper):  # a byte that is not UTF-8 becomes U+FFFD, not the end of the chat
        sys.stdin.reconfigure(errors="replace")
    coach = _coach(args)
    warming = coach.warm_in_background()
    _say(f"coach ({coach.backend_name}, {coach.model_name}) — ask about the {coach.role()} role. "
         "/new starts over, /quit leaves.")
    history: list[dict[str, Any]] = []
    while True:
        try:
            question = valid_text(input("\nyou> "))
        except (EOFError, KeyboardInterrupt):
            print()
            return _leave(0, warming)
        if question.strip() in {"/quit", "/exit"}:
            return _leave(0, warming)
        if question.strip() == "/new":
            history = []
            _say("(new conversation)")
            continue
        if not question.strip():
            continue
        print("coach> ", end="", flush=True)
        try:
            final = stream_answer(coach, question, history, sys.stdout)
        except CoachError as exc:  # a question that cannot be asked, a failure: said, and the chat goes on
            print(f"\n{exc}")
            continue
        if final is not None:
            history += [{"role": "user", "content": question}, {"role": "assistant", "content": final.text}]


def cmd_eval(args: argparse.Namespace) -> int:
    """`coach eval FILE.jsonl... [--backend B] [--out RESULTS.jsonl]`: one row per file."""
    from coach import evaluation

    paths = [Path(f) for f in args.files]
    for path in paths:  # every file, and where the results go, checked before the model is even loaded
        if not path.is_file():
            raise CoachError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
        evaluation.load_items(path)
    for out in (args.out, args.summary_json):
        if out:
            evaluation.check_writable(Path(out))
    coach = _coach(args)
    coach.warm()
    summaries = evaluation.run_files(coach, paths, Path(args.out) if args.out else None)
    print(f"backend {coach.backend_name} ({coach.model_name}), context {coach.context_mode()}")
    print(evaluation.format_table(summaries))
    if args.summary_json:
        try:
            Path(args.summary_json).write_text(json.dumps(summaries, indent=1))
        except OSError as exc:
            raise CoachError(f"cannot write to {args.summary_json} ({exc.strerror}).") from None
    return 0


def _profile_file(path: Path, coach: Any) -> Any:
    """A profile from a file: YAML or JSON fields, or a résumé (PDF, DOCX, Markdown, text) read by rules."""
    from pydantic import ValidationError

    from coach.planner import Profile, Reading

    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            return Reading(Profile.model_validate(data))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise CoachError(f"{path} cannot be read as YAML or JSON ({type(exc).__name__}).") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            raise CoachError(f"{path}: {'.'.join(map(str, first['loc'])) or 'profile'}: {first['msg']}") from None
    return coach.read_resume(path)


def cmd_plan(args: argparse.Namespace) -> int:
    """`coach plan ["I have 6 years ..."] [--profile FILE] [--json]`: the assessment of a person, by rules."""
    from coach.planner import assess, read_profile, render, to_dict

    args.text = valid_text(args.text or "")
    if not args.text.strip() and args.profile is None:
        _say('error: tell me about yourself, e.g. coach plan "I have 6 years as a developer", or give --profile FILE')
        return EXIT_USAGE
    coach = _coach(args)
    card = coach.planner.card(coach.retriever.library())
    base = _profile_file(Path(args.profile), coach) if args.profile else None
    said = read_profile(args.text, card)
    profile = base.profile.merged(said.profile) if base else said.profile
    problems = [*(base.problems if base else []), *said.problems]
    assessment = assess(profile, card)
    question = args.text or "Am I ready for this role, and what should I focus on?"
    report = render(assessment, question, problems)
    if args.json:
        print(json.dumps({**to_dict(assessment, problems), "answer": report.text,
                          "sources": [{"n": n, "label": c.label, "source": c.source}
                                      for n, c in enumerate(report.cites, 1)]}, ensure_ascii=False, indent=1))
        return 0
    print(report.text)
    if report.cites:
        print("\nSources:")
        for n, c in enumerate(report.cites, 1):
            print(f"[{n}] {c.label} ({c.source})")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """`coach serve`: the chat UI (builds the index first if needed)."""
    from coach.ui import serve

    return serve(_settings(args))


def cmd_feedback(args: argparse.Namespace) -> int:
    """`coach feedback`: every like and dislike kept, one JSON object a line, oldest first."""
    from coach.feedback import FeedbackStore

    store = FeedbackStore(_settings(args).database)
    try:
        for row in store.rows():
            print(json.dumps(row, ensure_ascii=False))
    finally:
        store.close()
    return 0


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `coach`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--knowledge", type=Path, help="knowledge folder (COACH_KNOWLEDGE_DIR)")
    common.add_argument("--data", type=Path, help="data folder (COACH_DATA_DIR)")
    common.add_argument("--models", type=Path, help="models folder (COACH_MODELS_DIR)")
    common.add_argument("--chroma-url", help="Chroma server URL (COACH_CHROMA_URL)")
    common.add_argument("--chroma-path", type=Path, help="embedded Chroma folder (COACH_CHROMA_PATH)")
    common.add_argument("--role", help="the role to answer about, by name or slug, when the knowledge folder "
                        "holds several (COACH_ROLE)")
    backend = argparse.ArgumentParser(add_help=False)
    backend.add_argument("--backend", choices=[*BACKENDS, "fake"], help="chat backend (COACH_BACKEND)")
    backend.add_argument("--k", type=int, help="passages retrieved per question (COACH_TOP_K)")

    parser = argparse.ArgumentParser(prog="coach", description="A career coach that answers from its "
                                     "knowledge base, with citations, offline.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("models", parents=[common], help="install or check the model files")
    p.add_argument("action", choices=["install", "check"])
    p.add_argument("--embeddings-only", action="store_true", help="only the embedding model")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("index", parents=[common], help="sync the knowledge folder into the index")
    p.add_argument("--rebuild", action="store_true", help="rebuild from scratch (old index kept until done)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", parents=[common], help="show the passages retrieved for a question")
    p.add_argument("query")
    p.add_argument("--k", type=int, help="passages to return")
    p.add_argument("--json", action="store_true", help="one JSON array on stdout")
    p.add_argument("--mode", choices=["hybrid", "dense"], default="hybrid")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("ask", parents=[common, backend], help="answer one question, with its sources")
    p.add_argument("question")
    p.add_argument("--json", action="store_true", help="one JSON object instead of streamed text")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("chat", parents=[common, backend], help="a conversation in the terminal")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("eval", parents=[common, backend], help="score the coach on JSONL question sets")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--out", help="write one JSON line per question here")
    p.add_argument("--summary-json", help="write the summaries as JSON here")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("plan", parents=[common, backend], help="assess yourself against the role: verdict, gaps, plan")
    p.add_argument("text", nargs="?", default="", help='what you would tell a coach: "I have 6 years as a developer"')
    p.add_argument("--profile", help="a profile file: YAML/JSON fields, or a résumé (PDF, DOCX, Markdown, text)")
    p.add_argument("--json", action="store_true", help="one JSON object: profile, verdict, requirements, ladder, ...")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("serve", parents=[common, backend], help="start the chat UI")
    p.add_argument("--host", help="address to listen on (COACH_HOST; non-loopback needs COACH_ALLOW_REMOTE)")
    p.add_argument("--port", type=int, help="port (COACH_PORT)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("feedback", parents=[common], help="export the likes and dislikes of answers (JSON lines)")
    p.set_defaults(func=cmd_feedback)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `coach` console script."""
    args = build_parser().parse_args(argv)
    started = time.perf_counter()
    try:
        code = int(args.func(args))
    except SettingsError as exc:
        _say(f"error: {exc}")
        code = EXIT_USAGE
    except CoachError as exc:
        _say(f"error: {exc}")
        code = 1
    except KeyboardInterrupt:
        _say("interrupted")
        code = 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        code = 0
    except Exception as exc:  # pydantic validation of a bad env var, etc.: one line, not a traceback
        errors = getattr(exc, "errors", None)
        if type(exc).__name__ != "ValidationError" or not callable(errors):
            raise
        for err in errors():
            field = ".".join(str(p) for p in err.get("loc", ())) or "setting"
            _say(f"error: invalid setting {field}: {err.get('msg', 'invalid value')}")
        code = EXIT_USAGE
    if getattr(args, "timing", False):
        _say(f"({time.perf_counter() - started:.2f} s)")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
