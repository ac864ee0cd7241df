"""`make gpu-check` (python -m rwkv_bench.gpu_check): what this project has to verify on its first CUDA machine.

On the CUDA machine, in under 10 minutes (the plan and its time estimate: ESTIMATE_S below):
  1. the CUDA WKV-4 kernel against the float64 PyTorch reference, forward and backward (values, the returned
     state and the gradients of w, u, k, v and the initial state) and forward-only (no autograd, no scratch),
     each in float32, bfloat16 and float16 k, v (`wkv_cases`):
     - T = 1, 4,096 and 100,000, B > 1;
     - shapes whose B x C is not a multiple of the 128-thread block (B = 3, C = 200; B = 1, C = 1);
     - non-contiguous inputs (k, v, the state and the gradient of y transposed, w and u strided);
     - initial states: empty, as a prefix leaves it, mixed in one batch, and bb = 0 with a finite pp (the
       contract: read as empty, kernels/wkv_step.h initial_pp);
     - extreme values: k up to 60 and down to -60, decay -1e-8 and -1e4, from a non-empty state;
  2. the CUDA WKV-7 kernel (RWKV-7, forward only) against the float64 reference, in float32 and bfloat16
     (float32 state), checking y and the state it leaves in the tensor it was given (`wkv7_cases`):
     - B > 1 throughout; T = 1 (a decode step), 64, 257, 300 and 4,096; B = 3 with H = 7 heads;
     - a zero state and a random state carried in;
     - the state inside the model's packed state rows (a batch stride of its own; the token shifts beside
       it must stay untouched), in its own tensor, and stored column-major (non-contiguous);
     - non-contiguous inputs (r, w, k, v, a, b transposed);
  3. for each kernel, a case on a non-default stream (a launch on another stream reads the inputs before
     they exist) and, with two GPUs, one on cuda:1 while cuda:0 is current (a missing device guard); one
     GPU: "not checked";
  4. our rwkv4-169m (random weights) parallel vs recurrent, and our rwkv7-168m (dense random weights)
     sequence vs recurrent, on CUDA;
  5. a short scaling sweep on CUDA through the console script, as a user runs it:
     rwkv-bench scaling --device cuda --models rwkv4-169m,gptneox-169m --max-len 16384 --out <dir>,
     with what is left of the time budget;
then prints a pass/fail table with timings and exits 0 only if nothing failed.

A kernel that cannot be built fails its build row (one line saying why), and the checks that need it do not
run. Without CUDA it exits at once with one line on stderr and exit code 3 (the checks themselves take a
device, so the tests run them on the CPU kernels, which share kernels/wkv_step.h and kernels/wkv7_step.h with
the CUDA ones).

Options: --out DIR (the sweep's run directory; default a temporary one), --skip-sweep, --skip-model.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

EXIT_NO_CUDA = 3
# Time on one H100 (item 6 of issue 24). Estimates, as no GPU has run this yet: the CUDA build ~80 s per
# architecture (one here); the float64 references on the host CPU, autograd through a Python loop: 40 s
# for the T = 100,000 case (measured on the project's shared 2-core Xeon: B = 4, its empty and prefix
# states in one batch, 6.6 GB peak memory) and 4 s for all the others; the kernel cases (with their
# comparisons on the CPU), the stream and device checks ~20 s; the model ~15 s. WKV-7 (issue 19): its CUDA
# build ~15 s (nvcc -c of kernels/wkv7_cuda.cu 2 s, g++ of its host side wkv7_cuda_host.cpp 9 s of CPU on the
# Xeon, once the torch headers left the .cu); its float64 references 17 s
# on the Xeon (16.5 s of it the T = 4,096 case), its kernel runs and stream checks a few seconds;
# rwkv7-168m ~15 s (building it and drawing its 168M random weights on the CPU: 4.5 s on the Xeon; 256
# recurrent steps of 12 layers, kernel launches mostly). The sweep comes last and gets what is left of
# BUDGET_S (at most SWEEP_TIMEOUT_S), so the whole check stays under 10 minutes even where these
# estimates are off.
ESTIMATE_S = {"WKV-4 build": 80, "WKV-4 references": 45, "WKV-4 cases": 20, "rwkv4 model": 15,
              "WKV-7 build": 70, "WKV-7 cases": 20, "rwkv7 model": 15}
BUDGET_S = 570
SWEEP_TIMEOUT_S = 420
MIN_SWEEP_S = 60

# ------------------------------------------------------------------------------------------ tolerances
# Errors are max |got - want| over a tensor divided by max |want| (each state row on its own), against
# the float64 reference run on the *same* inputs: k, v and the upstream gradient of y are rounded to
# numbers float32, bfloat16 and float16 all hold exactly, so input rounding cancels and only the kernel's
# own arithmetic (and the rounding of what it stores in the half types) is measured.
#
# float32, T <= 4,096: the kernel's exp is a polynomial within ~2 ulp and a step rounds a handful of times,
#   but the recurrence is a decaying average (y is a convex combination of past v's), so errors do not
#   grow along the sequence: y ~1e-7, bound 1e-5. The state's aa, bb are sums over the channel's memory
#   (~1/|w| tokens) and carry one rounding per term: 7.8e-6 measured on the CPU build (which runs the same
#   kernels/wkv_step.h) at T = 4,096, bound 2e-5.
# gradients: sums over T of products of such terms (gw, gu over B x T as well), log-scaled so they never
#   overflow; 1e-4 of their scale, as tests/test_wkv.py uses for the CPU kernel.
# bfloat16 / float16 k, v: read exactly into float32 arithmetic; the state and gw, gu, gstate stay
#   float32 (the bounds above); y, gk and gv are *stored* in the half type: one more rounding of up to the
#   unit roundoff, 2^-8 = 3.9e-3 (bf16) or 2^-11 = 4.9e-4 (fp16), added to the float32 bound.
# T = 100,000 with the state carried through the whole sequence: per-step rounding persists for the
#   channel's memory, ~1/|w| steps (the slowest random decay here is ~e^-5, ~150 steps), so the bound on y
#   and the state is 5e-5; gw, gu sum 4 x 100,000 terms in float32 (error ~ sqrt(n) ulp), 1e-3.
# The state's aa, bb are compared on the reference's scale e^pp (see _same_scale), pp on its own.
# Extreme values, T = 512 (measured on the CPU build, which runs the same kernels/wkv_step.h):
#   k up to 60: every exponent difference (u + k - pp, w + pp - k) is rounded to float32's spacing near 60,
#     3.8e-6, 16x that of the normal cases' exponents (~3), and the state's a, b carry one such rounding a
#     step for the channel's memory: state 1.1e-4 (torch's own float32 reference: the same), y 2.7e-5, the
#     gradients 8.8e-5; bounds 5x: y 1e-4, state and gradients 5e-4.
#   k down to -60, decay -1e-8 (float32 cannot tell w + pp from pp: a plain running average) and -1e4
#     (e^w = 0: only the current token counts): within the normal float32 bounds (worst 3e-6, state).
F32_Y, F32_STATE, F32_GRADS = 1e-5, 2e-5, 1e-4
LONG_T, LONG_VALUES, LONG_GRADS = 100_000, 5e-5, 1e-3
EXTREME_BOUNDS = {
    "k_large": (1e-4, 5e-4, 5e-4),
    "k_very_negative": (F32_Y, F32_STATE, F32_GRADS),
    "w_near_zero": (F32_Y, F32_STATE, F32_GRADS),
    "w_huge": (F32_Y, F32_STATE, F32_GRADS),
}
HALF_STORED = {torch.float32: 0.0, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
# rwkv4-169m parallel (chunked WKV kernel, GEMMs) vs recurrent (WKV steps in torch, GEMVs): the same
# float32 math in another order through 12 layers of random weights; ~1e-6 relative per layer, and the
# logits' scale makes 1e-4 relative of their max a bound that a real bug (a wrong state row, a shifted
# token) exceeds by orders of magnitude. TF32 matmuls are switched off for the comparison.
# rwkv7-168m sequence (chunks through the WKV-7 kernel, GEMMs) vs recurrent (one token per kernel call,
# GEMVs): the same bound; measured 8.9e-7 on the CPU (B = 2, T = 24). Its WKV state and token shifts are
# compared too: ln_x normalises each head's WKV output, so the logits hide an error that scales it.
MODEL_REL = 1e-4


@dataclass
class Result:
    check: str
    ok: bool | None          # None: not checked (say, no second GPU)
    seconds: float
    detail: str


def _max_rel(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    if not torch.isfinite(got).all():
        return float("inf")
    scale = want.abs().max().item()
    return (got - want).abs().max().item() / scale if scale > 0 else (got - want).abs().max().item()


# ------------------------------------------------------------------------------------------ WKV cases
@dataclass(frozen=True)
class KernelCase:
    """B sequences of T tokens in `dtype`, as every kernel check has them; each kernel's case adds its width,
    the state it starts from and its options (str fields with a default)."""
    kernel = ""                     # the kernel's name in every check's name
    dtype: torch.dtype
    B: int                          # sequences
    T: int                          # tokens each

    @property
    def name(self) -> str:
        """Kernel, dtype, sizes and state, then each option not at its default: "wkv float32 B=2 T=30 C=16 prefix"."""
        words = [self.kernel, str(self.dtype).removeprefix("torch.")]
        for f in dataclasses.fields(self)[1:]:
            value = getattr(self, f.name)
            if isinstance(value, int):
                words.append(f"{f.name}={value}")
            elif f.name == "state" or value != f.default:
                words.append(value)
        return " ".join(words)


@dataclass(frozen=True)
class Case(KernelCase):
    """One kernel check: shapes, the initial state, the input values and the memory layout.

    state: "empty", "prefix" (as a real prefix leaves it), "mixed" (even sequences empty, odd ones with a
      prefix) or "cleared" (bb = 0 with a finite pp far above every token's exponent: read as empty).
    values: "normal" (random_inputs: decays over orders of magnitude, k ~ N(0, 1)), "k_large" (k up to 60:
      e^k overflows float32 without the running max), "k_very_negative" (down to -60), "w_near_zero"
      (decay -1e-8: a plain running average) or "w_huge" (decay -1e4: forgets everything at once).
    layout: "contiguous" or "strided" (k, v, the state and the gradient of y as transposed views, w and u
      as every other element of a wider tensor).
    """
    kernel = "wkv"
    C: int                          # channels
    state: str = "empty"
    values: str = "normal"
    layout: str = "contiguous"


def _case_inputs(B: int, T: int, C: int, state: str, values: str, seed: int):
    from .ops.kernel_bench import random_inputs
    from .ops.wkv_reference import empty_state, wkv_reference

    time_decay, u, k, v = random_inputs(B, T, C, "cpu", seed=seed)
    w = -torch.exp(time_decay)
    g = torch.Generator().manual_seed(seed + 2)
    if values == "k_large":
        k = torch.rand(B, T, C, generator=g) * 60.0
    elif values == "k_very_negative":
        k = -torch.rand(B, T, C, generator=g) * 60.0
    elif values == "w_near_zero":
        w = torch.full((C,), -1e-8)
    elif values == "w_huge":
        w = torch.full((C,), -1e4)
    # a state as a real prefix leaves it (bb > 0, pp a log scale)
    _, _, pk, pv = random_inputs(B, 9, C, "cpu", seed=seed + 1)
    prefix = wkv_reference(w, u, pk, pv)[1]
    if state == "empty":
        state0 = empty_state(B, C)
    elif state == "prefix":
        state0 = prefix
    elif state == "mixed":
        state0 = torch.where((torch.arange(B) % 2 == 1)[:, None, None], prefix, empty_state(B, C))
    else:  # cleared: bb = 0 means no past, whatever aa and pp hold
        state0 = torch.stack([torch.randn(B, C, generator=g), torch.zeros(B, C),
                              100.0 + 50.0 * torch.rand(B, C, generator=g)], dim=1)
    gy, gs = torch.randn(B, T, C, generator=g), torch.randn(B, 3, C, generator=g)
    if values == "w_near_zero":
        # float32 cannot tell w + pp from pp here, so which of (w + pp, k) wins the max differs from the
        # float64 reference wherever they are close, and with it the gradient that the state's aa, bb, pp
        # *as numbers* pass back (a max has a jump in its gradient). The loss reaches y only: a smooth function.
        gs = torch.zeros_like(gs)
    return w, u, k, v, state0, gy, gs


def _strided(x: torch.Tensor) -> torch.Tensor:
    """A non-contiguous view holding x's values: a transposed copy (3-D) or every other element of a wider one."""
    if x.dim() == 3 and x.shape[1] > 1 and x.shape[2] > 1:
        return x.transpose(1, 2).contiguous().transpose(1, 2)
    return torch.stack([x, torch.zeros_like(x)], dim=-1)[..., 0]


def _leaves(device, dtype, layout, w, u, k, v, state0) -> list[torch.Tensor]:
    """w, u, k, v and the initial state on `device` (k, v in `dtype`), as leaves that take gradients."""
    wide = torch.float64 if dtype == torch.float64 else torch.float32   # w, u and the state
    leaves = []
    for t, dt in ((w, wide), (u, wide), (k, dtype), (v, dtype), (state0, wide)):
        t = t.to(device=device, dtype=dt)
        if layout == "strided":
            t = _strided(t)
            if t.numel() > 1:
                assert not t.is_contiguous(), "a strided case must hand the kernel non-contiguous inputs"
        leaves.append(t.detach().requires_grad_())
    return leaves


def _forward_backward(fn, leaves, gy: torch.Tensor, gs: torch.Tensor):
    """fn's outputs and the gradients of (y . gy + state . gs) in every leaf."""
    y, state = fn(*leaves)
    # the loss reaches y and every row of the returned state, pp included
    loss = (y.to(gy.dtype) * gy).sum() + (state.to(gs.dtype) * gs).sum()
    loss.backward()
    return y, state, [t.grad for t in leaves]


def _on_every_grid(x: torch.Tensor) -> torch.Tensor:
    """x rounded to numbers that float32, bfloat16 and float16 all hold exactly (bf16's 8-bit mantissa,
    fp16's normal range), so one float64 reference serves the three dtypes."""
    x = x.bfloat16().float()
    return torch.where(x.abs() < 2.0 ** -14, torch.zeros_like(x), x).clamp(-60000.0, 60000.0)


@lru_cache(maxsize=1)
def _reference_case(B: int, T: int, C: int, state: str, values: str, seed: int):
    """Inputs and the float64 reference's outputs and gradients on the CPU (autograd through the loop)."""
    from .ops.wkv_reference import wkv_reference

    w, u, k, v, state0, gy, gs = _case_inputs(B, T, C, state, values, seed)
    k, v, gy = _on_every_grid(k), _on_every_grid(v), _on_every_grid(gy)
    with torch.enable_grad():
        leaves = _leaves("cpu", torch.float64, "contiguous", w, u, k, v, state0)
        want = _forward_backward(wkv_reference, leaves, gy.double(), gs.double())
    return (w, u, k, v, state0, gy, gs), want


def _bounds(case: Case) -> tuple[float, float, float]:
    """(y, state, gradients) bounds for float32 arithmetic (see the tolerances above)."""
    if case.T >= LONG_T:
        return LONG_VALUES, LONG_VALUES, LONG_GRADS
    if case.values in EXTREME_BOUNDS:
        return EXTREME_BOUNDS[case.values]
    return F32_Y, F32_STATE, F32_GRADS


def _same_scale(state: torch.Tensor, want: torch.Tensor):
    """(got, want) pairs of the rows aa, bb, pp, with got's aa, bb rescaled to want's pp.

    (aa, bb, pp) stands for (aa e^pp, bb e^pp): a rounding of pp (absolute, ~ulp(pp) a step) moves aa, bb
    by the same relative amount without changing the numbers they stand for, so they are compared on the
    reference's scale, and pp on its own.
    """
    state, want = state.detach().double().cpu(), want.detach().double().cpu()
    shift = torch.exp(state[:, 2] - want[:, 2])
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    return [(state[:, 0] * shift, want[:, 0]), (state[:, 1] * shift, want[:, 1]), (state[:, 2], want[:, 2])]


def _errors(case: Case, got, want, no_grad) -> dict[str, tuple[float, float]]:
    """name -> (error, bound) for every output and gradient, and the forward-only outputs."""
    y_bound, state_bound, grads = _bounds(case)
    stored = HALF_STORED[case.dtype]
    errors: dict[str, tuple[float, float]] = {}
    for prefix, (y, state) in (("", got[:2]), ("no_grad.", no_grad)):
        errors[f"{prefix}y"] = (_max_rel(y, want[0]), y_bound + stored)
        for name, (row, row_want) in zip(("aa", "bb", "pp"), _same_scale(state, want[1])):
            errors[f"{prefix}state.{name}"] = (_max_rel(row, row_want), state_bound)
    for name, g_got, g_want in zip(("w", "u", "k", "v", "state0"), got[2], want[2]):
        errors[f"grad.{name}"] = (_max_rel(g_got, g_want), grads + (stored if name in ("k", "v") else 0.0))
    return errors


def _verdict(errors: dict[str, tuple[float, float]]) -> tuple[bool, str]:
    worst = max(errors, key=lambda n: errors[n][0] / errors[n][1])
    err, bound = errors[worst]
    return (True, f"worst {worst} {err:.2g} <= {bound:.2g}") if err <= bound else \
        (False, f"{worst} {err:.3g} > {bound:.2g}")


def _on_device(t: torch.Tensor, device: str) -> bool:
    want = torch.device(device)
    return t.device.type == want.type and (want.index is None or t.device.index == want.index)


def check_wkv_case(device: str, case: Case, seed: int = 0) -> tuple[bool, str]:
    """The kernel on `device` against the float64 reference on the CPU, with and without autograd;
    (passed, worst error / bound)."""
    from .ops import wkv as wkv_ops

    inputs, want = _reference_case(case.B, case.T, case.C, case.state, case.values, seed)
    w, u, k, v, state0, gy, gs = inputs
    # k, v and gy (which the kernel casts to k's dtype) are exact in `dtype`: only the kernel's arithmetic
    # and the rounding of what it stores in `dtype` are measured
    leaves = _leaves(device, case.dtype, case.layout, w, u, k, v, state0)
    gy = gy.to(device)
    gy = _strided(gy) if case.layout == "strided" else gy
    got = _forward_backward(wkv_ops.wkv, leaves, gy, gs.to(device))
    with torch.no_grad():                                  # the forward-only path (no scratch saved)
        no_grad = wkv_ops.wkv(*leaves)
    misplaced = [t for t in (got[0], got[1], no_grad[0]) if not _on_device(t, device)]
    if misplaced:
        return False, f"outputs on {misplaced[0].device}, not {device}"
    return _verdict(_errors(case, got, want, no_grad))


def wkv_cases(quick: bool = False) -> list[Case]:
    """Every kernel check; `quick` keeps short sequences (the tests run them on the CPU kernel).

    Shapes: B x C = 600 and 1 are not multiples of the CUDA block (128 threads) nor of the CPU kernel's
    64-channel block, so both kernels' partial-block paths run.
    """
    if quick:
        groups = [(3, 1, 80, ["empty", "prefix"]), (2, 300, 70, ["empty", "prefix strided"]), (4, 600, 16, ["mixed"]),
                  (3, 37, 200, ["prefix"]), (1, 50, 1, ["empty"]), (2, 16, 200, ["cleared"])]
        extremes = (3, 64, 200)
    else:
        groups = [(3, 1, 768, ["empty", "prefix"]), (2, 4096, 256, ["empty", "prefix strided"]),
                  (4, LONG_T, 64, ["mixed"]), (3, 257, 200, ["prefix"]), (1, 1000, 1, ["empty"]),
                  (2, 64, 200, ["cleared"])]
        extremes = (3, 512, 200)
    specs = [(B, T, C, *(v.split() + ["contiguous"])[:2], "normal") for B, T, C, variants in groups for v in variants]
    specs += [(*extremes, "prefix", "contiguous", values) for values in EXTREME_BOUNDS]
    # dtype innermost: the three share one reference run
    return [Case(dtype, B, T, C, state, values, layout) for B, T, C, state, layout, values in specs
            for dtype in (torch.float32, torch.bfloat16, torch.float16)]


# ------------------------------------------------------------------------------------------ devices, streams
def _inputs_written_late(device: str, tensors: list[torch.Tensor], run, sleep_cycles: int):
    """run(copies) on a new stream that first sleeps ~0.3 s and then copies `tensors` into NaN-filled `copies`:
    a kernel launched on any other stream runs at once, reads NaN and fails the comparison."""
    copies = [torch.full_like(t, float("nan")) for t in tensors]
    torch.cuda.synchronize(device)
    stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        torch.cuda._sleep(sleep_cycles)
        for copy, t in zip(copies, tensors):
            copy.copy_(t)
        out = run(copies)
    torch.cuda.synchronize(device)
    return out


def check_side_stream(device: str = "cuda", sleep_cycles: int = 500_000_000) -> tuple[bool, str]:
    """A WKV-4 case, forward and backward, run on a non-default stream whose inputs are written late."""
    from .ops import wkv as wkv_ops

    case = Case(torch.float32, 3, 257, 200, "prefix")
    inputs, want = _reference_case(case.B, case.T, case.C, case.state, case.values, 0)
    w, u, k, v, state0, gy, gs = inputs
    true = [t.detach() for t in _leaves(device, case.dtype, case.layout, w, u, k, v, state0)]
    gy, gs = gy.to(device), gs.to(device)

    def run(leaves):
        for leaf in leaves:
            leaf.requires_grad_()
        got = _forward_backward(wkv_ops.wkv, leaves, gy, gs)
        with torch.no_grad():
            return got, wkv_ops.wkv(*leaves)

    got, no_grad = _inputs_written_late(device, true, run, sleep_cycles)
    ok, detail = _verdict(_errors(case, got, want, no_grad))
    return ok, f"{case.name} on a side stream: {detail}"


def check_second_device(device_count: int | None = None, op: str = "wkv") -> tuple[bool | None, str]:
    """A WKV-4 (op "wkv") or WKV-7 ("wkv7") case on cuda:1 while cuda:0 is the current device (a missing
    device guard launches on cuda:0)."""
    count = torch.cuda.device_count() if device_count is None else device_count
    if count < 2:
        return None, "one GPU: not checked"
    current = torch.cuda.current_device()
    if op == "wkv7":
        case = STREAM_CASE7
        ok, detail = check_wkv7_case("cuda:1", case)
    else:
        case = Case(torch.float32, 3, 257, 200, "prefix")
        ok, detail = check_wkv_case("cuda:1", case)
    if torch.cuda.current_device() != current:
        return False, f"the current device changed from {current} to {torch.cuda.current_device()}"
    return ok, f"{case.name} on cuda:1 (current device {current}): {detail}"


# ------------------------------------------------------------------------------------------ WKV-7 cases
# The WKV-7 kernel (forward only) against the float64 reference on the same inputs: r, k, v, a, b rounded to
# bfloat16's grid for both dtypes, w float32 as the model passes it (ops/wkv7.py casts it to float32
# whatever it gets), so only the kernel's own arithmetic and the rounding of y stored in bfloat16 are measured. Errors
# as above: max |got - want| / max |want|, y and the state each as one tensor.
#
# float32 arithmetic: every token's row update is a 64-term dot product (S a) and an axpy, y a 64-term dot
#   product. Each token removes part of the state along kk and decays the rest (w from 0.545 to 1, mean
#   0.74), so the state forgets within a few dozen tokens and roundings do not pile up along the sequence. Measured at B = 2,
#   T = 4,096, H = 12: the CPU kernel (SIMD partial sums) y 3.0e-7, state 7.7e-8; a float32 emulation of
#   the CUDA kernel's order (one term at a time, fused multiply-adds: tests/test_gpu_check.py) y 3.0e-7,
#   state 1.2e-7. Bounds 1e-5, 30x those, and 10x below a kernel that is off by 1e-4 (which the tests
#   show failing, with kernels that ignore the state carried in, leave the state elsewhere or ignore the
#   packed rows' batch stride).
# bfloat16 inputs: the state stays float32 (the same bound); y is stored in bfloat16, one more rounding of up
#   to 2^-8 of the largest y (HALF_STORED; measured up to 3.2e-3).
WKV7_Y, WKV7_STATE = 1e-5, 1e-5
WKV7_DTYPES = (torch.float32, torch.bfloat16)
WKV7_N = 64          # every published RWKV-7's head size, the only one the CUDA kernel takes


@dataclass(frozen=True)
class Case7(KernelCase):
    """One WKV-7 kernel check: shapes, the state carried in and where it lives, the inputs' memory layout.

    state: "zero" or "carried" (a random state in, which every early token's y reads).
    at: where the state lives: "own" (a contiguous (B, H, N, N) tensor), "packed" (inside the model's state
      rows, after the two token shifts: a batch stride of C (N + 2), and the shifts must stay untouched) or
      "transposed" (each N x N block stored column-major: ops.wkv7 works on a copy and writes it back).
    layout: "contiguous" or "strided" (r, w, k, v, a, b as transposed views).
    """
    kernel = "wkv7"
    H: int                          # heads of WKV7_N channels
    state: str = "carried"
    at: str = "own"
    layout: str = "contiguous"


@lru_cache(maxsize=1)
def _wkv7_reference_case(B: int, T: int, H: int, state: str, seed: int):
    """Inputs (r, w, k, v, a, b, state0) and the float64 reference's (y, state) on the CPU."""
    from .ops.kernel_bench import wkv7_inputs
    from .ops.wkv7 import wkv7_reference

    (r, w, k, v, a, b), _ = wkv7_inputs(B, T, H * WKV7_N, "cpu", seed=seed)
    r, k, v, a, b = (x.bfloat16().float() for x in (r, k, v, a, b))   # exact in both dtypes
    state0 = torch.zeros(B, H, WKV7_N, WKV7_N)
    if state == "carried":
        state0 = 0.5 * torch.randn(B, H, WKV7_N, WKV7_N, generator=torch.Generator().manual_seed(seed + 1))
    s_want = state0.double()
    y_want = wkv7_reference(*(x.double() for x in (r, w, k, v, a, b)), s_want)
    return (r, w, k, v, a, b, state0), (y_want, s_want)


PACKED_FILL = 7.0    # the packed rows' token shifts: a kernel that writes outside the WKV state changes them


def _wkv7_state(at: str, state0: torch.Tensor, device: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The state to hand the kernel, holding state0, and (for "packed") the whole rows it lives in."""
    B, H, N, _ = state0.shape
    if at == "packed":
        rows = torch.full((B, H * N * (N + 2)), PACKED_FILL, device=device)
        state = rows[:, 2 * H * N:].view(B, H, N, N)          # as models/rwkv7.py's Block takes it
    elif at == "transposed":
        rows, state = None, torch.empty(B, H, N, N, device=device).transpose(2, 3)
    else:
        rows, state = None, torch.empty(B, H, N, N, device=device)
    state.copy_(state0)
    return state, rows


def check_wkv7_case(device: str, case: Case7, seed: int = 0) -> tuple[bool, str]:
    """The WKV-7 kernel on `device` against the float64 reference on the CPU: y, and the state it leaves in
    the tensor it was given; (passed, worst error / bound or what is wrong)."""
    from .ops import wkv7 as ops

    impl = ops.implementation_name(device)
    if impl == "reference":
        return False, "ops.wkv7 runs the PyTorch reference here, not a kernel"
    inputs, (y_want, s_want) = _wkv7_reference_case(case.B, case.T, case.H, case.state, seed)
    *args, state0 = inputs
    args = [x.to(device, torch.float32 if i == 1 else case.dtype) for i, x in enumerate(args)]   # w: float32
    if case.layout == "strided":
        args = [_strided(x) for x in args]
        assert not any(x.is_contiguous() for x in args), "a strided case must hand wkv7 non-contiguous inputs"
    state, rows = _wkv7_state(case.at, state0, device)
    y = ops.wkv7(*args, state)
    if not _on_device(y, device) or y.dtype != case.dtype:
        return False, f"y is {y.dtype} on {y.device}, not {case.dtype} on {device}"
    if rows is not None and not bool((rows[:, :2 * case.H * WKV7_N] == PACKED_FILL).all()):
        return False, "the token shifts next to the packed state changed"
    errors = {"y": (_max_rel(y, y_want), WKV7_Y + HALF_STORED[case.dtype]),
              "state": (_max_rel(state, s_want), WKV7_STATE)}
    ok, detail = _verdict(errors)
    return ok, f"{impl}: {detail}"


def wkv7_cases(quick: bool = False) -> list[Case7]:
    """Every WKV-7 check, float32 and bfloat16 each; `quick` keeps short sequences (the tests run them on the
    CPU kernel). B x H = 21 (H = 7, B = 3) fills no power-of-two grid of (sequence, head) blocks evenly."""
    if quick:
        shapes = [(2, 300, 3, "carried", "packed", "contiguous"), (4, 1, 12, "carried", "packed", "contiguous"),
                  (3, 37, 7, "carried", "own", "contiguous"), (2, 40, 3, "carried", "transposed", "strided"),
                  (2, 16, 2, "zero", "own", "contiguous")]
    else:
        shapes = [(2, 4096, 12, "carried", "packed", "contiguous"), (4, 1, 12, "carried", "packed", "contiguous"),
                  (3, 257, 7, "carried", "own", "contiguous"), (2, 300, 3, "carried", "transposed", "strided"),
                  (2, 64, 2, "zero", "own", "contiguous")]
    # dtype innermost: the two share one reference run
    return [Case7(dtype, B, T, H, state, at, layout) for B, T, H, state, at, layout in shapes
            for dtype in WKV7_DTYPES]


STREAM_CASE7 = Case7(torch.float32, 3, 257, 7)


def check_wkv7_side_stream(device: str = "cuda", sleep_cycles: int = 500_000_000) -> tuple[bool, str]:
    """A WKV-7 case run on a non-default stream whose inputs and state are written late."""
    from .ops import wkv7 as ops

    case = STREAM_CASE7
    inputs, (y_want, s_want) = _wkv7_reference_case(case.B, case.T, case.H, case.state, 0)
    true = [x.to(device) for x in inputs]         # r, w, k, v, a, b, state0: all float32

    def run(copies):
        state = copies[-1]
        return ops.wkv7(*copies[:-1], state), state

    y, state = _inputs_written_late(device, true, run, sleep_cycles)
    ok, detail = _verdict({"y": (_max_rel(y, y_want), WKV7_Y), "state": (_max_rel(state, s_want), WKV7_STATE)})
    return ok, f"{case.name} on a side stream: {detail}"


# ------------------------------------------------------------------------------------------ the model
def _sequence_vs_recurrent(model, tokens: torch.Tensor, chunk_size: int = 100):
    """(logits, state) of the chunked sequence mode and of the recurrent mode, TF32 matmuls off."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        par, s_par = model(tokens, chunk_size=chunk_size)   # several chunks: the state carries between them
        rec, s_rec = model(tokens, mode="recurrent")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    return (par, s_par), (rec, s_rec)


def _tokens(vocab_size: int, B: int, T: int, device: str) -> torch.Tensor:
    return torch.randint(0, vocab_size, (B, T), generator=torch.Generator().manual_seed(1)).to(device)


def check_model(device: str, preset: str = "rwkv4-169m", T: int = 256, B: int = 2) -> tuple[bool, str]:
    """Our RWKV-4 parallel (chunked, with the WKV kernel) vs recurrent (token by token) on `device`."""
    from .models.presets import random_preset_model
    from .ops.wkv import implementation_name

    model = random_preset_model(preset, seed=0).to(device).eval()
    (par, s_par), (rec, s_rec) = _sequence_vs_recurrent(model, _tokens(model.config.vocab_size, B, T, device))
    err, err_state = _max_rel(rec, par), _max_rel(s_rec[:, :3], s_par[:, :3])
    ok = max(err, err_state) <= MODEL_REL
    return ok, (f"{implementation_name(device)}, B={B} T={T}: logits {err:.2g}, state {err_state:.2g} "
                f"{'<=' if ok else '>'} {MODEL_REL:g}")


def check_rwkv7_model(device: str, preset: str = "rwkv7-168m", T: int = 256, B: int = 2) -> tuple[bool, str]:
    """Our RWKV-7 at a preset's size, sequence mode (chunks through the WKV-7 kernel) vs recurrent mode (one
    token per call) on `device`. Dense random weights (init_random_): the preset's x070 init zeroes every
    block's output projections, so its logits would not depend on the WKV at all."""
    from .models.presets import RWKV7_VOCAB, split_preset
    from .models.rwkv7 import RWKV7, RWKV7Config, init_random_
    from .ops.wkv7 import implementation_name

    family, size = split_preset(preset) or (None, None)
    if family != "rwkv7":
        raise ValueError(f"not an rwkv7 preset: {preset}")
    config = RWKV7Config(vocab_size=RWKV7_VOCAB, n_layer=size.n_layer, n_embd=size.n_embd)
    model = init_random_(RWKV7(config), seed=0).to(device).eval()
    (par, s_par), (rec, s_rec) = _sequence_vs_recurrent(model, _tokens(config.vocab_size, B, T, device))
    shifts = 2 * config.n_embd                 # each state row: two token shifts, then the WKV state
    errors = {"logits": (_max_rel(rec, par), MODEL_REL),
              "wkv state": (_max_rel(s_rec[..., shifts:], s_par[..., shifts:]), MODEL_REL),
              "token shifts": (_max_rel(s_rec[..., :shifts], s_par[..., :shifts]), MODEL_REL)}
    ok, detail = _verdict(errors)
    return ok, f"{implementation_name(device)}, B={B} T={T}: {detail}"


# ------------------------------------------------------------------------------------------ the sweep
def console_script() -> str:
    """The `rwkv-bench` console script of this interpreter's environment (as a user would type it)."""
    here = Path(sys.executable).parent / "rwkv-bench"
    return str(here) if here.exists() else (shutil.which("rwkv-bench") or "rwkv-bench")


def check_sweep(out: Path, device: str = "cuda", models: str = "rwkv4-169m,gptneox-169m",
                max_len: int = 16384, timeout_s: float = SWEEP_TIMEOUT_S) -> tuple[bool, str]:
    cmd = [console_script(), "scaling", "--device", device, "--models", models, "--max-len", str(max_len),
           "--out", str(out)]
    print("$ " + " ".join(cmd), flush=True)
    try:
        proc = subprocess.run(cmd, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout_s:g} s"
    points = sorted(out.rglob("points.csv"))
    if proc.returncode != 0 or not points:
        return False, f"exit code {proc.returncode}, points.csv {'found' if points else 'missing'} under {out}"
    return sweep_verdict(points[-1].parent)


def sweep_verdict(run_dir: Path) -> tuple[bool, str]:
    """Passed when some point ran and none failed with an error; the counts and the longest T that ran."""
    from .scaling.store import read_points

    rows = read_points(run_dir)
    status = rows["status"].value_counts().to_dict() if len(rows) else {}
    longest = int(rows.loc[rows["status"] == "ok", "seq_len"].max()) if status.get("ok") else 0
    ok = status.get("ok", 0) > 0 and status.get("error", 0) == 0
    return ok, f"{len(rows)} points {status}, longest ok T={longest}, {run_dir}"


# ------------------------------------------------------------------------------------------ driver
def _timed(name: str, fn) -> Result:
    t0 = time.perf_counter()
    try:
        ok, detail = fn()
    except Exception as exc:  # noqa: BLE001  (a crash is a failed check, reported in one line)
        ok, detail = False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    result = Result(name, ok, time.perf_counter() - t0, detail)
    print(f"{_verdict_word(ok).upper()}  {name}  ({result.seconds:.1f} s)  {detail}", flush=True)
    return result


def _verdict_word(ok: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: "n/a"}[ok]


def _kernel_checks(device: str, label: str, build, cases: list[KernelCase], check_case) -> list[Result]:
    """A kernel's build (a row of its own), then its cases when it built."""
    built = _timed(f"build {device} {label} kernel", lambda: (True, build(device)))
    if not built.ok:
        return [built]
    return [built] + [_timed(case.name, lambda: check_case(device, case)) for case in cases]


def run_checks(device: str, quick: bool = False, model: bool = True, sweep_out: Path | None = None,
               deadline: float | None = None) -> list[Result]:
    """Every check on `device`; the sweep gets what is left until `deadline` (time.perf_counter()).
    A kernel that cannot be built fails its build row, and the checks that need it do not run."""
    from .ops.wkv import require_kernel
    from .ops.wkv7 import require_kernel as require_wkv7_kernel

    results = _kernel_checks(device, "WKV-4", require_kernel, wkv_cases(quick), check_wkv_case)
    wkv_built = results[0].ok
    wkv7_results = _kernel_checks(device, "WKV-7", require_wkv7_kernel, wkv7_cases(quick), check_wkv7_case)
    wkv7_built = wkv7_results[0].ok
    results += wkv7_results
    if device.startswith("cuda"):
        if wkv_built:
            results.append(_timed("wkv on a non-default stream", lambda: check_side_stream(device)))
            results.append(_timed("wkv on a second device", check_second_device))
        if wkv7_built:
            results.append(_timed("wkv7 on a non-default stream", lambda: check_wkv7_side_stream(device)))
            results.append(_timed("wkv7 on a second device", lambda: check_second_device(op="wkv7")))
    if model and wkv_built:
        results.append(_timed("rwkv4-169m parallel vs recurrent", lambda: check_model(device)))
    if model and wkv7_built:
        results.append(_timed("rwkv7-168m sequence vs recurrent", lambda: check_rwkv7_model(device)))
    if sweep_out is not None and wkv_built:
        left = SWEEP_TIMEOUT_S if deadline is None else deadline - time.perf_counter()
        timeout = max(MIN_SWEEP_S, min(SWEEP_TIMEOUT_S, left))
        results.append(_timed("scaling sweep to 16,384 tokens", lambda: check_sweep(sweep_out, device,
                                                                                   timeout_s=timeout)))
    return results


def table(results: list[Result]) -> str:
    width = max(len(r.check) for r in results)
    lines = [f"| {'check'.ljust(width)} | result | seconds | detail |", f"|{'-' * (width + 2)}|--------|--------:|--------|"]
    lines += [f"| {r.check.ljust(width)} | {_verdict_word(r.ok).ljust(6)} | {r.seconds:7.1f} | {r.detail} |"
              for r in results]
    return "\n".join(lines)


def plan() -> str:
    """What the check runs and how long it should take on one H100 (estimates: no GPU has run it yet)."""
    before_sweep = sum(ESTIMATE_S.values())
    parts = ", ".join(f"{name} ~{seconds} s" for name, seconds in ESTIMATE_S.items())
    sweep = min(SWEEP_TIMEOUT_S, BUDGET_S - before_sweep)
    return (f"plan: WKV-4: build, {len(wkv_cases())} kernel cases, a side stream, a second device; WKV-7: build, "
            f"{len(wkv7_cases())} kernel cases, a side stream, a second device; the rwkv4 and rwkv7 models; the "
            f"sweep; estimated {parts}, then the sweep with what is left of {BUDGET_S} s (~{sweep} s): "
            f"under {BUDGET_S / 60:.1f} min")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rwkv_bench.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="run directory of the scaling sweep")
    parser.add_argument("--skip-sweep", action="store_true")
    parser.add_argument("--skip-model", action="store_true")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); "
              "nothing was checked", file=sys.stderr)
        return EXIT_NO_CUDA
    print(f"gpu-check on {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}", flush=True)
    print(plan(), flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rwkv-bench-gpu-check-") as tmp:
        sweep_out = None if args.skip_sweep else (args.out or Path(tmp) / "scaling")
        results = run_checks("cuda", model=not args.skip_model, sweep_out=sweep_out, deadline=t0 + BUDGET_S)
    print()
    print(table(results))
    failed = sum(r.ok is False for r in results)
    unchecked = sum(r.ok is None for r in results)
    print(f"\n{len(results) - failed - unchecked} passed, {failed} failed, {unchecked} not checked "
          f"in {time.perf_counter() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
