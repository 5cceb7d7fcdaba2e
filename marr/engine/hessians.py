"""The FP statistics step: one pass of the full-precision model, reused by every config.

Per block it stores every module's per-sample FP output energy ‖W x‖² (the only part of the FP
Gram G = XXᵀ that the error J needs, so J_rel is reported against it) and, with
``cache_activations``, the FP inputs X of every group (what the drift Gram D = (X − X̃)X̃ᵀ needs):
a reconstruction that finds them runs no FP forward pass at all. Without them it recomputes the FP
stream itself.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from torch import nn

import marr
from marr.adapters import adapter_for
from marr.engine.config import EngineConfig
from marr.engine.engine import DTYPES, Engine
from marr.engine.config import MethodConfig
from marr.engine.store import block_file, group_key, read_block, write_block
from marr.io import DirectoryLock, write_json

log = logging.getLogger("marr.engine.hessians")


def compute_fp_statistics(model: nn.Module, calibration: torch.Tensor, out_dir: str | Path, *,
                          model_id: str, calibration_hash: str, engine: EngineConfig | None = None,
                          cache_activations: bool = False, activation_dtype: str = "float16") -> dict:
    """Write per-block FP statistics to ``out_dir``; resumable (finished blocks are kept)."""
    out_dir = Path(out_dir)
    cfg = engine or EngineConfig()
    runner = Engine(model, MethodConfig(method="gptq"), cfg)  # reuses the engine's batching and hooks
    adapter = adapter_for(model)
    blocks = adapter.blocks()
    manifest = {
        "model_id": model_id, "calibration_hash": calibration_hash, "adapter": adapter.name,
        "n_blocks": len(blocks), "calibration_shape": list(calibration.shape),
        "cache_activations": cache_activations,
        "activation_dtype": activation_dtype if cache_activations else None, "skip": list(cfg.skip),
        "marr_version": marr.__version__, "format": 2,  # 2: per-module output energies E.<module>, no G
    }
    act_dtype = DTYPES[activation_dtype]
    t_start = time.perf_counter()
    with DirectoryLock(out_dir):
        manifest_path = out_dir / "manifest.json"
        if manifest_path.exists():
            found = json.loads(manifest_path.read_text())
            for key in ("complete", "shapes", "seconds"):  # results of a finished run, not its setup
                found.pop(key, None)
            if found != manifest:
                write_json(manifest_path, manifest)  # a different setup: start over
                for index in range(len(blocks)):
                    block_file(out_dir, index).unlink(missing_ok=True)
        else:
            write_json(manifest_path, manifest)
        kwargs = adapter.block_kwargs(calibration[:1])
        stream = runner.block0_stream(calibration)
        shapes: dict[str, list[int]] = {}
        for index, block in enumerate(blocks):
            t0 = time.perf_counter()
            block.to(cfg.device)
            block_kwargs = {k: (v.to(cfg.device) if isinstance(v, torch.Tensor) else v) for k, v in kwargs[index].items()}
            groups = runner.module_names(block)
            keys = [group_key(g) for g in groups]
            existing = read_block(block_file(out_dir, index))
            names = [name for g in groups for name in g]
            out, captured = runner.run_block(block, stream, block_kwargs, {k: block.get_submodule(k) for k in keys},
                                             counter="fp_block_forwards", out_name=f"out.{index % 2}",
                                             energies={x: block.get_submodule(x) for x in names})
            if existing is None:
                tensors = {f"E.{x}": captured[f"E.{x}"] for x in names}
                if cache_activations:
                    tensors.update({f"X.{k}": captured[k].to(act_dtype) for k in keys})
                write_block(block_file(out_dir, index), tensors, {"block": str(index)})
            for k in keys:
                shapes[f"{index}.{k}"] = list(captured[k].shape[-1:])
            block.to("cpu")
            stream = out
            log.info("FP statistics: block %d/%d | %d groups | %.1f s", index + 1, len(blocks), len(keys),
                     time.perf_counter() - t0)
        manifest.update(complete=True, shapes=shapes, seconds=round(time.perf_counter() - t_start, 2))
        write_json(manifest_path, manifest)
    return manifest
