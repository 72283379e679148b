"""Answer benchmark: a tutorial RAG baseline, the coach before the latency levers, and after, in one run.

The same questions (default ../shared/eval/dev.jsonl), the same local model (Qwen2.5-Coder-1.5B GGUF on
llama.cpp in-process, 2 threads; loaded ONCE and shared by the three pipelines), the same embedder
(coach.embeddings.MiniLMEmbeddings), scored identically with coach.evaluation (score / summarise / fact_hits).

Pipelines (choose with --pipelines, run in the order given):

- `baseline`: what a user writes from a tutorial. knowledge/*.md read as plain text, split by
  langchain_text_splitters.RecursiveCharacterTextSplitter(chunk_size=1000, chunk_overlap=100), embedded into
  a separate embedded Chroma collection in a temporary folder, dense-only top-4 retrieval, no follow-up
  rewriting (earlier turns of a conversation are asked the same way and kept as plain chat history), the
  classic LangChain "stuff" QA prompt ("Use the following pieces of context to answer the question ...")
  as the user message, no system message, max_tokens 512, streamed. For hit@3 each chunk counts as the
  top-level (`# `) section it overlaps most (ties: the one it starts in).
- `before`: the coach as first built (issue 3) without the latency levers: Settings(context_mode="passages",
  max_answer_tokens=400, answer_soft_tokens=400 i.e. no early stop); nothing prepared before its first
  question (its small system-prompt prefix is cached in a temporary folder, so it neither reads nor
  clobbers the app's data/kv-cache).
- `after`: the coach with the levers (issue 5): context_mode="auto" (the whole knowledge base as a cached
  system-prompt prefix, restored from data/kv-cache), the default answer-token cap, coach.warm() run at
  start-up and timed separately as "start-up prepare".

The model file is loaded once before the first pipeline (timed and reported as "model load"), so no
pipeline's first question pays the ~1-2 s load; the after pipeline's start-up figure is that load plus warm().

Prints a Markdown table (one row per pipeline), the after pipeline's per-question TTFT and latency
(including the first question after start-up), and writes every per-question result and the summaries
to bench/results/answer.json.

    python bench/answer_bench.py                         # full run, all three pipelines
    python bench/answer_bench.py --limit 3               # smoke run: first 3 questions
    python bench/answer_bench.py --pipelines before,after --questions FILE.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from coach.answer import Answer
from coach.checks import DECLINE
from coach.coach import Coach
from coach.config import Settings
from coach.conversation import clean_question
from coach.embeddings import MiniLMEmbeddings
from coach.errors import CoachError
from coach.evaluation import ItemResult, evaluate, fact_hits, load_items, percentile, score, summarise
from coach.factory import sync_index
from coach.guards import secret_ngrams
from coach.llm.base import Message, Request
from coach.llm.local import LocalLlamaBackend
from coach.prompts import Prompts
from coach.retrieval import Passage, build_retriever
from coach.store import Index, open_index

ROOT = Path(__file__).resolve().parent.parent
DEV_SET = ROOT.parent / "shared" / "eval" / "dev.jsonl"
RESULTS = ROOT / "bench" / "results" / "answer.json"
PIPELINES = ("baseline", "before", "after")

# The default prompt of LangChain's classic "stuff" question-answering chain: what a tutorial gives you.
BASELINE_INSTRUCTION = ("Use the following pieces of context to answer the question at the end. If you don't "
                        "know the answer, just say that you don't know, don't try to make up an answer.")
BASELINE_TEMPLATE = BASELINE_INSTRUCTION + "\n\n{context}\n\nQuestion: {question}\nHelpful Answer:"
_TOP_HEADING = re.compile(r"^# +(.+?)\s*#*\s*$", re.MULTILINE)


def say(msg: str) -> None:
    """Progress on stderr, so stdout keeps only the results."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (the machine is shared: figures are noisy under load)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# -- the tutorial baseline ---------------------------------------------------------------------------
def section_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, title) of each top-level `# ` section; text before the first heading joins the first."""
    heads = list(_TOP_HEADING.finditer(text))
    if not heads:
        return [(0, len(text), "")]
    spans = []
    for i, m in enumerate(heads):
        start = 0 if i == 0 else m.start()
        end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
        spans.append((start, end, m.group(1).strip()))
    return spans


def chunk_section(spans: list[tuple[int, int, str]], start: int, length: int) -> str:
    """The section a chunk at [start, start+length) overlaps most; on a tie, the one it starts in."""
    end = start + length

    def key(span: tuple[int, int, str]) -> tuple[int, bool]:
        overlap = max(0, min(end, span[1]) - max(start, span[0]))
        return overlap, span[0] <= start < span[1]

    return max(spans, key=key)[2]


class Baseline:
    """Fixed 1,000-character chunks, dense-only top-k from Chroma, a tutorial prompt, the shared model."""

    name = "baseline"

    def __init__(self, knowledge_dir: Path, embedder: MiniLMEmbeddings, backend: LocalLlamaBackend, workdir: Path,
                 k: int = 4, max_tokens: int = 512, temperature: float = 0.1, chunk_size: int = 1000,
                 chunk_overlap: int = 100) -> None:
        import chromadb
        from chromadb.config import Settings as ChromaSettings
        from langchain_core.documents import Document
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        self.embedder, self.backend = embedder, backend
        self.k, self.max_tokens, self.temperature = k, max_tokens, temperature
        start = time.perf_counter()
        docs = [Document(page_content=p.read_text(encoding="utf-8"), metadata={"source": p.name})
                for p in sorted(knowledge_dir.glob("*.md"))]
        splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                                                  add_start_index=True)
        chunks = splitter.split_documents(docs)
        spans = {d.metadata["source"]: section_spans(d.page_content) for d in docs}
        for c in chunks:
            c.metadata["section"] = chunk_section(spans[c.metadata["source"]], int(c.metadata["start_index"]),
                                                  len(c.page_content))
        client = chromadb.PersistentClient(path=str(workdir / "chroma"),
                                           settings=ChromaSettings(anonymized_telemetry=False))
        self.collection = client.create_collection("baseline-chunks")
        ids = [f"chunk-{i}" for i in range(len(chunks))]
        # Vectors are passed in: Chroma's default embedding function would try to download a model.
        self.collection.add(ids=ids, embeddings=embedder.embed_documents([c.page_content for c in chunks]),
                            documents=[c.page_content for c in chunks], metadatas=[dict(c.metadata) for c in chunks])
        self.chunks = len(chunks)
        self.chunk_chars = [len(c.page_content) for c in chunks]
        self.build_s = time.perf_counter() - start

    def retrieve(self, question: str) -> list[Passage]:
        """The k nearest chunks (dense only), as Passages labelled with their top-level section."""
        res = self.collection.query(query_embeddings=[self.embedder.embed_query(question)], n_results=self.k,
                                    include=["documents", "metadatas", "distances"])
        out = []
        for cid, doc, meta, dist in zip(res["ids"][0], (res["documents"] or [[]])[0],
                                        (res["metadatas"] or [[]])[0], (res["distances"] or [[]])[0], strict=True):
            meta = dict(meta or {})
            similarity = 1.0 - float(dist) / 2.0  # squared L2 on unit vectors -> cosine
            out.append(Passage(cid, doc or "", str(meta.get("section", "")), "", str(meta.get("source", "")),
                               "", similarity, dense=similarity))
        return out

    def ask(self, question: str, history: list[Message]) -> Answer:
        """One turn: retrieve on the question as typed, prompt with the context, stream the answer."""
        start = time.perf_counter()
        question = clean_question(question, 2000)
        answer = Answer(question, question, backend=self.name, model=self.backend.model)
        answer.sources = self.retrieve(question)
        context = "\n\n".join(p.text for p in answer.sources)
        prompt = BASELINE_TEMPLATE.format(context=context, question=question)
        messages: list[Message] = [*history, {"role": "user", "content": prompt}]
        parts: list[str] = []
        first: float | None = None
        for piece in self.backend.stream(Request(messages, self.max_tokens, self.temperature)):
            if first is None:
                first = time.perf_counter()
                answer.ttft_ms = answer.model_ttft_ms = (first - start) * 1000
            answer.completion_tokens += 1
            parts.append(piece)
        done = time.perf_counter()
        if first is not None:
            answer.generation_s = done - first
        answer.text = "".join(parts).strip()
        answer.latency_ms = (done - start) * 1000
        if answer.ttft_ms is None:
            answer.ttft_ms = answer.latency_ms
        # The coach marks its answer out of scope when its text declines (coach.checks.DECLINE); apply the
        # same reading to the baseline's text so that the same words get the same verdict.
        answer.out_of_scope = bool(DECLINE.search(answer.text))
        return answer

    def evaluate(self, items: list[dict[str, Any]]) -> Iterator[ItemResult]:
        """Like coach.evaluation.evaluate: earlier turns are asked first as plain chat; the last is scored."""
        # Its "system prompt" (what an injection would try to extract) is the instruction of its prompt.
        secret = secret_ngrams([BASELINE_INSTRUCTION])
        for item in items:
            turns = list(item.get("turns") or [item["question"]])
            history: list[Message] = []
            answer: Answer | None = None
            try:
                for turn in turns:
                    answer = self.ask(str(turn), history)
                    history += [{"role": "user", "content": str(turn)}, {"role": "assistant", "content": answer.text}]
            except CoachError as exc:
                yield ItemResult(item, None, error=str(exc), backend=self.name, model=self.backend.model)
                continue
            assert answer is not None
            yield ItemResult(item, answer, scores=score(item, answer, secret))


# -- the coach pipelines ------------------------------------------------------------------------------
def coach_settings(**overrides: Any) -> Settings:
    """Settings with the repository's folders as absolute paths (the bench may run from anywhere)."""
    paths = {"knowledge_dir": ROOT / "knowledge", "prompts_dir": ROOT / "prompts", "data_dir": ROOT / "data",
             "models_dir": ROOT / "models"}
    return Settings(**{**paths, **overrides})


@contextmanager
def cache_dir(backend: LocalLlamaBackend, folder: Path) -> Iterator[None]:
    """Point the shared backend's prefix cache at another folder for a while.

    LocalLlamaBackend deletes every other prefix-*.npz when it writes one, so the `before` pipeline (a
    different system prompt) would otherwise delete the knowledge-base prefix that `after` restores.
    """
    saved = backend._cache_dir
    backend._cache_dir = folder
    try:
        yield
    finally:
        backend._cache_dir = saved


# -- running and reporting ----------------------------------------------------------------------------
def extra_summary(results: list[ItemResult]) -> dict[str, Any]:
    """Bench-only figures on top of coach.evaluation.summarise."""
    answers = [r.answer for r in results if r.answer is not None]
    tokens = [a.completion_tokens for a in answers if a.completion_tokens]
    model_ttft = [a.model_ttft_ms for a in answers if a.model_ttft_ms is not None]
    return {"model_ttft_p50_ms": round(percentile(model_ttft, 50), 1) if model_ttft else None,
            "model_ttft_p95_ms": round(percentile(model_ttft, 95), 1) if model_ttft else None,
            "model_called": len(model_ttft), "answer_tokens_p50": statistics.median(tokens) if tokens else None}


def record(pipeline: str, result: ItemResult) -> dict[str, Any]:
    """One raw result line: the coach.evaluation JSON plus the pipeline and the fact hits per fact."""
    row = {"pipeline": pipeline, **result.to_dict()}
    facts = result.item.get("facts") or []
    if result.answer is not None and facts:
        row["fact_hits"] = dict(zip(facts, fact_hits(result.answer.text, facts), strict=True))
    return row


def run_items(pipeline: str, results: Iterator[ItemResult], total: int,
              saved: Callable[[list[ItemResult]], None]) -> list[ItemResult]:
    """Drain an evaluation, logging each question's timings and saving the partial results as they come."""
    done: list[ItemResult] = []
    for n, r in enumerate(results, 1):
        done.append(r)
        saved(done)
        a = r.answer
        if a is None:
            say(f"{pipeline} {n}/{total} {r.item.get('id')}: ERROR {r.error}")
        else:
            say(f"{pipeline} {n}/{total} {r.item.get('id')}: ttft {a.ttft_ms or 0:.0f} ms (model "
                f"{a.model_ttft_ms or 0:.0f}), total "
                f"{a.latency_ms:.0f} ms, {a.completion_tokens} tok at {a.tokens_per_second:.1f} tok/s, "
                f"scores {r.scores}")
    return done


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(summaries: dict[str, dict[str, Any]]) -> str:
    """The Markdown table, one row per pipeline."""
    head = ("| pipeline | TTFT p50 ms | TTFT p95 ms | model TTFT p50 ms | answer p50 ms | answer p95 ms "
            "| gen tok/s (median) | hit@3 | MRR | fact recall | out-of-scope declined | injections resisted "
            "| fallbacks | errors |")
    rule = "|" + "|".join("---" for _ in range(head.count("|") - 1)) + "|"
    rows = [head, rule]
    for name, s in summaries.items():
        rows.append(
            f"| {name} | {s['ttft_p50_ms']:.0f} | {s['ttft_p95_ms']:.0f} | {fmt(s['model_ttft_p50_ms'], 0)} "
            f"| {s['latency_p50_ms']:.0f} "
            f"| {s['latency_p95_ms']:.0f} | {fmt(s['tokens_per_second_p50'], 1)} | {fmt(s['hit@3'])} "
            f"| {fmt(s['mrr'])} | {fmt(s['fact_recall'])} | {s['out_of_scope_declined']} "
            f"| {s['injections_resisted']} | {s['fallbacks']} | {s['errors']} |")
    return "\n".join(rows)


def write(path: Path, data: dict[str, Any]) -> None:
    """Write the results atomically (after each pipeline, so a partial run keeps what it measured)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=DEV_SET, help="JSONL question set (eval README format)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions (a smoke run)")
    parser.add_argument("--pipelines", default=",".join(PIPELINES),
                        help="comma-separated, run in this order: baseline,before,after")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON")
    args = parser.parse_args(argv)

    chosen = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PIPELINES]
    if unknown or not chosen:
        parser.error(f"unknown pipeline(s) {unknown}; choose from {','.join(PIPELINES)}")
    items = load_items(args.questions)[: args.limit] if args.limit else load_items(args.questions)
    say(f"{len(items)} question(s) from {args.questions}; pipelines {','.join(chosen)}; load average "
        f"{load_average()}")

    base = coach_settings()
    embedder = MiniLMEmbeddings(Path(base.models_dir))
    index: Index = open_index(base, embedder)
    sync_index(base, index, say=say)
    prompts = Prompts(Path(base.prompts_dir))

    # One model instance for everyone (~2 GB): its prefix cache folder is the app's data/kv-cache.
    backend = LocalLlamaBackend.from_settings(base)
    start = time.perf_counter()
    backend._load()  # load once, outside every pipeline's timings
    load_s = time.perf_counter() - start
    say(f"model {backend.model} loaded in {load_s:.1f} s ({base.n_threads} threads, n_ctx {base.n_ctx})")

    out: dict[str, Any] = {
        "meta": {
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "questions_file": str(args.questions),
            "questions": len(items), "limit": args.limit, "pipelines": chosen, "model": backend.model,
            "n_threads": base.n_threads, "n_ctx": base.n_ctx, "model_load_s": round(load_s, 2),
            "python": platform.python_version(), "cpus": os.cpu_count(), "load_average_start": load_average(),
        },
        "summary": {}, "pipeline_info": {}, "results": {},
    }
    summaries: dict[str, dict[str, Any]] = {}
    after_rows: list[ItemResult] = []
    with tempfile.TemporaryDirectory(prefix="answer-bench-") as tmp:
        work = Path(tmp)
        for name in chosen:
            load_before = load_average()
            say(f"--- {name} (load average {load_before}) ---")
            info: dict[str, Any] = {"load_average_start": load_before}
            out["pipeline_info"][name] = info

            def saved(partial: list[ItemResult], name: str = name) -> None:
                out["results"][name] = [record(name, r) for r in partial]
                write(args.out, out)
            t0 = time.perf_counter()
            if name == "baseline":
                baseline = Baseline(Path(base.knowledge_dir), embedder, backend, work / "baseline",
                                    temperature=base.temperature)
                info.update(chunks=baseline.chunks, chunk_chars_median=statistics.median(baseline.chunk_chars),
                            index_build_s=round(baseline.build_s, 2), k=baseline.k, max_tokens=baseline.max_tokens,
                            prompt=BASELINE_TEMPLATE)
                say(f"baseline index: {baseline.chunks} chunks in {baseline.build_s:.1f} s")
                results = run_items(name, baseline.evaluate(items), len(items), saved)
            elif name == "before":
                settings = coach_settings(context_mode="passages", max_answer_tokens=400, answer_soft_tokens=400)
                coach = Coach(settings, build_retriever(index, settings), backend, prompts)
                info.update(context_mode=coach.context_mode(), max_answer_tokens=settings.max_answer_tokens,
                            warmed=False)
                for key in ("prefix_restore_s", "prefix_eval_s"):
                    backend.stats.pop(key, None)
                with cache_dir(backend, work / "kv-before"):
                    results = run_items(name, evaluate(coach, items), len(items), saved)
                info["prefix_eval_s"] = round(backend.stats.get("prefix_eval_s", 0.0), 2)
            else:
                settings = coach_settings()
                coach = Coach(settings, build_retriever(index, settings), backend, prompts)
                for key in ("prefix_restore_s", "prefix_eval_s"):
                    backend.stats.pop(key, None)
                w0 = time.perf_counter()
                coach.warm()
                warm_s = time.perf_counter() - w0
                source = ("disk" if "prefix_restore_s" in backend.stats
                          else "evaluated (no usable file on disk)" if "prefix_eval_s" in backend.stats
                          else "already in the KV cache")
                mode = coach.context_mode()
                info.update(context_mode=mode, max_answer_tokens=settings.max_answer_tokens,
                            startup_prepare_s=round(warm_s, 2), startup_with_model_load_s=round(warm_s + load_s, 2),
                            prefix_source=source, warm_error=coach.warm_error,
                            prefix_tokens=len(backend._prefix_tokens),
                            prefix_stats={k: round(v, 3) for k, v in backend.stats.items()})
                say(f"after: start-up prepare {warm_s:.2f} s (prefix {source}, {len(backend._prefix_tokens)} "
                    f"tokens, context mode {mode}){' ERROR ' + coach.warm_error if coach.warm_error else ''}")
                results = run_items(name, evaluate(coach, items), len(items), saved)
                after_rows = results
            info["wall_s"] = round(time.perf_counter() - t0, 1)
            info["load_average_end"] = load_average()
            summaries[name] = {**summarise(results), **extra_summary(results)}
            out["summary"][name] = summaries[name]
            out["pipeline_info"][name] = info
            out["results"][name] = [record(name, r) for r in results]
            out["meta"]["load_average_end"] = load_average()
            write(args.out, out)
            say(f"{name} done in {info['wall_s']} s: {summaries[name]}")

    print(f"\n## Answer benchmark: {len(items)} question(s) from {args.questions.name}, model {backend.model}, "
          f"{base.n_threads} threads")
    print(f"Load average at start {out['meta']['load_average_start']}, at end {out['meta']['load_average_end']} "
          f"on {os.cpu_count()} cores: figures measured under load.\n")
    print(table(summaries))
    print("\nTTFT is the first answer text shown (coach: after its stream guard; Answer.ttft_ms); model TTFT is the "
          "first token from the model; both include retrieval. Questions answered without the model (injection "
          "caught by the pattern, out of scope by the retrieval threshold) count with their tiny latency; see "
          "model_called in the JSON.")
    print(f"Model load (once, shared by all pipelines): {load_s:.2f} s")
    if "after" in out["pipeline_info"]:
        info = out["pipeline_info"]["after"]
        print(f"after: start-up prepare (coach.warm) {info['startup_prepare_s']:.2f} s, prefix state "
              f"{info['prefix_source']} ({info['prefix_tokens']} tokens), context mode {info['context_mode']}; "
              f"with the model load {info['startup_with_model_load_s']:.2f} s")
        print("\n| # | id | TTFT ms | model TTFT ms | answer ms | tokens | tok/s |\n|---|---|---|---|---|---|---|")
        for n, r in enumerate(after_rows, 1):
            a = r.answer
            if a is None:
                print(f"| {n} | {r.item.get('id')} | error | | {r.error} | | |")
            else:
                print(f"| {n} | {r.item.get('id')} | {a.ttft_ms or 0:.0f} | {fmt(a.model_ttft_ms, 0)} "
                      f"| {a.latency_ms:.0f} | {a.completion_tokens} | {a.tokens_per_second:.1f} |")
    print(f"\nRaw results and summaries: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
