"""Choosing the residual strength α of one module: PID control, grid oracle, or fixed (GPTAQ).

Every candidate α costs one GPTQ column pass (``gptq.solve`` on a shared preparation) and one
evaluation of the reconstruction error J(α) from Grams (``objective.ErrorModel``).

PID control (design.md §1, with this project's signal design). J(α) is smooth at the scale of
the whole [0, 1] range (Q(α) is close to linear in α before rounding, so J is close to a
parabola) but noisy at fine scales (single rounding decisions flip). A raw finite difference
between consecutive iterates is dominated by that noise once the steps get small. The controller
therefore works on a *filtered* error signal:

    e_t = α̂*_t − α_t

where α̂*_t minimises a least-squares parabola through every (α_k, J_k) seen so far (weighted
towards α_t). That is the descent direction normalised by the estimated curvature: with Kp = 1 and
Ki = Kd = 0 the loop is a Newton step on the filtered model; Ki removes a persistent bias when
the parabola is skewed, Kd damps overshoot. Before three points exist, or when the fitted
curvature is not positive, the signal saturates at ±``max_step`` in the descent direction of the
secant. Each update is clipped to [α_min, α_max]; the loop stops when the step falls below
``alpha_tol`` (the noise scale of α: finer moves only chase rounding flips), when the relative J
change is below τ, or at ``max_iter`` solves. ``signal="secant"`` gives the plain design.md form
e_t = −ΔJ/Δα/J_0 for comparison.

Parsimony (``parsimony`` = ε > 0). The layer-wise J cannot see the bias of the Hessian
approximation that a strong residual term amplifies (design.md §1), and near its minimum J is flat:
the last stretch of α buys little J. After the search, α therefore moves from the best iterate
towards α_min until the fitted parabola has risen to (1 + ε)·J_best — the least correction that is
within ε of the best layer-wise error — and that α is solved once more. A module whose J is sharply
curved keeps nearly its best α; one whose J is flat gives most of it up.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import torch

from marr.grid import QuantSpec
from marr.gptq import PreparedProblem, prepare, solve
from marr.objective import ErrorModel
from marr.result import QuantResult

log = logging.getLogger("marr.search")

DEFAULT_GRID = tuple(round(0.05 * i, 2) for i in range(21))


@dataclass(frozen=True)
class PidConfig:
    """PID gains and stopping rules for the α search (see module docstring)."""

    alpha0: float = 0.25
    delta: float = 0.25
    kp: float = 1.0
    ki: float = 0.0
    kd: float = 0.0
    alpha_min: float = 0.0
    alpha_max: float = 1.0
    max_step: float = 0.5
    alpha_tol: float = 0.02
    tol: float = 1e-5
    max_iter: int = 8
    select: Literal["best", "last"] = "best"
    signal: Literal["filtered", "secant"] = "filtered"
    fit_bandwidth: float = 0.5
    parsimony: float = 0.0

    def __post_init__(self) -> None:
        for name in ("kp", "ki", "kd", "delta", "max_step", "alpha_tol", "fit_bandwidth", "parsimony"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"pid.{name}={value!r}: must be a finite number >= 0")
        if not self.delta > 0:
            raise ValueError(f"pid.delta={self.delta!r}: must be > 0")
        if not self.alpha_min < self.alpha_max:
            raise ValueError(
                f"pid.alpha_min={self.alpha_min!r} / pid.alpha_max={self.alpha_max!r}: alpha_min must be below alpha_max"
            )
        if not self.tol > 0:
            raise ValueError(f"pid.tol={self.tol!r}: must be > 0")
        if not (isinstance(self.max_iter, int) and self.max_iter >= 2):
            raise ValueError(f"pid.max_iter={self.max_iter!r}: must be an integer >= 2")
        if self.select not in ("best", "last"):
            raise ValueError(f"pid.select={self.select!r}: allowed values are 'best', 'last'")
        if self.signal not in ("filtered", "secant"):
            raise ValueError(f"pid.signal={self.signal!r}: allowed values are 'filtered', 'secant'")

    def clip(self, alpha: float) -> float:
        return min(max(alpha, self.alpha_min), self.alpha_max)


@dataclass
class SearchResult:
    """The chosen α, its solver result, and every solve as (t, α_t, J_t) (start α first)."""

    alpha: float
    result: QuantResult
    trajectory: list[tuple[int, float, float]] = field(default_factory=list)
    fp_energy: float = float("nan")

    @property
    def error(self) -> float:
        return next(j for _, a, j in self.trajectory if a == self.alpha)

    @property
    def relative_error(self) -> float:
        return self.error / self.fp_energy if self.fp_energy > 0 else float("nan")

    @property
    def solves(self) -> int:
        return len(self.trajectory)


def fit_parabola(alphas: list[float], errors: list[float], center: float,
                 bandwidth: float) -> tuple[float, float, float] | None:
    """(J₀, slope, curvature) of J ≈ J₀ + slope·(α − c) + curvature·(α − c)², a least-squares fit
    weighted towards α = c; None with fewer than three distinct α or a curvature that is not positive."""
    if len(set(alphas)) < 3:
        return None
    a = torch.tensor(alphas, dtype=torch.float64)
    j = torch.tensor(errors, dtype=torch.float64)
    mean, std = j.mean(), j.std() + 1e-300
    weights = torch.exp(-(((a - center) / bandwidth) ** 2)).sqrt()
    basis = torch.stack([torch.ones_like(a), a - center, (a - center) ** 2], dim=1)
    coef = torch.linalg.lstsq(basis * weights[:, None], (((j - mean) / std) * weights)[:, None]).solution.flatten()
    if not coef[2].item() > 1e-12:
        return None
    return (coef[0] * std + mean).item(), (coef[1] * std).item(), (coef[2] * std).item()


def fit_parabola_minimum(alphas: list[float], errors: list[float], center: float, bandwidth: float) -> float | None:
    """Minimiser of a weighted least-squares parabola through (α, J), or None if not convex."""
    fit = fit_parabola(alphas, errors, center, bandwidth)
    return None if fit is None else center - fit[1] / (2 * fit[2])


def parsimonious_alpha(alphas: list[float], errors: list[float], best: float, j_best: float,
                       config: "PidConfig") -> float | None:
    """The smallest α ≤ ``best`` where the fitted parabola is still within (1 + ε)·J_best (module
    docstring), clipped to [α_min, best]; None when the fit is not convex."""
    fit = fit_parabola(alphas, errors, best, config.fit_bandwidth)
    if fit is None:
        return None
    j0, slope, curvature = fit
    vertex = best - slope / (2 * curvature)
    j_vertex = j0 - slope**2 / (4 * curvature)
    rise = (1 + config.parsimony) * j_best - j_vertex
    if rise <= 0:
        return best
    return min(best, max(config.alpha_min, vertex - math.sqrt(rise / curvature)))


class PidController:
    """Turns the (α, J) history into the next α (one call per solve)."""

    def __init__(self, config: PidConfig):
        self.config = config
        self.integral = 0.0
        self.previous_signal: float | None = None

    def signal(self, alphas: list[float], errors: list[float]) -> float:
        cfg = self.config
        alpha_t = alphas[-1]
        secant = (errors[-1] - errors[-2]) / (alphas[-1] - alphas[-2])
        if cfg.signal == "secant":
            return -secant / (abs(errors[0]) + 1e-300)
        target = fit_parabola_minimum(alphas, errors, alpha_t, cfg.fit_bandwidth)
        if target is None:
            return -math.copysign(cfg.max_step, secant) if secant != 0 else 0.0
        return max(-cfg.max_step, min(cfg.max_step, target - alpha_t))

    def next_alpha(self, alphas: list[float], errors: list[float]) -> float:
        cfg = self.config
        e = self.signal(alphas, errors)
        self.integral += e
        derivative = 0.0 if self.previous_signal is None else e - self.previous_signal
        self.previous_signal = e
        return cfg.clip(alphas[-1] + cfg.kp * e + cfg.ki * self.integral + cfg.kd * derivative)


def _evaluate(prep: PreparedProblem, judge: ErrorModel, alpha: float) -> tuple[QuantResult, float]:
    result = solve(prep, alpha)
    return result, judge(result.weight)


def pid_search(prep: PreparedProblem, judge: ErrorModel, config: PidConfig, alpha0: float | None = None,
               on_step: Callable[[int, float, float], None] | None = None) -> SearchResult:
    """Run the PID loop on one prepared problem (see module docstring)."""
    cfg = config
    alpha = cfg.clip(cfg.alpha0 if alpha0 is None else alpha0)
    results: dict[float, tuple[QuantResult, float]] = {}
    alphas: list[float] = []
    errors: list[float] = []
    trajectory: list[tuple[int, float, float]] = []
    controller = PidController(cfg)

    def record(a: float) -> None:
        if a not in results:
            results[a] = _evaluate(prep, judge, a)
        j = results[a][1]
        alphas.append(a)
        errors.append(j)
        trajectory.append((len(trajectory), a, j))
        if on_step is not None:
            on_step(len(trajectory) - 1, a, j)

    record(alpha)
    probe = cfg.clip(alpha + cfg.delta)
    if probe == alpha:
        probe = cfg.clip(alpha - cfg.delta)
    record(probe)
    while len(trajectory) < cfg.max_iter:
        if abs(errors[-1] - errors[-2]) / (abs(errors[0]) + 1e-12) < cfg.tol:
            break
        proposal = controller.next_alpha(alphas, errors)
        if abs(proposal - alphas[-1]) < cfg.alpha_tol or any(abs(proposal - a) < cfg.alpha_tol / 2 for a in alphas):
            break
        record(proposal)

    if cfg.select == "best":
        chosen = min(results, key=lambda a: (results[a][1], abs(a - alphas[0])))
    else:
        chosen = alphas[-1]
    if cfg.parsimony > 0:
        lower = parsimonious_alpha(alphas, errors, chosen, results[chosen][1], cfg)
        if lower is not None and lower < chosen - cfg.alpha_tol / 2:
            record(lower)
            chosen = lower
    return SearchResult(chosen, results[chosen][0], trajectory, judge.fp_energy)


def grid_search(prep: PreparedProblem, judge: ErrorModel, grid: tuple[float, ...] = DEFAULT_GRID) -> SearchResult:
    """Evaluate every α of the grid; keep the lowest J (the oracle PID should approach)."""
    trajectory, best = [], None
    for t, a in enumerate(grid):
        result, j = _evaluate(prep, judge, float(a))
        trajectory.append((t, float(a), j))
        if best is None or j < best[2]:
            best = (float(a), result, j)
    return SearchResult(best[0], best[1], trajectory, judge.fp_energy)


def fixed_alpha(prep: PreparedProblem, judge: ErrorModel | None, alpha: float) -> SearchResult:
    result = solve(prep, alpha)
    j = judge(result.weight) if judge is not None else float("nan")
    return SearchResult(alpha, result, [(0, alpha, j)], judge.fp_energy if judge is not None else float("nan"))


def search_alpha(
    W: torch.Tensor,
    H: torch.Tensor,
    D: torch.Tensor,
    G: "torch.Tensor | float",
    spec: QuantSpec,
    *,
    method: Literal["pid", "grid", "fixed"] = "pid",
    pid: PidConfig | None = None,
    alpha0: float | None = None,
    grid: tuple[float, ...] = DEFAULT_GRID,
    alpha: float = 0.25,
    holdout: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    damp: float = 0.01,
    act_order: bool = False,
    static_groups: bool = False,
    block_size: int = 128,
    dtype: torch.dtype = torch.float32,
    basis: Literal["gptaq", "qep"] = "gptaq",
    on_step: Callable[[int, float, float], None] | None = None,
    judge: "Callable[[torch.Tensor], float] | None" = None,
) -> SearchResult:
    """Pick α for one module and return its quantized result.

    H, D, G are the module's Grams on the solve data (G may be just the number ‖W X‖², see
    ``ErrorModel.build``); ``holdout`` = (H, D, G) on a held-out slice
    makes J judge on data the solver did not see (``feedback: holdout``). ``basis`` is the
    one-parameter family α moves along (``gptq.prepare``): GPTAQ's residual term or QEP's correction.
    ``judge`` replaces the Gram-based J: any callable Q ↦ error with an ``fp_energy`` attribute
    (the engine's block-output judge).
    """
    prep = prepare(W, H, spec, D=D, damp=damp, act_order=act_order, static_groups=static_groups,
                   block_size=block_size, dtype=dtype, basis=basis)
    if judge is None:
        judge = ErrorModel.build(W, *(holdout if holdout is not None else (H, D, G)))
    if method == "pid":
        return pid_search(prep, judge, pid or PidConfig(), alpha0=alpha0, on_step=on_step)
    if method == "grid":
        return grid_search(prep, judge, grid)
    if method == "fixed":
        return fixed_alpha(prep, judge, alpha)
    raise ValueError(f"search method={method!r}: allowed values are 'pid', 'grid', 'fixed'")
