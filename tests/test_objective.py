import torch

from marr import GramAccumulator, gptq_solve, QuantSpec, reconstruction_error, relative_reconstruction_error


def test_error_from_grams_equals_direct(problem):
    H, D, G = problem.grams()
    Q = gptq_solve(problem.W, H, QuantSpec(3, 32), D=D, alpha=0.5, dtype=torch.float64).weight.double()
    direct = ((problem.W @ problem.X - Q @ problem.Xq) ** 2).sum().item()
    assert abs(reconstruction_error(problem.W, Q, H, D, G) - direct) / direct < 1e-6
    rel = relative_reconstruction_error(problem.W, Q, H, D, G)
    assert abs(rel - direct / ((problem.W @ problem.X) ** 2).sum().item()) < 1e-9


def test_gram_accumulator_running_mean_matches_direct():
    g = torch.Generator().manual_seed(3)
    fp = torch.randn(7, 5, 12, generator=g, dtype=torch.float64)  # 7 sequences × 5 tokens
    q = fp + 0.1 * torch.randn(7, 5, 12, generator=g, dtype=torch.float64)
    acc = GramAccumulator(12, dtype=torch.float64)
    for start, stop in [(0, 3), (3, 4), (4, 7)]:  # uneven batches
        acc.add(q[start:stop], fp[start:stop])
    X, Xq = fp.reshape(-1, 12).T, q.reshape(-1, 12).T
    torch.testing.assert_close(acc.H, 2 / 7 * Xq @ Xq.T)
    torch.testing.assert_close(acc.D, 2 / 7 * (X - Xq) @ Xq.T)
    torch.testing.assert_close(acc.G, 2 / 7 * X @ X.T)
    assert acc.n == 7


def test_gram_accumulator_rejects_non_finite():
    import pytest

    acc = GramAccumulator(4, drift=False, fp=False)
    x = torch.ones(2, 3, 4)
    x[0, 1, 2] = float("nan")
    acc.add(x)
    with pytest.raises(FloatingPointError, match="block 3 module q: non-finite"):
        acc.check_finite("block 3 module q: ")
