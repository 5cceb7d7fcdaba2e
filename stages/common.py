"""What every stage shares: params.yaml access, artifact paths, model loading from the assets folder.

Paths are relative to the working directory (the repository root under ``dvc repro``).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path
from typing import Any

import yaml

from marr.engine.config import ConfigError

PARAMS_FILE = Path("params.yaml")
KEY_PATTERN = re.compile(r"^[a-z0-9_-]+$")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s | %(message)s")
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def read_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml, validated as a whole (marr.params) before any stage does work."""
    from marr.params import validate_params

    if not path.exists():
        raise ConfigError(f"{path}: params file not found (run from the repository root)")
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: must be a mapping of sections, got {type(params).__name__}")
    validate_params(params)
    return params


def section(params: dict, key: str, name: str) -> dict[str, Any]:
    """params[key][name] with an error that lists the available names."""
    table = params.get(key)
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: missing or not a mapping in params.yaml")
    if name not in table:
        raise ConfigError(f"{key}.{name}: not defined; defined {key}: {', '.join(sorted(table)) or 'none'}")
    if not KEY_PATTERN.match(name):
        raise ConfigError(f"{key}.{name}: keys must match [a-z0-9_-]+ (a dot breaks DVC params paths)")
    value = table[name]
    if not isinstance(value, dict):
        raise ConfigError(f"{key}.{name}: must be a mapping, got {value!r}")
    return value


def model_params(params: dict, model: str) -> dict[str, Any]:
    mp = section(params, "models", model)
    kind = mp.get("kind")
    if kind not in ("llm", "vit"):
        raise ConfigError(f"models.{model}.kind={kind!r}: allowed values are llm, vit")
    if "source" not in mp:
        raise ConfigError(f"models.{model}.source: missing (an embedded name, hf:<id|folder>, timm:<arch>@<file>, tiny:<family>)")
    return mp


def parser(description: str, config: bool = False) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--model", required=True, help="a key of params.yaml models")
    if config:
        p.add_argument("--config", required=True, help="a key of params.yaml configs")
    return p


# ------------------------------------------------------------------ artifact paths
def model_dir(model: str) -> Path:
    return Path("data/models") / model


def calibration_dir(model: str) -> Path:
    return Path("data/calibration") / model


def hessians_dir(model: str) -> Path:
    return Path("data/hessians") / model


def run_dir(model: str, config: str) -> Path:
    return Path("data/quant") / model / config


def packed_dir(model: str, config: str) -> Path:
    return Path("data/packed") / model / config


def metrics_file(model: str, config: str) -> Path:
    return Path("metrics") / model / f"{config}.json"


def probe_file(model: str) -> Path:
    return Path("data/probe") / f"{model}.safetensors"


# ------------------------------------------------------------------- model loading
def load_local_model(model: str, mp: dict):
    """Load the model the assets stage placed in data/models/<model>."""
    from marr.sources import LoadedModel
    from marr.sources.loading import load_hf_causal_lm, load_timm_folder

    folder = model_dir(model)
    if not folder.exists():
        raise FileNotFoundError(f"{folder} does not exist: run the assets stage for model {model!r} first")
    if mp["kind"] == "llm":
        net, tokenizer = load_hf_causal_lm(folder)
        return LoadedModel(net, tokenizer, "llm", model, mp["source"], folder)
    patch = json.loads((folder / "config.json").read_text()).get("patch_size")
    if mp.get("img_size") is not None and isinstance(patch, int):
        from marr.params import check_image_size

        check_image_size(model, mp["img_size"], patch)
    net, data_config = load_timm_folder(folder, img_size=mp.get("img_size"))
    return LoadedModel(net, None, "vit", model, mp["source"], folder, data_config)


def model_fingerprint(model: str) -> str:
    """Identity of the assets folder (its source record), used to key cached statistics."""
    info = model_dir(model) / "marr_source.json"
    return f"{model}:{json.loads(info.read_text()).get('source_id', '')}" if info.exists() else model
