"""Solver tests: against a straight transcription of the GPTQ/GPTAQ column loop, closed forms,
and RTN, on random problems with correlated inputs and drift."""

import pytest
import torch

from marr import QuantSpec, gptq_solve, qep_correct, qep_solve, rtn_quantize
from marr.grid import dequantize, find_params
from marr.synthetic import random_problem


def reference_gptaq(W, H, D, spec, alpha, damp=0.01, block_size=128):
    """The reference loop, written out plainly (no act-order, no static groups)."""
    W, H = W.clone().float(), H.clone().float()
    D = D.clone().float() if D is not None else torch.zeros_like(H)
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    D[:, dead] = 0
    n = W.shape[1]
    if spec.group_size is None:
        scale, zero = find_params(W, spec)
    H = H + damp * torch.mean(torch.diag(H)) * torch.eye(n)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    P = alpha * torch.triu(D @ U.T, diagonal=1) @ U
    Q = torch.zeros_like(W)
    for i1 in range(0, n, block_size):
        i2 = min(i1 + block_size, n)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            w = W1[:, i].clone()
            if spec.group_size is not None and (i1 + i) % spec.group_size == 0:
                scale, zero = find_params(W[:, i1 + i : i1 + i + spec.group_size], spec)
            q = scale * (torch.clamp(torch.round(w / scale) + zero, 0, spec.maxq) - zero)
            Q[:, i1 + i] = q
            err = (w - q) / U[i1 + i, i1 + i]
            W1[:, i:] -= err[:, None] @ U[i1 + i, i1 + i : i2][None] - w[:, None] @ P[i1 + i, i1 + i : i2][None]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:] - W1 @ P[i1:i2, i2:]
    return Q


def h_error(p, Q):
    """‖(W − Q) X̃‖²: the objective GPTQ minimises."""
    return (((p.W - Q.double()) @ p.Xq) ** 2).sum().item()


@pytest.mark.parametrize("group_size", [None, 32])
def test_alpha_zero_is_plain_gptq_bit_for_bit(problem, group_size):
    H, D, _ = problem.grams()
    spec = QuantSpec(3, group_size)
    ours = gptq_solve(problem.W.float(), H.float(), spec, D=D.float(), alpha=0.0, block_size=64)
    ref = reference_gptaq(problem.W, H, None, spec, 0.0, block_size=64)
    assert torch.equal(ours.weight, ref)


def test_gptaq_matches_reference_loop(problem):
    H, D, _ = problem.grams()
    spec = QuantSpec(3, 32)
    ours = gptq_solve(problem.W.float(), H.float(), spec, D=D.float(), alpha=0.25, block_size=64)
    ref = reference_gptaq(problem.W, H, D, spec, 0.25, block_size=64)
    assert (ours.weight != ref).float().mean() < 0.01  # identical up to rare float-order rounding flips
    torch.testing.assert_close(ours.weight, ref, atol=2 * ours.scales.max().item(), rtol=0)


def test_lazy_block_size_does_not_change_gptq(problem):
    """Lazy batching is exact for GPTQ. (With α > 0 the reference's lazy update multiplies P by
    W1 *after* the block loop, whose columns are then the quantized values, while the in-block
    update uses the pre-rounding w_i: GPTAQ results depend slightly on block_size by design.)"""
    H, _, _ = problem.grams()
    spec = QuantSpec(4)  # per-channel: group parameters do not depend on lazy-update timing
    a = gptq_solve(problem.W, H, spec, block_size=32, dtype=torch.float64)
    b = gptq_solve(problem.W, H, spec, block_size=128, dtype=torch.float64)
    assert torch.equal(a.codes, b.codes)


def test_gptq_beats_rtn_on_every_problem():
    for seed in range(20):
        p = random_problem(64, 96, tokens=512, drift=0.0, seed=seed)
        for bits in (2, 3):
            spec = QuantSpec(bits, 32)
            gptq = gptq_solve(p.W, p.H, spec, dtype=torch.float64)
            rtn = rtn_quantize(p.W, spec)
            assert h_error(p, gptq.weight) < h_error(p, rtn.weight), (seed, bits)


def test_eight_bit_is_close_to_fp(problem):
    H, D, _ = problem.grams()
    r = gptq_solve(problem.W, H, QuantSpec(8), dtype=torch.float64)
    out_rel = h_error(problem, r.weight) / ((problem.W @ problem.Xq) ** 2).sum().item()
    assert out_rel < 1e-3
    assert (r.weight.double() - problem.W).norm() / problem.W.norm() < 2e-2  # ~half an 8-bit step


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("act_order,static_groups", [(False, False), (True, False), (True, True)])
def test_codes_in_range_and_dequantize_to_weight(problem, bits, act_order, static_groups):
    H, D, _ = problem.grams()
    r = gptq_solve(problem.W, H, QuantSpec(bits, 32), D=D, alpha=0.3, act_order=act_order,
                   static_groups=static_groups)
    assert int(r.codes.min()) >= 0 and int(r.codes.max()) <= 2**bits - 1
    assert torch.equal(dequantize(r.codes, r.scales, r.zeros, r.g_idx), r.weight)


def permute_inputs(p, perm):
    H, D, _ = p.grams()
    return p.W[:, perm], H[perm][:, perm], D[perm][:, perm]


@pytest.mark.parametrize("group_size", [None, 32])
def test_act_order_equals_caller_side_permutation(problem, group_size):
    """act_order=True gives the weight the caller gets by sorting columns by diag H itself."""
    H, D, _ = problem.grams()
    spec = QuantSpec(3, group_size)
    internal = gptq_solve(problem.W, H, spec, D=D, alpha=0.4, act_order=True, dtype=torch.float64)
    perm = torch.argsort(torch.diag(H), descending=True)
    Wp, Hp, Dp = permute_inputs(problem, perm)
    manual = gptq_solve(Wp, Hp, spec, D=Dp, alpha=0.4, dtype=torch.float64)
    assert torch.equal(internal.weight, manual.weight[:, torch.argsort(perm)])
    assert torch.equal(internal.perm, perm)


def test_static_groups_with_act_order_are_invariant_to_caller_permutation(problem):
    """Static groups are fixed on the original columns: shuffling columns inside each group
    (the same groups, another caller order) must not change the result."""
    H, D, _ = problem.grams()
    spec = QuantSpec(3, 32)
    g = torch.Generator().manual_seed(0)
    perm = torch.cat([start + torch.randperm(32, generator=g) for start in range(0, 128, 32)])
    base = gptq_solve(problem.W, H, spec, D=D, alpha=0.4, act_order=True, static_groups=True, dtype=torch.float64)
    Wp, Hp, Dp = permute_inputs(problem, perm)
    shuffled = gptq_solve(Wp, Hp, spec, D=Dp, alpha=0.4, act_order=True, static_groups=True, dtype=torch.float64)
    assert torch.equal(base.weight[:, perm], shuffled.weight)
    assert torch.equal(base.g_idx, torch.arange(128, dtype=torch.int32) // 32)


def test_dead_columns_are_zeroed():
    p = random_problem(32, 64, tokens=256, seed=1)
    p.Xq[5] = 0
    p.X[5] = 0
    H, D, _ = p.grams()
    r = gptq_solve(p.W, H, QuantSpec(3, 32), D=D, alpha=0.5)
    assert torch.all(r.weight[:, 5] == 0)


def test_qep_correction_is_the_closed_form(problem):
    H, D, _ = problem.grams()
    corrected = qep_correct(problem.W, H, D, alpha=1.0, damp=0.0)
    closed = problem.W + torch.linalg.solve(H, (problem.W @ D).T).T  # W + W D H⁻¹ (H symmetric)
    torch.testing.assert_close(corrected, closed, rtol=1e-9, atol=1e-9)


def test_qep_lowers_the_asymmetric_error(problem):
    H, D, G = problem.grams()
    from marr import reconstruction_error

    spec = QuantSpec(3, 32)
    plain = gptq_solve(problem.W, H, spec)
    qep = qep_solve(problem.W, H, D, spec, alpha=0.5)
    assert reconstruction_error(problem.W, qep.weight, H, D, G) < reconstruction_error(problem.W, plain.weight, H, D, G)


@pytest.mark.parametrize("group_size,act_order,static_groups", [(32, False, False), (None, True, False),
                                                                 (32, True, True)])
def test_qep_basis_is_gptq_on_the_corrected_weight(problem, group_size, act_order, static_groups):
    """The α family a search moves along with basis='qep' is GPTQ on W + α·W D (H+λI)⁻¹, at every α."""
    from marr.gptq import prepare, solve

    H, D, _ = problem.grams()
    spec = QuantSpec(3, group_size)
    opts = dict(act_order=act_order, static_groups=static_groups)
    prep = prepare(problem.W.float(), H.float(), spec, D=D.float(), basis="qep", **opts)
    for alpha in (0.0, 0.3, 1.0):
        corrected = qep_correct(problem.W.float(), H.float(), D.float(), alpha=alpha)
        expected = gptq_solve(corrected, H.float(), spec, **opts)
        got = solve(prep, alpha)
        assert torch.equal(got.weight, expected.weight) and torch.equal(got.codes, expected.codes)


def test_unknown_basis_and_qep_basis_without_drift_are_rejected(problem):
    from marr.gptq import prepare

    H, D, _ = problem.grams()
    with pytest.raises(ValueError, match="basis='rescomp'.*gptaq, qep"):
        prepare(problem.W, H, QuantSpec(3), D=D, basis="rescomp")
    with pytest.raises(ValueError, match="needs the drift Gram D"):
        prepare(problem.W, H, QuantSpec(3), basis="qep")


def test_gptaq_removes_most_of_the_drift_error_when_rounding_is_negligible(problem):
    """At 8 bits the error is mostly the input drift. GPTQ (α=0) keeps it; the residual term
    (α=1) removes most of it, though not all: it only corrects columns not yet quantized, so it
    cannot reach the unconstrained optimum W + W D H⁻¹ (which QEP's closed form hits)."""
    from marr import relative_reconstruction_error as rel

    H, D, G = problem.grams()
    drift_only = rel(problem.W, problem.W, H, D, G)
    gptq = gptq_solve(problem.W, H, QuantSpec(8), damp=1e-6, dtype=torch.float64)
    gptaq = gptq_solve(problem.W, H, QuantSpec(8), D=D, alpha=1.0, damp=1e-6, dtype=torch.float64)
    optimum = qep_correct(problem.W, H, D, alpha=1.0, damp=1e-6)
    assert rel(problem.W, gptq.weight, H, D, G) > 0.95 * drift_only
    assert rel(problem.W, gptaq.weight, H, D, G) < 0.5 * drift_only
    assert rel(problem.W, optimum, H, D, G) < rel(problem.W, gptaq.weight, H, D, G)


def test_non_pd_hessian_raises_damping_instead_of_failing():
    p = random_problem(16, 32, tokens=8, seed=2)  # 8 tokens: H has rank 8 < 32
    H = p.H
    H[0, 1] = H[1, 0] = H[0, 0] * 50  # make it indefinite
    r = gptq_solve(p.W, H, QuantSpec(3), damp=0.0)
    assert r.damp > 0
