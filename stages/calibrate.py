"""Stage calibrate: the calibration tensors of a model (token windows or preprocessed images)."""

from __future__ import annotations

import json
import logging

from marr.data import llm_calibration, save_calibration, vit_calibration
from marr.io import write_json
from marr.params import check_loaded_model
from stages.common import calibration_dir, load_local_model, model_params, parser, read_params, setup_logging

log = logging.getLogger("stages.calibrate")


def main() -> None:
    args = parser(__doc__).parse_args()
    setup_logging()
    mp = model_params(read_params(), args.model)
    cp = mp.get("calibration", {})
    loaded = load_local_model(args.model, mp)
    check_loaded_model(args.model, mp, loaded.model)  # context length, supported architecture
    if mp["kind"] == "llm":
        calib = llm_calibration(loaded.tokenizer, cp.get("text", "wiki"), n_windows=int(cp.get("windows", 128)),
                                window_len=int(cp.get("length", 512)), seed=int(cp.get("seed", 0)))
    else:
        calib = vit_calibration(loaded.data_config, cp.get("images", "fashion-mnist"),
                                n_images=int(cp.get("images_n", 128)), seed=int(cp.get("seed", 0)))
    out = calibration_dir(args.model)
    save_calibration(out / "calibration.safetensors", calib)
    write_json(out / "calibration.json", {"sha256": calib.sha256, "shape": list(calib.data.shape),
                                          "meta": json.loads(json.dumps(calib.meta, default=str))})
    log.info("wrote %s: %s, sha256 %s", out, tuple(calib.data.shape), calib.sha256[:12])


if __name__ == "__main__":
    main()
