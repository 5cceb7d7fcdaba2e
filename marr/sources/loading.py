"""Load a model spec into memory: transformers causal LMs and timm ViTs."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from marr.sources.materialize import materialize
from marr.sources.specs import ModelSpec, resolve_spec

log = logging.getLogger("marr.sources.loading")


@dataclass
class LoadedModel:
    """A model ready for calibration/evaluation (eval mode, on CPU)."""

    model: torch.nn.Module
    tokenizer: Any | None
    kind: str                     # "llm" | "vit"
    name: str
    source_id: str
    path: Path | None = None      # local folder or checkpoint, when there is one
    data_config: dict | None = None   # timm preprocessing (input_size, mean, std, ...)
    spec: ModelSpec | None = field(default=None, repr=False)


def load_model(spec_or_name, cache_dir=None, dtype: torch.dtype = torch.float32,
               img_size: int | None = None) -> LoadedModel:
    """Resolve, materialise if needed, and load a model.

    `spec_or_name`: an embedded default (`smollm2-135m`, `gemma3-270m`, `dinov2-s`), a string
    `hf:<id or folder>` / `timm:<arch>[@<checkpoint>]`, a local folder, a params mapping
    (see `resolve_spec`), or a ModelSpec. `img_size` overrides a ViT's working resolution.
    """
    spec = resolve_spec(spec_or_name)
    if spec.kind == "llm":
        path = materialize(spec, cache_dir) if spec.source != "hf" else _hf_location(spec)
        model, tokenizer = load_hf_causal_lm(path, dtype=dtype, revision=spec.revision)
        local = Path(path) if Path(str(path)).is_dir() else None
        return LoadedModel(model, tokenizer, "llm", spec.name, spec.source_id, local, None, spec)
    size = img_size or spec.img_size
    if spec.source == "onnx-dinov2":
        folder = materialize(spec, cache_dir)
        model, data_config = load_timm_folder(folder, img_size=size)
        path = folder
    else:
        model, data_config = load_timm(spec.timm_name, spec.checkpoint, img_size=size)
        path = Path(spec.checkpoint) if spec.checkpoint else None
    model = model.to(dtype)
    return LoadedModel(model, None, "vit", spec.name, spec.source_id, path, data_config, spec)


def _hf_location(spec: ModelSpec) -> str:
    path = Path(spec.hf_id)
    return str(path) if path.is_dir() else spec.hf_id


def load_hf_causal_lm(path, dtype: torch.dtype = torch.float32, revision: str | None = None):
    """AutoModelForCausalLM + AutoTokenizer from a folder or hub id, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("loading causal LM %s", path)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, revision=revision)
    model.eval()
    return model, tokenizer


def load_timm_folder(folder, img_size: int | None = None):
    """Load a marr timm folder (config.json + model.safetensors); resample pos-embed to img_size."""
    import timm
    from safetensors.torch import load_file

    from marr.sources.dinov2_onnx import resample_pos_embed

    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    size = int(img_size or config.get("default_img_size") or config["native_img_size"])
    patch = int(config["patch_size"])
    if size % patch:
        raise ValueError(f"img_size {size} is not a multiple of the patch size {patch}")
    model = timm.create_model(config["architecture"], pretrained=False,
                              num_classes=config.get("num_classes", 0), img_size=size,
                              **config.get("model_kwargs", {}))
    state = load_file(str(folder / "model.safetensors"))
    state["pos_embed"] = resample_pos_embed(state["pos_embed"], (size // patch, size // patch),
                                            prefix_tokens=model.num_prefix_tokens)
    model.load_state_dict(state, strict=True)
    model.eval()
    data_config = _data_config(model, config.get("pretrained_cfg"), size)
    return model, data_config


def load_timm(arch: str, checkpoint: str | None = None, img_size: int | None = None,
              num_classes: int | None = None):
    """timm model from hub weights (checkpoint None) or a local checkpoint file."""
    import timm

    kwargs: dict[str, Any] = {}
    if img_size is not None:
        kwargs["img_size"] = img_size
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(f"timm checkpoint {checkpoint} does not exist")
        overlay = {"file": str(checkpoint)}
        classes = num_classes if num_classes is not None else _checkpoint_classes(arch, checkpoint)
        if classes is not None:   # keep the checkpoint's own head instead of timm's default
            overlay["num_classes"] = classes
            kwargs["num_classes"] = classes
        kwargs["pretrained_cfg_overlay"] = overlay
    log.info("loading timm %s (%s)", arch, checkpoint or "hub weights")
    model = timm.create_model(arch, pretrained=True, **kwargs)
    model.eval()
    return model, _data_config(model, None, img_size)


def _read_checkpoint(path) -> dict:
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        return load_file(str(path))
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def _checkpoint_classes(arch: str, checkpoint) -> int | None:
    """Classes of the checkpoint's classifier (0 if it has none), from timm's classifier name."""
    import timm

    cfg = timm.models.get_pretrained_cfg(arch) if hasattr(timm.models, "get_pretrained_cfg") else None
    classifier = getattr(cfg, "classifier", None) or "head"
    names = [classifier] if isinstance(classifier, str) else list(classifier)
    state = _read_checkpoint(checkpoint)
    for name in names:
        if f"{name}.weight" in state:
            return int(state[f"{name}.weight"].shape[0])
    return 0


def _data_config(model, overlay: dict | None, img_size: int | None) -> dict:
    from timm.data import resolve_data_config

    args = dict(overlay or {})
    if img_size is not None:
        args["input_size"] = (3, img_size, img_size)
    config = resolve_data_config(args, model=model)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}
