"""One loader for every compiled op: build or load its extension, remember a failure, say which code runs.

    KERNELS = CompiledOp("WKV", sources={"cpu": (...), "cuda": (...)}, headers=(...))
    name, ext = KERNELS.select(device)        # ("cpu-kernel", module) or ("reference", None)

A kernel that cannot be built is said once, in one plain line on stderr, and the op runs its PyTorch
reference instead. RWKV_BENCH_WKV=reference forces the reference, RWKV_BENCH_WKV=kernel forces the kernel
(raising if it cannot be built); unset means auto. A benchmark must not quietly measure the slow path:
commands call `require(device)` first, which raises KernelUnavailable (a UserError: one line, exit code 2)
naming the --allow-reference flag that lets a user measure the reference on purpose.

The extensions are compiled on first use and cached per machine (kernel_build.load_extension). Their sources
are found in the source checkout (<repo>/kernels) or, in an installed wheel, in rwkv_bench/_kernels (setup.py
copies them there).
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
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError
from .kernel_build import build_key, cxx, load_extension

ENV_VAR = "RWKV_BENCH_WKV"
ALLOW_REFERENCE_FLAG = "--allow-reference"

log = logging.getLogger(__name__)

# -O3, plus what the compiler accepts of these (OpenMP for the kernels' threads and SIMD reductions,
# -march=native); the probes run only when building, so the build key holds this recipe (with the compiler
# and CPU it depends on)
CPU_FLAGS = dict(always=["-O3"], if_accepted=[["-fopenmp"], ["-march=native"]])
CUDA_FLAGS = dict(extra_cflags=["-O3"], extra_cuda_cflags=["-O3", "-lineinfo"])


class KernelUnavailable(UserError):
    """A compiled kernel for a device cannot be had; the message is one line naming --allow-reference."""


def mode() -> str:
    """RWKV_BENCH_WKV: "auto" (unset), "reference" or "kernel"."""
    value = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if value not in ("auto", "reference", "kernel"):
        raise UserError(f"{ENV_VAR}={value!r}: expected 'reference', 'kernel' or unset (auto)")
    return value


def compiler_accepts(flags: list[str]) -> bool:
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


def probed_cpu_flags(recipe: dict) -> dict:
    """torch's extra_* arguments for a CPU extension, from a CPU_FLAGS-like recipe and the compiler's answers."""
    cflags, ldflags = list(recipe["always"]), []
    for candidate in recipe["if_accepted"]:
        if compiler_accepts(candidate):
            cflags += candidate
            # -fopenmp links libgomp.so.1 (with gcc), the soname torch has already loaded: one thread pool
            ldflags += [f for f in candidate if f == "-fopenmp"]
    return dict(extra_cflags=cflags, extra_ldflags=ldflags)


def one_line(exc: BaseException) -> str:
    """A one-line reason from a build error (torch's carries the whole compiler output)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    # torch's first line is "Error building extension '<name>': [1/2] <the whole compiler command>"
    reason = lines[0].split(": [", 1)[0]
    errors = [line for line in lines[1:] if re.search(r"\berror\b", line, re.IGNORECASE)]
    if errors:
        reason += " | " + errors[0]
    return reason if len(reason) <= 300 else reason[:297] + "..."


def kernel_source_dir(files: tuple[str, ...]) -> Path:
    """The folder holding `files`: <repo>/kernels in a checkout, rwkv_bench/_kernels in a wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent / "kernels", package / "_kernels"):
        if all((candidate / name).is_file() for name in files):
            return candidate
    raise FileNotFoundError(f"kernel sources ({', '.join(files)}) are neither in "
                            f"{package.parent / 'kernels'} nor in {package / '_kernels'}")


@dataclass(eq=False)
class CompiledOp:
    """One op's compiled extensions ("cpu" / "cuda"), built on first use, and what to run when they fail."""

    name: str                                  # as the messages say it: "WKV", "WKV-7"
    sources: dict[str, tuple[str, ...]]        # kind -> the .cpp / .cu files compiled for it
    headers: tuple[str, ...]
    cpu_flags: dict = field(default_factory=lambda: CPU_FLAGS)
    cuda_flags: dict = field(default_factory=lambda: CUDA_FLAGS)
    fallback: str = "the PyTorch reference"
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _extensions: dict = field(default_factory=dict, init=False, repr=False)   # kind -> loaded module
    _failures: dict = field(default_factory=dict, init=False, repr=False)     # kind -> why it failed
    _announced: set = field(default_factory=set, init=False, repr=False)      # kinds said on stderr

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the op's folder must hold: its headers and the sources of every kind."""
        sources = (name for kind in self.sources.values() for name in kind)
        return tuple(dict.fromkeys((*self.headers, *sources)))

    # ---------------------------------------------------------------------------------------- the build
    def source_dir(self) -> Path:
        return kernel_source_dir(self.files)

    def build(self, kind: str, src_dir: Path | None = None):
        """Load (building it once per machine if needed) the "cpu" or "cuda" extension from `src_dir`."""
        if kind == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("torch has no usable CUDA")
        src_dir = src_dir or self.source_dir()
        if kind == "cpu":
            recipe = self.cpu_flags
            return load_extension("cpu", src_dir, self.sources["cpu"], self.headers,
                                  lambda: probed_cpu_flags(recipe), flags_key=recipe)
        return load_extension(kind, src_dir, self.sources[kind], self.headers, self.cuda_flags)

    def extension_name(self, kind: str, src_dir: Path | None = None) -> str:
        """The cache directory name `build(kind, src_dir)` uses (for tests and diagnostics)."""
        flags = self.cpu_flags if kind == "cpu" else self.cuda_flags
        return build_key(kind, src_dir or self.source_dir(), (*self.headers, *self.sources[kind]), flags)[0]

    # ------------------------------------------------------------------------------------ loading once
    def _load(self, kind: str):
        """The loaded extension for `kind`, or None if it cannot be built (the reason in failure(kind))."""
        with self._lock:
            if kind not in self._extensions and kind not in self._failures:
                try:
                    self._extensions[kind] = self.build(kind)
                except Exception as exc:  # noqa: BLE001  (any build failure means: the kernel is unavailable)
                    log.debug("building the %s %s kernel failed", self.name, kind, exc_info=True)
                    self._failures[kind] = f"{type(exc).__name__}: {one_line(exc)}"
            return self._extensions.get(kind)

    def failure(self, kind: str) -> str | None:
        """Why the `kind` extension could not be built, or None if it was not tried or it built."""
        return self._failures.get(kind)

    def extension(self, kind: str, strict: bool):
        """The loaded extension, or None after one line on stderr saying why the fallback runs instead."""
        ext = self._load(kind)
        if ext is None:
            if strict:
                raise RuntimeError(f"{ENV_VAR}=kernel but the {self.name} {kind} kernel is unavailable: "
                                   f"{self._failures[kind]}")
            if kind not in self._announced:
                self._announced.add(kind)
                print(f"rwkv-bench: the {self.name} {kind} kernel is unavailable, using {self.fallback} instead "
                      f"({self._failures[kind]})", file=sys.stderr, flush=True)
        return ext

    # ------------------------------------------------------------------------------- what runs where
    def select(self, device) -> tuple[str, object]:
        """("cpu-kernel" / "cuda-kernel", the extension) or ("reference", None) for tensors on `device`."""
        device = torch.device(device)
        how = mode()
        if how == "reference":
            return "reference", None
        if device.type not in self.sources:
            if how == "kernel":
                raise RuntimeError(f"{ENV_VAR}=kernel but there is no {self.name} kernel for {device.type} tensors")
            return "reference", None
        ext = self.extension(device.type, strict=how == "kernel")
        return ("reference", None) if ext is None else (f"{device.type}-kernel", ext)

    def implementation_name(self, device: torch.device | str = "cpu") -> str:
        """What the op runs on `device` (building or loading the kernel now, so the answer is what runs)."""
        return self.select(device)[0]

    def require(self, device: torch.device | str = "cpu") -> str:
        """"cpu-kernel" or "cuda-kernel": the compiled kernel the op will run on `device` (built now), or
        KernelUnavailable in one line saying why and naming --allow-reference."""
        device = torch.device(device)
        hint = f"pass {ALLOW_REFERENCE_FLAG} to measure the PyTorch reference instead"
        if mode() == "reference":
            raise KernelUnavailable(f"{ENV_VAR}=reference turns the {self.name} kernels off; unset it, or {hint}")
        if device.type not in self.sources:
            raise KernelUnavailable(f"there is no {self.name} kernel for {device.type} tensors; {hint}")
        if self._load(device.type) is None:
            raise KernelUnavailable(f"the {self.name} {device.type} kernel is unavailable "
                                    f"({self._failures[device.type]}); {hint}")
        return f"{device.type}-kernel"
