"""Token perplexity as PTQ papers compute it (GPTQ/AWQ/GPTAQ WikiText-2 protocol).

The test documents are joined with "\\n\\n" and tokenized once; the token stream is cut into
non-overlapping windows of L tokens (the tail shorter than a window is dropped); each window is
scored independently and PPL = exp(mean NLL over all predicted tokens).

BOS: tokenizers that add a BOS by default (Gemma, Llama) get one at the start of every window
(`bos="auto"`), so a window holds BOS + L−1 text tokens and all L−1 are scored; otherwise a
window holds L text tokens and the last L−1 are scored.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Sequence

import torch
import torch.nn.functional as F

from marr.data.hashing import tensor_sha256
from marr.data.splits import join_documents
from marr.evaluation.model_size import model_size

log = logging.getLogger("marr.evaluation.perplexity")


def tokenizer_adds_bos(tokenizer) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return len(ids) > 0 and ids[0] == bos


def make_eval_windows(token_ids: torch.Tensor, window_len: int, bos_token_id: int | None = None) -> torch.Tensor:
    """Non-overlapping windows [n, window_len] of the token stream (BOS-prefixed if given)."""
    if window_len < 2:
        raise ValueError(f"window_len must be >= 2, got {window_len}")
    body = window_len - (1 if bos_token_id is not None else 0)
    token_ids = token_ids.reshape(-1)
    n = token_ids.numel() // body
    if n == 0:
        raise ValueError(f"{token_ids.numel()} tokens are fewer than one window of {body}")
    windows = token_ids[: n * body].reshape(n, body)
    if bos_token_id is not None:
        windows = torch.cat([torch.full((n, 1), int(bos_token_id), dtype=windows.dtype), windows], 1)
    return windows


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


@torch.no_grad()
def windows_nll(model, windows: torch.Tensor, batch_size: int = 1, log_every: int = 10) -> tuple[float, int]:
    """Summed NLL (float64) and count of predicted tokens over windows [n, L]."""
    device = _model_device(model)
    total, count = 0.0, 0
    n = windows.shape[0]
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    for b, first in enumerate(range(0, n, batch_size)):
        batch = windows[first: first + batch_size].to(device)
        logits = model(input_ids=batch).logits
        shift = logits[:, :-1].float().reshape(-1, logits.shape[-1])
        target = batch[:, 1:].reshape(-1)
        total += F.cross_entropy(shift, target, reduction="sum").double().item()
        count += target.numel()
        done = min(first + batch_size, n)
        if log_every and ((b + 1) % log_every == 0 or done == n):
            log.info("perplexity window %d/%d: running ppl %.4f (%.1f s)", done, n,
                     math.exp(total / count), time.perf_counter() - start)
    model.train(was_training)
    return total, count


def perplexity(model, token_ids: torch.Tensor, window_len: int = 2048, batch_size: int = 1,
               bos_token_id: int | None = None, max_windows: int | None = None) -> dict:
    """PPL of a token stream in non-overlapping windows; returns the metrics dict (no size)."""
    start = time.perf_counter()
    windows = make_eval_windows(token_ids, window_len, bos_token_id)
    if max_windows is not None:
        windows = windows[:max_windows]
    nll, count = windows_nll(model, windows, batch_size)
    return {
        "perplexity": math.exp(nll / count),
        "nll_mean": nll / count,
        "n_tokens": int(token_ids.numel()),
        "n_scored_tokens": int(count),
        "n_windows": int(windows.shape[0]),
        "window_len": int(window_len),
        "bos_per_window": bos_token_id is not None,
        "eval_data_sha256": tensor_sha256(windows),
        "wall_time_s": time.perf_counter() - start,
    }


def evaluate_perplexity(model, tokenizer, documents: str | Sequence[str], window_len: int = 2048,
                        batch_size: int = 1, bos: str | bool = "auto",
                        max_windows: int | None = None) -> dict:
    """Perplexity of a model on text (a string or documents joined with "\\n\\n").

    Returns a flat dict: perplexity, nll_mean, token counts, windows, eval data hash (of the
    scored windows), wall time, model size in bytes and bits per weight.
    """
    start = time.perf_counter()
    text = documents if isinstance(documents, str) else join_documents(documents)
    token_ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.int64)
    if bos not in ("auto", True, False):
        raise ValueError(f"bos must be 'auto', True or False, got {bos!r}")
    use_bos = tokenizer_adds_bos(tokenizer) if bos == "auto" else bool(bos)
    if use_bos and tokenizer.bos_token_id is None:
        raise ValueError("bos=True but the tokenizer has no bos_token_id")
    log.info("perplexity: %d tokens, windows of %d%s", token_ids.numel(), window_len,
             " (BOS per window)" if use_bos else "")
    metrics = perplexity(model, token_ids, window_len, batch_size,
                         tokenizer.bos_token_id if use_bos else None, max_windows)
    metrics.update(model_size(model))
    metrics["wall_time_s"] = time.perf_counter() - start
    return metrics
