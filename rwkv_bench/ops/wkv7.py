"""The WKV-7 operator of RWKV-7 ("Goose", x070): compiled kernels for CPU and CUDA, a PyTorch reference beside them.

    y = wkv7(r, w, k, v, a, b, state)          updates `state` in place

Per head, the state S is an N x N matrix (rows: value channels, columns: key channels) and each token does

    S <- S diag(w) + (S a) b^T + v k^T          y = S r

r, w, k, v, a, b: (B, T, C) with C = H x N (RWKV-7 passes a = -kk, b = kk * a, w = the decay in (0, 1));
state: (B, H, N, N) float32, updated in place (its batch stride may be anything: the model keeps it inside a
bigger state tensor). y has r's dtype. Forward only (no autograd): the harness runs inference.

Which implementation runs (`implementation_name(device)` says it):
  * CPU tensors  -> the C++ kernel (kernels/wkv7_cpu.cpp), float32 arithmetic; other dtypes are cast to it.
  * CUDA tensors -> the CUDA kernel (kernels/wkv7_cuda.cu); float32 and bfloat16 inputs read as they are
    (the decay w always float32), float32 state and arithmetic.
  * anything else, or a kernel that failed to build -> the reference, with one line on stderr saying why.
  RWKV_BENCH_WKV=reference forces the reference, RWKV_BENCH_WKV=kernel forces the kernel (raising if it
  cannot be built), and `require_kernel(device)` raises KernelUnavailable naming --allow-reference, as for
  the WKV-4 kernels (ops/wkv.py): both are built, cached and loaded by ops/compiled.py.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .compiled import ENV_VAR, CompiledOp, KernelUnavailable

__all__ = ["wkv7", "wkv7_reference", "implementation_name", "require_kernel", "KernelUnavailable", "kernel_source_dir",
           "ENV_VAR"]

KERNELS = CompiledOp("WKV-7", sources={"cpu": ("wkv7_cpu.cpp",), "cuda": ("wkv7_cuda.cu", "wkv7_cuda_host.cpp")},
                     headers=("torch_binding.h", "wkv7_step.h", "wkv7_cuda.h"))
KERNEL_FILES = KERNELS.files
_CUDA_DTYPES = (torch.float32, torch.bfloat16)


# ------------------------------------------------------------------------------------------------ reference
def wkv7_reference(r, w, k, v, a, b, state: torch.Tensor) -> torch.Tensor:
    """The recurrence written out token by token in PyTorch, in float32 (float64 inputs stay float64)."""
    B, T, C = r.shape
    H, N = state.shape[1], state.shape[2]
    dtype = torch.float64 if r.dtype == torch.float64 else torch.float32
    r, w, k, v, a, b = (t.to(dtype).reshape(B, T, H, N) for t in (r, w, k, v, a, b))
    S = state.to(dtype)
    y = torch.empty(B, T, H, N, dtype=dtype, device=r.device)
    for t in range(T):
        sa = S @ a[:, t].unsqueeze(-1)                                      # (B, H, N, 1)
        S = S * w[:, t].unsqueeze(-2) + sa * b[:, t].unsqueeze(-2) + v[:, t].unsqueeze(-1) * k[:, t].unsqueeze(-2)
        y[:, t] = (S @ r[:, t].unsqueeze(-1)).squeeze(-1)
    state.copy_(S)
    return y.reshape(B, T, C)


# ------------------------------------------------------------------------------------------------- kernels
def kernel_source_dir() -> Path:
    """<repo>/kernels in a checkout, rwkv_bench/_kernels in a wheel (setup.py copies every .h/.cpp/.cu)."""
    return KERNELS.source_dir()


def implementation_name(device: torch.device | str = "cpu") -> str:
    """What `wkv7` runs for tensors on `device`: "cpu-kernel", "cuda-kernel" or "reference"."""
    return KERNELS.implementation_name(device)


def require_kernel(device: torch.device | str = "cpu") -> str:
    """"cpu-kernel" or "cuda-kernel": the compiled kernel `wkv7` will run on `device` (built or loaded now),
    or KernelUnavailable in one line saying why and naming --allow-reference."""
    return KERNELS.require(device)


def wkv7(r, w, k, v, a, b, state: torch.Tensor) -> torch.Tensor:
    """y (B, T, C) in r's dtype; `state` (B, H, N, N) float32 is updated in place."""
    if r.dim() != 3 or state.dim() != 4 or state.shape[2] != state.shape[3] or \
            state.shape[1] * state.shape[2] != r.shape[2] or state.shape[0] != r.shape[0]:
        raise ValueError(f"wkv7: r must be (B, T, H*N) and state (B, H, N, N), got {tuple(r.shape)} and "
                         f"{tuple(state.shape)}")
    if state.dtype != torch.float32:
        raise ValueError(f"wkv7: the state must be float32, got {state.dtype}")
    name, ext = KERNELS.select(r.device)
    if ext is None:
        return wkv7_reference(r, w, k, v, a, b, state)
    out_dtype = r.dtype
    compute = r.dtype if name == "cuda-kernel" and r.dtype in _CUDA_DTYPES else torch.float32
    inputs = [t.to(compute).contiguous() for t in (r, w, k, v, a, b)]
    inputs[1] = w.float().contiguous()     # the decay stays float32: near 1, bfloat16 cannot tell it from 1
    if state.stride(3) != 1 or state.stride(2) != state.shape[3] or state.stride(1) != state.shape[2] ** 2:
        work = state.contiguous()          # the kernel needs each sequence's H x N x N block contiguous
        y = ext.forward(*inputs, work)
        state.copy_(work)
    else:
        y = ext.forward(*inputs, state)
    return y.to(out_dtype)
