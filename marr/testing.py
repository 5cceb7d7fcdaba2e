"""Tiny random models of every supported family, built from configs (no downloads).

Used by the tests and by the pipeline's ``tiny`` model source.
"""

from __future__ import annotations

import torch
from torch import nn

FAMILIES = ("llama", "qwen2", "gemma3", "vit")


def tiny_model(family: str, seed: int = 0) -> nn.Module:
    """A 2–3 block model with hidden size 64 whose linears have widths that groups of 32 divide."""
    torch.manual_seed(seed)
    if family == "vit":
        import timm

        return timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=56, depth=2, embed_dim=64,
                                 num_heads=4, num_classes=0, init_values=1.0).eval()
    from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM, Qwen2Config,
                              Qwen2ForCausalLM)

    common = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=128)
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(num_hidden_layers=2, **common)).eval()
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(num_hidden_layers=2, **common)).eval()
    if family == "gemma3":
        cfg = Gemma3TextConfig(num_hidden_layers=3, head_dim=16, sliding_window=8,
                               layer_types=["sliding_attention", "sliding_attention", "full_attention"], **common)
        return Gemma3ForCausalLM(cfg).eval()
    raise ValueError(f"family={family!r}: allowed values are {', '.join(FAMILIES)}")


def tiny_calibration(family: str, n: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if family == "vit":
        return torch.randn(n, 3, 56, 56, generator=g)
    return torch.randint(0, 128, (n, 32), generator=g)


def model_output(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(batch)
    return getattr(out, "logits", out)
