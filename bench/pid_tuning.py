"""PID controller vs the 41-point grid oracle on random 2-/3-bit problems (256 × 192, group 64).

    python -m bench.pid_tuning            # prints a Markdown table, writes bench/results/pid_tuning.md

Each row is one controller configuration; the oracles are solved once and shared.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from bench.report import write_table
from marr.pid_eval import evaluate_pid, oracle_cases, summarize
from marr.search import PidConfig

CANDIDATES = {
    "default (filtered)": PidConfig(),
    "filtered, alpha_tol 0.01": PidConfig(alpha_tol=0.01),
    "filtered, bandwidth 0.25": PidConfig(fit_bandwidth=0.25),
    "filtered, bandwidth 1.0": PidConfig(fit_bandwidth=1.0),
    "filtered, delta 0.15": PidConfig(delta=0.15),
    "filtered, kp 0.8 kd 0.2": PidConfig(kp=0.8, kd=0.2),
    "filtered, ki 0.1": PidConfig(ki=0.1),
    "naive secant (design.md), kp 0.5": PidConfig(signal="secant", kp=0.5, alpha_tol=0.0, max_iter=10),
    "naive secant, kp 0.5, select last": PidConfig(signal="secant", kp=0.5, alpha_tol=0.0, max_iter=10, select="last"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=10, help="problems per bit-width")
    args = parser.parse_args()
    t0 = time.perf_counter()
    cases = oracle_cases(seeds=range(args.seeds))
    oracle_seconds = time.perf_counter() - t0
    rows = []
    for name, cfg in CANDIDATES.items():
        t = time.perf_counter()
        summary = summarize(evaluate_pid(cfg, cases))
        rows.append({"config": name, **{k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()},
                     "seconds": round(time.perf_counter() - t, 2)})
    settings = {"problems": len(cases), "oracle": "41 alphas on [0,1]", "oracle_seconds": round(oracle_seconds, 1),
                "default": str(dataclasses.asdict(PidConfig()))}
    print(write_table("pid_tuning", rows, settings))


if __name__ == "__main__":
    main()
