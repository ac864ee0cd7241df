"""transformers' own RwkvForCausalLM holding exactly our preset's random weights: the peer our RWKV-4 is
checked and timed against (`transformers:rwkv4-<size>` in any command)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .presets import RANDOM_WEIGHTS_MARKER


def peer_cache_dir(preset: str, seed: int) -> Path:
    """Where `transformers:<preset>` is saved once and reused (the user cache directory)."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("rwkv-bench")) / "peers" / f"{preset}-seed{seed}"


def save_peer(preset: str, directory: Path, *, seed: int = 0) -> Path:
    """Save our preset's random weights as an HF RwkvForCausalLM directory (kept if already there)."""
    import torch
    from transformers import RwkvConfig, RwkvForCausalLM
    from transformers.utils import logging as hf_logging

    from .loaders import blinkdl_to_hf_state_dict
    from .presets import random_preset_model

    directory = Path(directory)
    if (directory / "config.json").is_file():
        return directory
    ours = random_preset_model(preset, seed)
    c = ours.config
    config = RwkvConfig(vocab_size=c.vocab_size, hidden_size=c.n_embd, num_hidden_layers=c.n_layer,
                        attention_hidden_size=c.n_embd, intermediate_size=c.ffn_dim,
                        layer_norm_epsilon=c.layer_norm_eps, rescale_every=0, tie_word_embeddings=False,
                        bos_token_id=0, eos_token_id=0)
    with torch.device("meta"):
        peer = RwkvForCausalLM(config)
    peer.load_state_dict(blinkdl_to_hf_state_dict(ours.state_dict()), strict=True, assign=True)
    tmp = directory.with_name(f"{directory.name}.tmp{os.getpid()}")  # two processes may save at once
    shutil.rmtree(tmp, ignore_errors=True)
    hf_logging.disable_progress_bar()
    peer.save_pretrained(tmp)
    (tmp / RANDOM_WEIGHTS_MARKER).write_text(f"random weights of preset {preset} (seed {seed}); "
                                             "for speed and memory measurements only\n")
    try:
        os.replace(tmp, directory)
    except OSError:  # another process got there first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
    return directory
