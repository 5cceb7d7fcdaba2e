"""Packing: bit streams, GPTQ and compressed-tensors round trips, provenance, manifest, atomicity."""

from __future__ import annotations

import json
import os

import pytest
import torch
from tests.packing_fixtures import PROVENANCE, quantize_model, tiny_llama, tiny_vit, tokens
from safetensors import safe_open

from marr.grid import QuantSpec
from marr.packing import (
    ManifestError,
    load_gptq_weights,
    load_tensors,
    pack_bits,
    pack_compressed_tensors,
    pack_gptq,
    packed_length,
    read_provenance,
    unpack,
    unpack_bits,
    verify_manifest,
)
from marr.result import rtn_quantize

BITS = (2, 3, 4, 8)
GROUPS = (None, 32)


# ---------------------------------------------------------------- bit streams


def _reference_stream(values: list[int], bits: int) -> list[int]:
    """Pack by building one big Python integer: value i at bit i*bits, words of 32 bits, low first."""
    stream = sum(v << (i * bits) for i, v in enumerate(values))
    words = []
    for k in range(packed_length(len(values), bits)):
        word = (stream >> (32 * k)) & 0xFFFFFFFF
        words.append(word - (1 << 32) if word >= 1 << 31 else word)
    return words


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("n", [32, 64, 96, 7, 45])
def test_pack_bits_matches_reference_stream_and_round_trips(bits, n):
    gen = torch.Generator().manual_seed(bits * 100 + n)
    values = torch.randint(0, 2**bits, (n, 3), generator=gen)
    packed = pack_bits(values, bits, dim=0)
    assert packed.dtype == torch.int32 and packed.shape == (packed_length(n, bits), 3)
    for col in range(3):
        assert packed[:, col].tolist() == _reference_stream(values[:, col].tolist(), bits)
    assert torch.equal(unpack_bits(packed, bits, n, dim=0).long(), values)
    packed1 = pack_bits(values.T, bits, dim=1)
    assert torch.equal(packed1, packed.T)
    assert torch.equal(unpack_bits(packed1, bits, n, dim=1).long(), values.T)


def test_three_bit_words_straddle():
    # 32 values of 3 bits fill exactly 3 words; value 10 spans words 0 and 1 (bits 30..32)
    values = torch.zeros(32, 1, dtype=torch.int64)
    values[10] = 0b111
    packed = pack_bits(values, 3)
    assert packed[:, 0].tolist() == [-(1 << 31) + (1 << 30), 1, 0]


def test_pack_bits_matches_compressed_tensors():
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    gen = torch.Generator().manual_seed(0)
    for bits in (2, 3, 4, 5, 8):
        codes = torch.randint(0, 2**bits, (8, 96), generator=gen)
        signed = (codes - 2 ** (bits - 1)).to(torch.int8)
        assert torch.equal(helpers.pack_to_int32(signed, bits, packed_dim=1), pack_bits(codes, bits, dim=1))
        assert torch.equal(helpers.pack_to_int32(signed, bits, packed_dim=0), pack_bits(codes, bits, dim=0))


def test_pack_bits_rejects_bad_input():
    with pytest.raises(ValueError, match="out of range"):
        pack_bits(torch.tensor([[4]]), 2)
    with pytest.raises(ValueError, match="bits"):
        pack_bits(torch.tensor([[1]]), 9)
    with pytest.raises(TypeError):
        pack_bits(torch.tensor([[1.0]]), 4)
    with pytest.raises(ValueError, match="words"):
        unpack_bits(torch.zeros(2, 1, dtype=torch.int32), 4, 32)


# ---------------------------------------------------------------- round trips


def _assert_same_result(a, b):
    assert torch.equal(a.weight, b.weight)
    assert torch.equal(a.codes, b.codes) and a.codes.dtype == b.codes.dtype == torch.uint8
    assert torch.equal(a.scales, b.scales) and torch.equal(a.zeros, b.zeros)
    assert torch.equal(a.g_idx.to(torch.int32), b.g_idx)
    assert (a.perm is None) == (b.perm is None)
    if a.perm is not None:
        assert torch.equal(a.perm.long(), b.perm)
    assert a.spec.bits == b.spec.bits and a.spec.group_size == b.spec.group_size and a.spec.sym == b.spec.sym


def _assert_same_model(original, loaded, *, same_logits: bool = True):
    sd_a, sd_b = original.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys()
    for key in sd_a:
        assert sd_a[key].dtype == sd_b[key].dtype, key
        assert torch.equal(sd_a[key], sd_b[key]), key
    if same_logits:
        x = tokens()
        with torch.no_grad():
            assert torch.equal(original(x).logits, loaded(x).logits)


def _pack(fmt, model, states, path, **kw):
    if fmt == "compressed":
        return pack_compressed_tensors(model, states, path, provenance=PROVENANCE, scale_dtype=torch.float16, **kw)
    return pack_gptq(model, states, path, provenance=PROVENANCE, checkpoint_format=fmt, **kw)


@pytest.mark.parametrize("act_order", [False, True], ids=["natural", "act-order"])
@pytest.mark.parametrize("sym", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("group_size", GROUPS, ids=["per-channel", "g32"])
@pytest.mark.parametrize("bits", BITS)
def test_round_trip_is_bit_identical(tmp_path, bits, group_size, sym, act_order):
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=bits, group_size=group_size, sym=sym), act_order=act_order)
    permuted_groups = act_order and group_size is not None
    for fmt in ("gptq_v2", "gptq", "compressed"):
        if fmt == "gptq" and any(int(r.zeros.min()) == 0 for r in states.values()):
            with pytest.raises(ValueError, match="gptq_v2"):
                _pack(fmt, model, states, tmp_path / fmt)
            continue
        if fmt == "compressed" and permuted_groups:
            with pytest.raises(ValueError, match="g_idx"):
                _pack(fmt, model, states, tmp_path / fmt)
            continue
        path = _pack(fmt, model, states, tmp_path / fmt)
        verify_manifest(path)
        loaded, loaded_states = unpack(path)
        assert loaded_states.keys() == states.keys()
        for name in states:
            _assert_same_result(states[name], loaded_states[name])
            assert loaded_states[name].info["alpha"] == states[name].info["alpha"]
        _assert_same_model(model, loaded)


def test_gptq_tensor_layout(tmp_path):
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=3, group_size=32, sym=False), act_order=True)
    path = pack_gptq(model, states, tmp_path / "ckpt", provenance=PROVENANCE, checkpoint_format="gptq_v2")
    tensors = load_tensors(path)
    name = "model.layers.0.mlp.down_proj"  # 64 × 128
    assert tensors[f"{name}.qweight"].shape == (128 * 3 // 32, 64) and tensors[f"{name}.qweight"].dtype == torch.int32
    assert tensors[f"{name}.qzeros"].shape == (4, 64 * 3 // 32)
    assert tensors[f"{name}.scales"].shape == (4, 64) and tensors[f"{name}.scales"].dtype == torch.float16
    assert torch.equal(tensors[f"{name}.g_idx"], states[name].g_idx)
    assert f"{name}.weight" not in tensors and "lm_head.weight" not in tensors  # tied to the embeddings
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    assert config == json.loads((path / "quantize_config.json").read_text())
    assert config["quant_method"] == "gptq" and config["bits"] == 3 and config["group_size"] == 32
    assert config["desc_act"] is True and config["sym"] is False
    assert config["checkpoint_format"] == config["format"] == "gptq_v2"


def test_gptq_v1_stores_zero_minus_one(tmp_path):
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=4, group_size=32, sym=True))
    v1 = load_tensors(pack_gptq(model, states, tmp_path / "v1", provenance=PROVENANCE, checkpoint_format="gptq"))
    v2 = load_tensors(pack_gptq(model, states, tmp_path / "v2", provenance=PROVENANCE, checkpoint_format="gptq_v2"))
    name = "model.layers.1.self_attn.q_proj"
    assert torch.all(unpack_bits(v2[f"{name}.qzeros"], 4, 64, dim=1) == 8)
    assert torch.all(unpack_bits(v1[f"{name}.qzeros"], 4, 64, dim=1) == 7)
    assert torch.equal(v1[f"{name}.qweight"], v2[f"{name}.qweight"])


def test_non_dividing_group_size(tmp_path):
    """d_in = 96 with g64: the last group has 32 columns (gptqmodel's policy, as in 576 with g128)."""
    model = tiny_llama(hidden=96, intermediate=256)
    spec = QuantSpec(bits=4, group_size=64, sym=False)
    states = quantize_model(model, spec)
    q_proj = states["model.layers.0.self_attn.q_proj"]
    assert q_proj.scales.shape == (2, 96) and q_proj.g_idx.tolist() == [0] * 64 + [1] * 32
    gptq = pack_gptq(model, states, tmp_path / "gptq", provenance=PROVENANCE)
    assert load_tensors(gptq)["model.layers.0.self_attn.q_proj.scales"].shape == (2, 96)
    ct = pack_compressed_tensors(model, states, tmp_path / "ct", provenance=PROVENANCE)
    config = json.loads((ct / "config.json").read_text())["quantization_config"]
    assert config["config_groups"]["group_0"]["weights"]["group_size"] == 32  # gcd(64, 96, 256)
    assert load_tensors(ct)["model.layers.0.self_attn.q_proj.weight_scale"].shape == (96, 3)
    assert read_provenance(ct)["stored_group_size"] == 32
    for path in (gptq, ct):
        loaded, loaded_states = unpack(path)
        for name in states:
            _assert_same_result(states[name], loaded_states[name])
        _assert_same_model(model, loaded)


def test_gptq_refuses_dimensions_loaders_cannot_unpack(tmp_path):
    model = tiny_llama(hidden=96, intermediate=192)  # k_proj/v_proj: 48 outputs
    states = quantize_model(model, QuantSpec(bits=3, group_size=32, sym=True))
    with pytest.raises(ValueError, match=r"k_proj: 48 × 96 at 3 bits.*multiples of 32"):
        pack_gptq(model, states, tmp_path / "ckpt", provenance=PROVENANCE)
    unpack(pack_compressed_tensors(model, states, tmp_path / "ct", provenance=PROVENANCE))


def test_compressed_tensors_layout(tmp_path):
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=4, group_size=32, sym=False))
    path = pack_compressed_tensors(model, states, tmp_path / "ct", provenance=PROVENANCE, scale_dtype=torch.float32)
    tensors = load_tensors(path)
    name = "model.layers.0.mlp.gate_proj"  # 128 × 64
    assert tensors[f"{name}.weight_packed"].shape == (128, 64 * 4 // 32)
    assert tensors[f"{name}.weight_scale"].shape == (128, 2) and tensors[f"{name}.weight_scale"].dtype == torch.float32
    assert tensors[f"{name}.weight_zero_point"].shape == (128 * 4 // 32, 2)
    assert tensors[f"{name}.weight_shape"].tolist() == [128, 64]
    config = json.loads((path / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors" and config["format"] == "pack-quantized"
    assert config["ignore"] == ["lm_head"]
    weights = config["config_groups"]["group_0"]["weights"]
    assert (weights["num_bits"], weights["strategy"], weights["group_size"], weights["symmetric"]) == (4, "group", 32, False)
    loaded, loaded_states = unpack(path)
    _assert_same_model(model, loaded)


def test_compressed_tensors_symmetric_stores_no_zero_point(tmp_path):
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=4, group_size=None, sym=True))
    tensors = load_tensors(pack_compressed_tensors(model, states, tmp_path / "ct", provenance=PROVENANCE))
    assert not any(key.endswith("weight_zero_point") for key in tensors)
    assert tensors["model.layers.0.self_attn.o_proj.weight_scale"].shape == (64, 1)


def test_timm_vit_round_trip(tmp_path):
    pytest.importorskip("timm")
    model, args = tiny_vit()
    states = quantize_model(model, QuantSpec(bits=3, group_size=32, sym=False))
    assert set(states) == {f"blocks.{i}.{m}" for i in range(2) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    path = pack_compressed_tensors(model, states, tmp_path / "vit", provenance=PROVENANCE, model_args=args)
    config = json.loads((path / "config.json").read_text())
    assert config["library"] == "timm" and config["quantization_config"]["ignore"] == ["head"]
    loaded, loaded_states = unpack(path)
    for name in states:
        _assert_same_result(states[name], loaded_states[name])
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))
    with pytest.raises(TypeError, match="transformers"):
        pack_gptq(model, states, tmp_path / "vit-gptq", provenance=PROVENANCE)


def test_unpack_into_given_skeleton(tmp_path):
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=4, group_size=32, sym=True))
    path = pack_gptq(model, states, tmp_path / "ckpt", provenance=PROVENANCE)
    loaded, _ = unpack(path, model=tiny_llama(seed=5))
    _assert_same_model(model, loaded)


def test_untied_head_and_bias_and_dtype(tmp_path):
    model = tiny_llama(tie=False).to(torch.bfloat16)
    states = quantize_model(model, QuantSpec(bits=4, group_size=32, sym=False))
    path = pack_gptq(model, states, tmp_path / "bf16", provenance=PROVENANCE)
    assert "lm_head.weight" in load_tensors(path)
    assert read_provenance(path)["modules"]["model.layers.0.mlp.up_proj"]["weight_dtype"] == "bfloat16"
    loaded, loaded_states = unpack(path)
    # every stored tensor is identical; logits differ only through the rotary buffer, which
    # model.to(bfloat16) rounded in memory and the rebuilt model keeps in float32
    _assert_same_model(model, loaded, same_logits=False)
    # fp16 storage of the dense tensors: quantized weights stay exact
    small = pack_gptq(model, states, tmp_path / "fp16", provenance=PROVENANCE, dtype=torch.float16)
    assert load_tensors(small)["model.embed_tokens.weight"].dtype == torch.float16
    _, states16 = unpack(small)
    for name in states:
        assert torch.equal(states16[name].weight, states[name].weight)


# ---------------------------------------------------------------- sharding, provenance, manifest


def test_sharded_checkpoint(tmp_path):
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=4, group_size=32, sym=False))
    path = pack_gptq(model, states, tmp_path / "sharded", provenance=PROVENANCE, max_shard_size="20KB")
    shards = sorted(p.name for p in path.glob("model-*.safetensors"))
    assert len(shards) > 2 and not (path / "model.safetensors").exists()
    index = json.loads((path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    loaded, _ = unpack(path)
    _assert_same_model(model, loaded)


def test_provenance_recorded(tmp_path):
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=3, group_size=32, sym=False))
    alphas = {name: 0.1 * i for i, name in enumerate(sorted(states))}
    provenance = {"method": "marr", "calibration_hash": "abc123", "alpha": alphas, "params": {"tau": 1e-5}}
    path = pack_gptq(model, states, tmp_path / "ckpt", provenance=provenance)
    record = read_provenance(path)
    import marr

    assert record["marr_version"] == marr.__version__
    assert (record["method"], record["calibration_hash"]) == ("marr", "abc123")
    assert (record["bits"], record["group_size"], record["sym"]) == (3, 32, False)
    assert record["run"] == {"params": {"tau": 1e-5}}
    assert {name: entry["alpha"] for name, entry in record["modules"].items()} == alphas
    assert record["modules"]["model.layers.0.self_attn.q_proj"]["relative_error"] == 0.001
    import hashlib

    digest = hashlib.sha256((path / "marr_provenance.json").read_bytes()).hexdigest()
    with safe_open(path / "model.safetensors", "pt") as f:
        meta = f.metadata()
    assert meta["marr_provenance_sha256"] == digest and meta["marr_method"] == "marr"
    qmeta = json.loads((path / "quantize_config.json").read_text())["meta"]
    assert qmeta["marr_provenance_sha256"] == digest and qmeta["quantizer"] == [f"marr:{marr.__version__}"]
    with pytest.raises(ValueError, match="calibration_hash"):
        pack_gptq(model, states, tmp_path / "bad", provenance={"method": "marr"})
    with pytest.raises(ValueError, match="not quantized"):
        pack_gptq(model, states, tmp_path / "bad", provenance={**provenance, "alpha": {"nope": 1.0}})


def _packed(tmp_path):
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=4, group_size=32, sym=False))
    return pack_gptq(model, states, tmp_path / "ckpt", provenance=PROVENANCE, max_shard_size="40KB")


def test_manifest_lists_every_file(tmp_path):
    path = _packed(tmp_path)
    manifest = verify_manifest(path)
    on_disk = {p.name for p in path.iterdir()} - {"marr_manifest.json"}
    assert set(manifest["files"]) == on_disk


def test_manifest_detects_corruption(tmp_path):
    path = _packed(tmp_path)
    shard = sorted(path.glob("model-*.safetensors"))[1]
    data = bytearray(shard.read_bytes())
    data[-10] ^= 0x01
    shard.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match=shard.name) as err:
        verify_manifest(path)
    assert err.value.files == [shard.name] and "corrupted" in str(err.value)
    with pytest.raises(ManifestError, match=shard.name):
        unpack(path)


def test_manifest_detects_truncation_missing_and_extra(tmp_path):
    path = _packed(tmp_path)
    shard = sorted(path.glob("model-*.safetensors"))[0]
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size // 2)
    with pytest.raises(ManifestError, match=rf"{shard.name} \(truncated"):
        verify_manifest(path)
    os.remove(path / "marr_provenance.json")
    (path / "stray.bin").write_bytes(b"x")
    with pytest.raises(ManifestError) as err:
        verify_manifest(path)
    assert set(err.value.files) == {shard.name, "marr_provenance.json", "stray.bin"}
    assert "missing" in str(err.value) and "not in the manifest" in str(err.value)


def test_manifest_detects_relabelled_config(tmp_path):
    path = _packed(tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"]["checkpoint_format"] = "gptq"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ManifestError, match="config.json"):
        verify_manifest(path)


# ---------------------------------------------------------------- atomic writes and errors


def test_existing_output_and_overwrite(tmp_path):
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=4, group_size=32, sym=True))
    path = pack_gptq(model, states, tmp_path / "ckpt", provenance=PROVENANCE)
    with pytest.raises(FileExistsError):
        pack_gptq(model, states, path, provenance=PROVENANCE)
    pack_compressed_tensors(model, states, path, provenance=PROVENANCE, overwrite=True)
    assert read_provenance(path)["checkpoint_format"] == "compressed-tensors/pack-quantized"
    verify_manifest(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == 0o777 & ~umask  # not mkdtemp's private 0700
    assert all((f.stat().st_mode & 0o777) == 0o666 & ~umask for f in path.iterdir())


def test_failed_pack_leaves_nothing(tmp_path):
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=4, group_size=32, sym=True))
    with pytest.raises(FileNotFoundError, match="tokenizer"):
        pack_gptq(model, states, tmp_path / "ckpt", provenance=PROVENANCE, tokenizer=tmp_path / "no-such-dir")
    assert list(tmp_path.iterdir()) == []


def test_tokenizer_files_copied(tmp_path):
    source = tmp_path / "tok"
    source.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (source / name).write_text("{}")
    (source / "pytorch_model.bin").write_bytes(b"not a tokenizer file")
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=4, group_size=32, sym=True))
    path = pack_gptq(model, states, tmp_path / "ckpt", provenance=PROVENANCE, tokenizer=source)
    assert (path / "tokenizer.json").is_file() and (path / "special_tokens_map.json").is_file()
    assert not (path / "pytorch_model.bin").exists()
    assert "tokenizer.json" in verify_manifest(path)["files"]


def test_v1_refuses_zero_point_zero(tmp_path):
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=2, group_size=32, sym=False))
    name = "model.layers.0.self_attn.q_proj"
    module = model.get_submodule(name)
    with torch.no_grad():
        module.weight.abs_()  # all-positive rows: the asymmetric zero point is 0
    states[name] = rtn_quantize(module.weight, states[name].spec)
    with torch.no_grad():
        module.weight.copy_(states[name].weight)
    assert int(states[name].zeros.min()) == 0
    with pytest.raises(ValueError, match=rf"{name}.*gptq_v2"):
        pack_gptq(model, states, tmp_path / "v1", provenance=PROVENANCE, checkpoint_format="gptq")
    loaded, loaded_states = unpack(pack_gptq(model, states, tmp_path / "v2", provenance=PROVENANCE))
    _assert_same_result(states[name], loaded_states[name])


def test_inconsistent_inputs_are_refused(tmp_path):
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=4, group_size=32, sym=True))
    name = "model.layers.0.mlp.up_proj"
    with pytest.raises(ValueError, match="checkpoint_format"):
        pack_gptq(model, states, tmp_path / "a", provenance=PROVENANCE, checkpoint_format="gptq_v3")
    # model weight not the fake-quantized one
    with torch.no_grad():
        model.get_submodule(name).weight.add_(1.0)
    with pytest.raises(ValueError, match=f"{name}.*fake-quantized"):
        pack_gptq(model, states, tmp_path / "a", provenance=PROVENANCE)
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=4, group_size=32, sym=True))
    # mixed specs
    mixed = dict(states)
    mixed[name] = rtn_quantize(model.get_submodule(name).weight, QuantSpec(bits=3, group_size=32))
    with torch.no_grad():
        model.get_submodule(name).weight.copy_(mixed[name].weight)
    with pytest.raises(ValueError, match="modules differ"):
        pack_gptq(model, mixed, tmp_path / "a", provenance=PROVENANCE)
    # a block linear left unquantized
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=4, group_size=32, sym=True))
    partial = {k: v for k, v in states.items() if not k.endswith("down_proj")}
    with pytest.raises(ValueError, match="down_proj"):
        pack_gptq(model, partial, tmp_path / "a", provenance=PROVENANCE)
    untied = tiny_llama(tie=False)
    everything = quantize_model(untied, QuantSpec(bits=4, group_size=32, sym=True), select=lambda name: True)
    with pytest.raises(ValueError, match="lm_head"):
        pack_gptq(untied, everything, tmp_path / "a", provenance=PROVENANCE)
    path = pack_compressed_tensors(model, partial, tmp_path / "ct", provenance=PROVENANCE)  # allowed: ignore list
    assert "model.layers.0.mlp.down_proj" in json.loads((path / "config.json").read_text())["quantization_config"]["ignore"]
    _assert_same_model(model, unpack(path)[0])
    # scales that float16 cannot hold
    spec = QuantSpec(bits=4, group_size=32, sym=True, fp16_scales=False)
    model = tiny_llama()
    states = quantize_model(model, spec)
    with pytest.raises(ValueError, match="float16"):
        pack_gptq(model, states, tmp_path / "a", provenance=PROVENANCE)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("fmt", ["gptq", "gptq_v2"])
def test_load_gptq_weights_reads_a_foreign_checkpoint(tmp_path, fmt):
    """A GPTQ folder stripped of marr's provenance and manifest (what GPTQModel writes) still
    dequantizes to exactly the packed weights; the non-quantized tensors are left alone."""
    model = tiny_llama()
    states = quantize_model(model, QuantSpec(bits=3, group_size=32, sym=False))
    path = pack_gptq(model, states, tmp_path / "ckpt", provenance=PROVENANCE, checkpoint_format=fmt)
    for extra in path.iterdir():
        if extra.suffix == ".json" and extra.name not in ("quantize_config.json", "config.json"):
            extra.unlink()
    fresh = tiny_llama()
    embed = fresh.model.embed_tokens.weight.clone()
    loaded = load_gptq_weights(fresh, path)
    assert loaded.keys() == states.keys()
    for name, state in states.items():
        assert torch.equal(fresh.get_submodule(name).weight, state.weight), name
    assert torch.equal(fresh.model.embed_tokens.weight, embed)
    with pytest.raises(ValueError, match="no GPTQ tensors"):
        load_gptq_weights(torch.nn.Sequential(torch.nn.Linear(4, 4)), path)
