"""Flat metrics dicts: flatten nested results and write them atomically as JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

from marr.sources.cache import atomic_file


def flatten(nested: Mapping[str, Any], prefix: str = "", sep: str = "/") -> dict[str, Any]:
    """{'a': {'b': 1}} → {'a/b': 1}; lists of scalars are kept, other values stringified."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name, sep))
        elif value is None or isinstance(value, (bool, int, float, str)):
            flat[name] = value
        elif hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
            flat[name] = value.item()
        elif isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, str, bool)) for v in value):
            flat[name] = list(value)
        else:
            flat[name] = str(value)
    return flat


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def write_metrics(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write a flat metrics dict as sorted JSON (atomic)."""
    flat = {k: _json_safe(v) for k, v in flatten(metrics).items()}
    with atomic_file(path, "w") as handle:
        json.dump(flat, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return Path(path)
