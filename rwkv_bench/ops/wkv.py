"""The WKV operator of RWKV-4: compiled kernels for CPU and CUDA, the PyTorch reference as the fallback.

    y, new_state = wkv(w, u, k, v, state=None)

w, u: (C,) float (w = -exp(time_decay) < 0, u = time_first); k, v: (B, T, C); state: (B, 3, C) float32
with rows aa, bb, pp (see wkv_reference.py). y has k's dtype, the state is float32. Differentiable in
w, u, k, v and the initial state.

Which implementation runs (`implementation_name(device)` says it without running anything else):
  * CPU tensors  -> the C++ kernel (kernels/wkv_cpu.cpp), float32; other dtypes are cast around it.
  * CUDA tensors -> the CUDA kernel (kernels/wkv_cuda.cu); float32, bfloat16 and float16 k, v are read as
    they are (float32 arithmetic), other dtypes are cast to float32.
  * anything else, or a kernel that failed to build -> the reference, with one line on stderr saying why.
  The kernels compute in float32 even for float64 inputs (gradcheck the reference for float64 work).
  RWKV_BENCH_WKV=reference forces the reference; RWKV_BENCH_WKV=kernel forces the kernel and raises
  if it cannot be built (default: auto). A benchmark must not quietly measure the slow path instead:
  commands call `require_kernel(device)` first, which raises KernelUnavailable (a UserError: one line,
  exit code 2) naming the --allow-reference flag that lets a user measure the reference on purpose.

The extensions are built, cached and loaded by ops/compiled.py (one loader for every compiled op).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .compiled import ALLOW_REFERENCE_FLAG, ENV_VAR, CompiledOp, KernelUnavailable
from .wkv_reference import empty_state, wkv_reference  # noqa: F401  (empty_state is public API)

__all__ = ["wkv", "implementation_name", "require_kernel", "KernelUnavailable", "empty_state", "kernel_source_dir",
           "build_extension", "extension_name", "ENV_VAR", "ALLOW_REFERENCE_FLAG"]

# the CUDA build is wkv_cuda.cu (the kernels, nvcc, no torch headers) and wkv_cuda_host.cpp (the rest)
KERNELS = CompiledOp("WKV", sources={"cpu": ("wkv_cpu.cpp",), "cuda": ("wkv_cuda.cu", "wkv_cuda_host.cpp")},
                     headers=("torch_binding.h", "wkv_step.h", "wkv_args.h", "wkv_host.h", "wkv_cuda.h"))
KERNEL_FILES = KERNELS.files
_CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def kernel_source_dir() -> Path:
    """The folder holding the WKV kernel sources: <repo>/kernels in a checkout, rwkv_bench/_kernels in a wheel."""
    return KERNELS.source_dir()


def build_extension(kind: str, src_dir: Path | None = None):
    """Load (building it once per machine if needed) the "cpu" or "cuda" extension from `src_dir`'s sources."""
    return KERNELS.build(kind, src_dir)


def extension_name(kind: str, src_dir: Path | None = None) -> str:
    """The cache directory name `build_extension(kind, src_dir)` uses (for tests and diagnostics)."""
    return KERNELS.extension_name(kind, src_dir)


def implementation_name(device: torch.device | str = "cpu") -> str:
    """What `wkv` runs for tensors on `device`: "cuda-kernel", "cpu-kernel" or "reference".

    Builds (or loads) the kernel if needed, so that the answer is what would actually run.
    """
    return KERNELS.implementation_name(device)


def require_kernel(device: torch.device | str = "cpu") -> str:
    """"cpu-kernel" or "cuda-kernel": the compiled kernel `wkv` will run on `device` (built or loaded now).

    Raises KernelUnavailable, one line saying why and naming --allow-reference, when that kernel cannot be
    had: a benchmark stops rather than quietly measuring the PyTorch reference.
    """
    return KERNELS.require(device)


# ------------------------------------------------------------------------------------------------- autograd
class _WKVFunction(torch.autograd.Function):
    """The kernel's forward saves the state before every token (B, T + 1, 3, C) float32 for its backward."""

    @staticmethod
    def forward(ctx, ext, w, u, k, v, state):
        y, state1, scratch = ext.forward(w, u, k, v, state, True)
        ctx.ext = ext
        ctx.save_for_backward(w, u, k, v, scratch)
        return y, state1

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, gstate):
        w, u, k, v, scratch = ctx.saved_tensors
        gw, gu, gk, gv, gstate0 = ctx.ext.backward(w, u, k, v, scratch, gy.to(k.dtype), gstate.float())
        return None, gw, gu, gk, gv, gstate0


def wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """WKV over a sequence: returns y (B, T, C) in k's dtype and the final state (B, 3, C) float32."""
    name, ext = KERNELS.select(k.device)
    if ext is None:
        return wkv_reference(w, u, k, v, state)
    if k.dim() != 3:
        raise ValueError(f"wkv: k must be (B, T, C), got {tuple(k.shape)}")
    B, T, C = k.shape
    if state is None:
        state = empty_state(B, C, k.device)
    out_dtype = k.dtype
    if name == "cuda-kernel" and k.dtype == v.dtype and k.dtype in _CUDA_DTYPES:
        compute = k.dtype
    else:
        compute = torch.float32
    # casts outside the Function, so autograd takes care of them
    k, v = k.to(compute), v.to(compute)
    w, u, state = w.float(), u.float(), state.float()
    if torch.is_grad_enabled() and any(t.requires_grad for t in (w, u, k, v, state)):
        y, new_state = _WKVFunction.apply(ext, w, u, k, v, state)
    else:
        y, new_state = ext.forward(w, u, k, v, state, False)
    return y.to(out_dtype), new_state
