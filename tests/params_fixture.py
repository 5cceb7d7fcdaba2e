"""A small valid params.yaml mapping (tiny models) that the reliability and fuzz tests mutate."""

from __future__ import annotations


def valid_params() -> dict:
    return {
        "llm_models": ["tiny-llm"],
        "vit_models": ["tiny-vit"],
        "llm_configs": ["gptq-w3", "marr-w3"],
        "vit_configs": ["marr-w4"],
        "models": {
            "tiny-llm": {"source": "tiny:llama", "kind": "llm",
                         "calibration": {"text": "wiki", "windows": 8, "length": 64, "seed": 0},
                         "eval": {"window_len": 64, "max_windows": 8, "batch_size": 4, "lm_eval": False}},
            "tiny-vit": {"source": "tiny:vit", "kind": "vit", "img_size": 56,
                         "calibration": {"images": "fashion-mnist", "images_n": 8, "seed": 0},
                         "eval": {"probe_train": 200, "probe_test": 100}},
        },
        "configs": {
            "gptq-w3": {"method": "gptq", "bits": 3, "group_size": 32},
            "marr-w3": {"method": "marr", "bits": 3, "group_size": 32, "search": "pid",
                        "pid": {"alpha0": 0.25, "delta": 0.25, "kp": 1.0, "ki": 0.0, "kd": 0.0,
                                "alpha_min": 0.0, "alpha_max": 1.0, "max_iter": 6, "tol": 1e-5}},
            "marr-w4": {"method": "marr", "bits": 4, "group_size": -1},
        },
        "engine": {"device": "cpu", "batch_size": 4},
        "hessians": {"cache_activations": True, "activation_dtype": "float32"},
        "pack": {"llm_format": "gptq_v2"},
    }
