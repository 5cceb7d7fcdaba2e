"""Check a converted ViT backbone against the ONNX original on a real photo."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger("marr.sources.vit_check")

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def sample_photo(img_size: int = 224) -> np.ndarray:
    """skimage's astronaut photo, resized and ImageNet-normalised, as [1, 3, H, W] float32."""
    from PIL import Image
    from skimage import data

    image = Image.fromarray(data.astronaut()).convert("RGB").resize((img_size, img_size), Image.BICUBIC)
    array = (np.asarray(image, dtype=np.float32) / 255.0 - MEAN) / STD
    return array.transpose(2, 0, 1)[None].copy()


def compare_with_onnx(folder: Path, onnx_path: Path, img_size: int = 224) -> float:
    """Max abs difference of final-norm token features, timm conversion vs onnxruntime."""
    from marr.sources.dinov2_onnx import onnx_backbone_features
    from marr.sources.loading import load_timm_folder

    images = sample_photo(img_size)
    reference = onnx_backbone_features(onnx_path, images)
    model, _ = load_timm_folder(folder, img_size=img_size)
    with torch.no_grad():
        ours = model.forward_features(torch.from_numpy(images)).numpy()
    if ours.shape != reference.shape:
        raise RuntimeError(f"feature shapes differ: timm {ours.shape} vs onnx {reference.shape}")
    max_abs = float(np.abs(ours - reference).max())
    log.info("timm vs onnxruntime on a %dx%d photo: max abs diff %.2e (feature scale %.2f)",
             img_size, img_size, max_abs, float(np.abs(reference).max()))
    return max_abs
