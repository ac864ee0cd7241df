"""Named model sizes: the paper's six RWKV-4 sizes, RWKV-7's published sizes, a tiny and a small one; our
RWKV-4 (Appendix E init) and RWKV-7 (RWKV-LM's x070 init) with random weights at each, and transformers
configurations matched to each (GPT-NeoX as in Pythia, a Llama-style one, Mamba and Mamba-2): `<family>-<size>`.

Random-weight models are for speed and memory measurements only; every table that uses one says so.
"""
from __future__ import annotations

from dataclasses import dataclass

RANDOM_WEIGHTS_MARKER = "RANDOM_WEIGHTS"  # in a directory saved from a random preset: every loader labels it random
VOCAB = 50277  # GPT-NeoX-20B tokenizer, shared by RWKV-4 Pile models and Pythia
RWKV7_VOCAB = 50304  # the same tokenizer, padded, as in BlinkDL's RWKV-7 Pile models (RWKV-x070-Pile-*)


# The default real models of `uncheatable` and `nlp`: the Pile trio, the fairest comparison there is (same
# data, same tokenizer): RWKV-4 169M (the paper's, run by our RWKV-4), RWKV-7 168M (BlinkDL's x070 Pile model,
# run by our RWKV-7) and Pythia-160M (transformers).
PILE_TRIO = ("RWKV/rwkv-4-169m-pile,hf://BlinkDL/rwkv-7-pile/RWKV-x070-Pile-168M-20241120-ctx4096.pth,"
             "EleutherAI/pythia-160m")

@dataclass(frozen=True)
class Size:
    n_layer: int
    n_embd: int


# The paper's Table 2 sizes, keyed by their published parameter counts, plus small ones for fast runs.
SIZES = {
    "tiny": Size(4, 256),
    "small": Size(6, 512),
    "169m": Size(12, 768),
    "168m": Size(12, 768),   # RWKV-7 Pile 168M's name for the same shape (RWKV-x070-Pile-168M)
    "430m": Size(24, 1024),
    "1b5": Size(24, 2048),
    "3b": Size(32, 2560),
    "7b": Size(32, 4096),
    "14b": Size(40, 5120),
    # RWKV-7 "Goose" (x070) as published, keyed by BlinkDL's names (World / G1 0.1B ... 13.3B)
    "0.1b": Size(12, 768),
    "0.4b": Size(24, 1024),
    "1.5b": Size(24, 2048),
    "2.9b": Size(32, 2560),
    "7.2b": Size(32, 4096),
    "13.3b": Size(61, 4096),
}

FAMILIES = ("rwkv4", "rwkv7", "gptneox", "llama", "mamba", "mamba2")
RWKV_FAMILIES = ("rwkv4", "rwkv7")   # run by our own models
MAMBA_FAMILIES = ("mamba", "mamba2")  # transformers' Mamba: a fixed-size state, no attention
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
    if family == "mamba":
        from transformers import MambaConfig

        # Mamba-1 as in state-spaces/mamba-130m: d_inner = 2 d, SSM state 16, conv kernel 4; one Mamba block per
        # layer (no separate MLP), so at the same depth it has fewer parameters than RWKV
        return MambaConfig(vocab_size=VOCAB, hidden_size=size.n_embd, num_hidden_layers=size.n_layer,
                           state_size=16, expand=2, conv_kernel=4, tie_word_embeddings=False)
    if family == "mamba2":
        from transformers import Mamba2Config

        # Mamba-2 as in state-spaces/mamba2-130m: head dim 64, SSM state 128, one group
        return Mamba2Config(vocab_size=VOCAB, hidden_size=size.n_embd, num_hidden_layers=size.n_layer,
                            state_size=128, expand=2, head_dim=64, num_heads=2 * size.n_embd // 64, n_groups=1,
                            conv_kernel=4, tie_word_embeddings=False)
    raise ValueError(family)


def is_rwkv_preset(name: str) -> bool:
    return name.partition("-")[0] in RWKV_FAMILIES and split_preset(name) is not None


def random_preset_model(preset: str, seed: int = 0):
    """Our RWKV-4 (the paper's Appendix-E init) or RWKV-7 (RWKV-LM's x070 init) at a preset's size, seeded."""
    import torch

    family_size = split_preset(preset)
    if family_size is None or family_size[0] not in RWKV_FAMILIES:
        raise ValueError(f"not an rwkv4 or rwkv7 preset: {preset}")
    from .preset_cache import initialised

    family, size = family_size
    generator = torch.Generator().manual_seed(seed)
    if family == "rwkv7":
        from .rwkv7 import RWKV7, RWKV7Config, init_x070_

        model = RWKV7(RWKV7Config(vocab_size=RWKV7_VOCAB, n_layer=size.n_layer, n_embd=size.n_embd))
        return initialised(preset, seed, model, lambda m: init_x070_(m, generator))
    from .rwkv4 import RWKV4, RWKVConfig, init_paper_

    model = RWKV4(RWKVConfig(vocab_size=VOCAB, n_layer=size.n_layer, n_embd=size.n_embd))
    return initialised(preset, seed, model, lambda m: init_paper_(m, generator))
