"""Writes benchmark tables (Markdown + CSV) with the machine, versions, settings and date."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"


def environment() -> dict[str, str]:
    import torch

    import marr

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.processor() or 'unknown cpu'}",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "marr": marr.__version__,
        "torch_threads": str(torch.get_num_threads()),
    }


def write_table(name: str, rows: list[dict], settings: dict) -> str:
    """Write bench/results/<name>.md and .csv; return the Markdown."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    header = {**environment(), **{k: str(v) for k, v in settings.items()}}
    lines = [f"# {name}", ""] + [f"- {k}: {v}" for k, v in header.items()] + ["", frame.to_markdown(index=False), ""]
    text = "\n".join(lines)
    for suffix, content in ((".md", text), (".csv", frame.to_csv(index=False))):
        tmp = RESULTS / f".{name}{suffix}.tmp"
        tmp.write_text(content)
        os.replace(tmp, RESULTS / f"{name}{suffix}")
    return text
