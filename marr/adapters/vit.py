"""timm vision transformers (vit_*, deit_*, DINOv2 with LayerScale): qkv → proj → fc1 → fc2."""

from marr.adapters.base import Adapter, register


@register
class TimmVitAdapter(Adapter):
    name = "timm-vit"
    architectures = ("VisionTransformer",)
    groups = (("attn.qkv",), ("attn.proj",), ("mlp.fc1",), ("mlp.fc2",))
    blocks_path = "blocks"
    reusable = {"attn": "attn.proj"}

    def block_kwargs(self, example):
        return [{} for _ in self.blocks()]
