"""Model sources: embedded defaults from packaged files, HF hub/folders, timm.

    load_model("smollm2-135m")                 # fp32 HF folder materialised from a GGUF wheel
    load_model("dinov2-s", img_size=224)       # timm DINOv2-S/14 backbone from an ONNX wheel
    load_model("hf:/path/to/folder"); load_model("timm:deit_small_patch16_224@ckpt.pth")
"""

from marr.sources.cache import atomic_dir, atomic_file, atomic_path, cache_root
from marr.sources.fetch import RegistryUnavailableError, extract_member, fetch_wheel
from marr.sources.loading import LoadedModel, load_hf_causal_lm, load_model, load_timm, load_timm_folder
from marr.sources.materialize import materialize
from marr.sources.specs import DEFAULT_MODELS, ModelSpec, PackageFile, resolve_spec

__all__ = [
    "DEFAULT_MODELS", "LoadedModel", "ModelSpec", "PackageFile", "RegistryUnavailableError",
    "atomic_dir", "atomic_file", "atomic_path", "cache_root", "extract_member", "fetch_wheel",
    "load_hf_causal_lm", "load_model", "load_timm", "load_timm_folder", "materialize", "resolve_spec",
]
