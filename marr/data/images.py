"""Image data: Fashion-MNIST (Debian IDX files), ImageFolder, and timm preprocessing."""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from marr.data.calibration import CalibrationSet
from marr.data.hashing import tensor_sha256

log = logging.getLogger("marr.data.images")

FASHION_MNIST_ENV = "MARR_FASHION_MNIST"
FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} values")
    return data.reshape(shape)


def fashion_mnist_dir(root: str | Path | None = None) -> Path:
    candidates = [root] if root else [os.environ.get(FASHION_MNIST_ENV), *FASHION_MNIST_DIRS]
    for candidate in filter(None, candidates):
        folder = Path(candidate)
        if (folder / "train-images-idx3-ubyte.gz").exists() or (folder / "train-images-idx3-ubyte").exists():
            return folder
    raise FileNotFoundError(
        "Fashion-MNIST IDX files not found in "
        f"{[c for c in candidates if c]}; install them with `apt-get install -y dataset-fashion-mnist` "
        f"or set {FASHION_MNIST_ENV} to a folder holding train-images-idx3-ubyte(.gz) etc.")


def _idx_file(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{folder} has no {stem}(.gz)")


def fashion_mnist(split: str = "train", root=None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images uint8 [N, 28, 28] and labels int64 [N] ('train': 60k, 'test': 10k)."""
    if split not in FASHION_MNIST_FILES:
        raise ValueError(f"Fashion-MNIST split {split!r} is not one of {sorted(FASHION_MNIST_FILES)}")
    folder = fashion_mnist_dir(root)
    images_name, labels_name = FASHION_MNIST_FILES[split]
    images = read_idx(_idx_file(folder, images_name))
    labels = read_idx(_idx_file(folder, labels_name)).astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    return images, labels


def stratified_subset(labels: np.ndarray, n: int | None, seed: int = 0) -> np.ndarray:
    """Indices of a seeded, class-balanced subset of size n (all indices if n is None)."""
    labels = np.asarray(labels)
    if n is None or n >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    quota = np.full(len(classes), n // len(classes))
    quota[: n % len(classes)] += 1
    chosen = np.concatenate([idx[:q] for idx, q in zip(per_class, quota)])
    return np.sort(chosen)


class ArrayImageDataset(Dataset):
    """uint8 images [N, H, W] or [N, H, W, 3] with labels; grayscale is expanded to RGB."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None):
        self.images, self.labels, self.transform = images, np.asarray(labels), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = Image.fromarray(np.asarray(self.images[index])).convert("RGB")
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


def _to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def timm_eval_transform(data_config: dict) -> Callable:
    """The model's own evaluation preprocessing (resize, crop, normalise) from its data config."""
    from timm.data import create_transform

    config = dict(data_config)
    config["input_size"] = tuple(config["input_size"])
    for key in ("mean", "std"):
        if key in config:
            config[key] = tuple(config[key])
    transform = create_transform(**config, is_training=False)
    import torchvision.transforms as T
    return T.Compose([T.Lambda(_to_rgb), transform])


def image_folder(root: str | Path, transform: Callable | None = None):
    """torchvision ImageFolder (class per sub-folder, e.g. an ImageNet val layout)."""
    from torchvision.datasets import ImageFolder

    if not Path(root).is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    return ImageFolder(str(root), transform=transform)


def fashion_mnist_dataset(split: str, transform: Callable | None, n: int | None = None,
                          seed: int = 0, root=None) -> ArrayImageDataset:
    """A seeded class-balanced subset of Fashion-MNIST as an RGB dataset."""
    images, labels = fashion_mnist(split, root)
    index = stratified_subset(labels, n, seed)
    return ArrayImageDataset(images[index], labels[index], transform)


def calibration_images(dataset: Dataset, n: int = 128, seed: int = 0) -> CalibrationSet:
    """N preprocessed images drawn from a dataset with a seed, stacked [N, 3, H, W] float32."""
    if len(dataset) == 0:
        raise ValueError("calibration dataset is empty")
    gen = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(dataset), generator=gen)[: min(n, len(dataset))].tolist()
    images = torch.stack([dataset[i][0] for i in order]).to(torch.float32).contiguous()
    meta = {"kind": "images", "n_images": len(order), "seed": seed,
            "shape": list(images.shape[1:]), "indices_head": order[:16]}
    log.info("collected %d calibration images %s (seed %d)", len(order), tuple(images.shape[1:]), seed)
    return CalibrationSet(images, tensor_sha256(images), meta)


def dataset_fingerprint(dataset: Dataset, indices: Sequence[int] | None = None) -> str:
    """SHA-256 over an ArrayImageDataset's raw images and labels (cheap, no preprocessing)."""
    import hashlib

    if isinstance(dataset, ArrayImageDataset):
        digest = hashlib.sha256(np.ascontiguousarray(dataset.images).tobytes())
        digest.update(np.ascontiguousarray(dataset.labels.astype("<i8")).tobytes())
        return digest.hexdigest()
    samples = getattr(dataset, "samples", None)
    if samples is not None:   # ImageFolder: file list and labels
        digest = hashlib.sha256()
        for path, label in samples:
            digest.update(f"{Path(path).name}\t{label}\n".encode())
        return digest.hexdigest()
    raise TypeError(f"cannot fingerprint a {type(dataset).__name__}")
