"""Describing a model's architecture in ``config.json`` and rebuilding an empty one from it.

transformers models are described by their own config (``architectures`` names the class);
timm models by ``{"library": "timm", "architecture", "num_classes", "model_args"}``.
"""

from __future__ import annotations

import torch


def is_timm(model: torch.nn.Module) -> bool:
    return type(model).__module__.startswith("timm.")


def is_transformers(model: torch.nn.Module) -> bool:
    return hasattr(model, "config") and hasattr(model.config, "to_dict") and hasattr(model, "save_pretrained")


def describe(model: torch.nn.Module, *, model_args: dict | None = None) -> dict:
    """The ``config.json`` payload (without ``quantization_config``) that rebuilds ``model``."""
    if is_transformers(model):
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        config["architectures"] = [type(model).__name__]
        return config
    if is_timm(model):
        cfg = getattr(model, "pretrained_cfg", None) or {}
        architecture = cfg.get("architecture")
        if not architecture:
            raise ValueError("timm model without pretrained_cfg['architecture']; cannot name its architecture")
        return {
            "library": "timm",
            "architecture": architecture,
            "num_classes": int(getattr(model, "num_classes", 0)),
            "model_args": dict(model_args or {}),
        }
    raise TypeError(
        f"{type(model).__name__}: only transformers and timm models can be described; "
        "pack it and pass a skeleton model to unpack(model=...)"
    )


def build(config: dict) -> torch.nn.Module:
    """An (untrained) model of the architecture ``config`` describes, in float32."""
    if config.get("library") == "timm":
        import timm

        return timm.create_model(
            config["architecture"], pretrained=False, num_classes=config["num_classes"], **config.get("model_args", {})
        )
    import transformers

    config = {k: v for k, v in config.items() if k != "quantization_config"}
    architectures = config.get("architectures") or []
    if not architectures or "model_type" not in config:
        raise ValueError("config.json names no architecture/model_type; pass a skeleton model to unpack(model=...)")
    cfg = transformers.CONFIG_MAPPING[config["model_type"]].from_dict(config)
    cls = getattr(transformers, architectures[0], None)
    if cls is None:
        raise ValueError(f"transformers has no class {architectures[0]!r}; pass a skeleton model to unpack(model=...)")
    return cls(cfg).to(torch.float32).eval()
