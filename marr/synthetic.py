"""Random layer-wise problems with correlated inputs and input drift (for tests, tuning, benches)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Problem:
    """W (d_out × d_in), FP inputs X and drifted inputs X̃ (d_in × N), and their Grams."""

    W: torch.Tensor
    X: torch.Tensor
    Xq: torch.Tensor

    @property
    def H(self) -> torch.Tensor:
        return self.Xq @ self.Xq.T

    @property
    def D(self) -> torch.Tensor:
        return (self.X - self.Xq) @ self.Xq.T

    @property
    def G(self) -> torch.Tensor:
        return self.X @ self.X.T

    def grams(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.H, self.D, self.G


def random_problem(d_out: int = 256, d_in: int = 192, tokens: int = 2048, *, drift: float = 0.1,
                   seed: int = 0, dtype: torch.dtype = torch.float64) -> Problem:
    """Inputs mixed through a matrix with a decaying spectrum (correlated channels, a few
    outlier channels, as in transformer activations); X̃ = X + drift that is partly a linear
    function of X (systematic error of earlier quantized layers) and partly noise."""
    g = torch.Generator().manual_seed(seed)
    spectrum = torch.exp(-torch.arange(d_in, dtype=dtype) / (d_in / 4))
    mix = torch.randn(d_in, d_in, generator=g, dtype=dtype) * spectrum
    X = mix @ torch.randn(d_in, tokens, generator=g, dtype=dtype)
    outliers = torch.randperm(d_in, generator=g)[: max(1, d_in // 64)]
    X[outliers] *= 8
    systematic = torch.randn(d_in, d_in, generator=g, dtype=dtype) / d_in**0.5
    noise = torch.randn(d_in, tokens, generator=g, dtype=dtype) * X.std(dim=1, keepdim=True)
    Xq = X + drift * (systematic @ X + 0.5 * noise)
    W = torch.randn(d_out, d_in, generator=g, dtype=dtype) / d_in**0.5
    return Problem(W, X, Xq)
