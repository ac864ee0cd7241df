"""WKV-7: the C++ CPU kernel against the PyTorch reference (in float64), in sequence and step mode, with a state
in and out, B > 1 and a state that lives inside a bigger tensor; the CUDA kernel compiles with nvcc."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rwkv_bench.ops import wkv7 as ops
from rwkv_bench.ops.compiled import KernelUnavailable
from rwkv_bench.ops.kernel_build import CACHE_ENV

from test_kernel_build import (assert_nvcc_rejects_a_type_error_in_the_kernels, assert_the_halves_link,
                               compiled_cuda_extension, symbols)
from test_kernel_cache import fake_compiler


def inputs(B, T, H, N, seed=0):
    """Inputs shaped like RWKV-7's: decays in (0.545, 1), a unit removal direction per head, a in (0, 1)."""
    g = torch.Generator().manual_seed(seed)
    C = H * N
    r, k, v = (torch.randn(B, T, C, generator=g) for _ in range(3))
    w = torch.exp(-0.6065 * torch.rand(B, T, C, generator=g))
    kk = torch.nn.functional.normalize(torch.randn(B, T, H, N, generator=g), dim=-1).reshape(B, T, C)
    a = torch.rand(B, T, C, generator=g)
    state = 0.3 * torch.randn(B, H, N, N, generator=g)
    return (r, w, k, v, -kk, kk * a), state


def exact(args, state):
    s = state.double()
    y = ops.wkv7_reference(*(t.double() for t in args), s)
    return y, s


@pytest.fixture(scope="module")
def kernel():
    assert ops.implementation_name("cpu") == "cpu-kernel"   # the kernel builds here, never silently skipped
    return ops.KERNELS.select("cpu")[1]


@pytest.mark.parametrize("B,T,H,N", [(1, 1, 12, 64), (3, 57, 2, 64), (2, 33, 3, 32), (1, 300, 1, 64)])
def test_cpu_kernel_matches_reference(kernel, B, T, H, N):
    args, state = inputs(B, T, H, N)
    y_ref, s_ref = exact(args, state)
    s = state.clone()
    y = ops.wkv7(*args, s)
    assert (y.double() - y_ref).abs().max() < 1e-4 * max(1.0, y_ref.abs().max().item())
    assert (s.double() - s_ref).abs().max() < 1e-5 * max(1.0, s_ref.abs().max().item())


def test_state_carried_across_calls_and_steps(kernel):
    """One call over T tokens = two calls = T single steps, each continuing the state the last one left."""
    args, state = inputs(2, 40, 2, 64, seed=1)
    s_once = state.clone()
    y_once = ops.wkv7(*args, s_once)
    s_split = state.clone()
    y_split = torch.cat([ops.wkv7(*(t[:, :17] for t in args), s_split),
                         ops.wkv7(*(t[:, 17:] for t in args), s_split)], 1)
    s_step = state.clone()
    y_step = torch.cat([ops.wkv7(*(t[:, i:i + 1] for t in args), s_step) for i in range(40)], 1)
    torch.testing.assert_close(y_split, y_once, rtol=0, atol=0)
    torch.testing.assert_close(s_split, s_once, rtol=0, atol=0)
    torch.testing.assert_close(y_step, y_once, rtol=0, atol=0)
    torch.testing.assert_close(s_step, s_once, rtol=0, atol=0)


def test_state_inside_a_bigger_tensor(kernel):
    """The model's state rows pack token shifts next to the WKV state: the kernel updates the WKV part in place
    through a view with a batch stride of its own and leaves the rest untouched."""
    B, T, H, N = 3, 9, 2, 64
    C = H * N
    args, state = inputs(B, T, H, N, seed=2)
    packed = torch.full((B, C * (N + 2)), 7.0)
    view = packed[:, 2 * C:].view(B, H, N, N)
    view.copy_(state)
    y = ops.wkv7(*args, view)
    y_ref, s_ref = exact(args, state)
    assert (y.double() - y_ref).abs().max() < 1e-4 * y_ref.abs().max()
    assert (view.double() - s_ref).abs().max() < 1e-5 * s_ref.abs().max()
    assert bool((packed[:, :2 * C] == 7.0).all())


def test_rows_are_independent_sequences(kernel):
    """Row b of a batch gives what sequence b alone gives."""
    args, state = inputs(3, 20, 2, 64, seed=3)
    s = state.clone()
    y = ops.wkv7(*args, s)
    for b in range(3):
        s_b = state[b:b + 1].clone()
        y_b = ops.wkv7(*(t[b:b + 1] for t in args), s_b)
        torch.testing.assert_close(y[b:b + 1], y_b, rtol=0, atol=0)
        torch.testing.assert_close(s[b:b + 1], s_b, rtol=0, atol=0)


def test_other_dtypes_are_computed_in_float32(kernel):
    args, state = inputs(1, 16, 1, 64, seed=4)
    s32, s16 = state.clone(), state.clone()
    y32 = ops.wkv7(*args, s32)
    y16 = ops.wkv7(*(t.bfloat16() for t in args), s16)
    assert y16.dtype == torch.bfloat16 and s16.dtype == torch.float32
    assert (y16.float() - y32).abs().max() < 0.05 * y32.abs().max()


def test_decode_step_stays_on_one_thread_and_long_chunks_split(kernel):
    assert kernel.chunks_for(1, 1, 12, 64) == 1
    if torch.get_num_threads() > 1:
        assert kernel.chunks_for(1, 1024, 12, 64) > 1


def test_bad_shapes_are_refused():
    args, state = inputs(1, 4, 2, 64)
    with pytest.raises(ValueError, match="state"):
        ops.wkv7(*args, state[:, :1])
    with pytest.raises(ValueError, match="float32"):
        ops.wkv7(*args, state.double())


def test_reference_mode_is_forced_by_the_environment(monkeypatch):
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    assert ops.implementation_name("cpu") == "reference"


def test_a_sweep_with_an_rwkv7_model_requires_the_wkv7_kernel(monkeypatch):
    from types import SimpleNamespace

    from rwkv_bench.scaling.sweep import wkv_mode
    from rwkv_bench.specs import parse

    def sweep(*models, allow_reference=False):
        return SimpleNamespace(specs=[parse(m) for m in models], device="cpu", allow_reference=allow_reference)

    said = []
    console = SimpleNamespace(print=lambda text, **kwargs: said.append(text))
    assert wkv_mode(sweep("rwkv7-tiny"), console) == "kernel"

    def broken_build(kind):
        raise RuntimeError("Error building extension 'wkv7'\n[1/2] c++ ...\nwkv7_cpu.cpp:3: error: boom")

    monkeypatch.setattr(ops.KERNELS, "_extensions", {})
    monkeypatch.setattr(ops.KERNELS, "_failures", {})
    monkeypatch.setattr(ops.KERNELS, "build", broken_build)
    with pytest.raises(KernelUnavailable, match="WKV-7 cpu kernel is unavailable.*error: boom"):
        wkv_mode(sweep("rwkv4-tiny", "rwkv7-tiny"), console)
    assert wkv_mode(sweep("rwkv4-tiny"), console) == "kernel"         # RWKV-4 alone does not need WKV-7
    assert wkv_mode(sweep("rwkv7-tiny", allow_reference=True), console) == "reference"
    assert len(said) == 1 and "WKV-7" in said[0], said

FALL_BACK = """
import torch
from rwkv_bench.ops import wkv7 as ops
from test_rwkv7_kernels import inputs
args, state = inputs(2, 5, 2, 8)
s_ref = state.clone()
y_ref = ops.wkv7_reference(*args, s_ref)
y = ops.wkv7(*args, state)
ops.wkv7(*args, state.clone())
assert torch.equal(y, y_ref) and torch.equal(state, s_ref)
print(ops.implementation_name("cpu"))
"""


@pytest.mark.timeout(300)
def test_a_kernel_that_cannot_be_built_falls_back_in_one_plain_line(tmp_path):
    """Said once on stderr as WKV-4 says it: no Python warning with a source line."""
    cxx = fake_compiler(tmp_path)
    env = {**os.environ, CACHE_ENV: str(tmp_path / "cache"), "CXX": cxx,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    env.pop(ops.ENV_VAR, None)
    proc = subprocess.run([sys.executable, "-c", FALL_BACK], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["reference"], proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("rwkv-bench: the WKV-7 cpu kernel is unavailable, using the PyTorch reference instead")
    assert "fakecc: error: cannot compile anything" in lines[0] and "Warning" not in proc.stderr, proc.stderr


@pytest.mark.needs_nvcc
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH (it is on the dev machines and CI)")
def test_cuda_kernel_compiles_with_nvcc(tmp_path):
    objects = compiled_cuda_extension(ops, tmp_path)
    kernels = symbols(objects["wkv7_cuda.cu"], "--defined-only")
    for dtype in ("float", "c10::BFloat16"):
        for name in ("forward_kernel", "launch_forward"):
            assert any(f"{name}<{dtype}>(" in s for s in kernels), (name, dtype)
    assert_the_halves_link(objects, "wkv7")
    assert_nvcc_rejects_a_type_error_in_the_kernels(ops, tmp_path / "negative")


def test_kernels_command_times_and_checks_wkv7(kernel):
    from rwkv_bench.ops.kernel_bench import run_kernel_benchmark

    rows = [r for r in run_kernel_benchmark([16], channels=128, progress=False) if r["op"] == "wkv7"]
    assert {r["impl"] for r in rows} == {"reference", "cpu-kernel"}
    for r in rows:
        assert r["ms"] > 0 and r["max_abs_err"] < 1e-4 and (r["B"], r["T"], r["C"]) == (1, 16, 128)
