"""The production peer: GPTQModel's GPTQ / GPTAQ on the same model and calibration windows.

GPTQModel 7.7 quantizes on a 2-core CPU only with ``GPTQMODEL_CPU_WORKERS=2``; its default GPTQ
is not plain GPTQ (``act_group_aware=True``, damp 0.05), so the flags are set explicitly to the
configuration ours runs: asymmetric, no act-order, damp 0.01. Its checkpoint (standard GPTQ
tensors) is decoded into the fp32 model with ``marr.packing.load_gptq_weights``, so both are
scored by the same fp32 forward on the same test tokens.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch


def quantize(model_folder: Path, windows: torch.Tensor, bits: int, group_size: int | None,
             alpha: float | None, out_dir: Path, damp: float = 0.01, batch_size: int = 8) -> float:
    """Quantize with GPTQModel (GPTAQ when ``alpha`` is given) and save to ``out_dir``; return seconds."""
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, os.cpu_count() or 2)))
    from gptqmodel import GPTQModel, QuantizeConfig
    from gptqmodel.quantization.config import GPTAQConfig

    config = QuantizeConfig(bits=bits, group_size=group_size or -1, sym=False, desc_act=False,
                            act_group_aware=False, damp_percent=damp, device="cpu",
                            gptaq=GPTAQConfig(alpha=alpha, device="cpu") if alpha is not None else None)
    model = GPTQModel.load(str(model_folder), config)
    t0 = time.perf_counter()   # like ours: the model is loaded before the clock starts
    rows = [{"input_ids": row.tolist(), "attention_mask": [1] * int(row.numel())} for row in windows]
    model.quantize(rows, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    model.save(str(out_dir))
    return seconds
