"""Gather the benchmark runs, check the project's targets, and regenerate the README's results.

    python -m bench.summary --runs quality_smollm2_w3g128,quality_gemma3_w3g128,quality_dinov2

Reads every run JSON (and per-module records) under bench/results/runs/<name>/, writes
bench/results/summary.md/.csv (one row per model × setting × method) and targets.md/.csv (each
target: met or not, with the numbers behind it), and replaces the generated blocks of README.md
(between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``) with those tables.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pandas as pd

from bench.report import RESULTS, write_table

README = Path(__file__).resolve().parent.parent / "README.md"
# the single-α sweeps a per-module α is compared with: GPTAQ's (the target) and QEP's
GLOBAL_ALPHAS = {
    "GPTAQ": {"gptq": 0.0, "gptaq": 0.25, "gptaq-0.5": 0.5, "gptaq-0.75": 0.75, "gptaq-1.0": 1.0},
    "QEP": {"gptq": 0.0, "qep-0.25": 0.25, "qep": 0.5, "qep-0.75": 0.75, "qep-1.0": 1.0},
}
MARR_VARIANTS = {"marr": "MARR", "marr-qep": "MARR (QEP basis)", "marr-block": "MARR (block judge)",
                 "marr-qep-block": "MARR (QEP basis, block judge)",
                 "marr-qep-block8": "MARR (QEP basis, block judge on 8 windows)",
                 "marr-qep-block8x256": "MARR (QEP basis, block judge on 8 x 256 positions, <= 3 candidates)",
                 "marr-qep-block4x256": "MARR (QEP basis, block judge on 4 x 256 positions, <= 3 candidates)"}
# grid searches that also ran PID in their shadow (``compare_pid``): method -> what scored each α
GRID_ORACLES = {"marr-grid": "GPTAQ basis, layer judge",
                "marr-qep-block4x256-grid": "QEP basis, block judge on 4 x 256 positions: the pipeline's MARR",
                "marr-qep-block4x256-grid-pid4": "the pipeline's MARR allowed a 4th candidate"}
BASE_LABELS = {"gptq": "GPTQ", "gptaq": "GPTAQ (α = 0.25)", "qep": "QEP (α = 0.5)"}
COLUMNS = ["run", "model", "setting", "method", "ppl", "top1", "feature_cosine", "reconstruct_seconds",
           "forward_seconds", "solve_seconds", "judge_seconds", "solves", "peak_rss_gb_reconstruct", "alpha_mean",
           "mean_j_rel", "threads", "load_1m_start", "note"]


def load_runs(names: list[str]) -> tuple[pd.DataFrame, dict[tuple, pd.DataFrame]]:
    rows, records = [], {}
    for name in names:
        for path in sorted((RESULTS / "runs" / name).glob("*.json")):
            row = json.loads(path.read_text())
            row["run"] = name
            rows.append(row)
            csv = path.with_suffix(".records.csv")
            key = (row["model"], row["setting"], row["method"])
            if csv.exists() and key not in records:  # the first run folder listed wins
                records[key] = pd.read_csv(csv)
    return pd.DataFrame(rows), records


def _quality(row: pd.Series) -> tuple[str, float]:
    """(metric name, value): perplexity for LLMs (lower is better), probe top-1 for ViTs (higher)."""
    if pd.notna(row.get("ppl")):
        return "ppl", float(row["ppl"])
    return "top1", float(row["top1"])


def _better(metric: str, a: float, b: float) -> bool:
    return a < b if metric == "ppl" else a > b


def _marr_targets(target, by: dict, timed: list[dict], records: dict, model: str, setting: str, variant: str,
                  label: str) -> None:
    """The issue's MARR targets for one MARR variant (one residual basis) at one model × setting.

    Quality compares with every run of this model × setting (the first folder listed wins when two
    hold one method: results repeat bit for bit on one machine and thread count, but another CPU
    sums in another order, which at 3 bits moves perplexity by several %); wall time only with
    the GPTQ of the same run folder, timed in the same conditions (``timed``: one method → row
    mapping per folder holding the variant).
    """
    marr = by[variant]
    metric, value = _quality(marr)
    for base in ("gptq", "gptaq", "qep"):
        if base not in by:
            continue
        _, other = _quality(by[base])
        name = f"{label} better than {BASE_LABELS[base]}"
        evidence = f"{metric} {value:.4g} vs {other:.4g}"
        if metric == "top1" or base == "qep":  # the quality targets are GPTQ and GPTAQ on the LLMs
            if metric == "top1":
                evidence += f"; feature cosine {marr['feature_cosine']:.5f} vs {by[base]['feature_cosine']:.5f}"
            target(f"(info{', ViT' if metric == 'top1' else ''}) {name}", model, setting, None, evidence)
        else:
            target(name, model, setting, _better(metric, value, other), evidence)
    for family, alphas in GLOBAL_ALPHAS.items():
        globals_ = {a: _quality(by[m])[1] for m, a in alphas.items() if m in by}
        if len(globals_) < len(alphas):
            continue
        best_alpha = (min if metric == "ppl" else max)(globals_, key=globals_.get)
        best = globals_[best_alpha]
        name = f"{label} at or better than the best single global α ({family})"
        target(name if family == "GPTAQ" else f"(info) {name}", model, setting,
               (value == best or _better(metric, value, best)) if family == "GPTAQ" else None,
               f"{metric} {value:.4g} vs {best:.4g} at α = {best_alpha} "
               f"({', '.join(f'{a}: {v:.4g}' for a, v in sorted(globals_.items()))})")
    for run in timed:
        if "gptq" not in run:
            continue
        marr, gptq = run[variant], run["gptq"]
        ratio = marr["reconstruct_seconds"] / gptq["reconstruct_seconds"]
        n_modules = len(records.get((model, setting, variant), [])) or float("nan")
        judged = (f" incl. block-judge forwards {marr['judge_seconds']:.0f} s"
                  if pd.notna(marr.get("judge_seconds")) else "")
        where = f" [{marr['run']}]" if len(timed) > 1 else ""
        target(f"{label} wall time <= 2 x our GPTQ", model, setting, ratio <= 2.0,
               f"{marr['reconstruct_seconds']:.0f} s vs {gptq['reconstruct_seconds']:.0f} s "
               f"(ratio {ratio:.2f}; MARR forward {marr['forward_seconds']:.0f} s + solves "
               f"{marr['solve_seconds']:.0f} s{judged}, {marr['solves'] / n_modules:.2f} solves/module; GPTQ forward "
               f"{gptq['forward_seconds']:.0f} s + solves {gptq['solve_seconds']:.0f} s){where}")


def check_targets(frame: pd.DataFrame, records: dict) -> list[dict]:
    out = []

    def target(name, model, setting, met, evidence):
        out.append({"target": name, "model": model, "setting": setting,
                    "met": "n/a" if met is None else ("met" if met else "NOT met"), "evidence": evidence})

    for (model, setting), group in frame.groupby(["model", "setting"], sort=False):
        by: dict = {}  # method -> its row in the first run folder listed that holds it
        for _, r in group.iterrows():
            by.setdefault(r["method"], r)
        runs = [{r["method"]: r for _, r in g.iterrows()} for _, g in group.groupby("run", sort=False)]
        if "gptq" in by and "gptqmodel-gptq" in by:
            ours, peer = by["gptq"], by["gptqmodel-gptq"]
            ratio = ours["ppl"] / peer["ppl"]
            target("our GPTQ perplexity <= 1.02 x GPTQModel's (within 2% or better)", model, setting, ratio <= 1.02,
                   f"{ours['ppl']:.2f} vs {peer['ppl']:.2f} (ratio {ratio:.3f})")
            t = ours["reconstruct_seconds"] / peer["reconstruct_seconds"]
            target("our GPTQ wall time <= GPTQModel's", model, setting, t <= 1.0,
                   f"{ours['reconstruct_seconds']:.0f} s vs {peer['reconstruct_seconds']:.0f} s (ratio {t:.2f})")
        if "gptaq" in by and "gptqmodel-gptaq" in by:
            ours, peer = by["gptaq"], by["gptqmodel-gptaq"]
            target("(info) our GPTAQ vs GPTQModel's GPTAQ", model, setting, None,
                   f"{ours['ppl']:.2f} vs {peer['ppl']:.2f}; {ours['reconstruct_seconds']:.0f} s vs "
                   f"{peer['reconstruct_seconds']:.0f} s")
        for variant, label in MARR_VARIANTS.items():
            if variant in by:
                _marr_targets(target, by, [r for r in runs if variant in r], records, model, setting, variant, label)
        for oracle, judged_by in GRID_ORACLES.items():
            grid = records.get((model, setting, oracle))
            if grid is None or "pid_j_rel" not in grid:
                continue
            ratio = grid["pid_j_rel"] / grid["j_search_rel"]
            share = float((ratio <= 1.01).mean())
            target(f"PID within 1% of the grid oracle's per-module J on >= 90% of modules ({judged_by})", model,
                   setting, share >= 0.9, f"{share:.1%} of {len(ratio)} modules (median J ratio "
                   f"{ratio.median():.4f}, worst {ratio.max():.3f}; PID {grid['pid_solves'].mean():.2f} "
                   f"solves/module vs grid {grid['solves'].mean():.0f})")
    return out


METHOD_ORDER = ["fp", "rtn", "gptq", "gptqmodel-gptq", "gptaq", "gptqmodel-gptaq", "gptaq-0.5", "gptaq-0.75",
                "gptaq-1.0", "qep-0.25", "qep", "qep-0.75", "qep-1.0", "marr", "marr-refit", "marr-lean", "marr-grid",
                "marr-qep", "marr-qep-lean", "marr-block", "marr-qep-block", "marr-qep-block8",
                "marr-qep-block8x256", "marr-qep-block4x256", "marr-qep-block4x256-grid",
                "marr-qep-block4x256-grid-pid4"]


def headline(frame: pd.DataFrame) -> pd.DataFrame:
    """Quality only, one row per method and one column per model × setting (ppl or probe top-1)."""
    cells, columns = {}, {}
    for _, row in frame.iterrows():
        metric, value = _quality(row)
        column = f"{row['model']} {row['setting']} ({metric})"
        columns.setdefault(row["model"], []).append(column)
        cells.setdefault(row["method"], {}).setdefault(column, f"{value:.4g}")  # the first run folder listed wins
    fp = {c: v for c, v in cells.get("fp", {}).items()}
    for model, model_columns in columns.items():  # the FP model is the same at every setting
        value = next((fp[c] for c in model_columns if c in fp), None)
        if value is not None:
            cells["fp"].update({c: value for c in model_columns})
    table = pd.DataFrame.from_dict(cells, orient="index").fillna("")
    table = table[list(dict.fromkeys(c for cs in columns.values() for c in cs))]
    order = [m for m in METHOD_ORDER if m in table.index] + sorted(set(table.index) - set(METHOD_ORDER))
    return table.loc[order].rename_axis("method").reset_index()


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"README.md has no <!-- bench:{name} --> … <!-- /bench:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="comma list of bench/results/runs/<name> folders")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    frame, records = load_runs(args.runs.split(","))
    table = frame[[c for c in COLUMNS if c in frame]]
    write_table("summary", table.to_dict("records"), {"runs": args.runs})
    targets = check_targets(frame, records)
    write_table("targets", targets, {"runs": args.runs})
    if not args.no_readme:
        text = README.read_text()
        text = replace_block(text, "summary", table.to_markdown(index=False, floatfmt="g"))
        text = replace_block(text, "headline", headline(frame).to_markdown(index=False))
        text = replace_block(text, "targets", pd.DataFrame(targets).to_markdown(index=False))
        reference = RESULTS / "reference_eval.csv"
        if reference.exists():
            text = replace_block(text, "reference", pd.read_csv(reference).to_markdown(index=False, floatfmt="g"))
        README.write_text(text)
    print(pd.DataFrame(targets).to_markdown(index=False))


if __name__ == "__main__":
    main()
