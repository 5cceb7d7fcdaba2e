"""The quantized state of one linear module, shared by every solver and by packing."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from marr.grid import QuantSpec, dequantize, group_index, quantize_column, rtn_params


@dataclass
class QuantResult:
    """One quantized weight matrix.

    weight: d_out × d_in float32, original column order; equals ``dequantize(codes, scales, zeros, g_idx)``.
    codes: d_out × d_in uint8 integer codes in [0, 2^bits - 1], original column order.
    scales, zeros: n_groups × d_out float32 (zeros hold integers; fp16-exact scales by default).
    g_idx: d_in int32, the group of every input column. perm: the solve order (act-order) or None.
    damp: the damping actually used (raised when H was not positive definite), None for RTN.
    """

    weight: torch.Tensor
    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    g_idx: torch.Tensor
    perm: torch.Tensor | None
    spec: QuantSpec
    damp: float | None = None
    info: dict = field(default_factory=dict)

    def dequantize(self) -> torch.Tensor:
        return dequantize(self.codes, self.scales, self.zeros, self.g_idx)

    def state_dict(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Tensors needed to rebuild this result (for per-block state files)."""
        out = {
            f"{prefix}codes": self.codes.contiguous(),
            f"{prefix}scales": self.scales.contiguous(),
            f"{prefix}zeros": self.zeros.contiguous(),
            f"{prefix}g_idx": self.g_idx.contiguous(),
        }
        if self.perm is not None:
            out[f"{prefix}perm"] = self.perm.to(torch.int64).contiguous()
        return out

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor], spec: QuantSpec, prefix: str = "") -> "QuantResult":
        codes = tensors[f"{prefix}codes"]
        scales = tensors[f"{prefix}scales"]
        zeros = tensors[f"{prefix}zeros"]
        g_idx = tensors[f"{prefix}g_idx"]
        perm = tensors.get(f"{prefix}perm")
        weight = dequantize(codes, scales, zeros, g_idx)
        return cls(weight, codes, scales, zeros, g_idx, perm, spec)


def rtn_quantize(W: torch.Tensor, spec: QuantSpec) -> QuantResult:
    """Round-to-nearest on the spec's grid (groups of consecutive original columns)."""
    W = W.detach().to(torch.float32)
    scales, zeros = rtn_params(W, spec)
    g_idx = group_index(W.shape[1], spec)
    g = g_idx.long()
    codes, _ = quantize_column(W, scales[g].T, zeros[g].T, spec.maxq)
    codes = codes.to(torch.uint8)
    return QuantResult(dequantize(codes, scales, zeros, g_idx), codes, scales, zeros, g_idx, None, spec)
