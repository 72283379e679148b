"""The `coach` command: models, index, search, ask, chat, eval, serve."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coach.config import Settings, load_settings
from coach.errors import CoachError

EXIT_USAGE = 2


def _settings(args: argparse.Namespace) -> Settings:
    """Settings with the flags that were given on top (flags override COACH_* and .env)."""
    return load_settings(
        knowledge_dir=getattr(args, "knowledge", None), data_dir=getattr(args, "data", None),
        models_dir=getattr(args, "models", None), chroma_url=getattr(args, "chroma_url", None),
        chroma_path=getattr(args, "chroma_path", None), backend=getattr(args, "backend", None),
        top_k=getattr(args, "k", None), host=getattr(args, "host", None), port=getattr(args, "port", None),
    )


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- models / index / search ------------------------------------------------------------------
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
        _say(f"all {len(wanted)} model files present and verified in {settings.models_dir}")
    return 0


def sync_index(settings: Settings, rebuild: bool = False, progress: bool = True) -> tuple[Any, Any]:
    """Load the knowledge folder and sync it into the index; returns (index, report)."""
    from coach import knowledge
    from coach.store import default_embedder, open_index

    kb = knowledge.load(Path(settings.knowledge_dir), settings.chunk_max_words)
    for warning in kb.warnings:
        _say(f"warning: {warning}")
    index = open_index(settings, default_embedder(settings))
    report = index.rebuild(kb.chunks, progress) if rebuild else index.sync(kb.chunks, progress)
    return index, report


def cmd_index(args: argparse.Namespace) -> int:
    """`coach index [--rebuild]`."""
    settings = _settings(args)
    _, report = sync_index(settings, rebuild=args.rebuild)
    where = settings.chroma_url or settings.chroma_dir
    print(f"{'rebuilt' if args.rebuild else 'synced'} {where}: {report.summary()}")
    return 0


def _question(text: str) -> str | None:
    text = (text or "").strip()
    return text or None


def cmd_search(args: argparse.Namespace) -> int:
    """`coach search QUESTION [--k N] [--json]`."""
    query = _question(args.query)
    if query is None:
        _say("error: the query is empty; ask something, e.g. coach search \"What does the role pay?\"")
        return EXIT_USAGE
    from coach.retrieval import build_retriever
    from coach.store import default_embedder, open_index

    settings = _settings(args)
    retriever = build_retriever(open_index(settings, default_embedder(settings)), settings)
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


# -- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `coach`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--knowledge", type=Path, help="knowledge folder (COACH_KNOWLEDGE_DIR)")
    common.add_argument("--data", type=Path, help="data folder (COACH_DATA_DIR)")
    common.add_argument("--models", type=Path, help="models folder (COACH_MODELS_DIR)")
    common.add_argument("--chroma-url", help="Chroma server URL (COACH_CHROMA_URL)")
    common.add_argument("--chroma-path", type=Path, help="embedded Chroma folder (COACH_CHROMA_PATH)")

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

    _add_answer_commands(sub, common)
    return parser


def _add_answer_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """ask / chat / eval / serve, defined in cli_answer to keep this module small."""
    from coach import cli_answer

    cli_answer.add_commands(sub, common)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `coach` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        code = int(args.func(args))
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
        if type(exc).__name__ == "ValidationError" and callable(errors):
            for err in errors():
                field = ".".join(str(p) for p in err.get("loc", ())) or "setting"
                _say(f"error: invalid setting {field}: {err.get('msg', 'invalid value')}")
            code = EXIT_USAGE
        else:
            raise
    if getattr(args, "timing", False):
        _say(f"({time.perf_counter() - started:.2f} s)")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
