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
    assert len(results) == 1 + len(gpu_check.wkv_cases(quick=True)) == 13
    assert all(r.ok for r in results), gpu_check.table(results)
    table = gpu_check.table(results)
    assert "wkv torch.bfloat16" not in table and "| wkv bfloat16 B=3 T=1 C=80 state" in table


def test_a_kernel_that_is_off_fails_its_check(monkeypatch):
    from rwkv_bench.ops import wkv as wkv_ops

    real = wkv_ops.wkv

    def off_by_a_little(w, u, k, v, state=None):
        y, s = real(w, u, k, v, state)
        return y * (1 + 1e-4), s

    monkeypatch.setattr(wkv_ops, "wkv", off_by_a_little)
    ok, detail = gpu_check.check_wkv_case("cpu", torch.float32, 2, 30, 16, with_state=True, seed=5)
    assert not ok and detail.startswith("y "), detail


def test_model_check_parallel_vs_recurrent():
    ok, detail = gpu_check.check_model("cpu", preset="rwkv4-tiny", T=40, B=2)
    assert ok, detail


def fake_console_script(tmp_path, body: str) -> str:
    script = tmp_path / "rwkv-bench"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def test_sweep_check_reads_the_run_directory(tmp_path, monkeypatch):
    # the CLI writes <out>/.../points.csv; the check reports its statuses and the longest length measured
    script = fake_console_script(tmp_path, 'out=$(echo "$@" | sed "s/.*--out //")\nmkdir -p "$out/run"\n'
                                           'printf "model,T,status\\nrwkv4-169m,16,ok\\nrwkv4-169m,16384,ok\\n'
                                           'gptneox-169m,16384,oom\\n" > "$out/run/points.csv"\n')
    monkeypatch.setattr(gpu_check, "console_script", lambda: script)
    ok, detail = gpu_check.check_sweep(tmp_path / "out")
    assert ok and "longest ok T=16384" in detail and "'oom': 1" in detail, detail
    monkeypatch.setattr(gpu_check, "console_script", lambda: fake_console_script(tmp_path, "exit 2\n"))
    ok, detail = gpu_check.check_sweep(tmp_path / "out2")
    assert not ok and "exit code 2" in detail
