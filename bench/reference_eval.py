"""Full-precision reference numbers of the embedded default models (the data/eval acceptance run).

    python -m bench.reference_eval --parts ppl,lm_eval,probe

- ppl: token perplexity of smollm2-135m and gemma3-270m on the whole wiki test split
  (512-token windows, the setting of bench.quality and of the published comparisons);
- lm_eval: lm-eval's word perplexity and bits per byte of smollm2-135m on the same test articles
  (the offline local task, loglikelihood_rolling);
- probe: DINOv2-S linear-probe top-1 on Fashion-MNIST (train/test sizes and resolution given),
  plus the ONNX conversion error against onnxruntime on a real image.

Writes bench/results/reference_eval.md/.csv (one row per measurement).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from bench.report import write_table

log = logging.getLogger("bench.reference_eval")


def perplexity_rows(models: list[str], window_len: int) -> list[dict]:
    from marr.data import wiki_text
    from marr.evaluation.perplexity import evaluate_perplexity
    from marr.sources import load_model

    rows = []
    for name in models:
        t0 = time.perf_counter()
        loaded = load_model(name)
        load_s = time.perf_counter() - t0
        ppl = evaluate_perplexity(loaded.model, loaded.tokenizer, wiki_text("test"), window_len=window_len,
                                  batch_size=4)
        rows.append({"measurement": "fp perplexity, whole wiki test split", "model": name,
                     "value": round(ppl["perplexity"], 4), "unit": "ppl",
                     "detail": f"{ppl['n_scored_tokens']} scored tokens in {window_len}-token windows",
                     "seconds": round(ppl["wall_time_s"] + load_s, 1)})
        log.info("%s", rows[-1])
    return rows


def lm_eval_rows(model_name: str, max_length: int) -> list[dict]:
    from marr.data import load_text_split
    from marr.evaluation.lm_eval_runner import run_lm_eval
    from marr.sources import load_model

    loaded = load_model(model_name)
    documents = load_text_split("wiki", "test")
    t0 = time.perf_counter()
    scores = run_lm_eval(loaded.model, loaded.tokenizer, documents=documents, max_length=max_length)
    seconds = round(time.perf_counter() - t0, 1)
    rows = []
    for key, value in sorted(scores.items()):
        if isinstance(value, float) and ("perplexity" in key or "bits_per_byte" in key) and "stderr" not in key:
            rows.append({"measurement": f"lm-eval {key}", "model": model_name, "value": round(value, 4),
                         "unit": key.rsplit("/", 1)[-1], "seconds": seconds,
                         "detail": f"{len(documents)} test articles, max_length {max_length}"})
    log.info("%s", rows)
    return rows


def probe_rows(n_train: int, n_test: int, img_size: int) -> list[dict]:
    from marr.data import fashion_mnist_dataset, timm_eval_transform
    from marr.evaluation.vision import evaluate_probe, fit_or_load_probe
    from marr.sources import load_model
    from marr.sources import materialize

    t0 = time.perf_counter()
    loaded = load_model("dinov2-s", img_size=img_size)
    transform = timm_eval_transform(loaded.data_config)
    train = fashion_mnist_dataset("train", transform, n=n_train, seed=0)
    test = fashion_mnist_dataset("test", transform, n=n_test, seed=1)
    probe = fit_or_load_probe(loaded.model, train)
    m = evaluate_probe(probe, loaded.model, test)
    rows = [{"measurement": "dinov2-s linear probe top-1, Fashion-MNIST test", "model": "dinov2-s",
             "value": round(m["fp_top1"], 4), "unit": "top-1",
             "detail": f"{n_train} train / {m['n_images']} test images (stratified), {img_size} px, cls+mean features",
             "seconds": round(time.perf_counter() - t0, 1)}]
    source = json.loads((materialize("dinov2-s") / "marr_source.json").read_text())
    rows.append({"measurement": "dinov2-s ONNX -> timm conversion, max abs difference vs onnxruntime",
                 "model": "dinov2-s", "value": float(f"{source['onnx_max_abs_diff']:.3g}"), "unit": "max abs",
                 "detail": source["onnx_check"], "seconds": None})
    log.info("%s", rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="ppl,lm_eval,probe")
    parser.add_argument("--models", default="smollm2-135m,gemma3-270m")
    parser.add_argument("--window-len", type=int, default=512)
    parser.add_argument("--lm-eval-max-length", type=int, default=2048)
    parser.add_argument("--probe-train", type=int, default=10000)
    parser.add_argument("--probe-test", type=int, default=2000)
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--name", default="reference_eval")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parts = args.parts.split(",")
    rows: list[dict] = []
    settings = {"threads": torch.get_num_threads()}

    def flush() -> None:
        write_table(args.name, rows, settings)

    if "probe" in parts:
        rows += probe_rows(args.probe_train, args.probe_test, args.img_size)
        flush()
    if "ppl" in parts:
        rows += perplexity_rows(args.models.split(","), args.window_len)
        flush()
    if "lm_eval" in parts:
        rows += lm_eval_rows(args.models.split(",")[0], args.lm_eval_max_length)
        flush()
    print(write_table(args.name, rows, settings))


if __name__ == "__main__":
    main()
