"""The block-sequential reconstruction engine (design.md §2).

One pass over the model, block by block, with two activation streams:

* FP stream: inputs of the full-precision block l (outputs of FP block l−1);
* Q stream: inputs of the partially quantized model (blocks < l quantized).

For block l and each sequential group of linears (modules sharing an input): run the FP block on
the FP stream (or read the cached FP statistics) to get the group's FP inputs X, run the partially
quantized block on the Q stream up to that group to get X̃, accumulate H = X̃X̃ᵀ and
D = (X − X̃)X̃ᵀ, solve every module of the group and write Q back before the next group is
collected. The FP pass also records each module's output energy ‖W X‖² (per sample, so the holdout
slice has its own): that number is all the error J needs of the FP Gram G = XXᵀ, which is
therefore never accumulated (a third of the Gram work).
Then propagate both streams through block l and commit the block to disk.

Only the current block lives on the compute device; streams stay on CPU.
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch import nn

import marr
from marr.adapters import Adapter, StopForward, adapter_for
from marr.engine.block_judge import BlockOutputJudge
from marr.engine.config import ConfigError, EngineConfig, MethodConfig
from marr.engine.store import FpStatsCache, RunStore, group_key, load_run_states
from marr.grams import GramAccumulator
from marr.gptq import gptq_solve, prepare, qep_solve, solve
from marr.objective import ErrorModel
from marr.result import QuantResult, rtn_quantize
from marr.search import search_alpha

log = logging.getLogger("marr.engine")

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


@dataclass
class QuantizationRun:
    """The quantized model in memory (fake-quantized weights), its state, and per-module records."""

    model: nn.Module
    states: dict[str, QuantResult]
    records: pd.DataFrame
    counters: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class GroupStats:
    """The Grams of one sequential group (on the solve data, and on the holdout slice if any) and
    the per-sample FP output energies ‖W x‖² of its modules, which stand in for the FP Gram G."""

    solve: GramAccumulator
    holdout: GramAccumulator | None = None
    energies: dict[str, torch.Tensor] | None = None  # module name -> (n_samples,) float64
    holdout_from: int = 1 << 62  # samples from this index on feed the holdout Grams

    def add(self, sl: slice, xq: torch.Tensor, x: torch.Tensor | None) -> None:
        """Add one batch (samples ``sl``) of Q-stream inputs and, if tracked, their FP inputs."""
        cut = min(max(self.holdout_from - sl.start, 0), sl.stop - sl.start)
        if cut > 0:
            self.solve.add(xq[:cut], None if x is None else x[:cut])
        if cut < sl.stop - sl.start:
            self.holdout.add(xq[cut:], None if x is None else x[cut:])

    def energy(self, name: str, samples: slice) -> float | None:
        """tr(W G Wᵀ) over ``samples`` with the Grams' scaling (2/n per sequence)."""
        if self.energies is None:
            return None
        e = self.energies[name][samples]
        return 2.0 * float(e.sum()) / max(1, e.numel())

    def grams(self, name: str, which: str = "solve") -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
        """(H, D, ‖W X‖²) of module ``name`` on the solve data or on the holdout slice."""
        acc = self.solve if which == "solve" else self.holdout
        rows = slice(0, self.holdout_from) if which == "solve" else slice(self.holdout_from, None)
        return acc.H, acc.D, self.energy(name, rows)

    def full(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None, float | None]:
        """Grams over all calibration samples (solve + holdout), for reporting J."""
        if self.holdout is None:
            return self.grams(name, "solve")
        n1, n2 = self.solve.n, self.holdout.n
        mix = lambda a, b: None if a is None or b is None else (n1 * a + n2 * b) / (n1 + n2)  # noqa: E731
        (H, D, _), (Hh, Dh, _) = self.grams(name, "solve"), self.grams(name, "holdout")
        return mix(H, Hh), mix(D, Dh), self.energy(name, slice(None))


class SubmoduleCache:
    """Outputs of block submodules that no longer change on the Q stream, per batch.

    Once every group inside a submodule (e.g. the attention of a decoder block) is solved, its
    output for a given batch is fixed; the next pass records it and later passes return it
    without recomputing (the adapter's ``reusable`` map says which submodules qualify).
    """

    def __init__(self, device: str):
        self.device = device
        self.recording: set[str] = set()
        self.outputs: dict[str, dict[int, Any]] = {}
        self.complete: set[str] = set()

    def start(self, name: str) -> None:
        self.recording.add(name)
        self.outputs[name] = {}

    def finish_pass(self, n_batches: int) -> None:
        for name in list(self.recording):
            if len(self.outputs[name]) == n_batches:
                self.recording.discard(name)
                self.complete.add(name)

    def attach(self, block: nn.Module, batch: Callable[[], slice]) -> list:
        """Hooks (and forward overrides) for one pass; returns removable handles."""
        handles = []
        for name in self.complete:
            module = block.get_submodule(name)
            outputs = self.outputs[name]
            module.forward = lambda *a, _o=outputs, **k: _to(_o[batch().start], self.device)
            handles.append(_Restore(module))
        for name in self.recording:
            def keep(module, args, kwargs, out, _o=self.outputs[name]):
                _o[batch().start] = _to(out, "cpu")
            handles.append(block.get_submodule(name).register_forward_hook(keep, with_kwargs=True))
        return handles


class _Restore:
    """Removes a forward override (the handle interface of hooks)."""

    def __init__(self, module: nn.Module):
        self.module = module

    def remove(self) -> None:
        self.module.__dict__.pop("forward", None)


def _to(obj: Any, device: str) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(v, device) for v in obj)
    return obj


class Engine:
    """Quantizes one model with one method; see the module docstring for the algorithm."""

    def __init__(self, model: nn.Module, method: MethodConfig, engine: EngineConfig | None = None, *,
                 out_dir: str | Path | None = None, fp_cache: str | Path | FpStatsCache | None = None,
                 model_id: str = "", calibration_hash: str = "",
                 on_block_done: Callable[[int], None] | None = None):
        self.model = model.eval()
        self.method = method
        self.cfg = engine or EngineConfig()
        self.adapter: Adapter = adapter_for(model)
        self.blocks = self.adapter.blocks()
        self.out_dir = Path(out_dir) if out_dir else None
        self.model_id = model_id
        self.calibration_hash = calibration_hash
        self.on_block_done = on_block_done
        self.stream_dtype = DTYPES[self.cfg.stream_dtype]
        self.gram_dtype = DTYPES[self.cfg.gram_dtype]
        self.counters = {"fp_block_forwards": 0, "q_block_forwards": 0, "judge_block_forwards": 0, "solves": 0}
        self._buffers: dict[str, torch.Tensor] = {}
        self.warm_alpha: dict[str, float] = {}
        self.shadow_alpha: dict[str, float] = {}   # compare_pid: the shadow PID's own warm starts
        if method.block_judge and method.judge_tokens and not self.adapter.causal:
            raise ConfigError(f"judge_tokens={method.judge_tokens}: scoring a prefix of each window is exact only "
                              f"for causal decoders and adapter {self.adapter.name!r} is not one; use judge_tokens: 0")
        self.fp_cache = None
        if fp_cache is not None:
            cache = fp_cache if isinstance(fp_cache, FpStatsCache) else FpStatsCache(fp_cache)
            if method.block_judge:
                log.info("judge=block compares with the FP block outputs, which the FP statistics cache does "
                         "not hold: running the FP stream instead of reading %s", cache.root)
            elif cache.matches(model_id, calibration_hash):
                self.fp_cache = cache
            else:
                log.warning("FP statistics at %s do not match this model/calibration: recomputing the FP stream",
                            cache.root)

    # ----------------------------------------------------------------- helpers
    def module_names(self, block: nn.Module) -> list[list[str]]:
        """The block's sequential groups with skipped modules removed (empty groups dropped)."""
        groups = []
        for group in self.adapter.groups:
            kept = [n for n in group if not any(fnmatch.fnmatch(n, p) for p in self.cfg.skip)]
            missing = [n for n in kept if not isinstance(block.get_submodule(n), nn.Linear)]
            if missing:
                raise TypeError(f"adapter {self.adapter.name}: {missing[0]} is not an nn.Linear")
            if kept:
                groups.append(kept)
        return groups

    def batches(self, n: int) -> list[slice]:
        bs = self.cfg.batch_size
        return [slice(i, min(i + bs, n)) for i in range(0, n, bs)]

    def buffer(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A CPU tensor reused from block to block (every block has the same shapes), so large
        activations are allocated once instead of churning the allocator."""
        held = self._buffers.get(name)
        if held is None or tuple(held.shape) != tuple(shape):
            held = self._buffers[name] = torch.empty(shape, dtype=self.stream_dtype)
        return held

    def run_block(self, block: nn.Module, stream: torch.Tensor, kwargs: dict,
                  capture: dict[str, nn.Module] | None = None, stop_at: nn.Module | None = None,
                  counter: str = "q_block_forwards",
                  consume: Callable[[str, slice, torch.Tensor], None] | None = None,
                  reuse: "SubmoduleCache | None" = None, out_name: str | None = None,
                  energies: dict[str, nn.Module] | None = None,
                  ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Run ``block`` over the stream in batches; capture inputs of the named modules.

        Captured inputs go to ``consume(key, batch_slice, x)`` when given (nothing is kept),
        else into reused CPU buffers (n × … × d_in). With ``stop_at`` the pass ends as soon as that
        module's input is captured and no output is produced; else the output goes to the reused
        buffer ``out_name`` (or a new tensor). ``energies`` (name → linear) also records, per
        sample, the output energy ‖W x‖² summed over tokens (bias removed) as ``E.<name>``.
        """
        captured: dict[str, torch.Tensor] = {}
        if consume is None:
            for key, module in (capture or {}).items():
                captured[key] = self.buffer(f"in.{key}", (*stream.shape[:-1], module.in_features))
        current: list[slice] = []
        handles = []
        for key, module in (capture or {}).items():
            def hook(mod, args, key=key):
                x = args[0].detach()
                if consume is not None:
                    consume(key, current[-1], x)
                else:
                    captured[key][current[-1]] = x.to("cpu", self.stream_dtype)
                if mod is stop_at:
                    raise StopForward
            handles.append(module.register_forward_pre_hook(hook))
        for name, module in (energies or {}).items():
            captured[f"E.{name}"] = torch.zeros(stream.shape[0], dtype=torch.float64)

            def energy_hook(mod, args, out, sink=captured[f"E.{name}"]):
                y = out.detach() if mod.bias is None else out.detach() - mod.bias
                sink[current[-1]] = y.reshape(y.shape[0], -1).float().pow(2).sum(1, dtype=torch.float64).cpu()
            handles.append(module.register_forward_hook(energy_hook))
        output = None
        if stop_at is None:
            output = self.buffer(out_name, stream.shape) if out_name else torch.empty(stream.shape, dtype=self.stream_dtype)
        dtype = next(block.parameters()).dtype
        self.counters[counter] += 1
        if reuse is not None:
            handles.extend(reuse.attach(block, lambda: current[-1]))
        try:
            with torch.no_grad():
                for sl in self.batches(stream.shape[0]):
                    current.append(sl)
                    hidden = stream[sl].to(self.cfg.device, dtype)
                    try:
                        out = self.adapter.call_block(block, hidden, kwargs)
                    except StopForward:
                        continue
                    output[sl] = out.detach().to("cpu", self.stream_dtype)
        finally:
            for h in handles:
                h.remove()
        return output, captured

    def block0_stream(self, calibration: torch.Tensor) -> torch.Tensor:
        parts = []
        with torch.no_grad():
            for sl in self.batches(calibration.shape[0]):
                parts.append(self.adapter.block0_inputs(calibration[sl]).detach().to("cpu", self.stream_dtype))
        return torch.cat(parts)

    # ------------------------------------------------------------------- solve
    def solve_module(self, W: torch.Tensor, short: str, stats: GroupStats,
                     judge: BlockOutputJudge | None = None) -> tuple[QuantResult, dict]:
        m, spec = self.method, self.method.spec
        common = dict(damp=m.damp, act_order=m.act_order, static_groups=m.static_groups, block_size=m.block_size)
        H, D, G = stats.grams(short, "solve") if stats is not None else (None, None, None)
        record: dict[str, Any] = {"alpha": None, "solves": 1, "trajectory": []}
        if m.method == "rtn":
            result = rtn_quantize(W, spec)
        elif m.method == "gptq":
            result = gptq_solve(W, H, spec, **common)
            record["alpha"] = 0.0
        elif m.method == "gptaq":
            result = gptq_solve(W, H, spec, D=D, alpha=m.alpha, **common)
            record["alpha"] = m.alpha
        elif m.method == "qep":
            result = qep_solve(W, H, D, spec, alpha=m.alpha, **common)
            record["alpha"] = m.alpha
        else:  # marr
            holdout = stats.grams(short, "holdout") if m.feedback == "holdout" else None
            alpha0 = self.warm_alpha.get(short) if m.warm_start else None
            found = search_alpha(W, H, D, G, spec, method=m.search, pid=m.pid, alpha0=alpha0, grid=m.grid,
                                 alpha=m.alpha, holdout=holdout, basis=m.basis, judge=judge, **common)
            result = found.result
            self.warm_alpha[short] = found.alpha
            refit = m.refit and holdout is not None
            if refit:  # α chosen on held-out windows; the weights use every window
                H_all, D_all, _ = stats.full(short)
                result = solve(prepare(W, H_all, spec, D=D_all, basis=m.basis, **common), found.alpha)
            record.update(alpha=found.alpha, solves=found.solves + refit, j_search_rel=found.relative_error,
                          trajectory=[(t, a, j / found.fp_energy if found.fp_energy > 0 else j)
                                      for t, a, j in found.trajectory])
            if m.compare_pid and m.search == "grid":
                record.update(self.shadow_pid(W, H, D, G, short, holdout, common, judge))
        self.counters["solves"] += record["solves"]
        record["damp"] = result.damp
        return result, record

    def shadow_pid(self, W, H, D, G, short: str, holdout, common: dict, judge=None) -> dict:
        """PID on the statistics the grid just searched (its own warm start); the result is discarded."""
        t0 = time.perf_counter()
        alpha0 = self.shadow_alpha.get(short) if self.method.warm_start else None
        found = search_alpha(W, H, D, G, self.method.spec, method="pid", pid=self.method.pid, alpha0=alpha0,
                             holdout=holdout, basis=self.method.basis, judge=judge, **common)
        self.shadow_alpha[short] = found.alpha
        self.counters["solves"] += found.solves
        return {"pid_alpha": found.alpha, "pid_j_rel": found.relative_error, "pid_solves": found.solves,
                "pid_seconds": time.perf_counter() - t0}

    # ------------------------------------------------------------------- block
    def quantize_block(self, index: int, fp_stream: torch.Tensor | None, q_stream: torch.Tensor,
                       kwargs: dict, states: dict[str, QuantResult], judge_kwargs: dict | None = None,
                       ) -> tuple[torch.Tensor | None, torch.Tensor, dict, list[dict]]:
        """Quantize block ``index`` (results added to ``states`` by full module name); return
        (FP stream out, Q stream out, tensors to save, records). ``judge_kwargs``: the block's
        keyword arguments for windows cut to ``judge_tokens`` positions (prefix scoring), or None
        when the block judge scores whole windows."""
        m = self.method
        block = self.blocks[index].to(self.cfg.device)
        kwargs = _to(kwargs, self.cfg.device)
        groups = self.module_names(block)
        cached = self.fp_cache.block(index) if self.fp_cache is not None else None
        need_fp = m.needs_drift or self.cfg.report_error
        n = q_stream.shape[0]
        holdout_from = n - max(1, int(round(n * m.holdout_fraction))) if m.feedback == "holdout" and m.method == "marr" else n

        # FP inputs of every group (and the FP block output): from the cache, or one FP block pass
        fp_inputs: dict[str, torch.Tensor] = {}
        fp_out = None
        fp_energies: dict[str, torch.Tensor] = {}
        if need_fp:
            keys = [group_key(g) for g in groups]
            names = [name for g in groups for name in g]
            if cached is not None and all(f"X.{k}" in cached for k in keys) and all(f"E.{x}" in cached for x in names):
                fp_inputs = {k: cached[f"X.{k}"] for k in keys}
                fp_energies = {x: cached[f"E.{x}"] for x in names}
            else:
                if fp_stream is None:
                    raise RuntimeError(
                        f"block {index}: the FP statistics cache has no usable entry for this block (corrupted?) "
                        "and the FP stream was not kept; rerun the hessians step")
                fp_block = copy.deepcopy(block)
                fp_out, captured = self.run_block(fp_block, fp_stream, kwargs,
                                                  {k: fp_block.get_submodule(k) for k in keys},
                                                  counter="fp_block_forwards", out_name=f"fp_out.{index % 2}",
                                                  energies={x: fp_block.get_submodule(x) for x in names})
                fp_inputs = {k: captured[k] for k in keys}  # reused CPU buffers, overwritten by the next block
                fp_energies = {x: captured[f"E.{x}"] for x in names}
                del fp_block

        tensors: dict[str, torch.Tensor] = {}
        records: list[dict] = []
        reuse = SubmoduleCache(self.cfg.device)
        judge_reuse = SubmoduleCache(self.cfg.device)  # the same, for the block judge's held-out windows
        n_batches = len(self.batches(n))
        judged = slice(holdout_from, n if m.judge_windows == 0 else min(n, holdout_from + m.judge_windows))
        if judge_kwargs is not None:  # only the first judge_tokens positions of each judged window (causal: exact)
            judged = (judged, slice(0, m.judge_tokens))
        judge_kwargs = kwargs if judge_kwargs is None else _to(judge_kwargs, self.cfg.device)

        def judge_forward() -> torch.Tensor:
            out, _ = self.run_block(block, q_stream[judged], judge_kwargs, counter="judge_block_forwards",
                                    out_name="judge_out", reuse=judge_reuse)
            judge_reuse.finish_pass(len(self.batches(out.shape[0])))
            return out

        for group in groups:
            key = group_key(group)
            first = block.get_submodule(key)
            t0 = time.perf_counter()
            if m.method == "rtn" and not need_fp:
                stats = None
            else:
                stats = self.new_group_stats(first.in_features, key in fp_inputs, holdout_from, n,
                                             {x: fp_energies[x] for x in group} if key in fp_inputs else None)
                fp_batches = fp_inputs.get(key)

                def consume(_key, sl, xq, stats=stats, fp_batches=fp_batches):
                    x = None
                    if fp_batches is not None:
                        x = fp_batches[sl]
                    stats.add(sl, xq, x)

                self.run_block(block, q_stream, kwargs, {key: first}, stop_at=first, consume=consume, reuse=reuse)
                reuse.finish_pass(n_batches)
                for acc in (stats.solve, stats.holdout):
                    if acc is not None:
                        acc.check_finite(f"block {index} group {key}: ")
                if self.cfg.save_grams:
                    H_full, D_full, _ = stats.full(group[0])
                    tensors[f"grams.{key}.H"] = H_full.to(torch.float32)
                    if D_full is not None:
                        tensors[f"grams.{key}.D"] = D_full.to(torch.float32)
            forward_seconds = time.perf_counter() - t0
            for name in group:
                t1 = time.perf_counter()
                module = block.get_submodule(name)
                W = module.weight.data.detach().to(torch.float32, copy=True)
                if not torch.isfinite(W).all():
                    raise FloatingPointError(f"block {index} module {name}: weight contains NaN or Inf")
                judge = BlockOutputJudge(module, judge_forward, fp_out[judged]) if m.block_judge else None
                try:
                    result, record = self.solve_module(W, name, stats, judge)
                except (FloatingPointError, torch.linalg.LinAlgError) as exc:
                    raise type(exc)(f"block {index} module {name}: {exc}") from exc
                module.weight.data.copy_(result.weight.to(module.weight.dtype))
                j_rel = None
                full = stats.full(name) if stats is not None else (None, None, None)
                if full[1] is not None and full[2] is not None:
                    j_rel = ErrorModel.build(W, *full).relative(result.weight)
                if judge is not None:
                    record["judge_seconds"] = judge.seconds
                record.update(block=index, module=name, name=f"{self.adapter.blocks_path}.{index}.{name}",
                              j_rel=j_rel, seconds=time.perf_counter() - t1, forward_seconds=forward_seconds,
                              d_out=W.shape[0], d_in=W.shape[1])
                forward_seconds = 0.0
                records.append(record)
                states[record["name"]] = result
                tensors.update(result.state_dict(prefix=f"{name}."))
            for sub, trigger in self.adapter.reusable.items():
                if trigger in group:
                    reuse.start(sub)
                    judge_reuse.start(sub)

        q_out, _ = self.run_block(block, q_stream, kwargs, reuse=reuse, out_name=f"q_out.{index % 2}")
        self.blocks[index].to("cpu")
        return fp_out, q_out, tensors, records

    def new_group_stats(self, d_in: int, drift: bool, holdout_from: int, n: int,
                        energies: dict[str, torch.Tensor] | None) -> GroupStats:
        """Empty Gram accumulators for one group (a holdout pair when feedback is holdout)."""
        make = lambda: GramAccumulator(d_in, dtype=self.gram_dtype, device=self.cfg.device,  # noqa: E731
                                       drift=drift, fp=False)
        return GroupStats(make(), make() if holdout_from < n else None, energies, holdout_from)

    # --------------------------------------------------------------------- run
    def manifest(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "calibration_hash": self.calibration_hash,
                "method": self.method.to_dict(), "n_blocks": len(self.blocks), "adapter": self.adapter.name,
                "skip": list(self.cfg.skip), "stream_dtype": self.cfg.stream_dtype, "marr_version": marr.__version__}

    def run(self, calibration: torch.Tensor) -> QuantizationRun:
        start_time = time.perf_counter()
        n_blocks = len(self.blocks)
        kwargs = self.adapter.block_kwargs(calibration[:1])
        store = RunStore(self.out_dir, self.manifest()) if self.out_dir else None
        states: dict[str, QuantResult] = {}
        all_records: list[dict] = []
        with store if store else contextlib.nullcontext():
            start = 0
            fp_stream = q_stream = None
            if store:
                finished = store.finished_blocks(n_blocks)
                for index, (tensors, metadata) in enumerate(finished):
                    self.restore_block(index, tensors, metadata, states, all_records)
                start = len(finished)
                if start:
                    fp_stream, q_stream = store.load_streams(start - 1)
                    log.info("resuming at block %d/%d from %s", start + 1, n_blocks, self.out_dir)
            if start == 0 and start < n_blocks:
                q_stream = self.block0_stream(calibration)
                fp_stream = q_stream.clone()
            judge_kwargs = self.prefix_kwargs(calibration)
            for index in range(start, n_blocks):
                t0 = time.perf_counter()
                fp_out, q_out, tensors, records = self.quantize_block(index, fp_stream, q_stream, kwargs[index],
                                                                      states, judge_kwargs[index])
                fp_stream, q_stream = fp_out, q_out
                all_records.extend(records)
                if store:
                    store.save_streams(index, fp_stream, q_stream)
                    store.save_block(index, tensors, records)
                self.log_block(index, n_blocks, records, time.perf_counter() - t0)
                if self.on_block_done is not None:
                    self.on_block_done(index)
        frame = pd.DataFrame(all_records)
        return QuantizationRun(self.model, states, frame, dict(self.counters), time.perf_counter() - start_time)

    def prefix_kwargs(self, calibration: torch.Tensor) -> list[dict | None]:
        """Per block, the keyword arguments (rotary tables, masks) for windows cut to their first
        ``judge_tokens`` positions; None per block when the judge scores whole windows."""
        tokens = self.method.judge_tokens if self.method.block_judge else 0
        if not 0 < tokens < calibration.shape[1]:  # no prefix, or not shorter than the windows
            return [None] * len(self.blocks)
        return self.adapter.block_kwargs(calibration[:1, :tokens])

    def restore_block(self, index: int, tensors: dict, metadata: dict, states: dict, all_records: list) -> None:
        """Write a finished block's saved weights into the model (bit-identical to the original run)."""
        records = json.loads(metadata["records"])
        block = self.blocks[index]
        for rec in records:
            result = QuantResult.from_state_dict(tensors, self.method.spec, prefix=f"{rec['module']}.")
            module = block.get_submodule(rec["module"])
            module.weight.data.copy_(result.weight.to(module.weight.dtype))
            states[rec["name"]] = result
            if rec.get("alpha") is not None:
                self.warm_alpha[rec["module"]] = rec["alpha"]
        all_records.extend(records)

    @staticmethod
    def log_block(index: int, n_blocks: int, records: list[dict], seconds: float) -> None:
        parts = []
        for r in records:
            alpha = "" if r["alpha"] is None else f" α={r['alpha']:.3f}"
            j = "" if r["j_rel"] is None else f" J={r['j_rel']:.2e}"
            parts.append(f"{r['module'].split('.')[-1]}{alpha}{j}")
        log.info("block %d/%d | %s | %.1f s", index + 1, n_blocks, " | ".join(parts), seconds)


def quantize_model(model: nn.Module, calibration: torch.Tensor, method: MethodConfig,
                   engine: EngineConfig | None = None, **kwargs) -> QuantizationRun:
    """Quantize every linear of every block of ``model`` in place (see ``Engine``)."""
    return Engine(model, method, engine, **kwargs).run(calibration)


def apply_run(model: nn.Module, run_dir: str | Path) -> tuple[dict[str, QuantResult], pd.DataFrame]:
    """Load a finished run directory's weights into ``model`` (fake-quantized)."""
    manifest, raw_states, records = load_run_states(run_dir)
    spec = MethodConfig.from_dict(manifest["method"]).spec
    states = {}
    for name, tensors in raw_states.items():
        result = QuantResult.from_state_dict(tensors, spec)
        module = model.get_submodule(name)
        module.weight.data.copy_(result.weight.to(module.weight.dtype))
        states[name] = result
    return states, pd.DataFrame(records)
