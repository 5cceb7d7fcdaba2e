"""Stage evaluate: metrics of a packed checkpoint (or of the FP model with --config fp).

LLMs: token perplexity on the test split (``eval.window_len``, ``eval.max_windows``), optionally
lm-eval's word perplexity. ViTs: linear-probe top-1 with the probe trained once on FP features,
and feature cosine / relative MSE to the FP backbone. Writes metrics/<model>/<config>.json.
"""

from __future__ import annotations

import json
import logging
import time

from marr.evaluation.model_size import checkpoint_size
from marr.io import write_json
from marr.packing import unpack
from stages.common import (load_local_model, metrics_file, model_params, packed_dir, parser, probe_file, read_params,
                           run_dir, section, setup_logging)

log = logging.getLogger("stages.evaluate")


def llm_metrics(loaded, ep: dict, text_source) -> dict:
    from marr.data import load_text_split
    from marr.evaluation.perplexity import evaluate_perplexity

    documents = load_text_split(text_source, "test")
    ppl = evaluate_perplexity(loaded.model, loaded.tokenizer, documents, window_len=int(ep.get("window_len", 512)),
                              max_windows=ep.get("max_windows"), batch_size=int(ep.get("batch_size", 4)))
    metrics = {"ppl_wiki": ppl["perplexity"], "eval_tokens": ppl["n_scored_tokens"],
               "eval_data_sha256": ppl["eval_data_sha256"], "eval_seconds": ppl["wall_time_s"]}
    if ep.get("lm_eval"):
        from marr.evaluation.lm_eval_runner import run_lm_eval

        scores = run_lm_eval(loaded.model, loaded.tokenizer, documents=documents[: ep.get("lm_eval_docs")])
        metrics.update({f"lm_eval_{k.replace('/', '_').replace(',', '_')}": v for k, v in scores.items()
                        if isinstance(v, (int, float))})
    return metrics


def vit_metrics(args, loaded, fp_loaded, ep: dict, quantized: bool) -> dict:
    from marr.data import fashion_mnist_dataset, timm_eval_transform
    from marr.evaluation.vision import evaluate_probe, fit_or_load_probe

    transform = timm_eval_transform(fp_loaded.data_config)
    train = fashion_mnist_dataset("train", transform, n=int(ep.get("probe_train", 2000)), seed=0)
    test = fashion_mnist_dataset("test", transform, n=int(ep.get("probe_test", 1000)), seed=1)
    probe = fit_or_load_probe(fp_loaded.model, train, probe_file(args.model))
    m = evaluate_probe(probe, fp_loaded.model, test, loaded.model if quantized else None)
    out = {"probe_top1": m["top1"] if quantized else m["fp_top1"], "probe_top1_fp": m["fp_top1"],
           "eval_images": m["n_images"]}
    if quantized:
        out.update(feature_cosine=m["feature_cosine"], feature_rel_mse=m["feature_rel_mse"])
    return out


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--config", required=True, help="a key of params.yaml configs, or fp for the unquantized model")
    args = p.parse_args()
    setup_logging()
    params = read_params()
    mp = model_params(params, args.model)
    quantized = args.config != "fp"
    config = section(params, "configs", args.config) if quantized else {"method": "fp"}
    ep = mp.get("eval", {})
    t0 = time.perf_counter()
    loaded = load_local_model(args.model, mp)
    metrics = {"model": args.model, "config": args.config, "method": config.get("method"),
               "bits": config.get("bits", 32 if not quantized else None),
               "group_size": config.get("group_size", -1) or -1}
    if quantized:
        folder = packed_dir(args.model, args.config)
        fp_loaded = load_local_model(args.model, mp) if mp["kind"] == "vit" else None
        unpack(folder, model=loaded.model)  # checks the SHA-256 manifest, loads fake-quantized weights
        size = checkpoint_size(folder)
        metrics.update(size_mb=size["checkpoint_size_bytes"] / 1e6, bits_per_weight=size["bits_per_weight"],
                       quantized_bits_per_weight=size["quantized_bits_per_weight"])
        recon = run_dir(args.model, args.config) / "reconstruct.json"
        if recon.exists():
            metrics.update(json.loads(recon.read_text()))
    else:
        fp_loaded = loaded
    if mp["kind"] == "llm":
        metrics.update(llm_metrics(loaded, ep, ep.get("text", "wiki")))
    else:
        metrics.update(vit_metrics(args, loaded, fp_loaded, ep, quantized))
    metrics["evaluate_seconds"] = round(time.perf_counter() - t0, 2)
    write_json(metrics_file(args.model, args.config), metrics)
    log.info("wrote %s: %s", metrics_file(args.model, args.config),
             {k: metrics[k] for k in ("ppl_wiki", "probe_top1", "feature_cosine") if k in metrics})


if __name__ == "__main__":
    main()
