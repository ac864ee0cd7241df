"""What a transformer point will need, predicted before it runs, so a point that cannot fit is skipped.

KV cache: 2 (keys and values) x layers x T x (kv heads x head size) x bytes per element.
Activations of a forward over T tokens (one layer's at a time, transformers with SDPA): about
T x bytes x (6 d + 2 ffn) (the input, norm, q/k/v, attention output, and the MLP's hidden units before and
after the activation), calibrated on gptneox-tiny at T = 100,000 (+1,990 MiB measured, of which the KV cache
is 781 MiB). Attention scores: none with SDPA on CPU (flash attention, blocks of the T x T matrix), heads x
T^2 x bytes with eager attention. RWKV needs O(d) state and O(chunk x d) activations, Mamba a fixed-size state: no prediction.
The prediction is a guard against starting a point that cannot fit (the launcher still measures and limits
what it uses); `predicted_mem_bytes` is recorded on every transformer row, run or skipped.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..specs import ModelSpec

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Dims:
    layers: int
    d: int
    ffn: int
    heads: int
    kv_dim: int            # kv heads x head size (d without grouped-query attention)
    eager: bool = False    # the attention materialises the T x T scores


def transformer_dims(spec: ModelSpec) -> Dims | None:
    """Layers and widths of a transformer spec, from the preset table or a local config; None when unknown
    (an RWKV, or a hub model whose config is not cached)."""
    if spec.family == "rwkv" or (spec.kind == "preset" and spec.location.startswith("rwkv4-")):
        return None
    if spec.kind == "preset":
        from ..models import presets

        family, size = presets.split_preset(spec.location)
        if family in presets.MAMBA_FAMILIES:  # a fixed-size state (serving.py predicts it), no KV cache
            return None
        heads = max(1, size.n_embd // 64)
        ffn = 4 * size.n_embd if family == "gptneox" else int(8 * size.n_embd / 3 + 63) // 64 * 64
        return Dims(size.n_layer, size.n_embd, ffn, heads, size.n_embd)
    try:
        from transformers import AutoConfig

        kwargs = {"gguf_file": spec.gguf_file} if spec.gguf_file else {}
        cfg = AutoConfig.from_pretrained(spec.location, local_files_only=True, **kwargs)
    except Exception:  # noqa: BLE001 - not cached, not readable: run it, unpredicted
        return None
    if getattr(cfg, "model_type", "") in ("rwkv", "mamba", "mamba2"):
        return None
    from ..backends.hf import config_dims
    from ..library_internals import attention_implementation

    dims = config_dims(cfg)
    if dims is None:
        return None
    ffn = getattr(cfg, "intermediate_size", None) or 4 * dims.d
    return Dims(dims.layers, dims.d, int(ffn), dims.heads, dims.kv_width, attention_implementation(cfg) == "eager")


def kv_cache_bytes(dims: Dims, T: int, dtype: str) -> int:
    return 2 * dims.layers * T * dims.kv_dim * DTYPE_BYTES.get(dtype, 4)


def activation_bytes(dims: Dims, T: int, dtype: str) -> int:
    b = DTYPE_BYTES.get(dtype, 4)
    scores = dims.heads * T * T * b if dims.eager else 0
    return T * b * (6 * dims.d + 2 * dims.ffn) + scores


def predict(dims: Dims | None, T: int, phases: list[str], kv_cache: bool, dtype: str, prompt_len: int = 16
            ) -> dict:
    """{"predicted_mem_bytes", "kv_cache_bytes"} for the phases of one child (their largest need)."""
    if dims is None:
        return {}
    need = 0
    for phase in phases:
        if phase == "generate":  # a prompt, then T one-token steps (a cache of T + prompt, or forwards over it)
            n = T + prompt_len
            need = max(need, kv_cache_bytes(dims, n, dtype) if kv_cache else activation_bytes(dims, n, dtype))
        else:  # the prefill's forward keeps its keys and values; a decode step adds one token to them
            need = max(need, kv_cache_bytes(dims, T, dtype) + activation_bytes(dims, T, dtype))
    out = {"predicted_mem_bytes": need}
    if kv_cache:
        out["kv_cache_bytes"] = kv_cache_bytes(dims, T + (prompt_len if phases == ["generate"] else 0), dtype)
    return out


def available_bytes() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


MEMORY_HEADROOM = 0.9    # a point may plan on this share of the memory free when it starts


def memory_refusal(predicted: int | None, limit: int | None) -> str | None:
    """Why a point predicted to need `predicted` bytes is not attempted, or None when it may run."""
    if not predicted:
        return None
    gib = 2 ** 30
    free = available_bytes()
    if limit and predicted > limit:
        return (f"not run: predicted memory {predicted / gib:.2f} GiB (KV cache and activations) exceeds "
                f"--memory-limit {limit / gib:.2f} GiB")
    if predicted > MEMORY_HEADROOM * free:
        return (f"not run: predicted memory {predicted / gib:.2f} GiB (KV cache and activations) exceeds "
                f"{MEMORY_HEADROOM:.0%} of the free memory ({free / gib:.2f} GiB)")
    return None
