"""Tiny random Llama models and tokenizer-free token batches for the ProCon tests."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


def tiny_llama(seed: int, layers: int = 3, hidden: int = 64, vocab: int = 512):
    """A random ``LlamaForCausalLM`` (4 heads, float32, eager attention) in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(cfg).to(torch.float32).eval()


def token_batch(
    seed: int,
    lengths: list[int],
    vocab: int = 512,
    padding: Literal["left", "right"] = "left",
    pad_id: int = 0,
) -> tuple[Tensor, Tensor]:
    """Random ``(input_ids, attention_mask)``, shape ``(B, max(lengths))``, ids in [3, vocab)."""
    g = torch.Generator().manual_seed(seed)
    t = max(lengths)
    ids = torch.full((len(lengths), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(lengths), t), dtype=torch.long)
    for i, n in enumerate(lengths):
        sl = slice(t - n, t) if padding == "left" else slice(0, n)
        ids[i, sl] = torch.randint(3, vocab, (n,), generator=g)
        mask[i, sl] = 1
    return ids, mask
