"""Before and after in one run: `coach eval` of a baseline revision and of the working tree, on the same files.

Each build runs in its own process, one after the other, on the same models, index and prompt cache folders
(a build whose prompt differs prepares its own cached prefix first, outside the timings). The baseline's code
comes from a temporary `git worktree` of the revision; its knowledge folder and prompts are its own.

    python bench/eval_compare.py                           # baseline 116223c (before issue 11), every set, local
    python bench/eval_compare.py --baseline HEAD~3 --backend extractive
    python bench/eval_compare.py --files ../shared/eval/dev.jsonl

Prints one Markdown table, a row per build and file (as `coach eval` prints it), and writes the summaries
to bench/results/compare.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FILES = [*sorted((ROOT.parent / "shared" / "eval").glob("*.jsonl")), ROOT / "bench" / "extra_questions.jsonl"]
sys.path.insert(0, str(ROOT / "src"))


def _linked_models(folder: Path) -> Path:
    """The model files as hard links in a folder of their own (no copy of the gigabyte, no shared stamp file)."""
    for path in (ROOT / "models").rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            target = folder / path.relative_to(ROOT / "models")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(path, target)
    return folder


def run_eval(label: str, source: Path, files: list[Path], backend: str, work: Path) -> dict[str, dict[str, Any]]:
    """`coach eval` with the code of `source` (a checkout's root); the summaries it wrote."""
    summary = work / f"{label}.json"
    models = _linked_models(work / f"models-{label}")  # each build keeps its own verification stamps
    env = {**os.environ, "PYTHONPATH": str(source / "src"), "HF_HUB_OFFLINE": "1",
           "COACH_MODELS_DIR": str(models), "COACH_KV_CACHE_DIR": str(ROOT / "data" / "kv-cache")}
    subprocess.run([sys.executable, "-m", "coach.cli", "models", "install"], cwd=source, env=env, check=True,
                   capture_output=True)
    command = [sys.executable, "-m", "coach.cli", "eval", *(str(f.resolve()) for f in files), "--backend", backend,
               "--knowledge", str(source / "knowledge"), "--data", str(work / f"data-{label}"),
               "--summary-json", str(summary), "--out", str(work / f"{label}.jsonl")]
    print(f"== {label}: {' '.join(command[2:5])} ... ({source})", flush=True)
    done = subprocess.run(command, cwd=source, env=env, capture_output=True, text=True, check=False)
    print(done.stdout, flush=True)
    if done.returncode != 0:
        raise SystemExit(f"{label}: coach eval exited with {done.returncode}: {done.stderr.strip()[-400:]}")
    return with_faithfulness(dict(json.loads(summary.read_text())), work / f"{label}.jsonl")


def with_faithfulness(summaries: dict[str, dict[str, Any]], lines: Path) -> dict[str, dict[str, Any]]:
    """The summaries with the faithfulness figures computed by this tree's rule from each build's answers and
    sources (a baseline from before the figures existed gets them too, by the same rule)."""
    from coach.faithfulness import Faithfulness, measure
    from coach.retrieval import Passage

    per_file: dict[str, Faithfulness] = {}
    for line in lines.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        sources = [Passage(str(p.get("id", "")), p.get("text", ""), p.get("section", ""), p.get("subsection", ""),
                           p.get("source", ""), p.get("role", ""), 0.0) for p in row.get("sources") or []]
        name = Path(row["file"]).stem
        per_file[name] = per_file.get(name, Faithfulness()) + measure(row.get("answer") or "", sources)
    if len(per_file) > 1:
        per_file["all"] = sum(per_file.values(), Faithfulness())
    for name, held in per_file.items():
        if name in summaries:
            summaries[name]["cited_supported"] = held.supported / held.cited if held.cited else None
            summaries[name]["figures_in_cited"] = held.figures_held / held.figures if held.figures else None
    return summaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="116223c", help="git revision to compare with")
    parser.add_argument("--backend", default="local", choices=["local", "extractive", "openai"])
    parser.add_argument("--files", nargs="+", type=Path, default=DEFAULT_FILES)
    args = parser.parse_args(argv)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="coach-compare-") as tmp:
        work = Path(tmp)
        tree = work / "baseline"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), args.baseline], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            before = run_eval("before", tree, args.files, args.backend, work)
            after = run_eval("after", ROOT, args.files, args.backend, work)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    from coach.evaluation import format_table

    rows = {f"before ({args.baseline}): {name}": s for name, s in before.items()}
    rows.update({f"after: {name}": s for name, s in after.items()})
    print(format_table(rows))
    (out / "compare.json").write_text(json.dumps({"baseline": args.baseline, "backend": args.backend,
                                                  "before": before, "after": after}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
