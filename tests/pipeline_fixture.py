"""A throw-away DVC project wired like the real one, with tiny models and real (small) data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
LICENSE_TEXT = Path(os.__file__).parent / "LICENSE.txt"  # real English prose, many paragraphs


def tiny_params(text_file: Path) -> dict:
    pid = {"alpha0": 0.25, "delta": 0.25, "kp": 1.0, "max_iter": 6}
    return {
        "llm_models": ["tiny-llm"],
        "vit_models": ["tiny-vit"],
        "llm_configs": ["gptq-w3", "marr-w3"],
        "vit_configs": ["marr-w4"],
        "models": {
            "tiny-llm": {"source": "tiny:llama", "kind": "llm",
                         "calibration": {"text": str(text_file), "windows": 8, "length": 64, "seed": 0},
                         "eval": {"text": str(text_file), "window_len": 64, "max_windows": 8, "batch_size": 4}},
            "tiny-vit": {"source": "tiny:vit", "kind": "vit", "img_size": 56,
                         "calibration": {"images": "fashion-mnist", "images_n": 8, "seed": 0},
                         "eval": {"probe_train": 200, "probe_test": 100}},
        },
        "configs": {
            "gptq-w3": {"method": "gptq", "bits": 3, "group_size": 32},
            "marr-w3": {"method": "marr", "bits": 3, "group_size": 32, "search": "pid", "pid": dict(pid)},
            # the block judge through the whole pipeline (it runs the FP stream instead of the cache)
            "marr-w4": {"method": "marr", "bits": 4, "group_size": -1, "search": "pid", "pid": dict(pid),
                        "basis": "qep", "judge": "block", "judge_windows": 2},
        },
        "engine": {"device": "cpu", "batch_size": 4},
        "hessians": {"cache_activations": True, "activation_dtype": "float32"},
        "pack": {"llm_format": "gptq_v2"},
    }


def env() -> dict:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e.update(DVC_NO_ANALYTICS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
             PREFECT_SERVER_ANALYTICS_ENABLED="false", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@e",
             GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@e")
    return e


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def make_project(root: Path) -> Path:
    """git + dvc project with the repo's dvc.yaml and a tiny params.yaml."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    text = root / "text.txt"
    shutil.copy(LICENSE_TEXT, text)
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(text), sort_keys=False))
    (root / ".gitignore").write_text("/data/\n")
    run(["git", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "init", "-q"], root)
    run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "tiny project"], root)
    return root


def set_param(root: Path, path: list[str], value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    node = params
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
