"""The block-sequential reconstruction engine, its configuration and its on-disk artifacts."""

from marr.engine.config import ConfigError, EngineConfig, MethodConfig
from marr.engine.engine import Engine, QuantizationRun, apply_run, quantize_model
from marr.engine.hessians import compute_fp_statistics

__all__ = ["ConfigError", "Engine", "EngineConfig", "MethodConfig", "QuantizationRun", "apply_run",
           "compute_fp_statistics", "quantize_model"]
