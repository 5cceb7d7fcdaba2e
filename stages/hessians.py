"""Stage hessians: per-block FP statistics of a model, shared by all its quantization configs."""

from __future__ import annotations

import logging

from marr.data import load_calibration
from marr.engine import EngineConfig, compute_fp_statistics
from stages.common import (calibration_dir, hessians_dir, load_local_model, model_fingerprint, model_params, parser,
                           read_params, setup_logging)

log = logging.getLogger("stages.hessians")


def main() -> None:
    args = parser(__doc__).parse_args()
    setup_logging()
    params = read_params()
    mp = model_params(params, args.model)
    hp = params.get("hessians", {})
    loaded = load_local_model(args.model, mp)
    calib = load_calibration(calibration_dir(args.model) / "calibration.safetensors")
    manifest = compute_fp_statistics(
        loaded.model, calib.data, hessians_dir(args.model), model_id=model_fingerprint(args.model),
        calibration_hash=calib.sha256, engine=EngineConfig.from_dict(params.get("engine")),
        cache_activations=bool(hp.get("cache_activations", False)),
        activation_dtype=hp.get("activation_dtype", "float16"))
    log.info("wrote %s (%d blocks, %.1f s)", hessians_dir(args.model), manifest["n_blocks"], manifest["seconds"])


if __name__ == "__main__":
    main()
