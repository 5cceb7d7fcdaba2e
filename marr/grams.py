"""Running Gram matrices of a module's inputs, with the GPTQ reference's scaling.

After n sequences (or images) the Grams are (2/n)·Σ x xᵀ over every token of them, updated as a
running mean so that batches of any size can be added:

    H = X̃X̃ᵀ   (quantized stream)     D = (X − X̃)X̃ᵀ   (drift)     G = XXᵀ   (FP stream)
"""

from __future__ import annotations

import torch


def _flatten_tokens(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(tokens × d) rows and the number of sequences in the batch."""
    if x.dim() == 1:
        return x[None], 1
    n = x.shape[0] if x.dim() > 2 else 1
    return x.reshape(-1, x.shape[-1]), n


class GramAccumulator:
    """Accumulates H, and D and G when FP inputs are given alongside the quantized-stream ones."""

    def __init__(self, d_in: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 drift: bool = True, fp: bool = True):
        self.d_in = d_in
        self.dtype = dtype
        self.n = 0
        self.H = torch.zeros(d_in, d_in, dtype=dtype, device=device)
        self.D = torch.zeros(d_in, d_in, dtype=dtype, device=device) if drift else None
        self.G = torch.zeros(d_in, d_in, dtype=dtype, device=device) if fp else None

    def add(self, q_inputs: torch.Tensor, fp_inputs: torch.Tensor | None = None) -> None:
        """Add a batch: q_inputs / fp_inputs are (batch, tokens, d_in) or (tokens, d_in)."""
        xq, n_new = _flatten_tokens(q_inputs)
        if xq.shape[-1] != self.d_in:
            raise ValueError(f"input width {xq.shape[-1]} != accumulator width {self.d_in}")
        xq = xq.to(self.H.device, self.dtype)
        xf = None
        if fp_inputs is not None:
            xf, _ = _flatten_tokens(fp_inputs)
            xf = xf.to(self.H.device, self.dtype)
            if xf.shape != xq.shape:
                raise ValueError(f"FP inputs {tuple(xf.shape)} and Q inputs {tuple(xq.shape)} differ in shape")
        elif self.D is not None or self.G is not None:
            raise ValueError("this accumulator tracks D/G: pass fp_inputs too")

        keep = self.n / (self.n + n_new)
        self.n += n_new
        w = 2.0 / self.n
        self.H.mul_(keep).addmm_(xq.T, xq, alpha=w)
        if self.D is not None:
            self.D.mul_(keep).addmm_((xf - xq).T, xq, alpha=w)
        if self.G is not None:
            self.G.mul_(keep).addmm_(xf.T, xf, alpha=w)

    def check_finite(self, where: str = "") -> None:
        """Raise if any Gram holds NaN/Inf (a non-finite input poisons its Gram, so one check
        per group replaces a scan of every activation)."""
        for name in ("H", "D", "G"):
            gram = getattr(self, name)
            if gram is not None and not torch.isfinite(gram).all():
                stream = "quantized-stream" if name == "H" else "FP- or quantized-stream"
                raise FloatingPointError(f"{where}non-finite values in the {stream} inputs (Gram {name})")
