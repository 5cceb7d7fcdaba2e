"""DINOv2 ONNX export (Hugging Face Dinov2Model naming) → timm `vit_*_dinov2` state dict.

The export keeps named initializers for biases, norms and LayerScale, but its MatMul weights are
anonymous (`onnx::MatMul_*`, stored as [in, out]); the consuming node's name carries the module
path (`/backbone/encoder/layer.0/attention/attention/query/MatMul`). Position embeddings are the
concat of a [1, 1, D] class-token entry and a [1, HW, D] patch grid.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger("marr.sources.dinov2")

_MATMUL = re.compile(r"^/(?P<prefix>[^/]+)/encoder/layer\.(?P<i>\d+)/(?P<path>.+)/MatMul$")
_LINEAR_NAMES = {
    "attention/attention/query": "q", "attention/attention/key": "k",
    "attention/attention/value": "v", "attention/output/dense": "attn.proj",
    "mlp/fc1": "mlp.fc1", "mlp/fc2": "mlp.fc2",
}


def _onnx_tensors(path: Path):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    return graph, inits


def onnx_to_timm_state(onnx_path: Path, prefix: str = "backbone") -> dict[str, torch.Tensor]:
    """Return a timm VisionTransformer state dict (native pos-embed grid) from the ONNX file."""
    graph, inits = _onnx_tensors(Path(onnx_path))
    p = prefix + "."
    sd: dict[str, torch.Tensor] = {}

    def t(name):
        if name not in inits:
            raise KeyError(f"ONNX file has no initializer {name!r}")
        return torch.from_numpy(np.array(inits[name], dtype=np.float32))

    # weights consumed by MatMul nodes, found by node name
    linear: dict[tuple[int, str], torch.Tensor] = {}
    pos_cls = pos_grid = None
    for node in graph.node:
        if node.op_type == "MatMul":
            m = _MATMUL.match(node.name)
            if m and m["prefix"] == prefix and m["path"] in _LINEAR_NAMES:
                weight = next((x for x in node.input if x in inits), None)
                if weight is None:
                    raise ValueError(f"ONNX MatMul {node.name} has no constant weight input")
                linear[(int(m["i"]), _LINEAR_NAMES[m["path"]])] = t(weight).T.contiguous()
        elif node.name == f"/{prefix}/embeddings/Concat_6":
            pos_cls = next(t(x) for x in node.input if x in inits)
        elif node.name == f"/{prefix}/embeddings/Reshape_1":
            pos_grid = next(t(x) for x in node.input if x in inits)
    if pos_cls is None or pos_grid is None:
        raise ValueError("could not find the position-embedding initializers in the ONNX graph")

    dim = pos_cls.shape[-1]
    sd["cls_token"] = t(p + "embeddings.cls_token").reshape(1, 1, dim)
    sd["pos_embed"] = torch.cat([pos_cls.reshape(1, 1, dim), pos_grid.reshape(1, -1, dim)], dim=1)
    sd["patch_embed.proj.weight"] = t(p + "embeddings.patch_embeddings.projection.weight")
    sd["patch_embed.proj.bias"] = t(p + "embeddings.patch_embeddings.projection.bias")
    depth = 1 + max(i for i, _ in linear)
    for i in range(depth):
        src, dst = f"{p}encoder.layer.{i}.", f"blocks.{i}."
        for a, b in (("norm1", "norm1"), ("norm2", "norm2")):
            sd[dst + b + ".weight"] = t(src + a + ".weight")
            sd[dst + b + ".bias"] = t(src + a + ".bias")
        sd[dst + "attn.qkv.weight"] = torch.cat([linear[(i, "q")], linear[(i, "k")], linear[(i, "v")]])
        sd[dst + "attn.qkv.bias"] = torch.cat(
            [t(src + f"attention.attention.{n}.bias") for n in ("query", "key", "value")])
        sd[dst + "attn.proj.weight"] = linear[(i, "attn.proj")]
        sd[dst + "attn.proj.bias"] = t(src + "attention.output.dense.bias")
        sd[dst + "ls1.gamma"] = t(src + "layer_scale1.lambda1")
        sd[dst + "ls2.gamma"] = t(src + "layer_scale2.lambda1")
        for n in ("fc1", "fc2"):
            sd[dst + f"mlp.{n}.weight"] = linear[(i, f"mlp.{n}")]
            sd[dst + f"mlp.{n}.bias"] = t(src + f"mlp.{n}.bias")
    sd["norm.weight"] = t(p + "layernorm.weight")
    sd["norm.bias"] = t(p + "layernorm.bias")
    log.info("converted %d blocks, dim %d, %d pos-embed positions", depth, dim, sd["pos_embed"].shape[1])
    return sd


def resample_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], prefix_tokens: int = 1) -> torch.Tensor:
    """Bicubic resize of the patch grid (align_corners=False, no antialias: as the HF/ONNX model)."""
    prefix, patches = pos_embed[:, :prefix_tokens], pos_embed[:, prefix_tokens:]
    old = int(round(patches.shape[1] ** 0.5))
    if (old, old) == tuple(grid):
        return pos_embed
    dim = patches.shape[-1]
    patches = patches.reshape(1, old, old, dim).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=tuple(grid), mode="bicubic", align_corners=False, antialias=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat([prefix, patches], dim=1)


def onnx_backbone_features(onnx_path: Path, images: np.ndarray, prefix: str = "backbone") -> np.ndarray:
    """Run the ONNX model with onnxruntime and return the final-norm token features [B, T, D]."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    name = f"/{prefix}/layernorm/Add_1_output_0"
    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return session.run([name], {input_name: images.astype(np.float32)})[0]
