"""Planner benchmark: role card build, assessment and answer latency, time to first text in the chat.

Everything runs on the real index (MiniLM embeddings, embedded Chroma of knowledge/). In the same run, the
baseline is the planning questions answered the way they were before the planner: through retrieval and
the chat model (the planner's route switched off), with `--baseline local` (the embedded model) or
`--baseline extractive`; both are scored with coach.evaluation (fact recall, must-not violations).

    python bench/plan_bench.py                      # planner figures + the extractive baseline
    python bench/plan_bench.py --baseline local     # + the local model answering without the planner
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from coach.coach import Coach
from coach.config import Settings
from coach.evaluation import evaluate, load_items, percentile, summarise
from coach.factory import build_coach, sibling
from coach.planner import Profile, assess, build_card, read_profile, render

ROOT = Path(__file__).resolve().parent.parent
PLANNING = ROOT.parent / "shared" / "eval" / "planning.jsonl"


def ms(seconds: list[float]) -> str:
    """p50 / p95 in milliseconds."""
    values = [s * 1000 for s in seconds]
    return f"p50 {statistics.median(values):.2f} ms, p95 {percentile(values, 95):.2f} ms (n={len(values)})"


def profiles() -> list[Profile]:
    """A grid of profiles: years of development and leadership, degrees, with and without skills."""
    out = []
    for dev, lead, degree, skills in itertools.product(range(0, 13, 2), range(0, 9, 2),
                                                       [None, "none", "bachelor", "master"],
                                                       [[], ["Python", "PyTorch", "AWS", "MLflow"]]):
        out.append(Profile(years_development=dev, years_leadership=lead, degree=degree, skills=skills))
    return out


def timed_answers(coach: Coach, items: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Time to first text and whole answer of each item's last turn (earlier turns asked first)."""
    first, whole = [], []
    for item in items:
        turns = item.get("turns") or [item["question"]]
        history: list[dict[str, str]] = []
        for turn in turns:
            answer = coach.answer(turn, history)
            history += [{"role": "user", "content": turn}, {"role": "assistant", "content": answer.text}]
        first.append((answer.ttft_ms or 0) / 1000)
        whole.append(answer.latency_ms / 1000)
    return first, whole


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=PLANNING)
    parser.add_argument("--baseline", choices=["extractive", "local"], default="extractive")
    parser.add_argument("--repeat", type=int, default=20, help="repetitions of the timed loops")
    args = parser.parse_args(argv)

    settings = Settings(knowledge_dir=ROOT / "knowledge", prompts_dir=ROOT / "prompts", data_dir=ROOT / "data",
                        models_dir=ROOT / "models")
    coach = build_coach(settings, backend="extractive", say=lambda m: print(m, file=sys.stderr))
    library = coach.retriever.library()
    items = load_items(args.questions)

    cold = []
    for _ in range(3):
        start = time.perf_counter()
        build_card(library.passages, coach.planner._similarity)
        cold.append(time.perf_counter() - start)
    card = coach.planner.card(library)
    grid = profiles()
    assessing = []
    for _ in range(args.repeat):
        for profile in grid:
            start = time.perf_counter()
            assess(profile, card)
            assessing.append(time.perf_counter() - start)
    questions = [t for item in items for t in (item.get("turns") or [item["question"]])]
    whole = []
    for _ in range(args.repeat):
        for question in questions:
            start = time.perf_counter()
            render(assess(read_profile(question, card).profile, card), question)
            whole.append(time.perf_counter() - start)
    first, answered = timed_answers(coach, items)
    planner = summarise(list(evaluate(coach, items)))

    baseline_coach = sibling(coach, args.baseline)
    baseline_coach.warm()
    baseline_coach.planner.wants = lambda *a, **k: False  # type: ignore[method-assign]  # the route before it
    b_first, b_answered = timed_answers(baseline_coach, items)
    baseline = summarise(list(evaluate(baseline_coach, items)))

    print(f"\n## Planner benchmark ({len(items)} planning questions from {args.questions.name})\n")
    print(f"- role card build (parse + link actions by embeddings): {ms(cold)}")
    print(f"- assessment alone, {len(grid)} profiles x {args.repeat}: {ms(assessing)}")
    print(f"- read profile + assess + write the answer, {len(questions)} messages x {args.repeat}: {ms(whole)}")
    print("\n| route | time to first text p50 | p95 | whole answer p50 | fact recall | must-not violations |")
    print("|---|---|---|---|---|---|")
    for name, f, w, s in (("planner", first, answered, planner),
                          (f"baseline: {args.baseline}, no planner", b_first, b_answered, baseline)):
        print(f"| {name} | {statistics.median(f) * 1000:.0f} ms | {percentile([x * 1000 for x in f], 95):.0f} ms "
              f"| {statistics.median(w) * 1000:.0f} ms | {s['fact_recall']:.3f} | {s['must_not_violations']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
