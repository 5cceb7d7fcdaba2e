"""Vision evaluation: top-k accuracy of classifiers, linear probe + feature fidelity for backbones.

Backbones without a head (DINOv2) are judged with a linear probe trained once on the FP
model's features of the probe train split (seeded, stored as an artifact), then applied to the
FP and the quantized backbone's features of the probe test split. Feature fidelity compares
quantized to FP test features: mean cosine similarity and relative MSE ‖f_q − f‖² / ‖f‖².
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset

from marr.data.hashing import tensor_sha256
from marr.evaluation.model_size import model_size
from marr.sources.cache import atomic_path

log = logging.getLogger("marr.evaluation.vision")

FEATURE_MODES = ("cls", "cls+mean", "pooled")


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def backbone_features(model, images: torch.Tensor, mode: str = "cls+mean") -> torch.Tensor:
    """Features of a timm ViT: CLS token, CLS ‖ mean patch token (DINOv2 linear eval), or pooled."""
    if mode not in FEATURE_MODES:
        raise ValueError(f"feature mode {mode!r} is not one of {FEATURE_MODES}")
    if mode == "pooled":
        return model.forward_head(model.forward_features(images), pre_logits=True)
    tokens = model.forward_features(images)
    cls = tokens[:, 0]
    if mode == "cls":
        return cls
    prefix = getattr(model, "num_prefix_tokens", 1)
    return torch.cat([cls, tokens[:, prefix:].mean(dim=1)], dim=-1)


@torch.no_grad()
def extract_features(model, dataset: Dataset, mode: str = "cls+mean", batch_size: int = 64,
                     num_workers: int = 0, log_every: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, D] (float32, CPU) and labels [N] of a whole dataset."""
    model.eval()
    device = _device(model)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats, labels = [], []
    start = time.perf_counter()
    for i, (images, target) in enumerate(loader):
        feats.append(backbone_features(model, images.to(device), mode).float().cpu())
        labels.append(torch.as_tensor(target))
        if log_every and ((i + 1) % log_every == 0 or i + 1 == len(loader)):
            log.info("features batch %d/%d (%.1f s)", i + 1, len(loader), time.perf_counter() - start)
    return torch.cat(feats), torch.cat(labels).long()


@dataclass
class LinearProbe:
    """Standardise features with the train statistics, then a linear layer: logits = W z + b."""

    weight: torch.Tensor   # [C, D]
    bias: torch.Tensor     # [C]
    mean: torch.Tensor     # [D]
    std: torch.Tensor      # [D]
    meta: dict

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        z = (features.float() - self.mean) / self.std
        return z @ self.weight.T + self.bias

    def save(self, path: str | Path) -> Path:
        tensors = {"weight": self.weight, "bias": self.bias, "mean": self.mean, "std": self.std}
        with atomic_path(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp),
                      metadata={"meta": json.dumps(self.meta, sort_keys=True)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "LinearProbe":
        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get("meta", "{}"))
            t = {k: handle.get_tensor(k) for k in ("weight", "bias", "mean", "std")}
        return cls(t["weight"], t["bias"], t["mean"], t["std"], meta)


DEFAULT_WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2, 1e-1)


def _fit_logistic(z: torch.Tensor, labels: torch.Tensor, classes: int, weight_decay: float,
                  max_iter: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Minimise mean CE + weight_decay · ‖W‖² with full-batch L-BFGS; returns W, b, final loss."""
    gen = torch.Generator().manual_seed(int(seed))
    weight = (0.01 * torch.randn(classes, z.shape[1], generator=gen)).requires_grad_()
    bias = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-6, tolerance_change=1e-9)

    def objective():
        return F.cross_entropy(z @ weight.T + bias, labels) + weight_decay * weight.pow(2).sum()

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        final = float(objective())
    return weight.detach(), bias.detach(), final


def _accuracy(z, labels, weight, bias) -> float:
    return ((z @ weight.T + bias).argmax(1) == labels).float().mean().item()


def train_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None,
                       weight_decay: float | Sequence[float] = DEFAULT_WEIGHT_DECAYS,
                       max_iter: int = 200, seed: int = 0, val_fraction: float = 0.2) -> LinearProbe:
    """Multinomial logistic regression (full-batch L-BFGS) on standardised features.

    Loss = mean CE + weight_decay · ‖W‖². With several weight decays, each is fitted on a seeded,
    class-balanced (1 − val_fraction) part of the training features and judged on the rest;
    the best (ties: the stronger decay) is refitted on all of them. Deterministic given the seed.
    """
    from marr.data.images import stratified_subset

    features = features.float()
    labels = labels.long()
    classes = int(num_classes or int(labels.max()) + 1)
    mean = features.mean(0)
    std = features.std(0).clamp_min(1e-6)
    z = (features - mean) / std
    start = time.perf_counter()
    decays = [float(weight_decay)] if isinstance(weight_decay, (int, float)) else [float(w) for w in weight_decay]
    sweep = {}
    if len(decays) > 1:
        val = torch.as_tensor(stratified_subset(labels.numpy(), int(len(labels) * val_fraction), seed))
        mask = torch.ones(len(labels), dtype=torch.bool)
        mask[val] = False
        for wd in decays:
            w, b, _ = _fit_logistic(z[mask], labels[mask], classes, wd, max_iter, seed)
            sweep[wd] = _accuracy(z[~mask], labels[~mask], w, b)
            log.info("linear probe weight decay %.0e: validation top-1 %.4f", wd, sweep[wd])
        chosen = max(decays, key=lambda wd: (sweep[wd], wd))
    else:
        chosen = decays[0]
    weight, bias, loss = _fit_logistic(z, labels, classes, chosen, max_iter, seed)
    train_acc = _accuracy(z, labels, weight, bias)
    meta = {"n_train": int(len(labels)), "feature_dim": int(z.shape[1]), "num_classes": classes,
            "weight_decay": chosen, "weight_decay_sweep": {f"{k:g}": v for k, v in sweep.items()},
            "max_iter": max_iter, "seed": seed, "train_loss": loss, "train_top1": train_acc,
            "train_features_sha256": tensor_sha256(features)}
    log.info("linear probe: %d samples, dim %d, weight decay %g, train top-1 %.4f, loss %.4f (%.1f s)",
             len(labels), z.shape[1], chosen, train_acc, loss, time.perf_counter() - start)
    return LinearProbe(weight, bias, mean, std, meta)


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """Labels of a dataset without decoding its images where possible."""
    for attr in ("labels", "targets"):
        if hasattr(dataset, attr):
            return torch.as_tensor(list(getattr(dataset, attr))).long()
    return torch.as_tensor([dataset[i][1] for i in range(len(dataset))]).long()


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> dict:
    out = {}
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    for k in ks:
        if k <= logits.shape[1]:
            out[f"top{k}"] = (top[:, :k] == labels[:, None]).any(1).float().mean().item()
    return out


def feature_fidelity(reference: torch.Tensor, other: torch.Tensor) -> dict:
    """Mean per-sample cosine similarity and relative MSE of `other` to `reference` features."""
    reference, other = reference.double(), other.double()
    cosine = F.cosine_similarity(reference, other, dim=1).mean().item()
    rel_mse = ((other - reference).pow(2).sum() / reference.pow(2).sum()).item()
    return {"feature_cosine": cosine, "feature_rel_mse": rel_mse}


@torch.no_grad()
def evaluate_classifier(model, dataset: Dataset, batch_size: int = 64, ks=(1, 5),
                        num_workers: int = 0, dataset_hash: str | None = None) -> dict:
    """Top-k accuracy of a classifier (timm model with a head) on a labelled dataset."""
    start = time.perf_counter()
    model.eval()
    device = _device(model)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    correct = {k: 0 for k in ks}
    total = 0
    for i, (images, target) in enumerate(loader):
        logits = model(images.to(device)).float().cpu()
        target = torch.as_tensor(target)
        acc = topk_accuracy(logits, target, ks)
        for k in ks:
            correct[k] += acc.get(f"top{k}", float("nan")) * len(target)
        total += len(target)
        if (i + 1) % 20 == 0:
            log.info("classifier batch %d/%d: top-1 %.4f", i + 1, len(loader), correct[ks[0]] / total)
    metrics = {f"top{k}": correct[k] / total for k in ks}
    metrics.update({"n_images": total, "eval_data_sha256": dataset_hash,
                    "wall_time_s": time.perf_counter() - start, **model_size(model)})
    return metrics


def fit_or_load_probe(fp_model, train_set: Dataset, probe_path: str | Path | None = None,
                      mode: str = "cls+mean", batch_size: int = 64, seed: int = 0,
                      weight_decay: float | Sequence[float] = DEFAULT_WEIGHT_DECAYS,
                      max_iter: int = 200) -> LinearProbe:
    """Train the probe on FP features of `train_set` once; reuse it from `probe_path` afterwards."""
    if probe_path is not None and Path(probe_path).is_file():
        probe = LinearProbe.load(probe_path)
        if probe.meta.get("feature_mode", mode) != mode:
            raise ValueError(f"probe {probe_path} was trained on {probe.meta.get('feature_mode')} "
                             f"features, not {mode}")
        log.info("reusing linear probe %s", probe_path)
        return probe
    features, labels = extract_features(fp_model, train_set, mode, batch_size)
    probe = train_linear_probe(features, labels, weight_decay=weight_decay, max_iter=max_iter, seed=seed)
    probe.meta["feature_mode"] = mode
    if probe_path is not None:
        probe.save(probe_path)
        log.info("saved linear probe %s", probe_path)
    return probe


def evaluate_probe(probe: LinearProbe, fp_model, test_set: Dataset, quant_model=None,
                   mode: str | None = None, batch_size: int = 64, dataset_hash: str | None = None,
                   fp_features: torch.Tensor | None = None) -> dict:
    """Probe top-1/top-5 of the FP backbone and (if given) the quantized one, plus fidelity.

    Keys: `fp_top1`, `fp_top5`, and with a quantized model `top1`, `top5`, `feature_cosine`,
    `feature_rel_mse`; size keys describe the evaluated (quantized if given, else FP) model.
    """
    start = time.perf_counter()
    mode = mode or probe.meta.get("feature_mode", "cls+mean")
    if fp_features is None:
        fp_features, labels = extract_features(fp_model, test_set, mode, batch_size)
    else:
        labels = dataset_labels(test_set)
    metrics = {f"fp_{k}": v for k, v in topk_accuracy(probe.logits(fp_features), labels).items()}
    evaluated = fp_model
    if quant_model is not None:
        q_features, _ = extract_features(quant_model, test_set, mode, batch_size)
        metrics.update(topk_accuracy(probe.logits(q_features), labels))
        metrics.update(feature_fidelity(fp_features, q_features))
        evaluated = quant_model
    metrics.update({"n_images": int(len(labels)), "n_probe_train": probe.meta.get("n_train"),
                    "feature_mode": mode, "eval_data_sha256": dataset_hash,
                    "wall_time_s": time.perf_counter() - start, **model_size(evaluated)})
    return metrics
