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


def byte_tokenizer():
    """A real HF fast tokenizer over the 256 byte-level symbols (no merges): any text, no files."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {s: i for i, s in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    vocab["<|endoftext|>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


def save_tiny_llm(folder, family: str = "llama", seed: int = 0):
    """Write a tiny random decoder with a byte-level tokenizer as a loadable HF folder."""
    model = tiny_model(family, seed)
    model.config.vocab_size = 257
    model.resize_token_embeddings(257)
    model.save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    return folder


def save_tiny_vit(folder, seed: int = 0):
    """Write a tiny DINOv2-style timm ViT as a marr timm folder (config.json + model.safetensors)."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    model = tiny_model("vit", seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    config = {"architecture": "vit_small_patch14_dinov2", "patch_size": 14, "native_img_size": 56,
              "default_img_size": 56, "num_classes": 0,
              "model_kwargs": {"depth": 2, "embed_dim": 64, "num_heads": 4, "init_values": 1.0}}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder
