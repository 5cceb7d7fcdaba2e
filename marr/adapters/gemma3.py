"""Gemma3 text decoders: the Llama layout with extra norms and alternating sliding-window and
global attention layers (each layer's own mask and rotary embedding are captured per block)."""

from marr.adapters.base import register
from marr.adapters.llama import LlamaAdapter


@register
class Gemma3Adapter(LlamaAdapter):
    name = "gemma3"
    architectures = ("Gemma3ForCausalLM",)
