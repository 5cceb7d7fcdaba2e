"""Packing a fake-quantized model and its per-module quantized states into a checkpoint folder.

Layout written by both formats::

    config.json               the model's config + quantization_config
    model.safetensors         (or model-0000i-of-0000n.safetensors + model.safetensors.index.json)
    quantize_config.json      GPTQ only
    generation_config.json    when the model has one
    tokenizer files           when a tokenizer is given
    marr_provenance.json      method, bits, group size, α per module, calibration hash, version
    marr_extras.safetensors   act-order permutations (not needed by loaders), when any
    marr_manifest.json        SHA-256 and size of every other file
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from marr.packing import compressed, gptq_format
from marr.packing.architecture import describe, is_transformers
from marr.packing.checkpoint import (
    DEFAULT_SHARD_SIZE,
    EXTRAS_FILE,
    copy_tokenizer,
    linear_modules,
    plain_tensors,
    write_atomically,
    write_json,
    write_safetensors,
)
from marr.packing.common import dtype_name, uniform_spec
from marr.packing.provenance import (
    PROVENANCE_NAME,
    build_provenance,
    canonical_json,
    header_metadata,
    provenance_sha256,
)
from marr.result import QuantResult

_BLOCK_PATTERN = re.compile(r"\.(layers|h|blocks|block|layer)\.\d+\.")


def _cast(tensors: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if dtype is None:
        return tensors
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}


def _fill(
    folder: Path,
    *,
    model: torch.nn.Module,
    states: Mapping[str, QuantResult],
    config: dict,
    tensors: dict[str, torch.Tensor],
    record: dict,
    extra_json: dict[str, dict],
    tokenizer,
    max_shard_size,
) -> None:
    metadata = header_metadata(record)
    write_safetensors(folder, tensors, metadata, max_shard_size)
    write_json(folder, "config.json", config)
    for name, payload in extra_json.items():
        write_json(folder, name, payload)
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and hasattr(generation_config, "to_json_file"):
        generation_config.to_json_file(folder / "generation_config.json")
    copy_tokenizer(tokenizer, folder)
    write_json(folder, PROVENANCE_NAME, canonical_json(record))
    perms = {f"{name}.perm": r.perm.to(torch.int64).contiguous() for name, r in states.items() if r.perm is not None}
    if perms:
        save_file(perms, folder / EXTRAS_FILE, metadata=metadata)


def _record(states, modules, provenance, checkpoint_format, **facts) -> dict:
    record = build_provenance(states, provenance, checkpoint_format=checkpoint_format)
    for name, module in modules.items():
        record["modules"][name]["weight_dtype"] = dtype_name(module.weight.dtype)
    record.update(facts)
    return record


def _check_block_coverage(model: torch.nn.Module, states: Mapping[str, QuantResult]) -> None:
    """GPTQ loaders replace exactly the linears inside the transformer blocks: all, and only those."""
    outside = sorted(name for name in states if not _BLOCK_PATTERN.search(f".{name}."))
    if outside:
        raise ValueError(
            f"GPTQ loaders quantize only the linears of the transformer blocks; {outside[:3]} lie outside them "
            "(use pack_compressed_tensors)"
        )
    missing = [
        name for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and name not in states and _BLOCK_PATTERN.search(f".{name}.")
    ]
    if missing:
        raise ValueError(
            f"GPTQ loaders replace every linear of the transformer blocks, but {len(missing)} are not quantized "
            f"(e.g. {missing[:3]}); quantize them or use pack_compressed_tensors"
        )


def pack_gptq(
    model: torch.nn.Module,
    states: Mapping[str, QuantResult],
    out_dir: str | Path,
    *,
    provenance: Mapping,
    checkpoint_format: str = "gptq_v2",
    tokenizer=None,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a GPTQ checkpoint of a transformers causal LM.

    model: the fake-quantized model (every quantized module holds its state's weight).
    states: ``{module name: QuantResult}``; one bits/group_size/sym for all; every linear inside
    the transformer blocks must be quantized (the loaders replace them all).
    checkpoint_format: ``"gptq_v2"`` (zero points as is; gptqmodel) or ``"gptq"`` (v1, zero − 1;
    widest support, refuses zero points of 0). dtype: of the non-quantized tensors (None keeps the
    model's, so :func:`unpack` restores the in-memory model bit for bit; float16 is what GPTQ
    kernels compute in and halves their size). provenance: see :func:`build_provenance`.
    """
    gptq_format._check_format(checkpoint_format)
    if not is_transformers(model):
        raise TypeError(f"pack_gptq needs a transformers model, got {type(model).__name__}; use pack_compressed_tensors")
    modules = linear_modules(model, states)
    uniform_spec(states, "GPTQ")
    _check_block_coverage(model, states)
    tensors = _cast(plain_tensors(model, modules), dtype)
    for name in sorted(states):
        tensors.update(gptq_format.encode_module(name, states[name], checkpoint_format))
    record = _record(states, modules, provenance, checkpoint_format, plain_dtype=dtype_name(dtype) if dtype else None)
    meta = {
        "quantizer": [f"marr:{record['marr_version']}"],
        "marr_method": record["method"],
        "marr_provenance": PROVENANCE_NAME,
        "marr_provenance_sha256": provenance_sha256(record),
    }
    qcfg = gptq_format.quantization_config(states, checkpoint_format, meta)
    config = describe(model)
    config["quantization_config"] = qcfg
    if dtype is not None:
        config["dtype"] = dtype_name(dtype)
    return write_atomically(
        out_dir,
        lambda folder: _fill(
            folder, model=model, states=states, config=config, tensors=tensors, record=record,
            extra_json={"quantize_config.json": qcfg}, tokenizer=tokenizer, max_shard_size=max_shard_size,
        ),
        overwrite=overwrite,
    )


def pack_compressed_tensors(
    model: torch.nn.Module,
    states: Mapping[str, QuantResult],
    out_dir: str | Path,
    *,
    provenance: Mapping,
    tokenizer=None,
    max_shard_size: int | str = DEFAULT_SHARD_SIZE,
    scale_dtype: torch.dtype = torch.float16,
    dtype: torch.dtype | None = None,
    model_args: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a compressed-tensors ``pack-quantized`` checkpoint of a transformers or timm model.

    Linear modules not in ``states`` are listed in ``ignore`` and stored dense. scale_dtype:
    float16 (standard; loaders dequantize in it) or float32 (loaders then reproduce the float32
    fake-quantized weights bit for bit). dtype: of the non-quantized tensors (None keeps the
    model's). model_args: timm ``create_model`` keyword arguments needed to rebuild the model.
    """
    if scale_dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"scale_dtype={scale_dtype}: must be float16, bfloat16 or float32")
    if scale_dtype == torch.bfloat16:
        raise ValueError("scale_dtype=bfloat16 would round marr's float16-exact scales; use float16 or float32")
    modules = linear_modules(model, states)
    uniform_spec(states, "compressed-tensors")
    stored_group = compressed.storage_group_size(states)
    tensors = _cast(plain_tensors(model, modules), dtype)
    for name in sorted(states):
        tensors.update(compressed.encode_module(name, states[name], stored_group, scale_dtype))
    ignore = [name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name not in states]
    record = _record(
        states, modules, provenance, f"compressed-tensors/{compressed.FORMAT}",
        stored_group_size=stored_group if stored_group is not None else -1,
        scale_dtype=dtype_name(scale_dtype),
        plain_dtype=dtype_name(dtype) if dtype else None,
    )
    config = describe(model, model_args=model_args)
    config["quantization_config"] = compressed.quantization_config(states, ignore, stored_group)
    config["marr_provenance_sha256"] = provenance_sha256(record)
    if dtype is not None and "library" not in config:
        config["dtype"] = dtype_name(dtype)
    return write_atomically(
        out_dir,
        lambda folder: _fill(
            folder, model=model, states=states, config=config, tensors=tensors, record=record,
            extra_json={}, tokenizer=tokenizer, max_shard_size=max_shard_size,
        ),
        overwrite=overwrite,
    )

