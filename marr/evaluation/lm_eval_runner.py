"""lm-eval-harness on an in-memory model or a checkpoint folder, with an offline local task.

The local task (`marr_wiki` by default) scores the test documents with rolling loglikelihood
(one context per document, as lm-eval's wikitext task) and reports word perplexity, byte
perplexity and bits per byte. Note: lm-eval's word perplexity is per document and per word;
the PTQ-paper number is token perplexity over the concatenated text (`evaluate_perplexity`).
Named tasks (piqa, arc_easy, hellaswag, …) pass through to lm-eval and need its datasets.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from marr.data.hashing import text_sha256
from marr.data.splits import join_documents
from marr.evaluation.metrics_io import flatten
from marr.evaluation.model_size import model_size
from marr.sources.cache import atomic_file

log = logging.getLogger("marr.evaluation.lm_eval")

LOCAL_TASK = "marr_wiki"


def local_task_config(documents_jsonl: str | Path, task_name: str = LOCAL_TASK) -> dict:
    """An lm-eval task dict over a JSONL file with one {"text": ...} document per line."""
    return {
        "task": task_name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(Path(documents_jsonl).resolve())}},
        "test_split": "test",
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "metric_list": [{"metric": "word_perplexity"}, {"metric": "byte_perplexity"},
                        {"metric": "bits_per_byte"}],
        "metadata": {"version": 1.0},
    }


def write_documents_jsonl(documents: Sequence[str], path: str | Path) -> Path:
    with atomic_file(path, "w") as handle:
        for doc in documents:
            handle.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")
    return Path(path)


def _clean_key(key: str) -> str:
    return key[: -len(",none")] if key.endswith(",none") else key.replace(",", "@")


def run_lm_eval(model, tokenizer=None, documents: Sequence[str] | None = None,
                tasks: Sequence[str | dict] = (LOCAL_TASK,), batch_size: int = 1,
                max_length: int | None = None, limit: int | float | None = None,
                device: str = "cpu", num_fewshot: int | None = None, workdir=None) -> dict:
    """Run lm-eval and return a flat metrics dict: `lm_eval/<task>/<metric>` plus bookkeeping.

    `model`: an in-memory transformers model (with `tokenizer`) or a checkpoint folder / hub id.
    The task name `marr_wiki` is the local task over `documents` (required then).
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    start = time.perf_counter()
    metrics: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="marr-lmeval-", dir=workdir) as tmp:
        task_list: list[str | dict] = []
        for task in tasks:
            if task == LOCAL_TASK:
                if documents is None:
                    raise ValueError(f"task {LOCAL_TASK!r} needs `documents` (e.g. the wiki test split)")
                path = write_documents_jsonl(documents, Path(tmp) / "documents.jsonl")
                task_list.append(local_task_config(path))
                metrics["eval_data_sha256"] = text_sha256(join_documents(documents))
                metrics["n_documents"] = len(documents)
            else:
                task_list.append(task)
        kwargs: dict[str, Any] = {"batch_size": batch_size, "device": device}
        if max_length is not None:
            kwargs["max_length"] = max_length
        if isinstance(model, (str, Path)):
            lm = HFLM(pretrained=str(model), tokenizer=tokenizer, **kwargs)
            size_model = lm.model
        else:
            if tokenizer is None:
                raise ValueError("an in-memory model needs its tokenizer")
            lm = HFLM(pretrained=model, tokenizer=tokenizer, **kwargs)
            size_model = model
        log.info("lm-eval: tasks %s", [t if isinstance(t, str) else t["task"] for t in task_list])
        results = lm_eval.simple_evaluate(
            model=lm, tasks=task_list, task_manager=TaskManager(include_defaults=any(isinstance(t, str) for t in task_list)),
            bootstrap_iters=0, limit=limit, num_fewshot=num_fewshot, log_samples=False)
    for task_name, values in (results or {}).get("results", {}).items():
        for key, value in values.items():
            if key == "alias":
                continue
            metrics[f"lm_eval/{task_name}/{_clean_key(key)}"] = value
    for task_name, n in (results or {}).get("n-samples", {}).items():
        metrics[f"lm_eval/{task_name}/n_samples"] = n.get("effective", n.get("original")) \
            if isinstance(n, dict) else n
    metrics.update(model_size(size_model))
    metrics["wall_time_s"] = time.perf_counter() - start
    return flatten(metrics)
