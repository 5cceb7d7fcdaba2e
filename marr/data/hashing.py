"""Content hashes that identify evaluation and calibration data."""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's values as contiguous little-endian bytes (token ids: int64)."""
    array = tensor.detach().cpu().contiguous().numpy()
    array = np.ascontiguousarray(array.astype(array.dtype.newbyteorder("<"), copy=False))
    return hashlib.sha256(array.tobytes()).hexdigest()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
