"""Model size and bits per weight, in memory or on disk.

Bits per weight = 8 · bytes / logical weights, where the logical weights of a linear module are
in_features · out_features whatever its storage (dense fp32, packed int32 + scales, …), so a
packed 3-bit g128 layer reports ≈ 3.25 bits.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

_LINEAR_SHAPE_ATTRS = (("in_features", "out_features"), ("infeatures", "outfeatures"))


def _linear_shape(module) -> tuple[int, int] | None:
    for a, b in _LINEAR_SHAPE_ATTRS:
        if isinstance(getattr(module, a, None), int) and isinstance(getattr(module, b, None), int):
            return getattr(module, a), getattr(module, b)
    return None


def _tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def model_size(model: torch.nn.Module) -> dict:
    """Bytes of all parameters and persistent buffers (shared tensors counted once), and bits/weight.

    Returns `model_size_bytes`, `n_weights` (logical parameter count), `bits_per_weight` over the
    whole model, and `linear_bits_per_weight` over linear modules only (the quantized part).
    """
    seen: set[int] = set()
    total_bytes = total_weights = lin_bytes = lin_weights = 0
    for module in model.modules():
        shape = _linear_shape(module)
        tensors = list(module.named_parameters(recurse=False)) + [
            (n, b) for n, b in module.named_buffers(recurse=False)
            if n not in getattr(module, "_non_persistent_buffers_set", set())]
        own_bytes = 0
        own_floats = 0
        for name, tensor in tensors:
            key = tensor.untyped_storage().data_ptr() if tensor.numel() else id(tensor)
            key = (key, tensor.storage_offset(), tuple(tensor.shape))
            if key in seen:
                continue
            seen.add(key)
            own_bytes += _tensor_bytes(tensor)
            if tensor.is_floating_point() and name != "bias":
                own_floats += tensor.numel()
        total_bytes += own_bytes
        if shape is not None and own_bytes == 0:
            continue   # a tied module (e.g. lm_head sharing the embedding): counted once already
        if shape is not None:
            logical = shape[0] * shape[1]
            lin_weights += logical
            lin_bytes += own_bytes
            total_weights += logical
        else:
            total_weights += own_floats
    return {
        "model_size_bytes": int(total_bytes),
        "n_weights": int(total_weights),
        "bits_per_weight": 8.0 * total_bytes / max(total_weights, 1),
        "linear_bits_per_weight": 8.0 * lin_bytes / max(lin_weights, 1),
    }


def _safetensors_header(path: Path) -> dict:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length))


_AUX_SUFFIXES = ("scales", "qzeros", "g_idx", "weight_scale", "weight_zero_point", "weight_g_idx",
                 "weight_shape", "weight_global_scale")
_FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")


def _quant_bits(folder: Path) -> int | None:
    config = folder / "config.json"
    if not config.is_file():
        return None
    qc = json.loads(config.read_text()).get("quantization_config") or {}
    if "bits" in qc:
        return int(qc["bits"])
    for group in (qc.get("config_groups") or {}).values():   # compressed-tensors
        bits = (group.get("weights") or {}).get("num_bits")
        if bits:
            return int(bits)
    return None


def _numel(shape) -> int:
    count = 1
    for d in shape:
        count *= int(d)
    return count


def _packed_modules(path: Path, header: dict, bits: int | None) -> dict[str, int]:
    """{module prefix: logical weights} of the packed modules in one safetensors file.

    GPTQ `qweight` [in·b/32, out] and compressed-tensors `weight_packed` (with its `weight_shape`,
    read once per file) count as the dense matrix they encode.
    """
    counts: dict[str, int] = {}
    shapes: dict[str, str] = {}
    for name, info in header.items():
        if name.endswith(".qweight"):
            if bits is None:
                raise ValueError(f"{path.name}: {name} is packed but config.json names no bits")
            counts[name[: -len("qweight")]] = info["shape"][0] * 32 // bits * info["shape"][1]
        elif name.endswith(".weight_packed"):
            prefix = name[: -len("weight_packed")]
            if prefix + "weight_shape" in header:
                shapes[prefix] = prefix + "weight_shape"
            elif bits is not None:
                counts[prefix] = info["shape"][0] * info["shape"][1] * 32 // bits
            else:
                raise ValueError(f"{path.name}: {name} has no weight_shape and config.json names no bits")
    if shapes:
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as handle:
            counts.update({prefix: _numel(handle.get_tensor(shape).tolist()) for prefix, shape in shapes.items()})
    return counts


def _headers(folder: Path):
    """(path, header without __metadata__) of every safetensors file, in name order."""
    for path in sorted(folder.glob("*.safetensors")):
        yield path, {k: v for k, v in _safetensors_header(path).items() if k != "__metadata__"}


def logical_weight_count(folder: str | Path) -> int:
    """Logical parameter count of a checkpoint folder from safetensors headers.

    Dense float tensors count as they are; packed modules count as the dense matrix they encode
    (see `_packed_modules`); scales, zero points and g_idx are overhead, not weights.
    """
    folder = Path(folder)
    bits = _quant_bits(folder)
    total = 0
    for path, header in _headers(folder):
        total += sum(_packed_modules(path, header, bits).values())
        total += sum(_numel(info["shape"]) for name, info in header.items()
                     if info["dtype"] in _FLOAT_DTYPES and not name.endswith(_AUX_SUFFIXES))
    return total


def quantized_bits_per_weight(folder: str | Path) -> float | None:
    """Bits per weight of the packed (quantized) modules alone: 8 · bytes of their codes, scales,
    zero points and g_idx / the weights they encode — the number quantization papers quote
    (≈ 3.25 for 3-bit group 128). None when the folder holds no packed module."""
    folder = Path(folder)
    bits = _quant_bits(folder)
    if bits is None:
        return None
    packed_bytes = packed_weights = 0
    for path, header in _headers(folder):
        nbytes = {name: info["data_offsets"][1] - info["data_offsets"][0] for name, info in header.items()}
        for prefix, count in _packed_modules(path, header, bits).items():
            packed_weights += count
            packed_bytes += sum(nbytes.get(prefix + suffix, 0)
                                for suffix in ("qweight", "weight_packed", *_AUX_SUFFIXES))
    return 8.0 * packed_bytes / packed_weights if packed_weights else None


def checkpoint_size(folder: str | Path, n_weights: int | None = None) -> dict:
    """Bytes of the weight files in a checkpoint folder (*.safetensors, *.bin, *.pth, *.pt).

    Bits per weight = 8 · bytes / logical weights; the logical count is `n_weights` if given,
    else read from safetensors headers (dense, GPTQ and compressed-tensors packed layouts). That
    counts the dense embeddings too; `quantized_bits_per_weight` covers the packed modules only.
    """
    folder = Path(folder)
    files = [p for ext in ("*.safetensors", "*.bin", "*.pth", "*.pt") for p in folder.glob(ext)]
    if not files:
        raise FileNotFoundError(f"no weight files (*.safetensors, *.bin, *.pth) in {folder}")
    size = sum(p.stat().st_size for p in files)
    if n_weights is None:
        n_weights = logical_weight_count(folder)
    return {"checkpoint_size_bytes": int(size), "n_weights": int(n_weights),
            "bits_per_weight": 8.0 * size / max(n_weights, 1),
            "quantized_bits_per_weight": quantized_bits_per_weight(folder)}
