"""Stage pack: write the quantized model as a low-bit safetensors checkpoint standard loaders open.

LLMs: GPTQ format (``pack.llm_format``: gptq_v2 or gptq); ViTs: compressed-tensors pack-quantized.
"""

from __future__ import annotations

import json
import logging

from marr.data import load_calibration
from marr.engine import apply_run
from marr.packing import pack_compressed_tensors, pack_gptq
from stages.common import (calibration_dir, load_local_model, model_dir, model_params, packed_dir, parser, read_params,
                           run_dir, section, setup_logging)

log = logging.getLogger("stages.pack")


def main() -> None:
    args = parser(__doc__, config=True).parse_args()
    setup_logging()
    params = read_params()
    mp = model_params(params, args.model)
    config = section(params, "configs", args.config)
    pp = params.get("pack", {})
    loaded = load_local_model(args.model, mp)
    states, _ = apply_run(loaded.model, run_dir(args.model, args.config) / "blocks")
    calib = load_calibration(calibration_dir(args.model) / "calibration.safetensors", verify=False)
    provenance = {"method": config.get("method"), "calibration_hash": calib.sha256, "model": args.model,
                  "config_name": args.config, "config": config}
    out = packed_dir(args.model, args.config)
    if mp["kind"] == "llm":
        fmt = pp.get("llm_format", "gptq_v2")
        pack_gptq(loaded.model, states, out, provenance=provenance, checkpoint_format=fmt,
                  tokenizer=loaded.tokenizer, overwrite=True)
    else:
        source = json.loads((model_dir(args.model) / "config.json").read_text())
        model_args = {"img_size": loaded.data_config["input_size"][-1], **source.get("model_kwargs", {})}
        pack_compressed_tensors(loaded.model, states, out, provenance=provenance, model_args=model_args,
                                overwrite=True)
    log.info("wrote %s", out)


if __name__ == "__main__":
    main()
