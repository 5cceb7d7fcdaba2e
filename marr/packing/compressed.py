"""The compressed-tensors ``pack-quantized`` format (read by transformers, vLLM, compressed-tensors).

Per quantized linear ``name`` (d_out × d_in, b bits), with compressed-tensors' signed codes
``q − 2^(b−1)`` packed after adding 2^(b−1) back (so the packed values are marr's codes):

- ``name.weight_packed``     int32 [d_out, ceil(d_in·b/32)]: codes packed along the input dim;
- ``name.weight_scale``      [d_out, G] (float16 by default);
- ``name.weight_zero_point`` int32 [ceil(d_out·b/32), G]: asymmetric only, zero points packed
  along the output dim (symmetric grids have zero point 0 and store none);
- ``name.weight_shape``      int64 [2].

compressed-tensors (pinned 0.20.1) has no g_idx: act-order with permuted groups cannot be stored
(static-group act-order can: its groups are consecutive original columns). It also requires the
group size to divide every d_in. A group size g that does not divide d_in (576 with g128: four
groups of 128 and one of 64) is written exactly with the finer group size gcd(g, every d_in),
each scale/zero repeated over the sub-groups of its group: one scheme for the whole model,
which is what transformers' dequantizing loader assumes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from marr.grid import dequantize, group_index
from marr.packing.bitpack import pack_bits, unpack_bits
from marr.packing.common import check_fp16_scales, integer_zeros, is_trivial_g_idx
from marr.result import QuantResult

FORMAT = "pack-quantized"
PINNED_VERSION = "0.20.1"
TENSOR_NAMES = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape")


def storage_group_size(states: Mapping[str, QuantResult]) -> int | None:
    """The group size written to the checkpoint: the spec's, refined to divide every d_in."""
    spec = next(iter(states.values())).spec
    if spec.group_size is None:
        return None
    return math.gcd(spec.group_size, *(r.codes.shape[1] for r in states.values()))


def _expand(per_group: torch.Tensor, result: QuantResult, stored_group: int | None) -> torch.Tensor:
    """n_groups × d_out (spec groups) → d_out × G (stored groups)."""
    if stored_group is None:
        return per_group.T
    d_in = result.codes.shape[1]
    starts = torch.arange(0, d_in, stored_group)
    return per_group[starts // result.spec.group_size].T


def encode_module(name: str, result: QuantResult, stored_group: int | None, scale_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The compressed-tensors tensors of one quantized linear."""
    if not is_trivial_g_idx(result):
        raise ValueError(
            f"{name}: act-order with permuted groups (g_idx) cannot be stored in compressed-tensors "
            f"{PINNED_VERSION} (it dropped g_idx); use static groups or the GPTQ format"
        )
    bits = result.spec.bits
    scales = check_fp16_scales(name, result.scales).to(scale_dtype)
    out = {
        f"{name}.weight_packed": pack_bits(result.codes, bits, dim=1),
        f"{name}.weight_scale": _expand(scales, result, stored_group).contiguous(),
        f"{name}.weight_shape": torch.tensor(list(result.codes.shape), dtype=torch.int64),
    }
    if not result.spec.sym:
        zeros = _expand(integer_zeros(name, result), result, stored_group)
        out[f"{name}.weight_zero_point"] = pack_bits(zeros, bits, dim=0)
    return out


def decode_module(
    name: str, tensors: Mapping[str, torch.Tensor], spec, stored_group: int | None, perm: torch.Tensor | None = None
) -> QuantResult:
    """Rebuild the :class:`QuantResult` of ``name`` (groups of ``spec``) from its tensors."""
    d_out, d_in = (int(v) for v in tensors[f"{name}.weight_shape"].tolist())
    bits = spec.bits
    codes = unpack_bits(tensors[f"{name}.weight_packed"], bits, d_in, dim=1)
    stored_scales = tensors[f"{name}.weight_scale"].to(torch.float32)
    n_stored = stored_scales.shape[1]
    if spec.sym:
        stored_zeros = torch.full((d_out, n_stored), float(2 ** (bits - 1)))
    else:
        stored_zeros = unpack_bits(tensors[f"{name}.weight_zero_point"], bits, d_out, dim=0).to(torch.float32)
    if spec.group_size is None:
        pick = torch.zeros(1, dtype=torch.int64)
    else:
        pick = torch.arange(0, d_in, spec.group_size) // stored_group  # first stored group of each spec group
    scales = stored_scales[:, pick].T.contiguous()
    zeros = stored_zeros[:, pick].T.contiguous()
    g_idx = group_index(d_in, spec)
    weight = dequantize(codes, scales, zeros, g_idx)
    return QuantResult(weight, codes, scales, zeros, g_idx, perm, spec)


def weights_args(spec, stored_group: int | None) -> dict:
    return {
        "num_bits": spec.bits,
        "type": "int",
        "symmetric": spec.sym,
        "strategy": "channel" if stored_group is None else "group",
        "group_size": stored_group,
        "block_structure": None,
        "dynamic": False,
        "actorder": None,
        "observer": "minmax",
        "observer_kwargs": {},
    }


def quantization_config(states: Mapping[str, QuantResult], ignore: list[str], stored_group: int | None) -> dict:
    """``quantization_config`` for config.json (validated by compressed-tensors when importable)."""
    spec = next(iter(states.values())).spec
    config = {
        "quant_method": "compressed-tensors",
        "format": FORMAT,
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": ["Linear"],
                "weights": weights_args(spec, stored_group),
                "input_activations": None,
                "output_activations": None,
                "format": FORMAT,
            }
        },
        "ignore": sorted(ignore),
        "kv_cache_scheme": None,
        "global_compression_ratio": None,
        "version": PINNED_VERSION,
    }
    try:
        import compressed_tensors
        from compressed_tensors.quantization import QuantizationConfig
    except ImportError:
        return config
    # normalise through the library's schema: what its own writer puts in config.json
    body = QuantizationConfig.model_validate({k: v for k, v in config.items() if k not in ("quant_method", "version")})
    return {
        "quant_method": "compressed-tensors",
        "version": compressed_tensors.__version__,
        "sparsity_config": {},
        "transform_config": {},
        **body.model_dump(exclude=["quant_method"]),
    }
