"""Prefect flows that run the DVC pipeline (with retries and logs) and publish its metrics.

    python -m pipelines.flows repro            # one run now (a temporary local Prefect server)
    python -m pipelines.flows sweep --config marr-w3g128 --param pid.kp --values 0.5,1.0,1.5

Deployments and schedules: see prefect.yaml and the README. The flows never write DVC outputs
themselves: every stage runs through ``dvc repro`` / ``dvc exp run``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pipelines.dvc_cli import dvc, dvc_json


@task(retries=2, retry_delay_seconds=30, name="dvc repro")
def dvc_repro(project: str, targets: list[str] | None = None, force: bool = False) -> str:
    """Reproduce the pipeline; a failed stage is retried from where it stopped (DVC skips done stages)."""
    logger = get_run_logger()
    args = ["repro", *(targets or [])] + (["--force"] if force else [])
    logger.info("running dvc %s in %s", " ".join(args), project)
    out = dvc(args, project, stream=True)
    ran = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage '")]
    logger.info("stages run: %s", ", ".join(ran) or "none (everything up to date)")
    return out


@task(name="publish metrics")
def publish_metrics(project: str) -> int:
    """Publish reports/summary.csv as a Prefect table artifact; returns the number of rows."""
    summary = Path(project) / "reports" / "summary.csv"
    frame = pd.read_csv(summary)
    create_table_artifact(key="marr-metrics", table=json.loads(frame.to_json(orient="records")),
                          description=f"marr metrics from {summary}")
    return len(frame)


@flow(name="marr-pipeline", log_prints=True)
def pipeline_flow(project: str = ".", targets: list[str] | None = None, force: bool = False) -> int:
    """Run ``dvc repro`` for the project and publish the metrics table."""
    dvc_repro(project, targets, force)
    return publish_metrics(project)


@task(retries=1, retry_delay_seconds=30, name="dvc exp run")
def run_experiment(project: str, assignments: list[str], name: str) -> str:
    args = ["exp", "run", "--name", name]
    for a in assignments:
        args += ["-S", a]
    return dvc(args, project, stream=True)


@flow(name="marr-sweep", log_prints=True)
def sweep_flow(project: str = ".", config: str = "marr-w3g128", param: str = "pid.kp",
               values: list[float] | None = None) -> list[dict]:
    """One DVC experiment per value of ``configs.<config>.<param>``; publishes the comparison."""
    values = values or [0.5, 1.0, 1.5]
    for value in values:
        slug = f"{config}-{param}-{value}".replace(".", "_")
        run_experiment(project, [f"configs.{config}.{param}={value}"], slug)
    table = dvc_json(["exp", "show", "--no-pager"], project)
    rows = flatten_experiments(table)
    create_markdown_artifact(key="marr-sweep", markdown=pd.DataFrame(rows).to_markdown(index=False) if rows else "no experiments",
                             description=f"sweep of configs.{config}.{param}")
    return rows


def flatten_experiments(table) -> list[dict]:
    """Rows (experiment name, metric values) from ``dvc exp show --json``."""
    rows = []
    for commit in table if isinstance(table, list) else []:
        for exp in [commit, *[e for branch in commit.get("experiments") or [] for e in branch.get("revs", [])]]:
            data = exp.get("data") or {}
            metrics = {}
            for file_metrics in (data.get("metrics") or {}).values():
                for model, configs in (file_metrics.get("data") or {}).items():
                    for cfg, values in configs.items():
                        for metric, value in values.items():
                            if metric in ("ppl_wiki", "probe_top1"):
                                metrics[f"{model}/{cfg}/{metric}"] = value
            rows.append({"experiment": exp.get("name") or exp.get("rev"), **metrics})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("repro")
    r.add_argument("--project", default=".")
    r.add_argument("targets", nargs="*")
    s = sub.add_parser("sweep")
    s.add_argument("--project", default=".")
    s.add_argument("--config", default="marr-w3g128")
    s.add_argument("--param", default="pid.kp")
    s.add_argument("--values", default="0.5,1.0,1.5")
    args = p.parse_args()
    if args.command == "repro":
        pipeline_flow(args.project, args.targets or None)
    else:
        sweep_flow(args.project, args.config, args.param, [float(v) for v in args.values.split(",")])


if __name__ == "__main__":
    main()
