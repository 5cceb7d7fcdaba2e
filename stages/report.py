"""Stage report: one tidy table of every measured value, and PNG plots for auditing.

Reads metrics/<model>/<config>.json and data/quant/<model>/<config>/records.csv; writes
reports/summary.csv (model, method, bits, group_size, metric, value), reports/metrics.json
(nested, for ``dvc metrics``) and reports/plots/*.png.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pandas as pd

from marr.io import write_json, write_text
from stages.common import setup_logging

log = logging.getLogger("stages.report")

METRICS = ("ppl_wiki", "lm_eval_word_perplexity", "probe_top1", "probe_top1_fp", "feature_cosine",
           "feature_rel_mse", "reconstruct_seconds", "peak_rss_gb", "size_mb", "bits_per_weight", "quantized_bits_per_weight", "mean_j_rel",
           "solves", "eval_tokens", "eval_images")


def collect_metrics(metrics_root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(metrics_root.glob("*/*.json")):
        data = json.loads(path.read_text())
        for metric in METRICS:
            value = data.get(metric)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append({"model": data["model"], "config": data["config"], "method": data["method"],
                             "bits": data.get("bits"), "group_size": data.get("group_size"), "metric": metric,
                             "value": float(value)})
    return pd.DataFrame(rows, columns=["model", "config", "method", "bits", "group_size", "metric", "value"])


def collect_records(quant_root: Path) -> pd.DataFrame:
    frames = []
    for path in sorted(quant_root.glob("*/*/records.csv")):
        frame = pd.read_csv(path)
        frame["model"], frame["config"] = path.parent.parent.name, path.parent.name
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_all(summary: pd.DataFrame, records: pd.DataFrame, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    for metric in ("ppl_wiki", "probe_top1"):
        sub = summary[summary.metric == metric]
        for model, frame in sub.groupby("model"):
            fig, ax = plt.subplots(figsize=(6, 3.5))
            ax.bar(frame["config"], frame["value"], color="tab:blue")
            ax.set_ylabel(metric)
            ax.set_title(f"{model}: {metric} per config")
            ax.tick_params(axis="x", rotation=30)
            if metric == "ppl_wiki":
                ax.set_yscale("log")
            save(fig, f"{metric}_{model}.png")
    if records.empty:
        return written
    records = records.copy()
    records["module_short"] = records["module"].str.split(".").str[-1]
    for (model, config), frame in records.groupby(["model", "config"]):
        if frame["alpha"].notna().sum() and frame["alpha"].nunique() > 1:
            grid = frame.pivot_table(index="block", columns="module_short", values="alpha", sort=False)
            fig, ax = plt.subplots(figsize=(6, max(2.5, 0.18 * len(grid))))
            image = ax.imshow(grid.values, aspect="auto", cmap="viridis", vmin=0, vmax=max(1.0, grid.values.max()))
            ax.set_xticks(range(len(grid.columns)), grid.columns, rotation=45, ha="right")
            ax.set_ylabel("block")
            ax.set_title(f"α per module: {model} / {config}")
            fig.colorbar(image, ax=ax)
            save(fig, f"alpha_heatmap_{model}_{config}.png")
            traj = frame[frame["solves"] > 2].head(6)
            if len(traj):
                fig, (ax_a, ax_j) = plt.subplots(1, 2, figsize=(9, 3.5))
                for _, row in traj.iterrows():
                    points = json.loads(row["trajectory"]) if isinstance(row["trajectory"], str) else row["trajectory"]
                    label = f"b{row['block']} {row['module_short']}"
                    ax_a.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
                    ax_j.plot([p[0] for p in points], [p[2] for p in points], marker="o", label=label)
                ax_a.set(xlabel="iteration", ylabel="α", title="PID: α_t")
                ax_j.set(xlabel="iteration", ylabel="relative J", title="PID: J_t")
                ax_a.legend(fontsize=7)
                save(fig, f"pid_trajectories_{model}_{config}.png")
    for model, frame in records.groupby("model"):
        fig, ax = plt.subplots(figsize=(9, 3.5))
        for config, sub in frame.groupby("config"):
            if sub["j_rel"].notna().any():
                ax.plot(range(len(sub)), sub["j_rel"].values, label=config, lw=1)
        ax.set(yscale="log", xlabel="module (block-major order)", ylabel="relative J", title=f"{model}: per-module error")
        ax.legend(fontsize=7)
        save(fig, f"module_error_{model}.png")
    return written


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--metrics", default="metrics")
    p.add_argument("--quant", default="data/quant")
    p.add_argument("--out", default="reports")
    args = p.parse_args()
    setup_logging()
    out = Path(args.out)
    summary = collect_metrics(Path(args.metrics))
    write_text(out / "summary.csv", summary.to_csv(index=False))
    nested: dict = {}
    for row in summary.itertuples():
        nested.setdefault(row.model, {}).setdefault(row.config, {})[row.metric] = row.value
    write_json(out / "metrics.json", nested)
    plots = plot_all(summary, collect_records(Path(args.quant)), out / "plots")
    log.info("wrote %s (%d rows) and %d plots", out / "summary.csv", len(summary), len(plots))


if __name__ == "__main__":
    main()
