"""How well a PID configuration approaches the grid oracle on random problems.

Shared by the acceptance test and ``bench/pid_tuning.py``: for each problem, the oracle is the
lowest J over a fine α grid; PID's capture is (J(α0) − J_pid) / (J(α0) − J_oracle).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from marr.grid import QuantSpec
from marr.gptq import prepare
from marr.objective import ErrorModel
from marr.search import PidConfig, grid_search, pid_search
from marr.synthetic import random_problem

ORACLE_GRID = tuple(i / 40 for i in range(41))


@dataclass
class PidOutcome:
    bits: int
    seed: int
    j_start: float
    j_pid: float
    j_oracle: float
    alpha_pid: float
    alpha_oracle: float
    solves: int

    @property
    def capture(self) -> float:
        gain = self.j_start - self.j_oracle
        return 1.0 if gain <= 0 else (self.j_start - self.j_pid) / gain


@dataclass
class OracleCase:
    """One random problem, prepared, with its grid oracle already solved."""

    bits: int
    seed: int
    prep: object
    judge: ErrorModel
    oracle_alpha: float
    oracle_error: float


def oracle_cases(*, bits_list=(2, 3), seeds=range(10), d_out: int = 256, d_in: int = 192, group_size: int = 64,
                 drifts=(0.05, 0.1, 0.2, 0.3)) -> list[OracleCase]:
    """len(bits_list) × len(seeds) random problems and their 41-point oracles on [0, 1]."""
    cases = []
    for bits in bits_list:
        spec = QuantSpec(bits, group_size)
        for seed in seeds:
            p = random_problem(d_out, d_in, drift=drifts[seed % len(drifts)], seed=1000 * bits + seed)
            H, D, G = p.grams()
            prep = prepare(p.W, H, spec, D=D, dtype=torch.float32)
            judge = ErrorModel.build(p.W, H, D, G)
            oracle = grid_search(prep, judge, ORACLE_GRID)
            cases.append(OracleCase(bits, seed, prep, judge, oracle.alpha, oracle.error))
    return cases


def evaluate_pid(config: PidConfig, cases: list[OracleCase]) -> list[PidOutcome]:
    """Run PID on every case and compare with its oracle."""
    outcomes = []
    for c in cases:
        pid = pid_search(c.prep, c.judge, config)
        j_start = pid.trajectory[0][2]
        outcomes.append(PidOutcome(c.bits, c.seed, j_start, pid.error, c.oracle_error, pid.alpha, c.oracle_alpha,
                                   pid.solves))
    return outcomes


def summarize(outcomes: list[PidOutcome]) -> dict[str, float]:
    n = len(outcomes)
    return {
        "problems": n,
        "mean_capture": sum(o.capture for o in outcomes) / n,
        "min_capture": min(o.capture for o in outcomes),
        "mean_solves": sum(o.solves for o in outcomes) / n,
        "worse_than_start": sum(o.j_pid > o.j_start for o in outcomes),
        "within_1pct_of_oracle": sum(o.j_pid <= 1.01 * o.j_oracle for o in outcomes) / n,
    }
