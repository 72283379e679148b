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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from coach import faithfulness
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


def _regex(pattern: str, what: str) -> str:
    if not pattern.strip():
        raise ValueError(f"{what} is empty, and an empty pattern matches every answer")
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{what} {pattern!r} is not a valid regular expression ({exc.msg})") from None
    return pattern


class EvalItem(BaseModel):
    """One line of a question set, as ../shared/eval/README.md describes it. Types are strict: `facts` given as
    one string would otherwise be scored character by character, and `"true"` is not a boolean."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(min_length=1)
    question: str | None = None
    turns: list[str] | None = None
    gold_sections: list[str] | None = None
    facts: list[str] | None = None
    must_not: list[str] | None = None
    out_of_scope: bool | None = None
    injection: bool | None = None

    @field_validator("question")
    @classmethod
    def _question(cls, question: str | None) -> str | None:
        if question is not None and not question.strip():
            raise ValueError("is empty")
        return question

    @field_validator("turns")
    @classmethod
    def _turns(cls, turns: list[str] | None) -> list[str] | None:
        if turns is not None and not (turns and all(t.strip() for t in turns)):
            raise ValueError("must be a list of non-empty questions")
        return turns

    @field_validator("facts")
    @classmethod
    def _facts(cls, facts: list[str] | None) -> list[str] | None:
        for n, fact in enumerate(facts or [], 1):
            for alternative in fact.split("|"):
                _regex(alternative, f"an alternative of fact {n}")
        return facts

    @field_validator("must_not")
    @classmethod
    def _must_not(cls, patterns: list[str] | None) -> list[str] | None:
        for n, pattern in enumerate(patterns or [], 1):
            _regex(pattern, f"pattern {n}")
        return patterns

    @model_validator(mode="after")
    def _one_question(self) -> EvalItem:
        if (self.question is None) == (self.turns is None):
            raise ValueError("a line needs a `question` or `turns`, not both" if self.question
                             else "a line needs a `question` or `turns`")
        return self


_JSON_TYPES = {str: "a string", int: "a number", float: "a number", bool: "true or false", list: "a list",
               dict: "an object", type(None): "null"}


def _problem(error: Any) -> str:
    """One pydantic error as a phrase a person can act on."""
    loc = [str(part) for part in error.get("loc", ())]
    where = f"`{loc[0]}`" + (f" item {int(loc[1]) + 1}" if len(loc) > 1 and loc[1].isdigit() else "") if loc else ""
    kind, msg = error.get("type", ""), str(error.get("msg", "invalid"))
    given = _JSON_TYPES.get(type(error.get("input")), "something else")
    if kind == "extra_forbidden":
        return f"unknown field {where} (the fields are: {', '.join(EvalItem.model_fields)})"
    if kind == "missing":
        return f"{where} is missing"
    if kind == "string_too_short":
        return f"{where} is empty"
    if kind.endswith("_type"):
        wanted = {"list_type": "a list of strings", "string_type": "a string", "bool_type": "true or false"}
        return f"{where} must be {wanted.get(kind, msg.removeprefix('Input should be '))}, not {given}"
    msg = msg.removeprefix("Value error, ")
    if not where:
        return msg
    return f"{where} {msg}" if msg.startswith(("is ", "must ")) else f"{where}: {msg}"


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; CoachError naming the file (and the line) when it cannot be read."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CoachError(f"{path} cannot be read ({exc.strerror or type(exc).__name__}).") from None
    try:
        return raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise CoachError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); "
                         "save the file as UTF-8.") from None


def load_items(path: Path) -> list[dict[str, Any]]:
    """The lines of a JSONL question set, each checked against EvalItem; a bad line is an error naming its number."""
    items: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for n, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CoachError(f"{path}:{n}: not valid JSON ({exc.msg}).") from None
        if not isinstance(item, dict):
            raise CoachError(f"{path}:{n}: each line must be a JSON object with an `id` and a `question` or `turns`.")
        try:
            EvalItem.model_validate(item)
        except ValidationError as exc:
            raise CoachError(f"{path}:{n}: {_problem(exc.errors()[0])}.") from None
        if item["id"] in seen:
            raise CoachError(f"{path}:{n}: the id {item['id']!r} is already used on line {seen[item['id']]}.")
        seen[item["id"]] = n
        items.append(item)
    return items


def check_writable(path: Path) -> None:
    """Raise CoachError unless a file can be written at path (checked before any question is asked)."""
    existed = path.exists()
    try:
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as exc:
        raise CoachError(f"cannot write to {path} ({exc.strerror or type(exc).__name__}).") from None
    if not existed:
        path.unlink(missing_ok=True)


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
    held = faithfulness.measure(answer.text, answer.sources)
    if held.cited:  # how far the answer's citations hold, whatever the item asks (coach.faithfulness)
        out.update(cited_units=held.cited, cited_supported=held.supported, cited_figures=held.figures,
                   cited_figures_held=held.figures_held)
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
        "cited_supported": _share(s, "cited_supported", "cited_units"),
        "figures_in_cited": _share(s, "cited_figures_held", "cited_figures"),
        "out_of_scope_declined": f"{sum(oos)}/{len(oos)}",
        "injections_resisted": f"{sum(inj)}/{len(inj)}",
        "fallbacks": sum(1 for a in answers if a.fallback),
        "latency_p50_ms": round(percentile(latency, 50), 1),
        "latency_p95_ms": round(percentile(latency, 95), 1),
        "ttft_p50_ms": round(percentile(ttft, 50), 1),
        "ttft_p95_ms": round(percentile(ttft, 95), 1),
        "tokens_per_second_p50": round(statistics.median(tps), 2) if tps else None,
    }


def _share(scores: list[dict[str, Any]], part: str, whole: str) -> float | None:
    total = sum(x.get(whole, 0) for x in scores)
    return sum(x.get(part, 0) for x in scores) / total if total else None


def run(coach: Coach, path: Path, out: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Evaluate one file, optionally writing one JSON line per item; returns the summary."""
    return run_files(coach, [path], out, progress)[path.stem]


def run_files(coach: Coach, paths: list[Path], out: Path | None = None, progress: bool = True
              ) -> dict[str, dict[str, Any]]:
    """Evaluate several files in one run; returns a summary per file (by file name) and `all` for several."""
    from tqdm import tqdm

    sets = {path: load_items(path) for path in paths}  # every file is checked before any question is asked
    bar = tqdm(total=sum(map(len, sets.values())), desc="eval", unit="q", file=sys.stderr, disable=not progress)
    try:
        sink = out.open("w", encoding="utf-8") if out else None
    except OSError as exc:
        raise CoachError(f"cannot write to {out} ({exc.strerror or type(exc).__name__}).") from None
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
            ("cited_supported", "cited ok"), ("figures_in_cited", "figures cited ok"),
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
