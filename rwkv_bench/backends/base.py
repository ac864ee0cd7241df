"""One interface for every way of running a model, so scenarios never ask "which model is this?".

A backend owns a model and its tokenizer. Scenarios use:
- `encode(text)` -> token ids (no BOS added);
- `token_logprobs(ids)` -> log p(ids[i] | BOS, ids[:i]) for every i (the first token is conditioned on
  the BOS / end-of-text token, which is itself not scored);
- `start(ids)` / `step(token, cache)`: prefill a prompt (a list of ids, or a 1-D tensor: a million ids
  as Python ints would take 36 MB), then decode one token at a time (greedy
  decoding and per-token timing live in the scenarios, not here);
- `start_batch(ids)` / `step_batch(tokens, cache)` / `repeat_cache(cache, batch)`: the same for B sequences at
  once, each with its own state or KV cache (serving many sequences);
- `sequence_state_bytes(T)`: analytic bytes of one sequence's state or KV cache at context T;
- `describe()` -> what ran, for metadata and tables.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


def as_batch(ids, device) -> torch.Tensor:
    """Token ids (a list, or a 1-D tensor) as a (1, T) tensor on `device`."""
    if isinstance(ids, torch.Tensor):
        return ids.reshape(1, -1).to(device=device, dtype=torch.long)
    return torch.tensor([ids], dtype=torch.long, device=device)


class Backend(ABC):
    spec: str                    # the model spec the user gave
    family: str                  # "rwkv" or "transformer"
    implementation: str          # which code runs it, e.g. "rwkv_bench.rwkv4[cpu-kernel]"
    random_weights: bool         # True: good for speed/memory only, says nothing about quality
    device: torch.device
    dtype: torch.dtype
    bos_token_id: int
    max_context: int | None      # None: no limit (RWKV carries its state)

    def __init__(self, model: torch.nn.Module, tokenizer, spec: str, *, random_weights: bool, device="cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.dtype = next(model.parameters()).dtype
        self.tokenizer = tokenizer
        self.spec = spec
        self.random_weights = random_weights

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without BOS."""

    @abstractmethod
    def token_logprobs(self, ids: list[int], stride: int | None = None) -> torch.Tensor:
        """float64 tensor of len(ids): natural-log probability of each token given BOS and all before it.
        `stride`: the sliding-window step where the model has a context limit (None: half the context)."""

    @abstractmethod
    def start(self, ids: list[int]) -> tuple[torch.Tensor, Any]:
        """Prefill `ids` (BOS not added). Returns the last position's logits (V,) and a decoding cache."""

    @abstractmethod
    def step(self, token: int, cache: Any) -> tuple[torch.Tensor, Any]:
        """Feed one token. Returns its logits (V,) and the updated cache."""

    @abstractmethod
    def weights_bytes(self) -> int:
        """Bytes taken by the model's parameters and buffers."""

    def start_batch(self, ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Prefill B prompts of one length, ids (B, T). Returns the last logits (B, V) and the cache of all B."""
        raise NotImplementedError(f"{type(self).__name__} does not decode batches")

    def step_batch(self, tokens: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        """One token for each of the B sequences, tokens (B,). Returns logits (B, V) and the updated cache."""
        raise NotImplementedError(f"{type(self).__name__} does not decode batches")

    def repeat_cache(self, cache: Any, batch: int) -> Any:
        """A cache of `batch` sequences, each a real copy of the one sequence in `cache`."""
        raise NotImplementedError(f"{type(self).__name__} does not decode batches")

    def step_weights_bytes(self) -> int:
        """Bytes of weights one decode step must read: every parameter and buffer but the input embedding table,
        of which a step gathers one row per sequence (unless the head shares it, and reads it whole)."""
        model = self.model
        emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else getattr(model, "emb", None)
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else getattr(model, "head", None)
        table = getattr(emb, "weight", None)
        if table is None or (head is not None and getattr(head, "weight", None) is table):
            return self.weights_bytes()
        return self.weights_bytes() - table.numel() * table.element_size()

    def sequence_state_bytes(self, T: int) -> int | None:
        """Analytic bytes of one sequence's state (recurrent models: constant) or KV cache at context T."""
        return None

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "family": self.family,
            "implementation": self.implementation,
            "random_weights": self.random_weights,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "max_context": self.max_context,
            "weights_bytes": self.weights_bytes(),
        }


def module_bytes(module: torch.nn.Module) -> int:
    tensors = list(module.parameters()) + list(module.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)
