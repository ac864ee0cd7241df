"""Any transformers causal LM: hub ids, local directories, GGUF files, or a config with random weights.

Also runs transformers' own `RwkvForCausalLM`, the peer our RWKV-4 is compared with.
Texts longer than the model's context are scored with a sliding window (see `token_logprobs`).
"""
from __future__ import annotations

from typing import Any

import torch

from ..tokenizer import Tokenizer
from .base import Backend, as_batch, module_bytes


class TransformersBackend(Backend):
    def __init__(self, model, tokenizer: Tokenizer, spec: str, *, random_weights: bool, device="cpu",
                 kv_cache: bool = True, bos_token_id: int | None = None):
        super().__init__(model, tokenizer, spec, random_weights=random_weights, device=device)
        self.kv_cache = kv_cache
        cfg = model.config
        self.family = "rwkv" if cfg.model_type == "rwkv" else "transformer"
        # RWKV's context_length is its training length, not a limit; attention models have a hard one
        self.max_context = None if self.family == "rwkv" else getattr(cfg, "max_position_embeddings", None)
        self.bos_token_id = bos_token_id if bos_token_id is not None else default_bos(tokenizer, cfg)
        attn = attention_implementation(model)
        self.implementation = f"transformers.{type(model).__name__}" + (f"[{attn}]" if attn else "")

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def window(self, stride: int | None) -> tuple[int, int]:
        size = self.max_context
        stride = stride or size // 2
        if not 0 < stride <= size - 1:
            raise ValueError(f"stride must be in 1..{size - 1} for a context of {size}")
        return size, stride

    def protocol(self, stride: int | None = None) -> str:
        if self.max_context is None:
            return "one pass over the whole text (no context limit)"
        size, stride = self.window(stride)
        return (f"sliding window of {size} tokens (BOS included), stride {stride}: each token keeps "
                f"at least {size - stride} tokens of context once the text outgrows the window")

    @torch.no_grad()
    def token_logprobs(self, ids: list[int], stride: int | None = None) -> torch.Tensor:
        """log p(ids[i] | BOS, ids[:i]). A text longer than the context is scored window by window: each
        window spans `size` inputs, starts `stride` after the last, and scores only the tokens that no
        earlier window scored, so every token gets the most context the window allows."""
        inputs = [self.bos_token_id] + ids          # targets are inputs[1:]
        n = len(inputs)
        size, stride = (n, n) if self.max_context is None or n <= self.max_context else self.window(stride)
        out = torch.empty(len(ids), dtype=torch.float64)
        scored_until, begin = 1, 0                  # inputs[1:scored_until] are scored
        while scored_until < n:
            end = min(begin + size, n)
            x = torch.tensor([inputs[begin:end]], device=self.device)
            logp = torch.log_softmax(self.model(input_ids=x).logits[0].float(), dim=-1)
            targets = torch.tensor(inputs[scored_until:end], device=self.device)
            # logits at window position j predict inputs[begin + j + 1]
            rows = torch.arange(scored_until - 1 - begin, end - 1 - begin, device=self.device)
            out[scored_until - 1:end - 1] = logp[rows, targets].double().cpu()
            scored_until, begin = end, begin + stride
        return out

    def run(self, ids: list[int], cache: Any = None, use_cache: bool = True):
        """One forward over `ids` continuing `cache`; returns the last logits (V,) and the new cache."""
        x = as_batch(ids, self.device)
        if self.model.config.model_type == "rwkv":  # transformers' RWKV keeps a `state`, not a KV cache
            out = self.model(input_ids=x, state=cache, use_cache=True, logits_to_keep=1)
            return out.logits[0, -1], out.state
        out = self.model(input_ids=x, past_key_values=cache, use_cache=use_cache, logits_to_keep=1)
        return out.logits[0, -1], out.past_key_values

    @torch.no_grad()
    def start(self, ids: list[int]):
        if self.kv_cache or self.family == "rwkv":
            return self.run(ids)
        return self.run(ids, use_cache=False)[0], ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)

    @torch.no_grad()
    def step(self, token: int, cache: Any):
        if self.kv_cache or self.family == "rwkv":
            return self.run([token], cache)
        # the paper's protocol: no cache, the whole growing sequence is run again for every token
        ids = cache + [token]
        return self.run(ids, use_cache=False)[0], ids

    def weights_bytes(self) -> int:
        return module_bytes(self.model)


def default_bos(tokenizer: Tokenizer, config) -> int:
    """The token a text is conditioned on: BOS if the tokenizer has one, else end-of-text, else 0."""
    impl = tokenizer.impl
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(impl, attr, None)
        if value is not None:
            return int(value)
    for attr in ("bos_token_id", "eos_token_id"):
        value = getattr(config, attr, None)
        if isinstance(value, int):
            return value
    return 0


def attention_implementation(model) -> str | None:
    """sdpa / eager / ...: transformers 5 exposes the chosen attention only as the private
    `config._attn_implementation` (no public getter); tests/test_specs.py fails if that goes away."""
    return getattr(model.config, "_attn_implementation", None)
