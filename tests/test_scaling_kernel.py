"""`rwkv-bench scaling` measures the compiled WKV kernel or says why not: a corrupt cached build is rebuilt
and the rows say cpu-kernel; a kernel that cannot be had stops the sweep in one line before anything is
measured, unless --allow-reference asks for the PyTorch reference, which every row and summary.md then name.
Run as a user types it, through the installed console script, with the kernel cache in a folder of its own."""
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rwkv_bench.ops import rwkv4_fused
from rwkv_bench.ops import wkv as wkv_ops
from rwkv_bench.ops.kernel_build import CACHE_ENV

from test_kernel_cache import copy_this_machines_builds

CLI = str(Path(sys.executable).with_name("rwkv-bench"))
TINY = ["scaling", "--models", "rwkv4-tiny", "--scenario", "prefill", "--min-len", "8", "--max-len", "8",
        "--repeats", "1", "--warmup", "0", "--threads", "1"]


def scaling(args: list[str], env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *TINY, *args], capture_output=True, text=True, env=env, timeout=timeout)


def isolated_env(tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "RWKV_BENCH_WKV"}
    return {**env, CACHE_ENV: str(tmp_path / "kernels"), **extra}


@pytest.mark.slow
def test_a_truncated_cached_kernel_is_rebuilt_and_the_sweep_measures_the_kernel(tmp_path):
    env = isolated_env(tmp_path)
    # the sweep loads the WKV kernel and RWKV-4's fused loops: both start intact, then WKV's is cut short
    copy_this_machines_builds(tmp_path / "kernels", wkv_ops, rwkv4_fused)
    (library,) = (tmp_path / "kernels" / wkv_ops.extension_name("cpu")).glob("*.so")
    library.write_bytes(library.read_bytes()[:4096])

    proc = scaling(["--out", str(tmp_path / "run"), "--no-report"], env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    points = pd.read_csv(tmp_path / "run" / "points.csv")
    assert (points["status"] == "ok").all(), points["error"].tolist()
    assert set(points["implementation"]) == {"rwkv_bench.rwkv4[cpu-kernel]"}


def test_without_the_kernel_the_sweep_stops_in_one_line_before_measuring(tmp_path):
    env = isolated_env(tmp_path, RWKV_BENCH_WKV="reference")   # the kernels turned off: cannot be had
    proc = scaling(["--out", str(tmp_path / "run")], env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    err = proc.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "--allow-reference" in err, err
    assert not (tmp_path / "run").exists()                     # nothing measured, no run directory


@pytest.mark.slow
def test_allow_reference_measures_the_reference_and_says_so(tmp_path):
    env = isolated_env(tmp_path, RWKV_BENCH_WKV="reference")
    copy_this_machines_builds(tmp_path / "kernels", rwkv4_fused)   # used whatever RWKV_BENCH_WKV says
    proc = scaling(["--out", str(tmp_path / "run"), "--allow-reference"], env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--allow-reference" in proc.stderr                  # the choice is said, not silent
    points = pd.read_csv(tmp_path / "run" / "points.csv")
    assert set(points["implementation"]) == {"rwkv_bench.rwkv4[reference]"} and (points["status"] == "ok").all()
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "| rwkv4-tiny | rwkv | rwkv_bench.rwkv4[reference] |" in summary
