"""The block-output judge: J of a candidate Q measured where the block hands it to the model.

The layer-wise J = ‖W X − Q X̃‖² treats every direction of a module's output error alike. Inside a
transformer block the error then passes through attention (q/k errors matter only through the
softmax) or the MLP gate before it reaches the residual stream, so the α with the lowest
layer-wise J need not be the α with the lowest error at the block's output. This judge writes Q
into the module, runs the (partially quantized) block on the held-out windows of the Q stream and
compares with the FP block's output on the same windows:

    J_block(Q) = ‖Y_FP − block(X̃; module ← Q)‖²     (modules after this one still full precision)

One block forward over the held-out windows per candidate α (the engine's forward reuses the
outputs of submodules that are already solved, e.g. the attention while an MLP module is judged).
"""

from __future__ import annotations

import time
from typing import Callable

import torch
from torch import nn


class BlockOutputJudge:
    """Callable Q ↦ J_block(Q) for one module; ``fp_energy`` = ‖Y_FP‖² makes J relative."""

    def __init__(self, module: nn.Linear, forward: Callable[[], torch.Tensor], target: torch.Tensor):
        self.module = module
        self.forward = forward  # runs the block over the held-out Q-stream windows, returns its output
        self.target = target.double()  # once, not per candidate
        self.fp_energy = float(self.target.pow(2).sum())
        self.seconds = 0.0  # spent in the block forwards

    def __call__(self, Q: torch.Tensor) -> float:
        weight = self.module.weight.data
        saved = weight.clone()
        weight.copy_(Q.to(weight.dtype))
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                output = self.forward()
        finally:
            self.seconds += time.perf_counter() - t0
            weight.copy_(saved)
        return float((output.double() - self.target).pow(2).sum())
