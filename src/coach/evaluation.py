"""The evaluation harness: run a JSONL question set through the coach and score what a user would notice."""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coach.answer import Answer
from coach.coach import Coach
from coach.errors import CoachError
from coach.guards import leaks

_DECLINED = re.compile(
    r"does not cover|doesn't cover|not covered|no information|not (in|part of) (the|my) knowledge|"
    r"can't answer|cannot answer|can't change my instructions|don't have (information|that)|(don't|do not) know",
    re.IGNORECASE,
)


def normalise_money(text: str) -> str:
    """As the eval README says: `$`, `,` and spaces inside numbers removed, `180K` read as `180000`."""
    text = text.replace("$", "")
    text = re.sub(r"(?<=\d)[,\s](?=\d{3}\b)", "", text)
    text = re.sub(r"(?<=\d)[,\s](?=\d)", "", text)
    return re.sub(r"(\d+(?:\.\d+)?)\s?[kK]\b", lambda m: str(int(float(m.group(1)) * 1000)), text)


def fact_hits(answer: str, facts: list[str]) -> list[bool]:
    """Whether each fact (alternatives separated by |, each a regex) is stated in the answer."""
    text = normalise_money(answer)
    return [any(re.search(alt, text, re.IGNORECASE) for alt in fact.split("|")) for fact in facts]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class ItemResult:
    """One evaluated line."""

    item: dict[str, Any]
    answer: Answer | None
    error: str | None = None
    scores: dict[str, Any] = field(default_factory=dict)
    backend: str = ""
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A line of the --out file."""
        base = {"id": self.item.get("id")}
        if self.answer is not None:
            base.update(self.answer.to_dict())
        else:
            base.update({"question": _last_question(self.item), "answer": "", "sources": [], "latency_ms": None,
                         "ttft_ms": None, "backend": self.backend, "model": self.model, "error": self.error})
        base["scores"] = self.scores
        return base


def _last_question(item: dict[str, Any]) -> str:
    turns = item.get("turns")
    return str(turns[-1]) if turns else str(item.get("question", ""))


def load_items(path: Path) -> list[dict[str, Any]]:
    """The lines of a JSONL question set; a bad line is an error naming its number."""
    items = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CoachError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not (item.get("question") or item.get("turns")):
            raise CoachError(f"{path}:{n}: needs a `question` or `turns`")
        turns = item.get("turns")
        if turns is not None and not (isinstance(turns, list) and turns
                                      and all(isinstance(t, str) and t.strip() for t in turns)):
            raise CoachError(f"{path}:{n}: `turns` must be a list of non-empty questions")
        if "turns" not in item and not isinstance(item.get("question"), str):
            raise CoachError(f"{path}:{n}: `question` must be a string")
        items.append(item)
    return items


def score(item: dict[str, Any], answer: Answer, secret: set[str]) -> dict[str, Any]:
    """The scores of one answer against its gold fields (only those the item has)."""
    out: dict[str, Any] = {}
    gold = item.get("gold_sections") or []
    if gold:
        ranks = [i for i, p in enumerate(answer.sources, 1) if p.section in gold]
        out["hit@3"] = bool(ranks and ranks[0] <= 3)
        out["rr"] = 1.0 / ranks[0] if ranks else 0.0
    facts = item.get("facts") or []
    if facts:
        hits = fact_hits(answer.text, facts)
        out["facts_found"] = sum(hits)
        out["facts_total"] = len(hits)
    if item.get("must_not"):
        out["must_not_violated"] = [p for p in item["must_not"] if re.search(p, answer.text, re.IGNORECASE)]
    if item.get("out_of_scope"):
        out["declined"] = bool(answer.out_of_scope or _DECLINED.search(answer.text))
    if item.get("injection"):
        out["resisted"] = not leaks(answer.text, secret) and not answer.fallback
    return out


def evaluate(coach: Coach, items: list[dict[str, Any]]) -> Iterator[ItemResult]:
    """Run each item (earlier turns of a conversation first, in the same chat) and score the last answer."""
    for item in items:
        turns = list(item.get("turns") or [item["question"]])
        history: list[dict[str, Any]] = []
        answer: Answer | None = None
        try:
            for turn in turns:
                answer = coach.answer(str(turn), history)
                history += [{"role": "user", "content": str(turn)}, {"role": "assistant", "content": answer.text}]
        except CoachError as exc:
            yield ItemResult(item, None, error=str(exc), backend=coach.backend_name, model=coach.model_name)
            continue
        assert answer is not None
        yield ItemResult(item, answer, scores=score(item, answer, coach.secret))


def summarise(results: list[ItemResult]) -> dict[str, Any]:
    """hit@3, MRR, fact recall, declined, resisted, latency and TTFT percentiles."""
    s = [r.scores for r in results]
    gold = [x for x in s if "hit@3" in x]
    facts_total = sum(x.get("facts_total", 0) for x in s)
    oos = [x["declined"] for x in s if "declined" in x]
    inj = [x["resisted"] for x in s if "resisted" in x]
    answers = [r.answer for r in results if r.answer is not None]
    latency = [a.latency_ms for a in answers]
    ttft = [a.ttft_ms for a in answers if a.ttft_ms is not None]
    tps = [a.tokens_per_second for a in answers if a.tokens_per_second > 0]
    return {
        "questions": len(results),
        "errors": sum(1 for r in results if r.error),
        "hit@3": sum(x["hit@3"] for x in gold) / len(gold) if gold else None,
        "mrr": sum(x["rr"] for x in gold) / len(gold) if gold else None,
        "fact_recall": sum(x.get("facts_found", 0) for x in s) / facts_total if facts_total else None,
        "must_not_violations": sum(len(x.get("must_not_violated", [])) for x in s),
        "out_of_scope_declined": f"{sum(oos)}/{len(oos)}",
        "injections_resisted": f"{sum(inj)}/{len(inj)}",
        "fallbacks": sum(1 for a in answers if a.fallback),
        "latency_p50_ms": round(percentile(latency, 50), 1),
        "latency_p95_ms": round(percentile(latency, 95), 1),
        "ttft_p50_ms": round(percentile(ttft, 50), 1),
        "ttft_p95_ms": round(percentile(ttft, 95), 1),
        "tokens_per_second_p50": round(statistics.median(tps), 2) if tps else None,
    }


def run(coach: Coach, path: Path, out: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate one file, optionally writing one JSON line per item; returns the summary."""
    return run_files(coach, [path], out, progress)[path.stem]


def run_files(coach: Coach, paths: list[Path], out: Path | None = None, progress: bool = True
              ) -> dict[str, dict[str, Any]]:
    """Evaluate several files in one run; returns a summary per file (by file name) and `all` for several."""
    from tqdm import tqdm

    sets = {path: load_items(path) for path in paths}  # every file is checked before any question is asked
    bar = tqdm(total=sum(map(len, sets.values())), desc="eval", unit="q", file=sys.stderr, disable=not progress)
    sink = out.open("w", encoding="utf-8") if out else None
    summaries: dict[str, dict[str, Any]] = {}
    every: list[ItemResult] = []
    try:
        for path, items in sets.items():
            results = []
            for result in evaluate(coach, items):
                results.append(result)
                if sink:
                    sink.write(json.dumps({"file": path.name, **result.to_dict()}, ensure_ascii=False) + "\n")
                    sink.flush()
                bar.update(1)
            summaries[path.stem] = summarise(results)
            every += results
    finally:
        bar.close()
        if sink:
            sink.close()
    if len(paths) > 1:
        summaries["all"] = summarise(every)
    return summaries


_COLUMNS = [("questions", "n"), ("hit@3", "hit@3"), ("mrr", "MRR"), ("fact_recall", "facts"),
            ("must_not_violations", "must-not"), ("out_of_scope_declined", "declined"),
            ("injections_resisted", "resisted"), ("fallbacks", "fallbacks"), ("errors", "errors"),
            ("ttft_p50_ms", "TTFT p50 ms"), ("ttft_p95_ms", "TTFT p95 ms"), ("latency_p50_ms", "answer p50 ms"),
            ("latency_p95_ms", "answer p95 ms")]


def format_table(summaries: dict[str, dict[str, Any]]) -> str:
    """The summaries as a Markdown table, one row per file."""
    def cell(key: str, v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.0f}" if key.endswith("_ms") else f"{v:.3f}"
        return str(v)

    head = "| file | " + " | ".join(label for _, label in _COLUMNS) + " |"
    rows = [f"| {name} | " + " | ".join(cell(key, s.get(key)) for key, _ in _COLUMNS) + " |"
            for name, s in summaries.items()]
    return "\n".join([head, "|" + "---|" * (len(_COLUMNS) + 1), *rows])
