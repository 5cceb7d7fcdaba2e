"""The module reconstruction error, computed from Gram matrices alone.

For FP inputs X and quantized-stream inputs X̃ (d_in × N) with H = X̃X̃ᵀ, D = (X − X̃)X̃ᵀ and
G = XXᵀ (all with the same scaling):

    J(Q) = ‖W X − Q X̃‖² = tr(W G Wᵀ) − 2·tr(W (D + H) Qᵀ) + tr(Q H Qᵀ)

since X X̃ᵀ = D + H. The relative error divides by tr(W G Wᵀ) = ‖W X‖². G enters only through
that one number, the energy of the module's FP output, so callers that see the FP outputs (the
engine hooks them during the FP pass) pass ‖W X‖² instead of accumulating a third d_in × d_in Gram.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ErrorModel:
    """J(Q) for a fixed module: the Q-independent parts are computed once (float64)."""

    H: torch.Tensor
    WDH: torch.Tensor  # W (D + H), d_out × d_in
    fp_energy: float  # tr(W G Wᵀ)

    @classmethod
    def build(cls, W: torch.Tensor, H: torch.Tensor, D: torch.Tensor, G: "torch.Tensor | float") -> "ErrorModel":
        """G: the FP Gram XXᵀ, or directly the FP output energy tr(W G Wᵀ) = ‖W X‖² as a number."""
        W, H, D = (t.detach().to(torch.float64) for t in (W, H, D))
        if isinstance(G, torch.Tensor) and G.dim() == 2:
            fp_energy = float(((W @ G.detach().to(torch.float64)) * W).sum())
        else:
            fp_energy = float(G)
        return cls(H=H, WDH=W @ (D + H), fp_energy=fp_energy)

    def __call__(self, Q: torch.Tensor) -> float:
        Q = Q.detach().to(torch.float64)
        return self.fp_energy - 2 * float((self.WDH * Q).sum()) + float(((Q @ self.H) * Q).sum())

    def relative(self, Q: torch.Tensor) -> float:
        return self(Q) / self.fp_energy if self.fp_energy > 0 else float("nan")


def reconstruction_error(W: torch.Tensor, Q: torch.Tensor, H: torch.Tensor, D: torch.Tensor, G: torch.Tensor) -> float:
    """‖W X − Q X̃‖² from the Grams (use the undamped H)."""
    return ErrorModel.build(W, H, D, G)(Q)


def relative_reconstruction_error(
    W: torch.Tensor, Q: torch.Tensor, H: torch.Tensor, D: torch.Tensor, G: torch.Tensor
) -> float:
    """‖W X − Q X̃‖² / ‖W X‖²."""
    return ErrorModel.build(W, H, D, G).relative(Q)
