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

import torch

from .compiled import CompiledOp

KERNELS = CompiledOp("fused RWKV-4", sources={"cpu": ("rwkv4_cpu.cpp",)}, headers=("torch_binding.h", "wkv_step.h"),
                     fallback="PyTorch ops")

ENABLED = True


def _extension_for(*tensors: torch.Tensor):
    """The extension if every tensor is float32 on the CPU and autograd need not see the work, else None."""
    if not ENABLED:
        return None
    grad = torch.is_grad_enabled()
    for t in tensors:
        if t.device.type != "cpu" or t.dtype != torch.float32 or (grad and t.requires_grad):
            return None
    # not KERNELS.select: RWKV_BENCH_WKV picks the WKV implementation, these loops are used whenever they build
    return KERNELS.extension("cpu", strict=False)


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
