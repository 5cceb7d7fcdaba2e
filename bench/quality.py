"""Quality and cost of every method, side by side in one run.

    python -m bench.quality --models smollm2-135m --settings w3g128 --methods rtn,gptq,gptaq,marr

Each (model, setting, method) runs in its own subprocess (``bench.quality_one``) so its wall
time and peak RSS are its own; all of them read the same calibration windows (sampled once,
saved with their hash) and are scored on the same test tokens. Writes
bench/results/<name>.md/.csv and the per-module records of every run under bench/results/runs/.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.report import RESULTS, write_table

log = logging.getLogger("bench.quality")

SETTINGS = {
    "w4": {"bits": 4, "group_size": None},
    "w3g128": {"bits": 3, "group_size": 128},
    "w2g64": {"bits": 2, "group_size": 64},
    "w3": {"bits": 3, "group_size": None},
}

GRID11 = [round(0.1 * i, 1) for i in range(11)]  # the grid oracle's α: 0, 0.1, …, 1
# the cheap block judge: the first 256 positions of the held-out windows, at most 3 candidates per module
CHEAP_BLOCK_JUDGE = {"method": "marr", "search": "pid", "basis": "qep", "judge": "block", "judge_tokens": 256,
                     "pid": {"max_iter": 3}}

METHODS = {
    "rtn": {"method": "rtn"},
    "gptq": {"method": "gptq"},
    "gptaq": {"method": "gptaq", "alpha": 0.25},
    "qep": {"method": "qep", "alpha": 0.5},
    "marr": {"method": "marr", "search": "pid", "basis": "gptaq"},
    "marr-calib": {"method": "marr", "search": "pid", "feedback": "calibration"},
    "marr-refit": {"method": "marr", "search": "pid", "refit": True},
    # the same α control on QEP's basis (GPTQ on W + α·W D H⁻¹) instead of GPTAQ's residual term
    "marr-qep": {"method": "marr", "search": "pid", "basis": "qep"},
    # ... and stepping back to the least α within 1 % of the best held-out J (``pid.parsimony``)
    "marr-qep-lean": {"method": "marr", "search": "pid", "basis": "qep", "pid": {"parsimony": 0.01}},
    # the oracle: every α of the grid per module; it also runs PID on the same statistics so the
    # records hold both searches' J module by module (its wall time includes those extra solves)
    "marr-grid": {"method": "marr", "search": "grid", "grid": GRID11, "compare_pid": True},
    **{f"gptaq-{a}": {"method": "gptaq", "alpha": a} for a in (0.0, 0.5, 0.75, 1.0)},
    **{f"qep-{a}": {"method": "qep", "alpha": a} for a in (0.25, 0.75, 1.0)},
    # α judged at the block output (one block forward over the held-out windows per candidate)
    "marr-qep-block": {"method": "marr", "search": "pid", "basis": "qep", "judge": "block"},
    "marr-block": {"method": "marr", "search": "pid", "basis": "gptaq", "judge": "block"},
    # ... on 8 of the 32 held-out windows: a quarter of the judge's forward cost
    "marr-qep-block8": {"method": "marr", "search": "pid", "basis": "qep", "judge": "block", "judge_windows": 8},
    # ... on the first 256 positions of 8 (or 4) held-out windows, at most 3 candidates per module:
    # an eighth (a sixteenth) of the judged tokens, about 30 % fewer candidates
    **{f"marr-qep-block{w}x256": {**CHEAP_BLOCK_JUDGE, "judge_windows": w} for w in (8, 4)},
    # the oracle of the pipeline's MARR (marr-qep-block4x256): every α of the grid scored by the same
    # judge, with that PID run in its shadow on the same block state, module by module
    # (…-pid4: the same oracle, its shadow PID allowed a fourth candidate)
    **{f"marr-qep-block4x256-grid{tag}": {**CHEAP_BLOCK_JUDGE, "judge_windows": 4, "search": "grid", "grid": GRID11,
                                        "compare_pid": True, "pid": {"max_iter": n}}
       for tag, n in (("", 3), ("-pid4", 4))},
    # the GPTAQ basis with parsimony: J is flat near its minimum there, so ε = 1 % gives up much α
    "marr-lean": {"method": "marr", "search": "pid", "basis": "gptaq", "pid": {"parsimony": 0.01}},
}

# the production peer (bench.peer_gptqmodel), same model, windows and test tokens
PEERS = {
    "gptqmodel-gptq": {"alpha": None},
    "gptqmodel-gptaq": {"alpha": 0.25},
}


def run_all(jobs: list[tuple], n_parallel: int, fresh: bool, threads: int | None = None) -> list[dict]:
    """Run the (model, setting, method) subprocesses, ``n_parallel`` at a time; collect their rows.

    A run whose result JSON already exists is reused unless ``fresh`` (results are deterministic
    for a given calibration hash and thread count; the row keeps the conditions it was timed in).
    """
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, n_parallel))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    pending = [j for j in jobs if fresh or not j[3].exists()]
    running: list[tuple[tuple, subprocess.Popen, float]] = []
    failed: dict[Path, str] = {}
    while pending or running:
        while pending and len(running) < n_parallel:
            job = pending.pop(0)
            if not fresh and job[3].exists():  # finished meanwhile by another invocation
                continue
            log.info("running %s", " ".join(job[4][2:]))
            running.append((job, subprocess.Popen(job[4], env=env), time.perf_counter()))
        time.sleep(1.0)
        for item in list(running):
            job, proc, t0 = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                failed[job[3]] = f"exit {proc.returncode}"
                log.error("%s failed with exit %d", job[3].name, proc.returncode)
                continue
            result = json.loads(job[3].read_text())
            result["process_seconds"] = round(time.perf_counter() - t0, 1)
            job[3].write_text(json.dumps(result, indent=2))
            print(json.dumps(result), flush=True)
    rows = []
    for model, setting, method, out, _ in jobs:
        if out in failed or not out.exists():
            rows.append({"model": model, "setting": setting, "method": method,
                         "error": failed.get(out, "no result")})
        else:
            rows.append(json.loads(out.read_text()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2-135m")
    parser.add_argument("--settings", default="w3g128", help=f"comma list of {', '.join(SETTINGS)}")
    parser.add_argument("--methods", default="fp,rtn,gptq,gptaq,marr", help=f"comma list of fp, {', '.join([*METHODS, *PEERS])}")
    parser.add_argument("--calib-windows", type=int, default=128)
    parser.add_argument("--calib-len", type=int, default=512)
    parser.add_argument("--eval-len", type=int, default=512)
    parser.add_argument("--eval-windows", type=int, default=None, help="score only the first N test windows")
    parser.add_argument("--name", default="quality")
    parser.add_argument("--extra", default="{}", help="JSON merged into every method config")
    parser.add_argument("--jobs", type=int, default=1,
                        help="runs at once; each gets cpus/jobs torch threads (its row records threads and load)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default cpus/jobs)")
    parser.add_argument("--fresh", action="store_true",
                        help="rerun everything; by default a run whose result file exists is reused")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    runs_dir = RESULTS / "runs" / args.name
    runs_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for model in args.models.split(","):
        for setting in args.settings.split(","):
            for method in args.methods.split(","):
                if method == "fp" and setting != args.settings.split(",")[0]:
                    continue
                out = runs_dir / f"{model}-{setting}-{method}.json"
                cmd = [sys.executable, "-m", "bench.quality_one", "--model", model, "--setting", setting,
                       "--method", method, "--calib-windows", str(args.calib_windows), "--calib-len",
                       str(args.calib_len), "--eval-len", str(args.eval_len), "--out", str(out),
                       "--extra", args.extra]
                if args.eval_windows:
                    cmd += ["--eval-windows", str(args.eval_windows)]
                jobs.append((model, setting, method, out, cmd))
    rows = run_all(jobs, args.jobs, args.fresh, args.threads)
    settings = {"calibration": f"{args.calib_windows} x {args.calib_len} tokens, wiki calibration split, seed 0",
                "evaluation": f"wiki test split, {args.eval_len}-token windows"
                              + (f", first {args.eval_windows} windows" if args.eval_windows else ""),
                "extra": args.extra}
    print(write_table(args.name, rows, settings))


if __name__ == "__main__":
    main()
