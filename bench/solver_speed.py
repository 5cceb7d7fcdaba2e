"""Wall time of ``gptq_solve`` (3-bit, group 128) on layer shapes of SmolLM2 and Llama-7B, and
of a PID α search on the 4096 × 4096 case.

    python -m bench.solver_speed [--dtype float32] [--device cpu]

Times exclude Gram computation (random SPD H and drift D are built first).
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.report import write_table
from marr import QuantSpec, gptq_solve, search_alpha

SHAPES = [(576, 576), (1536, 576), (4096, 4096), (11008, 4096)]


def random_grams(d_in: int, tokens: int, device: str, generator: torch.Generator):
    X = torch.randn(d_in, tokens, generator=generator) * torch.linspace(0.2, 2.0, d_in)[:, None]
    Xq = X + 0.1 * torch.randn(d_in, tokens, generator=generator)
    X, Xq = X.to(device), Xq.to(device)
    return Xq @ Xq.T / tokens, (X - Xq) @ Xq.T / tokens, X @ X.T / tokens


def timed(fn):
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--skip-pid", action="store_true")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    spec = QuantSpec(3, 128)
    rows = []
    for d_out, d_in in SHAPES:
        H, D, G = random_grams(d_in, max(2 * d_in, 1024), args.device, g)
        W = (torch.randn(d_out, d_in, generator=g) / d_in**0.5).to(args.device)
        gptq_solve(W[:8], H, spec)  # warm-up
        _, gptq_s = timed(lambda: gptq_solve(W, H, spec))
        _, gptaq_s = timed(lambda: gptq_solve(W, H, spec, D=D, alpha=0.25))
        row = {"shape": f"{d_out}x{d_in}", "gptq_s": round(gptq_s, 3), "gptaq_s": round(gptaq_s, 3)}
        if (d_out, d_in) == (4096, 4096) and not args.skip_pid:
            search, pid_s = timed(lambda: search_alpha(W, H, D, G, spec, method="pid"))
            row.update(pid_s=round(pid_s, 2), pid_solves=search.solves, pid_alpha=round(search.alpha, 3))
        rows.append(row)
        print(row, flush=True)
    print(write_table("solver_speed", rows, {"device": args.device, "spec": "3-bit asym group 128", "dtype": "float32"}))


if __name__ == "__main__":
    main()
