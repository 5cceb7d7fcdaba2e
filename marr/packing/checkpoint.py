"""Writing a checkpoint folder: sharded safetensors, JSON files, tokenizer, manifest — atomically.

Everything is written into a temporary sibling folder which is renamed into place at the end,
so a half-written checkpoint never appears under the final name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from marr.packing.manifest import write_manifest
from marr.result import QuantResult

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
EXTRAS_FILE = "marr_extras.safetensors"
DEFAULT_SHARD_SIZE = "4GB"
TOKENIZER_PATTERNS = (
    "tokenizer*", "special_tokens_map.json", "added_tokens.json", "vocab*", "merges.txt",
    "*.model", "chat_template*", "preprocessor_config.json",
)
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string like ``"2GB"``, ``"500MiB"``."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]I?B|B)?\s*", str(size).upper())
        if not match:
            raise ValueError(f"max_shard_size={size!r}: expected bytes as an int or e.g. '2GB', '500MiB'")
        value = int(float(match.group(1)) * _UNITS[match.group(2) or ""])
    if value <= 0:
        raise ValueError(f"max_shard_size={size!r}: must be positive")
    return value


def linear_modules(model: torch.nn.Module, states: Mapping[str, QuantResult]) -> dict[str, torch.nn.Linear]:
    """The model's linear module for every quantized state, checked against it.

    Shapes must match and the module's weight must be the state's fake-quantized weight (in the
    module's dtype): the checkpoint then reproduces exactly the model held in memory.
    """
    if not states:
        raise ValueError("no quantized modules given (states is empty)")
    modules = dict(model.named_modules())
    found = {}
    for name, result in states.items():
        module = modules.get(name)
        if not isinstance(module, torch.nn.Linear):
            kind = "not found" if module is None else f"a {type(module).__name__}, not an nn.Linear"
            raise ValueError(f"quantized module {name!r} is {kind} in the model")
        if tuple(module.weight.shape) != tuple(result.codes.shape):
            raise ValueError(
                f"{name}: module weight is {tuple(module.weight.shape)} but its codes are {tuple(result.codes.shape)}"
            )
        expected = result.weight.to(module.weight.dtype)
        if not torch.equal(module.weight.detach().cpu(), expected):
            raise ValueError(
                f"{name}: the model's weight is not the fake-quantized weight of its state; "
                "write every QuantResult.weight into the model before packing"
            )
        found[name] = module
    return found


def plain_tensors(model: torch.nn.Module, quantized: Mapping[str, torch.nn.Module]) -> dict[str, torch.Tensor]:
    """Every state-dict tensor except the quantized weights; shared (tied) tensors kept once.

    The first name of a shared tensor wins (e.g. ``model.embed_tokens.weight`` over a tied
    ``lm_head.weight``, which loaders re-tie from the config).
    """
    skip = {f"{name}.weight" for name in quantized}
    state = model.state_dict()

    def ident(tensor: torch.Tensor) -> tuple:
        return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)

    quantized_ids = {ident(state[key]): key for key in skip if key in state}
    seen: set[tuple] = set()
    tensors = {}
    for key, tensor in state.items():
        if key in skip:
            continue
        tid = ident(tensor)
        if tensor.numel() and tid in quantized_ids:
            raise ValueError(
                f"{key} shares its tensor with the quantized {quantized_ids[tid]}; "
                "tied quantized weights are not supported"
            )
        if tensor.numel() and tid in seen:
            continue
        seen.add(tid)
        tensors[key] = tensor.detach().cpu()
    return tensors


def _shards(tensors: Mapping[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards, current, size = [], {}, 0
    for key, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = {}, 0
        current[key] = tensor
        size += nbytes
    if current or not shards:
        shards.append(current)
    return shards


def _independent(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors with no storage shared between them (what safetensors accepts)."""
    out, storages = {}, set()
    for key, tensor in tensors.items():
        tensor = tensor.contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        if tensor.numel() and ptr in storages:
            tensor = tensor.clone()
        storages.add(tensor.untyped_storage().data_ptr())
        out[key] = tensor
    return out


def write_safetensors(folder: Path, tensors: Mapping[str, torch.Tensor], metadata: dict[str, str], max_shard_size) -> list[str]:
    """Write one file or shards plus ``model.safetensors.index.json``; returns the file names."""
    shards = _shards(tensors, parse_size(max_shard_size))
    if len(shards) == 1:
        save_file(_independent(shards[0]), folder / SINGLE_FILE, metadata=metadata)
        return [SINGLE_FILE]
    names, weight_map = [], {}
    for i, shard in enumerate(shards, 1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(_independent(shard), folder / name, metadata=metadata)
        names.append(name)
        weight_map.update({key: name for key in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total, **metadata}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return names + [INDEX_FILE]


def copy_tokenizer(tokenizer, folder: Path) -> None:
    """Save a tokenizer object, or copy the tokenizer files of a folder."""
    if tokenizer is None:
        return
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(folder)
        return
    source = Path(tokenizer)
    if not source.is_dir():
        raise FileNotFoundError(f"tokenizer={tokenizer!r}: neither a tokenizer object nor a folder")
    copied = [p for pattern in TOKENIZER_PATTERNS for p in source.glob(pattern) if p.is_file()]
    if not copied:
        raise FileNotFoundError(f"{source}: no tokenizer files ({', '.join(TOKENIZER_PATTERNS)})")
    for path in copied:
        shutil.copy2(path, folder / path.name)


def write_json(folder: Path, name: str, payload) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload, indent=2, sort_keys=True) + "\n"
    (folder / name).write_text(text)


def write_atomically(out_dir: str | Path, fill: Callable[[Path], None], *, overwrite: bool) -> Path:
    """Create ``out_dir`` by calling ``fill(tmp)`` on a temporary sibling, writing its manifest, renaming it."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} exists; pass overwrite=True to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; a checkpoint is an ordinary folder
    try:
        fill(tmp)
        for file in tmp.rglob("*"):
            if file.is_file():  # some writers (safetensors) create private files
                os.chmod(file, 0o666 & ~umask)
        write_manifest(tmp)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.replace(out_dir, old / "previous")
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
