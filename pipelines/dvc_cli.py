"""Thin wrappers around the DVC command line (DVC stays the executor and the cache)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("pipelines.dvc")


def dvc(args: list[str], cwd: str | Path = ".", stream: bool = False) -> str:
    """Run ``dvc <args>`` with this interpreter's environment; return stdout; raise on failure."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    cmd = [sys.executable, "-m", "dvc", *args]
    if not stream:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"dvc {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
        return proc.stdout
    lines = []
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            lines.append(line)
            log.info(line.rstrip())
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed ({proc.returncode}): {''.join(lines[-20:])}")
    return "".join(lines)


def dvc_json(args: list[str], cwd: str | Path = ".") -> dict:
    out = dvc([*args, "--json"], cwd).strip()
    return json.loads(out) if out else {}
