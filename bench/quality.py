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
import subprocess
import sys
import time

from bench.report import RESULTS, write_table

log = logging.getLogger("bench.quality")

SETTINGS = {
    "w4": {"bits": 4, "group_size": None},
    "w3g128": {"bits": 3, "group_size": 128},
    "w2g64": {"bits": 2, "group_size": 64},
    "w3": {"bits": 3, "group_size": None},
}

METHODS = {
    "rtn": {"method": "rtn"},
    "gptq": {"method": "gptq"},
    "gptaq": {"method": "gptaq", "alpha": 0.25},
    "qep": {"method": "qep", "alpha": 0.5},
    "marr": {"method": "marr", "search": "pid"},
    "marr-holdout": {"method": "marr", "search": "pid", "feedback": "holdout"},
    "marr-grid": {"method": "marr", "search": "grid", "grid": [round(0.1 * i, 1) for i in range(11)]},
    **{f"gptaq-{a}": {"method": "gptaq", "alpha": a} for a in (0.0, 0.5, 0.75, 1.0)},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2-135m")
    parser.add_argument("--settings", default="w3g128", help=f"comma list of {', '.join(SETTINGS)}")
    parser.add_argument("--methods", default="fp,rtn,gptq,gptaq,marr", help=f"comma list of fp, {', '.join(METHODS)}")
    parser.add_argument("--calib-windows", type=int, default=128)
    parser.add_argument("--calib-len", type=int, default=512)
    parser.add_argument("--eval-len", type=int, default=512)
    parser.add_argument("--eval-windows", type=int, default=None, help="score only the first N test windows")
    parser.add_argument("--name", default="quality")
    parser.add_argument("--extra", default="{}", help="JSON merged into every method config")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    runs_dir = RESULTS / "runs" / args.name
    runs_dir.mkdir(parents=True, exist_ok=True)
    rows = []
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
                t0 = time.perf_counter()
                log.info("running %s", " ".join(cmd[2:]))
                proc = subprocess.run(cmd)
                if proc.returncode != 0:
                    rows.append({"model": model, "setting": setting, "method": method, "error": f"exit {proc.returncode}"})
                    continue
                result = json.loads(out.read_text())
                result["process_seconds"] = round(time.perf_counter() - t0, 1)
                rows.append(result)
                print(json.dumps(result), flush=True)
    settings = {"calibration": f"{args.calib_windows} x {args.calib_len} tokens, wiki calibration split, seed 0",
                "evaluation": f"wiki test split, {args.eval_len}-token windows"
                              + (f", first {args.eval_windows} windows" if args.eval_windows else ""),
                "extra": args.extra}
    print(write_table(args.name, rows, settings))


if __name__ == "__main__":
    main()
