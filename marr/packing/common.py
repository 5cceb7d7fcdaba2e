"""Checks and conversions shared by the checkpoint formats."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from marr.grid import QuantSpec, group_index
from marr.result import QuantResult


def uniform_spec(states: Mapping[str, QuantResult], fmt: str) -> QuantSpec:
    """The one (bits, group_size, sym) every module shares; the format's config is global."""
    specs = {(r.spec.bits, r.spec.group_size, r.spec.sym): name for name, r in states.items()}
    if len(specs) != 1:
        raise ValueError(
            f"{fmt} stores one bits/group_size/sym for the whole model, but modules differ: "
            + ", ".join(f"{name}: bits={b} group_size={g} sym={s}" for (b, g, s), name in specs.items())
        )
    return next(iter(states.values())).spec


def check_fp16_scales(name: str, scales: torch.Tensor) -> torch.Tensor:
    """The scales as float16, refusing values that float16 does not hold exactly."""
    half = scales.to(torch.float16)
    if not torch.equal(half.to(scales.dtype), scales):
        raise ValueError(
            f"{name}: scales are not exactly representable in float16; quantize with "
            "QuantSpec(fp16_scales=True) (the default) so the checkpoint reproduces the weights"
        )
    return half


def integer_zeros(name: str, result: QuantResult) -> torch.Tensor:
    """Zero points as int64, checked to be integers on the code grid."""
    zeros = result.zeros
    as_int = zeros.round().to(torch.int64)
    if not torch.equal(as_int.to(zeros.dtype), zeros) or int(as_int.min()) < 0 or int(as_int.max()) > result.spec.maxq:
        raise ValueError(f"{name}: zero points must be integers in [0, {result.spec.maxq}]")
    return as_int


def is_trivial_g_idx(result: QuantResult) -> bool:
    """True when columns are grouped in their original order (no act-order permutation of groups)."""
    return torch.equal(result.g_idx.to(torch.int32), group_index(result.codes.shape[1], result.spec))


def spec_from_record(record: Mapping) -> QuantSpec:
    group_size = record["group_size"]
    return QuantSpec(
        bits=int(record["bits"]),
        group_size=None if group_size in (None, -1) else int(group_size),
        sym=bool(record["sym"]),
        mse=bool(record.get("mse", False)),
    )


DTYPES = {str(d).removeprefix("torch."): d for d in (torch.float32, torch.float16, torch.bfloat16, torch.float64)}


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
