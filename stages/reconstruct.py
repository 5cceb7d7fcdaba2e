"""Stage reconstruct: quantize a model with one config, block by block (resumable).

Writes data/quant/<model>/<config>/ (per-block state, Grams, α trajectories; records.csv) and
metrics/<model>/<config>.reconstruct.json (wall time, peak RSS, solves).
"""

from __future__ import annotations

import json
import logging
import resource
import shutil
import time
from pathlib import Path

import torch

from marr.data import load_calibration
from marr.engine import EngineConfig, MethodConfig, quantize_model
from marr.engine.store import ManifestMismatch
from marr.io import write_json, write_text
from stages.common import (calibration_dir, hessians_dir, load_local_model, model_fingerprint, model_params, parser,
                           read_params, run_dir, section, setup_logging)

log = logging.getLogger("stages.reconstruct")


def main() -> None:
    args = parser(__doc__, config=True).parse_args()
    setup_logging()
    params = read_params()
    mp = model_params(params, args.model)
    method = MethodConfig.from_dict(section(params, "configs", args.config), where=f"configs.{args.config}")
    engine = EngineConfig.from_dict(params.get("engine"))
    loaded = load_local_model(args.model, mp)
    calib = load_calibration(calibration_dir(args.model) / "calibration.safetensors")
    out = run_dir(args.model, args.config)
    state_dir = out / "blocks"
    fp_cache = hessians_dir(args.model) if (hessians_dir(args.model) / "manifest.json").exists() else None
    kwargs = dict(out_dir=state_dir, fp_cache=fp_cache, model_id=model_fingerprint(args.model),
                  calibration_hash=calib.sha256)
    t0 = time.perf_counter()
    try:
        run = quantize_model(loaded.model, calib.data, method, engine, **kwargs)
    except ManifestMismatch as exc:
        log.warning("%s; starting this config over", exc)
        shutil.rmtree(state_dir)
        run = quantize_model(loaded.model, calib.data, method, engine, **kwargs)
    seconds = time.perf_counter() - t0
    records = run.records.copy()
    records["trajectory"] = records["trajectory"].map(json.dumps)
    write_text(out / "records.csv", records.to_csv(index=False))
    alpha_table = Path("alphas") / args.model / f"{args.config}.csv"
    write_text(alpha_table, run.records[["block", "module", "alpha", "j_rel", "solves"]].to_csv(index=False))
    metrics = {
        "reconstruct_seconds": round(seconds, 2),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3),
        "solves": int(run.records["solves"].sum()),
        "mean_j_rel": float(run.records["j_rel"].mean()) if run.records["j_rel"].notna().any() else None,
        **{f"count_{k}": v for k, v in run.counters.items()},
        # low-bit GPTQ-family solutions depend chaotically on float summation order: the same run
        # with another thread count rounds differently (see README, Reproducibility)
        "torch_threads": torch.get_num_threads(),
    }
    write_json(out / "reconstruct.json", metrics)
    log.info("wrote %s: %d modules, %.1f s", out, len(records), seconds)


if __name__ == "__main__":
    main()
