"""GGUF causal LM → plain fp32 Hugging Face folder (safetensors + tokenizer)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

log = logging.getLogger("marr.sources.gguf")


def convert_gguf_to_hf(gguf_path: Path, out_dir: Path, provenance: dict | None = None) -> Path:
    """Dequantise a GGUF model with transformers and save it as an ordinary fp32 checkpoint.

    transformers marks GGUF-loaded models as quantized (`hf_quantizer`, `quantization_config`);
    both are dropped so the folder loads as a plain model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    log.info("loading GGUF %s (dequantising to fp32)", gguf_path.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.dtype = torch.float32
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    n_params = sum(p.numel() for p in model.parameters())
    info = {"converted_from": gguf_path.name, "architecture": type(model).__name__,
            "parameters": n_params, "dtype": "float32", **(provenance or {})}
    (out_dir / "marr_source.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("saved %s (%.1f M params) to %s", type(model).__name__, n_params / 1e6, out_dir)
    return out_dir
