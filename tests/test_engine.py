import copy

import pytest
import torch

from marr.adapters import adapter_for
from marr.engine import EngineConfig, MethodConfig, compute_fp_statistics, quantize_model
from marr.engine.store import block_file
from marr.testing import FAMILIES, model_output, tiny_calibration, tiny_model


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module", params=FAMILIES)
def family(request):
    return request.param


def test_eight_bit_keeps_outputs_close(family):
    model, calib = tiny_model(family), tiny_calibration(family)
    ref = model_output(model, calib)
    quantize_model(model, calib, MethodConfig(method="gptq", bits=8, group_size=32))
    assert rel(model_output(model, calib), ref) < 1e-2


@pytest.mark.parametrize("method", ["rtn", "gptq", "gptaq", "qep", "marr"])
def test_every_method_changes_every_weight(family, method):
    model, calib = tiny_model(family), tiny_calibration(family)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = quantize_model(model, calib, MethodConfig(method=method, bits=3, group_size=32))
    adapter = adapter_for(model)
    n_linears = len(adapter.blocks()) * sum(len(g) for g in adapter.groups)
    assert len(run.states) == len(run.records) == n_linears
    for name in run.states:
        key = f"{name}.weight"
        assert not torch.equal(model.state_dict()[key], before[key]), key
        assert torch.equal(model.get_submodule(name).weight.data, run.states[name].weight)


def test_marr_quality_order_and_adaptive_alpha(family):
    model, calib = tiny_model(family), tiny_calibration(family, n=16)
    ref = model_output(model, calib)
    errors, runs = {}, {}
    for method in ("rtn", "gptq", "marr"):
        m = copy.deepcopy(model)
        runs[method] = quantize_model(m, calib, MethodConfig(method=method, bits=3, group_size=32))
        errors[method] = rel(model_output(m, calib), ref)
    assert errors["marr"] < errors["gptq"] < errors["rtn"], errors
    alphas = runs["marr"].records["alpha"]
    assert alphas.nunique() >= 3, alphas.tolist()
    # every module's α trajectory is recorded, the start α first
    assert all(len(t) == s for t, s in zip(runs["marr"].records["trajectory"], runs["marr"].records["solves"]))


def test_resume_after_failure_is_bit_identical(tmp_path):
    family = "llama"
    calib = tiny_calibration(family)
    method = MethodConfig(method="marr", bits=3, group_size=32)
    straight = tiny_model(family)
    quantize_model(straight, calib, method, out_dir=tmp_path / "straight")

    class Crash(Exception):
        pass

    def crash_after_first_block(index):
        if index == 0:
            raise Crash

    crashed = tiny_model(family)
    with pytest.raises(Crash):
        quantize_model(crashed, calib, method, out_dir=tmp_path / "resumed", on_block_done=crash_after_first_block)
    assert block_file(tmp_path / "resumed", 0).exists() and not block_file(tmp_path / "resumed", 1).exists()
    resumed = tiny_model(family)  # a fresh process would start from the FP model again
    run = quantize_model(resumed, calib, method, out_dir=tmp_path / "resumed")
    assert run.counters["fp_block_forwards"] == 1  # only block 1 was recomputed
    for key, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


def test_cached_fp_statistics_skip_every_fp_forward(tmp_path):
    family = "gemma3"
    calib = tiny_calibration(family)
    compute_fp_statistics(tiny_model(family), calib, tmp_path / "fp", model_id="tiny", calibration_hash="abc",
                          cache_activations=True, activation_dtype="float32")
    method = MethodConfig(method="marr", bits=3, group_size=32)
    plain_model, cached_model = tiny_model(family), tiny_model(family)
    plain = quantize_model(plain_model, calib, method)
    cached = quantize_model(cached_model, calib, method, fp_cache=tmp_path / "fp", model_id="tiny",
                            calibration_hash="abc")
    assert plain.counters["fp_block_forwards"] == 3
    assert cached.counters["fp_block_forwards"] == 0
    for key, value in plain_model.state_dict().items():
        assert torch.equal(value, cached_model.state_dict()[key]), key
    # a cache of another calibration set is not used
    other = quantize_model(tiny_model(family), calib, method, fp_cache=tmp_path / "fp", model_id="tiny",
                           calibration_hash="different")
    assert other.counters["fp_block_forwards"] == 3


def test_engine_grams_equal_hand_computed_grams(tmp_path):
    """H and D saved for block 1 equal Grams of inputs hooked from the FP model and from the
    final quantized model (a group's input depends only on modules quantized before it)."""
    family = "llama"
    calib = tiny_calibration(family)
    fp_model, q_model = tiny_model(family), tiny_model(family)
    run = quantize_model(q_model, calib, MethodConfig(method="gptaq", bits=3, group_size=32),
                         out_dir=tmp_path / "run", engine=EngineConfig(gram_dtype="float64", batch_size=3))
    from safetensors.torch import load_file

    saved = load_file(str(block_file(tmp_path / "run", 1)))

    def hooked_inputs(model, name):
        box = []
        handle = model.get_submodule(name).register_forward_pre_hook(lambda m, a: box.append(a[0].detach()))
        model_output(model, calib)
        handle.remove()
        return box[0].reshape(-1, box[0].shape[-1]).double().T

    for module in ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj"):
        X = hooked_inputs(fp_model, f"model.layers.1.{module}")
        Xq = hooked_inputs(q_model, f"model.layers.1.{module}")
        n = calib.shape[0]
        torch.testing.assert_close(saved[f"grams.{module}.H"].double(), 2 / n * Xq @ Xq.T, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(saved[f"grams.{module}.D"].double(), 2 / n * (X - Xq) @ Xq.T, rtol=1e-4, atol=1e-5)
        # the recorded J_rel (Grams + the FP output energy hooked in the FP pass, no G) is the
        # direct ‖W X − Q X̃‖² / ‖W X‖²
        name = f"model.layers.1.{module}"
        W = fp_model.get_submodule(name).weight.double()
        Q = q_model.get_submodule(name).weight.double()
        direct = ((W @ X - Q @ Xq).norm() ** 2 / (W @ X).norm() ** 2).item()
        recorded = run.records.set_index("name").loc[name, "j_rel"]
        assert recorded == pytest.approx(direct, rel=1e-4)


def test_skip_patterns_leave_modules_in_full_precision():
    model, calib = tiny_model("llama"), tiny_calibration("llama")
    down = model.model.layers[0].mlp.down_proj.weight.clone()
    run = quantize_model(model, calib, MethodConfig(method="gptq", bits=3, group_size=32),
                         engine=EngineConfig(skip=("mlp.down_proj",)))
    assert torch.equal(model.model.layers[0].mlp.down_proj.weight, down)
    assert not any(name.endswith("down_proj") for name in run.states)


def test_unsupported_architecture_lists_the_supported_ones():
    with pytest.raises(NotImplementedError, match="supported: .*llama"):
        adapter_for(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_concurrent_runs_on_one_directory_are_refused(tmp_path):
    from marr.io import DirectoryLock

    with DirectoryLock(tmp_path):
        with pytest.raises(RuntimeError, match="refusing to run concurrently"):
            quantize_model(tiny_model("llama"), tiny_calibration("llama"), MethodConfig(method="rtn"),
                           out_dir=tmp_path)


def test_rtn_without_error_report_runs_no_forward_for_groups():
    model, calib = tiny_model("llama"), tiny_calibration("llama")
    run = quantize_model(model, calib, MethodConfig(method="rtn", bits=3, group_size=32),
                         engine=EngineConfig(report_error=False))
    assert run.counters["fp_block_forwards"] == 0
    assert run.records["j_rel"].isna().all() and len(run.records) == 14


@pytest.mark.parametrize("judged_by", [{}, {"basis": "qep", "judge": "block", "pid": {"max_iter": 3}}],
                         ids=["gptaq-layer-judge", "qep-block-judge"])
def test_compare_pid_records_pid_next_to_the_grid_without_changing_the_result(judged_by):
    """compare_pid runs PID on the grid's own statistics: the weights stay the grid's, and on the
    same judge the grid's best α (the oracle over its points) bounds what PID's records can claim."""
    calib = tiny_calibration("llama", n=16)
    grid = [round(0.1 * i, 1) for i in range(11)]
    plain, audited = tiny_model("llama"), tiny_model("llama")
    config = {"method": "marr", "search": "grid", "grid": grid, **judged_by}
    run_plain = quantize_model(plain, calib, MethodConfig.from_dict(config))
    run_audit = quantize_model(audited, calib, MethodConfig.from_dict({**config, "compare_pid": True}))
    for name, state in run_plain.states.items():
        assert torch.equal(state.weight, run_audit.states[name].weight), name
    rec = run_audit.records
    assert rec["pid_j_rel"].notna().all() and (rec["pid_solves"] >= 2).all()
    # the grid's J is the minimum over its own trajectory
    for traj, j in zip(rec["trajectory"], rec["j_search_rel"]):
        assert j == pytest.approx(min(e for _, _, e in traj), rel=1e-12)
    # PID may land between grid points (lower J) but keeps its best iterate: never above its start
    ratio = rec["pid_j_rel"] / rec["j_search_rel"]
    assert ratio.min() > 0.5 and ratio.median() < 1.05, ratio.describe()
    assert "pid_alpha" not in run_plain.records


@pytest.mark.parametrize("family", ["vit", "qwen2"])
def test_recorded_error_is_direct_error_for_modules_with_bias(family):
    """Linears with a bias (ViT qkv/fc1, Qwen2 q/k/v): the FP output energy drops the bias, so the
    recorded J_rel is still ‖W X − Q X̃‖² / ‖W X‖² of the hooked inputs."""
    calib = tiny_calibration(family)
    fp_model, q_model = tiny_model(family), tiny_model(family)
    run = quantize_model(q_model, calib, MethodConfig(method="gptaq", bits=3, group_size=32),
                         engine=EngineConfig(gram_dtype="float64"))
    checked = 0
    for name in run.records["name"]:
        module = fp_model.get_submodule(name)
        if module.bias is None or ".1." not in name:
            continue
        inputs = []
        for model in (fp_model, q_model):
            box = []
            handle = model.get_submodule(name).register_forward_pre_hook(lambda m, a, box=box: box.append(a[0]))
            model_output(model, calib)
            handle.remove()
            inputs.append(box[0].reshape(-1, box[0].shape[-1]).double().T)
        X, Xq = inputs
        W, Q = module.weight.double(), q_model.get_submodule(name).weight.double()
        direct = ((W @ X - Q @ Xq).norm() ** 2 / (W @ X).norm() ** 2).item()
        assert run.records.set_index("name").loc[name, "j_rel"] == pytest.approx(direct, rel=1e-4), name
        checked += 1
    assert checked >= 1


def test_refit_solves_the_chosen_alpha_on_every_window():
    """refit keeps the α the holdout search chose but solves it on all windows' Grams: one more
    solve per module, weights different from the holdout-only solve, and exactly what GPTAQ at
    that α gives on the same (full) statistics for the first module (same inputs, same α)."""
    calib = tiny_calibration("llama", n=16)
    plain, refit = tiny_model("llama"), tiny_model("llama")
    run_plain = quantize_model(plain, calib, MethodConfig(method="marr", warm_start=False))
    run_refit = quantize_model(refit, calib, MethodConfig(method="marr", warm_start=False, refit=True))
    first = run_plain.records.iloc[0]
    assert run_refit.records.iloc[0]["alpha"] == first["alpha"]
    assert run_refit.records.iloc[0]["solves"] == first["solves"] + 1
    name = first["name"]
    assert not torch.equal(run_plain.states[name].weight, run_refit.states[name].weight)
    gptaq = tiny_model("llama")
    run_gptaq = quantize_model(gptaq, calib, MethodConfig(method="gptaq", alpha=float(first["alpha"])))
    assert torch.equal(run_gptaq.states[name].weight, run_refit.states[name].weight)


def test_block_judge_scores_candidates_at_the_block_output_and_restores_the_weight():
    """J_block(Q) is ‖Y_FP − block(X̃; module ← Q)‖² computed by hand; the module keeps its weight."""
    from marr.engine.block_judge import BlockOutputJudge

    model = tiny_model("llama")
    adapter = adapter_for(model)
    block, module = adapter.blocks()[0], adapter.blocks()[0].get_submodule(adapter.groups[0][0])
    calib = tiny_calibration("llama", n=4)
    x = adapter.block0_inputs(calib)
    kwargs = adapter.block_kwargs(calib[:1])[0]
    with torch.no_grad():
        target = adapter.call_block(block, x, kwargs)
        weight = module.weight.data.clone()
        Q = weight + 0.05 * torch.randn_like(weight)

        def forward():
            return adapter.call_block(block, x, kwargs)

        judge = BlockOutputJudge(module, forward, target)
        j = judge(Q)
        assert torch.equal(module.weight.data, weight)
        module.weight.data.copy_(Q)
        direct = (adapter.call_block(block, x, kwargs).double() - target.double()).pow(2).sum().item()
        module.weight.data.copy_(weight)
    assert j == pytest.approx(direct, rel=1e-9) and j > 0
    assert judge(weight) == 0.0
    assert judge.fp_energy == pytest.approx(target.double().pow(2).sum().item())


def test_block_judge_in_the_engine_runs_one_block_forward_per_candidate():
    calib = tiny_calibration("llama", n=16)
    layer = quantize_model(tiny_model("llama"), calib, MethodConfig(method="marr", basis="qep"))
    block = quantize_model(tiny_model("llama"), calib, MethodConfig(method="marr", basis="qep", judge="block"))
    assert layer.counters["judge_block_forwards"] == 0
    assert block.counters["judge_block_forwards"] == block.counters["solves"] > 0
    # the two judges choose differently somewhere, and the block judge's time is recorded per module
    assert (layer.records["alpha"] != block.records["alpha"]).any()
    assert (block.records["judge_seconds"] > 0).all()


def test_block_judge_on_fewer_windows_scores_only_those():
    """judge_windows=1 judges on one held-out window (16 × 0.25 = 4 held out): other α choices
    somewhere, the same number of block forwards per candidate."""
    calib = tiny_calibration("llama", n=16)
    alphas = {}
    for windows in (0, 1):
        run = quantize_model(tiny_model("llama"), calib, MethodConfig(method="marr", basis="qep", judge="block",
                                                                      judge_windows=windows))
        assert run.counters["judge_block_forwards"] == run.counters["solves"]
        alphas[windows] = run.records["alpha"]
        assert alphas[windows].nunique() >= 3
    assert (alphas[0] != alphas[1]).any()


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma3"])
def test_causal_blocks_give_the_same_output_on_a_window_prefix(family):
    """What prefix scoring rests on: a causal decoder block run on the first P positions (with the
    adapter's keyword arguments for length P) returns exactly its full-window output there."""
    model, calib = tiny_model(family), tiny_calibration(family, n=4)
    adapter = adapter_for(model)
    assert adapter.causal
    x = adapter.block0_inputs(calib)
    full, prefix = adapter.block_kwargs(calib[:1]), adapter.block_kwargs(calib[:1, :12])
    with torch.no_grad():
        for index, block in enumerate(adapter.blocks()):
            whole = adapter.call_block(block, x, full[index])
            cut = adapter.call_block(block, x[:, :12], prefix[index])
            torch.testing.assert_close(cut, whole[:, :12], rtol=1e-5, atol=1e-5)
            x = whole


def test_block_judge_on_a_prefix_forwards_only_those_positions(monkeypatch):
    """judge_tokens=P: every judge forward sees P positions of each judged window; the α choices
    differ from whole-window scoring somewhere; P at least the window length is whole windows."""
    import marr.engine.engine as engine_module

    widths = []
    original = engine_module.Engine.run_block

    def spy(self, block, stream, kwargs, *args, counter="q_block_forwards", **kw):
        if counter == "judge_block_forwards":
            widths.append(stream.shape[1])
        return original(self, block, stream, kwargs, *args, counter=counter, **kw)

    monkeypatch.setattr(engine_module.Engine, "run_block", spy)
    calib = tiny_calibration("llama", n=16)  # 32 positions per window
    runs = {}
    for tokens in (0, 8, 32):
        widths.clear()
        runs[tokens] = quantize_model(tiny_model("llama"), calib, MethodConfig(method="marr", basis="qep",
                                                                              judge="block", judge_tokens=tokens))
        assert len(widths) == runs[tokens].counters["judge_block_forwards"] == runs[tokens].counters["solves"]
        assert set(widths) == {8 if tokens == 8 else 32}
    assert (runs[0].records["alpha"] != runs[8].records["alpha"]).any()
    assert runs[0].records["alpha"].equals(runs[32].records["alpha"])


def test_block_judge_prefix_is_refused_for_a_non_causal_model():
    with pytest.raises(ValueError, match="judge_tokens=16.*causal decoders.*'timm-vit'"):
        quantize_model(tiny_model("vit"), tiny_calibration("vit"),
                       MethodConfig(method="marr", judge="block", judge_tokens=16))


def test_block_judge_needs_holdout_feedback_and_a_known_name():
    with pytest.raises(ValueError, match="judge='block'.*feedback=holdout"):
        MethodConfig(method="marr", judge="block", feedback="calibration")
    with pytest.raises(ValueError, match="judge='output'.*allowed values are layer, block"):
        MethodConfig(method="marr", judge="output")
    with pytest.raises(ValueError, match="judge_windows=-1.*integer >= 0"):
        MethodConfig(method="marr", judge="block", judge_windows=-1)
    with pytest.raises(ValueError, match="judge_tokens=-8.*integer >= 0"):
        MethodConfig(method="marr", judge="block", judge_tokens=-8)


def test_block_judge_reuses_final_submodule_outputs_without_changing_the_result(monkeypatch):
    """Once the attention is solved its held-out output is final: the MLP modules' judge forwards
    reuse it. Turning reuse off (no reusable submodules) must give bit-identical weights."""
    import marr.engine.engine as engine_module
    from marr.adapters.llama import LlamaAdapter

    reused_passes = []
    original = engine_module.SubmoduleCache.attach
    monkeypatch.setattr(engine_module.SubmoduleCache, "attach",
                        lambda self, block, batch: reused_passes.append(len(self.complete)) or original(self, block, batch))
    calib = tiny_calibration("llama", n=16)
    method = MethodConfig(method="marr", basis="qep", judge="block")
    reused_model, plain_model = tiny_model("llama"), tiny_model("llama")
    reused = quantize_model(reused_model, calib, method)
    assert sum(1 for c in reused_passes if c) > 0
    monkeypatch.setattr(LlamaAdapter, "reusable", {})
    reused_passes.clear()
    quantize_model(plain_model, calib, method)
    assert not any(reused_passes)
    for key, value in reused_model.state_dict().items():
        assert torch.equal(value, plain_model.state_dict()[key]), key
    assert reused.records["alpha"].nunique() >= 3
