"""The block-sequential reconstruction engine, its configuration and its on-disk artifacts."""

from marr.engine.config import ConfigError, EngineConfig, MethodConfig
from marr.engine.engine import Engine, QuantizationRun, apply_run, quantize_model

__all__ = ["ConfigError", "Engine", "EngineConfig", "MethodConfig", "QuantizationRun", "apply_run", "quantize_model"]
from marr.engine.hessians import compute_fp_statistics  # noqa: E402

__all__.append("compute_fp_statistics")
