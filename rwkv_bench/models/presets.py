"""Named model sizes: the paper's six RWKV-4 sizes (random weights, Appendix E init) plus a tiny one,
and transformer configurations matched to each (GPT-NeoX as in Pythia, and a Llama-style one).

Random-weight models are for speed and memory measurements only; every table that uses one says so.
"""
from __future__ import annotations

from dataclasses import dataclass

RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS"  # in a directory saved from a random preset: every loader labels it random
VOCAB = 50277  # GPT-NeoX-20B tokenizer, shared by RWKV-4 Pile models and Pythia


@dataclass(frozen=True)
class Size:
    n_layer: int
    n_embd: int


# The paper's Table 2 sizes, keyed by their published parameter counts, plus small ones for fast runs.
SIZES = {
    "tiny": Size(4, 256),
    "small": Size(6, 512),
    "169m": Size(12, 768),
    "430m": Size(24, 1024),
    "1b5": Size(24, 2048),
    "3b": Size(32, 2560),
    "7b": Size(32, 4096),
    "14b": Size(40, 5120),
}

FAMILIES = ("rwkv4", "gptneox", "llama")
PRESETS = [f"{family}-{size}" for family in FAMILIES for size in SIZES]


def split_preset(name: str) -> tuple[str, Size] | None:
    family, _, size = name.partition("-")
    if family in FAMILIES and size in SIZES:
        return family, SIZES[size]
    return None


def transformer_config(family: str, size: Size, max_positions: int = 4096):
    """A transformers config matched to an RWKV-4 size: same depth, width and vocabulary."""
    heads = max(1, size.n_embd // 64)
    if family == "gptneox":
        from transformers import GPTNeoXConfig

        return GPTNeoXConfig(vocab_size=VOCAB, hidden_size=size.n_embd, num_hidden_layers=size.n_layer,
                             num_attention_heads=heads, intermediate_size=4 * size.n_embd,
                             rotary_pct=0.25, max_position_embeddings=max_positions,
                             use_parallel_residual=True, tie_word_embeddings=False)
    if family == "llama":
        from transformers import LlamaConfig

        # SwiGLU with 8/3 d hidden units has the same parameter count as a 4 d GELU MLP
        ffn = int(8 * size.n_embd / 3 + 63) // 64 * 64
        return LlamaConfig(vocab_size=VOCAB, hidden_size=size.n_embd, num_hidden_layers=size.n_layer,
                           num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=ffn,
                           max_position_embeddings=max_positions, tie_word_embeddings=False,
                           bos_token_id=0, eos_token_id=0)
    raise ValueError(family)


def random_preset_model(preset: str, seed: int = 0):
    """Our RWKV-4 at a preset's size with the paper's Appendix-E random init, seeded."""
    import torch

    from .rwkv4 import RWKV4, RWKVConfig, init_paper_

    family_size = split_preset(preset)
    if family_size is None or family_size[0] != "rwkv4":
        raise ValueError(f"not an rwkv4 preset: {preset}")
    size = family_size[1]
    model = RWKV4(RWKVConfig(vocab_size=VOCAB, n_layer=size.n_layer, n_embd=size.n_embd))
    return init_paper_(model, torch.Generator().manual_seed(seed))
