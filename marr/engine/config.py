"""The method configuration of one quantization run, validated once with clear messages."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from marr.gptq import BASES
from marr.grid import QuantSpec
from marr.search import DEFAULT_GRID, PidConfig

METHODS = ("rtn", "gptq", "gptaq", "qep", "marr")
SEARCHES = ("pid", "grid", "fixed")
FEEDBACKS = ("calibration", "holdout")
JUDGES = ("layer", "block")


class ConfigError(ValueError):
    """A configuration value is not allowed; the message names the key, the value and what is allowed."""


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {allowed}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_types(cls: type, values: Mapping[str, Any], prefix: str, skip: tuple[str, ...] = ()) -> None:
    """Reject values whose type does not match the field's default (bool, int, float, str).

    Runs before the dataclass is built so that a wrong type fails with the key named, never with a
    TypeError from a comparison deep inside ``__post_init__``.
    """
    for f in dataclasses.fields(cls):
        if f.name not in values or f.name in skip or f.default is dataclasses.MISSING:
            continue
        value, default, key = values[f.name], f.default, f"{prefix}{f.name}"
        if isinstance(default, bool):
            _require(isinstance(value, bool), key, value, "must be true or false")
        elif isinstance(default, int):
            _require(isinstance(value, int) and not isinstance(value, bool), key, value, "must be an integer")
        elif isinstance(default, float):
            _require(_is_number(value), key, value, "must be a finite number")
        elif isinstance(default, str):
            _require(isinstance(value, str), key, value, "must be a string")


def _check_keys(cls: type, values: Any, prefix: str, what: str) -> dict[str, Any]:
    """``values`` as a dict after checking it is a mapping with only the dataclass's keys."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or what}={values!r}: must be a mapping of {what} settings")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted((k for k in values if k not in known), key=str)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key; allowed keys are {', '.join(sorted(known))}")
    return dict(values)


@dataclass(frozen=True)
class MethodConfig:
    """How every linear module of the model is quantized.

    method: rtn | gptq | gptaq (fixed α) | qep (one-shot correction, α) | marr (α per module by ``search``).
    bits: 2..8. group_size: columns sharing one scale/zero, or None/-1 for one per output channel.
    A group size that does not divide a module's input dimension d_in is allowed: groups are
    consecutive runs of ``group_size`` columns and the last group is shorter (d_in mod group_size
    columns), GPTQ's policy; a group size larger than d_in gives a single group.
    alpha: the fixed α of gptaq/qep and of marr with search=fixed.
    search: pid | grid | fixed (marr only). basis (marr only): the residual family α scales —
    gptaq (the residual term inside the column pass) or qep (GPTQ on W + α·W D H⁻¹); see
    ``marr.gptq``. compare_pid: with search=grid, also run the PID search
    on the same statistics and record its α, J and solves next to the grid's (the result stays the
    grid's; costs PID's solves) — how close PID gets to the oracle, module by module. refit: with
    holdout feedback, solve once more at the chosen α on all calibration windows (the search only
    solved on the non-held-out ones). feedback: judge J on a held-out slice of the calibration
    windows (default; solving and judging on the same tokens rewards over-correction) or on all of them.
    judge (marr only): what J measures — ``layer``: the module's own output error ‖W X − Q X̃‖² from
    Grams (no forward pass); ``block``: the error of the enclosing block's output on the held-out
    windows, ‖Y_FP − block(X̃; module ← Q)‖², one forward of the block over those windows per
    candidate α (needs feedback=holdout); judge_windows > 0 scores on only the first that many
    held-out windows (the forwards cost in proportion; 0 = all of them); judge_tokens > 0 scores
    only the first that many positions of each judged window (causal decoders only, where it is
    exact: a position's block output depends on earlier positions alone; 0 = whole windows). The
    block judge sees what the layer-wise J cannot: how the module's error passes through attention
    and the MLP nonlinearity before it reaches the residual stream.
    """

    method: str = "marr"
    bits: int = 3
    group_size: int | None = 128
    sym: bool = False
    mse: bool = False
    damp: float = 0.01
    act_order: bool = False
    static_groups: bool = False
    block_size: int = 128
    alpha: float = 0.25
    search: str = "pid"
    basis: str = "gptaq"
    grid: tuple[float, ...] = DEFAULT_GRID
    feedback: str = "holdout"
    judge: str = "layer"
    judge_windows: int = 0
    judge_tokens: int = 0
    holdout_fraction: float = 0.25
    warm_start: bool = True
    refit: bool = False
    compare_pid: bool = False
    pid: PidConfig = field(default_factory=PidConfig)

    def __post_init__(self) -> None:
        _require(self.method in METHODS, "method", self.method, f"allowed values are {', '.join(METHODS)}")
        _require(self.search in SEARCHES, "search", self.search, f"allowed values are {', '.join(SEARCHES)}")
        _require(self.basis in BASES, "basis", self.basis, f"allowed values are {', '.join(BASES)}")
        _require(self.feedback in FEEDBACKS, "feedback", self.feedback, f"allowed values are {', '.join(FEEDBACKS)}")
        _require(self.judge in JUDGES, "judge", self.judge, f"allowed values are {', '.join(JUDGES)}")
        _require(self.judge == "layer" or self.feedback == "holdout", "judge", self.judge,
                 "the block judge runs on the held-out windows: it needs feedback=holdout")
        _require(isinstance(self.judge_windows, int) and self.judge_windows >= 0, "judge_windows",
                 self.judge_windows, "must be an integer >= 0 (0 = every held-out window)")
        _require(isinstance(self.judge_tokens, int) and self.judge_tokens >= 0, "judge_tokens",
                 self.judge_tokens, "must be an integer >= 0 (0 = whole windows)")
        _require(isinstance(self.damp, (int, float)) and math.isfinite(self.damp) and self.damp >= 0,
                 "damp", self.damp, "must be a finite number >= 0")
        _require(isinstance(self.alpha, (int, float)) and math.isfinite(self.alpha), "alpha", self.alpha,
                 "must be a finite number")
        _require(isinstance(self.block_size, int) and self.block_size >= 1, "block_size", self.block_size,
                 "must be a positive integer")
        _require(0 < self.holdout_fraction < 1, "holdout_fraction", self.holdout_fraction, "must be in (0, 1)")
        _require(len(self.grid) >= 1 and all(math.isfinite(a) for a in self.grid), "grid", self.grid,
                 "must be a non-empty list of finite α values")
        try:
            self.spec
        except ValueError as exc:
            key = "bits" if "bits" in str(exc) else "group_size"
            raise ConfigError(f"{key}={getattr(self, key)!r}: {exc}") from None

    @property
    def spec(self) -> QuantSpec:
        return QuantSpec(self.bits, self.group_size, self.sym, self.mse)

    @property
    def block_judge(self) -> bool:
        """MARR scoring candidates at the block output (``judge: block``)."""
        return self.method == "marr" and self.judge == "block"

    @property
    def needs_drift(self) -> bool:
        return self.method in ("gptaq", "qep", "marr")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "") -> "MethodConfig":
        """Build from a params.yaml mapping; unknown keys and bad values name the offending key."""
        prefix = f"{where}." if where else ""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where or 'method config'}={values!r}: must be a mapping of method settings")
        values = _check_keys(cls, values, prefix, "method")
        pid_values = _check_keys(PidConfig, values.pop("pid", None), f"{prefix}pid.", "PID")
        _check_types(cls, values, prefix, skip=("group_size",))
        _check_types(PidConfig, pid_values, f"{prefix}pid.")
        if "grid" in values:
            grid = values["grid"]
            _require(isinstance(grid, (list, tuple)) and len(grid) > 0 and all(_is_number(a) for a in grid),
                     f"{prefix}grid", grid, "must be a non-empty list of finite α values")
            values["grid"] = tuple(grid)
        if values.get("group_size") == -1:
            values["group_size"] = None
        try:
            pid = PidConfig(**pid_values)
            return cls(pid=pid, **values)
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}") from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{prefix}{exc}") from None

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["grid"] = list(self.grid)
        return out


@dataclass(frozen=True)
class EngineConfig:
    """Where and how the block-sequential pass runs (does not change the math)."""

    device: str = "cpu"
    stream_dtype: str = "float32"  # float32 | float16 | bfloat16: how the two streams are kept on CPU
    batch_size: int = 8
    gram_dtype: str = "float32"
    skip: tuple[str, ...] = ()
    report_error: bool = True  # compute J for every module even when the method does not need D, G
    save_grams: bool = True

    def __post_init__(self) -> None:
        _require(self.stream_dtype in ("float32", "float16", "bfloat16"), "stream_dtype", self.stream_dtype,
                 "allowed values are float32, float16, bfloat16")
        _require(self.gram_dtype in ("float32", "float64"), "gram_dtype", self.gram_dtype,
                 "allowed values are float32, float64")
        _require(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", self.batch_size,
                 "must be a positive integer")
        _require(self.device == "cpu" or self.device.startswith("cuda"), "device", self.device,
                 "allowed values are cpu, cuda, cuda:N")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, where: str = "engine") -> "EngineConfig":
        values = _check_keys(cls, values, f"{where}.", "engine")
        _check_types(cls, values, f"{where}.")
        if "skip" in values:
            skip = values["skip"] or ()
            _require(isinstance(skip, (list, tuple)) and all(isinstance(p, str) for p in skip), f"{where}.skip",
                     skip, "must be a list of module name patterns (strings)")
            values["skip"] = tuple(skip)
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{where}.{exc}") from None
