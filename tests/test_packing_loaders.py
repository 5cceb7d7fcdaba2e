"""Real-loader round trips: transformers + optimum + gptqmodel (GPTQ), transformers and the
compressed-tensors API (pack-quantized). Skipped when the loaders are not installed.

The loaded GPTQ model computes in float16 (gptqmodel's torch kernel), so its logits are compared
with the fake-quantized float32 model within a float16 tolerance; a v2 checkpoint relabelled v1
(zero points off by one) must fail that same comparison.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from tests.packing_fixtures import PROVENANCE, quantize_model, tiny_llama, tiny_vit, tokens

from marr.grid import QuantSpec
from marr.packing import ManifestError, load_tensors, pack_compressed_tensors, pack_gptq, verify_manifest

os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
transformers = pytest.importorskip("transformers")


def _tolerance(reference: torch.Tensor) -> float:
    """Float16 tolerance for logits: a few fp16 ulps of the largest logit, accumulated over 2 blocks."""
    return 1e-2 * float(reference.abs().max()) + 1e-3


def _logits(model, x):
    with torch.no_grad():
        return model(x).logits.float()


@pytest.fixture(scope="module")
def gptq_loader():
    pytest.importorskip("optimum")
    pytest.importorskip("gptqmodel")
    from transformers import AutoModelForCausalLM, GPTQConfig

    def load(path, bits):
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float16, device_map="cpu", quantization_config=GPTQConfig(bits=bits, backend="torch")
        )

    return load


GPTQ_CASES = [
    # bits, group, sym, act-order, format, hidden
    (4, 32, False, False, "gptq_v2", 64),
    (3, 32, False, True, "gptq_v2", 64),
    (2, None, True, False, "gptq", 64),
    (3, 32, True, True, "gptq", 64),
    (8, 32, False, False, "gptq_v2", 64),
    (3, 128, False, False, "gptq_v2", 192),  # 192 columns in groups of 128: last group 64 (SmolLM2: 576)
]


@pytest.mark.parametrize("bits,group,sym,act_order,fmt,hidden", GPTQ_CASES)
def test_gptq_loads_in_transformers(tmp_path, gptq_loader, bits, group, sym, act_order, fmt, hidden):
    model = tiny_llama(hidden=hidden, intermediate=2 * hidden)
    states = quantize_model(model, QuantSpec(bits=bits, group_size=group, sym=sym), act_order=act_order)
    path = pack_gptq(model, states, tmp_path / "ckpt", provenance=PROVENANCE, checkpoint_format=fmt)
    loaded = gptq_loader(path, bits)
    q_proj = loaded.model.layers[0].self_attn.q_proj
    assert type(q_proj).__module__.startswith("gptqmodel"), type(q_proj)
    x = tokens()
    reference = _logits(model, x)
    assert (_logits(loaded, x) - reference).abs().max() < _tolerance(reference)


def test_v2_mislabelled_v1_is_caught(tmp_path, gptq_loader):
    """Negative control: the same tensors read as v1 shift every zero point by one."""
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=4, group_size=32, sym=False))
    path = pack_gptq(model, states, tmp_path / "ckpt", provenance=PROVENANCE, checkpoint_format="gptq_v2")
    x = tokens()
    reference = _logits(model, x)
    good = (_logits(gptq_loader(path, 4), x) - reference).abs().max()
    for name in ("config.json", "quantize_config.json"):
        payload = json.loads((path / name).read_text())
        config = payload.get("quantization_config", payload)
        config["checkpoint_format"] = config["format"] = "gptq"
        (path / name).write_text(json.dumps(payload))
    with pytest.raises(ManifestError, match="config.json"):
        verify_manifest(path)
    bad = (_logits(gptq_loader(path, 4), x) - reference).abs().max()
    assert good < _tolerance(reference) < bad
    assert bad > 10 * good


@pytest.fixture(scope="module")
def compressed_loader():
    pytest.importorskip("compressed_tensors")
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    def load(path, dequantize):
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.float32, device_map="cpu", quantization_config=CompressedTensorsConfig(dequantize=dequantize)
        )

    return load


CT_CASES = [
    # bits, group, sym, scale dtype, dequantize at load, hidden
    (4, 32, True, torch.float16, False, 64),
    (3, 32, True, torch.float32, False, 64),
    (4, 32, False, torch.float32, True, 64),  # asymmetric: transformers needs dequantize=True
    (2, None, False, torch.float32, True, 64),
    (8, None, True, torch.float16, True, 64),
    (3, 128, False, torch.float32, True, 192),  # non-dividing group: stored as gcd(128, 192, 384) = 64
    (3, 128, False, torch.float16, True, 192),
]


@pytest.mark.parametrize("bits,group,sym,scale_dtype,dequantize,hidden", CT_CASES)
def test_compressed_tensors_loads_in_transformers(tmp_path, compressed_loader, bits, group, sym, scale_dtype, dequantize, hidden):
    model = tiny_llama(hidden=hidden, intermediate=2 * hidden)
    states = quantize_model(model, QuantSpec(bits=bits, group_size=group, sym=sym))
    path = pack_compressed_tensors(model, states, tmp_path / "ckpt", provenance=PROVENANCE, scale_dtype=scale_dtype)
    loaded = compressed_loader(path, dequantize)
    x = tokens()
    reference = _logits(model, x)
    out = _logits(loaded, x)  # a compressed (dequantize=False) model decompresses on its first forward
    for name, result in states.items():
        weight = loaded.get_submodule(name).weight
        if scale_dtype == torch.float32 or not dequantize:
            assert torch.equal(weight, result.weight), name  # float32 scales: exact
        else:
            assert torch.allclose(weight, result.weight, rtol=1e-3, atol=0), name  # dequantized in float16
    if scale_dtype == torch.float32 or not dequantize:
        assert torch.equal(out, reference)
    else:
        assert (out - reference).abs().max() < _tolerance(reference)


@pytest.mark.parametrize("sym", [True, False])
def test_timm_vit_through_compressed_tensors_api(tmp_path, sym):
    """A timm ViT checkpoint decompressed module by module with compressed-tensors' own compressor."""
    pytest.importorskip("timm")
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig

    model, args = tiny_vit()
    states = quantize_model(model, QuantSpec(bits=3, group_size=32, sym=sym))
    path = pack_compressed_tensors(model, states, tmp_path / "vit", provenance=PROVENANCE, model_args=args, scale_dtype=torch.float32)
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    qconfig = QuantizationConfig.model_validate({k: v for k, v in config.items() if k not in ("quant_method", "version", "sparsity_config", "transform_config")})
    scheme = qconfig.config_groups["group_0"]
    compressor = BaseCompressor.get_value_from_registry(qconfig.format)
    tensors = load_tensors(path)
    fresh, _ = tiny_vit(seed=7)
    dense = {}
    for key, value in tensors.items():
        module, _, leaf = key.rpartition(".")
        if module in states and leaf.startswith("weight_"):
            dense.setdefault(module, {})[leaf] = value
        else:
            dense[key] = value
    for name in states:
        dense[f"{name}.weight"] = compressor.decompress(dense.pop(name), scheme)["weight"]
        assert torch.equal(dense[f"{name}.weight"], states[name].weight), name
    fresh.load_state_dict(dense, strict=True)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(fresh(images), model(images))
