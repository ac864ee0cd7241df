"""`make gpu-check`: without CUDA it stops at once; its checks themselves run here on the CPU kernel (which
shares kernels/wkv_step.h, and for WKV-7 kernels/wkv7_step.h, with the CUDA one), so the first GPU machine only
meets code that has already run."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rwkv_bench import gpu_check


@pytest.mark.needs_gpu  # skipped only where a GPU exists: there `make gpu-check` runs for real
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: `make gpu-check` runs for real")
def test_without_cuda_it_exits_at_once_with_one_line():
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "rwkv_bench.gpu_check"], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == gpu_check.EXIT_NO_CUDA != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0], proc.stderr
    assert proc.stdout == ""
    assert time.monotonic() - start < 60


def test_the_kernel_checks_pass_on_the_cpu_kernel(capsys):
    results = gpu_check.run_checks("cpu", quick=True, model=False)
    assert len(results) == 2 + len(gpu_check.wkv_cases(quick=True)) + len(gpu_check.wkv7_cases(quick=True)) == 48
    assert all(r.ok for r in results), gpu_check.table(results)
    table = gpu_check.table(results)
    assert "wkv torch.bfloat16" not in table and "| wkv bfloat16 B=3 T=1 C=80 prefix" in table
    for name in ("float16 B=2 T=300 C=70 prefix strided", "bfloat16 B=2 T=16 C=200 cleared",
                 "float32 B=3 T=64 C=200 prefix k_large", "float16 B=1 T=50 C=1 empty"):
        assert f"| wkv {name} " in table, name
    assert "| build cpu WKV-4 kernel " in table and "| build cpu WKV-7 kernel " in table
    for name in ("float32 B=2 T=300 H=3 carried packed", "bfloat16 B=4 T=1 H=12 carried packed",
                 "bfloat16 B=3 T=37 H=7 carried", "float32 B=2 T=40 H=3 carried transposed strided",
                 "bfloat16 B=2 T=16 H=2 zero"):
        assert f"| wkv7 {name} " in table, name
    assert table.count("cpu-kernel: worst") == len(gpu_check.wkv7_cases(quick=True))


@pytest.mark.parametrize("quick", [True, False])
def test_the_cases_cover_partial_blocks_layouts_states_values_and_dtypes(quick):
    cases = gpu_check.wkv_cases(quick)
    assert any(c.B * c.C == 1 for c in cases)
    assert any(c.B * c.C % 128 and c.C % 64 and c.B > 1 for c in cases)    # partial blocks on both kernels
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        mine = [c for c in cases if c.dtype == dtype]
        assert {c.layout for c in mine} == {"contiguous", "strided"}
        assert {c.state for c in mine} == {"empty", "prefix", "mixed", "cleared"}
        assert {c.values for c in mine} == {"normal", "k_large", "k_very_negative", "w_near_zero", "w_huge"}
    assert any(c.T >= gpu_check.LONG_T for c in cases) != quick


@pytest.mark.parametrize("quick", [True, False])
def test_the_wkv7_cases_cover_dtypes_states_layouts_decode_and_partial_shapes(quick):
    cases = gpu_check.wkv7_cases(quick)
    for dtype in (torch.float32, torch.bfloat16):
        mine = [c for c in cases if c.dtype == dtype]
        assert {c.state for c in mine} == {"zero", "carried"}
        assert {c.at for c in mine} == {"own", "packed", "transposed"}
        assert {c.layout for c in mine} == {"contiguous", "strided"}
        assert any(c.T == 1 and c.state == "carried" and c.B > 1 for c in mine)     # a decode step
        assert any((c.B, c.H) == (3, 7) for c in mine)                               # a partial shape
        assert all(c.B > 1 for c in mine)
    assert {c.dtype for c in cases} == set(gpu_check.WKV7_DTYPES) == {torch.float32, torch.bfloat16}
    assert max(c.T for c in cases) == (300 if quick else 4096)


def off_by_a_little(monkeypatch, only_without_grad=False):
    from rwkv_bench.ops import wkv as wkv_ops

    real = wkv_ops.wkv

    def off(w, u, k, v, state=None):
        y, s = real(w, u, k, v, state)
        return (y * (1 + 1e-4), s) if not (only_without_grad and torch.is_grad_enabled()) else (y, s)

    monkeypatch.setattr(wkv_ops, "wkv", off)


def test_a_kernel_that_is_off_fails_its_check(monkeypatch):
    off_by_a_little(monkeypatch)
    ok, detail = gpu_check.check_wkv_case("cpu", gpu_check.Case(torch.float32, 2, 30, 16, "prefix"), seed=5)
    assert not ok and detail.startswith("y "), detail


def test_a_forward_only_path_that_is_off_fails_its_check(monkeypatch):
    off_by_a_little(monkeypatch, only_without_grad=True)
    ok, detail = gpu_check.check_wkv_case("cpu", gpu_check.Case(torch.float32, 2, 30, 16, "empty"), seed=5)
    assert not ok and detail.startswith("no_grad.y "), detail


def test_a_kernel_that_ignores_strides_fails_the_strided_case(monkeypatch):
    from rwkv_bench.ops import wkv as wkv_ops

    real = wkv_ops.wkv

    def reads_storage_as_contiguous(w, u, k, v, state=None):
        B, T, C = k.shape
        return real(w, u, k.as_strided((B, T, C), (T * C, C, 1)), v, state)

    monkeypatch.setattr(wkv_ops, "wkv", reads_storage_as_contiguous)
    case = gpu_check.Case(torch.float32, 2, 30, 16, "prefix", layout="strided")
    ok, detail = gpu_check.check_wkv_case("cpu", case)
    assert not ok, detail
    assert gpu_check.check_wkv_case("cpu", gpu_check.Case(torch.float32, 2, 30, 16, "prefix"))[0]


def test_a_kernel_that_flushes_a_cleared_state_to_nan_fails(monkeypatch):
    from rwkv_bench.ops import wkv as wkv_ops
    from rwkv_bench.ops.wkv_reference import EMPTY_PP

    real = wkv_ops.wkv

    def before_the_contract(w, u, k, v, state=None):
        y, s = real(w, u, k, v, state)
        cleared = (state[:, 1] == 0) & (state[:, 2] > EMPTY_PP)
        return torch.where(cleared[:, None, :], torch.full_like(y, float("nan")), y), s

    monkeypatch.setattr(wkv_ops, "wkv", before_the_contract)
    ok, detail = gpu_check.check_wkv_case("cpu", gpu_check.Case(torch.float32, 2, 16, 200, "cleared"))
    assert not ok and "inf" in detail, detail


# ---- WKV-7: kernels that are off in one way each fail their check; the CUDA kernel's order passes


def patch_wkv7(monkeypatch, wrap):
    """ops.wkv7 replaced by wrap(real_wkv7), as gpu_check calls it."""
    from rwkv_bench.ops import wkv7 as ops

    monkeypatch.setattr(ops, "wkv7", wrap(ops.wkv7))


SMALL7 = gpu_check.Case7(torch.float32, 2, 30, 2, "carried", "packed")


def test_wkv7_check_passes_the_real_kernel_and_names_it():
    ok, detail = gpu_check.check_wkv7_case("cpu", SMALL7)
    assert ok and detail.startswith("cpu-kernel: worst "), detail


def test_a_wkv7_kernel_that_is_off_by_a_little_fails(monkeypatch):
    patch_wkv7(monkeypatch, lambda real: lambda *args: real(*args) * (1 + 1e-4))
    ok, detail = gpu_check.check_wkv7_case("cpu", SMALL7)
    assert not ok and detail.startswith("cpu-kernel: y "), detail


def test_a_wkv7_kernel_that_leaves_the_state_elsewhere_fails(monkeypatch):
    patch_wkv7(monkeypatch, lambda real: lambda *args: real(*args[:-1], args[-1].clone()))
    ok, detail = gpu_check.check_wkv7_case("cpu", SMALL7)
    assert not ok and "state " in detail, detail


def test_a_wkv7_kernel_that_ignores_the_state_carried_in_fails(monkeypatch):
    def from_zero(real):
        def run(*args):
            args[-1].zero_()
            return real(*args)
        return run

    patch_wkv7(monkeypatch, from_zero)
    decode = gpu_check.Case7(torch.float32, 4, 1, 12, "carried", "packed")
    ok, detail = gpu_check.check_wkv7_case("cpu", decode)
    assert not ok and "y " in detail, detail


def test_a_wkv7_kernel_that_ignores_the_batch_stride_of_packed_rows_fails(monkeypatch):
    def as_contiguous(real):
        def run(*args):
            state = args[-1]
            B, H, N, _ = state.shape
            return real(*args[:-1], state.as_strided(state.shape, (H * N * N, N * N, N, 1)))
        return run

    patch_wkv7(monkeypatch, as_contiguous)
    ok, detail = gpu_check.check_wkv7_case("cpu", SMALL7)
    assert not ok and "token shifts" in detail, detail


def test_a_wkv7_kernel_that_returns_float32_for_bfloat16_fails(monkeypatch):
    patch_wkv7(monkeypatch, lambda real: lambda *args: real(*args).float())
    ok, detail = gpu_check.check_wkv7_case("cpu", gpu_check.Case7(torch.bfloat16, 2, 30, 2))
    assert not ok and "torch.float32" in detail, detail


def test_the_wkv7_check_fails_where_the_reference_runs_instead_of_a_kernel(monkeypatch):
    monkeypatch.setenv("RWKV_BENCH_WKV", "reference")
    ok, detail = gpu_check.check_wkv7_case("cpu", SMALL7)
    assert not ok and "reference" in detail, detail


def _fma(a, b, c):
    """a * b + c rounded once to float32 (float64 holds the product of two float32s exactly)."""
    return (a.double() * b.double() + c.double()).float()


def wkv7_in_cuda_order(r, w, k, v, a, b, state):
    """kernels/wkv7_cuda.cu's arithmetic in float32: one thread per state row, 64-term sums taken one term
    at a time, multiply-adds fused as nvcc contracts them (the CPU kernel sums in SIMD lanes instead)."""
    B, T, C = r.shape
    H, N = state.shape[1], state.shape[2]
    per_head = [x.float().reshape(B, T, H, 1, N).expand(B, T, H, N, N) for x in (r, w, k, a, b)]
    r_, w_, k_, a_, b_ = per_head                  # [..., i, j]: column j's value, the same for every row i
    v_ = v.float().reshape(B, T, H, N)
    S = state.float().clone()
    y = torch.empty(B, T, H, N)
    for t in range(T):
        sa = torch.zeros(B, H, N)
        for j in range(N):
            sa = _fma(S[..., j], a_[:, t, ..., j], sa)
        acc = torch.zeros(B, H, N)
        for j in range(N):
            x = _fma(v_[:, t], k_[:, t, ..., j], _fma(sa, b_[:, t, ..., j], S[..., j] * w_[:, t, ..., j]))
            S[..., j] = x
            acc = _fma(x, r_[:, t, ..., j], acc)
        y[:, t] = acc
    state.copy_(S)
    return y.reshape(B, T, C).to(r.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_cuda_kernels_summation_order_passes_the_wkv7_bounds(monkeypatch, dtype):
    # the bounds hold for the GPU's order of operations, not only for the CPU kernel's, with room to spare;
    # and the emulation really rounds (an exact one would say nothing)
    patch_wkv7(monkeypatch, lambda real: wkv7_in_cuda_order)
    ok, detail = gpu_check.check_wkv7_case("cpu", gpu_check.Case7(dtype, 2, 40, 2, "carried", "packed"))
    assert ok, detail
    if dtype == torch.float32:
        worst = float(detail.split()[3])
        assert 1e-8 < worst < gpu_check.WKV7_Y / 5, detail


def test_the_wkv7_check_fails_without_its_kernel_and_the_rest_still_runs(monkeypatch):
    from rwkv_bench.ops import wkv7 as ops

    def broken_build(*args, **kwargs):
        raise RuntimeError("Error building extension 'wkv7': [1/2] c++ ...\nwkv7_cpu.cpp:3: error: boom")

    monkeypatch.setattr(ops.KERNELS, "_extensions", {})
    monkeypatch.setattr(ops.KERNELS, "_failures", {})
    monkeypatch.setattr(ops.KERNELS, "build", broken_build)
    monkeypatch.setattr(gpu_check, "wkv_cases", lambda quick=False: [gpu_check.Case(torch.float32, 2, 30, 16)])
    monkeypatch.setattr(gpu_check, "check_model", lambda device: (True, "a stand-in for the rwkv4-169m check"))
    results = gpu_check.run_checks("cpu", quick=True, model=True)
    assert [r.check for r in results] == ["build cpu WKV-4 kernel", "wkv float32 B=2 T=30 C=16 empty",
                                          "build cpu WKV-7 kernel", "rwkv4-169m parallel vs recurrent"]
    build7 = results[2]
    assert build7.ok is False and "error: boom" in build7.detail and "\n" not in build7.detail, build7.detail
    assert results[1].ok and results[3].ok


def test_device_checks_say_what_one_gpu_cannot_check(capsys):
    assert gpu_check.check_second_device(device_count=1) == (None, "one GPU: not checked")
    result = gpu_check._timed("wkv on a second device", lambda: gpu_check.check_second_device(device_count=1))
    assert result.ok is None and "N/A  wkv on a second device" in capsys.readouterr().out
    assert "| n/a    |" in gpu_check.table([result])
    assert gpu_check.check_second_device(device_count=1, op="wkv7") == (None, "one GPU: not checked")


@pytest.fixture
def cuda_streams_on_the_cpu(monkeypatch):
    """torch.cuda's stream calls as no-ops, so the side-stream checks' own code runs here on the CPU kernels
    (what a stream changes is left for the GPU)."""
    import contextlib

    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: object())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "_sleep", lambda cycles: None)


def test_the_side_stream_checks_run_and_compare(cuda_streams_on_the_cpu, monkeypatch):
    ok, detail = gpu_check.check_side_stream("cpu")
    assert ok and detail.startswith("wkv float32 B=3 T=257 C=200 prefix on a side stream: worst"), detail
    ok, detail = gpu_check.check_wkv7_side_stream("cpu")
    assert ok and detail.startswith("wkv7 float32 B=3 T=257 H=7 carried on a side stream: worst"), detail
    # the inputs as a launch on the wrong stream would find them (NaN) fail it
    monkeypatch.setattr(gpu_check, "_inputs_written_late", lambda device, tensors, run, cycles:
                        run([torch.full_like(t, float("nan")) for t in tensors]))
    ok, detail = gpu_check.check_wkv7_side_stream("cpu")
    assert not ok and "inf" in detail, detail


def test_the_plan_fits_ten_minutes_and_the_sweep_gets_what_is_left(monkeypatch, tmp_path):
    assert sum(gpu_check.ESTIMATE_S.values()) + gpu_check.MIN_SWEEP_S <= gpu_check.BUDGET_S < 600
    plan = gpu_check.plan()
    assert "under 9.5 min" in plan and f"WKV-4: build, {len(gpu_check.wkv_cases())} kernel cases" in plan
    assert f"WKV-7: build, {len(gpu_check.wkv7_cases())} kernel cases" in plan and "rwkv7 model ~15 s" in plan
    timeouts = []
    monkeypatch.setattr(gpu_check, "wkv_cases", lambda quick=False: [])
    monkeypatch.setattr(gpu_check, "wkv7_cases", lambda quick=False: [])
    monkeypatch.setattr(gpu_check, "check_sweep", lambda out, device, timeout_s: (timeouts.append(timeout_s), "")
                        and (True, "fake sweep"))
    gpu_check.run_checks("cpu", model=False, sweep_out=tmp_path, deadline=time.perf_counter() + 200)
    gpu_check.run_checks("cpu", model=False, sweep_out=tmp_path, deadline=time.perf_counter() + 5000)
    gpu_check.run_checks("cpu", model=False, sweep_out=tmp_path, deadline=time.perf_counter() - 10)
    assert 190 < timeouts[0] <= 200 and timeouts[1] == gpu_check.SWEEP_TIMEOUT_S
    assert timeouts[2] == gpu_check.MIN_SWEEP_S


def test_model_check_parallel_vs_recurrent():
    ok, detail = gpu_check.check_model("cpu", preset="rwkv4-tiny", T=40, B=2)
    assert ok, detail


def test_rwkv7_model_check_sequence_vs_recurrent(monkeypatch):
    ok, detail = gpu_check.check_rwkv7_model("cpu", preset="rwkv7-tiny", T=24, B=2)
    assert ok and detail.startswith("cpu-kernel, B=2 T=24: worst "), detail
    with pytest.raises(ValueError, match="not an rwkv7 preset"):
        gpu_check.check_rwkv7_model("cpu", preset="rwkv4-tiny")
    # a WKV-7 that, over more than one token, forgets to leave its state in the model's rows fails it
    from rwkv_bench.models import rwkv7

    real = rwkv7.wkv7
    monkeypatch.setattr(rwkv7, "wkv7", lambda *args: real(*args[:-1], args[-1].clone() if args[0].shape[1] > 1
                                                          else args[-1]))
    ok, detail = gpu_check.check_rwkv7_model("cpu", preset="rwkv7-tiny", T=24, B=2)
    assert not ok and "wkv state" in detail, detail


def fake_console_script(tmp_path, body: str) -> str:
    script = tmp_path / "rwkv-bench"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def test_sweep_check_reads_the_run_directory(tmp_path, monkeypatch):
    # the CLI writes <out>/.../points.csv in the scaling store's columns; the check reports its statuses and
    # the longest length measured
    script = fake_console_script(tmp_path, 'out=$(echo "$@" | sed "s/.*--out //")\nmkdir -p "$out/run"\n'
                                           'printf "model,scenario,seq_len,status\\nrwkv4-169m,prefill,16,ok\\n'
                                           'rwkv4-169m,prefill,16384,ok\\ngptneox-169m,prefill,16384,oom\\n" '
                                           '> "$out/run/points.csv"\n')
    monkeypatch.setattr(gpu_check, "console_script", lambda: script)
    ok, detail = gpu_check.check_sweep(tmp_path / "out")
    assert ok and "longest ok T=16384" in detail and "'oom': 1" in detail, detail
    monkeypatch.setattr(gpu_check, "console_script", lambda: fake_console_script(tmp_path, "exit 2\n"))
    ok, detail = gpu_check.check_sweep(tmp_path / "out2")
    assert not ok and "exit code 2" in detail


def test_without_the_wkv4_kernel_its_checks_stop_at_the_build_row_saying_why(monkeypatch):
    from rwkv_bench.ops import wkv as wkv_ops

    def broken_build(kind):
        raise RuntimeError("Error building extension 'wkv': [1/2] nvcc ...\nwkv_cuda.cu:3: error: boom")

    monkeypatch.setattr(wkv_ops.KERNELS, "_extensions", {})
    monkeypatch.setattr(wkv_ops.KERNELS, "_failures", {})
    monkeypatch.setattr(wkv_ops.KERNELS, "build", broken_build)
    monkeypatch.setattr(gpu_check, "wkv7_cases", lambda quick=False: [])
    result, build7 = gpu_check.run_checks("cpu", quick=True, model=False, sweep_out=Path("unused"))
    assert result.ok is False and "error: boom" in result.detail and "\n" not in result.detail, result.detail
    assert build7.check == "build cpu WKV-7 kernel" and build7.ok
