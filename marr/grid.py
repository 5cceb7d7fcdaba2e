"""Uniform integer quantization grids (the GPTQ reference conventions).

A weight row ``w`` is mapped to integer codes ``q = clamp(round(w / scale) + zero, 0, 2^b - 1)``
and back to ``scale * (q - zero)``. The range is widened to include 0; symmetric grids put the
zero point in the middle of the code range. ``mse=True`` shrinks the range per row by a grid
search minimising ``sum |w - dq(w)|^2.4`` (the reference's norm).

Scales are rounded to float16 by default, so the fp16 scales a packed checkpoint stores
reproduce the fake-quantized weights exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MSE_NORM = 2.4
MSE_GRID = 100
MSE_MAX_SHRINK = 0.8


@dataclass(frozen=True)
class QuantSpec:
    """How one weight matrix is quantized.

    bits: 2..8. group_size: None or -1 for one scale per output channel, else the number of
    consecutive input columns sharing a scale/zero (the last group may be shorter).
    sym: symmetric grid. mse: shrink the range by the reference's grid search.
    fp16_scales: round scales to float16 precision (what packed checkpoints store).
    """

    bits: int
    group_size: int | None = None
    sym: bool = False
    mse: bool = False
    fp16_scales: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"QuantSpec.bits={self.bits!r}: must be an integer in 2..8")
        if self.group_size == -1:
            object.__setattr__(self, "group_size", None)
        if self.group_size is not None and (
            isinstance(self.group_size, bool) or not isinstance(self.group_size, int) or self.group_size < 1
        ):
            raise ValueError(
                f"QuantSpec.group_size={self.group_size!r}: must be a positive integer, or None/-1 for per-channel"
            )

    @property
    def maxq(self) -> int:
        return 2**self.bits - 1

    def n_groups(self, d_in: int) -> int:
        return 1 if self.group_size is None else -(-d_in // self.group_size)


def _round_scale(scale: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    if spec.fp16_scales:
        scale = scale.to(torch.float16).to(scale.dtype)
        # a scale that underflows fp16 would make every code saturate; keep the smallest normal
        scale = scale.clamp_min(torch.finfo(torch.float16).tiny)
    return scale


def _codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int) -> torch.Tensor:
    return torch.clamp(torch.round(w / scale) + zero, 0, maxq)


def find_params(w: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row (scale, zero) for ``w`` (rows × columns); both returned with shape (rows,)."""
    maxq = spec.maxq
    zeros_like_row = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    xmin = torch.minimum(w.min(dim=1).values, zeros_like_row)
    xmax = torch.maximum(w.max(dim=1).values, zeros_like_row)
    if spec.sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    both_zero = (xmin == 0) & (xmax == 0)
    xmin = torch.where(both_zero, -torch.ones_like(xmin), xmin)
    xmax = torch.where(both_zero, torch.ones_like(xmax), xmax)

    def params_for(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = _round_scale((hi - lo) / maxq, spec)
        if spec.sym:
            zero = torch.full_like(scale, (maxq + 1) / 2)
        else:
            zero = torch.round(-lo / scale).clamp(0, maxq)
        return scale, zero

    scale, zero = params_for(xmin, xmax)
    if spec.mse:
        best = torch.full_like(xmin, float("inf"))
        for i in range(int(MSE_MAX_SHRINK * MSE_GRID)):
            p = 1 - i / MSE_GRID
            scale1, zero1 = params_for(p * xmin, p * xmax)
            dq = scale1[:, None] * (_codes(w, scale1[:, None], zero1[:, None], maxq) - zero1[:, None])
            err = (dq - w).abs().pow(MSE_NORM).sum(dim=1)
            better = err < best
            best = torch.where(better, err, best)
            scale = torch.where(better, scale1, scale)
            zero = torch.where(better, zero1, zero)
    return scale, zero


def quantize_column(
    w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, maxq: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize along the last axis-broadcast: returns (codes, dequantized) for ``w``."""
    codes = _codes(w, scale, zero, maxq)
    return codes, scale * (codes - zero)


def dequantize(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, g_idx: torch.Tensor) -> torch.Tensor:
    """Weight (d_out × d_in) from codes (d_out × d_in), scales/zeros (n_groups × d_out), g_idx (d_in,)."""
    g = g_idx.long()
    return scales[g].T * (codes.to(scales.dtype) - zeros[g].T.to(scales.dtype))


def group_index(d_in: int, spec: QuantSpec, perm: torch.Tensor | None = None) -> torch.Tensor:
    """g_idx: the group of every input column (original order).

    Groups are consecutive runs of ``group_size`` columns in solve order; with a permutation
    (act-order without static groups) column ``perm[j]`` belongs to group ``j // group_size``.
    """
    if spec.group_size is None:
        return torch.zeros(d_in, dtype=torch.int32)
    order_groups = torch.arange(d_in) // spec.group_size
    if perm is None:
        return order_groups.to(torch.int32)
    g_idx = torch.empty(d_in, dtype=torch.int32)
    g_idx[perm] = order_groups.to(torch.int32)
    return g_idx


def rtn_params(W: torch.Tensor, spec: QuantSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """(scales, zeros), each n_groups × d_out, computed group by group on the original columns."""
    d_in = W.shape[1]
    if spec.group_size is None:
        s, z = find_params(W, spec)
        return s[None], z[None]
    scales, zeros = [], []
    for start in range(0, d_in, spec.group_size):
        s, z = find_params(W[:, start : start + spec.group_size], spec)
        scales.append(s)
        zeros.append(z)
    return torch.stack(scales), torch.stack(zeros)
