"""Reliability: bad input fails early naming the key; crashes resume; numerical faults are handled."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from marr.engine import ConfigError, MethodConfig, compute_fp_statistics, quantize_model
from marr.engine.store import FpStatsCache, block_file, load_run_states
from marr.grid import QuantSpec, dequantize
from marr.gptq import gptq_solve
from marr.params import check_loaded_model, validate_params
from marr.search import PidConfig, search_alpha
from marr.testing import model_output, tiny_calibration, tiny_model
from tests.params_fixture import valid_params

REPO = Path(__file__).resolve().parent.parent


def mutated(path: str, value) -> dict:
    """valid_params() with the value at a dotted path replaced (``...`` deletes it)."""
    params = valid_params()
    *parents, last = path.split(".")
    node = params
    for key in parents:
        node = node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return params


def test_the_repository_params_and_the_tiny_pipeline_params_are_valid():
    import yaml

    from tests.pipeline_fixture import tiny_params

    validate_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    validate_params(tiny_params(Path("text.txt")))
    validate_params(valid_params())


# ------------------------------------------------------------------------- config validation
# (dotted path mutated, new value, text the message must contain: the key path, then what is allowed)
RULES = {
    "bits above 8": ("configs.gptq-w3.bits", 9, ["configs.gptq-w3.bits=9", "2..8"]),
    "bits below 2": ("configs.gptq-w3.bits", 1, ["configs.gptq-w3.bits=1", "2..8"]),
    "bits not an integer": ("configs.gptq-w3.bits", 3.5, ["configs.gptq-w3.bits=3.5", "integer"]),
    "group size zero": ("configs.gptq-w3.group_size", 0, ["configs.gptq-w3.group_size=0", "positive integer"]),
    "unknown method": ("configs.gptq-w3.method", "awq", ["configs.gptq-w3.method='awq'", "rtn, gptq, gptaq, qep, marr"]),
    "unknown search": ("configs.marr-w3.search", "bayes", ["configs.marr-w3.search='bayes'", "pid, grid, fixed"]),
    "unknown residual basis": ("configs.marr-w3.basis", "rescomp", ["configs.marr-w3.basis='rescomp'",
                                                                    "gptaq, qep"]),
    "unknown judge": ("configs.marr-w3.judge", "model", ["configs.marr-w3.judge='model'", "layer, block"]),
    "unknown config key": ("configs.gptq-w3.bitz", 3, ["configs.gptq-w3.bitz: unknown key", "bits"]),
    "negative PID gain": ("configs.marr-w3.pid.kp", -1.0, ["configs.marr-w3.pid.kp=-1.0", ">= 0"]),
    "NaN PID gain": ("configs.marr-w3.pid.ki", float("nan"), ["configs.marr-w3.pid.ki=nan", "finite"]),
    "infinite PID gain": ("configs.marr-w3.pid.kd", float("inf"), ["configs.marr-w3.pid.kd=inf", "finite"]),
    "string PID gain": ("configs.marr-w3.pid.kp", "fast", ["configs.marr-w3.pid.kp='fast'", "finite number"]),
    "alpha bounds reversed": ("configs.marr-w3.pid.alpha_min", 2.0, ["configs.marr-w3.pid.alpha_min=2.0",
                                                                     "alpha_max=1.0", "below"]),
    "tau zero": ("configs.marr-w3.pid.tol", 0.0, ["configs.marr-w3.pid.tol=0.0", "> 0"]),
    "tau negative": ("configs.marr-w3.pid.tol", -1e-5, ["configs.marr-w3.pid.tol=-1e-05", "> 0"]),
    "unknown PID key": ("configs.marr-w3.pid.gain", 1, ["configs.marr-w3.pid.gain: unknown key", "kp"]),
    "negative damp": ("configs.gptq-w3.damp", -0.1, ["configs.gptq-w3.damp=-0.1", ">= 0"]),
    "config not a mapping": ("configs.gptq-w3", "gptq", ["configs.gptq-w3='gptq'", "mapping"]),
    "bad engine device": ("engine.device", "tpu", ["engine.device='tpu'", "cpu, cuda"]),
    "bad engine batch": ("engine.batch_size", 0, ["engine.batch_size=0", "positive integer"]),
    "engine device not a string": ("engine.device", 3, ["engine.device=3", "string"]),
    "bad activation dtype": ("hessians.activation_dtype", "int8", ["hessians.activation_dtype='int8'", "float16"]),
    "bad pack format": ("pack.llm_format", "awq", ["pack.llm_format='awq'", "gptq_v2"]),
    "unknown section": ("reconstruct", {}, ["reconstruct: unknown section", "models"]),
    "model key not in models": ("llm_models", ["tiny-llm", "nope"], ["llm_models[1]='nope'", "not a key of models",
                                                                    "tiny-llm"]),
    "config key not in configs": ("vit_configs", ["gptq-w9"], ["vit_configs[0]='gptq-w9'", "not a key of configs"]),
    "vit model listed as llm": ("llm_models", ["tiny-vit"], ["llm_models[0]='tiny-vit'", "vit_models"]),
    "bad model kind": ("models.tiny-llm.kind", "audio", ["models.tiny-llm.kind='audio'", "llm, vit"]),
    "missing source": ("models.tiny-llm.source", ..., ["models.tiny-llm.source: missing", "hf:"]),
    "unknown source": ("models.tiny-llm.source", "gpt5", ["models.tiny-llm.source='gpt5'", "unknown source"]),
    "unknown tiny family": ("models.tiny-llm.source", "tiny:mamba", ["models.tiny-llm.source='tiny:mamba'",
                                                                     "llama|qwen2|gemma3|vit"]),
    "missing hf folder": ("models.tiny-llm.source", "hf:./no/such/model",
                          ["models.tiny-llm.source='hf:./no/such/model'", "does not exist"]),
    "missing bare folder": ("models.tiny-llm.source", "/no/such/model", ["models.tiny-llm.source='/no/such/model'",
                                                                         "does not exist"]),
    "missing timm checkpoint": ("models.tiny-vit.source", "timm:vit_small_patch14_dinov2@/no/such.pth",
                                ["models.tiny-vit.source=", "checkpoint file", "does not exist"]),
    "image size not a multiple of the patch": ("models.tiny-vit.img_size", 50, ["models.tiny-vit.img_size=50",
                                                                               "multiple of the patch size 14"]),
    "image size negative": ("models.tiny-vit.img_size", -56, ["models.tiny-vit.img_size=-56", "multiple"]),
    "image size on an llm": ("models.tiny-llm.img_size", 56, ["models.tiny-llm.img_size: unknown key"]),
    "zero calibration windows": ("models.tiny-llm.calibration.windows", 0,
                                 ["models.tiny-llm.calibration.windows=0", "positive integer"]),
    "negative calibration length": ("models.tiny-llm.calibration.length", -64,
                                    ["models.tiny-llm.calibration.length=-64", "positive integer"]),
    "float calibration length": ("models.tiny-llm.calibration.length", 64.5,
                                 ["models.tiny-llm.calibration.length=64.5", "positive integer"]),
    "zero calibration images": ("models.tiny-vit.calibration.images_n", 0,
                                ["models.tiny-vit.calibration.images_n=0", "positive integer"]),
    "bad model key": ("models.Tiny.LLM", {"source": "tiny:llama", "kind": "llm"}, ["models.'Tiny.LLM'", "[a-z0-9_-]+"]),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_each_validation_rule_names_the_key(rule):
    path, value, expected = RULES[rule]
    if rule == "bad model key":
        params = valid_params()
        params["models"]["Tiny.LLM"] = value
    else:
        params = mutated(path, value)
    with pytest.raises(ConfigError) as info:
        validate_params(params)
    for text in expected:
        assert text in str(info.value), (rule, str(info.value))


def test_every_stage_validates_the_whole_file_before_work(tmp_path, monkeypatch):
    """A bad value in a config the stage does not use still stops the assets stage at once."""
    import yaml

    from stages import assets

    params = mutated("configs.marr-w3.pid.tol", 0.0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["assets", "--model", "tiny-llm"])
    with pytest.raises(ConfigError, match=r"configs\.marr-w3\.pid\.tol=0\.0"):
        assets.main()
    assert not (tmp_path / "data").exists()  # nothing was written


def test_cli_model_key_not_in_models():
    from stages.common import model_params

    with pytest.raises(ConfigError, match=r"models\.nope: not defined; defined models: tiny-llm, tiny-vit"):
        model_params(valid_params(), "nope")


def test_calibration_longer_than_the_context_fails_in_the_calibrate_stage(tmp_path, monkeypatch):
    import yaml

    from marr.testing import save_tiny_llm
    from stages import calibrate

    params = mutated("models.tiny-llm.calibration.length", 256)  # tiny llama: max_position_embeddings 128
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    save_tiny_llm(tmp_path / "data/models/tiny-llm")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["calibrate", "--model", "tiny-llm"])
    with pytest.raises(ConfigError) as info:
        calibrate.main()
    assert "models.tiny-llm.calibration.length=256" in str(info.value)
    assert "max_position_embeddings=128" in str(info.value)
    assert not (tmp_path / "data/calibration").exists()


def test_image_size_the_model_cannot_take_fails_at_load(tmp_path, monkeypatch):
    """A folder whose patch size the params could not know (checked when the model is loaded)."""
    import json

    from marr.testing import save_tiny_vit
    from stages.common import load_local_model

    folder = save_tiny_vit(tmp_path / "data/models/my-vit")
    config = json.loads((folder / "config.json").read_text())
    assert config["patch_size"] == 14
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"models\.my-vit\.img_size=60: .*patch size 14"):
        load_local_model("my-vit", {"kind": "vit", "source": "hf:./somewhere", "img_size": 60})
    assert load_local_model("my-vit", {"kind": "vit", "source": "x", "img_size": 28}).data_config["input_size"][-1] == 28


def test_unsupported_architecture_names_the_source_and_lists_the_supported():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    with pytest.raises(ConfigError) as info:
        check_loaded_model("mine", {"kind": "llm", "source": "hf:./mine"}, model)
    assert "models.mine.source='hf:./mine'" in str(info.value)
    assert "unsupported architecture Sequential; supported:" in str(info.value) and "llama" in str(info.value)


def test_group_size_that_does_not_divide_d_in_makes_the_last_group_shorter():
    g = torch.Generator().manual_seed(0)
    W, X = torch.randn(16, 96, generator=g), torch.randn(96, 400, generator=g)
    H = 2 * X @ X.T / 400
    result = gptq_solve(W, H, QuantSpec(3, 64))
    assert result.scales.shape == (2, 16)
    assert result.g_idx.tolist() == [0] * 64 + [1] * 32
    assert torch.equal(result.weight, dequantize(result.codes, result.scales, result.zeros, result.g_idx))
    # a group larger than d_in is one group: the same solve as one scale per output channel
    big = gptq_solve(W, H, QuantSpec(3, 200))
    channel = gptq_solve(W, H, QuantSpec(3, None))
    assert big.scales.shape == (1, 16) and big.g_idx.unique().tolist() == [0]
    assert torch.equal(big.weight, channel.weight)
    # and through the engine: tiny llama widths 64 and 128 with groups of 48 (last groups 16 and 32)
    model, calib = tiny_model("llama"), tiny_calibration("llama")
    run = quantize_model(model, calib, MethodConfig.from_dict({"method": "gptq", "bits": 4, "group_size": 48}))
    down = run.states["model.layers.0.mlp.down_proj"]  # d_in 128
    assert down.scales.shape[0] == 3 and (down.g_idx == 2).sum().item() == 32
    assert all(torch.isfinite(s.weight).all() for s in run.states.values())


# --------------------------------------------------------------------------------- numerics
def rank_deficient_problem():
    """Grams of inputs with duplicated input columns (3 = 5, 20 = 21) and zero ones (10, 11)."""
    g = torch.Generator().manual_seed(0)
    d_in, n = 64, 512
    X = torch.randn(d_in, n, generator=g)
    X[5], X[21] = X[3], X[20]
    Xq = X + 0.1 * torch.randn(d_in, n, generator=g)
    Xq[5], Xq[21] = Xq[3], Xq[20]
    X[10:12], Xq[10:12] = 0, 0
    W = torch.randn(32, d_in, generator=g)
    return W, 2 * Xq @ Xq.T / n, 2 * (X - Xq) @ Xq.T / n, 2 * X @ X.T / n


def test_rank_deficient_hessian_raises_damping_and_zeroes_dead_columns(caplog):
    W, H, D, G = rank_deficient_problem()
    assert torch.linalg.matrix_rank(H.double()).item() < 64 - 2
    with caplog.at_level(logging.WARNING, logger="marr.gptq"):
        result = gptq_solve(W, H, QuantSpec(3, 16), damp=0.0)  # singular H, no damping asked for
    assert result.damp > 0 and "damping raised" in caplog.text  # raised stepwise, logged, recorded
    assert torch.isfinite(result.weight).all()
    assert torch.equal(result.weight[:, 10:12], torch.zeros(32, 2))  # dead inputs get weight 0
    for alpha in (0.0, 0.5):
        damped = gptq_solve(W, H, QuantSpec(3, 16), D=D, alpha=alpha)
        assert torch.isfinite(damped.weight).all() and not damped.weight[:, 10:12].any()
    for method in ("pid", "grid", "fixed"):
        found = search_alpha(W, H, D, G, QuantSpec(3, 16), method=method, damp=0.0)
        assert torch.isfinite(found.result.weight).all() and not found.result.weight[:, 10:12].any()
        assert all(torch.isfinite(torch.tensor(j)) for _, _, j in found.trajectory)
        assert found.result.damp > 0


def test_nan_weight_fails_naming_block_and_module():
    model, calib = tiny_model("llama"), tiny_calibration("llama")
    model.model.layers[1].mlp.down_proj.weight.data[3, 5] = float("nan")
    with pytest.raises(FloatingPointError, match=r"block 1 module mlp\.down_proj: weight contains NaN or Inf"):
        quantize_model(model, calib, MethodConfig(method="gptq", bits=4, group_size=32))


def test_nan_in_calibration_activations_fails_naming_block_and_group():
    model, calib = tiny_model("llama"), tiny_calibration("llama")
    model.model.embed_tokens.weight.data[calib[2, 7]] = float("nan")  # one token's embedding
    with pytest.raises(FloatingPointError, match=r"block 0 group self_attn\.q_proj: non-finite values"):
        quantize_model(model, calib, MethodConfig(method="marr", bits=4, group_size=32))
    vit, images = tiny_model("vit"), tiny_calibration("vit")
    images[1, 0, 10, 10] = float("inf")  # one pixel of one image
    with pytest.raises(FloatingPointError, match=r"block 0 group attn\.qkv: non-finite values .*Gram H"):
        quantize_model(vit, images, MethodConfig(method="gptq", bits=4, group_size=32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_accumulate_grams_in_fp32(dtype, monkeypatch):
    import marr.engine.engine as engine_module

    seen = []

    class Spy(engine_module.GramAccumulator):
        def add(self, q_inputs, fp_inputs=None):
            seen.append((q_inputs.dtype, self.H.dtype))
            super().add(q_inputs, fp_inputs)

    monkeypatch.setattr(engine_module, "GramAccumulator", Spy)
    model, calib = tiny_model("llama").to(dtype), tiny_calibration("llama")
    reference = model_output(model, calib).float()
    run = quantize_model(model, calib, MethodConfig(method="marr", bits=8, group_size=32))
    assert seen and all(x == dtype and gram == torch.float32 for x, gram in seen)
    assert all(model.get_submodule(name).weight.dtype == dtype for name in run.states)
    out = model_output(model, calib).float()
    assert torch.isfinite(out).all() and run.records["j_rel"].notna().all()
    assert ((out - reference).norm() / reference.norm()).item() < 2e-2


def test_pid_that_oscillates_stops_at_max_iter_and_keeps_the_best():
    from marr.synthetic import random_problem

    p = random_problem(48, 64, tokens=512, drift=0.2, seed=7)
    spec = QuantSpec(3, 32)
    # kp = 1.95: every Newton step on the fitted parabola overshoots almost twice: α oscillates
    cfg = PidConfig(kp=1.95, alpha_min=-1.0, alpha_max=2.0, alpha_tol=1e-6, tol=1e-12, max_iter=7)
    found = search_alpha(p.W, p.H, p.D, p.G, spec, pid=cfg)
    alphas = [a for _, a, _ in found.trajectory]
    errors = [j for _, _, j in found.trajectory]
    assert found.solves == cfg.max_iter
    steps = [b - a for a, b in zip(alphas[2:], alphas[3:])]
    assert all(s1 * s2 < 0 for s1, s2 in zip(steps, steps[1:]))  # it oscillated to the end
    assert found.error == min(errors) <= errors[0] and found.alpha != alphas[-1]
    # kp = 50 with integral and derivative gains: diverges to the bounds, then stops, best kept
    wild = PidConfig(kp=50.0, ki=50.0, kd=50.0, alpha_min=-3.0, alpha_max=4.0, max_iter=8)
    found = search_alpha(p.W, p.H, p.D, p.G, spec, pid=wild)
    errors = [j for _, _, j in found.trajectory]
    assert found.solves <= wild.max_iter and max(errors) > 5 * errors[0]
    assert found.error == min(errors) <= errors[0]
    assert torch.isfinite(found.result.weight).all()


# ----------------------------------------------------------------------------- crash safety
def save_three_block_llama(folder: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=128, num_hidden_layers=3)
    LlamaForCausalLM(config).eval().save_pretrained(folder)
    return folder


def run_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    _, states, _ = load_run_states(run_dir)
    return {f"{name}.{k}": v.clone() for name, tensors in states.items() for k, v in tensors.items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_sigkilled_reconstruction_resumes_bit_identical(tmp_path):
    from tests import reliability_worker as worker

    folder = save_three_block_llama(tmp_path / "model")
    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    script = str(REPO / "tests/reliability_worker.py")
    proc = subprocess.Popen([sys.executable, script, str(folder), str(killed), "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300  # generous: a loaded machine imports torch slowly
        while not block_file(killed, 0).exists():
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.time() < deadline, "the worker never finished block 0"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not block_file(killed, 2).exists()  # killed mid-run: the last block never committed
    committed = sum(block_file(killed, i).exists() for i in range(3))
    leftovers = [p.name for p in killed.iterdir() if p.name.endswith(".tmp")]
    resumed = subprocess.run([sys.executable, script, str(folder), str(killed)], env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at block {committed + 1}/3" in resumed.stderr
    assert f"fp_block_forwards={3 - committed}" in resumed.stdout  # finished blocks were not redone
    torch.set_num_threads(2)
    worker.run(str(folder), str(tmp_path / "straight"))  # uninterrupted, in this process
    assert_same_weights(run_weights(killed), run_weights(tmp_path / "straight"))
    assert not [p.name for p in killed.iterdir() if p.name.endswith(".tmp") and p.name not in leftovers]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_run_block_is_detected_and_recomputed(tmp_path, caplog):
    family = "gemma3"  # three blocks
    calib = tiny_calibration(family)
    method = MethodConfig(method="marr", bits=3, group_size=32)
    quantize_model(tiny_model(family), calib, method, out_dir=tmp_path / "run")
    reference = run_weights(tmp_path / "run")
    truncate(block_file(tmp_path / "run", 2))
    with pytest.raises(FileNotFoundError, match="block_002.safetensors is missing or unreadable"):
        load_run_states(tmp_path / "run")  # never silently used
    with caplog.at_level(logging.WARNING, logger="marr.engine.store"):
        rerun = quantize_model(tiny_model(family), calib, method, out_dir=tmp_path / "run")
    assert "block_002.safetensors is unreadable" in caplog.text
    assert rerun.counters["fp_block_forwards"] == 1  # only the corrupted block was recomputed
    assert_same_weights(run_weights(tmp_path / "run"), reference)


@pytest.mark.parametrize("cache_activations", [False, True])
def test_truncated_fp_statistics_block_is_detected_and_recomputed(tmp_path, caplog, cache_activations):
    family = "llama"  # two blocks: block 1 is the last
    calib = tiny_calibration(family)
    method = MethodConfig(method="gptaq", bits=3, group_size=32)
    ids = dict(model_id="tiny", calibration_hash="abc")
    stats = tmp_path / "fp"
    compute_fp_statistics(tiny_model(family), calib, stats, cache_activations=cache_activations,
                          activation_dtype="float32", **ids)
    reference = tiny_model(family)
    quantize_model(reference, calib, method, fp_cache=stats, **ids)
    truncate(block_file(stats, 1))
    model = tiny_model(family)
    with caplog.at_level(logging.WARNING, logger="marr.engine.store"):
        if cache_activations:  # the FP stream lives only in the cache: refuse, name the block
            with pytest.raises(RuntimeError, match="block 1: the FP statistics cache has no usable entry"):
                quantize_model(model, calib, method, fp_cache=stats, **ids)
        else:  # the engine recomputes the block's FP statistics itself
            run = quantize_model(model, calib, method, fp_cache=stats, **ids)
            assert run.counters["fp_block_forwards"] == 2
            for key, value in reference.state_dict().items():
                assert torch.equal(value, model.state_dict()[key]), key
    assert "block_001.safetensors is unreadable" in caplog.text
    # rerunning the hessians step rewrites the corrupted block (today it redoes every block of a
    # finished cache: its manifest check also compares the recorded wall time)
    compute_fp_statistics(tiny_model(family), calib, stats, cache_activations=cache_activations,
                          activation_dtype="float32", **ids)
    assert FpStatsCache(stats).block(1) is not None
    model = tiny_model(family)
    quantize_model(model, calib, method, fp_cache=stats, **ids)
    for key, value in reference.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_flipped_byte_in_a_block_file_is_detected(tmp_path):
    """safetensors has no checksum; block files carry a SHA-256 of their tensors."""
    from marr.engine.store import read_block, write_block

    path = tmp_path / "block_000.safetensors"
    write_block(path, {"a": torch.arange(1000, dtype=torch.float32)})
    assert read_block(path) is not None
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the tensor payload
    path.write_bytes(bytes(data))
    assert read_block(path) is None
