"""RWKV-4's elementwise work fused in compiled loops (kernels/rwkv4_cpu.cpp), for float32 on the CPU.

- body_step: a decode step through every block in one call. Done as PyTorch ops, the step is ~60 small
  dispatched ops per layer beside the matrix-vector products that must read every weight; for a small model
  they cost as much as that reading.
- shift_mix, relu_square_, sigmoid_mul_: the parallel forward's token shift and mixes, squared ReLU and
  receptance gate, one pass over memory each where PyTorch ops take two or three.

Each returns None (and does nothing) where it does not apply: tensors that are not float32 on the CPU, work
that autograd must see, a kernel that cannot be built (said once on stderr), or ENABLED set to False (tests
and benchmarks compare both ways). The model then runs its PyTorch ops, which compute the same thing.
"""
from __future__ import annotations

import sys
import threading

import torch

from .kernel_build import load_extension
from .wkv import _cpu_flags, _CPU_FLAGS, _one_line, kernel_source_dir

SOURCES, HEADERS = ("rwkv4_cpu.cpp",), ("wkv_step.h",)

ENABLED = True

_lock = threading.Lock()
_state: dict[str, object] = {}   # "ext": the loaded module, or "failure": why it could not be built


def _extension():
    with _lock:
        if "ext" not in _state and "failure" not in _state:
            try:
                _state["ext"] = load_extension("cpu", kernel_source_dir(), SOURCES, HEADERS, _cpu_flags,
                                               flags_key=_CPU_FLAGS)
            except Exception as exc:  # noqa: BLE001  (any build failure means: use the PyTorch ops)
                _state["failure"] = f"{type(exc).__name__}: {_one_line(exc)}"
                print(f"rwkv-bench: the fused RWKV-4 CPU kernels are unavailable, using PyTorch ops instead "
                      f"({_state['failure']})", file=sys.stderr, flush=True)
        return _state.get("ext")


def _extension_for(*tensors: torch.Tensor):
    """The extension if every tensor is float32 on the CPU and autograd need not see the work, else None."""
    if not ENABLED:
        return None
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t.device.type != "cpu" or t.dtype != torch.float32 or (grad and t.requires_grad):
            return None
    return _extension()


def shift_mix(x: torch.Tensor, last: torch.Tensor, mus: torch.Tensor) -> torch.Tensor | None:
    """(n, B, T, C): s + (x - s) * mus[i] with s = x shifted one step back in time (last at t = 0)."""
    ext = _extension_for(x, last, mus)
    return None if ext is None else ext.shift_mix(x, last, mus)


def relu_square_(k: torch.Tensor) -> torch.Tensor | None:
    """k = relu(k)^2 in place (k contiguous); returns k."""
    ext = _extension_for(k) if k.is_contiguous() else None
    if ext is None:
        return None
    ext.relu_square_(k)
    return k


def sigmoid_mul_(r: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """r = sigmoid(r) * v in place (r contiguous); returns r."""
    ext = _extension_for(r, v) if r.is_contiguous() and r.shape == v.shape else None
    if ext is None:
        return None
    ext.sigmoid_mul_(r, v)
    return r


def layer_params(block) -> list[torch.Tensor]:
    """One layer's tensors in the order body_step reads them (the kernel's enum Param)."""
    att, ffn = block.att, block.ffn
    return [block.ln1.weight, block.ln1.bias, block.ln2.weight, block.ln2.bias, att.time_decay, att.time_first,
            att.time_mix_k, att.time_mix_v, att.time_mix_r, att.key.weight, att.value.weight,
            att.receptance.weight, att.output.weight, ffn.time_mix_k, ffn.time_mix_r, ffn.key.weight,
            ffn.receptance.weight, ffn.value.weight]


def body_step(model, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor | None:
    """x (B, C) after ln0 -> the last block's output (B, C), `state` (L, 5, B, C) updated in place."""
    if not state.is_contiguous():
        return None
    params = [t for block in model.blocks for t in layer_params(block)]
    ext = _extension_for(x, state, *params)
    if ext is None or not all(t.is_contiguous() for t in params):
        return None
    return ext.body_step(x, state, [t.detach() for t in params], model.config.layer_norm_eps)
