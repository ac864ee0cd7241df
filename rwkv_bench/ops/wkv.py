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

The extensions are compiled on first use with torch.utils.cpp_extension (ninja) once per machine, torch
and compiler version, into the user cache directory, and later processes import the built library directly;
kernel_build.py says how (the cache key, and a build lock that a killed process never leaves stuck). The
sources are found in the source checkout (<repo>/kernels) or, in an installed wheel, in rwkv_bench/_kernels
(setup.py copies them there).
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

from ..errors import UserError
from .kernel_build import cxx, load_extension
from .wkv_reference import empty_state, wkv_reference  # noqa: F401  (empty_state is public API)

__all__ = ["wkv", "implementation_name", "require_kernel", "KernelUnavailable", "empty_state", "kernel_source_dir"]

ALLOW_REFERENCE_FLAG = "--allow-reference"

log = logging.getLogger(__name__)

ENV_VAR = "RWKV_BENCH_WKV"
KERNEL_FILES = ("wkv_step.h", "wkv_host.h", "wkv_cpu.cpp", "wkv_cuda.cu")
_SOURCES = {"cpu": ("wkv_cpu.cpp",), "cuda": ("wkv_cuda.cu",)}
_HEADERS = ("wkv_step.h", "wkv_host.h")
_CUDA_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

_lock = threading.Lock()
_extensions: dict[str, object] = {}      # "cpu" / "cuda" -> the loaded module
_failures: dict[str, str] = {}           # "cpu" / "cuda" -> why it could not be built
_announced: set[str] = set()             # kinds whose fallback to the reference has been said on stderr


class KernelUnavailable(UserError):
    """The compiled WKV kernel for a device cannot be had; the message is one line naming --allow-reference."""


# ------------------------------------------------------------------------------------------ sources / build
def kernel_source_dir() -> Path:
    """The folder holding the kernel sources: <repo>/kernels in a checkout, rwkv_bench/_kernels in a wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "kernels", package / "_kernels"):
        if all((candidate / name).is_file() for name in KERNEL_FILES):
            return candidate
    raise FileNotFoundError(f"WKV kernel sources ({', '.join(KERNEL_FILES)}) are neither in "
                            f"{package.parent / 'kernels'} nor in {package / '_kernels'}")


def _mode() -> str:
    mode = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if mode not in ("auto", "reference", "kernel"):
        raise UserError(f"{ENV_VAR}={mode!r}: expected 'reference', 'kernel' or unset (auto)")
    return mode


def _compiler_accepts(flags: list[str]) -> bool:
    """Whether the C++ compiler torch will use compiles and links a trivial OpenMP program with `flags`."""
    compiler = cxx()
    if shutil.which(compiler) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.cpp"
        src.write_text("int main() { int s = 0;\n#pragma omp parallel for reduction(+:s)\n"
                       "for (int i = 0; i < 4; ++i) s += i;\nreturn s == 6 ? 0 : 1; }\n")
        try:
            proc = subprocess.run([compiler, *flags, str(src), "-o", str(Path(tmp) / "probe")],
                                  capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return proc.returncode == 0


# -O3, plus what the compiler accepts of these (OpenMP for at::parallel_for, -march=native); the probes run
# only when building, so the build key holds this recipe (with the compiler and CPU it depends on)
_CPU_FLAGS = dict(always=["-O3"], if_accepted=[["-fopenmp"], ["-march=native"]])
_CUDA_FLAGS = dict(extra_cflags=["-O3"], extra_cuda_cflags=["-O3", "-lineinfo"])


def _cpu_flags() -> dict:
    """torch's extra_* arguments for the CPU extension, from _CPU_FLAGS and the compiler's answers."""
    cflags, ldflags = list(_CPU_FLAGS["always"]), []
    for candidate in _CPU_FLAGS["if_accepted"]:
        if _compiler_accepts(candidate):
            cflags += candidate
            # -fopenmp links libgomp.so.1 (with gcc), the soname torch has already loaded: one thread pool
            ldflags += [f for f in candidate if f == "-fopenmp"]
    return dict(extra_cflags=cflags, extra_ldflags=ldflags)


def build_extension(kind: str, src_dir: Path | None = None):
    """Load (building it once per machine if needed) the "cpu" or "cuda" extension from `src_dir`'s sources."""
    src_dir = src_dir or kernel_source_dir()
    if kind == "cpu":
        return load_extension("cpu", src_dir, _SOURCES["cpu"], _HEADERS, _cpu_flags, flags_key=_CPU_FLAGS)
    return load_extension("cuda", src_dir, _SOURCES["cuda"], _HEADERS, _CUDA_FLAGS)


def extension_name(kind: str, src_dir: Path | None = None) -> str:
    """The cache directory name `build_extension(kind, src_dir)` uses (for tests and diagnostics)."""
    from .kernel_build import build_key

    flags = _CPU_FLAGS if kind == "cpu" else _CUDA_FLAGS
    return build_key(kind, src_dir or kernel_source_dir(), (*_HEADERS, *_SOURCES[kind]), flags)[0]


def _build(kind: str):
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("torch has no usable CUDA")
    return build_extension(kind)


def _one_line(exc: BaseException) -> str:
    """A one-line reason from a build error (torch's carries the whole compiler output)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    # torch's first line is "Error building extension '<name>': [1/2] <the whole compiler command>"
    reason = lines[0].split(": [", 1)[0]
    errors = [line for line in lines[1:] if re.search(r"\berror\b", line, re.IGNORECASE)]
    if errors:
        reason += " | " + errors[0]
    return (reason if len(reason) <= 300 else reason[:297] + "...")


def _load(kind: str):
    """The loaded extension for "cpu" or "cuda", or None if it cannot be built (the reason in _failures)."""
    with _lock:
        if kind not in _extensions and kind not in _failures:
            try:
                _extensions[kind] = _build(kind)
            except Exception as exc:  # noqa: BLE001  (any build failure means: the kernel is unavailable)
                log.debug("building the WKV %s kernel failed", kind, exc_info=True)
                _failures[kind] = f"{type(exc).__name__}: {_one_line(exc)}"
        return _extensions.get(kind)


def _extension(kind: str, strict: bool):
    """The loaded extension, or None after one line on stderr saying why the reference runs instead."""
    ext = _load(kind)
    if ext is None:
        if strict:
            raise RuntimeError(f"{ENV_VAR}=kernel but the WKV {kind} kernel is unavailable: {_failures[kind]}")
        if kind not in _announced:
            _announced.add(kind)
            print(f"rwkv-bench: the WKV {kind} kernel is unavailable, using the PyTorch reference instead "
                  f"({_failures[kind]})", file=sys.stderr, flush=True)
    return ext


def _select(device) -> tuple[str, object]:
    device = torch.device(device)
    mode = _mode()
    if mode == "reference":
        return "reference", None
    if device.type not in _SOURCES:
        if mode == "kernel":
            raise RuntimeError(f"{ENV_VAR}=kernel but there is no WKV kernel for {device.type} tensors")
        return "reference", None
    ext = _extension(device.type, strict=mode == "kernel")
    return ("reference", None) if ext is None else (f"{device.type}-kernel", ext)


def implementation_name(device: torch.device | str = "cpu") -> str:
    """What `wkv` runs for tensors on `device`: "cuda-kernel", "cpu-kernel" or "reference".

    Builds (or loads) the kernel if needed, so that the answer is what would actually run.
    """
    return _select(device)[0]


def require_kernel(device: torch.device | str = "cpu") -> str:
    """"cpu-kernel" or "cuda-kernel": the compiled kernel `wkv` will run on `device` (built or loaded now).

    Raises KernelUnavailable, one line saying why and naming --allow-reference, when that kernel cannot be
    had: a benchmark stops rather than quietly measuring the PyTorch reference.
    """
    device = torch.device(device)
    hint = f"pass {ALLOW_REFERENCE_FLAG} to measure the PyTorch reference instead"
    if _mode() == "reference":
        raise KernelUnavailable(f"{ENV_VAR}=reference turns the WKV kernels off; unset it, or {hint}")
    if device.type not in _SOURCES:
        raise KernelUnavailable(f"there is no WKV kernel for {device.type} tensors; {hint}")
    if _load(device.type) is None:
        raise KernelUnavailable(f"the WKV {device.type} kernel is unavailable ({_failures[device.type]}); {hint}")
    return f"{device.type}-kernel"


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
    name, ext = _select(k.device)
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
