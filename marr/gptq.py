"""GPTQ with the residual (GPTAQ) term, and QEP.

Shapes: W is d_out × d_in, H = X̃X̃ᵀ and D = (X − X̃)X̃ᵀ are d_in × d_in.

GPTQ quantizes columns greedily; after column i is rounded its error is spread over the columns
not yet quantized through U = chol(H⁻¹) (upper). The residual term adds
P = α · triu(D Uᵀ, 1) · U, which steers the remaining columns towards W + W D H⁻¹, the optimum of
the asymmetric objective ‖W X − Q X̃‖²:

    W[:, i:] −= err ⊗ U[i, i:] − w_i ⊗ P[i, i:]            err = (w_i − q_i) / U[i, i]

QEP instead moves the weight before rounding: GPTQ runs on W + α·C with C = W D (H + λI)⁻¹, the
full-precision step to the asymmetric optimum, and no residual term in the loop. Both are
one-parameter families in α on top of the same column pass — the *residual basis* a coefficient
search moves along (``prepare(basis=...)``).

Everything that does not depend on α is computed once by ``prepare``; ``solve(alpha)`` runs only
the column pass, so a coefficient search reuses one preparation.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Literal

import torch

from marr.grid import QuantSpec, dequantize, find_params, group_index, quantize_column, rtn_params
from marr.result import QuantResult

log = logging.getLogger("marr.gptq")

MAX_DAMP_RAISES = 8
BASES = ("gptaq", "qep")


def _damped_cholesky(H: torch.Tensor, damp: float, what: str = "H") -> tuple[torch.Tensor, float]:
    """Lower Cholesky factor of H + λI with λ = damp·mean(diag H); raise damp ×10 until PD."""
    mean_diag = torch.diag(H).mean().item()
    if not torch.isfinite(H).all():
        raise FloatingPointError(f"{what} contains NaN or Inf")
    for attempt in range(MAX_DAMP_RAISES + 1):
        Hd = H.clone()
        Hd.diagonal().add_(damp * mean_diag)
        L, info = torch.linalg.cholesky_ex(Hd)
        if info.item() == 0:
            if attempt:
                log.warning("%s not positive definite: damping raised to %.3g", what, damp)
            return L, damp
        damp = damp * 10 if damp > 0 else 1e-6
    raise torch.linalg.LinAlgError(f"{what} is not positive definite even with damp={damp:.3g}")


def _upper_inverse_cholesky(H: torch.Tensor, damp: float) -> tuple[torch.Tensor, float]:
    """U upper-triangular with UᵀU = (H + λI)⁻¹, and the damp used."""
    L, damp = _damped_cholesky(H, damp)
    Hinv = torch.cholesky_inverse(L)
    U = torch.linalg.cholesky(Hinv, upper=True)
    return U, damp


@dataclass
class PreparedProblem:
    """Everything about one module's solve that does not depend on α (solve order)."""

    W: torch.Tensor  # d_out × d_in, dead columns zeroed, permuted into solve order
    U: torch.Tensor  # d_in × d_in upper, chol(H⁻¹) in solve order
    P_unit: torch.Tensor | None  # gptaq basis: triu(D Uᵀ, 1) U for α = 1, or None without D
    C: torch.Tensor | None  # qep basis: W D (H + λI)⁻¹ (float64, like W then); None otherwise
    perm: torch.Tensor | None
    spec: QuantSpec
    damp: float
    block_size: int
    static_params: tuple[torch.Tensor, torch.Tensor] | None  # (scales, zeros) per original group
    channel_params: tuple[torch.Tensor, torch.Tensor] | None  # per-channel (scale, zero)
    static_groups: bool = False


def prepare(
    W: torch.Tensor,
    H: torch.Tensor,
    spec: QuantSpec,
    *,
    D: torch.Tensor | None = None,
    damp: float = 0.01,
    act_order: bool = False,
    static_groups: bool = False,
    block_size: int = 128,
    dtype: torch.dtype = torch.float32,
    basis: Literal["gptaq", "qep"] = "gptaq",
) -> PreparedProblem:
    """Preparation of one module's solve; ``basis`` says how α moves the solution (module docstring)."""
    if basis not in BASES:
        raise ValueError(f"basis={basis!r}: allowed values are {', '.join(BASES)}")
    if basis == "qep" and D is None:
        raise ValueError("basis='qep' needs the drift Gram D")
    if not torch.isfinite(W).all():
        raise FloatingPointError("weight contains NaN or Inf")
    C = qep_direction(W, H, D, damp=damp) if basis == "qep" else None
    # the qep basis keeps W (and C) in float64 so that W + αC is rounded to ``dtype`` once, per α
    W = W.detach().to(torch.float64 if C is not None else dtype).clone()
    H = H.detach().to(dtype).clone()
    D = None if (D is None or C is not None) else D.detach().to(dtype).clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    if D is not None:
        D[:, dead] = 0
    if C is not None:
        C[:, dead] = 0

    # with the qep basis the grid depends on α: ``solve`` finds it on W + αC
    channel_params = find_params(W, spec) if (spec.group_size is None and C is None) else None
    static_params = rtn_params(W, spec) if (static_groups and spec.group_size is not None and C is None) else None

    perm = None
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        W = W[:, perm]
        H = H[perm][:, perm]
        if D is not None:
            D = D[perm][:, perm]
        if C is not None:
            C = C[:, perm]

    U, damp = _upper_inverse_cholesky(H, damp)
    P_unit = None if D is None else torch.triu(D @ U.T, diagonal=1) @ U
    return PreparedProblem(W, U, P_unit, C, perm, spec, damp, block_size, static_params, channel_params,
                           static_groups)


def _start_weight(prep: PreparedProblem, alpha: float) -> PreparedProblem:
    """For the qep basis: the preparation of plain GPTQ on W + αC (grid parameters found on it)."""
    W = (prep.W + alpha * prep.C).to(prep.U.dtype)
    spec, channel, static = prep.spec, None, None
    if spec.group_size is None:
        channel = find_params(W, spec)
    elif prep.static_groups:
        static = rtn_params(W if prep.perm is None else W[:, torch.argsort(prep.perm)], spec)
    return dataclasses.replace(prep, W=W, C=None, P_unit=None, static_params=static, channel_params=channel)


def solve(prep: PreparedProblem, alpha: float = 0.0) -> QuantResult:
    """One greedy column pass with residual strength ``alpha`` (0 = plain GPTQ).

    Works on Wᵀ (d_in × d_out) so that every column of W is a contiguous row.
    """
    if prep.C is not None:
        result = solve(_start_weight(prep, alpha))
        result.info["alpha"] = alpha
        return result
    spec, U, maxq = prep.spec, prep.U, prep.spec.maxq
    WT = prep.W.T.contiguous()
    d_in, d_out = WT.shape
    P = None if (prep.P_unit is None or alpha == 0) else alpha * prep.P_unit
    codesT = torch.empty_like(WT)
    n_groups = spec.n_groups(d_in)
    scales = torch.empty(n_groups, d_out, dtype=WT.dtype)
    zeros = torch.empty(n_groups, d_out, dtype=WT.dtype)
    orig_col = prep.perm if prep.perm is not None else torch.arange(d_in)
    gsize = spec.group_size

    if prep.channel_params is not None:
        scale, zero = prep.channel_params
        scales[0], zeros[0] = scale, zero
    elif prep.static_params is not None:
        scales, zeros = prep.static_params[0].to(WT.dtype), prep.static_params[1].to(WT.dtype)

    for i1 in range(0, d_in, prep.block_size):
        i2 = min(i1 + prep.block_size, d_in)
        W1 = WT[i1:i2].clone()
        Err1 = torch.empty_like(W1)
        U1 = U[i1:i2, i1:i2]
        P1 = None if P is None else P[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if gsize is not None:
                if prep.static_params is not None:
                    g = orig_col[col].item() // gsize
                    scale, zero = scales[g], zeros[g]
                elif col % gsize == 0:
                    # group parameters from the outer W as it stands (reference semantics)
                    scale, zero = find_params(WT[col : col + gsize].T, spec)
                    scales[col // gsize], zeros[col // gsize] = scale, zero
            w = W1[i].clone()
            codesT[col], q = quantize_column(w, scale, zero, maxq)
            err = (w - q) / U1[i, i]
            # rank-1 updates as (k × 1)(1 × n) matmuls: BLAS, far faster than addr_ on CPU
            W1[i:].addmm_(U1[i, i:, None], err[None], alpha=-1)
            if P1 is not None:
                W1[i:].addmm_(P1[i, i:, None], w[None])
            Err1[i] = err
        WT[i1:i2] = W1
        if i2 < d_in:
            WT[i2:].addmm_(U[i1:i2, i2:].T, Err1, alpha=-1)
            if P is not None:
                WT[i2:].addmm_(P[i1:i2, i2:].T, W1)

    codes = codesT.T
    if prep.perm is not None:
        codes = codes[:, torch.argsort(prep.perm)]
    g_idx = group_index(d_in, spec, None if prep.static_params is not None else prep.perm)
    codes = codes.to(torch.uint8).contiguous()
    scales, zeros = scales.to(torch.float32), zeros.to(torch.float32)
    weight = dequantize(codes, scales, zeros, g_idx)
    return QuantResult(weight, codes, scales, zeros, g_idx, prep.perm, spec, damp=prep.damp, info={"alpha": alpha})


def gptq_solve(
    W: torch.Tensor,
    H: torch.Tensor,
    spec: QuantSpec,
    *,
    D: torch.Tensor | None = None,
    alpha: float = 0.0,
    damp: float = 0.01,
    act_order: bool = False,
    static_groups: bool = False,
    block_size: int = 128,
    dtype: torch.dtype = torch.float32,
) -> QuantResult:
    """GPTQ (alpha = 0) or GPTAQ (D given, alpha > 0) for one weight matrix."""
    if alpha != 0 and D is None:
        raise ValueError(f"alpha={alpha} needs the drift Gram D")
    prep = prepare(
        W, H, spec, D=D, damp=damp, act_order=act_order, static_groups=static_groups,
        block_size=block_size, dtype=dtype,
    )
    return solve(prep, alpha)


def qep_direction(W: torch.Tensor, H: torch.Tensor, D: torch.Tensor, *, damp: float = 0.01) -> torch.Tensor:
    """C = W D (H + λI)⁻¹ in float64 (Cholesky solve): QEP's step from W to the asymmetric optimum."""
    L, _ = _damped_cholesky(H.detach().to(torch.float64), damp)
    WD = W.detach().to(torch.float64) @ D.detach().to(torch.float64)
    # (H + λI) is symmetric, so X = WD (H+λI)⁻¹ solves (H+λI) Xᵀ = (WD)ᵀ
    return torch.cholesky_solve(WD.T, L).T


def qep_correct(
    W: torch.Tensor, H: torch.Tensor, D: torch.Tensor, alpha: float = 0.5, *, damp: float = 0.01,
) -> torch.Tensor:
    """QEP's one-shot correction W* = W + α · W D (H + λI)⁻¹, in W's dtype."""
    return (W.to(torch.float64) + alpha * qep_direction(W, H, D, damp=damp)).to(W.dtype)


def qep_solve(
    W: torch.Tensor, H: torch.Tensor, D: torch.Tensor, spec: QuantSpec, *, alpha: float = 0.5,
    damp: float = 0.01, act_order: bool = False, static_groups: bool = False, block_size: int = 128,
    dtype: torch.dtype = torch.float32,
) -> QuantResult:
    """QEP: correct W once towards the FP output, then plain GPTQ on the corrected weight."""
    prep = prepare(W, H, spec, D=D, damp=damp, act_order=act_order, static_groups=static_groups,
                   block_size=block_size, dtype=dtype, basis="qep")
    return solve(prep, alpha)
