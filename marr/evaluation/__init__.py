"""Evaluation: token perplexity, lm-eval, vision top-k and linear probes; flat metrics dicts."""

from marr.evaluation.lm_eval_runner import LOCAL_TASK, local_task_config, run_lm_eval
from marr.evaluation.metrics_io import flatten, write_metrics
from marr.evaluation.model_size import checkpoint_size, model_size
from marr.evaluation.perplexity import (evaluate_perplexity, make_eval_windows, perplexity,
                                        tokenizer_adds_bos, windows_nll)
from marr.evaluation.vision import (LinearProbe, backbone_features, evaluate_classifier,
                                    evaluate_probe, extract_features, feature_fidelity,
                                    fit_or_load_probe, topk_accuracy, train_linear_probe)

__all__ = [
    "LOCAL_TASK", "LinearProbe", "backbone_features", "checkpoint_size", "evaluate_classifier",
    "evaluate_perplexity", "evaluate_probe", "extract_features", "feature_fidelity", "fit_or_load_probe",
    "flatten", "local_task_config", "make_eval_windows", "model_size", "perplexity", "run_lm_eval",
    "tokenizer_adds_bos", "topk_accuracy", "train_linear_probe", "windows_nll", "write_metrics",
]
