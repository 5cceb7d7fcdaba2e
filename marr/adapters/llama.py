"""Llama-family decoders (Llama, SmolLM2, Mistral): attention q/k/v → o, MLP gate/up → down."""

from marr.adapters.base import Adapter, register

DECODER_GROUPS = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
)


@register
class LlamaAdapter(Adapter):
    name = "llama"
    architectures = ("LlamaForCausalLM", "MistralForCausalLM")
    groups = DECODER_GROUPS
    blocks_path = "model.layers"
    reusable = {"self_attn": "self_attn.o_proj"}
    causal = True

    def run_model(self, batch):
        self.model(input_ids=batch, use_cache=False)
