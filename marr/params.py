"""Validation of a whole params.yaml before any stage does work.

``validate_params`` parses every section into its typed form (``MethodConfig`` for every entry of
``configs``, ``EngineConfig`` for ``engine``) and checks the model entries and the run lists, so a
bad value anywhere fails at the start of the first stage with a ``ConfigError`` that names the key
path, the value and what is allowed. Checks that need the loaded model (calibration windows longer
than its context, an architecture no adapter supports) are in ``check_loaded_model``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from marr.engine.config import ConfigError, EngineConfig, MethodConfig

KEY_PATTERN = re.compile(r"^[a-z0-9_-]+$")
SECTIONS = ("llm_models", "vit_models", "llm_configs", "vit_configs", "models", "configs", "engine", "hessians",
            "pack")
MODEL_KEYS = {"llm": ("source", "kind", "calibration", "eval"), "vit": ("source", "kind", "img_size", "calibration", "eval")}
CALIBRATION_KEYS = {"llm": ("text", "windows", "length", "seed"), "vit": ("images", "images_n", "seed")}
EVAL_KEYS = {"llm": ("text", "window_len", "max_windows", "batch_size", "lm_eval", "lm_eval_docs"),
             "vit": ("probe_train", "probe_test")}
ACTIVATION_DTYPES = ("float16", "bfloat16", "float32")
LLM_FORMATS = ("gptq", "gptq_v2")
SOURCE_FORMS = ("an embedded name ({embedded}), hf:<hub id or folder>, timm:<arch>[@<checkpoint file>], "
                "tiny:<{families}>, or a local folder")


def fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r}: {allowed}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(key: str, value: Any) -> None:
    if not (_is_int(value) and value >= 1):
        fail(key, value, "must be a positive integer")


def _mapping(key: str, value: Any, allowed_keys: tuple[str, ...] | None = None, *, optional: bool = True) -> dict:
    if value is None and optional:
        return {}
    if not isinstance(value, Mapping):
        fail(key, value, "must be a mapping")
    if allowed_keys is not None:
        unknown = sorted((k for k in value if k not in allowed_keys), key=str)
        if unknown:
            raise ConfigError(f"{key}.{unknown[0]}: unknown key; allowed keys are {', '.join(allowed_keys)}")
    return dict(value)


def _key_name(section: str, name: Any) -> str:
    if not isinstance(name, str) or not KEY_PATTERN.match(name):
        raise ConfigError(f"{section}.{name!r}: keys must be strings matching [a-z0-9_-]+ "
                          "(a dot or space breaks DVC params paths)")
    return name


# ---------------------------------------------------------------------------- the whole file
def validate_params(params: Any) -> None:
    """Raise ``ConfigError`` for the first bad value of a params.yaml mapping (see module docstring)."""
    if not isinstance(params, Mapping):
        fail("params.yaml", params, "must be a mapping of sections")
    unknown = sorted((k for k in params if k not in SECTIONS), key=str)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section; allowed sections are {', '.join(SECTIONS)}")
    models = _mapping("models", params.get("models"))
    configs = _mapping("configs", params.get("configs"))
    for name, entry in models.items():
        validate_model(_key_name("models", name), entry)
    for name, entry in configs.items():
        MethodConfig.from_dict(entry if entry is not None else {}, where=f"configs.{_key_name('configs', name)}")
    EngineConfig.from_dict(params.get("engine"), where="engine")
    _validate_hessians(params.get("hessians"))
    _validate_pack(params.get("pack"))
    for kind in ("llm", "vit"):
        for i, name in enumerate(_name_list(f"{kind}_models", params.get(f"{kind}_models"))):
            key = f"{kind}_models[{i}]"
            if name not in models:
                fail(key, name, f"not a key of models; defined: {', '.join(sorted(models)) or 'none'}")
            if models[name]["kind"] != kind:
                fail(key, name, f"models.{name}.kind is {models[name]['kind']!r}; list it under "
                                f"{models[name]['kind']}_models")
        for i, name in enumerate(_name_list(f"{kind}_configs", params.get(f"{kind}_configs"))):
            if name not in configs:
                fail(f"{kind}_configs[{i}]", name, f"not a key of configs; defined: {', '.join(sorted(configs)) or 'none'}")


def _name_list(key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        fail(key, value, "must be a list of names")
    return value


def _validate_hessians(value: Any) -> None:
    hp = _mapping("hessians", value, ("cache_activations", "activation_dtype"))
    if "cache_activations" in hp and not isinstance(hp["cache_activations"], bool):
        fail("hessians.cache_activations", hp["cache_activations"], "must be true or false")
    if "activation_dtype" in hp and hp["activation_dtype"] not in ACTIVATION_DTYPES:
        fail("hessians.activation_dtype", hp["activation_dtype"], f"allowed values are {', '.join(ACTIVATION_DTYPES)}")


def _validate_pack(value: Any) -> None:
    pp = _mapping("pack", value, ("llm_format",))
    if "llm_format" in pp and pp["llm_format"] not in LLM_FORMATS:
        fail("pack.llm_format", pp["llm_format"], f"allowed values are {', '.join(LLM_FORMATS)}")


# ---------------------------------------------------------------------------------- models
def validate_model(name: str, entry: Any) -> None:
    """One entry of ``models``: kind, source, img_size, calibration and eval settings."""
    where = f"models.{name}"
    entry = _mapping(where, entry, optional=False)
    kind = entry.get("kind")
    if kind not in ("llm", "vit"):
        fail(f"{where}.kind", kind, "allowed values are llm, vit")
    _mapping(where, entry, MODEL_KEYS[kind])
    if "source" not in entry:
        raise ConfigError(f"{where}.source: missing; use {source_forms()}")
    patch = validate_source(f"{where}.source", entry["source"], kind)
    if kind == "vit" and entry.get("img_size") is not None:
        size = entry["img_size"]
        if not (_is_int(size) and size >= 1 and (patch is None or size % patch == 0)):
            allowed = f"a positive multiple of the patch size {patch}" if patch else "a positive integer"
            fail(f"{where}.img_size", size, f"must be {allowed}")
    cp = _mapping(f"{where}.calibration", entry.get("calibration"), CALIBRATION_KEYS[kind])
    for key in ("windows", "length", "images_n"):
        if key in cp:
            _positive_int(f"{where}.calibration.{key}", cp[key])
    if "seed" in cp and not (_is_int(cp["seed"]) and cp["seed"] >= 0):
        fail(f"{where}.calibration.seed", cp["seed"], "must be an integer >= 0")
    for key in ("text", "images"):
        if key in cp and not isinstance(cp[key], (str, Mapping)):
            fail(f"{where}.calibration.{key}", cp[key], "must be a source name, a path or a mapping")
    ep = _mapping(f"{where}.eval", entry.get("eval"), EVAL_KEYS[kind])
    for key in ("window_len", "batch_size", "probe_train", "probe_test"):
        if key in ep:
            _positive_int(f"{where}.eval.{key}", ep[key])
    for key in ("max_windows", "lm_eval_docs"):
        if ep.get(key) is not None:
            _positive_int(f"{where}.eval.{key}", ep[key])
    if "lm_eval" in ep and not isinstance(ep["lm_eval"], bool):
        fail(f"{where}.eval.lm_eval", ep["lm_eval"], "must be true or false")
    if "text" in ep and not isinstance(ep["text"], (str, Mapping)):
        fail(f"{where}.eval.text", ep["text"], "must be a source name, a path or a mapping")


def source_forms() -> str:
    from marr.sources.specs import DEFAULT_MODELS
    from marr.testing import FAMILIES

    return SOURCE_FORMS.format(embedded=", ".join(sorted(DEFAULT_MODELS)), families="|".join(FAMILIES))


def _patch_size(arch: str | None) -> int | None:
    found = re.search(r"patch(\d+)", arch or "")
    return int(found.group(1)) if found else None


def _looks_like_path(value: str) -> bool:
    return value.startswith((".", "/", "~"))


def validate_source(key: str, source: Any, kind: str) -> int | None:
    """Check a model source; return the ViT patch size when the source tells it (else None)."""
    from marr.sources.specs import DEFAULT_MODELS
    from marr.testing import FAMILIES

    if not isinstance(source, str) or not source.strip():
        fail(key, source, f"must be {source_forms()}")
    if source in DEFAULT_MODELS:
        spec = DEFAULT_MODELS[source]
        if spec.kind != kind:
            fail(key, source, f"is a {spec.kind} model but kind is {kind}")
        return _patch_size(spec.timm_name)
    prefix, sep, rest = source.partition(":")
    if prefix == "tiny" and sep:
        if rest not in FAMILIES:
            fail(key, source, f"tiny models are tiny:<{'|'.join(FAMILIES)}>")
        if (rest == "vit") != (kind == "vit"):
            fail(key, source, f"a tiny:{rest} model does not match kind {kind}")
        return 14 if rest == "vit" else None
    if prefix == "timm" and sep:
        if kind != "vit":
            fail(key, source, "timm sources are vision models: kind must be vit")
        arch, at, checkpoint = rest.partition("@")
        if not arch:
            fail(key, source, "needs an architecture, timm:<arch>[@<checkpoint file>]")
        if at and not Path(checkpoint).expanduser().is_file():
            fail(key, source, f"the checkpoint file {checkpoint!r} does not exist")
        return _patch_size(arch)
    is_hf = prefix == "hf" and bool(sep)
    target = rest if is_hf else source
    if not target:
        fail(key, source, "hf: needs a hub id or a local folder")
    if _looks_like_path(target):
        if not Path(target).expanduser().is_dir():
            fail(key, source, f"the local folder {target!r} does not exist")
        return _folder_patch_size(Path(target).expanduser())
    if Path(target).is_dir():
        return _folder_patch_size(Path(target))
    if is_hf or "/" in target:
        return None  # a hub id: checked when the assets stage fetches it
    fail(key, source, f"unknown source; use {source_forms()}")


def _folder_patch_size(folder: Path) -> int | None:
    """Patch size of a marr timm folder (config.json with patch_size), else None."""
    import json

    config = folder / "config.json"
    try:
        value = json.loads(config.read_text()).get("patch_size") if config.is_file() else None
    except (OSError, ValueError):
        return None
    return value if _is_int(value) else None


# ---------------------------------------------------------------------------- loaded model
def check_loaded_model(name: str, entry: Mapping[str, Any], model: Any) -> None:
    """Checks that need the model itself: a supported architecture, calibration windows that fit."""
    from marr.adapters import adapter_for

    try:
        adapter_for(model)
    except NotImplementedError as exc:
        raise ConfigError(f"models.{name}.source={entry.get('source')!r}: {exc}") from None
    config = getattr(model, "config", None)
    context = getattr(config, "max_position_embeddings", None)
    length = (entry.get("calibration") or {}).get("length")
    if entry.get("kind") == "llm" and _is_int(context) and length is not None and length > context:
        fail(f"models.{name}.calibration.length", length,
             f"longer than the model's context (max_position_embeddings={context}); use at most {context}")


def check_image_size(name: str, img_size: Any, patch_size: int) -> None:
    """An image size the ViT cannot take (not a positive multiple of its patch size)."""
    if not (_is_int(img_size) and img_size >= 1 and img_size % patch_size == 0):
        fail(f"models.{name}.img_size", img_size, f"must be a positive multiple of the model's patch size {patch_size}")


__all__ = ["check_image_size", "check_loaded_model", "validate_model", "validate_params", "validate_source"]
