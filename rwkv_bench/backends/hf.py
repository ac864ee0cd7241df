"""Any transformers causal LM: hub ids, local directories, GGUF files, or a config with random weights.

Also runs transformers' own `RwkvForCausalLM`, the peer our RWKV-4 is compared with, and Mamba / Mamba-2
(`MambaForCausalLM`, `Mamba2ForCausalLM`), the other linear-time family: their cache is a fixed-size conv
and SSM state (`cache_params`), not keys and values.
Texts longer than the model's context are scored with a sliding window (see `token_logprobs`).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch

from ..library_internals import attention_implementation
from ..tokenizer import Tokenizer
from .base import Backend, as_batch, module_bytes


class TransformersBackend(Backend):
    def __init__(self, model, tokenizer: Tokenizer, spec: str, *, random_weights: bool, device="cpu",
                 kv_cache: bool = True, bos_token_id: int | None = None):
        super().__init__(model, tokenizer, spec, random_weights=random_weights, device=device)
        self.kv_cache = kv_cache
        cfg = model.config
        self.family = family_of(cfg.model_type)
        # RWKV's context_length is its training length, not a limit (nor Mamba's); attention models have a hard one
        self.max_context = None if self.family != "transformer" else getattr(cfg, "max_position_embeddings", None)
        self.bos_token_id = bos_token_id if bos_token_id is not None else default_bos(tokenizer, cfg)
        path = mamba_path() if self.family == "mamba" else attention_implementation(cfg)
        self.implementation = f"transformers.{type(model).__name__}" + (f"[{path}]" if path else "")

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
        logits, cache = self.forward_batch(as_batch(ids, self.device), cache, use_cache)
        return logits[0], cache

    def forward_batch(self, x: torch.Tensor, cache: Any = None, use_cache: bool = True):
        """x (B, T) continuing `cache`; returns the last logits (B, V) and the new cache."""
        model_type = self.model.config.model_type
        if model_type == "rwkv":  # transformers' RWKV keeps a `state`, not a KV cache
            out = self.model(input_ids=x, state=cache, use_cache=True, logits_to_keep=1)
            return out.logits[:, -1], out.state
        if self.family == "mamba":  # a conv + SSM state in `cache_params` (one token: the recurrent step)
            out = self.model(input_ids=x, cache_params=cache, use_cache=True, logits_to_keep=1)
            return out.logits[:, -1], out.cache_params
        out = self.model(input_ids=x, past_key_values=cache, use_cache=use_cache, logits_to_keep=1)
        return out.logits[:, -1], out.past_key_values

    @torch.no_grad()
    def start_batch(self, ids: torch.Tensor):
        return self.forward_batch(ids.to(self.device), None)

    @torch.no_grad()
    def step_batch(self, tokens: torch.Tensor, cache: Any):
        return self.forward_batch(tokens.reshape(-1, 1).to(self.device), cache)

    def repeat_cache(self, cache: Any, batch: int) -> Any:
        if self.model.config.model_type == "rwkv":  # a list of (B, hidden, layers) tensors
            return [s.repeat_interleave(batch, dim=0) for s in cache]
        for layer in cache.layers:
            if hasattr(layer, "conv_states"):  # Mamba's LinearAttentionLayer has no batch_repeat_interleave
                for states in (layer.conv_states, layer.recurrent_states):
                    for key, tensor in states.items():
                        if tensor is not None:
                            states[key] = tensor.repeat_interleave(batch, dim=0)
            else:
                layer.batch_repeat_interleave(batch)  # keys and values, copied
        return cache

    def sequence_state_bytes(self, T: int) -> int | None:
        return state_bytes_of_config(self.model.config, T, self.dtype.itemsize)

    @torch.no_grad()
    def start(self, ids: list[int]):
        if self.kv_cache or self.family != "transformer":
            return self.run(ids)
        return self.run(ids, use_cache=False)[0], ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)

    @torch.no_grad()
    def step(self, token: int, cache: Any):
        if self.kv_cache or self.family != "transformer":
            return self.run([token], cache)
        # the paper's protocol: no cache, the whole growing sequence is run again for every token
        ids = cache + [token]
        return self.run(ids, use_cache=False)[0], ids

    def weights_bytes(self) -> int:
        return module_bytes(self.model)


MAMBA_TYPES = ("mamba", "mamba2")


def family_of(model_type: str) -> str:
    return "rwkv" if model_type == "rwkv" else "mamba" if model_type in MAMBA_TYPES else "transformer"


def mamba_path() -> str:
    """Which scan runs: the mamba_ssm / causal_conv1d kernels when importable, else transformers' own PyTorch
    reference (on a CPU always the latter: the kernels are CUDA only)."""
    import importlib.util

    kernels = [m for m in ("mamba_ssm", "causal_conv1d") if importlib.util.find_spec(m) is not None]
    return "kernels:" + "+".join(kernels) if kernels else "torch-reference-scan"


def state_bytes_of_config(cfg, T: int, dtype_bytes: int) -> int | None:
    """Analytic bytes of one sequence's cache at context T, from a transformers config:
    RWKV: 5 x layers x C (three of the five in float32, two in the model's dtype); Mamba: layers x
    (conv: d_inner x conv kernel + SSM: d_inner x state size); Mamba-2: layers x (conv: (d_inner + 2 groups x
    state size) x conv kernel + SSM: heads x head dim x state size); attention: 2 x layers x T x kv width."""
    model_type = getattr(cfg, "model_type", "")
    dims = config_dims(cfg)
    if dims is None:
        return None
    layers, d = dims.layers, dims.d
    if model_type == "rwkv":
        return layers * d * (3 * 4 + 2 * dtype_bytes)
    if model_type == "mamba":
        inner = cfg.intermediate_size
        return layers * inner * (cfg.conv_kernel + cfg.state_size) * dtype_bytes
    if model_type == "mamba2":
        inner = int(cfg.expand * d)
        conv = (inner + 2 * cfg.n_groups * cfg.state_size) * cfg.conv_kernel
        return layers * (conv + cfg.num_heads * cfg.head_dim * cfg.state_size) * dtype_bytes
    return 2 * layers * T * dims.kv_width * dtype_bytes


class ConfigDims(NamedTuple):
    layers: int
    d: int
    heads: int
    kv_width: int       # KV heads x head size (d without grouped-query attention)


def config_dims(cfg) -> ConfigDims | None:
    """Layers and widths of a transformers config (any model type), None when it does not give its layers and
    width; absent attention fields as transformers defaults them (heads: d / 64, head size: d / heads, KV heads:
    heads)."""
    layers = getattr(cfg, "num_hidden_layers", None)
    d = getattr(cfg, "hidden_size", None)
    if not layers or not d:
        return None
    heads = getattr(cfg, "num_attention_heads", None) or max(1, d // 64)
    head_dim = getattr(cfg, "head_dim", None) or d // heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    return ConfigDims(int(layers), int(d), int(heads), int(kv_heads * head_dim))


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
