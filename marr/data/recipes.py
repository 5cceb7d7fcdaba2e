"""One-call calibration sets for a loaded model, as the calibrate stage needs them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from marr.data.calibration import (DEFAULT_WINDOW_LEN, DEFAULT_WINDOWS, CalibrationSet,
                                   token_calibration_set)
from marr.data.images import calibration_images, fashion_mnist_dataset, image_folder, timm_eval_transform
from marr.data.text import load_text_split


def llm_calibration(tokenizer, source: "str | Mapping[str, Any]" = "wiki",
                    n_windows: int = DEFAULT_WINDOWS, window_len: int = DEFAULT_WINDOW_LEN,
                    seed: int = 0, split: str = "calibration", cache_dir=None) -> CalibrationSet:
    """Token windows sampled from a text source's calibration split (see `load_text_split`)."""
    documents = load_text_split(source, split, cache_dir)
    calib = token_calibration_set(tokenizer, documents, n_windows, window_len, seed)
    calib.meta.update({"text_source": source if isinstance(source, str) else dict(source), "split": split})
    return calib


def vit_calibration(data_config: dict, source: str = "fashion-mnist", n_images: int = 128,
                    seed: int = 0) -> CalibrationSet:
    """Images preprocessed with the model's own timm transform.

    `source`: ``"fashion-mnist"`` (the Debian package's train split) or an ImageFolder path.
    """
    transform = timm_eval_transform(data_config)
    if source == "fashion-mnist":
        dataset = fashion_mnist_dataset("train", transform)
    elif Path(source).is_dir():
        dataset = image_folder(source, transform)
    else:
        raise ValueError(f"image source {source!r} is neither 'fashion-mnist' nor an existing folder")
    calib = calibration_images(dataset, n_images, seed)
    calib.meta.update({"image_source": source, "data_config": data_config})
    return calib
