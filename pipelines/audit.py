"""Audit metric, param and α changes between two revisions of the project (model versions).

    python -m pipelines.audit REV_A REV_B [--metric ppl_wiki --threshold 0.02]

Prints Markdown: metric changes per model/config (``dvc metrics diff``), param changes
(``dvc params diff``) and the modules whose α changed most (alphas/<model>/<config>.csv at both
revisions). Exits 1 if ``--metric`` regressed by more than ``--threshold`` (relative) for any
model/config — for scheduled checks; lower is better for perplexities and errors, higher for
accuracies.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from pathlib import Path

import pandas as pd

from pipelines.dvc_cli import dvc_json

HIGHER_IS_BETTER = ("top1", "top5", "cosine", "acc")


def higher_is_better(metric: str) -> bool:
    return any(tag in metric for tag in HIGHER_IS_BETTER)


def metric_changes(rev_a: str, rev_b: str, project: str = ".") -> pd.DataFrame:
    diff = dvc_json(["metrics", "diff", rev_a, rev_b, "--all"], project)
    rows = []
    for path, entries in diff.items():
        for key, change in entries.items():
            parts = key.split(".")
            if len(parts) != 3:
                continue
            model, config, metric = parts
            rows.append({"model": model, "config": config, "metric": metric, "old": change.get("old"),
                         "new": change.get("new"), "diff": change.get("diff")})
    return pd.DataFrame(rows, columns=["model", "config", "metric", "old", "new", "diff"])


def param_changes(rev_a: str, rev_b: str, project: str = ".") -> pd.DataFrame:
    diff = dvc_json(["params", "diff", rev_a, rev_b], project)
    rows = [{"param": key, "old": change.get("old"), "new": change.get("new")}
            for entries in diff.values() for key, change in entries.items()]
    return pd.DataFrame(rows, columns=["param", "old", "new"])


def alphas_at(rev: str, project: str = ".") -> pd.DataFrame:
    """Every alphas/<model>/<config>.csv committed at ``rev``."""
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "alphas"], cwd=project,
                             capture_output=True, text=True)
    frames = []
    for path in listing.stdout.split():
        if not path.endswith(".csv"):
            continue
        text = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=project, capture_output=True, text=True).stdout
        frame = pd.read_csv(io.StringIO(text))
        frame["model"], frame["config"] = Path(path).parent.name, Path(path).stem
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "config", "block", "module", "alpha"])


def alpha_changes(rev_a: str, rev_b: str, project: str = ".", top: int = 10) -> pd.DataFrame:
    keys = ["model", "config", "block", "module"]
    a, b = alphas_at(rev_a, project), alphas_at(rev_b, project)
    if a.empty or b.empty:
        return pd.DataFrame(columns=[*keys, "alpha_old", "alpha_new", "change"])
    merged = a[[*keys, "alpha"]].merge(b[[*keys, "alpha"]], on=keys, suffixes=("_old", "_new"))
    merged["change"] = (merged["alpha_new"] - merged["alpha_old"]).abs()
    return merged.sort_values("change", ascending=False).head(top)


def regressions(metrics: pd.DataFrame, metric: str, threshold: float) -> pd.DataFrame:
    sub = metrics[(metrics.metric == metric) & metrics.old.notna() & metrics.new.notna()].copy()
    if sub.empty:
        return sub
    rel = (sub["new"] - sub["old"]) / sub["old"].abs().clip(lower=1e-12)
    sub["relative"] = rel
    worse = rel < -threshold if higher_is_better(metric) else rel > threshold
    return sub[worse]


def markdown(frame: pd.DataFrame, empty: str) -> str:
    return frame.to_markdown(index=False, floatfmt=".4g") if len(frame) else f"_{empty}_"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("rev_a")
    p.add_argument("rev_b")
    p.add_argument("--project", default=".")
    p.add_argument("--metric", default="ppl_wiki", help="the metric whose regression fails the audit")
    p.add_argument("--threshold", type=float, default=0.02, help="allowed relative regression")
    p.add_argument("--top", type=int, default=10, help="how many α changes to list")
    args = p.parse_args(argv)
    metrics = metric_changes(args.rev_a, args.rev_b, args.project)
    changed = metrics[metrics["diff"].fillna(0) != 0] if len(metrics) else metrics
    print(f"# Audit {args.rev_a} → {args.rev_b}\n")
    print("## Metrics that changed\n")
    print(markdown(changed, "no metric changed"), "\n")
    print("## Params that changed\n")
    print(markdown(param_changes(args.rev_a, args.rev_b, args.project), "no param changed"), "\n")
    print(f"## Modules whose α changed most (top {args.top})\n")
    print(markdown(alpha_changes(args.rev_a, args.rev_b, args.project, args.top), "no α table at both revisions"), "\n")
    bad = regressions(metrics, args.metric, args.threshold)
    if len(bad):
        print(f"## FAILED: {args.metric} regressed by more than {args.threshold:.1%}\n")
        print(markdown(bad, ""))
        return 1
    print(f"{args.metric}: no regression beyond {args.threshold:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
