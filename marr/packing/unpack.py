"""Loading a marr checkpoint back into a fake-quantized model, without external loaders.

The quantized modules get ``dequantize(codes, scales, zeros, g_idx)`` in float32 (cast to the
dtype they had in memory), the other tensors are loaded as stored: the result is bit-identical to
the engine's in-memory fake-quantized model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from marr.packing import compressed, gptq_format
from marr.packing.architecture import build
from marr.packing.checkpoint import EXTRAS_FILE, INDEX_FILE, SINGLE_FILE
from marr.packing.common import DTYPES, spec_from_record
from marr.packing.manifest import verify_manifest
from marr.packing.provenance import read_provenance
from marr.grid import QuantSpec
from marr.result import QuantResult


def load_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint's safetensors file(s)."""
    if (folder / SINGLE_FILE).is_file():
        return load_file(folder / SINGLE_FILE)
    index_path = folder / INDEX_FILE
    if not index_path.is_file():
        raise FileNotFoundError(f"{folder}: neither {SINGLE_FILE} nor {INDEX_FILE}")
    index = json.loads(index_path.read_text())
    tensors = {}
    for shard in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(folder / shard))
    missing = sorted(set(index["weight_map"]) - set(tensors))
    if missing:
        raise ValueError(f"{folder}: tensors listed in {INDEX_FILE} but absent from the shards: {missing[:5]}")
    return tensors


def _shared_groups(model: torch.nn.Module) -> list[list[str]]:
    """Names of parameters that are one tensor (tied weights), in groups of two or more."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return [names for names in groups.values() if len(names) > 1]


def _set_parameter(model: torch.nn.Module, name: str, param: torch.nn.Parameter) -> None:
    owner, _, attr = name.rpartition(".")
    setattr(model.get_submodule(owner) if owner else model, attr, param)


def _load_into(model: torch.nn.Module, tensors: dict[str, torch.Tensor], folder: Path) -> None:
    """Assign ``tensors`` to the model's parameters/buffers; re-tie shared weights; refuse gaps."""
    groups = _shared_groups(model)
    missing, unexpected = model.load_state_dict(tensors, strict=False, assign=True)
    if unexpected:
        raise ValueError(f"{folder}: tensors the model does not have: {sorted(unexpected)[:5]}")
    params = dict(model.named_parameters(remove_duplicate=False))
    explained = set()
    for names in groups:
        loaded = [n for n in names if n in tensors]
        if not loaded:
            continue
        for name in names:
            if name not in tensors:
                _set_parameter(model, name, params[loaded[0]])
                explained.add(name)
    gaps = sorted(set(missing) - explained)
    if gaps:
        raise ValueError(f"{folder}: the checkpoint lacks tensors the model needs: {gaps[:5]}")


def _quantized_keys(name: str) -> list[str]:
    names = (*gptq_format.TENSOR_NAMES, *compressed.TENSOR_NAMES)
    return [f"{name}.{suffix}" for suffix in names]


def unpack(
    out_dir: str | Path, model: torch.nn.Module | None = None, *, verify: bool = True
) -> tuple[torch.nn.Module, dict[str, QuantResult]]:
    """(fake-quantized model, ``{module name: QuantResult}``) from a marr checkpoint folder.

    model: a skeleton of the right architecture to load into (else rebuilt from config.json).
    verify: check the SHA-256 manifest first (a corrupted file raises ManifestError naming it).
    """
    folder = Path(out_dir)
    if verify:
        verify_manifest(folder)
    config = json.loads((folder / "config.json").read_text())
    record = read_provenance(folder)
    fmt = record["checkpoint_format"]
    tensors = load_tensors(folder)
    extras = load_file(folder / EXTRAS_FILE) if (folder / EXTRAS_FILE).is_file() else {}
    model = build(config) if model is None else model
    modules = dict(model.named_modules())
    stored_group = record.get("stored_group_size", -1)
    stored_group = None if stored_group in (None, -1) else int(stored_group)
    states = {}
    for name, entry in record["modules"].items():
        module = modules.get(name)
        if not isinstance(module, torch.nn.Linear):
            raise ValueError(f"{folder}: quantized module {name!r} is not an nn.Linear of the model")
        spec = spec_from_record(entry)
        perm = extras.get(f"{name}.perm")
        if fmt in gptq_format.FORMATS:
            result = gptq_format.decode_module(name, tensors, spec, tuple(module.weight.shape), fmt, perm)
        elif fmt == f"compressed-tensors/{compressed.FORMAT}":
            result = compressed.decode_module(name, tensors, spec, stored_group, perm)
        else:
            raise ValueError(f"{folder}: unknown checkpoint_format {fmt!r} in provenance")
        result.damp = entry.get("damp")
        if entry.get("alpha") is not None:
            result.info["alpha"] = entry["alpha"]
        for key in _quantized_keys(name):
            tensors.pop(key, None)
        tensors[f"{name}.weight"] = result.weight.to(DTYPES[entry.get("weight_dtype", "float32")])
        states[name] = result
    _load_into(model, tensors, folder)
    return model.eval(), states


def load_gptq_weights(model: torch.nn.Module, folder: str | Path) -> dict[str, QuantResult]:
    """Dequantize any standard GPTQ checkpoint folder (``quantize_config.json`` + safetensors with
    ``qweight/qzeros/scales/g_idx``, v1 or v2, e.g. one written by GPTQModel) into the matching
    ``nn.Linear`` weights of ``model``, in float32 arithmetic. Needs no marr provenance, so a
    third-party checkpoint is scored through exactly the same forward as ours."""
    folder = Path(folder)
    qc = json.loads((folder / "quantize_config.json").read_text())
    fmt = qc.get("checkpoint_format", qc.get("format", "gptq"))
    group = qc.get("group_size", -1)
    spec = QuantSpec(int(qc["bits"]), None if group in (-1, None) else int(group), bool(qc.get("sym", True)))
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    states = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and f"{name}.qweight" in tensors:
            states[name] = gptq_format.decode_module(name, tensors, spec, tuple(module.weight.shape), fmt)
            module.weight.data.copy_(states[name].weight.to(module.weight.dtype))
    if not states:
        raise ValueError(f"{folder}: no GPTQ tensors match the model's nn.Linear names")
    return states
