"""A reconstruction run in its own process, for the SIGKILL test (tests/test_reliability.py).

    python tests/reliability_worker.py <model folder> <run dir> [seconds to pause after each block]

Loads a saved causal LM, quantizes it with MARR into <run dir> (resumable). The pause keeps the
process alive between blocks so that the test can kill it with block files partly written.
"""

from __future__ import annotations

import sys
import time

import torch

from marr.engine import quantize_model

METHOD = {"method": "marr", "bits": 3, "group_size": 32, "pid": {"max_iter": 6}}


def calibration() -> torch.Tensor:
    from marr.testing import tiny_calibration

    return tiny_calibration("llama", n=16)


def load(folder: str):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def run(folder: str, out_dir: str, pause: float = 0.0):
    from marr.engine import MethodConfig

    return quantize_model(load(folder), calibration(), MethodConfig.from_dict(METHOD), out_dir=out_dir,
                          on_block_done=(lambda index: time.sleep(pause)) if pause else None)


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(2)  # as tests/conftest.py: same BLAS reductions as the in-process run
    result = run(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
    print(f"finished; fp_block_forwards={result.counters['fp_block_forwards']}", flush=True)
