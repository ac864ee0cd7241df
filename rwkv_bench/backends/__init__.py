"""How a model runs. `load(spec)` turns a parsed ModelSpec into a Backend: our RWKV-4 or RWKV-7 (rwkv.py) or any
transformers causal LM (hf.py), both with the interface of base.py."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..hub import hub_call
from ..specs import OURS, ModelSpec
from .base import Backend


def load(spec: ModelSpec, *, device: str = "cpu", dtype: torch.dtype = torch.float32, tokenizer: str | None = None,
         max_positions: int | None = None, kv_cache: bool = True, chunk_size: int = 1024, seed: int = 0) -> Backend:
    """Load what `spec` names. `tokenizer` applies only to models without a tokenizer of their own."""
    spec = with_runner(spec)
    if spec.runner == OURS:
        return load_ours(spec, tokenizer, device=device, dtype=dtype, chunk_size=chunk_size, seed=seed)
    tok = None if spec.has_tokenizer else model_tokenizer(tokenizer)
    return load_transformers(spec, tok, device=device, dtype=dtype, kv_cache=kv_cache, seed=seed,
                             max_positions=max_positions)


def with_runner(spec: ModelSpec) -> ModelSpec:
    """A hub id not yet in the local cache: its config.json (read as JSON: an RWKV-7 config names a model type
    transformers does not ship) says whether our RWKV or transformers runs it."""
    if spec.runner is not None:
        return spec
    from dataclasses import replace

    from huggingface_hub import hf_hub_download

    from ..specs import TRANSFORMERS, read_config, runs_on_ours

    path = hub_call(lambda local: hf_hub_download(spec.location, "config.json", local_files_only=local),
                    f"model {spec.location!r} (a repository of .pth files has no config.json: name one file, "
                    f"hf://{spec.location}/<file>.pth)")
    config = read_config(Path(path).parent) or {}
    return replace(spec, runner=OURS if runs_on_ours(config) else TRANSFORMERS)


def model_tokenizer(tokenizer: str | None):
    from ..tokenizer import neox_tokenizer

    return neox_tokenizer(tokenizer)


def load_ours(spec: ModelSpec, tokenizer: str | None, *, device, dtype, chunk_size, seed) -> Backend:
    """Our RWKV-4 or RWKV-7 (the checkpoint's tensors say which), with its own tokenizer if it has one, else
    the one its vocabulary implies (or --tokenizer)."""
    from ..models import loaders
    from ..models.presets import random_preset_model
    from ..tokenizer import tokenizer_for_vocab
    from .rwkv import RWKVBackend

    directory = None
    if spec.kind == "preset":
        model = random_preset_model(spec.location, seed)
    elif spec.kind == "checkpoint":
        model = loaders.load_checkpoint(spec.location)
    elif spec.kind == "hub-file":
        model = loaders.load_checkpoint(download_hub_file(spec.location))
    else:
        directory = Path(spec.location) if spec.kind == "hf-dir" else download_rwkv(spec.location)
        model = loaders.load_hf_dir(directory)
    vocab = model.config.vocab_size
    if directory is not None and spec.has_tokenizer:
        tok = own_tokenizer(directory, spec.text, vocab)
    else:
        tok = tokenizer_for_vocab(vocab, tokenizer)
    return RWKVBackend(model.to(dtype), tok, spec.text, random_weights=spec.random_weights, device=device,
                       chunk_size=chunk_size)


def own_tokenizer(directory: Path, label: str, vocab: int):
    """A directory's tokenizer; one that only custom code could load (RWKV World repos ship such) gives way to
    the tokenizer the vocabulary implies, when there is one."""
    from ..tokenizer import NEOX_VOCABS, WORLD_VOCAB, tokenizer_for_vocab

    try:
        return hf_tokenizer(str(directory), label)
    except UserError:
        if vocab in (*NEOX_VOCABS, WORLD_VOCAB):
            return tokenizer_for_vocab(vocab)
        raise


def download_hub_file(location: str) -> Path:
    """`org/name/path/in/repo.pth` (from an hf:// spec) -> the file in the local hub cache, downloaded once."""
    from huggingface_hub import hf_hub_download

    org, name, filename = location.split("/", 2)
    return Path(hub_call(lambda local: hf_hub_download(f"{org}/{name}", filename, local_files_only=local),
                         f"file {filename!r} of {org}/{name}"))


def download_rwkv(hub_id: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.bin", "*.txt"]
    return Path(hub_call(lambda local: snapshot_download(hub_id, allow_patterns=patterns, local_files_only=local),
                         f"model {hub_id!r}"))


def hf_tokenizer(location: str, label: str, **kwargs):
    from transformers import AutoTokenizer

    from ..tokenizer import Tokenizer

    return Tokenizer(hub_call(lambda local: AutoTokenizer.from_pretrained(location, local_files_only=local, **kwargs),
                              f"the tokenizer of {label!r}", location=location), location)


def load_transformers(spec: ModelSpec, tok, *, device, dtype, kv_cache, seed, max_positions) -> Backend:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from .hf import TransformersBackend

    hf_logging.disable_progress_bar()  # our own progress bars are the ones that matter
    if spec.kind == "preset" and not spec.location.startswith("rwkv4-"):
        return random_transformer(spec, tok, device=device, dtype=dtype, kv_cache=kv_cache, seed=seed,
                                  max_positions=max_positions)
    location = spec.location
    if spec.kind == "preset":  # transformers:rwkv4-<size>: the peer, saved once in the user cache
        from ..models.peer import peer_cache_dir, save_peer

        location = str(save_peer(spec.location, peer_cache_dir(spec.location, seed), seed=seed))
    kwargs = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
    model = hub_call(lambda local: AutoModelForCausalLM.from_pretrained(location, dtype=dtype,
                                                                        local_files_only=local, **kwargs),
                     f"model {spec.text!r} with transformers", location=location)
    if tok is None:
        tok = hf_tokenizer(location, spec.text, **kwargs)
    return TransformersBackend(model, tok, spec.text, random_weights=spec.random_weights, device=device,
                               kv_cache=kv_cache)


def random_transformer(spec: ModelSpec, tok, *, device, dtype, kv_cache, seed, max_positions) -> Backend:
    from transformers import AutoModelForCausalLM

    from ..models import presets
    from .hf import TransformersBackend

    family, size = presets.split_preset(spec.location)
    config = presets.transformer_config(family, size, max_positions=max(max_positions or 0, 4096))
    torch.manual_seed(seed)
    attention = {} if family in presets.MAMBA_FAMILIES else {"attn_implementation": "sdpa"}  # Mamba has none
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, **attention)
    return TransformersBackend(model, tok, spec.text, random_weights=True, device=device, kv_cache=kv_cache,
                               bos_token_id=0)


def check_reachable(specs: list[ModelSpec], hint: str = "") -> None:
    """Before a run starts: hub models that are neither cached nor reachable fail now, in one line."""
    from ..hub import hub_offline

    missing = [s.text for s in specs if (s.kind == "hub" and s.runner is None) or
               (s.kind == "hub-file" and not hub_file_cached(s.location))]
    if missing and hub_offline():
        names = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} and {missing[-1]}"
        raise UserError(f"{names} {'is' if len(missing) == 1 else 'are'} not in the local Hugging "
                        "Face cache and the hub cannot be reached (offline): run once with network to download "
                        f"{'it' if len(missing) == 1 else 'them'}{', or ' + hint if hint else ''}")


def hub_file_cached(location: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    org, name, filename = location.split("/", 2)
    return isinstance(try_to_load_from_cache(f"{org}/{name}", filename), str)


def resolve(text: str, **load_options) -> Backend:
    """parse + load in one call, for scripts and benchmarks: `resolve("rwkv4-169m", seed=0)`."""
    from ..specs import parse

    return load(parse(text), **load_options)
