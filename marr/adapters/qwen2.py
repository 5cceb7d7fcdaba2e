"""Qwen2 decoders: the Llama layout (q/k/v carry biases, which stay in full precision)."""

from marr.adapters.base import register
from marr.adapters.llama import LlamaAdapter


@register
class Qwen2Adapter(LlamaAdapter):
    name = "qwen2"
    architectures = ("Qwen2ForCausalLM",)
