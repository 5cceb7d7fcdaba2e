import pytest
import torch

from marr import PidConfig, QuantSpec, search_alpha
from marr.pid_eval import evaluate_pid, oracle_cases, summarize
from marr.synthetic import random_problem


@pytest.fixture(scope="module")
def cases():
    # 20 problems: 2- and 3-bit, 256 × 192, group 64, drift 0.05..0.3; oracle = 41 α on [0, 1]
    return oracle_cases(bits_list=(2, 3), seeds=range(10))


def test_pid_approaches_the_grid_oracle_with_few_solves(cases):
    outcomes = evaluate_pid(PidConfig(), cases)
    summary = summarize(outcomes)
    print(summary)
    assert summary["problems"] >= 20
    assert summary["mean_capture"] >= 0.70
    assert summary["mean_solves"] <= 10
    assert summary["worse_than_start"] == 0
    for o in outcomes:
        assert o.j_pid <= o.j_start


def test_trajectory_starts_at_alpha0_and_logs_every_solve(problem):
    H, D, G = problem.grams()
    steps = []
    s = search_alpha(problem.W, H, D, G, QuantSpec(3, 32), method="pid", pid=PidConfig(alpha0=0.1),
                     on_step=lambda t, a, j: steps.append((t, a, j)))
    assert s.trajectory[0][:2] == (0, 0.1)
    assert steps == s.trajectory
    assert s.solves == len(s.trajectory) <= PidConfig().max_iter
    assert s.error == min(j for _, _, j in s.trajectory)
    assert torch.equal(s.result.weight, s.result.dequantize())


def test_pid_on_the_qep_basis_lowers_j_and_approaches_its_grid():
    p = random_problem(96, 128, tokens=1024, drift=0.2, seed=5)
    H, D, G = p.grams()
    spec = QuantSpec(3, 32)
    pid = search_alpha(p.W, H, D, G, spec, method="pid", basis="qep")
    grid = search_alpha(p.W, H, D, G, spec, method="grid", basis="qep")
    start = next(j for _, a, j in grid.trajectory if a == 0.25)
    assert pid.error < start  # better than the fixed α it starts from
    assert pid.error <= 1.01 * grid.error
    assert pid.solves < len(grid.trajectory)
    assert pid.result.info["alpha"] == pid.alpha


def test_parsimony_gives_up_alpha_only_within_epsilon_of_the_best_j():
    p = random_problem(96, 128, tokens=1024, drift=0.2, seed=5)
    H, D, G = p.grams()
    spec = QuantSpec(3, 32)
    best = search_alpha(p.W, H, D, G, spec, method="pid", basis="qep")
    lean = search_alpha(p.W, H, D, G, spec, method="pid", basis="qep", pid=PidConfig(parsimony=0.02))
    assert lean.alpha < best.alpha - 0.05  # a real step back towards less correction ...
    assert lean.trajectory[:-1] == best.trajectory  # ... taken after the same search, with one more solve
    assert lean.trajectory[-1][1] == lean.alpha
    assert best.error < lean.error <= 1.04 * best.error  # at a J within ~ε (the fit is not exact)


def test_select_last_keeps_the_final_iterate(problem):
    H, D, G = problem.grams()
    s = search_alpha(problem.W, H, D, G, QuantSpec(3, 32), pid=PidConfig(select="last"))
    assert s.alpha == s.trajectory[-1][1]


def test_grid_and_fixed(problem):
    H, D, G = problem.grams()
    grid = search_alpha(problem.W, H, D, G, QuantSpec(3, 32), method="grid", grid=(0.0, 0.5, 1.0))
    assert [a for _, a, _ in grid.trajectory] == [0.0, 0.5, 1.0]
    assert grid.error == min(j for _, _, j in grid.trajectory)
    fixed = search_alpha(problem.W, H, D, G, QuantSpec(3, 32), method="fixed", alpha=0.25)
    assert fixed.alpha == 0.25 and fixed.solves == 1


def test_holdout_feedback_judges_on_other_grams():
    p = random_problem(64, 96, tokens=1024, drift=0.2, seed=3)
    solve_part = random_problem(64, 96, tokens=1024, drift=0.2, seed=3)
    solve_part.X, solve_part.Xq = p.X[:, :512], p.Xq[:, :512]
    hold = random_problem(64, 96, tokens=1024, drift=0.2, seed=3)
    hold.X, hold.Xq = p.X[:, 512:], p.Xq[:, 512:]
    s = search_alpha(p.W, *solve_part.grams(), QuantSpec(3, 32), method="grid", grid=(0.0, 0.5),
                     holdout=hold.grams())
    from marr import reconstruction_error

    assert s.trajectory[1][2] == pytest.approx(reconstruction_error(p.W, s.trajectory and
                                               search_alpha(p.W, *solve_part.grams(), QuantSpec(3, 32),
                                                            method="fixed", alpha=0.5).result.weight,
                                               *hold.grams()), rel=1e-12)


def test_secant_signal_is_available_for_comparison(problem):
    H, D, G = problem.grams()
    s = search_alpha(problem.W, H, D, G, QuantSpec(3, 32), pid=PidConfig(signal="secant", kp=0.5))
    assert s.solves >= 2


@pytest.mark.parametrize("kwargs,key", [
    ({"kp": -1.0}, "pid.kp"), ({"ki": float("nan")}, "pid.ki"), ({"alpha_min": 1.0, "alpha_max": 0.0}, "alpha_min"),
    ({"tol": 0.0}, "pid.tol"), ({"select": "median"}, "pid.select"), ({"max_iter": 1}, "pid.max_iter"),
])
def test_invalid_pid_config_names_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        PidConfig(**kwargs)


def test_unknown_method_is_rejected(problem):
    H, D, G = problem.grams()
    with pytest.raises(ValueError, match="allowed values"):
        search_alpha(problem.W, H, D, G, QuantSpec(3), method="bayes")
