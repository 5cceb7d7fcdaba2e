"""One (model, setting, method) of ``bench.quality``, in its own process: quantize, evaluate, report.

Prints nothing but logs; writes a JSON result with perplexity, wall times and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from pathlib import Path

import torch

from bench.quality import METHODS, RESULTS, SETTINGS
from marr.data import llm_calibration, load_calibration, save_calibration, wiki_text
from marr.engine import EngineConfig, MethodConfig, quantize_model
from marr.evaluation.perplexity import evaluate_perplexity
from marr.sources import load_model

log = logging.getLogger("bench.quality_one")


def calibration_for(model_name: str, loaded, windows: int, length: int):
    """The shared calibration windows of a model (sampled once, reused by every method)."""
    path = RESULTS / "cache" / f"{model_name}-calib-{windows}x{length}.safetensors"
    if path.exists():
        return load_calibration(path)
    calib = llm_calibration(loaded.tokenizer, "wiki", n_windows=windows, window_len=length, seed=0)
    save_calibration(path, calib)
    return calib


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--setting", required=True, choices=sorted(SETTINGS))
    parser.add_argument("--method", required=True, choices=["fp", *METHODS])
    parser.add_argument("--calib-windows", type=int, default=128)
    parser.add_argument("--calib-len", type=int, default=512)
    parser.add_argument("--eval-len", type=int, default=512)
    parser.add_argument("--eval-windows", type=int, default=None)
    parser.add_argument("--extra", default="{}")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    loaded = load_model(args.model)
    calib = calibration_for(args.model, loaded, args.calib_windows, args.calib_len)
    result = {"model": args.model, "setting": args.setting, "method": args.method,
              "calibration_sha256": calib.sha256[:16]}
    rss_before = peak_rss_gb()
    if args.method != "fp":
        config = {**METHODS[args.method], **SETTINGS[args.setting], **json.loads(args.extra)}
        method = MethodConfig.from_dict(config)
        t0 = time.perf_counter()
        # RTN and GPTQ need no FP stream: skip the per-module error report and its forward passes
        # (their cost is then what the method itself needs, as in GPTQModel)
        engine = EngineConfig(batch_size=8, report_error=method.needs_drift)
        run = quantize_model(loaded.model, calib.data, method, engine)
        result["reconstruct_seconds"] = round(time.perf_counter() - t0, 1)
        result["peak_rss_gb_reconstruct"] = round(peak_rss_gb(), 2)
        records = run.records
        result["solves"] = int(records["solves"].sum())
        result["solve_seconds"] = round(float(records["seconds"].sum()), 1)
        result["forward_seconds"] = round(float(records["forward_seconds"].sum()), 1)
        result["mean_j_rel"] = float(records["j_rel"].mean()) if records["j_rel"].notna().any() else None
        if records["alpha"].notna().any():
            result["alpha_mean"] = round(float(records["alpha"].mean()), 3)
        out_records = Path(args.out).with_suffix(".records.csv")
        records.to_csv(out_records, index=False)
    ppl = evaluate_perplexity(loaded.model, loaded.tokenizer, wiki_text("test"), window_len=args.eval_len,
                              max_windows=args.eval_windows, batch_size=4)
    result.update(ppl=round(ppl["perplexity"], 3), eval_tokens=ppl["n_scored_tokens"],
                  eval_seconds=round(ppl["wall_time_s"], 1), peak_rss_gb=round(peak_rss_gb(), 2),
                  rss_at_start_gb=round(rss_before, 2), threads=torch.get_num_threads())
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
