"""Tiny random models and quantized states for the packing tests."""

from __future__ import annotations

import torch

from marr.grid import QuantSpec, dequantize, group_index, quantize_column, rtn_params
from marr.result import QuantResult, rtn_quantize

VOCAB = 128
PROVENANCE = {"method": "rtn", "calibration_hash": "sha256:" + "0" * 64, "seed": 0}


def tiny_llama(hidden: int = 64, intermediate: int = 128, seed: int = 0, tie: bool = True):
    """A 2-block Llama with random weights (GQA 4/2 heads), float32, eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, tie_word_embeddings=tie,
    )
    return LlamaForCausalLM(config).eval()


def tiny_vit(seed: int = 0):
    """A 2-block timm ViT (embed 64, 32×32 images, patch 8) and the kwargs that rebuild it."""
    import timm

    torch.manual_seed(seed)
    args = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **args).eval(), args


def act_order_quantize(W: torch.Tensor, spec: QuantSpec, generator: torch.Generator) -> QuantResult:
    """RTN on a random solve order: groups of consecutive *permuted* columns (permuted g_idx)."""
    W = W.detach().to(torch.float32)
    perm = torch.randperm(W.shape[1], generator=generator)
    g_idx = group_index(W.shape[1], spec, perm)
    scales, zeros = rtn_params(W[:, perm], spec)
    g = g_idx.long()
    codes, _ = quantize_column(W, scales[g].T, zeros[g].T, spec.maxq)
    codes = codes.to(torch.uint8)
    return QuantResult(dequantize(codes, scales, zeros, g_idx), codes, scales, zeros, g_idx, perm, spec)


def quantize_model(model, spec: QuantSpec, *, act_order: bool = False, select=None, seed: int = 1) -> dict:
    """Quantize every selected linear (default: those inside blocks), write the fake-quantized weights."""
    select = select or (lambda name: ".layers." in name or name.startswith("blocks."))
    generator = torch.Generator().manual_seed(seed)
    states = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and select(name):
            if act_order:
                result = act_order_quantize(module.weight, spec, generator)
            else:
                result = rtn_quantize(module.weight, spec)
            result.info["alpha"] = 0.25 + 0.01 * len(states)
            result.info["relative_error"] = 0.001
            with torch.no_grad():
                module.weight.copy_(result.weight)
            states[name] = result
    return states


def tokens(n: int = 2, length: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, length), generator=torch.Generator().manual_seed(seed))
