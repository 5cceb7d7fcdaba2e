"""marr: Module-Adaptive Residual Reconstruction for low-bit post-training quantization."""

from marr.grams import GramAccumulator
from marr.grid import QuantSpec, dequantize
from marr.gptq import gptq_solve, qep_correct, qep_solve
from marr.objective import ErrorModel, reconstruction_error, relative_reconstruction_error
from marr.result import QuantResult, rtn_quantize
from marr.search import PidConfig, PidController, SearchResult, search_alpha

__version__ = "0.1.0"

__all__ = [
    "ErrorModel", "GramAccumulator", "PidConfig", "PidController", "QuantResult", "QuantSpec",
    "SearchResult", "dequantize", "gptq_solve", "qep_correct", "qep_solve", "reconstruction_error",
    "relative_reconstruction_error", "rtn_quantize", "search_alpha", "__version__",
]
