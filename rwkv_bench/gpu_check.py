"""`make gpu-check` (python -m rwkv_bench.gpu_check): what this project has to verify on its first CUDA machine.

On one CUDA device, in under 10 minutes:
  1. the CUDA WKV kernel against the float64 PyTorch reference, forward and backward (values, the returned
     state and the gradients of w, u, k, v and the initial state), for float32, bfloat16 and float16 k, v,
     B > 1, T = 1, 4,096 and 100,000, with and without an initial state;
  2. our rwkv4-169m (random weights) parallel vs recurrent on CUDA;
  3. a short scaling sweep on CUDA through the console script, as a user runs it:
     rwkv-bench scaling --device cuda --models rwkv4-169m,gptneox-169m --max-len 16384 --out <dir>;
then prints a pass/fail table with timings and exits 0 only if everything passed.

Without CUDA it exits at once with one line on stderr and exit code 3 (the checks themselves take a device,
so the tests run them on the CPU kernel, which shares kernels/wkv_step.h with the CUDA one).

Options: --out DIR (the sweep's run directory; default a temporary one), --skip-sweep, --skip-model.
"""
from __future__ import annotations

import argparse
import csv
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
SWEEP_TIMEOUT_S = 420

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
#   and the state is 5e-5; gw, gu sum 2 x 100,000 terms in float32 (error ~ sqrt(n) ulp), 1e-3.
F32_Y, F32_STATE, F32_GRADS = 1e-5, 2e-5, 1e-4
LONG_T, LONG_VALUES, LONG_GRADS = 100_000, 5e-5, 1e-3
HALF_STORED = {torch.float32: 0.0, torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}
# rwkv4-169m parallel (chunked WKV kernel, GEMMs) vs recurrent (WKV steps in torch, GEMVs): the same
# float32 math in another order through 12 layers of random weights; ~1e-6 relative per layer, and the
# logits' scale makes 1e-4 relative of their max a bound that a real bug (a wrong state row, a shifted
# token) exceeds by orders of magnitude. TF32 matmuls are switched off for the comparison.
MODEL_REL = 1e-4


@dataclass
class Result:
    check: str
    ok: bool
    seconds: float
    detail: str


def _max_rel(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double().cpu(), want.detach().double().cpu()
    if not torch.isfinite(got).all():
        return float("inf")
    scale = want.abs().max().item()
    return (got - want).abs().max().item() / scale if scale > 0 else (got - want).abs().max().item()


# ------------------------------------------------------------------------------------------ WKV cases
def _case_inputs(B: int, T: int, C: int, with_state: bool, seed: int):
    from .ops.kernel_bench import random_inputs
    from .ops.wkv_reference import empty_state, wkv_reference

    time_decay, u, k, v = random_inputs(B, T, C, "cpu", seed=seed)
    w = -torch.exp(time_decay)
    if with_state:
        # a state as a real prefix leaves it (bb > 0, pp a log scale)
        _, _, pk, pv = random_inputs(B, 9, C, "cpu", seed=seed + 1)
        state0 = wkv_reference(w, u, pk, pv)[1]
    else:
        state0 = empty_state(B, C)
    g = torch.Generator().manual_seed(seed + 2)
    gy, gs = torch.randn(B, T, C, generator=g), torch.randn(B, 3, C, generator=g)
    return w, u, k, v, state0, gy, gs


def _run(fn, device, dtype, w, u, k, v, state0, gy, gs):
    """fn's outputs and the gradients of (y . gy + state . gs) in w, u, k, v and the initial state."""
    wide = torch.float64 if dtype == torch.float64 else torch.float32   # w, u and the state
    leaves = [t.to(device=device, dtype=dt).clone().requires_grad_()
              for t, dt in ((w, wide), (u, wide), (k, dtype), (v, dtype), (state0, wide))]
    y, state = fn(*leaves)
    # the loss reaches y and every row of the returned state, pp included
    loss = (y.to(gy.dtype) * gy.to(device)).sum() + (state.to(gs.dtype) * gs.to(device)).sum()
    loss.backward()
    return y, state, [t.grad for t in leaves]


def _on_every_grid(x: torch.Tensor) -> torch.Tensor:
    """x rounded to numbers that float32, bfloat16 and float16 all hold exactly (bf16's 8-bit mantissa,
    fp16's normal range), so one float64 reference serves the three dtypes."""
    x = x.bfloat16().float()
    return torch.where(x.abs() < 2.0 ** -14, torch.zeros_like(x), x).clamp(-60000.0, 60000.0)


@lru_cache(maxsize=1)
def _reference_case(B: int, T: int, C: int, with_state: bool, seed: int):
    """Inputs and the float64 reference's outputs and gradients on the CPU (autograd through the loop)."""
    from .ops.wkv_reference import wkv_reference

    w, u, k, v, state0, gy, gs = _case_inputs(B, T, C, with_state, seed)
    k, v, gy = _on_every_grid(k), _on_every_grid(v), _on_every_grid(gy)
    with torch.enable_grad():
        want = _run(wkv_reference, "cpu", torch.float64, w, u, k, v, state0, gy.double(), gs.double())
    return (w, u, k, v, state0, gy, gs), want


def check_wkv_case(device: str, dtype: torch.dtype, B: int, T: int, C: int, with_state: bool,
                   seed: int = 0) -> tuple[bool, str]:
    """The kernel on `device` against the float64 reference on the CPU; (passed, worst error / bound)."""
    from .ops import wkv as wkv_ops

    inputs, want = _reference_case(B, T, C, with_state, seed)
    w, u, k, v, state0, gy, gs = inputs
    # k, v and gy (which the kernel casts to k's dtype) are exact in `dtype`: only the kernel's arithmetic
    # and the rounding of what it stores in `dtype` are measured
    got = _run(wkv_ops.wkv, device, dtype, w, u, k, v, state0, gy, gs)
    long = T >= LONG_T
    y_bound, state_bound, grads = (LONG_VALUES, LONG_VALUES, LONG_GRADS) if long else (F32_Y, F32_STATE, F32_GRADS)
    stored = HALF_STORED[dtype]
    errors: dict[str, tuple[float, float]] = {"y": (_max_rel(got[0], want[0]), y_bound + stored)}
    for row, name in enumerate(("aa", "bb", "pp")):
        errors[f"state.{name}"] = (_max_rel(got[1][:, row], want[1][:, row]), state_bound)
    for name, g_got, g_want in zip(("w", "u", "k", "v", "state0"), got[2], want[2]):
        if name == "state0" and not with_state:
            # empty state: pp = -1e38 loses every max, so only aa, bb's gradients mean anything
            g_got, g_want = g_got[:, :2], g_want[:, :2]
        errors[f"grad.{name}"] = (_max_rel(g_got, g_want), grads + (stored if name in ("k", "v") else 0.0))
    worst = max(errors, key=lambda n: errors[n][0] / errors[n][1])
    err, bound = errors[worst]
    return err <= bound, f"worst {worst} {err:.2g} <= {bound:.2g}" if err <= bound else \
        f"{worst} {err:.3g} > {bound:.2g}"


def wkv_cases(quick: bool = False) -> list[tuple[torch.dtype, int, int, int, bool]]:
    """(dtype, B, T, C, with_state) for every kernel check; `quick` keeps short sequences (the tests)."""
    lengths = [(1, 3, 768), (4096, 2, 256), (LONG_T, 2, 64)]
    if quick:
        lengths = [(1, 3, 80), (300, 2, 70)]
    # dtype innermost: the three share one reference run
    return [(dtype, B, T, C, with_state) for T, B, C in lengths for with_state in (False, True)
            for dtype in (torch.float32, torch.bfloat16, torch.float16)]


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
    rows = list(csv.DictReader(points[-1].open()))
    status: dict[str, int] = {}
    for row in rows:
        status[row.get("status", "?")] = status.get(row.get("status", "?"), 0) + 1
    longest = max((int(r["T"]) for r in rows if r.get("status") == "ok" and r.get("T", "").isdigit()), default=0)
    ok = status.get("ok", 0) > 0 and status.get("error", 0) == 0
    return ok, f"{len(rows)} points {status}, longest ok T={longest}, {points[-1].parent}"


# ------------------------------------------------------------------------------------------ driver
def _timed(name: str, fn) -> Result:
    t0 = time.perf_counter()
    try:
        ok, detail = fn()
    except Exception as exc:  # noqa: BLE001  (a crash is a failed check, reported in one line)
        ok, detail = False, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    result = Result(name, ok, time.perf_counter() - t0, detail)
    print(f"{'PASS' if ok else 'FAIL'}  {name}  ({result.seconds:.1f} s)  {detail}", flush=True)
    return result


def run_checks(device: str, quick: bool = False, model: bool = True, sweep_out: Path | None = None) -> list[Result]:
    from .ops.wkv import implementation_name

    results = [_timed(f"build {device} kernel", lambda: (implementation_name(device) != "reference",
                                                         implementation_name(device)))]
    if not results[0].ok:
        return results
    for dtype, B, T, C, with_state in wkv_cases(quick):
        name = f"wkv {str(dtype).removeprefix('torch.')} B={B} T={T} C={C} {'state' if with_state else 'empty'}"
        results.append(_timed(name, lambda: check_wkv_case(device, dtype, B, T, C, with_state)))
    if model:
        results.append(_timed("rwkv4-169m parallel vs recurrent", lambda: check_model(device)))
    if sweep_out is not None:
        results.append(_timed("scaling sweep to 16,384 tokens", lambda: check_sweep(sweep_out, device)))
    return results


def table(results: list[Result]) -> str:
    width = max(len(r.check) for r in results)
    lines = [f"| {'check'.ljust(width)} | result | seconds | detail |", f"|{'-' * (width + 2)}|--------|--------:|--------|"]
    lines += [f"| {r.check.ljust(width)} | {'pass' if r.ok else 'FAIL'}   | {r.seconds:7.1f} | {r.detail} |"
              for r in results]
    return "\n".join(lines)


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
    print(f"gpu-check on {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}",
          flush=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rwkv-bench-gpu-check-") as tmp:
        sweep_out = None if args.skip_sweep else (args.out or Path(tmp) / "scaling")
        results = run_checks("cuda", model=not args.skip_model, sweep_out=sweep_out)
    print()
    print(table(results))
    failed = sum(not r.ok for r in results)
    print(f"\n{len(results) - failed} passed, {failed} failed in {time.perf_counter() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
