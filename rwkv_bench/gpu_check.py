"""`make gpu-check` (python -m rwkv_bench.gpu_check): what this project has to verify on its first CUDA machine.

On the CUDA machine, in under 10 minutes (the plan and its time estimate: ESTIMATE_S below):
  1. the CUDA WKV kernel against the float64 PyTorch reference, forward and backward (values, the returned
     state and the gradients of w, u, k, v and the initial state) and forward-only (no autograd, no scratch),
     each in float32, bfloat16 and float16 k, v (`wkv_cases`):
     - T = 1, 4,096 and 100,000, B > 1;
     - shapes whose B x C is not a multiple of the 128-thread block (B = 3, C = 200; B = 1, C = 1);
     - non-contiguous inputs (k, v, the state and the gradient of y transposed, w and u strided);
     - initial states: empty, as a prefix leaves it, mixed in one batch, and bb = 0 with a finite pp (the
       contract: read as empty, kernels/wkv_step.h initial_pp);
     - extreme values: k up to 60 and down to -60, decay -1e-8 and -1e4, from a non-empty state;
  2. a case on a non-default stream (a launch on another stream reads the inputs before they exist) and,
     with two GPUs, one on cuda:1 while cuda:0 is current (a missing device guard); one GPU: "not checked";
  3. our rwkv4-169m (random weights) parallel vs recurrent on CUDA;
  4. a short scaling sweep on CUDA through the console script, as a user runs it:
     rwkv-bench scaling --device cuda --models rwkv4-169m,gptneox-169m --max-len 16384 --out <dir>,
     with what is left of the time budget;
then prints a pass/fail table with timings and exits 0 only if nothing failed.

Without CUDA it exits at once with one line on stderr and exit code 3 (the checks themselves take a device,
so the tests run them on the CPU kernel, which shares kernels/wkv_step.h with the CUDA one).

Options: --out DIR (the sweep's run directory; default a temporary one), --skip-sweep, --skip-model.
"""
from __future__ import annotations

import argparse
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
# comparisons on the CPU), the stream and device checks ~20 s; the model ~15 s. The sweep comes last and
# gets what is left of BUDGET_S (at most SWEEP_TIMEOUT_S), so the whole check stays under 10 minutes even
# where these estimates are off.
ESTIMATE_S = {"build": 80, "references": 45, "kernel cases": 20, "model": 15}
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
class Case:
    """One kernel check: shapes, the initial state, the input values and the memory layout.

    state: "empty", "prefix" (as a real prefix leaves it), "mixed" (even sequences empty, odd ones with a
      prefix) or "cleared" (bb = 0 with a finite pp far above every token's exponent: read as empty).
    values: "normal" (random_inputs: decays over orders of magnitude, k ~ N(0, 1)), "k_large" (k up to 60:
      e^k overflows float32 without the running max), "k_very_negative" (down to -60), "w_near_zero"
      (decay -1e-8: a plain running average) or "w_huge" (decay -1e4: forgets everything at once).
    layout: "contiguous" or "strided" (k, v, the state and the gradient of y as transposed views, w and u
      as every other element of a wider tensor).
    """
    dtype: torch.dtype
    B: int
    T: int
    C: int
    state: str = "empty"
    values: str = "normal"
    layout: str = "contiguous"

    @property
    def name(self) -> str:
        extras = [x for x in (self.values, self.layout) if x not in ("normal", "contiguous")]
        return " ".join([f"wkv {str(self.dtype).removeprefix('torch.')} B={self.B} T={self.T} C={self.C}",
                         self.state, *extras])


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
def check_side_stream(device: str = "cuda", sleep_cycles: int = 500_000_000) -> tuple[bool, str]:
    """A case run on a non-default stream that first waits ~0.3 s and then writes the inputs: a kernel
    launched on any other stream runs at once, reads NaN and fails the comparison."""
    from .ops import wkv as wkv_ops

    case = Case(torch.float32, 3, 257, 200, "prefix")
    inputs, want = _reference_case(case.B, case.T, case.C, case.state, case.values, 0)
    w, u, k, v, state0, gy, gs = inputs
    true = [t.detach() for t in _leaves(device, case.dtype, case.layout, w, u, k, v, state0)]
    gy, gs = gy.to(device), gs.to(device)
    leaves = [torch.full_like(t, float("nan")) for t in true]
    torch.cuda.synchronize(device)
    stream = torch.cuda.Stream(device)
    with torch.cuda.stream(stream):
        torch.cuda._sleep(sleep_cycles)
        for leaf, t in zip(leaves, true):
            leaf.copy_(t)
            leaf.requires_grad_()
        got = _forward_backward(wkv_ops.wkv, leaves, gy, gs)
        with torch.no_grad():
            no_grad = wkv_ops.wkv(*leaves)
    torch.cuda.synchronize(device)
    ok, detail = _verdict(_errors(case, got, want, no_grad))
    return ok, f"{case.name} on a side stream: {detail}"


def check_second_device(device_count: int | None = None) -> tuple[bool | None, str]:
    """A case on cuda:1 while cuda:0 is the current device (a missing device guard launches on cuda:0)."""
    count = torch.cuda.device_count() if device_count is None else device_count
    if count < 2:
        return None, "one GPU: not checked"
    case = Case(torch.float32, 3, 257, 200, "prefix")
    current = torch.cuda.current_device()
    ok, detail = check_wkv_case("cuda:1", case)
    if torch.cuda.current_device() != current:
        return False, f"the current device changed from {current} to {torch.cuda.current_device()}"
    return ok, f"{case.name} on cuda:1 (current device {current}): {detail}"


# ------------------------------------------------------------------------------------------ the model
def check_model(device: str, preset: str = "rwkv4-169m", T: int = 256, B: int = 2) -> tuple[bool, str]:
    """Our RWKV-4 parallel (chunked, with the WKV kernel) vs recurrent (token by token) on `device`."""
    from .models.presets import random_preset_model
    from .ops.wkv import implementation_name

    model = random_preset_model(preset, seed=0).to(device).eval()
    tokens = torch.randint(0, model.config.vocab_size, (B, T), generator=torch.Generator().manual_seed(1)).to(device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        par, s_par = model(tokens, chunk_size=100)          # 3 chunks: the state carries between them
        rec, s_rec = model(tokens, mode="recurrent")
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    err, err_state = _max_rel(rec, par), _max_rel(s_rec[:, :3], s_par[:, :3])
    ok = max(err, err_state) <= MODEL_REL
    return ok, (f"{implementation_name(device)}, B={B} T={T}: logits {err:.2g}, state {err_state:.2g} "
                f"{'<=' if ok else '>'} {MODEL_REL:g}")


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


def run_checks(device: str, quick: bool = False, model: bool = True, sweep_out: Path | None = None,
               deadline: float | None = None) -> list[Result]:
    """Every check on `device`; the sweep gets what is left until `deadline` (time.perf_counter())."""
    from .ops.wkv import require_kernel

    results = [_timed(f"build {device} kernel", lambda: (True, require_kernel(device)))]
    if not results[0].ok:
        return results
    for case in wkv_cases(quick):
        results.append(_timed(case.name, lambda: check_wkv_case(device, case)))
    if device.startswith("cuda"):
        results.append(_timed("wkv on a non-default stream", lambda: check_side_stream(device)))
        results.append(_timed("wkv on a second device", check_second_device))
    if model:
        results.append(_timed("rwkv4-169m parallel vs recurrent", lambda: check_model(device)))
    if sweep_out is not None:
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
    return (f"plan: build, {len(wkv_cases())} WKV kernel cases, a side stream, a second device, the model, "
            f"the sweep; estimated {parts}, then the sweep with what is left of {BUDGET_S} s (~{sweep} s): "
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
