"""Peak RSS and per-block wall time of the engine on the first N blocks of a real model.

    python -m bench.peak_memory --model smollm2-135m --method marr --blocks 4

Every block has the same shapes, so the peak over a few blocks is the peak of the whole run.
Uses the calibration windows bench.quality saved (128 x 512 by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time

from bench.quality import METHODS, SETTINGS
from bench.quality_one import calibration_for
from marr.engine import EngineConfig, MethodConfig, quantize_model
from marr.sources import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--method", default="marr", choices=sorted(METHODS))
    p.add_argument("--setting", default="w3g128", choices=sorted(SETTINGS))
    p.add_argument("--blocks", type=int, default=4)
    p.add_argument("--calib-windows", type=int, default=128)
    p.add_argument("--calib-len", type=int, default=512)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    loaded = load_model(args.model)
    calib = calibration_for(args.model, loaded, args.calib_windows, args.calib_len)
    layers = loaded.model.model.layers
    loaded.model.model.layers = layers[: args.blocks]
    method = MethodConfig.from_dict({**METHODS[args.method], **SETTINGS[args.setting]})
    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    t0 = time.perf_counter()
    run = quantize_model(loaded.model, calib.data, method, EngineConfig(batch_size=8, report_error=method.needs_drift))
    seconds = time.perf_counter() - t0
    print(json.dumps({"model": args.model, "method": args.method, "blocks": args.blocks,
                      "calibration": list(calib.data.shape), "seconds": round(seconds, 1),
                      "seconds_per_block": round(seconds / args.blocks, 1),
                      "solves": int(run.records["solves"].sum()),
                      "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2),
                      "rss_after_load_gb": round(rss_start, 2)}))


if __name__ == "__main__":
    main()
