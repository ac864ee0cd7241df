"""RWKV-4's recurrent step through every block in one compiled call (kernels/rwkv4_step_cpu.cpp).

A decode step must read every weight once; the rest of it, done as PyTorch ops, is ~60 small dispatched
ops per layer that cost as much as the weights' reading for a small model. The kernel does that rest in
loops and calls ATen for the layer norms and matrix-vector products only. It runs for float32 models on
the CPU outside autograd; `body_step` returns None otherwise (or if the kernel cannot be built, said once
on stderr), and the model takes its PyTorch path, which computes the same thing.
"""
from __future__ import annotations

import sys
import threading

import torch

from .kernel_build import load_extension
from .wkv import _cpu_flags, _CPU_FLAGS, _one_line, kernel_source_dir

SOURCES, HEADERS = ("rwkv4_step_cpu.cpp",), ("wkv_step.h",)

_lock = threading.Lock()
_state: dict[str, object] = {}   # "ext": the loaded module, or "failure": why it could not be built


def _extension():
    with _lock:
        if "ext" not in _state and "failure" not in _state:
            try:
                _state["ext"] = load_extension("cpu", kernel_source_dir(), SOURCES, HEADERS, _cpu_flags,
                                               flags_key=_CPU_FLAGS)
            except Exception as exc:  # noqa: BLE001  (any build failure means: use the PyTorch path)
                _state["failure"] = f"{type(exc).__name__}: {_one_line(exc)}"
                print(f"rwkv-bench: the fused RWKV-4 step kernel is unavailable, using PyTorch ops instead "
                      f"({_state['failure']})", file=sys.stderr, flush=True)
        return _state.get("ext")


def layer_params(block) -> list[torch.Tensor]:
    """One layer's tensors in the order the kernel reads them (its enum Param)."""
    att, ffn = block.att, block.ffn
    return [block.ln1.weight, block.ln1.bias, block.ln2.weight, block.ln2.bias, att.time_decay, att.time_first,
            att.time_mix_k, att.time_mix_v, att.time_mix_r, att.key.weight, att.value.weight,
            att.receptance.weight, att.output.weight, ffn.time_mix_k, ffn.time_mix_r, ffn.key.weight,
            ffn.receptance.weight, ffn.value.weight]


def applies(model, x: torch.Tensor, state: torch.Tensor) -> bool:
    """Whether the fused step can run this step: float32 weights and state on the CPU, no autograd."""
    return (x.device.type == "cpu" and model.weight_dtype == torch.float32 and state.dtype == torch.float32
            and state.is_contiguous() and not (torch.is_grad_enabled() and model.emb.weight.requires_grad))


def body_step(model, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor | None:
    """x (B, C) after ln0 -> the last block's output (B, C), `state` (L, 5, B, C) updated in place;
    None where the fused step does not apply (the caller runs its PyTorch ops)."""
    if not applies(model, x, state):
        return None
    ext = _extension()
    if ext is None:
        return None
    params = [t.detach() for block in model.blocks for t in layer_params(block)]
    if not all(t.is_contiguous() for t in params):
        return None
    return ext.body_step(x, state, params, model.config.layer_norm_eps)
