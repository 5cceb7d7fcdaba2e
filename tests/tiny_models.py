"""Tiny offline models and tokenizers for fast tests (no network, no real weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

WORDS = ("the cat sat on a mat while dogs ran in the park and birds sang over green hills "
         "under blue skies near rivers where fish swim past old stone bridges").split()


def tiny_corpus(n_docs: int = 40, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n_docs):
        words = rng.choice(WORDS, size=int(rng.integers(12, 40)))
        docs.append(f"Doc {i}. " + " ".join(words) + ".")
    return docs


def tiny_tokenizer(add_bos: bool = False, vocab_size: int = 200):
    """A byte-level BPE trained on the tiny corpus, wrapped as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(tiny_corpus(200, seed=1), trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="</s>")


def tiny_llama(vocab_size: int, seed: int = 0, max_positions: int = 256):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_positions, bos_token_id=1, eos_token_id=2,
                         pad_token_id=2, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


def tiny_vit(img_size: int = 28, num_classes: int = 0, seed: int = 0):
    """A 2-block DINOv2-style timm ViT (patch 14, LayerScale), small enough for CPU tests."""
    import timm

    torch.manual_seed(seed)
    return timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=img_size,
                             depth=2, embed_dim=32, num_heads=2, num_classes=num_classes).eval()


@pytest.fixture(autouse=False)
def single_thread():
    """Tiny models run far faster on one thread, especially on a shared, busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
