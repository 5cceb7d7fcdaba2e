"""Calibration sets: seeded token windows (LLMs) or preprocessed images (ViTs), saved with a hash."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from marr.data.hashing import tensor_sha256
from marr.data.splits import join_documents
from marr.sources.cache import atomic_path

log = logging.getLogger("marr.data.calibration")

DEFAULT_WINDOWS = 128
DEFAULT_WINDOW_LEN = 512


@dataclass
class CalibrationSet:
    """`data`: int64 token windows [N, L] or float images [N, 3, H, W]; `sha256` of its bytes."""

    data: torch.Tensor
    sha256: str
    meta: dict


def tokenize_documents(tokenizer, documents: Sequence[str]) -> torch.Tensor:
    """The documents joined with blank lines, tokenized without special tokens: int64 [T]."""
    ids = tokenizer(join_documents(documents), add_special_tokens=False)["input_ids"]
    return torch.tensor(ids, dtype=torch.int64)


def sample_token_windows(token_ids: torch.Tensor, n_windows: int = DEFAULT_WINDOWS,
                         window_len: int = DEFAULT_WINDOW_LEN, seed: int = 0) -> torch.Tensor:
    """N windows of L consecutive tokens at uniformly random starts (as GPTQ samples C4).

    Starts are drawn with a seeded torch.Generator, so the same (tokens, N, L, seed) always
    gives the same windows. Returns int64 [N, L].
    """
    if n_windows < 1 or window_len < 1:
        raise ValueError(f"n_windows and window_len must be >= 1, got {n_windows}, {window_len}")
    token_ids = token_ids.reshape(-1)
    if token_ids.numel() < window_len:
        raise ValueError(f"only {token_ids.numel()} tokens, fewer than one window of {window_len}")
    gen = torch.Generator().manual_seed(int(seed))
    starts = torch.randint(0, token_ids.numel() - window_len + 1, (n_windows,), generator=gen)
    offsets = torch.arange(window_len)
    return token_ids[starts[:, None] + offsets[None, :]].clone()


def token_calibration_set(tokenizer, documents: Sequence[str], n_windows: int = DEFAULT_WINDOWS,
                          window_len: int = DEFAULT_WINDOW_LEN, seed: int = 0,
                          bos_token_id: int | None = None) -> CalibrationSet:
    """Sample windows from the tokenized documents; with `bos_token_id`, each window starts with it."""
    tokens = tokenize_documents(tokenizer, documents)
    body = window_len - (1 if bos_token_id is not None else 0)
    windows = sample_token_windows(tokens, n_windows, body, seed)
    if bos_token_id is not None:
        windows = torch.cat([torch.full((n_windows, 1), int(bos_token_id)), windows], dim=1)
    meta = {"kind": "tokens", "n_windows": n_windows, "window_len": window_len, "seed": seed,
            "source_tokens": int(tokens.numel()), "source_documents": len(documents),
            "bos_token_id": bos_token_id, "tokenizer": getattr(tokenizer, "name_or_path", "")}
    log.info("sampled %d windows of %d tokens from %d calibration tokens (seed %d)",
             n_windows, window_len, tokens.numel(), seed)
    return CalibrationSet(windows, tensor_sha256(windows), meta)


def save_calibration(path: str | Path, calib: CalibrationSet) -> Path:
    """Write `data` to a safetensors file; hash and meta go into its metadata (atomic)."""
    path = Path(path)
    metadata = {"sha256": calib.sha256, "meta": json.dumps(calib.meta, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file({"data": calib.data.contiguous()}, str(tmp), metadata=metadata)
    log.info("wrote calibration set %s %s sha256 %s", path, tuple(calib.data.shape), calib.sha256[:12])
    return path


def load_calibration(path: str | Path, verify: bool = True) -> CalibrationSet:
    """Read a calibration file; with `verify`, fail if the data no longer matches its hash."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        data = handle.get_tensor("data")
    expected = metadata.get("sha256")
    actual = tensor_sha256(data)
    if verify and expected != actual:
        raise ValueError(f"calibration file {path} is corrupt: sha256 {actual} != recorded {expected}")
    return CalibrationSet(data, actual, json.loads(metadata.get("meta", "{}")))
