"""`make gpu-check`: without CUDA it stops at once; its checks themselves run here on the CPU kernel (which
shares kernels/wkv_step.h with the CUDA one), so the first GPU machine only meets code that has already run."""
import os
import subprocess
import sys
import time

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
    assert len(results) == 1 + len(gpu_check.wkv_cases(quick=True)) == 37
    assert all(r.ok for r in results), gpu_check.table(results)
    table = gpu_check.table(results)
    assert "wkv torch.bfloat16" not in table and "| wkv bfloat16 B=3 T=1 C=80 prefix" in table
    for name in ("float16 B=2 T=300 C=70 prefix strided", "bfloat16 B=2 T=16 C=200 cleared",
                 "float32 B=3 T=64 C=200 prefix k_large", "float16 B=1 T=50 C=1 empty"):
        assert f"| wkv {name} " in table, name


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


def test_device_checks_say_what_one_gpu_cannot_check(capsys):
    assert gpu_check.check_second_device(device_count=1) == (None, "one GPU: not checked")
    result = gpu_check._timed("wkv on a second device", lambda: gpu_check.check_second_device(device_count=1))
    assert result.ok is None and "N/A  wkv on a second device" in capsys.readouterr().out
    assert "| n/a    |" in gpu_check.table([result])


def test_the_plan_fits_ten_minutes_and_the_sweep_gets_what_is_left(monkeypatch, tmp_path):
    assert sum(gpu_check.ESTIMATE_S.values()) + gpu_check.MIN_SWEEP_S <= gpu_check.BUDGET_S < 600
    assert "under 9.5 min" in gpu_check.plan() and f"{len(gpu_check.wkv_cases())} WKV" in gpu_check.plan()
    timeouts = []
    monkeypatch.setattr(gpu_check, "wkv_cases", lambda quick=False: [])
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


def test_without_the_kernel_it_stops_after_the_build_check_saying_why(monkeypatch):
    from rwkv_bench.ops import wkv as wkv_ops

    def broken_build(kind):
        raise RuntimeError("Error building extension 'wkv': [1/2] nvcc ...\nwkv_cuda.cu:3: error: boom")

    monkeypatch.setattr(wkv_ops, "_extensions", {})
    monkeypatch.setattr(wkv_ops, "_failures", {})
    monkeypatch.setattr(wkv_ops, "_build", broken_build)
    (result,) = gpu_check.run_checks("cpu", quick=True, model=False)
    assert result.ok is False and "error: boom" in result.detail and "\n" not in result.detail, result.detail
