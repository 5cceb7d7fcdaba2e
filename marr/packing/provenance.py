"""Provenance of a packed checkpoint: how it was made, module by module.

Written as ``marr_provenance.json`` (the full table, α per module included); its SHA-256 and the
headline facts are repeated in the safetensors header metadata and in the format's own config.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch

from marr.result import QuantResult

PROVENANCE_NAME = "marr_provenance.json"
REQUIRED_KEYS = ("method", "calibration_hash")


def marr_version() -> str:
    import marr

    return marr.__version__


def _scalar(value):
    """A JSON scalar for ``value`` (tensor/numpy scalars included), or None when it is not one."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else None
    elif hasattr(value, "item") and getattr(value, "size", None) == 1:  # numpy scalar
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return None


def _module_record(result: QuantResult, alpha) -> dict:
    spec = result.spec
    record = {
        "bits": spec.bits,
        "group_size": spec.group_size if spec.group_size is not None else -1,
        "sym": spec.sym,
        "mse": spec.mse,
        "act_order": result.perm is not None,
        "damp": result.damp,
    }
    for key, value in sorted(result.info.items()):
        scalar = _scalar(value)
        if scalar is not None or value is None:
            record[str(key)] = scalar
    if alpha is not None:
        record["alpha"] = _scalar(alpha)
    return record


def build_provenance(states: Mapping[str, QuantResult], provenance: Mapping, *, checkpoint_format: str) -> dict:
    """The provenance record: the caller's run description plus per-module facts from ``states``.

    ``provenance`` must name ``method`` and ``calibration_hash`` (None for data-free methods such
    as RTN); ``alpha`` may map module names to their residual strength (else each result's
    ``info["alpha"]`` is used). Every other key is kept under ``run`` (it must be JSON-serialisable).
    """
    missing = [k for k in REQUIRED_KEYS if k not in provenance]
    if missing:
        raise ValueError(f"provenance is missing {missing}; it needs {list(REQUIRED_KEYS)} (calibration_hash may be None)")
    alphas = dict(provenance.get("alpha") or {})
    unknown = sorted(set(alphas) - set(states))
    if unknown:
        raise ValueError(f"provenance['alpha'] names modules that are not quantized: {unknown[:5]}")
    specs = {(r.spec.bits, r.spec.group_size, r.spec.sym) for r in states.values()}
    run = {k: v for k, v in provenance.items() if k not in (*REQUIRED_KEYS, "alpha")}
    try:
        json.dumps(run)
    except TypeError as err:
        raise ValueError(f"provenance values must be JSON-serialisable: {err}") from err
    record = {
        "marr_version": marr_version(),
        "checkpoint_format": checkpoint_format,
        "method": str(provenance["method"]),
        "calibration_hash": provenance["calibration_hash"],
        "modules": {
            name: _module_record(result, alphas.get(name, result.info.get("alpha")))
            for name, result in sorted(states.items())
        },
        "run": run,
    }
    if len(specs) == 1:
        bits, group_size, sym = next(iter(specs))
        record.update(bits=bits, group_size=group_size if group_size is not None else -1, sym=sym)
    return record


def canonical_json(record: Mapping) -> str:
    return json.dumps(record, indent=1, sort_keys=True) + "\n"


def provenance_sha256(record: Mapping) -> str:
    return hashlib.sha256(canonical_json(record).encode()).hexdigest()


def header_metadata(record: Mapping) -> dict[str, str]:
    """String-only facts for the safetensors header of every shard."""
    return {
        "format": "pt",
        "marr_version": record["marr_version"],
        "marr_method": record["method"],
        "marr_checkpoint_format": record["checkpoint_format"],
        "marr_provenance_sha256": provenance_sha256(record),
    }


def read_provenance(folder: str | Path) -> dict:
    path = Path(folder) / PROVENANCE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no provenance; not a marr checkpoint")
    return json.loads(path.read_text())
