"""Stage assets: materialise a model into data/models/<model> (HF folder or marr timm folder)."""

from __future__ import annotations

import json
import logging
import shutil

from marr.sources.cache import atomic_dir
from stages.common import model_dir, model_params, parser, read_params, setup_logging

log = logging.getLogger("stages.assets")


def main() -> None:
    args = parser(__doc__).parse_args()
    setup_logging()
    mp = model_params(read_params(), args.model)
    source = str(mp["source"])
    out = model_dir(args.model)
    if out.exists():
        shutil.rmtree(out)
    with atomic_dir(out) as tmp:
        if source.startswith("tiny:"):
            from marr import testing

            family = source.split(":", 1)[1]
            if family == "vit":
                testing.save_tiny_vit(tmp)
            else:
                testing.save_tiny_llm(tmp, family)
        else:
            from marr.sources import materialize

            src = materialize(source if not source.startswith(("hf:", "timm:")) else source)
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        record = tmp / "marr_source.json"
        info = json.loads(record.read_text()) if record.exists() else {}
        info.setdefault("source_id", source)
        info["params_source"] = source
        record.write_text(json.dumps(info, indent=2))
    log.info("wrote %s (from %s)", out, source)


if __name__ == "__main__":
    main()
