"""The GPTQ checkpoint format (read by optimum + gptqmodel, vLLM, …).

Per quantized linear ``name`` (d_out × d_in, b bits, G groups):

- ``name.qweight`` int32 [ceil(d_in·b/32), d_out]: codes packed along the input dim (bitpack);
- ``name.qzeros``  int32 [G, ceil(d_out·b/32)]: zero points packed along the output dim;
  ``gptq_v2`` stores the zero point, ``gptq`` (v1) stores zero − 1;
- ``name.scales``  float16 [G, d_out];
- ``name.g_idx``   int32 [d_in]: the group of every input column (permuted under act-order).

G = ceil(d_in / group_size): with a group size that does not divide d_in the last group is
shorter, which is how gptqmodel sizes and indexes its groups (g_idx = i // group_size).
Per-channel is ``group_size = -1`` with one group.

v1 cannot hold a zero point of 0: loaders convert v1 to v2 by adding 1 to every packed field
with one integer addition, so a stored −1 (all ones) carries into the neighbouring field.
Packing v1 therefore refuses zero points of 0 (use ``gptq_v2``).

Loaders unpack whole 32-bit words (3-bit: blocks of 3 words holding 32 values), so d_in·b and
d_out·b must be multiples of 32 (3-bit: d_in and d_out multiples of 32); packing refuses others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

from marr.grid import dequantize
from marr.packing.bitpack import pack_bits, unpack_bits
from marr.packing.common import check_fp16_scales, integer_zeros, is_trivial_g_idx
from marr.result import QuantResult

FORMATS = ("gptq", "gptq_v2")
TENSOR_NAMES = ("qweight", "qzeros", "scales", "g_idx")


def _check_format(checkpoint_format: str) -> None:
    if checkpoint_format not in FORMATS:
        raise ValueError(f"checkpoint_format={checkpoint_format!r}: must be one of {FORMATS}")


def encode_module(name: str, result: QuantResult, checkpoint_format: str) -> dict[str, torch.Tensor]:
    """The four GPTQ tensors of one quantized linear, keyed ``name.qweight`` etc."""
    _check_format(checkpoint_format)
    bits = result.spec.bits
    d_out, d_in = result.codes.shape
    unit = 32 // math.gcd(32, bits)
    if d_in % unit or d_out % unit:
        raise ValueError(
            f"{name}: {d_out} × {d_in} at {bits} bits; GPTQ loaders need both dimensions to be multiples of {unit}"
        )
    zeros = integer_zeros(name, result)
    if checkpoint_format == "gptq":
        if int(zeros.min()) == 0:
            count = int((zeros == 0).sum())
            raise ValueError(
                f"{name}: {count} zero point(s) equal 0, which GPTQ v1 (stores zero-1) cannot represent; "
                "use checkpoint_format='gptq_v2'"
            )
        zeros = zeros - 1
    return {
        f"{name}.qweight": pack_bits(result.codes.T, bits, dim=0),
        f"{name}.qzeros": pack_bits(zeros, bits, dim=1),
        f"{name}.scales": check_fp16_scales(name, result.scales).contiguous(),
        f"{name}.g_idx": result.g_idx.to(torch.int32).contiguous(),
    }


def decode_module(
    name: str,
    tensors: Mapping[str, torch.Tensor],
    result_spec,
    shape: tuple[int, int],
    checkpoint_format: str,
    perm: torch.Tensor | None = None,
) -> QuantResult:
    """Rebuild the :class:`QuantResult` of ``name`` from its GPTQ tensors (float32 weight)."""
    _check_format(checkpoint_format)
    d_out, d_in = shape
    bits = result_spec.bits
    codes = unpack_bits(tensors[f"{name}.qweight"], bits, d_in, dim=0).T.contiguous()
    zeros = unpack_bits(tensors[f"{name}.qzeros"], bits, d_out, dim=1).to(torch.float32)
    if checkpoint_format == "gptq":
        zeros = zeros + 1
    scales = tensors[f"{name}.scales"].to(torch.float32)
    g_idx = tensors[f"{name}.g_idx"].to(torch.int32)
    n_groups = result_spec.n_groups(d_in)
    if scales.shape != (n_groups, d_out) or zeros.shape != (n_groups, d_out) or g_idx.shape != (d_in,):
        raise ValueError(
            f"{name}: GPTQ tensors have scales {tuple(scales.shape)}, zeros {tuple(zeros.shape)}, g_idx "
            f"{tuple(g_idx.shape)}; expected ({n_groups}, {d_out}) and ({d_in},)"
        )
    weight = dequantize(codes, scales, zeros, g_idx)
    return QuantResult(weight, codes, scales, zeros, g_idx, perm, result_spec)


def quantization_config(states: Mapping[str, QuantResult], checkpoint_format: str, meta: dict) -> dict:
    """``quantization_config`` for config.json and quantize_config.json."""
    _check_format(checkpoint_format)
    spec = next(iter(states.values())).spec
    desc_act = not all(is_trivial_g_idx(r) for r in states.values())
    return {
        "quant_method": "gptq",
        "bits": spec.bits,
        "group_size": spec.group_size if spec.group_size is not None else -1,
        "desc_act": desc_act,
        "sym": spec.sym,
        "lm_head": False,
        "true_sequential": True,
        "static_groups": False,
        "pack_dtype": "int32",
        "checkpoint_format": checkpoint_format,
        "format": checkpoint_format,
        "meta": meta,
    }
