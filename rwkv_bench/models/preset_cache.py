"""Random preset weights, made once per machine: the paper's initialisation draws orthogonal matrices (a QR
each), which takes seconds even for the tiny preset and would otherwise be paid by every child process of a
sweep. The weights are a pure function of (preset, seed, the model's code, torch's version), so the file is
keyed by all four; a file that cannot be read is made again. Safetensors: no pickle is ever loaded.
"""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..fileio import write_atomically


def cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("rwkv-bench")) / "presets"


def cache_path(preset: str, seed: int, model: torch.nn.Module) -> Path:
    code = inspect.getsource(inspect.getmodule(type(model)))  # its init functions live beside the model
    key = hashlib.sha256(f"{preset}|{seed}|{torch.__version__}|{code}".encode()).hexdigest()[:16]
    return cache_dir() / f"{preset}-seed{seed}-{key}.safetensors"


def initialised(preset: str, seed: int, model: torch.nn.Module,
                init: Callable[[torch.nn.Module], torch.nn.Module]) -> torch.nn.Module:
    """`model` with the weights `init(model)` gives, read from the cache when it holds them."""
    path = cache_path(preset, seed, model)
    try:
        model.load_state_dict(load_file(path), strict=True)
        return model
    except (OSError, SafetensorError, RuntimeError):
        pass  # not made yet, or damaged: make it again
    init(model)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, save({k: v.contiguous() for k, v in model.state_dict().items()}))
    except OSError:
        pass  # a read-only or full cache only costs time
    return model
